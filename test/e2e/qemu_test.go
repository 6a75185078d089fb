package e2e

// QEMU guests on vhost-user vNICs.
//
// The guest (kernel, busybox, iperf3, virtio-net modules) is built from
// Debian packages by scripts/build-guest.sh and cached in
// $BUTTERFLY_GUEST_DIR (default /var/cache/butterfly/guest); the first test
// that needs it runs the script once per test process (a no-op when the
// cache is current). QEMU runs under TCG (KVM does not work on these
// machines), so guests boot in 5 to 15 s and move 0.15 to 0.5 Gbit/s of
// TCP. Each guest runs a command agent on its second serial port (a unix
// socket in the VM's scratch directory; protocol in build-guest.sh): Exec
// runs a shell command in the guest and returns its output and status.
//
// Helpers for other QEMU tests:
//
//	vm := startVM(l, vmOpts{name: "vm1", socket: sock, mac: mac, addr: "10.42.0.1/24"})
//	waitVMs(t, vm, ...)               // boot in parallel, fail with the console on timeout
//	out, err := vm.Exec(10*time.Second, "cat /sys/class/net/eth0/mtu") // busybox userland
//	vm.Reaches(t, "10.42.0.2")        // ping from the guest, polled with a deadline
//	vm.Blocked(t, "10.42.0.2")        // no reply to any of 3 pings
//	vm.Kill(); vm.Start(); vm.Stop()  // QEMU stopped by PID, started again on the same socket
//	vm.ConsoleLog()                   // serial console of the current boot
//	vmIperf(client, server, ip, secs)  // iperf3 TCP rate in bit/s
//	addVhostNIC(h, id, mac, vni, addr, sgs...) // nic add, returns the socket path
//	traffic(h, t, id), vhostLogClean(h, t)      // nic counters; no vhost-user warning logged
//
// vmOpts.server makes QEMU create and listen on the vhost-user socket (the
// daemon is then the client and connects to it); QEMU 7.2 then waits for
// that connection before it boots the guest. vmOpts.reconnect makes QEMU,
// as a client, reconnect to the daemon's socket after it went away.
// noOffloads, noMrgRxbuf and noEventIdx turn device features off (WaitReady
// checks what the guest negotiated); memMiB sizes the guest's memory;
// queues gives the NIC several queue pairs (ethtool -L in the guest
// enables them).

import (
	"github.com/butterfly-go/butterfly/internal/labtest"

	"bufio"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Deadlines of the QEMU tests (TCG guests on a shared 2-core machine).
const (
	vmBootTimeout = 120 * time.Second // QEMU start to eth0 configured
	vmPingTimeout = 20 * time.Second  // a ping that must start working
)

// guestImage is the cached test guest.
type guestImage struct {
	kernel string // vmlinux (PVH entry) or vmlinuz
	initrd string
}

// buildGuest runs scripts/build-guest.sh once per test process.
var buildGuest = sync.OnceValues(func() (guestImage, error) {
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "..", "scripts", "build-guest.sh")
	start := time.Now()
	out, err := exec.Command("bash", script).CombinedOutput()
	if err != nil {
		return guestImage{}, fmt.Errorf("%s: %w\n%s", script, err, out)
	}
	dir := os.Getenv("BUTTERFLY_GUEST_DIR")
	if dir == "" {
		dir = "/var/cache/butterfly/guest"
	}
	fmt.Fprintf(os.Stderr, "e2e: guest ready in %v: %s", time.Since(start).Round(time.Millisecond), out)
	img := guestImage{kernel: filepath.Join(dir, "vmlinux"), initrd: filepath.Join(dir, "initramfs.gz")}
	if _, err := os.Stat(img.kernel); err != nil {
		img.kernel = filepath.Join(dir, "vmlinuz")
	}
	return img, nil
})

// needQEMU returns the guest image, failing the test if QEMU or the guest
// is missing (scripts/setup.sh installs QEMU).
func needQEMU(t testing.TB) guestImage {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatalf("qemu-system-x86_64 not installed (scripts/setup.sh installs qemu-system-x86): %v", err)
	}
	img, err := buildGuest()
	if err != nil {
		t.Fatalf("building the test guest: %v", err)
	}
	return img
}

