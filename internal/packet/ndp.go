package packet

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// NeighborAdvertLen is the frame BuildNeighborAdvert writes: Ethernet,
// IPv6, an NA and its target link-layer address option.
const NeighborAdvertLen = EthernetLen + IPv6Len + NDPNSNALen + 8

// NA flags (RFC 4861 4.4).
const (
	NAFlagSolicited = 0x40
	NAFlagOverride  = 0x20
)

// ErrShortBuffer is returned by builders given too small a buffer.
var ErrShortBuffer = errors.New("packet: buffer too short")

// BuildNeighborAdvert writes into dst the solicited neighbour
// advertisement that the owner of target (MAC mac) sends to the soliciting
// node (toMAC, toIP): override flag set, target link-layer address option,
// hop limit 255, checksum computed. It returns the frame length.
func BuildNeighborAdvert(dst []byte, mac, toMAC MAC, target, toIP netip.Addr) (int, error) {
	if len(dst) < NeighborAdvertLen {
		return 0, ErrShortBuffer
	}
	f := dst[:NeighborAdvertLen]
	e := Ethernet(f)
	e.SetDst(toMAC)
	e.SetSrc(mac)
	e.SetType(EtherTypeIPv6)
	const plen = NDPNSNALen + 8
	ip := IPv6(f[EthernetLen:])
	ip.Encode(0, 0, plen, ProtoICMPv6, 255, target, toIP)
	ic := ICMPv6(ip[IPv6Len:])
	clear(ic[:plen])
	ic[0] = ICMPv6NeighborAdvert
	ic[4] = NAFlagSolicited | NAFlagOverride
	t := target.As16()
	copy(ic[8:24], t[:])
	ic[24], ic[25] = NDPOptTargetLinkAddr, 1
	copy(ic[26:32], mac[:])
	ps := PseudoHeaderChecksum(ProtoICMPv6, ip.SrcBytes(), ip.DstBytes(), plen)
	binary.BigEndian.PutUint16(ic[2:4], ^Checksum(ic[:plen], ps))
	return NeighborAdvertLen, nil
}
