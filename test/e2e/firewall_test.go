package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// echoServer serves UDP and TCP echo on the given ports (IPv4 and IPv6) in
// a VM, one datagram or one connection at a time.
const echoServer = `
import selectors, socket, sys
sel = selectors.DefaultSelector()
for p in map(int, sys.argv[1:]):
    u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    u.bind(("::", p))
    sel.register(u, selectors.EVENT_READ, "u")
    t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    t.bind(("::", p))
    t.listen(16)
    sel.register(t, selectors.EVENT_READ, "t")
while True:
    for k, _ in sel.select():
        s = k.fileobj
        try:
            if k.data == "u":
                d, a = s.recvfrom(2048)
                s.sendto(d, a)
            else:
                c, _ = s.accept()
                c.settimeout(1)
                c.sendall(c.recv(2048))
                c.close()
        except OSError:
            pass
`

// echoClient sends "ping" over UDP or TCP and exits 0 if it comes back
// within 0.8 s.
const echoClient = `
import socket, sys
proto, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM)
s.settimeout(0.8)
if proto == "tcp":
    s.connect((dst, port))
    s.sendall(b"ping")
else:
    s.sendto(b"ping", (dst, port))
sys.exit(0 if s.recv(100) == b"ping" else 1)
`

// fwPorts are the ports the echo servers listen on.
var fwPorts = []int{4454, 4455, 5554, 5555, 8000, 9000}

