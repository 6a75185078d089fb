package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/cluster"
	"github.com/butterfly-go/butterfly/internal/labtest"
	"github.com/butterfly-go/butterfly/internal/model"
)

// cluster measures cluster mode between real daemons on a real etcd
// (Debian's etcd-server):
//
//   - cluster-arp-suppressed and cluster-arp-flooded: three hosts on a
//     bridged underlay, one etcd member and one daemon on each, a vNIC in
//     VNI 42 on each; the vNIC of host 1 sends -cluster-arps ARP requests
//     for the addresses of the other two (its neighbour table flushed
//     before each), and nftables counts the VXLAN datagrams carrying a
//     broadcast frame that each host receives. With suppression (the
//     default) the daemon answers them; with --no-arp-suppression they
//     flood to every node of the VNI.
//   - cluster-propagation (in the suppressed case's lab): -cluster-rules
//     rules added one by one through host 1's API, each timed until hosts
//     2 and 3 list it (p50, p99).
//   - cluster-startup-vhost and cluster-startup-tap: etcd holds
//     -cluster-nics vNICs of one node (vhost-user server sockets, then
//     TAP devices) and -cluster-groups groups of -cluster-rules rules;
//     the node's daemon starts with no state file, and the figure is the
//     time from its launch until its status shows the revision of the
//     last record applied and it lists every vNIC and group (real
//     dataplane: sockets or TAPs created, policies compiled).
func (b *bench) cluster() {
	b.say("== cluster mode (real etcd and daemons)")
	for _, suppress := range []bool{true, false} {
		label := "cluster-arp-suppressed"
		if !suppress {
			label = "cluster-arp-flooded"
		}
		if !b.cases.run(label, func(t *caseT) { b.clusterARP(t, label, suppress) }) {
			b.say("RESULT %s | setup failed", label)
		}
	}
	for _, typ := range []string{"VHOST_USER_SERVER", "TAP"} {
		label := "cluster-startup-vhost"
		if typ == "TAP" {
			label = "cluster-startup-tap"
		}
		if !b.cases.run(label, func(t *caseT) { b.clusterStartup(t, label, typ) }) {
			b.say("RESULT %s | setup failed", label)
		}
	}
}

// startClusterHosts starts n hosts on a bridged underlay with one etcd
// member in each and one daemon per host in cluster mode (more daemon
// flags in extra), and waits until every node is alive.
func (b *bench) startClusterHosts(t *caseT, label string, n int, extra ...string) ([]*labtest.Host, *labtest.Etcd) {
	l := b.newLab(t)
	hosts := l.HostsOnSwitch(labtest.IPv4, n)
	var specs []labtest.EtcdSpec
	for _, h := range hosts {
		specs = append(specs, labtest.EtcdSpec{NS: h.NS, IP: h.VTEP.String(), ClientPort: 2379, PeerPort: 2380})
	}
	etcd := labtest.StartEtcd(t, l.Dir, specs...)
	eps := strings.Join(etcd.Endpoints(), ",")
	for _, h := range hosts {
		b.startDaemon(h, label, append([]string{"--etcd", eps, "--node", h.Name}, extra...)...)
	}
	labtest.Eventually(t, labtest.SettleTimeout, "live nodes", func() error {
		out, err := hosts[0].CLI("cluster", "nodes")
		if err == nil && strings.Count(out, " alive ") != n {
			err = fmt.Errorf("nodes:\n%s", out)
		}
		return err
	})
	return hosts, etcd
}

var (
	nftPackets      = regexp.MustCompile(`counter packets (\d+)`)
	clusterRevision = regexp.MustCompile(`cluster revision: \d+`)
)