// vmOpts describes a QEMU guest with one virtio-net NIC on a vhost-user
// socket.
type vmOpts struct {
	name      string // label; also names the VM's scratch directory
	socket    string // vhost-user socket
	server    bool   // QEMU listens on socket (the daemon connects to it)
	reconnect int    // as a client, reconnect every this many seconds after a disconnect (0: never)
	mac       string // eth0's MAC
	addr      string // eth0's address with prefix length, e.g. "10.42.0.1/24"
	mtu       int    // eth0's MTU, also announced as host_mtu; 0 means 1400
	// noOffloads turns off the device's checksum and TSO features: the
	// guest sends and takes only complete frames with full checksums.
	noOffloads bool
	// noMrgRxbuf turns off VIRTIO_NET_F_MRG_RXBUF: the guest posts
	// receive buffers as descriptor chains (Linux's "big packets" mode
	// when it takes TSO frames).
	noMrgRxbuf bool
	// noEventIdx turns off VIRTIO_RING_F_EVENT_IDX: kicks and interrupts
	// are suppressed with the rings' flags instead.
	noEventIdx bool
	// memMiB is the guest's memory (memfd, untouched pages cost nothing);
	// 0 means 256. Above 3.5 GiB QEMU's pc machine maps part of it above
	// 4 GiB: the daemon gets two regions at offsets of one file.
	memMiB int
	// packed makes the device use packed virtqueues (packed=on,
	// VIRTIO_F_RING_PACKED) instead of split ones.
	packed bool
	// incoming starts QEMU waiting for a live migration at this URI
	// (-incoming): the guest runs once the migration has completed.
	incoming string
	// queues gives the NIC this many queue pairs (vhost-user queues=N,
	// mq=on); 0 or 1 means one. The guest's driver starts with one per
	// vCPU (one): "ethtool -L eth0 combined N" enables the others.
	queues int
}

// qemuVM is one QEMU process (restartable) and the command agent of its
// guest. Exec and the ping helpers may be called from several goroutines.
type qemuVM struct {
	Lab  *labtest.Lab
	opts vmOpts
	img  guestImage
	dir  string

	mu     sync.Mutex // the process fields
	cmd    *exec.Cmd
	exited chan struct{}
	boot   int // boots so far; console-<boot>.log is the current console

	agentMu sync.Mutex // one agent command at a time
	agent   net.Conn
	rd      *bufio.Reader
	seq     int
}

// startVM starts a guest (it does not wait for it to boot: see waitVMs).
// The QEMU process is killed by PID when the test ends, and the consoles
// of every boot are logged if the test failed.
func startVM(l *labtest.Lab, o vmOpts) *qemuVM {
	t := l.T
	t.Helper()
	img := needQEMU(t)
	if o.mtu == 0 {
		o.mtu = 1400
	}
	if o.memMiB == 0 {
		o.memMiB = 256
	}
	v := &qemuVM{Lab: l, opts: o, img: img, dir: filepath.Join(l.Dir, "vm-"+o.name)}
	if err := os.MkdirAll(v.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		v.Stop()
		if t.Failed() {
			v.dumpConsoles()
		}
	})
	v.Start()
	return v
}

// args is QEMU's command line for the current boot.
func (v *qemuVM) args() []string {
	o := v.opts
	vhost := "socket,id=vhu,path=" + o.socket
	switch {
	case o.server:
		vhost += ",server=on,wait=off"
	case o.reconnect > 0:
		vhost += ",reconnect=" + strconv.Itoa(o.reconnect)
	}
	device := fmt.Sprintf("virtio-net-pci,netdev=net0,mac=%s,vectors=0,host_mtu=%d", o.mac, o.mtu)
	if o.noOffloads {
		device += ",csum=off,guest_csum=off,gso=off,host_tso4=off,host_tso6=off,guest_tso4=off,guest_tso6=off"
	}
	if o.noMrgRxbuf {
		device += ",mrg_rxbuf=off"
	}
	if o.noEventIdx {
		device += ",event_idx=off"
	}
	if o.packed {
		device += ",packed=on"
	}
	netdev := "vhost-user,id=net0,chardev=vhu"
	if o.queues > 1 {
		device += ",mq=on"
		netdev += ",queues=" + strconv.Itoa(o.queues)
	}
	mem := strconv.Itoa(o.memMiB) + "M"
	var incoming []string
	if o.incoming != "" {
		incoming = []string{"-incoming", o.incoming}
	}
	return append(incoming,
		"-name", o.name,
		"-machine", "pc", "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", mem,
		// vhost-user needs guest memory the daemon can map.
		"-object", "memory-backend-memfd,id=mem,size="+mem+",share=on", "-numa", "node,memdev=mem",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", "file:"+v.consolePath(v.boot),
		"-chardev", "socket,id=agent,path="+v.agentPath()+",server=on,wait=off",
		"-serial", "chardev:agent",
		"-qmp", "unix:"+v.qmpPath()+",server=on,wait=off",
		"-chardev", vhost,
		"-netdev", netdev,
		// vectors=0: Debian's QEMU 7.2 segfaults when a vhost-user
		// virtio-net device starts with MSI-X under TCG.
		"-device", device,
		"-kernel", v.img.kernel, "-initrd", v.img.initrd,
		"-append", fmt.Sprintf("console=ttyS0 quiet panic=-1 mitigations=off bfip=%s bfmtu=%d bfmac=%s", o.addr, o.mtu, o.mac),
	)
}

func (v *qemuVM) consolePath(boot int) string {
	return filepath.Join(v.dir, fmt.Sprintf("console-%d.log", boot))
}

