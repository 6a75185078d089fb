package antispoof_test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopacket/gopacket/layers"

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

// TestWriteFuzzSeeds regenerates testdata/fuzz when BUTTERFLY_WRITE_SEEDS
// is set; the generated files are committed.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("BUTTERFLY_WRITE_SEEDS") == "" {
		t.Skip("set BUTTERFLY_WRITE_SEEDS=1 to regenerate testdata/fuzz")
	}
	frames := [][]byte{
		packettest.UDP(t, flow(vm4, peer4, 1, 2), nil),
		packettest.UDP(t, packettest.Flow{SrcMAC: vmMAC, DstMAC: packet.BroadcastMAC, Src: zero4, Dst: bcast4, SrcPort: 68, DstPort: 67}, nil),
		packettest.ARP(t, layers.EthernetTypeARP, vmMAC, packet.BroadcastMAC, 1, vmMAC, vm4, packet.MAC{}, peer4),
		packettest.ICMPv6(t, flow(vmLL, allNodes, 0, 0), packet.ICMPv6NeighborAdvert, 0,
			packettest.NDPBody(0x20, vm6, packettest.NDPOpt{Type: packet.NDPOptTargetLinkAddr, MAC: vmMAC})),
		packettest.ICMPv6(t, flow(netip.IPv6Unspecified(), solNode, 0, 0), packet.ICMPv6NeighborSolicit, 0, packettest.NDPBody(0, vm6)),
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzCheck")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, fr := range frames {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%02d", i)), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", fr), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
