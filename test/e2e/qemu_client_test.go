package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// pid returns the QEMU process id of the current boot.
func (v *qemuVM) pid() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cmd == nil || v.cmd.Process == nil {
		return 0
	}
	return v.cmd.Process.Pid
}

// uptime returns the guest's uptime in seconds (/proc/uptime).
func (v *qemuVM) uptime() (float64, error) {
	out, err := v.Exec(10*time.Second, "cat /proc/uptime")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(out)
	if len(f) == 0 {
		return 0, fmt.Errorf("%s: /proc/uptime: %q", v.opts.name, out)
	}
	return strconv.ParseFloat(f[0], 64)
}

// TestQEMUVhostClientDaemonRestart: two QEMU guests whose vhost-user
// sockets QEMU owns (chardev server=on; the daemon is the client, by its
// --vhost-client default) ping each other; butterflyd is killed with
// SIGKILL (the guests lose each other) and started again on its state
// file: the restored vNICs reconnect to the same QEMU processes and the
// guests ping again, without a reboot, a restart or any action in them.
// Then a guest is killed and started again: the vNIC, still dialing,
// finds the new QEMU's socket and the guests ping again.
func TestQEMUVhostClientDaemonRestart(t *testing.T) {
	l := newLab(t)
	needQEMU(t)
	h := l.SingleHost(labtest.IPv4)
	opts := labtest.DaemonOpts{Extra: []string{"--vhost-client"}}
	h.Start(opts)
	h.OpenSG("sg-open")
	a1, a2 := "10.42.0.1/24", "10.42.0.2/24"
	s1 := addVhostNIC(h, "vm-1", labtest.MACFor(1), 42, a1, "sg-open")
	s2 := addVhostNIC(h, "vm-2", labtest.MACFor(2), 42, a2, "sg-open")
	for _, id := range []string{"vm-1", "vm-2"} {
		if d := h.MustCLI("nic", "details", id); !strings.Contains(d, "vhost-user client: true\n") {
			t.Fatalf("nic details %s:\n%swant vhost-user client: true", id, d)
		}
	}
	// QEMU creates the sockets; the daemon's vNICs are already dialing.
	vm1 := startVM(l, vmOpts{name: "vm-1", socket: s1, server: true, mac: labtest.MACFor(1), addr: a1})
	vm2 := startVM(l, vmOpts{name: "vm-2", socket: s2, server: true, mac: labtest.MACFor(2), addr: a2})
	waitVMs(t, vm1, vm2)
	ip1, ip2 := vmIP(a1), vmIP(a2)
	if err := labtest.Parallel(func() error { return vm1.Reach(ip2) }, func() error { return vm2.Reach(ip1) }); err != nil {
		t.Fatal(err)
	}
	pids := []int{vm1.pid(), vm2.pid()}
	up1, err := vm1.uptime()
	if err != nil {
		t.Fatal(err)
	}

	h.Stop(syscall.SIGKILL)
	vm1.Blocked(t, ip2)
	for _, s := range []string{s1, s2} {
		if fi, err := os.Lstat(s); err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Fatalf("QEMU's socket %s after the daemon died: %v", s, err)
		}
	}
	start := time.Now()
	h.Start(opts)
	if err := labtest.Parallel(func() error { return vm1.Reach(ip2) }, func() error { return vm2.Reach(ip1) }); err != nil {
		t.Fatal(err)
	}
	t.Logf("guests ping each other %v after the daemon restart", time.Since(start).Round(100*time.Millisecond))
	for i, v := range []*qemuVM{vm1, vm2} {
		if !v.running() || v.pid() != pids[i] {
			t.Errorf("%s: QEMU pid %d (running %t), want the same process %d", v.opts.name, v.pid(), v.running(), pids[i])
		}
	}
	up2, err := vm1.uptime()
	if err != nil {
		t.Fatal(err)
	}
	if up2 <= up1 {
		t.Errorf("vm-1 rebooted: uptime %.1f s before the daemon restart, %.1f s after", up1, up2)
	}

	// The other side: a VM restarted (a new QEMU creating the socket
	// again) is found by the same vNIC, which keeps dialing.
	vm2.Kill()
	vm1.Blocked(t, ip2)
	vm2.Start()
	waitVMs(t, vm2)
	if err := labtest.Parallel(func() error { return vm1.Reach(ip2) }, func() error { return vm2.Reach(ip1) }); err != nil {
		t.Fatal(err)
	}
}