func (v *qemuVM) agentPath() string { return filepath.Join(v.dir, "agent.sock") }

func (v *qemuVM) qmpPath() string { return filepath.Join(v.dir, "qmp.sock") }

// Start boots the guest again (after Stop or Kill) with the same options,
// on the same vhost-user socket. It does not wait for the boot.
func (v *qemuVM) Start() {
	t := v.Lab.T
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cmd != nil {
		t.Fatalf("%s: QEMU already running (pid %d)", v.opts.name, v.cmd.Process.Pid)
	}
	v.agentMu.Lock()
	v.closeAgent()
	v.agentMu.Unlock()
	v.boot++
	os.Remove(v.agentPath())
	logf, err := os.OpenFile(filepath.Join(v.dir, "qemu.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	args := v.args()
	fmt.Fprintf(logf, "=== boot %d %s: qemu-system-x86_64 %s\n", v.boot, time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	cmd := exec.Command("qemu-system-x86_64", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: start QEMU: %v", v.opts.name, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	v.cmd, v.exited = cmd, exited
}

// Stop terminates QEMU (SIGTERM, SIGKILL after 10 s) and waits for it.
// It is a no-op when QEMU is not running.
func (v *qemuVM) Stop() { v.signal(syscall.SIGTERM) }

// Kill kills QEMU with SIGKILL, as a crash would, and waits for it.
func (v *qemuVM) Kill() { v.signal(syscall.SIGKILL) }

func (v *qemuVM) signal(sig syscall.Signal) {
	v.mu.Lock()
	cmd, exited := v.cmd, v.exited
	v.cmd = nil
	v.mu.Unlock()
	v.agentMu.Lock()
	v.closeAgent()
	v.agentMu.Unlock()
	if cmd == nil {
		return
	}
	labtest.StopProcess(v.Lab.T, v.opts.name+": QEMU", cmd, exited, sig)
}

// Restart stops QEMU and starts it again on the same socket.
func (v *qemuVM) Restart() {
	v.Lab.T.Helper()
	v.Stop()
	v.Start()
}

// running reports whether the QEMU process of the current boot is alive.
func (v *qemuVM) running() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cmd == nil {
		return false
	}
	select {
	case <-v.exited:
		return false
	default:
		return true
	}
}

// ConsoleLog returns the serial console of the current boot.
func (v *qemuVM) ConsoleLog() string {
	v.mu.Lock()
	boot := v.boot
	v.mu.Unlock()
	b, _ := os.ReadFile(v.consolePath(boot))
	return string(b)
}

func (v *qemuVM) dumpConsoles() {
	t := v.Lab.T
	for i := 1; i <= v.boot; i++ {
		b, _ := os.ReadFile(v.consolePath(i))
		if len(b) > 6000 {
			b = b[len(b)-6000:]
		}
		t.Logf("---- %s console, boot %d (tail) ----\n%s", v.opts.name, i, b)
	}
	b, _ := os.ReadFile(filepath.Join(v.dir, "qemu.log"))
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	t.Logf("---- %s QEMU output (tail) ----\n%s", v.opts.name, b)
}

// readyRE matches the guest's line once eth0 is configured.
var readyRE = regexp.MustCompile(`BF-READY uptime=(\S+) eth0=(\S+) mtu=(\d+)`)

// WaitReady waits until the guest configured eth0 and its agent answers,
// and checks the virtio features the guest negotiated against the options.
func (v *qemuVM) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c := v.ConsoleLog()
		if m := readyRE.FindStringSubmatch(c); m != nil {
			if m[2] != v.opts.mac || m[3] != strconv.Itoa(v.opts.mtu) {
				return fmt.Errorf("%s: guest eth0 has MAC %s MTU %s, want %s %d", v.opts.name, m[2], m[3], v.opts.mac, v.opts.mtu)
			}
			if strings.Contains(c, "BF-AGENT-UP") {
				break
			}
		}
		for _, bad := range []string{"BF-NO-ETH0", "BF-INSMOD-FAILED", "BF-AGENT-EXITED", "Kernel panic"} {
			if strings.Contains(c, bad) {
				return fmt.Errorf("%s: guest failed to boot (%s)", v.opts.name, bad)
			}
		}
		if !v.running() {
			return fmt.Errorf("%s: QEMU exited during boot", v.opts.name)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: guest not ready after %v", v.opts.name, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// "true" is harmless to repeat: short tries, so that a command lost
	// on the serial line costs seconds, not the whole deadline.
	err := labtest.Poll(time.Until(deadline), func() error {
		_, err := v.Exec(3*time.Second, "true")
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: agent: %w", v.opts.name, err)
	}
	return v.checkFeatures()
}

// Virtio feature bits the tests expect the guest to negotiate (unless its
// options turn them off).
var (
	offloadBits = []int{0, 1, 7, 8, 11, 12} // CSUM, GUEST_CSUM, GUEST_TSO4/6, HOST_TSO4/6
	alwaysBits  = []int{28, 32}             // INDIRECT_DESC, VERSION_1
)

const (
	bitMrgRxbuf = 15
	bitEventIdx = 29
)

// checkFeatures compares the features the guest's driver negotiated
// (sysfs: one character per bit) with what the back end offers and the
// VM's options allow.
func (v *qemuVM) checkFeatures() error {
	out, err := v.Exec(10*time.Second, "cat /sys/bus/virtio/devices/*/features")
	if err != nil {
		return err
	}
	f := strings.TrimSpace(out)
	want := map[int]bool{bitMrgRxbuf: !v.opts.noMrgRxbuf, bitEventIdx: !v.opts.noEventIdx}
	for _, b := range offloadBits {
		want[b] = !v.opts.noOffloads
	}
	for _, b := range alwaysBits {
		want[b] = true
	}
	for b, on := range want {
		if b >= len(f) || (f[b] == '1') != on {
			return fmt.Errorf("%s: negotiated features %s: bit %d should be %v", v.opts.name, f, b, on)
		}
	}
	return nil
}

// waitVMs waits for the guests to boot, in parallel, and fails the test
// if one does not within vmBootTimeout.
func waitVMs(t testing.TB, vms ...*qemuVM) {
	t.Helper()
	start := time.Now()
	fs := make([]func() error, len(vms))
	for i, v := range vms {
		fs[i] = func() error { return v.WaitReady(vmBootTimeout) }
	}
	if err := labtest.Parallel(fs...); err != nil {
		t.Fatal(err)
	}
	var boots []string
	for _, v := range vms {
		if m := readyRE.FindStringSubmatch(v.ConsoleLog()); m != nil {
			boots = append(boots, v.opts.name+" at "+m[1]+" s")
		}
	}
	t.Logf("%d guest(s) ready in %v (eth0 up, guest uptime: %s)", len(vms), time.Since(start).Round(100*time.Millisecond), strings.Join(boots, ", "))
}

// closeAgent drops the agent connection (agentMu held).
func (v *qemuVM) closeAgent() {
	if v.agent != nil {
		v.agent.Close()
		v.agent, v.rd = nil, nil
	}
}

// errExit is returned (wrapped) by Exec when the command ran and failed.
var errExit = errors.New("guest command failed")

// Exec runs a one-line shell command in the guest and returns its output
// (stdout and stderr). The guest kills the command after timeout; the
// error wraps errExit when the command ran and exited non-zero.
func (v *qemuVM) Exec(timeout time.Duration, command string) (string, error) {
	if strings.ContainsAny(command, "\n\r") {
		return "", fmt.Errorf("%s: agent commands are one line: %q", v.opts.name, command)
	}
	if !v.running() {
		return "", fmt.Errorf("%s: QEMU is not running", v.opts.name)
	}
	v.agentMu.Lock()
	defer v.agentMu.Unlock()
	if v.agent == nil {
		c, err := net.DialTimeout("unix", v.agentPath(), 5*time.Second)
		if err != nil {
			return "", fmt.Errorf("%s: agent socket: %w", v.opts.name, err)
		}
		v.agent, v.rd = c, bufio.NewReader(c)
	}
	v.seq++
	id := strconv.Itoa(v.seq)
	secs := int(math.Ceil(timeout.Seconds()))
	// The guest kills the command after secs; allow for TCG and the
	// serial line on top of that.
	v.agent.SetDeadline(time.Now().Add(timeout + 5*time.Second))
	if _, err := fmt.Fprintf(v.agent, "%s %d %s\n", id, secs, command); err != nil {
		v.closeAgent()
		return "", fmt.Errorf("%s: agent write: %w", v.opts.name, err)
	}
	var out strings.Builder
	in := false
	for {
		line, err := v.rd.ReadString('\n')
		if err != nil {
			v.closeAgent()
			return out.String(), fmt.Errorf("%s: agent read (%q): %w", v.opts.name, command, err)
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "@@BEGIN "+id:
			in = true
		case strings.HasPrefix(line, "@@END "+id+" ") && in:
			rc := strings.TrimPrefix(line, "@@END "+id+" ")
			s := strings.TrimPrefix(out.String(), "\n")
			if rc != "0" {
				return s, fmt.Errorf("%s: %q: %w (status %s): %s", v.opts.name, command, errExit, rc, strings.TrimSpace(s))
			}
			return s, nil
		case in:
			// The agent frames output with a newline before @@END.
			if out.Len() > 0 || line != "" {
				out.WriteString(line + "\n")
			}
		}
	}
}

// ping sends one echo request from the guest and waits 2 s for a reply.
func (v *qemuVM) ping(dst string) error {
	_, err := v.Exec(10*time.Second, "ping -c 1 -W 2 "+dst)
	return err
}

// Reach returns nil once dst answers a ping from the guest, or an error
// after vmPingTimeout.
func (v *qemuVM) Reach(dst string) error {
	if err := labtest.Poll(vmPingTimeout, func() error { return v.ping(dst) }); err != nil {
		return fmt.Errorf("%s cannot reach %s: %w", v.opts.name, dst, err)
	}
	return nil
}

// Reaches fails the test unless dst answers a ping within vmPingTimeout.
func (v *qemuVM) Reaches(t testing.TB, dst string) {
	t.Helper()
	if err := v.Reach(dst); err != nil {
		t.Fatal(err)
	}
}

// Blocked fails the test if dst answers any of 3 pings. A failure of
// the agent itself is not taken for a blocked path.
func (v *qemuVM) Blocked(t testing.TB, dst string) {
	t.Helper()
	out, err := v.Exec(15*time.Second, "ping -c 3 -i 0.3 -W 1 -w 4 "+dst)
	if err == nil {
		t.Fatalf("%s reached %s, expected no reply:\n%s", v.opts.name, dst, out)
	}
	if !errors.Is(err, errExit) {
		t.Fatal(err)
	}
}

// iperfRE matches iperf3's summary line of the receiving side.
var iperfRE = regexp.MustCompile(`([\d.]+) ([KMG]?)bits/sec\s.*receiver`)

// vmIperf runs an iperf3 TCP test (secs seconds) from client to server's
// address (an iperf3 server is started there first) and returns the
// receiver's rate in bit/s.
func vmIperf(client, server *qemuVM, dst string, secs int) (float64, error) {
	if _, err := server.Exec(10*time.Second, "pidof iperf3 || iperf3 -s -D"); err != nil {
		return 0, err
	}
	cmd := fmt.Sprintf("iperf3 -c %s -t %d -f m --connect-timeout 3000", dst, secs)
	var out string
	err := labtest.Poll(15*time.Second, func() error {
		var err error
		out, err = client.Exec(time.Duration(secs+20)*time.Second, cmd)
		return err
	})
	if err != nil {
		return 0, err
	}
	m := iperfRE.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no receiver summary in iperf3's output:\n%s", out)
	}
	rate, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Errorf("iperf3 rate %q: %w", m[1], err)
	}
	rate *= map[string]float64{"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[m[2]]
	return rate, nil
}

// addVhostNIC creates a vhost-user vNIC (server mode) through the API and
// returns the socket path the daemon printed. addr is the VM's address
// with prefix length.
func addVhostNIC(h *labtest.Host, id, mac string, vni uint32, addr string, sgs ...string) string {
	t := h.Lab.T
	t.Helper()
	args := []string{"nic", "add", "--id", id, "--mac", mac, "--vni", strconv.FormatUint(uint64(vni), 10),
		"--type", "VHOST_USER_SERVER", "--ip", strings.SplitN(addr, "/", 2)[0]}
	for _, sg := range sgs {
		args = append(args, "--sg", sg)
	}
	sock := labtest.LastLine(h.MustCLI(args...))
	if want := filepath.Join(h.SockDir, "qemu-vhost-"+id); sock != want {
		t.Fatalf("nic add %s printed %q, want %q", id, sock, want)
	}
	return sock
}

// vhostLogClean fails the test if the daemon logged a warning or an error
// about a vhost-user port: a request it refused or failed, a ring it did
// not start or stopped. QEMU's front end must need none of that.
func vhostLogClean(h *labtest.Host, t testing.TB) {
	t.Helper()
	b, err := os.ReadFile(h.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	var bad []string
	for _, line := range strings.Split(string(b), "\n") {
		if (strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR")) && strings.Contains(line, "vhost-user") {
			bad = append(bad, line)
		}
	}
	if bad != nil {
		t.Errorf("%s: butterflyd logged vhost-user problems:\n%s", h.Name, strings.Join(bad, "\n"))
	}
}

// nicTraffic is the traffic part of `nic counters`: rx is what the switch
// received from the vNIC, tx what it delivered to it.
type nicTraffic struct{ rxPackets, rxBytes, txPackets, txBytes uint64 }

// traffic reads a vNIC's packet and byte counters.
func traffic(h *labtest.Host, t testing.TB, id string) nicTraffic {
	t.Helper()
	out := h.MustCLI("nic", "counters", id)
	var c nicTraffic
	for _, f := range []struct {
		key string
		dst *uint64
	}{{"rx packets", &c.rxPackets}, {"rx bytes", &c.rxBytes}, {"tx packets", &c.txPackets}, {"tx bytes", &c.txBytes}} {
		m := regexp.MustCompile(`(?m)^` + f.key + `: (\d+)$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("nic counters %s: no %q in:\n%s", id, f.key, out)
		}
		*f.dst, _ = strconv.ParseUint(m[1], 10, 64)
	}
	return c
}

// logCounters logs `nic counters` of the vNICs (diagnostics).
func logCounters(h *labtest.Host, t testing.TB, ids ...string) {
	t.Helper()
	for _, id := range ids {
		out, err := h.CLI("nic", "counters", id)
		t.Logf("%s: nic counters %s: %v\n%s", h.Name, id, err, out)
	}
}

// logGuestNet logs the guests' view of eth0 and their interrupts
// (diagnostics).
func logGuestNet(t testing.TB, vms ...*qemuVM) {
	t.Helper()
	for _, v := range vms {
		// TCP's own view tells a lost frame (retransmissions, unacked
		// bytes in tx_queue) from a stalled queue or an idle application.
		out, err := v.Exec(10*time.Second, "cd /sys/class/net/eth0/statistics && grep . rx_packets rx_bytes rx_dropped tx_packets tx_bytes tx_dropped; "+
			"grep -v CPU0 /proc/interrupts | head -12; grep Tcp: /proc/net/snmp; cat /proc/net/tcp; "+
			"cat /sys/class/net/eth0/queues/tx-0/tx_timeout 2>/dev/null; dmesg | tail -5")
		t.Logf("%s: %v\n%s", v.opts.name, err, out)
	}
}

// vmIP is an address without its prefix length.
func vmIP(addr string) string { return strings.SplitN(addr, "/", 2)[0] }

// TestQEMUOneHost: QEMU guests on vhost-user vNICs of one butterflyd.
// Two guests in VNI 42 (one without mergeable receive buffers) ping each
// other (and a TAP VM) and run iperf3 both ways, TSO frames crossing the
// switch whole; a guest in VNI 43 (same subnet)
// reaches its own VNI's TAP VM but neither of them, and, having no
// offloads (nor EVENT_IDX), takes that TAP VM's TCP traffic segmented; a guest whose driver
// is reloaded (device reset on a live connection) works again; a guest
// killed and started again on its socket works again (the original's
// tests 01 and 11); a vNIC deleted while its guest runs cuts that guest
// off while the daemon and the other vNICs keep working, and re-adding it
// brings the running guest back (QEMU redials), as does a guest restart
// (the original's test 12).
func TestQEMUOneHost(t *testing.T) {
	l := newLab(t)
	needQEMU(t)
	h := l.SingleHost(labtest.IPv4)
	h.Start(labtest.DaemonOpts{})
	h.OpenSG("sg-open")
	// A TAP VM in VNI 42: a third party that never goes away.
	tap := h.AddVM(labtest.NICSpec{ID: "tap-4", MAC: labtest.MACFor(4), VNI: 42, Addrs: []string{"10.42.0.4/24"}, SGs: []string{"sg-open"}})
	// And one in VNI 43, vm-3's only peer.
	tap5 := h.AddVM(labtest.NICSpec{ID: "tap-5", MAC: labtest.MACFor(5), VNI: 43, Addrs: []string{"10.42.0.5/24"}, SGs: []string{"sg-open"}})

	type spec struct {
		id   string
		vni  uint32
		addr string
	}
	specs := []spec{{"vm-1", 42, "10.42.0.1/24"}, {"vm-2", 42, "10.42.0.2/24"}, {"vm-3", 43, "10.42.0.3/24"}}
	vms := make([]*qemuVM, len(specs))
	for i, s := range specs {
		mac := labtest.MACFor(i + 1)
		sock := addVhostNIC(h, s.id, mac, s.vni, s.addr, "sg-open")
		o := vmOpts{name: s.id, socket: sock, mac: mac, addr: s.addr}
		switch s.id {
		case "vm-1":
			// Phase 1: no mergeable receive buffers.
			o.noMrgRxbuf = true
		case "vm-2":
			// Phase 5: QEMU redials a socket that went away.
			o.reconnect = 1
		case "vm-3":
			// Phase 2: the switch segments and checksums for it, and
			// notifications go by the rings' flags.
			o.noOffloads, o.noEventIdx = true, true
		}
		vms[i] = startVM(l, o)
	}
	waitVMs(t, vms...)
	vm1, vm2, vm3 := vms[0], vms[1], vms[2]
	ip1, ip2 := vmIP(specs[0].addr), vmIP(specs[1].addr)

	// Subtests would share this lab's helpers, which fail the parent
	// test: the phases run in line instead, each logged.
	t.Log("phase 1: same VNI: ping both ways (and a TAP VM), iperf3 both ways")
	if err := labtest.Parallel(func() error { return vm1.Reach(ip2) }, func() error { return vm2.Reach(ip1) }); err != nil {
		t.Fatal(err)
	}
	vm1.Reaches(t, tap.IP(0))
	tap.Reaches(t, ip1)
	// Both directions: vm-2 receives into mergeable buffers, vm-1
	// (mrg_rxbuf=off) into the big chained buffers of Linux's
	// "big packets" mode. The sender's TSO frames cross the switch whole
	// (mean frame far above the 1400-byte MTU) out of one guest and into
	// the other.
	for _, d := range []struct {
		from, to     *qemuVM
		fromID, toID string
		dst          string
	}{{vm1, vm2, "vm-1", "vm-2", ip2}, {vm2, vm1, "vm-2", "vm-1", ip1}} {
		cf, ct := traffic(h, t, d.fromID), traffic(h, t, d.toID)
		rate, err := vmIperf(d.from, d.to, d.dst, 3)
		if err != nil {
			logCounters(h, t, "vm-1", "vm-2")
			logGuestNet(t, vm1, vm2)
			// Whether the path still works tells a stall from a loss.
			t.Logf("%s -> %s ping after the failure: %v", d.fromID, d.toID, d.from.Reach(d.dst))
			t.Fatal(err)
		}
		if rate <= 0 {
			t.Fatalf("iperf3 %s -> %s: %v bit/s", d.fromID, d.toID, rate)
		}
		df, dt := traffic(h, t, d.fromID), traffic(h, t, d.toID)
		out := float64(df.rxBytes-cf.rxBytes) / float64(max(1, df.rxPackets-cf.rxPackets))
		in := float64(dt.txBytes-ct.txBytes) / float64(max(1, dt.txPackets-ct.txPackets))
		t.Logf("iperf3 TCP %s -> %s: %.1f Mbit/s, mean frame %.0f bytes out of %s, %.0f bytes into %s",
			d.fromID, d.toID, rate/1e6, out, d.fromID, in, d.toID)
		if out < 3000 || in < 3000 {
			t.Errorf("TSO frames were not kept whole between two local guests: mean frame %.0f bytes out of %s, %.0f into %s", out, d.fromID, in, d.toID)
		}
	}

	t.Log("phase 2: another VNI, same subnet: isolated")
	vm3.Reaches(t, tap5.IP(0)) // vm-3's own network works
	vm3.Blocked(t, ip1)
	vm3.Blocked(t, ip2)
	vm1.Blocked(t, vmIP(specs[2].addr))
	// vm-3 has no offloads: the TAP VM's TSO frames reach it segmented,
	// with full checksums (its kernel drops bad ones), and TCP works.
	ip3 := vmIP(specs[2].addr)
	if _, err := vm3.Exec(10*time.Second, "iperf3 -s -D"); err != nil {
		t.Fatal(err)
	}
	c3 := traffic(h, t, "vm-3")
	var out string
	if err := labtest.Poll(15*time.Second, func() error {
		var err error
		out, err = tap5.Exec("iperf3", "-c", ip3, "-t", "3", "-f", "m", "--connect-timeout", "3000")
		return err
	}); err != nil {
		t.Fatalf("iperf3 tap-5 -> vm-3: %v", err)
	}
	m := iperfRE.FindStringSubmatch(out)
	if m == nil || m[1] == "0.00" || m[1] == "0" {
		t.Fatalf("iperf3 tap-5 -> vm-3 moved nothing:\n%s", out)
	}
	d3 := traffic(h, t, "vm-3")
	into3 := float64(d3.txBytes-c3.txBytes) / float64(max(1, d3.txPackets-c3.txPackets))
	t.Logf("iperf3 TCP tap-5 -> vm-3 (no offloads): %s %sbit/s, mean frame into vm-3 %.0f bytes", m[1], m[2], into3)
	if into3 > 1400+14 {
		t.Errorf("frames into vm-3 (no GUEST_TSO) average %.0f bytes, above its MTU", into3)
	}

	t.Log("phase 3: guest driver reloaded (the device resets and its rings restart on one connection)")
	reload := "rmmod virtio_net && insmod /lib/modules/virtio_net.ko && " +
		"i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; " +
		"ip link set eth0 mtu 1400 && ip addr add " + specs[0].addr + " dev eth0 && ip link set eth0 up"
	if out, err := vm1.Exec(30*time.Second, reload); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	vm1.Reaches(t, ip2)
	vm2.Reaches(t, ip1)

	t.Log("phase 4: vm-1 killed, started again on its socket")
	vm1.Kill()
	vm2.Blocked(t, ip1)
	vm1.Start()
	waitVMs(t, vm1)
	vm1.Reaches(t, ip2)
	vm2.Reaches(t, ip1)

	t.Log("phase 5: nic del vm-2 while its guest runs")
	sock2 := filepath.Join(h.SockDir, "qemu-vhost-vm-2")
	h.MustCLI("nic", "del", "vm-2")
	labtest.Eventually(t, labtest.SettleTimeout, "socket of vm-2 removed", func() error {
		if _, err := os.Stat(sock2); !os.IsNotExist(err) {
			return fmt.Errorf("%s still there: %v", sock2, err)
		}
		return nil
	})
	// The guest runs on, cut off.
	vm2.Blocked(t, ip1)
	vm1.Blocked(t, ip2)
	if !vm2.running() {
		t.Fatal("QEMU of vm-2 exited when its vNIC was deleted")
	}
	// The daemon serves the API and the other vNICs.
	if ids := nicList(h, t); strings.Contains(strings.Join(ids, " "), "vm-2") {
		t.Fatalf("nic list still has vm-2: %v", ids)
	}
	vm1.Reaches(t, tap.IP(0))
	// Back: the vNIC again, and the guest restarted on its socket.
	// Back: the vNIC again. vm-2's QEMU redials (reconnect=1) and the
	// running guest gets its link back; then a fresh boot on the socket.
	addVhostNIC(h, "vm-2", labtest.MACFor(2), 42, specs[1].addr, "sg-open")
	vm1.Reaches(t, ip2)
	vm2.Restart()
	waitVMs(t, vm2)
	vm1.Reaches(t, ip2)
	vm2.Reaches(t, ip1)
	vhostLogClean(h, t)
}

// TestQEMUTwoHosts: one QEMU guest on each of two daemons joined by a
// VXLAN underlay (one guest with memory above 4 GiB and packed
// virtqueues, the other without EVENT_IDX): ping both ways and
// iperf3 TCP both ways; then one daemon
// is killed and restarted (server mode) and its guest, whose QEMU redials
// (reconnect=1), is back without a reboot.
func TestQEMUTwoHosts(t *testing.T) {
	l := newLab(t)
	needQEMU(t)
	h1, h2 := l.OpenHostPair(labtest.IPv4, labtest.DaemonOpts{})
	a1, a2 := "10.42.0.1/24", "10.42.0.2/24"
	s1 := addVhostNIC(h1, "vm-1", labtest.MACFor(1), 42, a1, "sg-open")
	s2 := addVhostNIC(h2, "vm-2", labtest.MACFor(2), 42, a2, "sg-open")
	// vm-1's QEMU redials its socket (the daemon's restart, below); its
	// rings use flags, not EVENT_IDX, to suppress notifications.
	vm1 := startVM(l, vmOpts{name: "vm-1", socket: s1, mac: labtest.MACFor(1), addr: a1, reconnect: 1, noEventIdx: true})
	// vm-2 has 4.5 GiB: its rings and buffers live in two memory regions,
	// one above 4 GiB at an offset of the memfd. Its rings are packed
	// (with EVENT_IDX: Linux asks for interrupts at a descriptor).
	vm2 := startVM(l, vmOpts{name: "vm-2", socket: s2, mac: labtest.MACFor(2), addr: a2, memMiB: 4608, packed: true})
	waitVMs(t, vm1, vm2)
	// The guest's driver shows the features it negotiated, one
	// character per bit: vm-2 runs packed rings, vm-1 split ones.
	for _, c := range []struct {
		vm     *qemuVM
		packed bool
	}{{vm1, false}, {vm2, true}} {
		out, err := c.vm.Exec(10*time.Second, "cat /sys/bus/virtio/devices/virtio0/features")
		if f := strings.TrimSpace(out); err != nil || len(f) <= 34 || (f[34] == '1') != c.packed {
			t.Fatalf("%s: negotiated features %q (%v), want VIRTIO_F_RING_PACKED (bit 34) %v", c.vm.opts.name, f, err, c.packed)
		}
	}
	ip1, ip2 := vmIP(a1), vmIP(a2)
	if err := labtest.Parallel(func() error { return vm1.Reach(ip2) }, func() error { return vm2.Reach(ip1) }); err != nil {
		t.Fatal(err)
	}
	for _, d := range []struct {
		from, to *qemuVM
		name     string
		dst      string
	}{{vm1, vm2, "vm-1 (h1) -> vm-2 (h2, packed)", ip2}, {vm2, vm1, "vm-2 (h2, packed) -> vm-1 (h1)", ip1}} {
		rate, err := vmIperf(d.from, d.to, d.dst, 3)
		if err != nil {
			logCounters(h1, t, "vm-1")
			logCounters(h2, t, "vm-2")
			logGuestNet(t, vm1, vm2)
			t.Fatalf("iperf3 %s: %v", d.name, err)
		}
		if rate <= 0 {
			t.Fatalf("iperf3 %s: %v bit/s", d.name, rate)
		}
		t.Logf("iperf3 TCP %s over VXLAN: %.1f Mbit/s", d.name, rate/1e6)
	}

	// Server mode survives a daemon crash: butterflyd killed (the guests
	// lose each other) and started again on its state file recreates the
	// socket, QEMU redials, and the running guests talk again (the
	// original needed VM reboots).
	h1.Stop(syscall.SIGKILL)
	vm2.Blocked(t, ip1)
	h1.Start(labtest.DaemonOpts{})
	start := time.Now()
	if err := labtest.Parallel(func() error { return vm1.Reach(ip2) }, func() error { return vm2.Reach(ip1) }); err != nil {
		t.Fatal(err)
	}
	t.Logf("guests ping each other %v after the daemon restart", time.Since(start).Round(100*time.Millisecond))
	vhostLogClean(h1, t)
	vhostLogClean(h2, t)
}
