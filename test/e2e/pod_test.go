package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// pod is a network namespace whose TAP the daemon creates and plugs
// itself (nic add --netns), as a container runtime's would be.
type pod struct {
	host   *labtest.Host
	ns     string
	id     string
	mac    string
	vni    uint32
	addr   string // with prefix length
	ifname string // "" = the daemon's default
	extra  []string
}

// netnsPath is where "ip netns" mounts a namespace.
func netnsPath(ns string) string { return "/var/run/netns/" + ns }

// addPod creates pod n's namespace and its vNIC; the test then
// configures the address, as a CNI plugin does.
func addPod(h *labtest.Host, n int, vni uint32, ifname string, extra ...string) *pod {
	h.Lab.T.Helper()
	p := &pod{host: h, ns: h.Lab.NetNS(fmt.Sprintf("pod%d", n)), id: fmt.Sprintf("pod-%d", n), mac: labtest.MACFor(n),
		vni: vni, addr: fmt.Sprintf("42.0.0.%d/24", n), ifname: ifname, extra: extra}
	p.plug()
	labtest.Must(h.Lab.T, "ip", "-n", p.ns, "addr", "add", p.addr, "dev", p.dev())
	return p
}

// plug sends the nic add and checks the printed interface name.
func (p *pod) plug() {
	t := p.host.Lab.T
	t.Helper()
	args := []string{"nic", "add", "--id", p.id, "--mac", p.mac, "--vni", strconv.FormatUint(uint64(p.vni), 10),
		"--type", "TAP", "--ip", p.ip(), "--netns", netnsPath(p.ns)}
	if p.ifname != "" {
		args = append(args, "--ifname", p.ifname)
	}
	if got := labtest.LastLine(p.host.MustCLI(append(args, p.extra...)...)); got != p.dev() {
		t.Fatalf("nic add %s printed %q, want %q", p.id, got, p.dev())
	}
}

// dev is the TAP's name in the pod.
func (p *pod) dev() string {
	if p.ifname != "" {
		return p.ifname
	}
	return p.id
}

func (p *pod) ip() string { return strings.SplitN(p.addr, "/", 2)[0] }

// link returns the TAP's "ip -o link" line in the pod.
func (p *pod) link() (string, error) {
	return labtest.Run("ip", "-n", p.ns, "-o", "link", "show", p.dev())
}

// ifindex is the TAP's interface index in the pod.
func (p *pod) ifindex(t *testing.T) int {
	t.Helper()
	out, err := p.link()
	if err != nil {
		t.Fatal(err)
	}
	i, err := strconv.Atoi(strings.SplitN(out, ":", 2)[0])
	if err != nil {
		t.Fatalf("no ifindex in %q", out)
	}
	return i
}

func (p *pod) ping(dst string) error {
	_, err := labtest.Run("ip", "netns", "exec", p.ns, "ping", "-n", "-c", "1", "-W", "1", dst)
	return err
}

// TestNetnsNIC: nic add --netns creates the TAP in the pod's namespace
// under --ifname (or a name derived from the id), with the vNIC's MAC,
// up; pods of one VNI reach each other, not those of another VNI;
// nic details reports the namespace; nic del removes the TAP from it.
func TestNetnsNIC(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	h := l.SingleHost(labtest.IPv4)
	h.Start(labtest.DaemonOpts{})
	h.OpenSG("sg-open")
	p1 := addPod(h, 1, 42, "eth0", "--sg", "sg-open")
	p2 := addPod(h, 2, 42, "eth0", "--sg", "sg-open")
	p3 := addPod(h, 3, 43, "", "--sg", "sg-open")
	for _, p := range []*pod{p1, p2, p3} {
		out, err := p.link()
		if err != nil {
			t.Fatalf("%s: no %s in the pod: %v", p.id, p.dev(), err)
		}
		if !strings.Contains(out, "link/ether "+p.mac) || !regexp.MustCompile(`<[A-Z_,]*\bUP\b`).MatchString(out) {
			t.Errorf("%s: want MAC %s and UP: %s", p.id, p.mac, out)
		}
		if _, err := labtest.Run("ip", "-n", h.NS, "link", "show", p.dev()); err == nil {
			t.Errorf("%s: %s also in the daemon's namespace", p.id, p.dev())
		}
	}
	labtest.Eventually(t, labtest.SettleTimeout, "pod-1 pings pod-2", func() error { return p1.ping(p2.ip()) })
	if err := p1.ping(p3.ip()); err == nil {
		t.Error("pod-1 reached pod-3 in another VNI")
	}
	d := h.MustCLI("nic", "details", p1.id)
	for _, want := range []string{"netns: " + netnsPath(p1.ns), "ifname: eth0"} {
		if !strings.Contains(d, want) {
			t.Errorf("nic details lacks %q:\n%s", want, d)
		}
	}
	h.MustCLI("nic", "del", p1.id)
	labtest.Eventually(t, labtest.SettleTimeout, "eth0 removed from pod-1", func() error {
		if out, err := p1.link(); err == nil {
			return fmt.Errorf("still there: %s", out)
		}
		return nil
	})
	// A namespace path that is not one is a clear error; the daemon serves on.
	out, err := h.CLI("nic", "add", "--id", "bad", "--mac", labtest.MACFor(9), "--vni", "42", "--type", "TAP", "--netns", "/proc/self/ns/uts")
	if err == nil || !strings.Contains(out, "network namespace") {
		t.Errorf("nic add with a UTS namespace: %v %s", err, out)
	}
	if _, err := h.CLI("status"); err != nil {
		t.Errorf("daemon not serving after a bad nic add: %v", err)
	}
}

