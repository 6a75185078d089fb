package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/butterfly-go/butterfly/internal/dataplane"
	"github.com/butterfly-go/butterfly/internal/labtest"
	"github.com/butterfly-go/butterfly/internal/model"
)

// lockedDP is a recording dataplane safe for the agent's goroutine.
type lockedDP struct {
	mu      sync.Mutex
	rec     recDP
	remotes dataplane.Remotes
	refuse  string // AddNIC of this id fails
	// imported is the Import of the vNICs created, by id.
	imported map[string]string
}

func (d *lockedDP) AddNIC(n model.NIC) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if n.ID == d.refuse {
		return "", fmt.Errorf("cannot create %s", n.ID)
	}
	if d.imported == nil {
		d.imported = map[string]string{}
	}
	d.imported[n.ID] = string(n.Import)
	return d.rec.AddNIC(n)
}
func (d *lockedDP) UpdateNIC(n model.NIC) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rec.UpdateNIC(n)
}
func (d *lockedDP) DeleteNIC(id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rec.DeleteNIC(id)
}
func (d *lockedDP) SetSecurityGroups(sgs []model.SG) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rec.SetSecurityGroups(sgs)
}
func (d *lockedDP) Stats(string) (model.NICStats, error)       { return model.NICStats{}, nil }
func (d *lockedDP) Counters(string) (model.NICCounters, error) { return model.NICCounters{}, nil }
func (d *lockedDP) ExportNIC(string) ([]byte, error)           { return nil, nil }
func (d *lockedDP) DOT() string                                { return "" }
func (d *lockedDP) SetRemotes(r dataplane.Remotes) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.remotes = r
	return nil
}
func (d *lockedDP) calls() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.rec.calls...)
}
func (d *lockedDP) getRemotes() dataplane.Remotes {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.remotes
}

type node struct {
	a     *Agent
	dp    *lockedDP
	store *model.Store
	// stop stops the agent (again at cleanup: a no-op then).
	stop func()
}

func startNode(t *testing.T, endpoints []string, name, vtep string) *node {
	t.Helper()
	return startNodeTTL(t, endpoints, name, vtep, 2*time.Second)
}

func startNodeTTL(t *testing.T, endpoints []string, name, vtep string, ttl time.Duration) *node {
	t.Helper()
	return startNodeCfg(t, endpoints, name, vtep, func(c *Config) { c.LeaseTTL = ttl })
}

// startNodeCfg starts an agent whose configuration set changes.
func startNodeCfg(t *testing.T, endpoints []string, name, vtep string, set func(*Config)) *node {
	t.Helper()
	dp := &lockedDP{}
	s := model.New(dp, model.Options{})
	cfg := Config{
		Endpoints: endpoints, Node: name, VTEP: netip.MustParseAddr(vtep), Version: "test",
		Prefix: "/butterfly/", Store: s, Remotes: dp, LeaseTTL: 2 * time.Second, Timeout: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if set != nil {
		set(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done; a.Close() }) }
	t.Cleanup(stop)
	return &node{a: a, dp: dp, store: s, stop: stop}
}

