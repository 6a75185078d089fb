package packet

import (
	"encoding/binary"
	"errors"
)

// Limits of ICMP error messages: RFC 1812 4.3.2.3 (576 bytes for IPv4)
// and RFC 4443 2.4(c) (the IPv6 minimum MTU).
const (
	ICMPv4ErrorMaxLen = 576
	ICMPv6ErrorMaxLen = IPv6MinMTU
	icmpTTL           = 64
)

// Errors of the ICMP error builders.
var (
	ErrNoICMPError = errors.New("packet: no ICMP error may be sent for this packet")
	ErrICMPBadOrig = errors.New("packet: offending packet is malformed")
	ErrICMPDstSize = errors.New("packet: destination buffer too small")
)

// BuildICMPv4FragNeeded writes into dst an Ethernet frame carrying an ICMPv4
// "destination unreachable, fragmentation needed" (type 3, code 4) with
// next-hop MTU mtu, answering the Ethernet/IPv4 frame orig. The frame
// goes back to the sender: MACs swapped, source IP = orig's destination
// IP, destination IP = orig's source IP, TTL 64. As much of orig's IP
// packet is quoted as fits in 576 bytes of IP. It returns the frame
// length. No error is built (ErrNoICMPError) for ICMP errors, non-first
// fragments, or a source that is not a unicast address; the caller
// decides whether DF calls for one. dst needs at least 590 bytes.
func BuildICMPv4FragNeeded(dst, orig []byte, mtu uint16) (int, error) {
	var l Layers
	if !Parse(orig, &l) || !l.IsIPv4() {
		return 0, ErrICMPBadOrig
	}
	oip := IPv4(orig[l.L3:l.L3End])
	if oip.FragOffset() != 0 {
		return 0, ErrNoICMPError
	}
	if l.Proto == ProtoICMPv4 {
		ic := ICMPv4(orig[l.L4:l.L3End])
		if !ic.IsValid() || ic.IsError() {
			return 0, ErrNoICMPError
		}
	}
	src := oip.Src()
	if src.IsUnspecified() || src.IsMulticast() || src.IsLoopback() || src == ipv4Broadcast {
		return 0, ErrNoICMPError
	}
	if d := oip.Dst(); d.IsMulticast() || d == ipv4Broadcast || d.IsUnspecified() {
		return 0, ErrNoICMPError
	}
	dst, quote, err := startICMPError(dst, orig, orig[l.L3:l.L3End], ICMPv4ErrorMaxLen, IPv4MinLen, EtherTypeIPv4)
	if err != nil {
		return 0, err
	}
	total := len(dst)
	ip := IPv4(dst[EthernetLen:])
	ip.Encode(0xc0, uint16(total-EthernetLen), 0, 0, icmpTTL, ProtoICMPv4, oip.Dst(), src)
	ic := ICMPv4(ip[IPv4MinLen:])
	ic[0], ic[1] = ICMPv4DstUnreachable, ICMPv4CodeFragNeeded
	binary.BigEndian.PutUint16(ic[2:4], 0)
	binary.BigEndian.PutUint16(ic[4:6], 0)
	binary.BigEndian.PutUint16(ic[6:8], mtu)
	copy(ic[ICMPHeaderLen:], quote)
	ic.SetChecksum(^Checksum(ic, 0))
	return total, nil
}

// BuildICMPv6PacketTooBig writes into dst an Ethernet frame carrying an
// ICMPv6 "packet too big" (type 2) with MTU mtu, answering the
// Ethernet/IPv6 frame orig: MACs swapped, source IP = orig's destination
// IP, destination IP = orig's source IP, hop limit 64. As much of orig's
// IP packet is quoted as fits in 1280 bytes of IP. It returns the frame
// length. No error is built (ErrNoICMPError) for ICMPv6 errors or
// redirects, a source that is not unicast, or a multicast destination
// (no unicast source address to answer from). dst needs at least 1294
// bytes.
func BuildICMPv6PacketTooBig(dst, orig []byte, mtu uint32) (int, error) {
	var l Layers
	if !Parse(orig, &l) || !l.IsIPv6() {
		return 0, ErrICMPBadOrig
	}
	oip := IPv6(orig[l.L3:l.L3End])
	if l.Proto == ProtoICMPv6 && l.L4 != 0 {
		ic := ICMPv6(orig[l.L4:l.L3End])
		if !ic.IsValid() || ic.IsError() || ic.Type() == ICMPv6Redirect {
			return 0, ErrNoICMPError
		}
	}
	src, odst := oip.Src(), oip.Dst()
	if src.IsUnspecified() || src.IsMulticast() || src.IsLoopback() || odst.IsMulticast() || odst.IsUnspecified() {
		return 0, ErrNoICMPError
	}
	dst, quote, err := startICMPError(dst, orig, orig[l.L3:l.L3End], ICMPv6ErrorMaxLen, IPv6Len, EtherTypeIPv6)
	if err != nil {
		return 0, err
	}
	total := len(dst)
	ip := IPv6(dst[EthernetLen:])
	plen := total - EthernetLen - IPv6Len
	ip.Encode(0, 0, uint16(plen), ProtoICMPv6, icmpTTL, odst, src)
	ic := ICMPv6(ip[IPv6Len:])
	ic[0], ic[1] = ICMPv6PacketTooBig, 0
	binary.BigEndian.PutUint16(ic[2:4], 0)
	binary.BigEndian.PutUint32(ic[4:8], mtu)
	copy(ic[ICMPHeaderLen:], quote)
	ps := PseudoHeaderChecksum(ProtoICMPv6, ip.SrcBytes(), ip.DstBytes(), uint32(plen))
	ic.SetChecksum(^Checksum(ic, ps))
	return total, nil
}

// startICMPError begins an ICMP error frame in dst answering the Ethernet
// frame orig, whose IP packet is pkt: it quotes as much of pkt as fits in
// maxIP bytes after an IP header of ipHdrLen bytes and the ICMP header,
// writes the Ethernet header (MACs swapped, EtherType etherType) and
// returns dst cut to the whole frame and the quote. The caller writes the
// IP header, the ICMP header and the quote.
func startICMPError(dst, orig, pkt []byte, maxIP, ipHdrLen int, etherType uint16) (frame, quote []byte, err error) {
	quote = pkt
	if max := maxIP - ipHdrLen - ICMPHeaderLen; len(quote) > max {
		quote = quote[:max]
	}
	total := EthernetLen + ipHdrLen + ICMPHeaderLen + len(quote)
	if len(dst) < total {
		return nil, nil, ErrICMPDstSize
	}
	frame = dst[:total]
	oe := Ethernet(orig)
	e := Ethernet(frame)
	e.SetDst(oe.Src())
	e.SetSrc(oe.Dst())
	e.SetType(etherType)
	return frame, quote, nil
}
