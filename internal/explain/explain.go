// Package explain builds the frame of a `butterfly explain` question: a
// packet described by its destination, protocol and ports, as the vNIC
// that sends it would (its MAC, its first address of the family), to the
// MAC of the vNIC of the same VNI that has the destination address.
package explain

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/packet"
)

// Question describes a packet sent by a vNIC.
type Question struct {
	// Dst is the destination address (required).
	Dst netip.Addr
	// Src is the source address; invalid: the vNIC's first address of
	// Dst's family.
	Src netip.Addr
	// Proto is the IP protocol number; 1 and 58 send an echo request.
	Proto uint8
	// SPort and DPort are the ports (TCP, UDP, SCTP); SPort is the echo
	// identifier for ICMP. A zero SPort is 40000 (1 for ICMP).
	SPort, DPort uint16
	// DstMAC is the destination MAC; nil: the MAC of the vNIC of from's
	// VNI that has Dst.
	DstMAC *packet.MAC
	// TCPFlags are the TCP flags; 0: SYN.
	TCPFlags uint8
}

// ErrQuestion marks an invalid question (as opposed to a failure).
var ErrQuestion = errors.New("invalid question")

// Build returns the frame from sends for q; nics are the switch's vNICs
// (to find the destination MAC). Errors wrap ErrQuestion.
func Build(q Question, from model.NIC, nics []model.NIC) ([]byte, error) {
	if !q.Dst.IsValid() {
		return nil, fmt.Errorf("%w: a destination address is needed", ErrQuestion)
	}
	dst := q.Dst.Unmap()
	src := q.Src.Unmap()
	if !src.IsValid() {
		for _, ip := range from.IPs {
			if ip.Unmap().Is4() == dst.Is4() {
				src = ip.Unmap()
				break
			}
		}
		if !src.IsValid() {
			return nil, fmt.Errorf("%w: vNIC %s has no %s address: give the source", ErrQuestion, from.ID, family(dst))
		}
	}
	if src.Is4() != dst.Is4() {
		return nil, fmt.Errorf("%w: source %v and destination %v are of different families", ErrQuestion, src, dst)
	}
	var dmac packet.MAC
	if q.DstMAC != nil {
		dmac = *q.DstMAC
	} else {
		found := false
		for _, n := range nics {
			if n.VNI == from.VNI && n.ID != from.ID && hasIP(n.IPs, dst) {
				dmac, found = packet.MAC(n.MAC), true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("%w: no other vNIC of VNI %d on this host has %v: give the destination MAC", ErrQuestion, from.VNI, dst)
		}
	}
	l4, err := transport(q, dst.Is6())
	if err != nil {
		return nil, err
	}
	f := make([]byte, packet.EthernetLen, packet.EthernetLen+packet.IPv6Len+len(l4))
	e := packet.Ethernet(f)
	e.SetDst(dmac)
	e.SetSrc(packet.MAC(from.MAC))
	if dst.Is4() {
		e.SetType(packet.EtherTypeIPv4)
		ip := make([]byte, packet.IPv4MinLen)
		packet.IPv4(ip).Encode(0, uint16(len(ip)+len(l4)), 1, packet.IPv4FlagDF, 64, q.Proto, src, dst)
		packet.IPv4(ip).UpdateChecksum()
		f = append(f, ip...)
	} else {
		e.SetType(packet.EtherTypeIPv6)
		ip := make([]byte, packet.IPv6Len)
		packet.IPv6(ip).Encode(0, 0, uint16(len(l4)), q.Proto, 64, src, dst)
		f = append(f, ip...)
	}
	return append(f, l4...), nil
}

// transport builds the upper-layer header of q (checksums are not
// computed: no decision reads them).
func transport(q Question, v6 bool) ([]byte, error) {
	sport := q.SPort
	switch q.Proto {
	case packet.ProtoTCP:
		if sport == 0 {
			sport = 40000
		}
		t := packet.TCP(make([]byte, 20))
		t.SetSrcPort(sport)
		t.SetDstPort(q.DPort)
		t.SetHeaderLen(20)
		flags := q.TCPFlags
		if flags == 0 {
			flags = packet.TCPFlagSYN
		}
		t.SetFlags(flags)
		t.SetSeq(1)
		if flags&packet.TCPFlagACK != 0 {
			t.SetAck(1)
		}
		t.SetWindow(65535)
		return t, nil
	case packet.ProtoUDP, packet.ProtoSCTP:
		if sport == 0 {
			sport = 40000
		}
		u := make([]byte, 12)
		packet.UDP(u).Encode(sport, q.DPort, 12, 0)
		if q.Proto == packet.ProtoUDP {
			return u[:8], nil
		}
		u[4], u[5] = 0, 0 // SCTP: verification tag
		return u, nil
	case packet.ProtoICMPv4, packet.ProtoICMPv6:
		if (q.Proto == packet.ProtoICMPv6) != v6 {
			return nil, fmt.Errorf("%w: protocol %d does not go with an IPv%d destination", ErrQuestion, q.Proto, map[bool]int{false: 4, true: 6}[v6])
		}
		if sport == 0 {
			sport = 1
		}
		ic := packet.ICMPv4(make([]byte, 8))
		ic[0] = packet.ICMPv4Echo
		if v6 {
			ic[0] = packet.ICMPv6EchoRequest
		}
		ic[4], ic[5] = byte(sport>>8), byte(sport)
		ic[7] = 1 // sequence
		return ic, nil
	}
	if v6 && packet.IsIPv6ExtHeader(q.Proto) {
		return nil, fmt.Errorf("%w: protocol %d is an IPv6 extension header: give the frame", ErrQuestion, q.Proto)
	}
	return nil, nil
}

func hasIP(ips []netip.Addr, a netip.Addr) bool {
	for _, ip := range ips {
		if ip.Unmap() == a {
			return true
		}
	}
	return false
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}