// clusterARP runs one ARP case.
func (b *bench) clusterARP(t *caseT, label string, suppress bool) {
	var extra []string
	if !suppress {
		extra = []string{"--no-arp-suppression"}
	}
	hosts, _ := b.startClusterHosts(t, label, 3, extra...)
	hosts[0].OpenSG("sg-open")
	var vms []*labtest.VM
	for i, h := range hosts {
		vms = append(vms, h.AddVM(labtest.NICSpec{ID: fmt.Sprintf("a%d", i+1), MAC: labtest.MACFor(i + 1), VNI: 42,
			Addrs: []string{fmt.Sprintf("42.0.0.%d/24", i+1)}, SGs: []string{"sg-open"}, Quiet: true}))
	}
	if err := labtest.Parallel(func() error { return vms[0].Reach(vms[1].IP(0)) },
		func() error { return vms[0].Reach(vms[2].IP(0)) }); err != nil {
		t.Fatal(err)
	}
	// Each host counts the VXLAN datagrams it receives whose inner
	// frame is a broadcast (destination MAC after the 8-byte UDP and
	// 8-byte VXLAN headers).
	for _, h := range hosts {
		for _, args := range [][]string{
			{"add", "table", "inet", "bfbarp"},
			{"add", "chain", "inet", "bfbarp", "in", "{ type filter hook input priority 0 ; }"},
			{"add", "rule", "inet", "bfbarp", "in", "udp", "dport", "4789", "@th,128,48", "0xffffffffffff", "counter"},
		} {
			labtest.Must(t, "ip", append([]string{"netns", "exec", h.NS, "nft"}, args...)...)
		}
	}
	n := b.cfg.clusterARPs
	script := fmt.Sprintf("for i in $(seq 1 %d); do for a in %s %s; do ip neigh flush all; ping -n -q -c 1 -W 1 $a >/dev/null || echo lost $a; done; done",
		(n+1)/2, vms[1].IP(0), vms[2].IP(0))
	start := time.Now()
	out, err := runFor(time.Duration(n)*2*time.Second+30*time.Second, "ip", "netns", "exec", vms[0].NS, "sh", "-c", script)
	took := time.Since(start)
	if err != nil || strings.Contains(out, "lost") {
		t.Fatalf("ARP and ping loop: %v %s", err, out)
	}
	crossed, per := 0, make([]string, len(hosts))
	for i, h := range hosts {
		out := labtest.Must(t, "ip", "netns", "exec", h.NS, "nft", "list", "chain", "inet", "bfbarp", "in")
		m := nftPackets.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("%s: no counter in %q", h.Name, out)
		}
		c, _ := strconv.Atoi(m[1])
		per[i] = h.Name + " " + m[1]
		if i > 0 {
			crossed += c
		}
	}
	mode := "suppression on (default)"
	if !suppress {
		mode = "--no-arp-suppression"
	}
	b.say("RESULT %s | %s: %d ARP requests from h1's vNIC for the addresses of the vNICs of h2 and h3 (VNI 42 on all three): %d broadcast frames crossed the underlay to h2 and h3 (received: %s) | %.1f ms per request and its ping | load %s",
		label, mode, 2*((n+1)/2), crossed, strings.Join(per, ", "), float64(took.Microseconds())/1000/float64(2*((n+1)/2)), load1())
	if suppress {
		b.clusterPropagation(t, hosts)
	}
}

