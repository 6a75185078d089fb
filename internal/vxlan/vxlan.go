// Package vxlan is the VTEP of the dataplane (RFC 7348).
//
// The underlay is the kernel's UDP stack: Encap prepends only the 8-byte
// VXLAN header to an inner frame (the kernel adds UDP and IP), and Decap
// validates and strips it from a received datagram, reporting why it
// refused one (DropReason). PutOuter writes the outer Ethernet, IP and UDP
// headers the kernel would, so that the dataplane can trace the underlay
// side as complete Ethernet frames.
//
// FDB maps the MACs behind each remote VTEP, learned from received
// datagrams; MulticastGroup gives a VNI's group for broadcast, unknown
// unicast and multicast (BUM) traffic, as the original Butterfly numbers
// them; InnerMTU gives the largest inner IP packet an underlay MTU
// carries.
package vxlan

import (
	"encoding/binary"
	"net/netip"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// Protocol constants.
const (
	// Port is the IANA VXLAN UDP port.
	Port = 4789
	// HeaderLen is the VXLAN header length.
	HeaderLen = 8
	// FlagI is the "VNI valid" flag, the only flag RFC 7348 defines.
	FlagI = 0x08
	// MaxVNI is the largest 24-bit VNI.
	MaxVNI = 1<<24 - 1
	// OverheadIPv4 and OverheadIPv6 are what encapsulation adds to an
	// inner IP packet: inner Ethernet 14 + VXLAN 8 + UDP 8 + outer IP
	// 20 or 40 bytes. An inner IP MTU of underlay MTU minus this fits.
	OverheadIPv4 = 50
	OverheadIPv6 = 70
	// MinInnerLen is the shortest inner frame accepted: an Ethernet
	// header.
	MinInnerLen = packet.EthernetLen
)

// Header is a view of a VXLAN header. Accessors need len >= HeaderLen.
type Header []byte

// VNI returns the 24-bit VNI.
func (h Header) VNI() uint32 { return binary.BigEndian.Uint32(h[4:8]) >> 8 }

// IsValid reports whether h is complete, has the I flag and all
// reserved bits (the other flags, bytes 1-3 and the last byte) zero.
func (h Header) IsValid() bool {
	return len(h) >= HeaderLen && binary.BigEndian.Uint32(h[0:4]) == FlagI<<24 && h[7] == 0
}

// Encode writes a header with the I flag and vni.
func (h Header) Encode(vni uint32) {
	binary.BigEndian.PutUint32(h[0:4], FlagI<<24)
	binary.BigEndian.PutUint32(h[4:8], vni<<8)
}

// Encap prepends a VXLAN header for vni to b's frame, in b's headroom.
// It returns false if the headroom is exhausted. The result is the UDP
// payload for the underlay socket (set b.Peer to the remote VTEP).
func Encap(b *packet.Buf, vni uint32) bool {
	h := b.Prepend(HeaderLen)
	if h == nil {
		return false
	}
	Header(h).Encode(vni)
	return true
}

// DropReason says why Decap rejected a datagram.
type DropReason uint8

// Decap drop reasons.
const (
	DropNone DropReason = iota
	// DropShort: shorter than a VXLAN header.
	DropShort
	// DropBadFlags: I flag clear or a reserved bit set.
	DropBadFlags
	// DropUnknownVNI: no such VNI on this host.
	DropUnknownVNI
	// DropShortInner: the inner frame is shorter than an Ethernet header.
	DropShortInner
	// DropUnknownSource: the datagram comes from an address that is not a
	// known VTEP (a cluster node, or a --vxlan-peers address); the
	// dataplane checks it, not Decap.
	DropUnknownSource
	// NumDropReasons is one more than the largest DropReason, for sizing
	// counter arrays.
	NumDropReasons
)

var dropNames = [NumDropReasons]string{"none", "short", "bad_flags", "unknown_vni", "short_inner", "unknown_source"}

// String returns a short name usable as a counter label.
func (r DropReason) String() string {
	if r < NumDropReasons {
		return dropNames[r]
	}
	return "unknown"
}

// Decap validates the VXLAN header at the front of b (a UDP payload from
// the underlay), checks the VNI with known (nil accepts any), and strips
// the header so that b holds the inner frame. On a drop b is unchanged.
func Decap(b *packet.Buf, known func(vni uint32) bool) (vni uint32, r DropReason) {
	p := b.Bytes()
	if len(p) < HeaderLen {
		return 0, DropShort
	}
	h := Header(p)
	if !h.IsValid() {
		return 0, DropBadFlags
	}
	vni = h.VNI()
	if known != nil && !known(vni) {
		return vni, DropUnknownVNI
	}
	if len(p)-HeaderLen < MinInnerLen {
		return vni, DropShortInner
	}
	b.TrimFront(HeaderLen)
	return vni, DropNone
}

// MulticastGroup4 returns the IPv4 group of vni: 230.<vni bytes>
// (VNI 42 -> 230.0.0.42, 1337 -> 230.0.5.57), as the original Butterfly.
func MulticastGroup4(vni uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{230, byte(vni >> 16), byte(vni >> 8), byte(vni)})
}

// MulticastGroup6 returns the IPv6 group of vni: ff00:: with the VNI as a
// big-endian 32-bit value in the last four bytes (VNI 42 -> ff00::2a).
func MulticastGroup6(vni uint32) netip.Addr {
	var a [16]byte
	a[0] = 0xff
	binary.BigEndian.PutUint32(a[12:], vni)
	return netip.AddrFrom16(a)
}

// MulticastGroup returns the group of vni in the family of the local
// VTEP (v6 true for an IPv6 underlay).
func MulticastGroup(vni uint32, v6 bool) netip.Addr {
	if v6 {
		return MulticastGroup6(vni)
	}
	return MulticastGroup4(vni)
}

// MulticastMAC returns the Ethernet address of an IPv4 (01:00:5e + low
// 23 bits) or IPv6 (33:33 + last 4 bytes) multicast group.
func MulticastMAC(group netip.Addr) packet.MAC {
	if group.Is4() {
		a := group.As4()
		return packet.MAC{0x01, 0x00, 0x5e, a[1] & 0x7f, a[2], a[3]}
	}
	a := group.As16()
	return packet.MAC{0x33, 0x33, a[12], a[13], a[14], a[15]}
}

// Overhead returns OverheadIPv4 or OverheadIPv6.
func Overhead(v6 bool) int {
	if v6 {
		return OverheadIPv6
	}
	return OverheadIPv4
}

// InnerMTU returns the largest inner IP packet that fits an underlay of
// IP MTU underlayMTU once encapsulated.
func InnerMTU(underlayMTU int, v6 bool) int { return underlayMTU - Overhead(v6) }
