package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/labtest"
	"github.com/butterfly-go/butterfly/internal/port/vhostuser/vhosttest"
)

// TestVhostUserToTAP: a vhost-user vNIC created through the API, driven by
// a DPDK testpmd front end (txonly, destination MAC of a TAP VM in the
// same VNI), delivers its frames through butterflyd's switch to the TAP
// VM, the daemon counts every frame testpmd sent, and nic del removes the
// socket.
func TestVhostUserToTAP(t *testing.T) {
	vhosttest.Need(t)
	l := newLab(t)
	h := l.SingleHost(labtest.IPv4)
	h.Start(labtest.DaemonOpts{})
	dst := h.AddVM(labtest.NICSpec{ID: "tap-1", MAC: labtest.MACFor(1), VNI: 42, Addrs: []string{"198.18.0.2/24"}, Bypass: true})
	mac := labtest.MACFor(2)
	out := h.MustCLI("nic", "add", "--id", "vh-1", "--mac", mac, "--vni", "42", "--type", "VHOST_USER_SERVER", "--bypass-filtering")
	sock := labtest.LastLine(out)
	if want := filepath.Join(h.SockDir, "qemu-vhost-vh-1"); sock != want {
		t.Fatalf("nic add printed %q, want %q", sock, want)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("vhost-user socket %s: %v", sock, err)
	}
	rxPackets := func() (uint64, error) {
		o, err := dst.Exec("cat", "/sys/class/net/eth0/statistics/rx_packets")
		if err != nil {
			return 0, err
		}
		return strconv.ParseUint(strings.TrimSpace(o), 10, 64)
	}
	before, err := rxPackets()
	if err != nil {
		t.Fatal(err)
	}
	tp := vhosttest.Start(t, sock, "txonly", vhosttest.Options{MAC: mac, EthPeer: dst.Spec.MAC})
	tp.Command("start")
	labtest.Eventually(t, labtest.SettleTimeout, "TAP VM receives testpmd's frames", func() error {
		n, err := rxPackets()
		if err != nil {
			return err
		}
		if n-before < 1000 {
			return fmt.Errorf("eth0 received %d frames", n-before)
		}
		return nil
	})
	tp.Command("stop")
	_, sent := tp.PortStats()
	// Every frame testpmd sent is counted by the daemon as received
	// from the vNIC.
	want := fmt.Sprintf("rx packets: %d\n", sent)
	labtest.Eventually(t, labtest.SettleTimeout, "nic counters match testpmd's TX", func() error {
		if o := h.MustCLI("nic", "counters", "vh-1"); !strings.Contains(o, want) {
			return fmt.Errorf("nic counters vh-1:\n%swant %q", o, want)
		}
		return nil
	})
	tp.Kill()
	h.MustCLI("nic", "del", "vh-1")
	if err := labtest.Poll(5*time.Second, func() error {
		if _, err := os.Stat(sock); !os.IsNotExist(err) {
			return fmt.Errorf("socket still there: %v", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
