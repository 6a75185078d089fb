package antispoof_test

import (
	"net/netip"
	"testing"

	"github.com/butterfly-go/butterfly/internal/antispoof"
	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/packet/packettest"
)

// FuzzCheck: no panic on any frame; the strict checker never passes
// what the MAC-only one refuses; nothing from another MAC passes.
func FuzzCheck(f *testing.F) {
	f.Add(packettest.UDP(f, flow(vm4, peer4, 1, 2), nil))
	f.Add(packettest.ICMPv6(f, flow(vmLL, allNodes, 0, 0), packet.ICMPv6NeighborAdvert, 0,
		packettest.NDPBody(0x20, vm6, packettest.NDPOpt{Type: packet.NDPOptTargetLinkAddr, MAC: vmMAC})))
	ips := []netip.Addr{vm4, vm6}
	strict := antispoof.NewConfig(vmMAC, ips, true)
	loose := antispoof.NewConfig(vmMAC, ips, false)
	f.Fuzz(func(t *testing.T, fr []byte) {
		s, l := strict.Check(fr), loose.Check(fr)
		if s == antispoof.OK && l != antispoof.OK {
			t.Fatalf("strict OK, loose %v", l)
		}
		if len(fr) >= 14 && packet.Ethernet(fr).Src() != vmMAC && s == antispoof.OK {
			t.Fatal("foreign MAC passed")
		}
	})
}
