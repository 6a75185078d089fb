package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// TestCluster runs three daemons in cluster mode on a three-member etcd
// (one member in each host namespace), over a bridged underlay without
// multicast route and without --vxlan-peers: traffic flows within a VNI
// across all three hosts and not across VNIs; a rule added through node
// 1's API opens node 3's vNIC; with one etcd member down everything
// works, with two mutations fail clearly while forwarding continues, and
// once they are back the nodes converge; an invalid record written with
// etcdctl is reported and ignored; a node cut off etcd while changes are
// made and compacted away resyncs and converges.
func TestCluster(t *testing.T) {
	l := newLab(t)
	hosts := l.HostsOnSwitch(labtest.IPv4, 3)
	var specs []labtest.EtcdSpec
	for _, h := range hosts {
		specs = append(specs, labtest.EtcdSpec{NS: h.NS, IP: h.VTEP.String(), ClientPort: 2379, PeerPort: 2380})
	}
	etcd := labtest.StartEtcd(t, l.Dir, specs...)
	eps := strings.Join(etcd.Endpoints(), ",")
	for _, h := range hosts {
		h.Start(labtest.DaemonOpts{Extra: []string{"--etcd", eps, "--node", h.Name}})
	}
	h1, h2, h3 := hosts[0], hosts[1], hosts[2]
	labtest.Eventually(t, labtest.SettleTimeout, "three live nodes", func() error {
		out, err := h3.CLI("cluster", "nodes")
		if err != nil {
			return err
		}
		if n := strings.Count(out, " alive "); n != 3 {
			return fmt.Errorf("%d alive:\n%s", n, out)
		}
		return nil
	})

	// Groups are the cluster's: created once, through node 1.
	h1.OpenSG("sg-open")
	h1.MustCLI("sg", "add", "web")
	vm := func(h *labtest.Host, id string, vni uint32, n int, sg string) *labtest.VM {
		return h.AddVM(labtest.NICSpec{ID: id, MAC: labtest.MACFor(n), VNI: vni,
			Addrs: []string{fmt.Sprintf("42.0.0.%d/24", n)}, SGs: []string{sg}})
	}
	a1 := vm(h1, "a1", 42, 1, "sg-open")
	a2 := vm(h2, "a2", 42, 2, "sg-open")
	a3 := vm(h3, "a3", 42, 3, "sg-open")
	b3 := vm(h3, "b3", 51, 4, "sg-open")
	c3 := vm(h3, "c3", 42, 5, "web")
	if out := h2.MustCLI("cluster", "nics"); !strings.Contains(out, "h3 c3 42 ") || !strings.Contains(out, "h1 a1 42 ") {
		t.Fatalf("cluster nics on h2:\n%s", out)
	}
	if out := h1.MustCLI("nic", "list"); strings.TrimSpace(out) != "a1" {
		t.Fatalf("h1 nic list: %q, want its own vNIC only", out)
	}

	// Within VNI 42 across the three hosts; VNI 51 is isolated.
	if err := labtest.Parallel(
		func() error { return a1.Reach(a2.IP(0)) },
		func() error { return a1.Reach(a3.IP(0)) },
		func() error { return a2.Reach(a3.IP(0)) },
	); err != nil {
		t.Fatal(err)
	}
	a1.Blocked(t, b3.IP(0))
	// ARP suppression: with a3's address gone from its VM (so that only
	// the records know it), a1 still resolves it; an unknown address not.
	a3.DelAddr("42.0.0.3/24")
	labtest.Must(t, "ip", "-n", a1.NS, "neigh", "flush", "all")
	_ = a1.PingOnce(a3.IP(0)) // the echo itself goes unanswered
	_ = a1.PingOnce("42.0.0.77")
	if out := labtest.Must(t, "ip", "-n", a1.NS, "neigh", "show", "42.0.0.3"); !strings.Contains(out, "lladdr "+a3.Spec.MAC) {
		t.Fatalf("a1 did not resolve 42.0.0.3 from the records: %q", out)
	}
	if out := labtest.Must(t, "ip", "-n", a1.NS, "neigh", "show", "42.0.0.77"); strings.Contains(out, "lladdr") {
		t.Fatalf("a1 resolved an unknown address: %q", out)
	}
	a3.AddAddr("42.0.0.3/24")
	// c3's group has no rule yet: closed. A rule added through node 1
	// opens TCP port 8000 of node 3's vNIC (and only that port).
	serveEcho(c3, t)
	if err := echo(a1, "tcp", c3.IP(0), 8000); err == nil {
		t.Fatal("TCP 8000 to c3 passed before any rule")
	}
	h1.MustCLI("sg", "rule", "add", "web", "--ip-proto", "tcp", "--port", "8000", "--cidr", "42.0.0.0/24")
	labtest.Eventually(t, labtest.SettleTimeout, "TCP 8000 to c3 after the rule", func() error {
		return echo(a1, "tcp", c3.IP(0), 8000)
	})
	if err := echo(a1, "tcp", c3.IP(0), 9000); err == nil {
		t.Fatal("TCP 9000 to c3 passed: the rule opened more than its port")
	}
	h1.MustCLI("sg", "rule", "add", "web", "--ip-proto", "icmp", "--cidr", "42.0.0.0/24")
	a1.Reaches(t, c3.IP(0))
	// A member added through node 2 reaches node 3: TCP 9000 of c3 opens
	// to the members of "trusted" only, and a1 becomes one.
	h2.MustCLI("sg", "add", "trusted")
	h1.MustCLI("sg", "rule", "add", "web", "--ip-proto", "tcp", "--port", "9000", "--sg-members", "trusted")
	if err := echo(a1, "tcp", c3.IP(0), 9000); err == nil {
		t.Fatal("TCP 9000 to c3 passed before a1 was a member of trusted")
	}
	h2.MustCLI("sg", "member", "add", "trusted", a1.IP(0))
	labtest.Eventually(t, labtest.SettleTimeout, "TCP 9000 to c3 once a1 is a member", func() error {
		return echo(a1, "tcp", c3.IP(0), 9000)
	})

	// One etcd member down: mutations still work (quorum 2 of 3).
	etcd.Members[2].Kill()
	h2.MustCLI("sg", "member", "add", "web", "42.0.0.99")
	labtest.Eventually(t, labtest.SettleTimeout, "member on h1", func() error {
		out, err := h1.CLI("sg", "member", "list", "web")
		if err == nil && !strings.Contains(out, "42.0.0.99") {
			err = fmt.Errorf("members: %q", out)
		}
		return err
	})
	a2.Reaches(t, a3.IP(0))

	// Two down: no quorum. Mutations fail clearly, forwarding continues.
	etcd.Members[1].Kill()
	start := time.Now()
	out, err := h1.CLI("sg", "rule", "add", "web", "--ip-proto", "tcp", "--port", "22", "--cidr", "0.0.0.0/0")
	if err == nil || !strings.Contains(out, "etcd unavailable") {
		t.Fatalf("mutation without quorum: %v\n%s", err, out)
	}
	t.Logf("mutation without quorum failed after %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	labtest.Eventually(t, labtest.SettleTimeout, "status shows etcd down", func() error {
		out, err := h1.CLI("status")
		if err == nil && !strings.Contains(out, "cluster connected: false") {
			err = fmt.Errorf("status:\n%s", out)
		}
		return err
	})
	if err := labtest.Parallel(
		func() error { return a1.Reach(a3.IP(0)) },
		func() error { return a1.Reach(c3.IP(0)) },
	); err != nil {
		t.Fatalf("forwarding without quorum: %v", err)
	}
	if out := h3.MustCLI("sg", "rule", "list", "web"); strings.Contains(out, "22") {
		t.Fatalf("the failed mutation reached h3:\n%s", out)
	}
	// kill -9 node 3's daemon and restart it while etcd has no quorum:
	// it starts from its state file and the peers it last knew.
	h3.Stop(syscall.SIGKILL)
	h3.Start(labtest.DaemonOpts{Extra: []string{"--etcd", eps, "--node", h3.Name}})
	for _, v := range []*labtest.VM{a3, b3, c3} {
		v.Plug()
	}
	if err := labtest.Parallel(
		func() error { return a1.Reach(a3.IP(0)) },
		func() error { return a2.Reach(c3.IP(0)) },
	); err != nil {
		t.Fatalf("node 3 restarted without etcd: %v", err)
	}
	a1.Blocked(t, b3.IP(0))

	// Back: the same mutation succeeds and reaches every node.
	for _, m := range etcd.Members[1:] {
		if err := m.Start(); err != nil {
			t.Fatal(err)
		}
	}
	labtest.Eventually(t, 2*labtest.SettleTimeout, "mutation after quorum is back", func() error {
		_, err := h1.CLI("sg", "rule", "add", "web", "--ip-proto", "tcp", "--port", "22", "--cidr", "0.0.0.0/0")
		return err
	})
	for _, h := range hosts {
		labtest.Eventually(t, labtest.SettleTimeout, h.Name+" converged", func() error {
			out, err := h.CLI("sg", "rule", "list", "web")
			// tcp 8000, icmp, tcp 9000 from trusted, tcp 22
			if err == nil && strings.Count(strings.TrimSpace(out), "\n") != 3 {
				err = fmt.Errorf("rules:\n%s", out)
			}
			return err
		})
	}

	// An invalid record written with etcdctl: reported, ignored.
	if out, err := etcd.Ctl("put", "/butterfly/sgs/bad", `{"id":"bad","rule":[{"direction":"INBOUND","protocol":6}]}`); err != nil {
		t.Fatalf("etcdctl put: %v %s", err, out)
	}
	labtest.Eventually(t, labtest.SettleTimeout, "invalid record in status", func() error {
		out, err := h2.CLI("status")
		if err == nil && !strings.Contains(out, "cluster invalid record: /butterfly/sgs/bad: ") {
			err = fmt.Errorf("status:\n%s", out)
		}
		return err
	})
	if out := h2.MustCLI("sg", "list"); strings.Contains(out, "bad") {
		t.Fatalf("the invalid group is on h2:\n%s", out)
	}
	a1.Reaches(t, a2.IP(0))

	// Compaction forces a full resync: node 2's etcd connections are cut
	// (reset), changes are made through nodes 1 and 3 and etcd is
	// compacted past them; once node 2 reconnects its watch cannot resume
	// from its revision, it reads everything again and converges.
	compactResync(t, etcd, h1, h2, h3)
	a1.Reaches(t, a2.IP(0))

	// A node whose daemon dies: its lease expires, the others see it dead.
	h2.Stop(syscall.SIGKILL)
	labtest.Eventually(t, labtest.SettleTimeout, "h2 dead on h1", func() error {
		out, err := h1.CLI("cluster", "nodes")
		if err == nil && !strings.Contains(out, "h2 "+h2.VTEP.String()+" dead ") {
			err = fmt.Errorf("nodes:\n%s", out)
		}
		return err
	})
	a1.Reaches(t, a3.IP(0))
}

