package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

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
