package packet

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// Describe returns a one-line decode of an Ethernet frame: MACs, then
// ARP, or the IP addresses, protocol, ports or ICMP type and TCP flags,
// and the length. Frames it cannot parse are described as such. For
// control paths (explain, drop records): it allocates.
func Describe(frame []byte) string {
	if len(frame) < EthernetLen {
		return fmt.Sprintf("runt frame, %d bytes", len(frame))
	}
	e := Ethernet(frame)
	var b strings.Builder
	fmt.Fprintf(&b, "%v > %v", e.Src(), e.Dst())
	var l Layers
	switch {
	case e.Type() == EtherTypeARP:
		a := ARP(frame[EthernetLen:])
		if !a.IsValid() || !a.IsEthernetIPv4() {
			b.WriteString(" ARP malformed")
			break
		}
		op := map[uint16]string{1: "request", 2: "reply"}[a.Op()]
		if op == "" {
			op = fmt.Sprintf("op %d", a.Op())
		}
		fmt.Fprintf(&b, " ARP %s %v (%v) -> %v", op, a.SenderIP(), a.SenderMAC(), a.TargetIP())
	case !Parse(frame, &l):
		fmt.Fprintf(&b, " ethertype 0x%04x malformed", e.Type())
	case l.IsIPv4() || l.IsIPv6():
		describeIP(&b, frame, &l)
	default:
		fmt.Fprintf(&b, " ethertype 0x%04x", e.Type())
	}
	fmt.Fprintf(&b, ", %d bytes", len(frame))
	return b.String()
}

// DescribeHead is Describe for head, the first bytes of a frame of n
// bytes (a drop record): the IP length fields are taken as cut at head's
// end, and the length printed is n.
func DescribeHead(head []byte, n int) string {
	if n <= len(head) || len(head) < EthernetLen {
		return Describe(head)
	}
	f := append([]byte(nil), head...)
	ip := f[EthernetLen:]
	switch Ethernet(f).Type() {
	case EtherTypeIPv4:
		if len(ip) >= IPv4MinLen && IPv4(ip).TotalLen() > uint16(len(ip)) {
			IPv4(ip).SetTotalLen(uint16(len(ip)))
		}
	case EtherTypeIPv6:
		if len(ip) >= IPv6Len && int(IPv6(ip).PayloadLen()) > len(ip)-IPv6Len {
			IPv6(ip).SetPayloadLen(uint16(len(ip) - IPv6Len))
		}
	}
	d := Describe(f)
	if i := strings.LastIndex(d, ", "); i >= 0 {
		d = d[:i]
	}
	return fmt.Sprintf("%s, %d bytes", d, n)
}

func describeIP(b *strings.Builder, frame []byte, l *Layers) {
	if l.IsIPv4() {
		ip := IPv4(frame[l.L3:])
		fmt.Fprintf(b, " IPv4 %v > %v", ip.Src(), ip.Dst())
	} else {
		ip := IPv6(frame[l.L3:])
		fmt.Fprintf(b, " IPv6 %v > %v", ip.Src(), ip.Dst())
	}
	if l.Fragment {
		b.WriteString(" fragment")
	}
	if l.L4 == 0 {
		fmt.Fprintf(b, " proto %d", l.Proto)
		return
	}
	l4 := frame[l.L4:l.L3End]
	switch l.Proto {
	case ProtoTCP:
		if len(l4) < 14 {
			b.WriteString(" TCP truncated")
			return
		}
		t := TCP(l4)
		fmt.Fprintf(b, " TCP %d > %d [%s]", t.SrcPort(), t.DstPort(), tcpFlagNames(l4[13]))
	case ProtoUDP, ProtoSCTP:
		name := map[uint8]string{ProtoUDP: "UDP", ProtoSCTP: "SCTP"}[l.Proto]
		if len(l4) < 4 {
			fmt.Fprintf(b, " %s truncated", name)
			return
		}
		fmt.Fprintf(b, " %s %d > %d", name, binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4]))
	case ProtoICMPv4, ProtoICMPv6:
		name := map[uint8]string{ProtoICMPv4: "ICMP", ProtoICMPv6: "ICMPv6"}[l.Proto]
		if len(l4) < 8 {
			fmt.Fprintf(b, " %s truncated", name)
			return
		}
		fmt.Fprintf(b, " %s type %d code %d id %d", name, l4[0], l4[1], binary.BigEndian.Uint16(l4[4:6]))
	default:
		fmt.Fprintf(b, " proto %d", l.Proto)
	}
}

// tcpFlagNames returns the set flags as tcpdump's letters (S, F, R, P,
// ., U, E, W), "none" when no flag is set.
func tcpFlagNames(f uint8) string {
	var s []byte
	for _, x := range []struct {
		bit uint8
		c   byte
	}{{TCPFlagSYN, 'S'}, {TCPFlagFIN, 'F'}, {TCPFlagRST, 'R'}, {TCPFlagPSH, 'P'}, {TCPFlagACK, '.'}, {0x20, 'U'}, {0x40, 'E'}, {0x80, 'W'}} {
		if f&x.bit != 0 {
			s = append(s, x.c)
		}
	}
	if len(s) == 0 {
		return "none"
	}
	return string(s)
}
