package labtest

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Family is the address family of an underlay or of tenant addresses.
type Family int

// The two families.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// String is "ipv4" or "ipv6".
func (f Family) String() string { return "ipv" + strconv.Itoa(int(f)) }

// Host is a "hypervisor": a namespace with an underlay address and, once
// started, one butterflyd.
type Host struct {
	Lab      *Lab
	Name     string // short label: h1, h2
	NS       string
	VTEP     netip.Addr
	Peers    []netip.Addr // other hosts' VTEPs (head-end replication)
	Dir      string
	Endpoint string
	State    string
	SockDir  string
	LogPath  string
	// CLIFlags are given to every CLI call (e.g. -k KEYFILE).
	CLIFlags []string

	mu     sync.Mutex
	daemon *Process
}

// HostPair builds two hosts joined by a veth underlay ("ul" on each side,
// MTU 1500) in the given family.
func (l *Lab) HostPair(f Family) (*Host, *Host) {
	l.T.Helper()
	h1, h2 := l.NewHost("h1", f, 1), l.NewHost("h2", f, 2)
	l.Veth(h1.NS, "ul", h2.NS, "ul", 1500)
	for _, h := range []*Host{h1, h2} {
		h.ConfigureUnderlay(f)
	}
	h1.Peers = []netip.Addr{h2.VTEP}
	h2.Peers = []netip.Addr{h1.VTEP}
	return h1, h2
}

// OpenHostPair is HostPair with a daemon started with o on each host and,
// on both, the security group "sg-open" allowing everything.
func (l *Lab) OpenHostPair(f Family, o DaemonOpts) (*Host, *Host) {
	l.T.Helper()
	h1, h2 := l.HostPair(f)
	for _, h := range []*Host{h1, h2} {
		h.Start(o)
		h.OpenSG("sg-open")
	}
	return h1, h2
}

// SingleHost builds one host with an underlay link of its own (a veth whose
// peer stays in a second, otherwise empty namespace), for cases where every
// vNIC is local.
func (l *Lab) SingleHost(f Family) *Host {
	l.T.Helper()
	h := l.NewHost("h1", f, 1)
	other := l.NetNS("void")
	l.Veth(h.NS, "ul", other, "ul", 0)
	Must(l.T, "ip", "-n", other, "link", "set", "ul", "up")
	h.ConfigureUnderlay(f)
	return h
}

// NewHost creates host name's namespace and directories; its VTEP is the
// idx-th address of 10.78.0.0/24 or fd00:78::/64. It has no underlay link
// yet (see HostPair, SingleHost, ConfigureUnderlay).
func (l *Lab) NewHost(name string, f Family, idx int) *Host {
	l.T.Helper()
	dir := filepath.Join(l.Dir, name)
	for _, d := range []string{dir, filepath.Join(dir, "sock")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			l.T.Fatal(err)
		}
	}
	vtep := netip.MustParseAddr(fmt.Sprintf("10.78.0.%d", idx))
	if f == IPv6 {
		vtep = netip.MustParseAddr(fmt.Sprintf("fd00:78::%d", idx))
	}
	return &Host{
		Lab:      l,
		Name:     name,
		NS:       l.NetNS(name),
		VTEP:     vtep,
		Dir:      dir,
		Endpoint: "ipc://" + filepath.Join(dir, "api"),
		State:    filepath.Join(dir, "state.json"),
		SockDir:  filepath.Join(dir, "sock"),
		LogPath:  filepath.Join(dir, "butterflyd.log"),
	}
}

// ConfigureUnderlay gives the host's "ul" link its VTEP address and brings
// it up; on IPv4, multicast (VXLAN flooding groups) is routed through it.
func (h *Host) ConfigureUnderlay(f Family) {
	t := h.Lab.T
	t.Helper()
	if f == IPv4 {
		Must(t, "ip", "-n", h.NS, "addr", "add", h.VTEP.String()+"/24", "dev", "ul")
		Must(t, "ip", "-n", h.NS, "link", "set", "ul", "up")
		Must(t, "ip", "-n", h.NS, "route", "add", "224.0.0.0/4", "dev", "ul")
		return
	}
	Must(t, "ip", "-n", h.NS, "addr", "add", h.VTEP.String()+"/64", "dev", "ul", "nodad")
	Must(t, "ip", "-n", h.NS, "link", "set", "ul", "up")
}

// DaemonOpts selects how a host's butterflyd runs.
type DaemonOpts struct {
	HeadEnd  bool     // replicate floods to the peers instead of multicast
	LogLevel string   // --log-level; "" is debug
	Extra    []string // more flags, after the lab's own (the last of a repeated flag wins)
}

// Start runs butterflyd in the host's namespace and waits until its API
// answers. The daemon is stopped (SIGTERM to its PID) at cleanup, and its
// log tail logged if the test failed.
func (h *Host) Start(o DaemonOpts) {
	t := h.Lab.T
	t.Helper()
	if err := h.TryStart(o); err != nil {
		t.Fatal(err)
	}
}

// TryStart is Start returning an error instead of failing the test.
func (h *Host) TryStart(o DaemonOpts) error {
	p, err := h.Launch(o)
	if err != nil {
		return err
	}
	return h.WaitAPI(p)
}

