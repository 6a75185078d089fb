package packet

import (
	"encoding/binary"
	"net/netip"
)

// IPv6 header constants.
const (
	IPv6Len     = 40
	IPv6MinMTU  = 1280
	IPv6Version = 6
	ipv6FragLen = 8
	// MaxIPv6ExtHeaders bounds the extension headers walked to find the
	// upper-layer header.
	MaxIPv6ExtHeaders = 8
)

// IPv6 is a view of an IPv6 fixed header and what follows. Accessors need
// len >= IPv6Len; check with IsValid.
type IPv6 []byte

// IsValid reports whether b holds a version 6 header whose payload
// length fits in b.
func (b IPv6) IsValid() bool {
	return len(b) >= IPv6Len && b[0]>>4 == IPv6Version && IPv6Len+int(b.PayloadLen()) <= len(b)
}

// PayloadLen returns the payload length field.
func (b IPv6) PayloadLen() uint16 { return binary.BigEndian.Uint16(b[4:6]) }

// HopLimit returns the hop limit.
func (b IPv6) HopLimit() uint8 { return b[7] }

// Src returns the source address.
func (b IPv6) Src() netip.Addr { return netip.AddrFrom16([16]byte(b[8:24])) }

// Dst returns the destination address.
func (b IPv6) Dst() netip.Addr { return netip.AddrFrom16([16]byte(b[24:40])) }

// SrcBytes returns the source address bytes (a view).
func (b IPv6) SrcBytes() []byte { return b[8:24] }

// DstBytes returns the destination address bytes (a view).
func (b IPv6) DstBytes() []byte { return b[24:40] }

// SetPayloadLen sets the payload length.
func (b IPv6) SetPayloadLen(v uint16) { binary.BigEndian.PutUint16(b[4:6], v) }

// SetSrc sets the source address.
func (b IPv6) SetSrc(a netip.Addr) { s := a.As16(); copy(b[8:24], s[:]) }

// SetDst sets the destination address.
func (b IPv6) SetDst(a netip.Addr) { d := a.As16(); copy(b[24:40], d[:]) }

// Encode writes the fixed header.
func (b IPv6) Encode(tc uint8, flow uint32, payloadLen uint16, next, hopLimit uint8, src, dst netip.Addr) {
	binary.BigEndian.PutUint32(b[0:4], 6<<28|uint32(tc)<<20|flow&0xfffff)
	b.SetPayloadLen(payloadLen)
	b[6] = next
	b[7] = hopLimit
	b.SetSrc(src)
	b.SetDst(dst)
}

// IsIPv6ExtHeader reports whether proto is an extension header that
// L4 walks through.
func IsIPv6ExtHeader(proto uint8) bool {
	switch proto {
	case ProtoHopByHop, ProtoRouting, ProtoFragment, ProtoDstOpts, ProtoAH:
		return true
	}
	return false
}

// IPv6Ext describes the extension headers of an IPv6 packet, as
// ExtHeaders found them.
type IPv6Ext struct {
	// Proto is the first header that is not an extension header and Off
	// its offset from the start of the packet. For a non-first fragment,
	// Proto is the fragment header's next header and Off the end of the
	// fragment header: no upper-layer header follows.
	Proto uint8
	Off   int
	// Frag reports a fragment header, at offset FragHdr, with fragment
	// offset FragOff (bytes), identification FragID and next header
	// FragNext.
	Frag     bool
	FragHdr  int
	FragOff  int
	FragID   uint32
	FragNext uint8
	// OK is false if a header extends past the end or the chain is longer
	// than MaxIPv6ExtHeaders.
	OK bool
}

// ExtHeaders walks at most MaxIPv6ExtHeaders extension headers (hop-by-hop,
// routing, fragment, destination options, AH) of b up to end (the end of
// the payload, or less for a truncated packet such as the one an ICMPv6
// error quotes; at most len(b)). b must hold the fixed header. The walk
// stops after the fragment header of a non-first fragment. It is the one
// walker of the packet's headers: L4 and the firewall use it.
func (b IPv6) ExtHeaders(end int) IPv6Ext {
	w := IPv6Ext{Proto: b[6], Off: IPv6Len}
	end = min(end, len(b))
	for i := 0; ; i++ {
		if !IsIPv6ExtHeader(w.Proto) {
			w.OK = true
			return w
		}
		if i == MaxIPv6ExtHeaders || w.Off+8 > end {
			return w
		}
		h := b[w.Off:]
		var hl int
		last := false
		switch w.Proto {
		case ProtoFragment:
			w.Frag, w.FragHdr = true, w.Off
			w.FragOff = int(binary.BigEndian.Uint16(h[2:4]) &^ 7)
			w.FragID = binary.BigEndian.Uint32(h[4:8])
			w.FragNext = h[0]
			hl = ipv6FragLen
			last = w.FragOff != 0
		case ProtoAH:
			hl = (int(h[1]) + 2) * 4
		default:
			hl = (int(h[1]) + 1) * 8
		}
		if w.Off+hl > end {
			return w
		}
		w.Proto = h[0]
		w.Off += hl
		if last {
			w.OK = true
			return w
		}
	}
}

// L4 walks the extension headers (ExtHeaders) within the payload length
// and returns the upper-layer protocol and its offset from the start of
// b. For a non-first fragment it returns ProtoFragment and the offset of
// the fragment header, since no upper-layer header follows; frag reports
// any fragment header. ok is false if the headers are truncated, the
// chain is too long, or b is not a valid IPv6 packet. ESP and "no next
// header" are returned as is.
func (b IPv6) L4() (proto uint8, off int, frag bool, ok bool) {
	if !b.IsValid() {
		return 0, 0, false, false
	}
	w := b.ExtHeaders(IPv6Len + int(b.PayloadLen()))
	switch {
	case !w.OK:
		return 0, 0, w.Frag, false
	case w.Frag && w.FragOff != 0:
		return ProtoFragment, w.FragHdr, true, true
	}
	return w.Proto, w.Off, w.Frag, true
}
