package e2e

import (
	"fmt"
	"testing"
)

// TestFiftyNICsTenVNIs: 50 vNICs in 10 VNIs (5 each) over two hosts, all in
// one IP subnet. Every vNIC reaches the next vNIC of its VNI (the ring
// covers same-host and cross-host pairs) and reaches none of a sample of
// vNICs of other VNIs.
func TestFiftyNICsTenVNIs(t *testing.T) {
	const nics, vnis = 50, 10
	l := newLab(t)
	h1, h2 := l.openHostPair(ipv4, daemonOpts{})
	vms := make([]*vm, nics)
	vni := func(k int) uint32 { return uint32(100 + k%vnis) }
	for k := range nics {
		h := h1
		if k >= nics/2 {
			h = h2
		}
		vms[k] = h.addVM(nicSpec{id: fmt.Sprintf("n%d", k), mac: macFor(0x1000 + k), vni: vni(k),
			addrs: []string{fmt.Sprintf("42.0.0.%d/24", k+1)}, sgs: []string{"sg-open"}})
	}
	for _, h := range []*host{h1, h2} {
		if got := len(h.nicList(t)); got != nics/2 {
			t.Fatalf("%s lists %d vNICs, want %d", h.name, got, nics/2)
		}
	}
	var reach, isolated []func() error
	for k, a := range vms {
		b := vms[(k+vnis)%nics] // next member of the same VNI
		reach = append(reach, func() error { return a.reach(b.ip(0)) })
		if k%5 == 0 {
			c := vms[(k+1)%nics] // a different VNI, same subnet
			isolated = append(isolated, func() error { return a.blockedFrom(c.ip(0)) })
		}
	}
	if err := parallel(reach...); err != nil {
		t.Fatal(err)
	}
	if err := parallel(isolated...); err != nil {
		t.Fatal(err)
	}
}