// Launch starts butterflyd in the host's namespace without waiting for its
// API. The daemon is stopped (SIGTERM to its PID) at cleanup, and its log
// tail logged if the test failed.
func (h *Host) Launch(o DaemonOpts) (*Process, error) {
	t := h.Lab.T
	level := o.LogLevel
	if level == "" {
		level = "debug"
	}
	args := []string{"netns", "exec", h.NS, h.Lab.Bin.Daemon,
		"--ip", h.VTEP.String(),
		"--endpoint", h.Endpoint,
		"--socket-dir", h.SockDir,
		"--state-file", h.State,
		"--trace-dir", h.Lab.Dir,
		// Clear-text API, as before the default key; callers that need a
		// key pass --key.
		"--auto-key", "none",
		"--log-level", level,
		"--no-syslog",
	}
	if o.HeadEnd {
		peers := make([]string, len(h.Peers))
		for i, p := range h.Peers {
			peers[i] = p.String()
		}
		args = append(args, "--vxlan-peers", strings.Join(peers, ","))
	}
	args = append(args, o.Extra...)
	logf, err := os.OpenFile(h.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("daemon log: %w", err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== %s: ip %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	// "ip netns exec" execs the daemon, so the process's PID is butterflyd's.
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := StartProcess(h.Name+": butterflyd", cmd)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.daemon = p
	h.mu.Unlock()
	t.Cleanup(func() {
		h.Stop(syscall.SIGTERM)
		if t.Failed() {
			h.DumpLog()
		}
	})
	return p, nil
}

// WaitAPI waits until the API of daemon p answers a status request.
func (h *Host) WaitAPI(p *Process) error {
	err := Poll(SettleTimeout, func() error {
		if !p.Running() {
			return errors.New("butterflyd exited: " + h.LogTail())
		}
		_, err := h.CLI("status")
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: daemon API not up after %v: %w", h.Name, SettleTimeout, err)
	}
	return nil
}

// PID is the running daemon's process id, 0 when none runs.
func (h *Host) PID() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.daemon == nil {
		return 0
	}
	return h.daemon.PID()
}

// Stop sends sig to the daemon this lab started and waits for it to exit
// (SIGKILL after 10 s). It is a no-op when the daemon is not running.
func (h *Host) Stop(sig syscall.Signal) {
	h.mu.Lock()
	p := h.daemon
	h.daemon = nil
	h.mu.Unlock()
	if p == nil {
		return
	}
	p.Stop(h.Lab.T, sig)
}

// Terminate sends SIGTERM to the daemon this lab started and waits up to
// timeout for it to exit, then kills it (SIGKILL) and returns an error
// saying so. It returns how long the daemon took to exit (0 when none ran).
func (h *Host) Terminate(timeout time.Duration) (time.Duration, error) {
	h.mu.Lock()
	p := h.daemon
	h.daemon = nil
	h.mu.Unlock()
	if p == nil {
		return 0, nil
	}
	start := time.Now()
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Exited:
		return time.Since(start), nil
	case <-time.After(timeout):
		_ = p.Cmd.Process.Kill()
		<-p.Exited
		return time.Since(start), fmt.Errorf("%s (pid %d) still running %v after SIGTERM; killed", p.What, p.PID(), timeout)
	}
}

// LogTail is the last 4,000 bytes of the daemon's log.
func (h *Host) LogTail() string {
	b, _ := os.ReadFile(h.LogPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// DumpLog logs the tail of the daemon's log.
func (h *Host) DumpLog() {
	h.Lab.T.Logf("---- %s butterflyd log (tail) ----\n%s", h.Name, h.LogTail())
}

// CLI runs the butterfly CLI against this host's daemon.
func (h *Host) CLI(args ...string) (string, error) {
	// -k none: not this machine's default key; h.CLIFlags may give -k.
	all := append([]string{"-e", h.Endpoint, "--timeout", "10000", "-k", "none"}, h.CLIFlags...)
	return Run(h.Lab.Bin.CLI, append(all, args...)...)
}

// MustCLI runs the CLI and fails the test on error.
func (h *Host) MustCLI(args ...string) string {
	h.Lab.T.Helper()
	out, err := h.CLI(args...)
	if err != nil {
		h.Lab.T.Fatal(err)
	}
	return out
}

// OpenSG creates security group id allowing everything (IPv4 and IPv6).
func (h *Host) OpenSG(id string) {
	h.Lab.T.Helper()
	h.MustCLI("sg", "rule", "add", id, "--ip-proto", "all", "--cidr", "0.0.0.0/0")
	h.MustCLI("sg", "rule", "add", id, "--ip-proto", "all", "--cidr", "::/0")
}

// HostsOnSwitch builds n hosts (h1...hn) whose "ul" links join a Linux
// bridge in a namespace of its own (one L2 underlay segment), with their
// VTEPs and no multicast route: flooding must be head-end replication.
func (l *Lab) HostsOnSwitch(f Family, n int) []*Host {
	l.T.Helper()
	sw := l.NetNS("sw")
	Must(l.T, "ip", "-n", sw, "link", "add", "br0", "type", "bridge")
	Must(l.T, "ip", "-n", sw, "link", "set", "br0", "up")
	hosts := make([]*Host, n)
	for i := range hosts {
		h := l.NewHost(fmt.Sprintf("h%d", i+1), f, i+1)
		port := fmt.Sprintf("p%d", i+1)
		l.Veth(h.NS, "ul", sw, port, 1500)
		Must(l.T, "ip", "-n", sw, "link", "set", port, "master", "br0", "up")
		args := []string{"-n", h.NS, "addr", "add", h.VTEP.String() + "/24", "dev", "ul"}
		if f == IPv6 {
			args = []string{"-n", h.NS, "addr", "add", h.VTEP.String() + "/64", "dev", "ul", "nodad"}
		}
		Must(l.T, "ip", args...)
		Must(l.T, "ip", "-n", h.NS, "link", "set", "ul", "up")
		hosts[i] = h
	}
	return hosts
}
