package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/butterfly-go/butterfly/internal/dataplane"
	"github.com/butterfly-go/butterfly/internal/labtest"
	"github.com/butterfly-go/butterfly/internal/model"
)

// benchDP reports the highest TCP port of group "bench" it was given.
type benchDP struct {
	nopDataplane
	ports chan uint32
}

func (d benchDP) SetSecurityGroups(sgs []model.SG) error {
	for _, g := range sgs {
		if g.ID != "bench" {
			continue
		}
		var p uint32
		for _, r := range g.Rules {
			p = max(p, r.PortStart)
		}
		select {
		case d.ports <- p:
		default:
		}
	}
	return nil
}

func (benchDP) SetRemotes(dataplane.Remotes) error { return nil }

// BenchmarkPropagation measures how long a rule added through one
// node's agent takes to reach the dataplane of every node (real etcd,
// agents in this process), reported as p50 and p99.
func BenchmarkPropagation(b *testing.B) {
	for _, nodes := range []int{3, 100} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			e := labtest.StartEtcd(b, b.TempDir(), labtest.EtcdSpec{IP: "127.0.0.1"})
			quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
			var agents []*Agent
			var dps []benchDP
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			// Count agent 0's etcd requests, its health checks aside: its
			// client is replaced before it runs.
			var requests atomic.Int64
			count := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				if r, ok := req.(*etcdserverpb.RangeRequest); !ok || !strings.Contains(string(r.Key), "/nodes/") {
					requests.Add(1)
				}
				return invoker(ctx, method, req, reply, cc, opts...)
			}
			for i := range nodes {
				dp := benchDP{ports: make(chan uint32, 64)}
				a, err := New(Config{Endpoints: e.Endpoints(), Node: fmt.Sprintf("n%d", i),
					VTEP: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), Prefix: "/butterfly/",
					Store: model.New(dp, model.Options{}), Remotes: dp, Logger: quiet})
				if err != nil {
					b.Fatal(err)
				}
				if i == 0 {
					counted, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 2 * time.Second,
						Logger: zap.NewNop(), DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(count)}})
					if err != nil {
						b.Fatal(err)
					}
					a.cli.Close()
					a.cli = counted
				}
				done := make(chan struct{})
				go func() { defer close(done); a.Run(ctx) }()
				b.Cleanup(func() { cancel(); <-done; a.Close() })
				agents, dps = append(agents, a), append(dps, dp)
			}
			wait := func(port uint32) {
				deadline := time.After(10 * time.Second)
				for _, dp := range dps {
					for got := uint32(0); got < port; {
						select {
						case got = <-dp.ports:
						case <-deadline:
							b.Fatalf("port %d not propagated", port)
						}
					}
				}
			}
			if err := agents[0].AddRule("bench", benchRule(1)); err != nil {
				b.Fatal(err)
			}
			wait(1)
			requests.Store(0)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				port := uint32(i + 2)
				start := time.Now()
				if err := agents[0].AddRule("bench", benchRule(port)); err != nil {
					b.Fatal(err)
				}
				wait(port)
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-us")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-us")
			b.ReportMetric(float64(requests.Load())/float64(b.N), "etcd-requests/op")
		})
	}
}

func benchRule(port uint32) model.Rule {
	return model.Rule{Direction: model.Inbound, Protocol: 6, PortStart: port, PortEnd: port, CIDR: netip.MustParsePrefix("0.0.0.0/0")}
}

