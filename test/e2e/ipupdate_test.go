package e2e

import (
	"strings"
	"testing"
)

// setIPs replaces the vNIC's declared addresses with those of addrs
// (prefix lengths dropped) through nic update.
func (v *vm) setIPs(t *testing.T, addrs []string) {
	t.Helper()
	args := []string{"nic", "update", "--id", v.spec.id}
	for _, a := range addrs {
		args = append(args, "--ip", strings.SplitN(a, "/", 2)[0])
	}
	v.host.mustCLI(args...)
}

// pingFrom returns the ping flags to use src as source address.
func pingFrom(src string) []string {
	return []string{"-I", strings.SplitN(src, "/", 2)[0]}
}

// TestNICUpdateIPs follows the original's tests 06 to 08: vNICs created
// without addresses (anti-spoofing on, so undeclared addresses are dropped)
// get several addresses with nic update, and every address pair then
// answers, IPv4, IPv6 or both.
func TestNICUpdateIPs(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b []string // the two VMs' addresses
	}{
		{"06-three-ipv4",
			[]string{"42.0.0.1/24", "42.0.0.11/24", "42.0.0.21/24"},
			[]string{"42.0.0.2/24", "42.0.0.12/24", "42.0.0.22/24"}},
		{"07-ipv4-and-ipv6",
			[]string{"42.0.0.1/24", "42.0.0.11/24", "2001:db8:42::1/64", "2001:db8:42::11/64"},
			[]string{"42.0.0.2/24", "42.0.0.12/24", "2001:db8:42::2/64", "2001:db8:42::12/64"}},
		{"08-three-ipv6",
			[]string{"2001:db8:42::1/64", "2001:db8:42::11/64", "2001:db8:42::21/64"},
			[]string{"2001:db8:42::2/64", "2001:db8:42::12/64", "2001:db8:42::22/64"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t)
			h := l.singleHost(ipv4)
			h.start(daemonOpts{})
			h.openSG("sg-open")
			a := h.addVM(nicSpec{id: "nic-1", mac: macFor(1), vni: 42, addrs: tc.a, noAPIIPs: true, antispoof: true, sgs: []string{"sg-open"}})
			b := h.addVM(nicSpec{id: "nic-2", mac: macFor(2), vni: 42, addrs: tc.b, noAPIIPs: true, antispoof: true, sgs: []string{"sg-open"}})
			// Nothing declared yet: the first address pair must not work.
			if err := a.blockedFrom(b.ip(0), pingFrom(tc.a[0])...); err != nil {
				t.Fatal(err)
			}
			a.setIPs(t, tc.a)
			b.setIPs(t, tc.b)
			details := h.mustCLI("nic", "details", "nic-1")
			for _, addr := range tc.a {
				if !strings.Contains(details, strings.SplitN(addr, "/", 2)[0]) {
					t.Errorf("nic details nic-1 lacks %s:\n%s", addr, details)
				}
			}
			var checks []func() error
			for _, src := range tc.a {
				for _, dst := range tc.b {
					if strings.Contains(src, ":") != strings.Contains(dst, ":") {
						continue
					}
					checks = append(checks,
						func() error { return a.reach(strings.SplitN(dst, "/", 2)[0], pingFrom(src)...) },
						func() error { return b.reach(strings.SplitN(src, "/", 2)[0], pingFrom(dst)...) })
				}
			}
			if err := parallel(checks...); err != nil {
				t.Fatal(err)
			}
			// Withdraw all but the first address of a: the others stop working.
			a.setIPs(t, tc.a[:1])
			if err := parallel(
				func() error { return a.reach(b.ip(0), pingFrom(tc.a[0])...) },
				func() error { return a.blockedFrom(b.ip(0), pingFrom(tc.a[1])...) },
			); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestNICSwapIPs follows the original's test 09: two VMs swap their IPv4 and
// IPv6 addresses (nic update on the API side, the same change inside the
// VMs), several times; traffic follows each swap.
func TestNICSwapIPs(t *testing.T) {
	l := newLab(t)
	h := l.singleHost(ipv4)
	h.start(daemonOpts{})
	h.openSG("sg-open")
	x := []string{"42.0.0.1/24", "2001:db8:42::1/64"}
	y := []string{"42.0.0.2/24", "2001:db8:42::2/64"}
	a := h.addVM(nicSpec{id: "nic-1", mac: macFor(1), vni: 42, addrs: x, antispoof: true, sgs: []string{"sg-open"}})
	b := h.addVM(nicSpec{id: "nic-2", mac: macFor(2), vni: 42, addrs: y, antispoof: true, sgs: []string{"sg-open"}})
	for round := range 4 {
		if err := parallel(
			func() error { return a.reach(b.ip(0)) }, func() error { return a.reach(b.ip(1)) },
			func() error { return b.reach(a.ip(0)) }, func() error { return b.reach(a.ip(1)) },
		); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for _, v := range []*vm{a, b} {
			for _, addr := range v.spec.addrs {
				v.delAddr(addr)
			}
		}
		a.spec.addrs, b.spec.addrs = b.spec.addrs, a.spec.addrs
		for _, v := range []*vm{a, b} {
			v.setIPs(t, v.spec.addrs)
			for _, addr := range v.spec.addrs {
				v.addAddr(addr)
			}
			// The peers' neighbour caches still map each address to the old MAC.
			must(t, "ip", "-n", v.ns, "neigh", "flush", "dev", "eth0")
		}
		details := h.mustCLI("nic", "details", "nic-1")
		if want := "ip: " + a.ip(0); !strings.Contains(details, want) {
			t.Fatalf("round %d: nic details nic-1 lacks %q:\n%s", round, want, details)
		}
	}
}
