package vxlan_test

import (
	"net/netip"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/vxlan"
)

// encapFull prepends the VXLAN header for vni and the outer headers o to
// b's frame (Encap, then PutOuter in the headroom), giving a complete
// underlay Ethernet frame. It returns false and leaves b unchanged if the
// headroom is too small or o is inconsistent.
func encapFull(b *packet.Buf, vni uint32, o *vxlan.Outer) bool {
	if !vxlan.Encap(b, vni) {
		return false
	}
	n, hl := b.Len(), vxlan.OuterLen(o.Dst.Addr().Is6())
	if b.Prepend(hl) == nil {
		b.TrimFront(vxlan.HeaderLen)
		return false
	}
	if vxlan.PutOuter(b.Bytes(), o, n) == 0 {
		b.TrimFront(hl + vxlan.HeaderLen)
		return false
	}
	return true
}

// parseOuter decodes an underlay Ethernet frame: IPv4 or IPv6 carrying
// UDP. It returns the endpoints and the UDP payload; ok is false for
// anything else, a truncated frame, or a non-zero UDP checksum that does
// not verify. The tests check PutOuter's frames with it.
func parseOuter(frame []byte) (src, dst netip.AddrPort, payload []byte, ok bool) {
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
