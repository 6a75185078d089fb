// Package packettest builds and checks test frames with gopacket, the
// independent oracle of the dataplane's packet code. It is for tests
// only.
package packettest

import (
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// MustMAC parses a MAC or panics.
func MustMAC(s string) packet.MAC {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		panic("packettest: bad MAC " + s)
	}
	return packet.MAC(hw)
}

// Flow is the addressing of a test frame. The IP family follows Src.
type Flow struct {
	SrcMAC, DstMAC   packet.MAC
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
}

// TCPSeg is the TCP part of a test frame.
type TCPSeg struct {
	Seq, Ack uint32
	// Flags is a packet.TCPFlag* mask.
	Flags   uint8
	Window  uint16
	Options []layers.TCPOption
	Payload []byte
}

// Serialize serializes layers with lengths and checksums computed.
func Serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// Eth returns the Ethernet layer of f with EtherType typ.
func (f Flow) Eth(typ layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: net.HardwareAddr(f.SrcMAC[:]), DstMAC: net.HardwareAddr(f.DstMAC[:]), EthernetType: typ}
}

// IP returns the Ethernet and IP layers of f for protocol proto; the
// network layer is returned separately for checksums.
func (f Flow) IP(proto layers.IPProtocol) (*layers.Ethernet, gopacket.NetworkLayer, gopacket.SerializableLayer) {
	if f.Src.Is4() {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: 0x1234, Flags: layers.IPv4DontFragment, Protocol: proto,
			SrcIP: f.Src.AsSlice(), DstIP: f.Dst.AsSlice()}
		return f.Eth(layers.EthernetTypeIPv4), ip, ip
	}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: f.Src.AsSlice(), DstIP: f.Dst.AsSlice()}
	return f.Eth(layers.EthernetTypeIPv6), ip, ip
}

// TCP builds an Ethernet/IP/TCP frame.
func TCP(t testing.TB, f Flow, s TCPSeg) []byte {
	t.Helper()
	eth, nl, ipl := f.IP(layers.IPProtocolTCP)
	tcp := &layers.TCP{SrcPort: layers.TCPPort(f.SrcPort), DstPort: layers.TCPPort(f.DstPort), Seq: s.Seq, Ack: s.Ack,
		Window: s.Window, Options: s.Options,
		FIN: s.Flags&packet.TCPFlagFIN != 0, SYN: s.Flags&packet.TCPFlagSYN != 0, RST: s.Flags&packet.TCPFlagRST != 0,
		PSH: s.Flags&packet.TCPFlagPSH != 0, ACK: s.Flags&packet.TCPFlagACK != 0, URG: s.Flags&packet.TCPFlagURG != 0,
		ECE: s.Flags&packet.TCPFlagECE != 0, CWR: s.Flags&packet.TCPFlagCWR != 0}
	if err := tcp.SetNetworkLayerForChecksum(nl); err != nil {
		t.Fatal(err)
	}
	return Serialize(t, eth, ipl, tcp, gopacket.Payload(s.Payload))
}

// UDP builds an Ethernet/IP/UDP frame.
func UDP(t testing.TB, f Flow, payload []byte) []byte {
	t.Helper()
	eth, nl, ipl := f.IP(layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(f.SrcPort), DstPort: layers.UDPPort(f.DstPort)}
	if err := udp.SetNetworkLayerForChecksum(nl); err != nil {
		t.Fatal(err)
	}
	return Serialize(t, eth, ipl, udp, gopacket.Payload(payload))
}

// ICMPv4Echo builds an Ethernet/IPv4/ICMP echo request.
func ICMPv4Echo(t testing.TB, f Flow, id, seq uint16, payload []byte) []byte {
	t.Helper()
	eth, _, ipl := f.IP(layers.IPProtocolICMPv4)
	ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: id, Seq: seq}
	return Serialize(t, eth, ipl, ic, gopacket.Payload(payload))
}

// ICMPv6 builds an Ethernet/IPv6/ICMPv6 frame with the given type and
// message body (after the 4-byte ICMPv6 header).
func ICMPv6(t testing.TB, f Flow, typ, code uint8, body []byte) []byte {
	t.Helper()
	eth, nl, ipl := f.IP(layers.IPProtocolICMPv6)
	ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, code)}
	if err := ic.SetNetworkLayerForChecksum(nl); err != nil {
		t.Fatal(err)
	}
	return Serialize(t, eth, ipl, ic, gopacket.Payload(body))
}

// NDPBody returns the body of an NS (flags 0) or NA: 4 bytes of flags
// and reserved, the target, then options as (type, MAC) link-layer
// address options.
func NDPBody(flags uint8, target netip.Addr, opts ...NDPOpt) []byte {
	b := make([]byte, 4, 64)
	b[0] = flags
	tg := target.As16()
	b = append(b, tg[:]...)
	for _, o := range opts {
		b = append(b, o.Type, 1)
		b = append(b, o.MAC[:]...)
	}
	return b
}

// NDPOpt is a link-layer address option.
type NDPOpt struct {
	Type uint8
	MAC  packet.MAC
}

// ARP builds an Ethernet/ARP frame (EtherType typ: ARP or RARP).
func ARP(t testing.TB, typ layers.EthernetType, src, dst packet.MAC, op uint16, sha packet.MAC, spa netip.Addr, tha packet.MAC, tpa netip.Addr) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(src[:]), DstMAC: net.HardwareAddr(dst[:]), EthernetType: typ}
	a := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: op, SourceHwAddress: net.HardwareAddr(sha[:]), SourceProtAddress: spa.AsSlice(),
		DstHwAddress: net.HardwareAddr(tha[:]), DstProtAddress: tpa.AsSlice()}
	return Serialize(t, eth, a)
}

// Decode decodes an Ethernet frame.
func Decode(frame []byte) gopacket.Packet {
	return gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
}

// VerifyChecksums checks, with gopacket, the IPv4 header checksum and the
// TCP, UDP (when not zero), ICMPv4 and ICMPv6 checksums of p.
func VerifyChecksums(t testing.TB, p gopacket.Packet) {
	t.Helper()
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("decode error: %v", el.Error())
	}
	nl := p.NetworkLayer()
	type verifier interface {
		VerifyChecksum() (error, gopacket.ChecksumVerificationResult)
	}
	check := func(name string, v verifier) {
		t.Helper()
		err, r := v.VerifyChecksum()
		if err != nil {
			t.Fatalf("%s checksum: %v", name, err)
		}
		if !r.Valid {
			t.Fatalf("%s checksum 0x%04x, want 0x%04x", name, r.Actual, r.Correct)
		}
	}
	if ip, ok := nl.(*layers.IPv4); ok {
		check("IPv4", ip)
	}
	if l, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
		if err := l.SetNetworkLayerForChecksum(nl); err != nil {
			t.Fatal(err)
		}
		check("TCP", l)
	}
	if l, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok && l.Checksum != 0 {
		if err := l.SetNetworkLayerForChecksum(nl); err != nil {
			t.Fatal(err)
		}
		check("UDP", l)
	}
	if l, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok {
		check("ICMPv4", l)
	}
	if l, ok := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6); ok {
		if err := l.SetNetworkLayerForChecksum(nl); err != nil {
			t.Fatal(err)
		}
		check("ICMPv6", l)
	}
}

// Load copies frame into a fresh packet.Buf.
func Load(frame []byte) *packet.Buf {
	b := packet.NewBuf()
	n := copy(b.Space(), frame)
	b.SetLen(n)
	return b
}
