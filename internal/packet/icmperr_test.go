package packet_test

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/packet/packettest"
)

func TestICMPv4FragNeeded(t *testing.T) {
	tests := []struct {
		name      string
		payload   int
		wantQuote int
	}{
		{"large packet quoted to 576", 1472, 576 - 28},
		{"small packet quoted whole", 10, 20 + 8 + 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := packettest.UDP(t, f4, pattern(tt.payload))
			dst := make([]byte, 2000)
			n, err := packet.BuildICMPv4FragNeeded(dst, orig, 1450)
			if err != nil {
				t.Fatal(err)
			}
			p := packettest.Decode(dst[:n])
			packettest.VerifyChecksums(t, p)
			eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			ic := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
			if !bytes.Equal(eth.DstMAC, macA[:]) || !bytes.Equal(eth.SrcMAC, macB[:]) {
				t.Fatalf("MACs not swapped: %v -> %v", eth.SrcMAC, eth.DstMAC)
			}
			if !ip.SrcIP.Equal(ip4B.AsSlice()) || !ip.DstIP.Equal(ip4A.AsSlice()) || ip.Protocol != layers.IPProtocolICMPv4 || ip.TTL != 64 {
				t.Fatalf("IP header %v -> %v proto %v ttl %d", ip.SrcIP, ip.DstIP, ip.Protocol, ip.TTL)
			}
			if int(ip.Length) > 576 || int(ip.Length) != n-14 {
				t.Fatalf("IP length %d, frame %d", ip.Length, n)
			}
			if ic.TypeCode.Type() != layers.ICMPv4TypeDestinationUnreachable || ic.TypeCode.Code() != layers.ICMPv4CodeFragmentationNeeded {
				t.Fatalf("type/code %v", ic.TypeCode)
			}
			if mtu := packet.ICMPv4(dst[34:n]).MTU(); mtu != 1450 {
				t.Fatalf("next-hop MTU %d", mtu)
			}
			quote := dst[14+20+8 : n]
			if len(quote) != tt.wantQuote || !bytes.Equal(quote, orig[14:14+len(quote)]) {
				t.Fatalf("quote of %d bytes, want %d bytes of the original IP packet", len(quote), tt.wantQuote)
			}
		})
	}
}

func TestICMPv6PacketTooBig(t *testing.T) {
	tests := []struct {
		name      string
		payload   int
		wantQuote int
	}{
		{"large packet quoted to 1280", 1452, 1280 - 48},
		{"small packet quoted whole", 10, 40 + 32 + 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := packettest.TCP(t, f6, packettest.TCPSeg{Seq: 5, Flags: packet.TCPFlagACK, Options: tsOpts, Payload: pattern(tt.payload)})
			dst := make([]byte, 2000)
			n, err := packet.BuildICMPv6PacketTooBig(dst, orig, 1430)
			if err != nil {
				t.Fatal(err)
			}
			p := packettest.Decode(dst[:n])
			packettest.VerifyChecksums(t, p)
			eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
			ic := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
			if !bytes.Equal(eth.DstMAC, macA[:]) || !bytes.Equal(eth.SrcMAC, macB[:]) {
				t.Fatalf("MACs not swapped")
			}
			if !ip.SrcIP.Equal(ip6B.AsSlice()) || !ip.DstIP.Equal(ip6A.AsSlice()) || ip.NextHeader != layers.IPProtocolICMPv6 {
				t.Fatalf("IP header %v -> %v next %v", ip.SrcIP, ip.DstIP, ip.NextHeader)
			}
			if n-14 > 1280 || int(ip.Length) != n-54 {
				t.Fatalf("IP packet %d bytes, payload length %d", n-14, ip.Length)
			}
			if ic.TypeCode.Type() != layers.ICMPv6TypePacketTooBig || packet.ICMPv6(dst[54:n]).MTU() != 1430 {
				t.Fatalf("type %v MTU %d", ic.TypeCode, packet.ICMPv6(dst[54:n]).MTU())
			}
			quote := dst[54+8 : n]
			if len(quote) != tt.wantQuote || !bytes.Equal(quote, orig[14:14+len(quote)]) {
				t.Fatalf("quote of %d bytes, want %d", len(quote), tt.wantQuote)
			}
		})
	}
}

