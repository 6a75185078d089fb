package packet

import (
	"encoding/binary"
	"net/netip"
)

// ICMP constants.
const (
	ICMPHeaderLen = 8

	ICMPv4EchoReply      = 0
	ICMPv4DstUnreachable = 3
	ICMPv4SourceQuench   = 4
	ICMPv4Redirect       = 5
	ICMPv4Echo           = 8
	ICMPv4TimeExceeded   = 11
	ICMPv4ParamProblem   = 12
	ICMPv4CodeFragNeeded = 4

	ICMPv6DstUnreachable  = 1
	ICMPv6PacketTooBig    = 2
	ICMPv6TimeExceeded    = 3
	ICMPv6ParamProblem    = 4
	ICMPv6EchoRequest     = 128
	ICMPv6EchoReply       = 129
	ICMPv6MLDQuery        = 130
	ICMPv6MLDReport       = 131
	ICMPv6MLDDone         = 132
	ICMPv6RouterSolicit   = 133
	ICMPv6RouterAdvert    = 134
	ICMPv6NeighborSolicit = 135
	ICMPv6NeighborAdvert  = 136
	ICMPv6Redirect        = 137
	ICMPv6MLDv2Report     = 143

	// NDPNSNALen is the length of an NS or NA message without options.
	NDPNSNALen = 24

	NDPOptSourceLinkAddr = 1
	NDPOptTargetLinkAddr = 2
)

// ICMPv4 is a view of an ICMPv4 message. Accessors need
// len >= ICMPHeaderLen; check with IsValid.
type ICMPv4 []byte

// IsValid reports whether the header is complete.
func (c ICMPv4) IsValid() bool { return len(c) >= ICMPHeaderLen }

// Type returns the message type.
func (c ICMPv4) Type() uint8 { return c[0] }

// Checksum returns the checksum field.
func (c ICMPv4) Checksum() uint16 { return binary.BigEndian.Uint16(c[2:4]) }

// Ident returns the echo identifier.
func (c ICMPv4) Ident() uint16 { return binary.BigEndian.Uint16(c[4:6]) }

// MTU returns the next-hop MTU of a "fragmentation needed" message.
func (c ICMPv4) MTU() uint16 { return binary.BigEndian.Uint16(c[6:8]) }

// Payload returns the bytes after the 8-byte header.
func (c ICMPv4) Payload() []byte { return c[ICMPHeaderLen:] }

// SetChecksum sets the checksum field.
func (c ICMPv4) SetChecksum(v uint16) { binary.BigEndian.PutUint16(c[2:4], v) }

// IsError reports whether the type is an ICMPv4 error message.
func (c ICMPv4) IsError() bool {
	switch c.Type() {
	case ICMPv4DstUnreachable, ICMPv4SourceQuench, ICMPv4Redirect, ICMPv4TimeExceeded, ICMPv4ParamProblem:
		return true
	}
	return false
}

// ICMPv6 is a view of an ICMPv6 message. Accessors need
// len >= ICMPHeaderLen; check with IsValid.
type ICMPv6 []byte

// IsValid reports whether the header is complete.
func (c ICMPv6) IsValid() bool { return len(c) >= ICMPHeaderLen }

// Type returns the message type.
func (c ICMPv6) Type() uint8 { return c[0] }

// Code returns the message code.
func (c ICMPv6) Code() uint8 { return c[1] }

// Checksum returns the checksum field.
func (c ICMPv6) Checksum() uint16 { return binary.BigEndian.Uint16(c[2:4]) }

// MTU returns the MTU of a "packet too big" message.
func (c ICMPv6) MTU() uint32 { return binary.BigEndian.Uint32(c[4:8]) }

// SetType sets the type.
func (c ICMPv6) SetType(v uint8) { c[0] = v }

// SetCode sets the code.
func (c ICMPv6) SetCode(v uint8) { c[1] = v }

// SetChecksum sets the checksum field.
func (c ICMPv6) SetChecksum(v uint16) { binary.BigEndian.PutUint16(c[2:4], v) }

// IsError reports whether the type is an ICMPv6 error message (< 128).
func (c ICMPv6) IsError() bool { return c.Type() < 128 }

// IsNDPNSNA reports whether c is a complete neighbor solicitation or
// advertisement (type 135/136, code 0, at least 24 bytes).
func (c ICMPv6) IsNDPNSNA() bool {
	return len(c) >= NDPNSNALen && (c[0] == ICMPv6NeighborSolicit || c[0] == ICMPv6NeighborAdvert) && c[1] == 0
}

// NAFlags returns the R, S, O flag byte of a neighbor advertisement.
func (c ICMPv6) NAFlags() uint8 { return c[4] }

// NDPTarget returns the target address of an NS or NA (check IsNDPNSNA).
func (c ICMPv6) NDPTarget() netip.Addr { return netip.AddrFrom16([16]byte(c[8:24])) }

// NDPOption returns the value (after the type and length bytes) of the
// first option of type typ of an NS or NA, and whether it was found.
// valid is false when the options are malformed (zero length, or running
// past the message), which RFC 4861 says must be dropped.
func (c ICMPv6) NDPOption(typ uint8) (val []byte, found, valid bool) {
	if len(c) < NDPNSNALen {
		return nil, false, false
	}
	opts := c[NDPNSNALen:]
	for len(opts) > 0 {
		if len(opts) < 2 {
			return nil, false, false
		}
		n := int(opts[1]) * 8
		if n == 0 || n > len(opts) {
			return nil, false, false
		}
		if opts[0] == typ && !found {
			val, found = opts[2:n], true
		}
		opts = opts[n:]
	}
	return val, found, true
}

// NDPLinkAddr returns the link-layer address of the first option of type
// typ (NDPOptSourceLinkAddr or NDPOptTargetLinkAddr) if present and
// Ethernet-sized; valid is false if the options are malformed.
func (c ICMPv6) NDPLinkAddr(typ uint8) (mac MAC, found, valid bool) {
	v, found, valid := c.NDPOption(typ)
	if !valid || !found {
		return MAC{}, false, valid
	}
	if len(v) < 6 {
		return MAC{}, true, false
	}
	return MAC(v[:6]), true, true
}
