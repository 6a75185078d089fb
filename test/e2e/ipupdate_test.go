package e2e

import (
	"strings"
	"testing"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// setIPs replaces the vNIC's declared addresses with those of addrs
// (prefix lengths dropped) through nic update.
func setIPs(v *labtest.VM, t *testing.T, addrs []string) {
	t.Helper()
	args := []string{"nic", "update", "--id", v.Spec.ID}
	for _, a := range addrs {
		args = append(args, "--ip", strings.SplitN(a, "/", 2)[0])
	}
	v.Host.MustCLI(args...)
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
	t.Parallel()
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
			h := l.SingleHost(labtest.IPv4)
			h.Start(labtest.DaemonOpts{})
			h.OpenSG("sg-open")
			a := h.AddVM(labtest.NICSpec{ID: "nic-1", MAC: labtest.MACFor(1), VNI: 42, Addrs: tc.a, NoAPIIPs: true, Antispoof: true, SGs: []string{"sg-open"}})
			b := h.AddVM(labtest.NICSpec{ID: "nic-2", MAC: labtest.MACFor(2), VNI: 42, Addrs: tc.b, NoAPIIPs: true, Antispoof: true, SGs: []string{"sg-open"}})
			// Nothing declared yet: the first address pair must not work.
			if err := a.BlockedFrom(b.IP(0), pingFrom(tc.a[0])...); err != nil {
				t.Fatal(err)
			}
			setIPs(a, t, tc.a)
			setIPs(b, t, tc.b)
			details := h.MustCLI("nic", "details", "nic-1")
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
						func() error { return a.Reach(strings.SplitN(dst, "/", 2)[0], pingFrom(src)...) },
						func() error { return b.Reach(strings.SplitN(src, "/", 2)[0], pingFrom(dst)...) })
				}
			}
			if err := labtest.Parallel(checks...); err != nil {
				t.Fatal(err)
			}
			// Withdraw all but the first address of a: the others stop working.
			setIPs(a, t, tc.a[:1])
			if err := labtest.Parallel(
				func() error { return a.Reach(b.IP(0), pingFrom(tc.a[0])...) },
				func() error { return a.BlockedFrom(b.IP(0), pingFrom(tc.a[1])...) },
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
	t.Parallel()
	l := newLab(t)
	h := l.SingleHost(labtest.IPv4)
	h.Start(labtest.DaemonOpts{})
	h.OpenSG("sg-open")
	x := []string{"42.0.0.1/24", "2001:db8:42::1/64"}
	y := []string{"42.0.0.2/24", "2001:db8:42::2/64"}
	a := h.AddVM(labtest.NICSpec{ID: "nic-1", MAC: labtest.MACFor(1), VNI: 42, Addrs: x, Antispoof: true, SGs: []string{"sg-open"}})
	b := h.AddVM(labtest.NICSpec{ID: "nic-2", MAC: labtest.MACFor(2), VNI: 42, Addrs: y, Antispoof: true, SGs: []string{"sg-open"}})
	for round := range 4 {
		if err := labtest.Parallel(
			func() error { return a.Reach(b.IP(0)) }, func() error { return a.Reach(b.IP(1)) },
			func() error { return b.Reach(a.IP(0)) }, func() error { return b.Reach(a.IP(1)) },
		); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for _, v := range []*labtest.VM{a, b} {
			for _, addr := range v.Spec.Addrs {
				v.DelAddr(addr)
			}
		}
		a.Spec.Addrs, b.Spec.Addrs = b.Spec.Addrs, a.Spec.Addrs
		for _, v := range []*labtest.VM{a, b} {
			setIPs(v, t, v.Spec.Addrs)
			for _, addr := range v.Spec.Addrs {
				v.AddAddr(addr)
			}
			// The peers' neighbour caches still map each address to the old MAC.
			labtest.Must(t, "ip", "-n", v.NS, "neigh", "flush", "dev", "eth0")
		}
		details := h.MustCLI("nic", "details", "nic-1")
		if want := "ip: " + a.IP(0); !strings.Contains(details, want) {
			t.Fatalf("round %d: nic details nic-1 lacks %q:\n%s", round, want, details)
		}
	}
}