// BenchmarkStartup measures how long a node takes to program itself from
// etcd holding 1,000 of its vNICs and 100 groups of 100 rules: from Run
// to the store holding everything (dataplane faked: the control path
// only).
func BenchmarkStartup(b *testing.B) {
	e := labtest.StartEtcd(b, b.TempDir(), labtest.EtcdSpec{IP: "127.0.0.1"})
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	l := Layout{Prefix: "/butterfly/"}
	const nics, groups, rules = 1000, 100, 100
	for g := range groups {
		sg := model.SG{ID: fmt.Sprintf("sg%d", g)}
		for r := range rules {
			sg.Rules = append(sg.Rules, benchRule(uint32(r+1)))
		}
		if _, err := cli.Put(ctx, l.SG(sg.ID), string(EncodeSG(sg))); err != nil {
			b.Fatal(err)
		}
	}
	for i := range nics {
		n := model.NIC{ID: fmt.Sprintf("vm%d", i), MACText: fmt.Sprintf("52:54:00:00:%02x:%02x", i>>8, i&0xff),
			VNI: uint32(i % 10), Type: model.NICTap, SecurityGroups: []string{fmt.Sprintf("sg%d", i%groups)},
			IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)})}}
		if _, err := cli.Put(ctx, l.NIC("me", n.ID), string(EncodeNIC(n))); err != nil {
			b.Fatal(err)
		}
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	b.ResetTimer()
	for range b.N {
		dp := benchDP{ports: make(chan uint32, 1)}
		s := model.New(dp, model.Options{})
		a, err := New(Config{Endpoints: e.Endpoints(), Node: "me", VTEP: netip.MustParseAddr("10.1.0.1"), Prefix: l.Prefix,
			Store: s, Remotes: dp, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); a.Run(rctx) }()
		for len(s.NICList()) < nics || len(s.SGList()) < groups {
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		cancel()
		<-done
		a.Close()
		b.StartTimer()
	}
}

// BenchmarkApplyGroupChange measures what one node spends applying a
// change of one security group (one rule's port) while it holds nics
// vNICs in groups groups of 10 rules (store and view in line; dataplane
// faked, no etcd): the cost of the agent's apply and of the store's
// operation.
func BenchmarkApplyGroupChange(b *testing.B) {
	benchApply(b, func(a *Agent, i, groups int) event { return benchGroup(a, i%groups, 2+i%2) })
}

// BenchmarkApplyNICChange is BenchmarkApplyGroupChange for a change of
// one of the node's vNICs (its IP address: updated in place), which also
// recomputes the peers (its addresses are suppressed ARP answers).
func BenchmarkApplyNICChange(b *testing.B) {
	benchApply(b, func(a *Agent, i, groups int) event { return benchNIC(a, i%groups, groups, byte(2+i%2)) })
}

func benchGroup(a *Agent, g, port int) event {
	sg := model.SG{ID: fmt.Sprintf("sg%d", g)}
	for r := range 10 {
		sg.Rules = append(sg.Rules, benchRule(uint32(port+r)))
	}
	return event{key: a.layout.SG(sg.ID), value: EncodeSG(sg)}
}

func benchNIC(a *Agent, i, groups int, ip byte) event {
	n := model.NIC{ID: fmt.Sprintf("vm%d", i), MACText: fmt.Sprintf("52:54:00:00:%02x:%02x", i>>8, i&0xff),
		VNI: uint32(i % 10), Type: model.NICTap, SecurityGroups: []string{fmt.Sprintf("sg%d", i%groups)},
		IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, ip, byte(i >> 8), byte(i)})}}
	return event{key: a.layout.NIC("me", n.ID), value: EncodeNIC(n)}
}

// benchApply loads a node's agent with vNICs and groups, then applies
// the change change(i) returns for each iteration i.
func benchApply(b *testing.B, change func(a *Agent, i, groups int) event) {
	for _, size := range []struct{ nics, groups int }{{100, 10}, {1000, 100}, {4000, 400}} {
		b.Run(fmt.Sprintf("nics=%d/groups=%d", size.nics, size.groups), func(b *testing.B) {
			s := model.New(nopDataplane{}, model.Options{})
			a, err := New(Config{Endpoints: []string{"http://127.0.0.1:1"}, Node: "me", VTEP: netip.MustParseAddr("10.1.0.1"),
				Prefix: "/butterfly/", Store: s, Remotes: benchDP{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			defer a.Close()
			var evs []event
			for g := range size.groups {
				evs = append(evs, benchGroup(a, g, 1))
			}
			for i := range size.nics {
				evs = append(evs, benchNIC(a, i, size.groups, 1))
			}
			a.mu.Lock()
			defer a.mu.Unlock()
			a.applyEventsLocked(1, evs)
			if len(s.NICList()) != size.nics {
				b.Fatalf("%d vNICs in the store", len(s.NICList()))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				a.applyEventsLocked(int64(i+2), []event{change(a, i, size.groups)}) // always a change
			}
		})
	}
}
