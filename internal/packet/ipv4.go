package packet

import (
	"encoding/binary"
	"net/netip"
)

// IP protocol numbers.
const (
	ProtoHopByHop = 0
	ProtoICMPv4   = 1
	ProtoIGMP     = 2
	ProtoTCP      = 6
	ProtoUDP      = 17
	ProtoRouting  = 43
	ProtoFragment = 44
	ProtoESP      = 50
	ProtoAH       = 51
	ProtoICMPv6   = 58
	ProtoNoNext   = 59
	ProtoDstOpts  = 60
	ProtoSCTP     = 132
)

// IPv4 header constants.
const (
	IPv4MinLen  = 20
	IPv4MaxLen  = 60
	IPv4FlagDF  = 0x4000
	IPv4FlagMF  = 0x2000
	ipv4OffMask = 0x1fff
	IPv4MinMTU  = 68
	IPv4Version = 4
)

// IPv4 is a view of an IPv4 header and what follows. Accessors need
// len >= IPv4MinLen; check with IsValid.
type IPv4 []byte

// IsValid reports whether b holds a well-formed header: version 4,
// IHL >= 5, the header and TotalLen within b, TotalLen >= the header.
func (b IPv4) IsValid() bool {
	if len(b) < IPv4MinLen || b[0]>>4 != IPv4Version {
		return false
	}
	hl := b.HeaderLen()
	tl := int(b.TotalLen())
	return hl >= IPv4MinLen && hl <= len(b) && tl >= hl && tl <= len(b)
}

// HeaderLen returns the header length in bytes (IHL*4).
func (b IPv4) HeaderLen() int { return int(b[0]&0xf) * 4 }

// TotalLen returns the total length field.
func (b IPv4) TotalLen() uint16 { return binary.BigEndian.Uint16(b[2:4]) }

// ID returns the identification field.
func (b IPv4) ID() uint16 { return binary.BigEndian.Uint16(b[4:6]) }

// FlagsFrag returns the flags and fragment offset field.
func (b IPv4) FlagsFrag() uint16 { return binary.BigEndian.Uint16(b[6:8]) }

// FragOffset returns the fragment offset in bytes.
func (b IPv4) FragOffset() int { return int(b.FlagsFrag()&ipv4OffMask) * 8 }

// DontFragment reports whether DF is set.
func (b IPv4) DontFragment() bool { return b.FlagsFrag()&IPv4FlagDF != 0 }

// IsFragment reports whether the packet is a fragment (MF or offset).
func (b IPv4) IsFragment() bool { return b.FlagsFrag()&(IPv4FlagMF|ipv4OffMask) != 0 }

// Protocol returns the payload protocol.
func (b IPv4) Protocol() uint8 { return b[9] }

// Checksum returns the header checksum field.
func (b IPv4) Checksum() uint16 { return binary.BigEndian.Uint16(b[10:12]) }

// Src returns the source address.
func (b IPv4) Src() netip.Addr { return netip.AddrFrom4([4]byte(b[12:16])) }

// Dst returns the destination address.
func (b IPv4) Dst() netip.Addr { return netip.AddrFrom4([4]byte(b[16:20])) }

// SrcBytes returns the source address bytes (a view).
func (b IPv4) SrcBytes() []byte { return b[12:16] }

// DstBytes returns the destination address bytes (a view).
func (b IPv4) DstBytes() []byte { return b[16:20] }

// SetTotalLen sets the total length.
func (b IPv4) SetTotalLen(v uint16) { binary.BigEndian.PutUint16(b[2:4], v) }

// SetID sets the identification.
func (b IPv4) SetID(v uint16) { binary.BigEndian.PutUint16(b[4:6], v) }

// SetFlagsFrag sets the flags and fragment offset field.
func (b IPv4) SetFlagsFrag(v uint16) { binary.BigEndian.PutUint16(b[6:8], v) }

// SetChecksum sets the header checksum field.
func (b IPv4) SetChecksum(v uint16) { binary.BigEndian.PutUint16(b[10:12], v) }

// SetSrc sets the source address (an IPv4 or IPv4-mapped address).
func (b IPv4) SetSrc(a netip.Addr) { s := a.As4(); copy(b[12:16], s[:]) }

// SetDst sets the destination address (an IPv4 or IPv4-mapped address).
func (b IPv4) SetDst(a netip.Addr) { d := a.As4(); copy(b[16:20], d[:]) }

// CalculateChecksum returns the header checksum, computed with the
// checksum field taken as zero.
func (b IPv4) CalculateChecksum() uint16 {
	hl := b.HeaderLen()
	s := Checksum(b[0:10], 0)
	s = Checksum(b[12:hl], s)
	return ^s
}

// UpdateChecksum recomputes and stores the header checksum.
func (b IPv4) UpdateChecksum() { b.SetChecksum(b.CalculateChecksum()) }

// IsChecksumValid reports whether the header checksum verifies.
func (b IPv4) IsChecksumValid() bool { return Checksum(b[:b.HeaderLen()], 0) == 0xffff }

// Encode writes a 20-byte header (no options) with the given fields
// and its checksum.
func (b IPv4) Encode(tos uint8, totalLen, id, flagsFrag uint16, ttl, proto uint8, src, dst netip.Addr) {
	b[0] = 0x45
	b[1] = tos
	b.SetTotalLen(totalLen)
	b.SetID(id)
	b.SetFlagsFrag(flagsFrag)
	b[8] = ttl
	b[9] = proto
	b.SetSrc(src)
	b.SetDst(dst)
	b.SetChecksum(0)
	b.UpdateChecksum()
}

var ipv4Broadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// ProtoName names the IP protocols Butterfly's tools print by name (tcp,
// udp, icmp, icmpv6, sctp); ok is false for the others.
func ProtoName(p uint8) (name string, ok bool) {
	switch p {
	case ProtoTCP:
		return "tcp", true
	case ProtoUDP:
		return "udp", true
	case ProtoICMPv4:
		return "icmp", true
	case ProtoICMPv6:
		return "icmpv6", true
	case ProtoSCTP:
		return "sctp", true
	}
	return "", false
}