func etcdClient(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ruleTCP(port uint32) model.Rule {
	return model.Rule{Direction: model.Inbound, Protocol: 6, PortStart: port, PortEnd: port, CIDR: netip.MustParsePrefix("0.0.0.0/0")}
}

// TestAgent runs two agents on a real etcd: mutations through one reach
// the other, replays change nothing, invalid records are reported and
// ignored, a refused vNIC is put back, etcd down fails mutations clearly
// while the state stays, and compaction forces a resync that converges.
func TestAgent(t *testing.T) {
	e := labtest.StartEtcd(t, t.TempDir(), labtest.EtcdSpec{IP: "127.0.0.1"})
	eps := e.Endpoints()
	n1 := startNode(t, eps, "n1", "10.0.0.1")
	n2 := startNode(t, eps, "n2", "10.0.0.2")
	cli := etcdClient(t, eps)
	ctx := context.Background()

	labtest.Eventually(t, 10*time.Second, "nodes see each other", func() error {
		if r := n1.dp.getRemotes(); len(r.Sources) != 1 || r.Sources[0] != netip.MustParseAddr("10.0.0.2") {
			return fmt.Errorf("n1 remotes %+v", r)
		}
		if l := n2.a.Nodes(); len(l) != 2 || !l[0].GetAlive() || !l[1].GetAlive() {
			return fmt.Errorf("n2 nodes %v", l)
		}
		return nil
	})

	// A group and a rule through n1 reach n2's store.
	if err := n1.a.AddSG(model.SG{ID: "web"}); err != nil {
		t.Fatal(err)
	}
	if err := n1.a.AddRule("web", ruleTCP(80)); err != nil {
		t.Fatal(err)
	}
	labtest.Eventually(t, 5*time.Second, "rule on n2", func() error {
		if r, err := n2.store.Rules("web"); err != nil || len(r) != 1 {
			return fmt.Errorf("n2 rules %v, %v", r, err)
		}
		return nil
	})
	// The writer's node has it when the call returns.
	if r, err := n1.store.Rules("web"); err != nil || len(r) != 1 {
		t.Fatalf("n1 rules right after the reply: %v, %v", r, err)
	}
	// Replays with equal content write nothing (no new revision).
	rev := func() int64 {
		r, err := cli.Get(ctx, "/butterfly/sgs/web")
		if err != nil || len(r.Kvs) != 1 {
			t.Fatalf("get: %v %v", r, err)
		}
		return r.Kvs[0].ModRevision
	}
	before := rev()
	gen := n2.store.Generation()
	// Writes outside the prefix (etcd shared with other users) move the
	// store's revision, which the watch never sees: replays still return
	// at once.
	if _, err := cli.Put(ctx, "/other-app/x", "y"); err != nil {
		t.Fatal(err)
	}
	replayStart := time.Now()
	if err := n1.a.AddRule("web", ruleTCP(80)); err != nil {
		t.Fatal(err)
	}
	if err := n2.a.AddSG(model.SG{ID: "web", Rules: []model.Rule{ruleTCP(80)}}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(replayStart); d > time.Second {
		t.Fatalf("replays took %v", d)
	}
	if after := rev(); after != before {
		t.Fatalf("replays rewrote the record: revision %d -> %d", before, after)
	}
	if g := n2.store.Generation(); g != gen {
		t.Fatalf("replays changed n2's store: generation %d -> %d", gen, g)
	}
	// Validation is the model's: same errors as standalone.
	if err := n1.a.AddRule("web", model.Rule{Protocol: 6, PortStart: 9, PortEnd: 1, SG: "x"}); err == nil {
		t.Fatal("bad rule accepted")
	}

	// A vNIC of n2: on n2's store, in n1's flood list for its VNI.
	path, err := n2.a.AddNIC(model.NIC{ID: "vm2", MACText: "52:54:00:00:00:02", VNI: 42, Type: model.NICTap, SecurityGroups: []string{"web"}})
	if err != nil || path != "tap-vm2" {
		t.Fatalf("AddNIC = %q, %v", path, err)
	}
	labtest.Eventually(t, 5*time.Second, "n1 floods VNI 42 to n2", func() error {
		if r := n1.dp.getRemotes(); len(r.Flood[42]) != 1 {
			return fmt.Errorf("n1 remotes %+v", r)
		}
		return nil
	})
	if _, err := n1.store.NICDetails("vm2"); err == nil {
		t.Fatal("n2's vNIC is on n1")
	}
	if l := n1.a.NICs(); len(l) != 1 || l[0].GetNode() != "n2" || l[0].GetId() != "vm2" {
		t.Fatalf("n1 cluster nics %v", l)
	}
	if err := n2.a.UpdateNIC(model.NICUpdate{ID: "vm2", IPs: []string{"10.0.0.2"}}); err != nil {
		t.Fatal(err)
	}
	if c := n2.dp.calls(); c[len(c)-1] != "update vm2" {
		t.Fatalf("nic_update made %v", c)
	}
	if err := n1.a.UpdateNIC(model.NICUpdate{ID: "vm2", IPs: []string{"10.0.0.3"}}); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("nic_update of another node's vNIC: %v", err)
	}

	// fw_import (live migration): given to this node's vNIC creation
	// only, never stored in etcd.
	if _, err := n1.a.AddNIC(model.NIC{ID: "mig", MACText: "52:54:00:00:00:07", VNI: 42, Type: model.NICTap, Import: []byte("flows")}); err != nil {
		t.Fatal(err)
	}
	n1.dp.mu.Lock()
	imported := n1.dp.imported["mig"]
	n1.dp.mu.Unlock()
	if imported != "flows" {
		t.Fatalf("vNIC created with import %q, want %q", imported, "flows")
	}
	if r, err := cli.Get(ctx, "/butterfly/nics/n1/mig"); err != nil || len(r.Kvs) != 1 || strings.Contains(string(r.Kvs[0].Value), "fw_import") {
		t.Fatalf("record: %v %v", r, err)
	}

	// A vNIC this node's dataplane refuses: error, record put back.
	n1.dp.mu.Lock()
	n1.dp.refuse = "bad"
	n1.dp.mu.Unlock()
	if _, err := n1.a.AddNIC(model.NIC{ID: "bad", MACText: "52:54:00:00:00:09", VNI: 1, Type: model.NICTap}); err == nil || !strings.Contains(err.Error(), "cannot create bad") {
		t.Fatalf("refused vNIC: %v", err)
	}
	if r, err := cli.Get(ctx, "/butterfly/nics/n1/bad"); err != nil || len(r.Kvs) != 0 {
		t.Fatalf("refused vNIC's record left in etcd: %v %v", r, err)
	}

	// An invalid record written by another tool: reported, ignored.
	if _, err := cli.Put(ctx, "/butterfly/sgs/web", `{"id":"web","rule":[{"direction":"INBOUND","protocol":6}]}`); err != nil {
		t.Fatal(err)
	}
	labtest.Eventually(t, 5*time.Second, "invalid record reported", func() error {
		for _, n := range []*node{n1, n2} {
			st := n.a.Status()
			if len(st.GetInvalid()) != 1 || !strings.HasPrefix(st.GetInvalid()[0], "/butterfly/sgs/web: ") {
				return fmt.Errorf("status %v", st)
			}
		}
		return nil
	})
	if r, err := n2.store.Rules("web"); err != nil || len(r) != 1 || r[0] != ruleTCP(80) {
		t.Fatalf("n2's rules after the invalid record: %v, %v", r, err)
	}
	const want = `
# HELP butterfly_cluster_invalid_records Cluster records ignored as invalid or refused by the node.
# TYPE butterfly_cluster_invalid_records gauge
butterfly_cluster_invalid_records 1
`
	if err := testutil.CollectAndCompare(n2.a.Collector(), strings.NewReader(want), "butterfly_cluster_invalid_records"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(n2.a.Collector()); n != 4 {
		t.Errorf("%d cluster metrics, want 4", n)
	}
	// The API replaces it with a valid one.
	if err := n1.a.AddSG(model.SG{ID: "web", Rules: []model.Rule{ruleTCP(80), ruleTCP(443)}}); err != nil {
		t.Fatal(err)
	}
	labtest.Eventually(t, 5*time.Second, "valid again", func() error {
		if st := n2.a.Status(); len(st.GetInvalid()) != 0 {
			return fmt.Errorf("status %v", st)
		}
		if r, _ := n2.store.Rules("web"); len(r) != 2 {
			return fmt.Errorf("n2 rules %v", r)
		}
		return nil
	})

	// Compaction while n2 does not watch is covered by resync; here: a
	// compaction past everything forces nothing wrong, state converges.
	if _, err := cli.Put(ctx, "/butterfly/sgs/db", `{"id":"db"}`); err != nil {
		t.Fatal(err)
	}
	r, err := cli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, r.Header.Revision); err != nil {
		t.Fatal(err)
	}
	labtest.Eventually(t, 5*time.Second, "db on n2", func() error {
		_, err := n2.store.SGDetails("db")
		return err
	})

	// etcd down: mutations fail clearly, state stays, status shows it.
	e.Members[0].Kill()
	start := time.Now()
	err = n1.a.AddRule("web", ruleTCP(22))
	if err == nil || !strings.Contains(err.Error(), "etcd unavailable") {
		t.Fatalf("mutation with etcd down: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("mutation took %v to fail", d)
	}
	labtest.Eventually(t, 5*time.Second, "status disconnected", func() error {
		if st := n1.a.Status(); st.GetConnected() || st.GetError() == "" {
			return fmt.Errorf("status %v", st)
		}
		return nil
	})
	if r, _ := n1.store.Rules("web"); len(r) != 2 {
		t.Fatalf("n1 rules with etcd down: %v", r)
	}
	// Back: converges, and mutations work again.
	if err := e.Members[0].Start(); err != nil {
		t.Fatal(err)
	}
	labtest.Eventually(t, 15*time.Second, "mutation after etcd is back", func() error {
		return n1.a.AddRule("web", ruleTCP(22))
	})
	labtest.Eventually(t, 10*time.Second, "rule 22 on n2", func() error {
		if r, _ := n2.store.Rules("web"); len(r) != 3 {
			return fmt.Errorf("n2 rules %v", r)
		}
		if st := n2.a.Status(); !st.GetConnected() {
			return fmt.Errorf("n2 status %v", st)
		}
		return nil
	})
}

// TestWatchCompacted: a watch from a revision that was compacted returns
// (Run then reads everything again) instead of missing changes.
func TestWatchCompacted(t *testing.T) {
	e := labtest.StartEtcd(t, t.TempDir(), labtest.EtcdSpec{IP: "127.0.0.1"})
	cli := etcdClient(t, e.Endpoints())
	ctx := context.Background()
	dp := &lockedDP{}
	s := model.New(dp, model.Options{})
	a, err := New(Config{Endpoints: e.Endpoints(), Node: "n", VTEP: netip.MustParseAddr("10.0.0.1"), Prefix: "/butterfly/",
		Store: s, Remotes: dp, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	rev, err := a.resync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := cli.Put(ctx, "/butterfly/sgs/g"+fmt.Sprint(i), fmt.Sprintf(`{"id":"g%d"}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := cli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, r.Header.Revision); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	a.watch(wctx, rev)
	if wctx.Err() != nil {
		t.Fatal("watch from a compacted revision did not return")
	}
	if _, err := a.resync(ctx); err != nil {
		t.Fatal(err)
	}
	if l := s.SGList(); len(l) != 3 {
		t.Fatalf("groups after the resync: %v", l)
	}
}

// TestRemotesKeptAcrossRestart: a daemon restarted while etcd is down
// programs its dataplane with the other nodes' VTEPs it last knew.
func TestRemotesKeptAcrossRestart(t *testing.T) {
	e := labtest.StartEtcd(t, t.TempDir(), labtest.EtcdSpec{IP: "127.0.0.1"})
	file := t.TempDir() + "/state.json.cluster"
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	run := func(name, vtep string, eps []string) (*lockedDP, func()) {
		dp := &lockedDP{}
		a, err := New(Config{Endpoints: eps, Node: name, VTEP: netip.MustParseAddr(vtep), Prefix: "/butterfly/",
			Store: model.New(dp, model.Options{}), Remotes: dp, RemotesFile: file, Logger: quiet, LeaseTTL: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); a.Run(ctx) }()
		return dp, func() { cancel(); <-done; a.Close() }
	}
	other := startNode(t, e.Endpoints(), "other", "10.0.0.2")
	if _, err := other.a.AddNIC(model.NIC{ID: "o1", MACText: "52:54:00:00:00:02", VNI: 7, Type: model.NICTap}); err != nil {
		t.Fatal(err)
	}
	dp, stop := run("me", "10.0.0.1", e.Endpoints())
	labtest.Eventually(t, 5*time.Second, "remotes", func() error {
		if r := dp.getRemotes(); len(r.Flood[7]) != 1 {
			return fmt.Errorf("remotes %+v", r)
		}
		return nil
	})
	stop()
	down := []string{fmt.Sprintf("http://127.0.0.1:%d", labtest.FreePort(t))}
	dp2, stop2 := run("me", "10.0.0.1", down)
	defer stop2()
	labtest.Eventually(t, 5*time.Second, "saved remotes without etcd", func() error {
		if r := dp2.getRemotes(); len(r.Flood[7]) != 1 || r.Flood[7][0] != netip.MustParseAddr("10.0.0.2") || len(r.Sources) != 1 {
			return fmt.Errorf("remotes %+v", r)
		}
		return nil
	})
}

// TestReplayCutsNothing: an orchestrator replaying a group by re-creating
// it empty and re-adding its rule changes nothing on the other node (its
// dataplane never sees the group without the rule, its store's
// generation stays); a real removal is enforced after the hold-down.
func TestReplayCutsNothing(t *testing.T) {
	e := labtest.StartEtcd(t, t.TempDir(), labtest.EtcdSpec{IP: "127.0.0.1"})
	n1 := startNode(t, e.Endpoints(), "n1", "10.0.0.1")
	n2 := startNode(t, e.Endpoints(), "n2", "10.0.0.2")
	if err := n1.a.AddRule("web", ruleTCP(80)); err != nil {
		t.Fatal(err)
	}
	labtest.Eventually(t, 5*time.Second, "rule on n2", func() error {
		if r, _ := n2.store.Rules("web"); len(r) != 1 {
			return fmt.Errorf("n2 rules %v", r)
		}
		return nil
	})
	gen, calls := n2.store.Generation(), len(n2.dp.calls())
	if err := n1.a.AddSG(model.SG{ID: "web"}); err != nil {
		t.Fatal(err)
	}
	if err := n1.a.AddRule("web", ruleTCP(80)); err != nil {
		t.Fatal(err)
	}
	// n1 applied both; give n2 the same revision, then past the hold-down.
	time.Sleep(1500 * time.Millisecond) // the hold-down (1 s) must pass: nothing may happen meanwhile or after
	if g, c := n2.store.Generation(), n2.dp.calls(); g != gen || len(c) != calls {
		t.Fatalf("the replay changed n2: generation %d -> %d, dataplane calls %v", gen, g, c[calls:])
	}
	// A real removal: enforced once the hold-down passed.
	start := time.Now()
	if err := n1.a.DeleteRule("web", ruleTCP(80)); err != nil {
		t.Fatal(err)
	}
	if r, _ := n1.store.Rules("web"); len(r) != 1 {
		t.Fatalf("removal enforced at once on n1: rules %v", r)
	}
	labtest.Eventually(t, 5*time.Second, "removal on n2", func() error {
		if r, _ := n2.store.Rules("web"); len(r) != 0 {
			return fmt.Errorf("n2 rules %v", r)
		}
		return nil
	})
	if d := time.Since(start); d < time.Second {
		t.Fatalf("removal enforced after %v, before the 1 s hold-down", d)
	}

	// n2 stops: n1 lists it dead, last seen when its lease went.
	stopped := time.Now().Unix()
	n2.stop()
	labtest.Eventually(t, 5*time.Second, "n2 dead on n1", func() error {
		for _, n := range n1.a.Nodes() {
			if n.GetName() == "n2" && !n.GetAlive() {
				if n.GetLastSeen() < uint64(stopped) {
					return fmt.Errorf("n2 last seen %d, before it stopped (%d)", n.GetLastSeen(), stopped)
				}
				return nil
			}
		}
		return fmt.Errorf("nodes %v", n1.a.Nodes())
	})
}

// TestNodeNameTaken: a second daemon with the same node name does not
// register while the first one's lease lives, and reports why; it
// registers once that lease is gone.
func TestNodeNameTaken(t *testing.T) {
	e := labtest.StartEtcd(t, t.TempDir(), labtest.EtcdSpec{IP: "127.0.0.1"})
	cli := etcdClient(t, e.Endpoints())
	first := startNodeTTL(t, e.Endpoints(), "n1", "10.0.0.1", time.Minute)
	labtest.Eventually(t, 5*time.Second, "first registered", func() error {
		if l := first.a.Nodes(); len(l) != 1 || !l[0].GetAlive() {
			return fmt.Errorf("nodes %v", l)
		}
		return nil
	})
	r, err := cli.Get(context.Background(), "/butterfly/alive/n1")
	if err != nil || len(r.Kvs) != 1 {
		t.Fatalf("alive key: %v %v", r, err)
	}
	lease := r.Kvs[0].Lease
	second := startNode(t, e.Endpoints(), "n1", "10.0.0.9")
	labtest.Eventually(t, 5*time.Second, "second refused", func() error {
		second.a.mu.Lock()
		msg := second.a.lastErr
		second.a.mu.Unlock()
		if !strings.Contains(msg, "is held by a live lease") {
			return fmt.Errorf("last error %q", msg)
		}
		return nil
	})
	if r, _ := cli.Get(context.Background(), "/butterfly/nodes/n1"); len(r.Kvs) != 1 || !strings.Contains(string(r.Kvs[0].Value), "10.0.0.1") {
		t.Fatalf("the second daemon overwrote the node: %v", r.Kvs)
	}
	// The first one stops: it revokes its lease (a minute long), so the
	// second registers at once.
	first.stop()
	if r, err := cli.TimeToLive(context.Background(), clientv3.LeaseID(lease)); err != nil || r.TTL != -1 {
		t.Fatalf("the stopped node's lease: %+v, %v; want revoked", r, err)
	}
	labtest.Eventually(t, 10*time.Second, "second registered", func() error {
		r, err := cli.Get(context.Background(), "/butterfly/nodes/n1")
		if err == nil && (len(r.Kvs) != 1 || !strings.Contains(string(r.Kvs[0].Value), "10.0.0.9")) {
			err = fmt.Errorf("node record %v", r.Kvs)
		}
		return err
	})
}

// TestNoARPSuppression: with NoARPSuppression the dataplane gets the
// other nodes' VTEPs and MACs but no address to answer for (ARP and NS
// flood); with suppression (the default) it gets them.
func TestNoARPSuppression(t *testing.T) {
	e := labtest.StartEtcd(t, t.TempDir(), labtest.EtcdSpec{IP: "127.0.0.1"})
	cli := etcdClient(t, e.Endpoints())
	for _, n := range []model.NIC{
		{ID: "a1", MACText: "52:54:00:00:00:01", VNI: 7, Type: model.NICTap, IPs: []netip.Addr{netip.MustParseAddr("10.9.0.1")}},
		{ID: "b1", MACText: "52:54:00:00:00:02", VNI: 7, Type: model.NICTap, IPs: []netip.Addr{netip.MustParseAddr("10.9.0.2")}},
	} {
		if _, err := cli.Put(context.Background(), layout.NIC(n.ID[:1], n.ID), string(EncodeNIC(n))); err != nil {
			t.Fatal(err)
		}
	}
	on := startNode(t, e.Endpoints(), "a", "10.0.0.1")
	off := startNodeCfg(t, e.Endpoints(), "b", "10.0.0.2", func(c *Config) { c.NoARPSuppression = true })
	for _, tt := range []struct {
		n         *node
		neighbors int
	}{{on, 2}, {off, 0}} {
		labtest.Eventually(t, 10*time.Second, tt.n.a.cfg.Node+"'s remotes", func() error {
			r := tt.n.dp.getRemotes()
			if len(r.Flood[7]) != 1 || len(r.MACs[7]) != 1 || len(r.Neighbors[7]) != tt.neighbors {
				return fmt.Errorf("remotes %+v, want one VTEP and MAC in VNI 7 and %d neighbors", r, tt.neighbors)
			}
			return nil
		})
	}
}

// TestImport: a standalone node's state written to etcd before the
// agent runs creates the records etcd lacks, keeps those it holds, and
// the first read then removes none of the node's vNICs.
func TestImport(t *testing.T) {
	e := labtest.StartEtcd(t, t.TempDir(), labtest.EtcdSpec{IP: "127.0.0.1"})
	cli := etcdClient(t, e.Endpoints())
	ctx := context.Background()
	shared := model.SG{ID: "shared", Rules: []model.Rule{ruleTCP(99)}}
	if _, err := cli.Put(ctx, layout.SG("shared"), string(EncodeSG(shared))); err != nil {
		t.Fatal(err)
	}
	dp := &lockedDP{}
	trace := func(id string) string { return "/tmp/trace-" + id }
	opts := model.Options{DefaultTracePath: trace}
	s := model.New(dp, opts)
	for _, sg := range []model.SG{{ID: "web", Rules: []model.Rule{ruleTCP(80)}}, {ID: "shared", Rules: []model.Rule{ruleTCP(22)}}} {
		if err := s.AddSG(sg); err != nil {
			t.Fatal(err)
		}
	}
	for i, id := range []string{"n1", "n2"} {
		if _, err := s.AddNIC(model.NIC{ID: id, MACText: fmt.Sprintf("52:54:00:00:00:0%d", i+1), VNI: 7, Type: model.NICTap,
			SecurityGroups: []string{"web"}, PacketTrace: true}); err != nil {
			t.Fatal(err)
		}
	}
	a, err := New(Config{Endpoints: e.Endpoints(), Node: "n", VTEP: netip.MustParseAddr("10.0.0.1"), Prefix: "/butterfly/",
		Store: s, StoreOptions: opts, Remotes: dp, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	res, err := a.Import(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantW := []string{layout.SG("web"), layout.NIC("n", "n1"), layout.NIC("n", "n2")}
	if fmt.Sprint(res.Written) != fmt.Sprint(wantW) || fmt.Sprint(res.Kept) != fmt.Sprint([]string{layout.SG("shared")}) {
		t.Fatalf("Import = %+v, want written %v, kept [%s]", res, wantW, layout.SG("shared"))
	}
	r, err := cli.Get(ctx, layout.NIC("n", "n1"))
	if err != nil || len(r.Kvs) != 1 {
		t.Fatalf("n1's record: %v %v", err, r)
	}
	if v := string(r.Kvs[0].Value); strings.Contains(v, "trace-n1") || strings.Contains(v, `"path"`) {
		t.Fatalf("n1's record holds local paths: %s", v)
	}
	// A second import writes nothing.
	if res, err := a.Import(ctx); err != nil || len(res.Written) != 0 || len(res.Kept) != 4 {
		t.Fatalf("second Import = %+v, %v", res, err)
	}
	before := len(dp.calls())
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); a.Run(rctx) }()
	defer func() { cancel(); <-done }()
	labtest.Eventually(t, 10*time.Second, "shared from etcd", func() error {
		l, err := s.SGDetails("shared")
		if err != nil || len(l[0].Rules) != 1 || l[0].Rules[0].PortStart != 99 {
			return fmt.Errorf("shared = %+v, %v", l, err)
		}
		return nil
	})
	for _, c := range dp.calls()[before:] {
		if strings.HasPrefix(c, "del ") || strings.HasPrefix(c, "add ") {
			t.Errorf("after the import, the first read changed a vNIC: %q", dp.calls()[before:])
		}
	}
	if l := s.NICList(); len(l) != 2 {
		t.Fatalf("vNICs after the first read: %v", l)
	}
}

// TestApplyIncremental: an apply diffs only the changed objects, yet an
// object the store refused stays reported across unrelated changes and
// is tried again at each apply until the store takes it.
func TestApplyIncremental(t *testing.T) {
	dp := &lockedDP{refuse: "bad"}
	s := model.New(dp, model.Options{})
	a, err := New(Config{Endpoints: []string{"http://127.0.0.1:1"}, Node: "me", VTEP: netip.MustParseAddr("10.1.0.1"),
		Prefix: "/butterfly/", Store: s, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	sg := func(id string, port uint32) event {
		return event{key: layout.SG(id), value: EncodeSG(model.SG{ID: id, Rules: []model.Rule{ruleTCP(port)}})}
	}
	nic := func(id string, last byte) event {
		return event{key: layout.NIC("me", id), value: nicRec(id, 7, last)}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.applyEventsLocked(1, []event{sg("web", 80), nic("ok", 1), nic("bad", 2)})
	invalid := func() string { return strings.Join(a.invalidLocked(), "; ") }
	if !strings.Contains(invalid(), "nic bad: ") || len(s.NICList()) != 1 {
		t.Fatalf("after the first apply: invalid %q, vNICs %v", invalid(), s.NICList())
	}
	a.applyEventsLocked(2, []event{sg("web", 81)})
	if !strings.Contains(invalid(), "nic bad: ") {
		t.Fatalf("the refused vNIC is no longer reported after a group change: %q", invalid())
	}
	if r, err := s.Rules("web"); err != nil || len(r) != 2 { // 80 held down, 81 added
		t.Fatalf("web's rules: %v %v", r, err)
	}
	dp.mu.Lock()
	dp.refuse = ""
	dp.mu.Unlock()
	a.applyEventsLocked(3, []event{sg("other", 22)})
	if invalid() != "" || len(s.NICList()) != 2 {
		t.Fatalf("the refused vNIC was not tried again: invalid %q, vNICs %v", invalid(), s.NICList())
	}
	// A vNIC removed from etcd goes, its neighbour stays.
	a.applyEventsLocked(4, []event{{key: layout.NIC("me", "bad"), del: true}})
	if l := s.NICList(); len(l) != 1 || l[0] != "ok" {
		t.Fatalf("vNICs after bad's deletion: %v", l)
	}
}

// TestImportEtcdDown: an import etcd cannot take fails with the
// unavailability error (the daemon then stops before following etcd).
func TestImportEtcdDown(t *testing.T) {
	s := model.New(nopDataplane{}, model.Options{})
	if err := s.AddSG(model.SG{ID: "web"}); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Endpoints: []string{fmt.Sprintf("http://127.0.0.1:%d", labtest.FreePort(t))}, Node: "me",
		VTEP: netip.MustParseAddr("10.1.0.1"), Prefix: "/butterfly/", Store: s, Timeout: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	res, err := a.Import(context.Background())
	if err == nil || !strings.Contains(err.Error(), "cluster import: writing /butterfly/sgs/web: cluster: etcd unavailable") {
		t.Fatalf("Import without etcd = %+v, %v", res, err)
	}
}
