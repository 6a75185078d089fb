package e2e

import (
	"bufio"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// migrateServer accepts one TCP connection on 5000 and echoes it.
const migrateServer = `
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5000))
s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
while True:
    d = c.recv(64)
    if not d:
        break
    c.sendall(d)
`

// migrateClient opens one TCP connection to argv[1]:5000, prints its local
// port, then sends a byte every 100 ms and prints a line for each echo.
// It never reconnects: an error or the end of the stream ends it.
const migrateClient = `
import socket, sys, time
c = socket.create_connection((sys.argv[1], 5000), timeout=5)
c.settimeout(None)
print("port", c.getsockname()[1], flush=True)
while True:
    c.sendall(b"x")
    if c.recv(1) != b"x":
        print("eof", flush=True)
        break
    print("echo", flush=True)
    time.sleep(0.1)
`

// pyProc is a python program running in a VM namespace, its stdout read
// line by line.
type pyProc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func startPy(t *testing.T, ns, script string, args ...string) *pyProc {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, "/usr/bin/python3", "-c", script}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("python in %s: %v", ns, err)
	}
	p := &pyProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill() // "ip netns exec" execs python: this is its PID
		<-p.done
		cmd.Wait()
	})
	return p
}

// count returns how many output lines equal s, and the last line.
func (p *pyProc) count(s string) (int, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.lines {
		if l == s {
			n++
		}
	}
	last := ""
	if len(p.lines) > 0 {
		last = p.lines[len(p.lines)-1]
	}
	return n, last
}

// echoes returns the client's echo count; it fails the test if the client
// saw its connection end.
func (p *pyProc) echoes(t *testing.T) int {
	t.Helper()
	n, last := p.count("echo")
	if last != "echo" && !strings.HasPrefix(last, "port ") && last != "" {
		t.Fatalf("client: %q", last)
	}
	return n
}

// dropCount reads one drop counter of a vNIC ("nic counters").
func dropCount(h *labtest.Host, t *testing.T, nic, reason string) int {
	t.Helper()
	out := h.MustCLI("nic", "counters", nic)
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "drop "+reason+": "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("nic counters %s: %q", nic, l)
			}
			return n
		}
	}
	return 0
}

// TestMigrateLiveTCP moves a VM with a live TCP connection from host 1 to
// host 2. The VM (vm-a) opened the connection to vm-b, which stays on host
// 1; vm-a's security group allows nothing from vm-b, so on host 2 vm-b's
// segments (and vm-a's, which are not SYNs) pass only as a tracked flow.
// With nic export / nic add --fw-import the connection continues; the same
// sequence without the import cuts it.
func TestMigrateLiveTCP(t *testing.T) {
	t.Parallel()
	for _, withImport := range []bool{true, false} {
		t.Run(map[bool]string{true: "with import", false: "without import"}[withImport], func(t *testing.T) {
			t.Parallel()
			migrate(t, withImport)
		})
	}
}

func migrate(t *testing.T, withImport bool) {
	l := newLab(t)
	h1, h2 := l.HostPair(labtest.IPv4)
	for _, h := range []*labtest.Host{h1, h2} {
		h.Start(labtest.DaemonOpts{})
		// vm-a's group: SSH from a network vm-b is not in, no OUTBOUND
		// rule (the default egress lets vm-a open connections).
		h.MustCLI("sg", "rule", "add", "sg-a", "--ip-proto", "tcp", "--port", "22", "--cidr", "203.0.113.0/24")
		// vm-b's group: TCP 5000 from vm-a only.
		h.MustCLI("sg", "rule", "add", "sg-b", "--ip-proto", "tcp", "--port", "5000", "--cidr", "10.10.0.1/32")
	}
	specA := labtest.NICSpec{ID: "vm-a", MAC: labtest.MACFor(0xa), VNI: 42, Addrs: []string{"10.10.0.1/24"}, SGs: []string{"sg-a"}}
	a := h1.AddVM(specA)
	b := h1.AddVM(labtest.NICSpec{ID: "vm-b", MAC: labtest.MACFor(0xb), VNI: 42, Addrs: []string{"10.10.0.2/24"}, SGs: []string{"sg-b"}})

	srv := startPy(t, b.NS, migrateServer)
	labtest.Eventually(t, labtest.SettleTimeout, "echo server listening", func() error {
		if n, _ := srv.count("listening"); n == 0 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	cli := startPy(t, a.NS, migrateClient, b.IP(0))
	labtest.Eventually(t, labtest.SettleTimeout, "10 echoes before the migration", func() error {
		if n := cli.echoes(t); n < 10 {
			return fmt.Errorf("%d echoes", n)
		}
		return nil
	})
	var port string
	func() {
		cli.mu.Lock()
		defer cli.mu.Unlock()
		port = strings.TrimPrefix(cli.lines[0], "port ")
	}()
	flow := "tcp 10.10.0.1:" + port + " -> 10.10.0.2:5000 ESTABLISHED from_vm"
	if out := h1.MustCLI("nic", "conntrack", "vm-a"); !strings.Contains(out, flow) {
		t.Fatalf("host 1 does not list the flow %q:\n%s", flow, out)
	}

	// Migrate: export on host 1, delete there (the TAP leaves the VM's
	// namespace with it), create on host 2 and plug its TAP into the
	// same namespace, same MAC and address.
	ct := filepath.Join(l.Dir, "vm-a.ct")
	h1.MustCLI("nic", "export", "vm-a", "--output", ct)
	h1.MustCLI("nic", "del", "vm-a")
	labtest.Eventually(t, labtest.SettleTimeout, "vm-a's TAP gone", func() error {
		if _, err := labtest.Run("ip", "-n", a.NS, "link", "show", "eth0"); err == nil {
			return fmt.Errorf("eth0 still in %s", a.NS)
		}
		return nil
	})
	cut := cli.echoes(t)
	start := time.Now()
	a2 := &labtest.VM{Host: h2, NS: a.NS, Spec: specA}
	args := specA.NICAddArgs()
	if withImport {
		args = append(args, "--fw-import", ct)
	}
	a2.TAP = labtest.LastLine(h2.MustCLI(args...))
	a2.Plug()

	if withImport {
		if out := h2.MustCLI("nic", "conntrack", "vm-a"); !strings.Contains(out, flow) {
			t.Fatalf("host 2 does not list the imported flow %q:\n%s", flow, out)
		}
		labtest.Eventually(t, 20*time.Second, "10 more echoes through host 2", func() error {
			if n := cli.echoes(t); n < cut+10 {
				return fmt.Errorf("%d echoes since the migration", n-cut)
			}
			return nil
		})
		t.Logf("connection resumed: 10 echoes within %v of the re-plug", time.Since(start).Round(time.Millisecond))
		// The policy still refuses anything else from vm-b.
		b.Blocked(t, a.IP(0))
		return
	}
	// Without the import host 2 drops the flow's segments as invalid
	// (not a SYN, no tracked flow): wait for vm-a's retransmissions to be
	// dropped, then check nothing got through.
	labtest.Eventually(t, 20*time.Second, "vm-a's segments dropped on host 2", func() error {
		if n := dropCount(h2, t, "vm-a", "firewall_invalid"); n < 2 {
			return fmt.Errorf("%d dropped", n)
		}
		return nil
	})
	if n := cli.echoes(t); n != cut {
		t.Fatalf("%d echoes after the migration without import, want none", n-cut)
	}
	if out := h2.MustCLI("nic", "conntrack", "vm-a"); strings.Contains(out, "10.10.0.2:5000") {
		t.Fatalf("host 2 tracks the flow without an import:\n%s", out)
	}
}
