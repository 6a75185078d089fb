package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// spoofPair builds one host with a victim VM (42.0.0.2) and a VM under
// test (42.0.0.1) whose anti-spoofing flag is antispoof.
func spoofPair(t *testing.T, antispoof bool) (spoofer, victim *vm) {
	t.Helper()
	return spoofPairBypass(t, antispoof, false)
}

// spoofPairBypass is spoofPair with the spoofer's bypass_filtering flag.
func spoofPairBypass(t *testing.T, antispoof, bypass bool) (spoofer, victim *vm) {
	t.Helper()
	l := newLab(t)
	h := l.singleHost(ipv4)
	h.start(daemonOpts{})
	h.openSG("sg-open")
	spoofer = h.addVM(nicSpec{id: "nic-1", mac: macFor(1), vni: 42, addrs: []string{"42.0.0.1/24"},
		sgs: []string{"sg-open"}, antispoof: antispoof, bypass: bypass})
	victim = h.addVM(nicSpec{id: "nic-2", mac: macFor(2), vni: 42, addrs: []string{"42.0.0.2/24"},
		sgs: []string{"sg-open"}})
	spoofer.reaches(t, victim.ip(0))
	return spoofer, victim
}

// TestMACSpoofing: a VM that changes its MAC loses connectivity whatever its
// anti-spoofing flag, and gets it back with its own MAC.
func TestMACSpoofing(t *testing.T) {
	for _, antispoof := range []bool{false, true} {
		t.Run(fmt.Sprintf("antispoof=%v", antispoof), func(t *testing.T) {
			spoofer, victim := spoofPair(t, antispoof)
			must(t, "ip", "-n", spoofer.ns, "link", "set", "eth0", "address", "52:54:00:66:66:66")
			must(t, "ip", "-n", victim.ns, "neigh", "flush", "dev", "eth0")
			must(t, "ip", "-n", spoofer.ns, "neigh", "flush", "dev", "eth0")
			spoofer.blocked(t, victim.ip(0))
			// Even with the victim knowing the forged MAC (no ARP needed),
			// frames from it are dropped.
			must(t, "ip", "-n", spoofer.ns, "neigh", "replace", victim.ip(0), "lladdr", victim.spec.mac, "dev", "eth0")
			must(t, "ip", "-n", victim.ns, "neigh", "replace", spoofer.ip(0), "lladdr", "52:54:00:66:66:66", "dev", "eth0")
			spoofer.blocked(t, victim.ip(0))
			must(t, "ip", "-n", spoofer.ns, "link", "set", "eth0", "address", spoofer.spec.mac)
			must(t, "ip", "-n", victim.ns, "neigh", "replace", spoofer.ip(0), "lladdr", spoofer.spec.mac, "dev", "eth0")
			spoofer.reaches(t, victim.ip(0))
		})
	}
}

// TestIPSpoofing: packets from an address not declared for the vNIC are
// dropped by anti-spoofing when it is on, and otherwise by the firewall's
// default egress (only the vNIC's own IPs), as in the original, unless an
// OUTBOUND rule allows them or the vNIC bypasses filtering. Neighbour
// entries are static so that no ARP is involved.
func TestIPSpoofing(t *testing.T) {
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
				spoofer.host.mustCLI("sg", "rule", "add", "sg-open", "--dir", "out", "--ip-proto", "all", "--cidr", "0.0.0.0/0")
			}
			spoofer.addAddr("42.0.0.99/24")
			must(t, "ip", "-n", spoofer.ns, "neigh", "replace", victim.ip(0), "lladdr", victim.spec.mac, "dev", "eth0", "nud", "permanent")
			must(t, "ip", "-n", victim.ns, "neigh", "replace", "42.0.0.99", "lladdr", spoofer.spec.mac, "dev", "eth0", "nud", "permanent")
			// The declared address still works.
			spoofer.reaches(t, victim.ip(0))
			if tc.passes {
				spoofer.reaches(t, victim.ip(0), "-I", "42.0.0.99")
			} else {
				spoofer.blocked(t, victim.ip(0), "-I", "42.0.0.99")
			}
		})
	}
}

// TestARPSpoofing: ARP replies claiming an address not declared for the
// vNIC are dropped only with anti-spoofing on; the victim's neighbour table
// shows whether the claim got through.
func TestARPSpoofing(t *testing.T) {
	for _, antispoof := range []bool{false, true} {
		t.Run(fmt.Sprintf("antispoof=%v", antispoof), func(t *testing.T) {
			spoofer, victim := spoofPair(t, antispoof)
			spoofer.addAddr("42.0.0.99/24")
			// The victim asks who has 42.0.0.99; the spoofer answers for it.
			_ = victim.pingOnce("42.0.0.99")
			learned := func() error {
				out, err := victim.exec("ip", "neigh", "show", "42.0.0.99", "dev", "eth0")
				if err != nil {
					return err
				}
				if !strings.Contains(strings.ToLower(out), spoofer.spec.mac) {
					return fmt.Errorf("victim has no entry 42.0.0.99 -> %s: %q", spoofer.spec.mac, strings.TrimSpace(out))
				}
				return nil
			}
			if antispoof {
				// Ask a few more times: none of the answers may arrive.
				for range 3 {
					_ = victim.pingOnce("42.0.0.99")
				}
				if err := learned(); err == nil {
					t.Fatal("ARP reply for an undeclared address reached the victim despite anti-spoofing")
				}
				return
			}
			eventually(t, settleTimeout, "victim learns 42.0.0.99", func() error {
				_ = victim.pingOnce("42.0.0.99")
				return learned()
			})
		})
	}
}