func TestICMPErrorSuppressed(t *testing.T) {
	dst := make([]byte, 2000)
	fr, _ := func() ([]byte, error) {
		b := make([]byte, 2000)
		n, err := packet.BuildICMPv4FragNeeded(b, packettest.UDP(t, f4, pattern(100)), 1400)
		return b[:n], err
	}()
	bcast := f4
	bcast.Dst = netip.MustParseAddr("255.255.255.255")
	zeroSrc := f4
	zeroSrc.Src = netip.MustParseAddr("0.0.0.0")
	mcastSrc6 := f6
	mcastSrc6.Src = netip.MustParseAddr("ff02::1")
	mcastDst6 := f6
	mcastDst6.Dst = netip.MustParseAddr("ff02::1")
	laterFrag := packettest.UDP(t, f4, pattern(100))
	packet.IPv4(laterFrag[14:]).SetFlagsFrag(10)
	packet.IPv4(laterFrag[14:]).UpdateChecksum()
	v4 := []struct {
		name string
		fr   []byte
		want error
	}{
		{"icmp error", fr, packet.ErrNoICMPError},
		{"broadcast dst", packettest.UDP(t, bcast, pattern(10)), packet.ErrNoICMPError},
		{"unspecified src", packettest.UDP(t, zeroSrc, pattern(10)), packet.ErrNoICMPError},
		{"later fragment", laterFrag, packet.ErrNoICMPError},
		{"ipv6 frame", packettest.UDP(t, f6, pattern(10)), packet.ErrICMPBadOrig},
		{"runt", []byte{1, 2, 3}, packet.ErrICMPBadOrig},
	}
	for _, tt := range v4 {
		if _, err := packet.BuildICMPv4FragNeeded(dst, tt.fr, 1400); !errors.Is(err, tt.want) {
			t.Errorf("v4 %s: err %v, want %v", tt.name, err, tt.want)
		}
	}
	if _, err := packet.BuildICMPv4FragNeeded(dst, packettest.ICMPv4Echo(t, f4, 1, 1, nil), 1400); err != nil {
		t.Errorf("echo request: %v", err)
	}
	if _, err := packet.BuildICMPv4FragNeeded(dst[:100], packettest.UDP(t, f4, pattern(1000)), 1400); !errors.Is(err, packet.ErrICMPDstSize) {
		t.Errorf("small dst: %v", err)
	}
	ptb := make([]byte, 2000)
	n, err := packet.BuildICMPv6PacketTooBig(ptb, packettest.UDP(t, f6, pattern(10)), 1280)
	if err != nil {
		t.Fatal(err)
	}
	v6 := []struct {
		name string
		fr   []byte
	}{
		{"icmpv6 error", ptb[:n]},
		{"multicast src", packettest.UDP(t, mcastSrc6, pattern(10))},
		{"multicast dst", packettest.UDP(t, mcastDst6, pattern(10))},
	}
	for _, tt := range v6 {
		if _, err := packet.BuildICMPv6PacketTooBig(dst, tt.fr, 1280); !errors.Is(err, packet.ErrNoICMPError) {
			t.Errorf("v6 %s: err %v", tt.name, err)
		}
	}
}

func TestFlowHash(t *testing.T) {
	a := packettest.TCP(t, f4, packettest.TCPSeg{Seq: 1, Payload: []byte("a")})
	a2 := packettest.TCP(t, f4, packettest.TCPSeg{Seq: 99, Payload: pattern(500)})
	other := f4
	other.SrcPort++
	b := packettest.TCP(t, other, packettest.TCPSeg{Seq: 1})
	if packet.FlowHash(a) != packet.FlowHash(a2) {
		t.Fatal("same flow, different hash")
	}
	// Over many source ports the hash must spread (not a constant).
	seen := map[uint32]bool{}
	for p := uint16(1000); p < 1064; p++ {
		f := f4
		f.SrcPort = p
		seen[packet.FlowHash(packettest.UDP(t, f, nil))&0x3fff] = true
	}
	if len(seen) < 60 {
		t.Fatalf("64 flows gave %d distinct hashes", len(seen))
	}
	if packet.FlowHash(a) == packet.FlowHash(b) {
		t.Fatal("different ports, same hash")
	}
	v6a := packettest.UDP(t, f6, nil)
	f6b := f6
	f6b.Dst = netip.MustParseAddr("2001:db8::3")
	if packet.FlowHash(v6a) == packet.FlowHash(packettest.UDP(t, f6b, nil)) {
		t.Fatal("different IPv6 destinations, same hash")
	}
	arp := packettest.ARP(t, layers.EthernetTypeARP, macA, packet.BroadcastMAC, 1, macA, ip4A, packet.MAC{}, ip4B)
	arp2 := packettest.ARP(t, layers.EthernetTypeARP, macB, packet.BroadcastMAC, 1, macB, ip4B, packet.MAC{}, ip4A)
	if packet.FlowHash(arp) == packet.FlowHash(arp2) {
		t.Fatal("different MACs, same hash")
	}
}
