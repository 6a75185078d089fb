package packet

// Accessors that only the tests read: they check encoders and parsers
// against the header fields that the dataplane itself never needs.

import "encoding/binary"

// Code returns the message code.
func (c ICMPv4) Code() uint8 { return c[1] }

// Seq returns the echo sequence number.
func (c ICMPv4) Seq() uint16 { return binary.BigEndian.Uint16(c[6:8]) }

// MoreFragments reports whether MF is set.
func (b IPv4) MoreFragments() bool { return b.FlagsFrag()&IPv4FlagMF != 0 }

// TTL returns the time to live.
func (b IPv4) TTL() uint8 { return b[8] }

// SetTOS sets the type-of-service byte.
func (b IPv4) SetTOS(v uint8) { b[1] = v }

// SetTTL sets the time to live.
func (b IPv4) SetTTL(v uint8) { b[8] = v }

// TrafficClass returns the traffic class.
func (b IPv6) TrafficClass() uint8 { return b[0]<<4 | b[1]>>4 }

// FlowLabel returns the 20-bit flow label.
func (b IPv6) FlowLabel() uint32 { return binary.BigEndian.Uint32(b[0:4]) & 0xfffff }

// NextHeader returns the next header field of the fixed header.
func (b IPv6) NextHeader() uint8 { return b[6] }

// Urgent returns the urgent pointer.
func (t TCP) Urgent() uint16 { return binary.BigEndian.Uint16(t[18:20]) }

// MaxPayloadForMTU returns the largest segment payload for which every
// segment of the super-frame src is an IP packet of at most ipMTU bytes
// (headers of src included).
func MaxPayloadForMTU(src *Buf, ipMTU int) (int, error) {
	g, err := gsoParse(src, 0)
	if err != nil {
		return 0, err
	}
	n := ipMTU - (g.hdrLen - g.l3)
	if n <= 0 {
		return 0, ErrSegTooBig
	}
	return n, nil
}
