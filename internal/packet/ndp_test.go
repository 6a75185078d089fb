package packet_test

import (
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// TestBuildNeighborAdvert checks the NA against gopacket's decoder,
// checksum included.
func TestBuildNeighborAdvert(t *testing.T) {
	mac, to := packet.MAC{2, 0, 0, 0, 0, 9}, packet.MAC{2, 0, 0, 0, 0, 1}
	target, toIP := netip.MustParseAddr("fd00::9"), netip.MustParseAddr("fd00::1")
	buf := make([]byte, 200)
	n, err := packet.BuildNeighborAdvert(buf, mac, to, target, toIP)
	if err != nil || n != packet.NeighborAdvertLen {
		t.Fatalf("BuildNeighborAdvert = %d, %v", n, err)
	}
	p := gopacket.NewPacket(buf[:n], layers.LayerTypeEthernet, gopacket.Default)
	eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip, _ := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	ic, _ := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	na, _ := p.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement)
	if eth == nil || ip == nil || ic == nil || na == nil {
		t.Fatalf("not an NA: %v", p)
	}
	if eth.SrcMAC.String() != net.HardwareAddr(mac[:]).String() || eth.DstMAC.String() != net.HardwareAddr(to[:]).String() {
		t.Errorf("MACs %v > %v", eth.SrcMAC, eth.DstMAC)
	}
	if ip.HopLimit != 255 || !ip.SrcIP.Equal(target.AsSlice()) || !ip.DstIP.Equal(toIP.AsSlice()) {
		t.Errorf("IPv6 %v > %v hop %d", ip.SrcIP, ip.DstIP, ip.HopLimit)
	}
	if !na.TargetAddress.Equal(target.AsSlice()) || !na.Solicited() || !na.Override() || na.Router() {
		t.Errorf("NA target %v flags %x", na.TargetAddress, na.Flags)
	}
	if len(na.Options) != 1 || na.Options[0].Type != layers.ICMPv6OptTargetAddress || net.HardwareAddr(na.Options[0].Data).String() != net.HardwareAddr(mac[:]).String() {
		t.Errorf("options %v", na.Options)
	}
	// The checksum verifies: gopacket recomputes it the same way.
	want := ic.Checksum
	ic.SetNetworkLayerForChecksum(ip)
	sb := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(sb, gopacket.SerializeOptions{ComputeChecksums: true}, ic, gopacket.Payload(ic.Payload)); err != nil {
		t.Fatal(err)
	}
	if got := sb.Bytes(); uint16(got[2])<<8|uint16(got[3]) != want {
		t.Errorf("checksum %04x, gopacket computes %02x%02x", want, got[2], got[3])
	}
	if _, err := packet.BuildNeighborAdvert(buf[:50], mac, to, target, toIP); err == nil {
		t.Error("short buffer accepted")
	}
}
