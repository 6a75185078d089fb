package packet

import "encoding/binary"

// MAC is an IEEE 802 MAC-48 address.
type MAC [6]byte

// BroadcastMAC is ff:ff:ff:ff:ff:ff.
var BroadcastMAC = MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// IsMulticast reports whether the group bit is set (broadcast included).
func (m MAC) IsMulticast() bool { return m[0]&1 != 0 }

// IsBroadcast reports whether m is ff:ff:ff:ff:ff:ff.
func (m MAC) IsBroadcast() bool { return m == BroadcastMAC }

// IsZero reports whether m is 00:00:00:00:00:00.
func (m MAC) IsZero() bool { return m == MAC{} }

// IsIEEEReserved reports whether m is one of the IEEE 802.1 reserved
// link-local group addresses 01:80:c2:00:00:00 to 01:80:c2:00:00:0f (STP,
// LACP, LLDP, 802.1X...), which bridges must not forward.
func (m MAC) IsIEEEReserved() bool {
	return m[0] == 0x01 && m[1] == 0x80 && m[2] == 0xc2 && m[3] == 0 && m[4] == 0 && m[5]&0xf0 == 0
}

// Uint64 packs m in the low 48 bits of a uint64 (big-endian order).
func (m MAC) Uint64() uint64 {
	return uint64(m[0])<<40 | uint64(m[1])<<32 | uint64(m[2])<<24 | uint64(m[3])<<16 | uint64(m[4])<<8 | uint64(m[5])
}

// MACFromUint64 is the inverse of MAC.Uint64.
func MACFromUint64(v uint64) MAC {
	return MAC{byte(v >> 40), byte(v >> 32), byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

const hexDigits = "0123456789abcdef"

// String formats m as aa:bb:cc:dd:ee:ff.
func (m MAC) String() string {
	var b [17]byte
	for i, v := range m {
		if i > 0 {
			b[i*3-1] = ':'
		}
		b[i*3] = hexDigits[v>>4]
		b[i*3+1] = hexDigits[v&0xf]
	}
	return string(b[:])
}

// EtherTypes used by the dataplane.
const (
	EtherTypeIPv4  = 0x0800
	EtherTypeARP   = 0x0806
	EtherTypeRARP  = 0x8035
	EtherTypeVLAN  = 0x8100
	EtherTypeQinQ  = 0x88a8
	EtherTypeIPv6  = 0x86dd
	EthernetLen    = 14
	EthernetMinLen = 60 // without FCS
)

// Ethernet is a view of an Ethernet II header (no VLAN tag) and what
// follows. Accessors need len >= EthernetLen; check with IsValid.
type Ethernet []byte

// IsValid reports whether the header is complete.
func (e Ethernet) IsValid() bool { return len(e) >= EthernetLen }

// Dst returns the destination MAC.
func (e Ethernet) Dst() MAC { return MAC(e[0:6]) }

// Src returns the source MAC.
func (e Ethernet) Src() MAC { return MAC(e[6:12]) }

// Type returns the EtherType.
func (e Ethernet) Type() uint16 { return binary.BigEndian.Uint16(e[12:14]) }

// SetDst sets the destination MAC.
func (e Ethernet) SetDst(m MAC) { copy(e[0:6], m[:]) }

// SetSrc sets the source MAC.
func (e Ethernet) SetSrc(m MAC) { copy(e[6:12], m[:]) }

// SetType sets the EtherType.
func (e Ethernet) SetType(t uint16) { binary.BigEndian.PutUint16(e[12:14], t) }

// Payload returns the bytes after the header.
func (e Ethernet) Payload() []byte { return e[EthernetLen:] }