// clusterPropagation adds -cluster-rules rules one by one to a new group
// through the API of hosts[0] and times each from the request until the
// rule is in the group on every other host (their API polled every
// millisecond): p50 and p99.
func (b *bench) clusterPropagation(t *caseT, hosts []*labtest.Host) {
	hosts[0].MustCLI("sg", "add", "bench")
	api := hosts[0].API()
	var others []*labtest.API
	for _, h := range hosts[1:] {
		others = append(others, h.API())
	}
	list := &protocol.MessageV0_Request{SgRuleList: proto.String("bench")}
	s0 := stealSnap()
	var lat []time.Duration
	for r := range b.cfg.clusterRules {
		start := time.Now()
		if _, err := api.Call(ruleAdd("bench", 1, r)); err != nil {
			t.Fatalf("sg_rule_add: %v", err)
		}
		deadline := start.Add(10 * time.Second)
		for _, o := range others {
			for {
				resp, err := o.Call(list)
				if err == nil && len(resp.GetSgRuleList()) == r+1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("rule %d not propagated in 10 s: %v", r, err)
				}
				time.Sleep(time.Millisecond)
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.say("RESULT cluster-propagation | %d rules added through h1's API, each until h2 and h3 hold it (3 real daemons, three-member etcd): p50 %.1f ms, p99 %.1f ms | steal %s%% load %s",
		len(lat), ms(percentile(lat, 50)), ms(percentile(lat, 99)), stealSince(s0), load1())
}

// nsDialer returns a gRPC dialer whose sockets are created in network
// namespace ns (this process stays in its own).
func nsDialer(ns string) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		orig, err := netns.Get()
		if err != nil {
			return nil, fmt.Errorf("current namespace: %w", err)
		}
		defer orig.Close()
		h, err := netns.GetFromName(ns)
		if err != nil {
			return nil, fmt.Errorf("namespace %s: %w", ns, err)
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			return nil, fmt.Errorf("entering %s: %w", ns, err)
		}
		defer func() {
			if err := netns.Set(orig); err != nil {
				panic(fmt.Sprintf("bench: cannot return to the original namespace: %v", err))
			}
		}()
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

// clusterStartup runs one start-up case with vNICs of type typ.
func (b *bench) clusterStartup(t *caseT, label, typ string) {
	hosts, etcd := b.startClusterHosts(t, label, 1)
	h := hosts[0]
	// The daemon stops: its records are written behind its back, then
	// it starts on them with no state file.
	h.Stop(syscall.SIGTERM)
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(nsDialer(h.NS))}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	l := cluster.Layout{Prefix: "/butterfly/"}
	nics, groups, rules := b.cfg.clusterNICs, b.cfg.clusterGroups, b.cfg.clusterRules
	var last int64
	put := func(k string, v []byte) {
		r, err := cli.Put(ctx, k, string(v))
		if err != nil {
			t.Fatalf("etcd put %s: %v", k, err)
		}
		last = r.Header.Revision
	}
	for g := range groups {
		sg := model.SG{ID: fmt.Sprintf("sg%d", g)}
		for r := range rules {
			sg.Rules = append(sg.Rules, model.Rule{Direction: model.Inbound, Protocol: 6, PortStart: uint32(r + 1), PortEnd: uint32(r + 1),
				CIDR: netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", g, r))})
		}
		put(l.SG(sg.ID), cluster.EncodeSG(sg))
	}
	nt := model.NICVhostUser
	if typ == "TAP" {
		nt = model.NICTap
	}
	for i := range nics {
		n := model.NIC{ID: fmt.Sprintf("vm%d", i), MACText: fmt.Sprintf("52:54:00:01:%02x:%02x", i>>8, i&0xff),
			VNI: uint32(1000 + i%10), Type: nt, SecurityGroups: []string{fmt.Sprintf("sg%d", i%groups)},
			IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)})}}
		put(l.NIC(h.Name, n.ID), cluster.EncodeNIC(n))
	}
	// No state file: everything comes from etcd.
	state := h.State
	h.State = h.Dir + "/state-startup.json"
	defer func() { h.State = state }()
	eps := strings.Join(etcd.Endpoints(), ",")
	want := fmt.Sprintf("cluster revision: %d\n", last)
	s0 := stealSnap()
	start := time.Now()
	p, err := h.Launch(b.daemonOpts("--etcd", eps, "--node", h.Name))
	if err != nil {
		t.Fatal(err)
	}
	var apiUp time.Duration
	// Polled every 50 ms (and a CLI run): the figure is ±60 ms.
	err = labtest.Poll(5*time.Minute, func() error {
		if !p.Running() {
			return fmt.Errorf("butterflyd exited: %s", h.LogTail())
		}
		out, err := h.CLI("status")
		if err != nil {
			return err
		}
		if apiUp == 0 {
			apiUp = time.Since(start)
		}
		if !strings.Contains(out, want) {
			rev := clusterRevision.FindString(out)
			return fmt.Errorf("%s, want %s", rev, strings.TrimSpace(want))
		}
		return nil
	})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if out := h.MustCLI("nic", "list"); strings.Count(out, "\n") != nics {
		t.Fatalf("%d vNICs listed, want %d", strings.Count(out, "\n"), nics)
	}
	if out := h.MustCLI("sg", "list"); strings.Count(out, "\n") != groups {
		t.Fatalf("%d groups listed, want %d", strings.Count(out, "\n"), groups)
	}
	steal, load := stealSince(s0), load1()
	// Its exit removes every vNIC: 1,000 TAPs take over 10 s (the
	// kernel tears each down), longer than the lab waits.
	exit, err := h.Terminate(2 * time.Minute)
	if err != nil {
		t.Logf("stop: %v", err)
	}
	b.say("RESULT %s | node start with no state file, etcd holding %d %s vNICs of it and %d groups of %d rules: all applied %.0f ms after the launch (API up after %.0f ms; exit on SIGTERM %.1f s) | steal %s%% load %s",
		label, nics, typ, groups, rules, ms(took), ms(apiUp), exit.Seconds(), steal, load)
}