// compactResync cuts h2's daemon off etcd (its TCP connections to the
// client port are reset), deletes b3 on h3, adds a rule to "web" and
// removes member 42.0.0.99 from it through h1, compacts etcd past these
// changes and lets h2 reconnect: h2 must log the compacted watch, read
// everything again and show the three changes.
func compactResync(t *testing.T, etcd *labtest.Etcd, h1, h2, h3 *labtest.Host) {
	t.Helper()
	compacted := func() int {
		b, _ := os.ReadFile(h2.LogPath)
		return strings.Count(string(b), "cluster watch compacted")
	}
	before := compacted()
	nft := func(args ...string) {
		labtest.Must(t, "ip", append([]string{"netns", "exec", h2.NS, "nft"}, args...)...)
	}
	nft("add", "table", "inet", "bfcut")
	cut := true
	uncut := func() {
		if cut {
			nft("delete", "table", "inet", "bfcut")
			cut = false
		}
	}
	t.Cleanup(uncut)
	nft("add", "chain", "inet", "bfcut", "out", "{ type filter hook output priority 0 ; }")
	nft("add", "rule", "inet", "bfcut", "out", "tcp", "dport", "2379", "reject", "with", "tcp", "reset")
	// The health check (every second) and the lease's keep-alives reset
	// every connection of h2's daemon to etcd.
	pid := fmt.Sprintf("pid=%d,", h2.PID())
	labtest.Eventually(t, labtest.SettleTimeout, "h2's daemon without etcd connection", func() error {
		out, err := labtest.Run("ip", "netns", "exec", h2.NS, "ss", "-Htnp", "state", "established", "dport", "=", ":2379")
		if err == nil && strings.Contains(out, pid) {
			err = fmt.Errorf("still connected:\n%s", out)
		}
		return err
	})
	h3.MustCLI("nic", "del", "b3")
	h1.MustCLI("sg", "rule", "add", "web", "--ip-proto", "tcp", "--port", "7000", "--cidr", "42.0.0.0/24")
	h1.MustCLI("sg", "member", "del", "web", "42.0.0.99")
	out, err := etcd.Ctl("get", "/butterfly/", "--prefix", "--keys-only", "-w", "json")
	if err != nil {
		t.Fatal(err)
	}
	var head struct {
		Header struct{ Revision int64 } `json:"header"`
	}
	if err := json.Unmarshal([]byte(out), &head); err != nil || head.Header.Revision == 0 {
		t.Fatalf("etcd revision: %v %q", err, out)
	}
	if out, err := etcd.Ctl("compact", fmt.Sprint(head.Header.Revision), "--physical"); err != nil {
		t.Fatalf("compact: %v %s", err, out)
	}
	if out := h2.MustCLI("sg", "rule", "list", "web"); strings.Contains(out, "7000") {
		t.Fatalf("h2 got the rule while cut off etcd:\n%s", out)
	}
	uncut()
	back := time.Now()
	defer func() {
		t.Logf("h2 converged %v after its etcd connections were let through", time.Since(back).Round(time.Millisecond))
	}()
	labtest.Eventually(t, 3*labtest.SettleTimeout, "h2 converged after the compaction", func() error {
		if n := compacted(); n == before {
			return fmt.Errorf("no compacted watch logged")
		}
		if out, err := h2.CLI("sg", "rule", "list", "web"); err != nil || !strings.Contains(out, "7000") {
			return fmt.Errorf("rules %v:\n%s", err, out)
		}
		if out, err := h2.CLI("sg", "member", "list", "web"); err != nil || strings.Contains(out, "42.0.0.99") {
			return fmt.Errorf("members %v:\n%s", err, out)
		}
		if out, err := h2.CLI("cluster", "nics"); err != nil || strings.Contains(out, " b3 ") {
			return fmt.Errorf("cluster nics %v:\n%s", err, out)
		}
		return nil
	})
}