// stream is a TCP connection from one pod to another with a writer
// pushing data as fast as it can and the reader counting it.
type stream struct {
	recv    atomic.Int64
	readErr atomic.Value
	wErr    atomic.Value
	c, s    net.Conn
}

func startStream(t *testing.T, from, to *pod) *stream {
	t.Helper()
	var ln net.Listener
	if err := labtest.InNS(to.ns, func() (err error) {
		ln, err = net.Listen("tcp4", to.ip()+":7777")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	st := &stream{}
	if err := labtest.InNS(from.ns, func() (err error) {
		err = labtest.Poll(labtest.SettleTimeout, func() error {
			st.c, err = net.DialTimeout("tcp4", to.ip()+":7777", time.Second)
			return err
		})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var err error
	if st.s, err = ln.Accept(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.c.Close(); st.s.Close() })
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := st.s.Read(buf)
			st.recv.Add(int64(n))
			if err != nil {
				st.readErr.Store(err)
				return
			}
		}
	}()
	go func() {
		buf := make([]byte, 16<<10)
		for {
			if _, err := st.c.Write(buf); err != nil {
				st.wErr.Store(err)
				return
			}
		}
	}()
	return st
}

// flowing waits until another n bytes have arrived, with the connection
// intact.
func (st *stream) flowing(t *testing.T, what string, n int64) {
	t.Helper()
	start := st.recv.Load()
	labtest.Eventually(t, labtest.SettleTimeout, what, func() error {
		if err, _ := st.readErr.Load().(error); err != nil {
			return fmt.Errorf("stream broken (reader): %v", err)
		}
		if err, _ := st.wErr.Load().(error); err != nil {
			return fmt.Errorf("stream broken (writer): %v", err)
		}
		if got := st.recv.Load() - start; got < n {
			return fmt.Errorf("%d bytes received, want %d", got, n)
		}
		return nil
	})
}

// TestNetnsNICRestart: a TCP stream between two pods survives a SIGTERM
// and a SIGKILL of the daemon: the restarted daemon re-attaches to the
// same TAPs (same ifindex, the pods' addresses untouched) and the stream
// resumes. So does a stream between pods that filter (a security group
// that lets in only the stream's port, default egress): after SIGTERM
// because the clean stop saves the connection tables and the restart
// loads them, after SIGKILL because the restarted firewall picks up the
// connection in progress (--conntrack-pickup). A pod whose namespace
// disappeared while the daemon was down is kept detached and reported
// (log, status, nic counters netns_gone), the daemon serves, and
// replaying its nic add re-creates it (status no longer reports it), while
// replaying the nic add of an attached pod keeps its interface, addresses
// and connections.
func TestNetnsNICRestart(t *testing.T) {
	l := newLab(t)
	h := l.SingleHost(labtest.IPv4)
	h.Start(labtest.DaemonOpts{})
	p1 := addPod(h, 1, 42, "eth0", "--bypass-filtering")
	p2 := addPod(h, 2, 42, "eth0", "--bypass-filtering")
	// pod-4 and pod-5 filter (security group, connection tracking): only
	// the stream's port is open towards them, so the ACKs pod-5 sends
	// pod-4 pass pod-4's firewall as replies of a tracked connection only.
	h.MustCLI("sg", "rule", "add", "sg-stream", "--ip-proto", "tcp", "--port", "7777", "--cidr", "42.0.0.0/24")
	p4 := addPod(h, 4, 42, "eth0", "--sg", "sg-stream")
	p5 := addPod(h, 5, 42, "eth0", "--sg", "sg-stream")
	st := startStream(t, p1, p2)
	st.flowing(t, "stream before restart", 1<<20)
	fst := startStream(t, p4, p5)
	fst.flowing(t, "filtered stream before restart", 1<<20)
	idx1, idx2 := p1.ifindex(t), p2.ifindex(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		h.Stop(sig)
		h.Start(labtest.DaemonOpts{})
		st.flowing(t, fmt.Sprintf("stream after %v and restart", sig), 1<<20)
		fst.flowing(t, fmt.Sprintf("filtered stream after %v and restart", sig), 1<<20)
		// Picked up after SIGKILL only: SIGTERM saved the tables.
		for _, p := range []*pod{p4, p5} {
			out := h.MustCLI("nic", "counters", p.id)
			if picked := regexp.MustCompile(`firewall_picked_up\W+1\b`).MatchString(out); picked != (sig == syscall.SIGKILL) {
				t.Errorf("after %v: %s picked up its connection: %t, want %t\n%s", sig, p.id, picked, sig == syscall.SIGKILL, out)
			}
		}
		if a, b := p1.ifindex(t), p2.ifindex(t); a != idx1 || b != idx2 {
			t.Errorf("after %v: ifindex %d %d, want %d %d", sig, a, b, idx1, idx2)
		}
		for _, p := range []*pod{p1, p2} {
			if out := labtest.Must(t, "ip", "-n", p.ns, "-o", "addr", "show", p.dev()); !strings.Contains(out, p.addr) {
				t.Errorf("after %v: %s lost %s: %s", sig, p.id, p.addr, out)
			}
		}
	}

	// The orchestrator replays every nic add after the restart: the pods
	// keep their interface, addresses and connections.
	for _, p := range []*pod{p1, p2, p4, p5} {
		p.plug()
	}
	st.flowing(t, "stream after nic add is replayed", 1<<20)
	fst.flowing(t, "filtered stream after nic add is replayed", 1<<20)
	if a, b := p1.ifindex(t), p2.ifindex(t); a != idx1 || b != idx2 {
		t.Errorf("after the replay: ifindex %d %d, want %d %d", a, b, idx1, idx2)
	}
	for _, p := range []*pod{p1, p2, p4, p5} {
		if out := labtest.Must(t, "ip", "-n", p.ns, "-o", "addr", "show", p.dev()); !strings.Contains(out, p.addr) {
			t.Errorf("after the replay: %s lost %s: %s", p.id, p.addr, out)
		}
	}

	// pod-3's namespace goes away while the daemon is down.
	p3 := addPod(h, 3, 42, "eth0", "--bypass-filtering")
	labtest.Eventually(t, labtest.SettleTimeout, "pod-3 pings pod-1", func() error { return p3.ping(p1.ip()) })
	h.Stop(syscall.SIGKILL)
	labtest.Must(t, "ip", "netns", "del", p3.ns)
	h.Start(labtest.DaemonOpts{})
	st.flowing(t, "stream after a restart without pod-3", 1<<20)
	labtest.Eventually(t, labtest.SettleTimeout, "pod-3's missing namespace logged", func() error {
		b, err := os.ReadFile(h.LogPath)
		if err != nil {
			return err
		}
		if !regexp.MustCompile(`namespace is gone.*pod-3.*` + regexp.QuoteMeta(netnsPath(p3.ns))).Match(b) {
			return errors.New("no 'namespace is gone' line naming pod-3 and its namespace")
		}
		return nil
	})
	if ids := strings.Fields(h.MustCLI("nic", "list")); !slices.Contains(ids, "pod-3") {
		t.Errorf("pod-3 not kept: %v", ids)
	}
	issue := regexp.MustCompile(`(?m)^nic pod-3: network namespace ` + regexp.QuoteMeta(netnsPath(p3.ns)) + ` is gone`)
	if out := h.MustCLI("status"); !issue.MatchString(out) || strings.Count(out, "\nnic ") != 1 {
		t.Errorf("status does not report pod-3's namespace, or reports others:\n%s", out)
	}
	// Frames for it are counted as netns_gone (pod-1's ARP requests,
	// flooded to every vNIC of the VNI).
	labtest.Eventually(t, labtest.SettleTimeout, "pod-3's counters report netns_gone", func() error {
		_ = p1.ping(p3.ip())
		out, err := h.CLI("nic", "counters", "pod-3")
		if err != nil {
			return err
		}
		if !regexp.MustCompile(`netns_gone\W+[1-9]`).MatchString(out) {
			return fmt.Errorf("no netns_gone count:\n%s", out)
		}
		return nil
	})
	// The orchestrator replays nic add once the pod is back.
	labtest.Must(t, "ip", "netns", "add", p3.ns)
	p3.plug()
	labtest.Must(t, "ip", "-n", p3.ns, "addr", "add", p3.addr, "dev", p3.dev())
	labtest.Eventually(t, labtest.SettleTimeout, "pod-3 pings pod-1 after nic add is replayed", func() error { return p3.ping(p1.ip()) })
	if out := h.MustCLI("status"); strings.Contains(out, "\nnic ") {
		t.Errorf("status still reports a vNIC issue after the replay:\n%s", out)
	}
}
