package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Deadlines used when polling for a condition.
const (
	settleTimeout = 15 * time.Second // something that must become true
	cmdTimeout    = 30 * time.Second // any single command
)

// labSeq numbers labs within this process so that namespace names stay
// unique when tests run in parallel.
var labSeq atomic.Int64

// lab is one test's world: a name prefix for its namespaces, a scratch
// directory, and everything it has to clean up.
type lab struct {
	t      *testing.T
	prefix string // unique: "bfe<pid>x<seq>"
	dir    string
}

// newLab skips the test unless running as root and returns a fresh lab.
func newLab(t *testing.T) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("end-to-end tests need root (network namespaces, TAP devices)")
	}
	if bin.daemon == "" {
		t.Fatal("binaries were not built by TestMain")
	}
	// A short directory: ipc:// endpoints are unix sockets (108 bytes max).
	dir, err := os.MkdirTemp("", "bfe")
	if err != nil {
		t.Fatal(err)
	}
	l := &lab{t: t, prefix: fmt.Sprintf("bfe%dx%d", os.Getpid(), labSeq.Add(1)), dir: dir}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return l
}

// runCmd runs a command with a deadline and returns its combined output.
func runCmd(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// must runs a command and fails the test if it fails.
func must(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := runCmd(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// poll calls f every 50 ms until it returns nil or the timeout passes,
// then returns f's last error.
func poll(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// eventually fails the test unless f returns nil before the timeout.
func eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	if err := poll(timeout, f); err != nil {
		t.Fatalf("%s: still failing after %v: %v", what, timeout, err)
	}
}

// netns creates a namespace named prefix-suffix with loopback up, deleted
// at cleanup.
func (l *lab) netns(suffix string) string {
	l.t.Helper()
	name := l.prefix + "-" + suffix
	must(l.t, "ip", "netns", "add", name)
	l.t.Cleanup(func() {
		if out, err := runCmd("ip", "netns", "del", name); err != nil {
			l.t.Logf("cleanup: %v %s", err, out)
		}
	})
	must(l.t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// family of an underlay or of tenant addresses.
type family int

const (
	ipv4 family = 4
	ipv6 family = 6
)

func (f family) String() string { return "ipv" + strconv.Itoa(int(f)) }

// host is a "hypervisor": a namespace with an underlay address and, once
// started, one butterflyd.
type host struct {
	lab      *lab
	name     string // short label: h1, h2
	ns       string
	vtep     netip.Addr
	peers    []netip.Addr // other hosts' VTEPs (head-end replication)
	dir      string
	endpoint string
	state    string
	sockDir  string
	logPath  string
	// cliFlags are given to every CLI call (e.g. -k KEYFILE).
	cliFlags []string

	mu     sync.Mutex
	daemon *exec.Cmd
	exited chan struct{}
}

// hostPair builds two hosts joined by a veth underlay ("ul" on each side,
// MTU 1500) in the given family.
func (l *lab) hostPair(f family) (*host, *host) {
	l.t.Helper()
	h1, h2 := l.newHost("h1", f, 1), l.newHost("h2", f, 2)
	must(l.t, "ip", "-n", h1.ns, "link", "add", "ul", "mtu", "1500", "type", "veth", "peer", "name", "ul", "netns", h2.ns, "mtu", "1500")
	for _, h := range []*host{h1, h2} {
		h.configureUnderlay(f)
	}
	h1.peers = []netip.Addr{h2.vtep}
	h2.peers = []netip.Addr{h1.vtep}
	return h1, h2
}

// openHostPair is hostPair with a daemon started with o on each host and,
// on both, the security group "sg-open" allowing everything.
func (l *lab) openHostPair(f family, o daemonOpts) (*host, *host) {
	l.t.Helper()
	h1, h2 := l.hostPair(f)
	for _, h := range []*host{h1, h2} {
		h.start(o)
		h.openSG("sg-open")
	}
	return h1, h2
}

// singleHost builds one host with an underlay link of its own (a veth whose
// peer stays in a second, otherwise empty namespace), for tests where every
// vNIC is local.
func (l *lab) singleHost(f family) *host {
	l.t.Helper()
	h := l.newHost("h1", f, 1)
	other := l.netns("void")
	must(l.t, "ip", "-n", h.ns, "link", "add", "ul", "type", "veth", "peer", "name", "ul", "netns", other)
	must(l.t, "ip", "-n", other, "link", "set", "ul", "up")
	h.configureUnderlay(f)
	return h
}

func (l *lab) newHost(name string, f family, idx int) *host {
	l.t.Helper()
	dir := filepath.Join(l.dir, name)
	for _, d := range []string{dir, filepath.Join(dir, "sock")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			l.t.Fatal(err)
		}
	}
	vtep := netip.MustParseAddr(fmt.Sprintf("10.78.0.%d", idx))
	if f == ipv6 {
		vtep = netip.MustParseAddr(fmt.Sprintf("fd00:78::%d", idx))
	}
	return &host{
		lab:      l,
		name:     name,
		ns:       l.netns(name),
		vtep:     vtep,
		dir:      dir,
		endpoint: "ipc://" + filepath.Join(dir, "api"),
		state:    filepath.Join(dir, "state.json"),
		sockDir:  filepath.Join(dir, "sock"),
		logPath:  filepath.Join(dir, "butterflyd.log"),
	}
}

func (h *host) configureUnderlay(f family) {
	t := h.lab.t
	t.Helper()
	if f == ipv4 {
		must(t, "ip", "-n", h.ns, "addr", "add", h.vtep.String()+"/24", "dev", "ul")
		must(t, "ip", "-n", h.ns, "link", "set", "ul", "up")
		// Multicast (VXLAN flooding groups 230.x.y.z) leaves through the underlay.
		must(t, "ip", "-n", h.ns, "route", "add", "224.0.0.0/4", "dev", "ul")
		return
	}
	must(t, "ip", "-n", h.ns, "addr", "add", h.vtep.String()+"/64", "dev", "ul", "nodad")
	must(t, "ip", "-n", h.ns, "link", "set", "ul", "up")
}

// daemonOpts selects how a host's butterflyd runs.
type daemonOpts struct {
	headEnd bool     // replicate floods to the peers instead of multicast
	extra   []string // more flags
}

// start runs butterflyd in the host's namespace and waits until its API
// answers. The daemon is killed (by PID) at cleanup.
func (h *host) start(o daemonOpts) {
	t := h.lab.t
	t.Helper()
	args := []string{"netns", "exec", h.ns, bin.daemon,
		"--ip", h.vtep.String(),
		"--endpoint", h.endpoint,
		"--socket-dir", h.sockDir,
		"--state-file", h.state,
		"--trace-dir", h.lab.dir,
		// Clear-text API, as before the default key; tests that need a
		// key pass --key.
		"--auto-key", "none",
		"--log-level", "debug",
		"--no-syslog",
	}
	if o.headEnd {
		peers := make([]string, len(h.peers))
		for i, p := range h.peers {
			peers[i] = p.String()
		}
		args = append(args, "--vxlan-peers", strings.Join(peers, ","))
	}
	args = append(args, o.extra...)
	logf, err := os.OpenFile(h.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== %s: ip %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	// "ip netns exec" execs the daemon, so cmd.Process.Pid is butterflyd's PID.
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start butterflyd on %s: %v", h.name, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	h.mu.Lock()
	h.daemon, h.exited = cmd, exited
	h.mu.Unlock()
	t.Cleanup(func() {
		h.stop(syscall.SIGTERM)
		if t.Failed() {
			h.dumpLog()
		}
	})
	eventually(t, settleTimeout, h.name+": daemon API up", func() error {
		select {
		case <-exited:
			return errors.New("butterflyd exited: " + h.logTail())
		default:
		}
		_, err := h.cli("status")
		return err
	})
}

// stop sends sig to the daemon this test started and waits for it to exit
// (SIGKILL after 10 s). It is a no-op when the daemon is not running.
func (h *host) stop(sig syscall.Signal) {
	h.mu.Lock()
	cmd, exited := h.daemon, h.exited
	h.daemon = nil
	h.mu.Unlock()
	if cmd == nil {
		return
	}
	stopProcess(h.lab.t, h.name+": butterflyd", cmd, exited, sig)
}

// stopProcess sends sig to the process cmd started and waits until
// exited is closed; after 10 s it reports an error and kills it.
func stopProcess(t testing.TB, what string, cmd *exec.Cmd, exited <-chan struct{}, sig syscall.Signal) {
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Errorf("%s (pid %d) ignored %v for 10 s; killing it", what, cmd.Process.Pid, sig)
		_ = cmd.Process.Kill()
		<-exited
	}
}

func (h *host) logTail() string {
	b, _ := os.ReadFile(h.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func (h *host) dumpLog() {
	h.lab.t.Logf("---- %s butterflyd log (tail) ----\n%s", h.name, h.logTail())
}

// cli runs the butterfly CLI against this host's daemon.
func (h *host) cli(args ...string) (string, error) {
	// -k none: not this machine's default key; h.cliFlags may give -k.
	all := append([]string{"-e", h.endpoint, "--timeout", "10000", "-k", "none"}, h.cliFlags...)
	return runCmd(bin.cli, append(all, args...)...)
}

// mustCLI runs the CLI and fails the test on error.
func (h *host) mustCLI(args ...string) string {
	h.lab.t.Helper()
	out, err := h.cli(args...)
	if err != nil {
		h.lab.t.Fatal(err)
	}
	return out
}

// openSG creates security group id allowing everything (IPv4 and IPv6).
func (h *host) openSG(id string) {
	h.lab.t.Helper()
	h.mustCLI("sg", "rule", "add", id, "--ip-proto", "all", "--cidr", "0.0.0.0/0")
	h.mustCLI("sg", "rule", "add", id, "--ip-proto", "all", "--cidr", "::/0")
}

// nicSpec describes a vNIC and the VM behind it.
type nicSpec struct {
	id        string
	mac       string
	vni       uint32
	addrs     []string // in the VM, with prefix length: "42.0.0.1/24"
	noAPIIPs  bool     // do not declare addrs to the API (nic add without --ip)
	antispoof bool
	bypass    bool
	sgs       []string
	trace     string // pcap path: packet trace on
	mtu       int    // VM MTU; 0 = 1400 (fits VXLAN over a 1500-byte IPv4 or IPv6 underlay)
	// quiet drops the VM's MLD reports and router solicitations before
	// they leave it: flooded to the other vNICs of the VNI, they would be
	// counted there as firewall drops (no rule allows them towards a VM),
	// blurring tests that assert drop counters.
	quiet bool
}

// vm is a namespace holding one vNIC's TAP device, renamed eth0.
type vm struct {
	host *host
	ns   string
	spec nicSpec
	tap  string // interface name the daemon returned
}

// ip returns the VM's i-th address without prefix length.
func (v *vm) ip(i int) string {
	return strings.SplitN(v.spec.addrs[i], "/", 2)[0]
}

// nicAddArgs is the CLI command line creating the vNIC.
func (s nicSpec) nicAddArgs() []string {
	args := []string{"nic", "add", "--id", s.id, "--mac", s.mac, "--vni", strconv.FormatUint(uint64(s.vni), 10), "--type", "TAP"}
	if !s.noAPIIPs {
		for _, a := range s.addrs {
			args = append(args, "--ip", strings.SplitN(a, "/", 2)[0])
		}
	}
	for _, sg := range s.sgs {
		args = append(args, "--sg", sg)
	}
	if s.antispoof {
		args = append(args, "--enable-antispoof")
	}
	if s.bypass {
		args = append(args, "--bypass-filtering")
	}
	if s.trace != "" {
		args = append(args, "--packet-trace", "true", "--trace-path", s.trace)
	}
	return args
}

// addVM creates the vNIC through the API and plugs its TAP into a new VM
// namespace.
func (h *host) addVM(s nicSpec) *vm {
	t := h.lab.t
	t.Helper()
	v := &vm{host: h, ns: h.lab.netns("vm-" + s.id), spec: s}
	v.create()
	return v
}

// create sends nic add and plugs the TAP.
func (v *vm) create() {
	t := v.host.lab.t
	t.Helper()
	out := v.host.mustCLI(v.spec.nicAddArgs()...)
	v.tap = lastLine(out)
	if v.tap == "" {
		t.Fatalf("nic add %s printed no interface name", v.spec.id)
	}
	v.plug()
}

// plug moves the vNIC's TAP from the host namespace into the VM namespace
// and configures it as eth0. It waits for the TAP to appear (after a daemon
// restart the daemon recreates it).
func (v *vm) plug() {
	t := v.host.lab.t
	t.Helper()
	if _, err := runCmd("ip", "-n", v.ns, "link", "show", "eth0"); err == nil {
		t.Fatalf("%s already has an eth0", v.ns)
	}
	eventually(t, settleTimeout, "TAP "+v.tap+" in "+v.host.ns, func() error {
		_, err := runCmd("ip", "-n", v.host.ns, "link", "show", v.tap)
		return err
	})
	mtu := v.spec.mtu
	if mtu == 0 {
		mtu = 1400
	}
	must(t, "ip", "-n", v.host.ns, "link", "set", v.tap, "netns", v.ns)
	must(t, "ip", "-n", v.ns, "link", "set", v.tap, "name", "eth0")
	must(t, "ip", "-n", v.ns, "link", "set", "eth0", "address", v.spec.mac, "mtu", strconv.Itoa(mtu))
	for _, a := range v.spec.addrs {
		v.addAddr(a)
	}
	if v.spec.quiet {
		for _, rule := range []string{"add table ip6 quiet",
			"add chain ip6 quiet out { type filter hook output priority 0; }",
			"add rule ip6 quiet out icmpv6 type { mld-listener-report, mld2-listener-report, mld-listener-done, nd-router-solicit } drop"} {
			must(t, "ip", "netns", "exec", v.ns, "nft", rule)
		}
	}
	must(t, "ip", "-n", v.ns, "link", "set", "eth0", "up")
}

// addAddr adds an address (with prefix length) to the VM's eth0.
func (v *vm) addAddr(a string) {
	t := v.host.lab.t
	t.Helper()
	args := []string{"-n", v.ns, "addr", "add", a, "dev", "eth0"}
	if strings.Contains(a, ":") {
		args = append(args, "nodad")
	}
	must(t, "ip", args...)
}

// delAddr removes an address from the VM's eth0.
func (v *vm) delAddr(a string) {
	t := v.host.lab.t
	t.Helper()
	must(t, "ip", "-n", v.ns, "addr", "del", a, "dev", "eth0")
}

// exec runs a command inside the VM namespace.
func (v *vm) exec(args ...string) (string, error) {
	return runCmd("ip", append([]string{"netns", "exec", v.ns}, args...)...)
}

// pingOnce sends one echo request (ICMP or ICMPv6 from the address family
// of dst) and waits one second for the reply. Extra ping flags go first.
func (v *vm) pingOnce(dst string, flags ...string) error {
	args := append([]string{"ping", "-n", "-c", "1", "-W", "1"}, flags...)
	_, err := v.exec(append(args, dst)...)
	return err
}

// reach returns nil once dst answers a ping, an error if it does not
// within the settle timeout.
func (v *vm) reach(dst string, flags ...string) error {
	if err := poll(settleTimeout, func() error { return v.pingOnce(dst, flags...) }); err != nil {
		return fmt.Errorf("%s cannot reach %s %v: %w", v.spec.id, dst, flags, err)
	}
	return nil
}

// reaches fails the test unless dst answers a ping within the settle timeout.
func (v *vm) reaches(t testing.TB, dst string, flags ...string) {
	t.Helper()
	if err := v.reach(dst, flags...); err != nil {
		t.Fatal(err)
	}
}

// blocked fails the test if dst answers any of three pings.
func (v *vm) blocked(t testing.TB, dst string, flags ...string) {
	t.Helper()
	if err := v.blockedFrom(dst, flags...); err != nil {
		t.Fatal(err)
	}
}

// blockedFrom reports an error if dst answers any of three pings.
func (v *vm) blockedFrom(dst string, flags ...string) error {
	args := append([]string{"ping", "-n", "-c", "3", "-i", "0.3", "-W", "1"}, flags...)
	out, err := v.exec(append(args, dst)...)
	if err == nil {
		return fmt.Errorf("%s reached %s (%v), expected no reply:\n%s", v.spec.id, dst, flags, out)
	}
	return nil
}

// lastLine is the last non-empty line of s, trimmed.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// macFor builds a locally administered unicast MAC from a small number.
func macFor(n int) string {
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", (n>>16)&0xff, (n>>8)&0xff, n&0xff)
}

// parallel runs fs concurrently and returns their errors joined.
func parallel(fs ...func() error) error {
	errs := make([]error, len(fs))
	var wg sync.WaitGroup
	for i, f := range fs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
