package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// spoofPair builds one host with a victim VM (42.0.0.2) and a VM under
// test (42.0.0.1) whose anti-spoofing flag is antispoof.
func spoofPair(t *testing.T, antispoof bool) (spoofer, victim *labtest.VM) {
	t.Helper()
	return spoofPairBypass(t, antispoof, false)
}

// spoofPairBypass is spoofPair with the spoofer's bypass_filtering flag.
func spoofPairBypass(t *testing.T, antispoof, bypass bool) (spoofer, victim *labtest.VM) {
	t.Helper()
	l := newLab(t)
	h := l.SingleHost(labtest.IPv4)
	h.Start(labtest.DaemonOpts{})
	h.OpenSG("sg-open")
	spoofer = h.AddVM(labtest.NICSpec{ID: "nic-1", MAC: labtest.MACFor(1), VNI: 42, Addrs: []string{"42.0.0.1/24"},
		SGs: []string{"sg-open"}, Antispoof: antispoof, Bypass: bypass})
	victim = h.AddVM(labtest.NICSpec{ID: "nic-2", MAC: labtest.MACFor(2), VNI: 42, Addrs: []string{"42.0.0.2/24"},
		SGs: []string{"sg-open"}})
	spoofer.Reaches(t, victim.IP(0))
	return spoofer, victim
}

// TestMACSpoofing: a VM that changes its MAC loses connectivity whatever its
// anti-spoofing flag, and gets it back with its own MAC.
func TestMACSpoofing(t *testing.T) {
	t.Parallel()
	for _, antispoof := range []bool{false, true} {
		t.Run(fmt.Sprintf("antispoof=%v", antispoof), func(t *testing.T) {
			spoofer, victim := spoofPair(t, antispoof)
			labtest.Must(t, "ip", "-n", spoofer.NS, "link", "set", "eth0", "address", "52:54:00:66:66:66")
			labtest.Must(t, "ip", "-n", victim.NS, "neigh", "flush", "dev", "eth0")
			labtest.Must(t, "ip", "-n", spoofer.NS, "neigh", "flush", "dev", "eth0")
			spoofer.Blocked(t, victim.IP(0))
			// Even with the victim knowing the forged MAC (no ARP needed),
			// frames from it are dropped.
			labtest.Must(t, "ip", "-n", spoofer.NS, "neigh", "replace", victim.IP(0), "lladdr", victim.Spec.MAC, "dev", "eth0")
			labtest.Must(t, "ip", "-n", victim.NS, "neigh", "replace", spoofer.IP(0), "lladdr", "52:54:00:66:66:66", "dev", "eth0")
			spoofer.Blocked(t, victim.IP(0))
			labtest.Must(t, "ip", "-n", spoofer.NS, "link", "set", "eth0", "address", spoofer.Spec.MAC)
			labtest.Must(t, "ip", "-n", victim.NS, "neigh", "replace", spoofer.IP(0), "lladdr", spoofer.Spec.MAC, "dev", "eth0")
			spoofer.Reaches(t, victim.IP(0))
		})
	}
}

// TestIPSpoofing: packets from an address not declared for the vNIC are
// dropped by anti-spoofing when it is on, and otherwise by the firewall's
// default egress (only the vNIC's own IPs), as in the original, unless an
// OUTBOUND rule allows them or the vNIC bypasses filtering. Neighbour
// entries are static so that no ARP is involved.
func TestIPSpoofing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		antispoof, outbound, bypass bool
		passes                      bool
	}{
		{antispoof: false, passes: false},
		{antispoof: true, passes: false},
		{antispoof: false, outbound: true, passes: true},
		{antispoof: true, outbound: true, passes: false},
		{antispoof: false, bypass: true, passes: true},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("antispoof=%v,outbound=%v,bypass=%v", tc.antispoof, tc.outbound, tc.bypass), func(t *testing.T) {
			spoofer, victim := spoofPairBypass(t, tc.antispoof, tc.bypass)
			if tc.outbound {
				spoofer.Host.MustCLI("sg", "rule", "add", "sg-open", "--dir", "out", "--ip-proto", "all", "--cidr", "0.0.0.0/0")
			}
			spoofer.AddAddr("42.0.0.99/24")
			labtest.Must(t, "ip", "-n", spoofer.NS, "neigh", "replace", victim.IP(0), "lladdr", victim.Spec.MAC, "dev", "eth0", "nud", "permanent")
			labtest.Must(t, "ip", "-n", victim.NS, "neigh", "replace", "42.0.0.99", "lladdr", spoofer.Spec.MAC, "dev", "eth0", "nud", "permanent")
			// The declared address still works.
			spoofer.Reaches(t, victim.IP(0))
			if tc.passes {
				spoofer.Reaches(t, victim.IP(0), "-I", "42.0.0.99")
			} else {
				spoofer.Blocked(t, victim.IP(0), "-I", "42.0.0.99")
			}
		})
	}
}

// TestARPSpoofing: ARP replies claiming an address not declared for the
// vNIC are dropped only with anti-spoofing on; the victim's neighbour table
// shows whether the claim got through.
func TestARPSpoofing(t *testing.T) {
	t.Parallel()
	for _, antispoof := range []bool{false, true} {
		t.Run(fmt.Sprintf("antispoof=%v", antispoof), func(t *testing.T) {
			spoofer, victim := spoofPair(t, antispoof)
			spoofer.AddAddr("42.0.0.99/24")
			// The victim asks who has 42.0.0.99; the spoofer answers for it.
			_ = victim.PingOnce("42.0.0.99")
			learned := func() error {
				out, err := victim.Exec("ip", "neigh", "show", "42.0.0.99", "dev", "eth0")
				if err != nil {
					return err
				}
				if !strings.Contains(strings.ToLower(out), spoofer.Spec.MAC) {
					return fmt.Errorf("victim has no entry 42.0.0.99 -> %s: %q", spoofer.Spec.MAC, strings.TrimSpace(out))
				}
				return nil
			}
			if antispoof {
				// Ask a few more times: none of the answers may arrive.
				for range 3 {
					_ = victim.PingOnce("42.0.0.99")
				}
				if err := learned(); err == nil {
					t.Fatal("ARP reply for an undeclared address reached the victim despite anti-spoofing")
				}
				return
			}
			labtest.Eventually(t, labtest.SettleTimeout, "victim learns 42.0.0.99", func() error {
				_ = victim.PingOnce("42.0.0.99")
				return learned()
			})
		})
	}
}
