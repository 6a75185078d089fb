package e2e

import (
	"fmt"
	"testing"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// TestFiftyNICsTenVNIs: 50 vNICs in 10 VNIs (5 each) over two hosts, all in
// one IP subnet. Every vNIC reaches the next vNIC of its VNI (the ring
// covers same-host and cross-host pairs) and reaches none of a sample of
// vNICs of other VNIs.
func TestFiftyNICsTenVNIs(t *testing.T) {
	t.Parallel()
	const nics, vnis = 50, 10
	l := newLab(t)
	h1, h2 := l.OpenHostPair(labtest.IPv4, labtest.DaemonOpts{})
	vms := make([]*labtest.VM, nics)
	vni := func(k int) uint32 { return uint32(100 + k%vnis) }
	for k := range nics {
		h := h1
		if k >= nics/2 {
			h = h2
		}
		vms[k] = h.AddVM(labtest.NICSpec{ID: fmt.Sprintf("n%d", k), MAC: labtest.MACFor(0x1000 + k), VNI: vni(k),
			Addrs: []string{fmt.Sprintf("42.0.0.%d/24", k+1)}, SGs: []string{"sg-open"}})
	}
	for _, h := range []*labtest.Host{h1, h2} {
		if got := len(nicList(h, t)); got != nics/2 {
			t.Fatalf("%s lists %d vNICs, want %d", h.Name, got, nics/2)
		}
	}
	var reach, isolated []func() error
	for k, a := range vms {
		b := vms[(k+vnis)%nics] // next member of the same VNI
		reach = append(reach, func() error { return a.Reach(b.IP(0)) })
		if k%5 == 0 {
			c := vms[(k+1)%nics] // a different VNI, same subnet
			isolated = append(isolated, func() error { return a.BlockedFrom(c.IP(0)) })
		}
	}
	if err := labtest.Parallel(reach...); err != nil {
		t.Fatal(err)
	}
	if err := labtest.Parallel(isolated...); err != nil {
		t.Fatal(err)
	}
}
