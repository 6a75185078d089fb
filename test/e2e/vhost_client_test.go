package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/labtest"
	"github.com/butterfly-go/butterfly/internal/port/vhostuser/vhosttest"
)

// TestVhostClientDaemonRestart: a client-mode vhost-user vNIC connects to
// the socket of a DPDK testpmd virtio_user port in server mode (the VM)
// sending to a TAP VM; butterflyd is stopped (SIGTERM, or SIGKILL as in a
// crash) and started again on the same state file: the vNIC is restored
// in client mode, reconnects to the same testpmd process, which was never
// restarted nor told anything, and its frames reach the TAP VM again.
// The SIGTERM case chooses client mode per vNIC (nic add --vhost-client)
// on a server-default daemon; the SIGKILL case takes it from the daemon's
// default (butterflyd --vhost-client).
func TestVhostClientDaemonRestart(t *testing.T) {
	vhosttest.Need(t)
	tests := []struct {
		sig     syscall.Signal
		daemon  labtest.DaemonOpts
		nicFlag []string
	}{
		{syscall.SIGTERM, labtest.DaemonOpts{}, []string{"--vhost-client"}},
		{syscall.SIGKILL, labtest.DaemonOpts{Extra: []string{"--vhost-client"}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.sig.String(), func(t *testing.T) {
			l := newLab(t)
			h := l.SingleHost(labtest.IPv4)
			h.Start(tc.daemon)
			dst := h.AddVM(labtest.NICSpec{ID: "tap-1", MAC: labtest.MACFor(1), VNI: 42, Addrs: []string{"198.18.0.2/24"}, Bypass: true})
			mac := labtest.MACFor(2)
			args := append([]string{"nic", "add", "--id", "vh-1", "--mac", mac, "--vni", "42", "--bypass-filtering"}, tc.nicFlag...)
			sock := labtest.LastLine(h.MustCLI(args...))
			if want := filepath.Join(h.SockDir, "qemu-vhost-vh-1"); sock != want {
				t.Fatalf("nic add printed %q, want %q", sock, want)
			}
			if _, err := os.Lstat(sock); !os.IsNotExist(err) {
				t.Fatalf("a client-mode vNIC created its socket: %v", err)
			}
			details := h.MustCLI("nic", "details", "vh-1")
			if !strings.Contains(details, "vhost-user client: true\n") {
				t.Fatalf("nic details:\n%swant vhost-user client: true", details)
			}
			// testpmd listens on the path; the daemon finds it there
			// (testpmd waits for that connection before its prompt).
			tp := vhosttest.Start(t, sock, "txonly", vhosttest.Options{Server: true, MAC: mac, EthPeer: dst.Spec.MAC})
			pid := tp.Pid()
			tp.Command("start")
			waitRx(t, dst, 1000, "before the restart")

			h.Stop(tc.sig)
			waitUnplugged(dst, t)
			start := time.Now()
			h.Start(tc.daemon)
			if after := h.MustCLI("nic", "details", "vh-1"); after != details {
				t.Errorf("nic details changed across the restart:\nbefore:\n%s\nafter:\n%s", details, after)
			}
			dst.Plug()
			waitRx(t, dst, 1000, "after the restart")
			t.Logf("testpmd's frames reach the TAP VM %v after the daemon restart", time.Since(start).Round(time.Millisecond))
			if tp.Pid() != pid {
				t.Fatalf("testpmd pid changed from %d to %d", pid, tp.Pid())
			}
			if err := syscall.Kill(pid, 0); err != nil {
				t.Fatalf("testpmd (pid %d) is gone: %v", pid, err)
			}
			labtest.Eventually(t, labtest.SettleTimeout, "the restarted daemon counts vh-1's frames", func() error {
				o := h.MustCLI("nic", "counters", "vh-1")
				for _, line := range strings.Split(o, "\n") {
					if v, ok := strings.CutPrefix(line, "rx packets: "); ok {
						if n, _ := strconv.ParseUint(v, 10, 64); n >= 1000 {
							return nil
						}
					}
				}
				return fmt.Errorf("nic counters vh-1:\n%s", o)
			})
			tp.Command("stop")
			// Deleting a client-mode vNIC leaves the VM's socket alone.
			h.MustCLI("nic", "del", "vh-1")
			if fi, err := os.Lstat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
				t.Errorf("nic del touched the VM's socket: %v", err)
			}
		})
	}
}

// waitRx waits until the VM's eth0 has received at least n frames.
func waitRx(t *testing.T, v *labtest.VM, n uint64, what string) {
	t.Helper()
	labtest.Eventually(t, labtest.SettleTimeout, v.Spec.ID+" receives testpmd's frames "+what, func() error {
		o, err := v.Exec("cat", "/sys/class/net/eth0/statistics/rx_packets")
		if err != nil {
			return err
		}
		got, err := strconv.ParseUint(strings.TrimSpace(o), 10, 64)
		if err != nil {
			return err
		}
		if got < n {
			return fmt.Errorf("eth0 received %d frames", got)
		}
		return nil
	})
}
