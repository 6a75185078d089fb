package vxlan

import (
	"net/netip"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// Outer describes the outer headers of an underlay frame, for PutOuter,
// which the dataplane uses to trace the underlay side as Ethernet frames.
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
