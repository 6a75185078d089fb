package e2e

import (
	"fmt"
	"testing"
)

// readmeLayout is the original README's example: six VMs in three virtual
// networks over two hosts, all in one IP subnet so that only the VNI keeps
// them apart. VNI 42 spans both hosts and has two VMs on h1; VNI 1337 spans
// both hosts; VNI 51 has a single VM.
type readmeVM struct {
	n    int
	host int // 1 or 2
	vni  uint32
}

func readmeLayout() []readmeVM {
	return []readmeVM{
		{1, 1, 42}, {2, 1, 42}, {3, 1, 1337},
		{4, 2, 42}, {5, 2, 51}, {6, 2, 1337},
	}
}

// buildREADME starts both daemons and creates the six VMs.
func buildREADME(t *testing.T, l *lab, f family, o daemonOpts) []*vm {
	t.Helper()
	h1, h2 := l.openHostPair(f, o)
	hosts := []*host{h1, h2}
	layout := readmeLayout()
	vms := make([]*vm, len(layout))
	for i, e := range layout {
		vms[i] = hosts[e.host-1].addVM(nicSpec{
			id:    fmt.Sprintf("nic-%d", e.n),
			mac:   macFor(e.n),
			vni:   e.vni,
			addrs: []string{fmt.Sprintf("42.0.0.%d/24", e.n), fmt.Sprintf("2001:db8:42::%d/64", e.n)},
			sgs:   []string{"sg-open"},
		})
	}
	return vms
}

// TestREADMEExample: ping (IPv4 and IPv6 tenant traffic) works between VMs
// of one VNI, on one host and across hosts, and never across VNIs; over IPv4
// and IPv6 underlays, with multicast and head-end flooding.
func TestREADMEExample(t *testing.T) {
	for _, tc := range []struct {
		name     string
		underlay family
		headEnd  bool
	}{
		{"ipv4-multicast", ipv4, false},
		{"ipv4-headend", ipv4, true},
		{"ipv6-multicast", ipv6, false},
		{"ipv6-headend", ipv6, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t)
			vms := buildREADME(t, l, tc.underlay, daemonOpts{headEnd: tc.headEnd})
			layout := readmeLayout()
			var same, other []func() error
			for i, a := range vms {
				for j, b := range vms {
					if i == j {
						continue
					}
					for k := range b.spec.addrs {
						if layout[i].vni == layout[j].vni {
							same = append(same, func() error { return a.reach(b.ip(k)) })
						} else {
							other = append(other, func() error { return a.blockedFrom(b.ip(k)) })
						}
					}
				}
			}
			if len(same) != 16 || len(other) != 44 {
				t.Fatalf("layout gives %d reachable and %d isolated checks, want 16 and 44", len(same), len(other))
			}
			// Reachability first: it proves the VMs are up, so that the
			// isolation checks below cannot pass because of a dead network.
			if err := parallel(same...); err != nil {
				t.Fatal(err)
			}
			if err := parallel(other...); err != nil {
				t.Fatal(err)
			}
		})
	}
}