// TestClusterImportIPv6 moves two standalone nodes to cluster mode over
// an IPv6 underlay (VTEPs and etcd on IPv6 addresses): with
// --cluster-import each writes its state file's vNICs and groups to etcd
// before the first read, so both keep their vNICs and group, and their
// VMs reach each other across the nodes in cluster mode.
func TestClusterImportIPv6(t *testing.T) {
	l := newLab(t)
	hosts := l.HostsOnSwitch(labtest.IPv6, 2)
	h1, h2 := hosts[0], hosts[1]
	h1.Peers, h2.Peers = []netip.Addr{h2.VTEP}, []netip.Addr{h1.VTEP}
	var vms []*labtest.VM
	for i, h := range hosts {
		h.Start(labtest.DaemonOpts{HeadEnd: true})
		h.MustCLI("sg", "add", "web")
		h.MustCLI("sg", "rule", "add", "web", "--ip-proto", "icmp", "--cidr", "42.0.0.0/24")
		vms = append(vms, h.AddVM(labtest.NICSpec{ID: fmt.Sprintf("a%d", i+1), MAC: labtest.MACFor(i + 1), VNI: 42,
			Addrs: []string{fmt.Sprintf("42.0.0.%d/24", i+1)}, SGs: []string{"web"}}))
	}
	vms[0].Reaches(t, vms[1].IP(0))

	etcd := labtest.StartEtcd(t, l.Dir, labtest.EtcdSpec{NS: h1.NS, IP: h1.VTEP.String(), ClientPort: 2379, PeerPort: 2380})
	for i, h := range hosts {
		h.Stop(syscall.SIGTERM)
		h.Start(labtest.DaemonOpts{Extra: []string{"--etcd", etcd.Endpoints()[0], "--node", h.Name, "--cluster-import"}})
		vms[i].Plug()
	}
	for i, h := range hosts {
		if out := h.MustCLI("nic", "list"); strings.TrimSpace(out) != vms[i].Spec.ID {
			t.Fatalf("%s nic list after the import: %q", h.Name, out)
		}
	}
	labtest.Eventually(t, labtest.SettleTimeout, "both nodes' vNICs in the cluster", func() error {
		out, err := h1.CLI("cluster", "nics")
		if err == nil && (!strings.Contains(out, "h1 a1 42 ") || !strings.Contains(out, "h2 a2 42 ")) {
			err = fmt.Errorf("cluster nics:\n%s", out)
		}
		return err
	})
	if out := h2.MustCLI("sg", "rule", "list", "web"); !strings.Contains(out, "IP protocol: 1 ") {
		t.Fatalf("h2's group after the import:\n%s", out)
	}
	if out, err := etcd.Ctl("get", "/butterfly/nics/h2/a2", "--print-value-only"); err != nil || !strings.Contains(out, `"vni":42`) {
		t.Fatalf("a2's record: %v %s", err, out)
	}
	vms[0].Reaches(t, vms[1].IP(0))
	vms[1].Reaches(t, vms[0].IP(0))
}