// serveEcho starts echoServer in v; it is killed at the end of the test.
func serveEcho(v *labtest.VM, t *testing.T) {
	t.Helper()
	args := []string{"netns", "exec", v.NS, "/usr/bin/python3", "-c", echoServer}
	for _, p := range fwPorts {
		args = append(args, strconv.Itoa(p))
	}
	cmd := exec.Command("ip", args...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("echo server in %s: %v", v.NS, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
}

// echo sends one UDP or TCP echo from v to dst:port.
func echo(v *labtest.VM, proto, dst string, port int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", v.NS, "/usr/bin/python3", "-c", echoClient,
		proto, dst, strconv.Itoa(port)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s:%d from %s: %v: %s", proto, dst, port, v.Spec.ID, err, labtest.LastLine(string(out)))
	}
	return nil
}

// fwCheck is one expectation of a firewall scenario: traffic of proto
// ("icmp", "udp", "tcp") from VM from (1 or 2) to the other VM's address
// of family v6, port port, passes or not.
type fwCheck struct {
	from  int
	proto string
	v6    bool
	port  int
	ok    bool
}

// fwStep runs CLI commands (each a line of arguments), then checks.
type fwStep struct {
	cmds   []string
	checks []fwCheck
}

func ok(from int, proto string, port int) fwCheck {
	return fwCheck{from: from, proto: proto, port: port, ok: true}
}
func ko(from int, proto string, port int) fwCheck {
	return fwCheck{from: from, proto: proto, port: port}
}
func ok6(from int, proto string, port int) fwCheck {
	return fwCheck{from: from, proto: proto, port: port, v6: true, ok: true}
}
func ko6(from int, proto string, port int) fwCheck {
	return fwCheck{from: from, proto: proto, port: port, v6: true}
}

// TestFirewallScenarios replays the original's firewall scenarios 21-24,
// 28, 29, 33 and 34 (reference section 5.2) between two VMs of one host:
// VM1 (nic-1: 42.0.0.1, fd42::1) and VM2 (nic-2: 42.0.0.2, fd42::2). Each
// scenario starts with both vNICs in no group and no group defined.
func TestFirewallScenarios(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	h := l.SingleHost(labtest.IPv4)
	h.Start(labtest.DaemonOpts{})
	vms := []*labtest.VM{
		h.AddVM(labtest.NICSpec{ID: "nic-1", MAC: labtest.MACFor(1), VNI: 42, Addrs: []string{"42.0.0.1/24", "fd42::1/64"}}),
		h.AddVM(labtest.NICSpec{ID: "nic-2", MAC: labtest.MACFor(2), VNI: 42, Addrs: []string{"42.0.0.2/24", "fd42::2/64"}}),
	}
	for _, v := range vms {
		serveEcho(v, t)
	}
	allOpen := []string{"sg rule add sg-1 --ip-proto all --cidr 0.0.0.0/0", "sg rule add sg-1 --ip-proto all --cidr ::/0"}
	both := func(s ...[]string) []string {
		var out []string
		for _, x := range s {
			out = append(out, x...)
		}
		return out
	}
	scenarios := []struct {
		name  string
		steps []fwStep
	}{
		{"21 stateful default egress", []fwStep{
			{both(allOpen, []string{"nic sg set nic-2 sg-1"}), []fwCheck{ok(1, "udp", 8000), ok(1, "tcp", 8000), ko(2, "udp", 8000), ko(2, "tcp", 8000)}},
		}},
		{"22 sg set, sg del, rule re-added", []fwStep{
			{both(allOpen, []string{"nic sg set nic-2 sg-1"}), []fwCheck{ok(1, "tcp", 8000), ko(2, "tcp", 8000)}},
			{[]string{"nic sg set nic-1 sg-1"}, []fwCheck{ok(1, "udp", 8000), ok(2, "udp", 8000), ok(2, "tcp", 8000)}},
			{[]string{"sg del sg-1"}, []fwCheck{ko(1, "udp", 8000), ko(2, "tcp", 8000)}},
			{allOpen, []fwCheck{ok(1, "udp", 8000), ok(2, "tcp", 8000)}},
		}},
		{"23 IPv6", []fwStep{
			{[]string{"sg add sg-1", "nic sg set nic-1 sg-1", "nic sg set nic-2 sg-1"}, []fwCheck{ko6(1, "icmp", 0)}},
			{[]string{"sg rule add sg-1 --ip-proto all --cidr fd42::1/128", "sg rule add sg-1 --ip-proto all --cidr fd42::2/128"},
				[]fwCheck{ok6(1, "icmp", 0), ok6(2, "icmp", 0)}},
			{[]string{"sg rule del sg-1 --ip-proto all --cidr fd42::1/128", "sg rule del sg-1 --ip-proto all --cidr fd42::2/128"},
				[]fwCheck{ko6(1, "icmp", 0)}},
			{[]string{"sg rule add sg-1 --ip-proto 58 --cidr ::/0"}, []fwCheck{ok6(1, "icmp", 0), ok6(2, "icmp", 0), ko6(1, "tcp", 8000)}},
			{[]string{"sg rule add sg-1 --ip-proto tcp --port 8000 --cidr fd42::1/128", "sg rule add sg-1 --ip-proto udp --port 8000 --cidr fd42::1/128"},
				[]fwCheck{ok6(1, "tcp", 8000), ok6(1, "udp", 8000), ko6(2, "tcp", 8000), ko6(2, "udp", 8000)}},
			{[]string{"sg del sg-1"}, []fwCheck{ko6(1, "icmp", 0), ko6(1, "tcp", 8000)}},
		}},
		{"24 rule added to an empty group", []fwStep{
			{[]string{"sg add sg-1", "nic sg set nic-1 sg-1", "nic sg set nic-2 sg-1"}, []fwCheck{ko(1, "udp", 8000), ko(1, "tcp", 8000)}},
			{allOpen, []fwCheck{ok(1, "udp", 8000), ok(1, "tcp", 8000), ok(2, "udp", 8000)}},
		}},
		{"28 ICMP", []fwStep{
			{[]string{"sg add sg-1", "nic sg set nic-1 sg-1", "nic sg set nic-2 sg-1"}, []fwCheck{ko(1, "icmp", 0)}},
			{allOpen, []fwCheck{ok(1, "icmp", 0)}},
			{[]string{"sg rule del sg-1 --ip-proto all --cidr 0.0.0.0/0"}, []fwCheck{ko(1, "icmp", 0)}},
			{[]string{"sg rule add sg-1 --ip-proto icmp --cidr 0.0.0.0/0"}, []fwCheck{ok(1, "icmp", 0), ok(2, "icmp", 0), ko(1, "udp", 8000)}},
			{[]string{"sg rule del sg-1 --ip-proto icmp --cidr 0.0.0.0/0"}, []fwCheck{ko(1, "icmp", 0)}},
		}},
		{"29 two groups, rules on members", []fwStep{
			{[]string{"sg rule add sg-1 --ip-proto udp --port 8000 --sg-members sg-1", "sg rule add sg-2 --ip-proto udp --port 9000 --sg-members sg-2",
				"nic sg set nic-1 sg-1", "nic sg set nic-2 sg-2"},
				[]fwCheck{ko(2, "udp", 8000), ko(1, "udp", 9000)}},
			{[]string{"sg member add sg-1 42.0.0.2"}, []fwCheck{ok(2, "udp", 8000), ko(2, "udp", 9000), ko(1, "udp", 9000)}},
			{[]string{"sg member add sg-2 42.0.0.1"}, []fwCheck{ok(1, "udp", 9000), ko(1, "udp", 8000), ko(1, "tcp", 9000)}},
			{[]string{"sg member del sg-1 42.0.0.2"}, []fwCheck{ko(2, "udp", 8000), ok(1, "udp", 9000)}},
			{[]string{"sg member del sg-2 42.0.0.1"}, []fwCheck{ko(1, "udp", 9000)}},
		}},
		{"33 one TCP port", []fwStep{
			{[]string{"sg rule add sg-1 --ip-proto tcp --port 4454 --cidr 0.0.0.0/0", "nic sg set nic-2 sg-1"},
				[]fwCheck{ok(1, "tcp", 4454), ko(1, "tcp", 4455), ko(1, "udp", 4454), ko(1, "icmp", 0)}},
		}},
		{"34 one UDP port", []fwStep{
			{[]string{"sg rule add sg-1 --ip-proto udp --port 5554 --cidr 0.0.0.0/0", "nic sg set nic-2 sg-1"},
				[]fwCheck{ok(1, "udp", 5554), ko(1, "udp", 5555), ko(1, "tcp", 5554)}},
		}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			h.MustCLI("nic", "sg", "set", "nic-1")
			h.MustCLI("nic", "sg", "set", "nic-2")
			h.MustCLI("sg", "del", "sg-1")
			h.MustCLI("sg", "del", "sg-2")
			for i, st := range sc.steps {
				for _, c := range st.cmds {
					h.MustCLI(strings.Fields(c)...)
				}
				for _, c := range st.checks {
					src, dst := vms[c.from-1], vms[2-c.from]
					addr := dst.IP(0)
					if c.v6 {
						addr = dst.IP(1)
					}
					try := func() error {
						if c.proto == "icmp" {
							return src.PingOnce(addr)
						}
						return echo(src, c.proto, addr, c.port)
					}
					what := fmt.Sprintf("step %d: %s from VM%d to %s port %d", i+1, c.proto, c.from, addr, c.port)
					if c.ok {
						if err := labtest.Poll(labtest.SettleTimeout, try); err != nil {
							t.Fatalf("%s: want OK: %v", what, err)
						}
					} else if err := try(); err == nil {
						t.Fatalf("%s: want KO, it passed", what)
					}
				}
			}
		})
	}
	// Drops were counted by reason on the receiving vNICs.
	if out := h.MustCLI("nic", "counters", "nic-2"); !strings.Contains(out, "firewall_no_rule") {
		t.Errorf("nic-2 counters do not show firewall_no_rule drops:\n%s", out)
	}
}
