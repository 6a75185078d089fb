package vxlan

import (
	"net/netip"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// Outer describes the outer headers of an underlay frame, for the full
// encoder used by tests and by traces of the underlay side.
type Outer struct {
	// SrcMAC and DstMAC are the outer MACs; a zero DstMAC to a multicast
	// group becomes the group's MAC.
	SrcMAC, DstMAC packet.MAC
	// Src and Dst are the outer IP endpoints (same family). A zero Src
	// port means Port.
	Src, Dst netip.AddrPort
	// TTL is the IPv4 TTL or IPv6 hop limit (0 means 64).
	TTL uint8
	// ID is the IPv4 identification.
	ID uint16
}

// OuterLen returns the length of the outer Ethernet, IP and UDP headers
// (without the VXLAN header).
func OuterLen(v6 bool) int {
	if v6 {
		return packet.EthernetLen + packet.IPv6Len + packet.UDPLen
	}
	return packet.EthernetLen + packet.IPv4MinLen + packet.UDPLen
}

// PutOuter writes into dst the outer Ethernet, IP and UDP headers for a
// UDP payload of payloadLen bytes that follows them in dst (VXLAN header
// and inner frame), and returns the header length; 0 if dst is too
// short, the families differ or the datagram is too long. The UDP
// checksum is computed for IPv6 (RFC 8200 requires it outside tunnels
// that opted out) and left zero for IPv4, as RFC 7348 recommends.
func PutOuter(dst []byte, o *Outer, payloadLen int) int {
	v6 := o.Dst.Addr().Is6()
	if o.Src.Addr().Is6() != v6 {
		return 0
	}
	hl := OuterLen(v6)
	udpLen := packet.UDPLen + payloadLen
	if len(dst) < hl+payloadLen || udpLen > 0xffff-packet.IPv6Len {
		return 0
	}
	e := packet.Ethernet(dst)
	dmac := o.DstMAC
	if dmac.IsZero() && o.Dst.Addr().IsMulticast() {
		dmac = MulticastMAC(o.Dst.Addr())
	}
	e.SetDst(dmac)
	e.SetSrc(o.SrcMAC)
	ttl := o.TTL
	if ttl == 0 {
		ttl = 64
	}
	sport := o.Src.Port()
	if sport == 0 {
		sport = Port
	}
	var u packet.UDP
	if v6 {
		e.SetType(packet.EtherTypeIPv6)
		ip := packet.IPv6(dst[packet.EthernetLen:])
		ip.Encode(0, 0, uint16(udpLen), packet.ProtoUDP, ttl, o.Src.Addr(), o.Dst.Addr())
		u = packet.UDP(dst[packet.EthernetLen+packet.IPv6Len : hl+payloadLen])
		u.Encode(sport, o.Dst.Port(), uint16(udpLen), 0)
		ps := packet.PseudoHeaderChecksum(packet.ProtoUDP, ip.SrcBytes(), ip.DstBytes(), uint32(udpLen))
		c := ^packet.Checksum(u, ps)
		if c == 0 {
			c = 0xffff
		}
		u.SetChecksum(c)
	} else {
		e.SetType(packet.EtherTypeIPv4)
		ip := packet.IPv4(dst[packet.EthernetLen:])
		ip.Encode(0, uint16(packet.IPv4MinLen+udpLen), o.ID, 0, ttl, packet.ProtoUDP, o.Src.Addr(), o.Dst.Addr())
		u = packet.UDP(dst[packet.EthernetLen+packet.IPv4MinLen:])
		u.Encode(sport, o.Dst.Port(), uint16(udpLen), 0)
	}
	return hl
}

// EncapFull prepends the VXLAN header for vni and the outer headers o to
// b's frame, giving a complete underlay Ethernet frame. It returns false
// if the headroom is too small or o is inconsistent (b is then
// unchanged).
func EncapFull(b *packet.Buf, vni uint32, o *Outer) bool {
	if !Encap(b, vni) {
		return false
	}
	if !PrependOuter(b, o) {
		b.TrimFront(HeaderLen)
		return false
	}
	return true
}

// PrependOuter prepends outer headers o to b, which holds a UDP payload
// (VXLAN header and inner frame) such as the underlay socket sends; used
// to trace the underlay side as Ethernet frames. Undo with
// b.TrimFront(OuterLen(v6)).
func PrependOuter(b *packet.Buf, o *Outer) bool {
	v6 := o.Dst.Addr().Is6()
	n := b.Len()
	h := b.Prepend(OuterLen(v6))
	if h == nil {
		return false
	}
	if PutOuter(b.Bytes(), o, n) == 0 {
		b.TrimFront(OuterLen(v6))
		return false
	}
	return true
}

// ParseOuter decodes an underlay Ethernet frame: IPv4 or IPv6 carrying
// UDP. It returns the endpoints and the UDP payload; ok is false for
// anything else, a truncated frame, or a non-zero UDP checksum that does
// not verify.
func ParseOuter(frame []byte) (src, dst netip.AddrPort, payload []byte, ok bool) {
	var l packet.Layers
	if !packet.Parse(frame, &l) || l.Proto != packet.ProtoUDP || l.L4 == 0 || l.Fragment {
		return src, dst, nil, false
	}
	u := packet.UDP(frame[l.L4:l.L3End])
	if !u.IsValid() || l.L4+int(u.Length()) != l.L3End {
		return src, dst, nil, false
	}
	var s, d netip.Addr
	var sb, db []byte
	if l.IsIPv4() {
		ip := packet.IPv4(frame[l.L3:])
		s, d, sb, db = ip.Src(), ip.Dst(), ip.SrcBytes(), ip.DstBytes()
	} else {
		ip := packet.IPv6(frame[l.L3:])
		s, d, sb, db = ip.Src(), ip.Dst(), ip.SrcBytes(), ip.DstBytes()
	}
	// A zero checksum is accepted for both families (RFC 6935 allows it
	// for IPv6 tunnels).
	if u.Checksum() != 0 {
		ps := packet.PseudoHeaderChecksum(packet.ProtoUDP, sb, db, uint32(u.Length()))
		if packet.Checksum(u[:u.Length()], ps) != 0xffff {
			return src, dst, nil, false
		}
	}
	return netip.AddrPortFrom(s, u.SrcPort()), netip.AddrPortFrom(d, u.DstPort()), u[packet.UDPLen:u.Length()], true
}
