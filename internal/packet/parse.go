package packet

// Layers are the offsets of a frame's headers, filled by Parse.
type Layers struct {
	// EtherType of the frame (no VLAN tag is looked through).
	EtherType uint16
	// L3 is the offset of the network header (EthernetLen) and L3End the
	// end of the IP packet according to its length field (Ethernet
	// padding excluded); L3End is the frame length for non-IP frames.
	L3, L3End int
	// Proto is the upper-layer protocol of an IPv4/IPv6 packet.
	Proto uint8
	// L4 is the offset of the upper-layer header, 0 when there is none
	// (not IP, or a non-first fragment).
	L4 int
	// Fragment reports an IPv4 or IPv6 fragment.
	Fragment bool
}

// IsIPv4 reports whether the frame carries IPv4.
func (l *Layers) IsIPv4() bool { return l.EtherType == EtherTypeIPv4 }

// IsIPv6 reports whether the frame carries IPv6.
func (l *Layers) IsIPv6() bool { return l.EtherType == EtherTypeIPv6 }

// Parse finds the network and upper-layer headers of an Ethernet frame.
// It returns false for a frame shorter than an Ethernet header, or an
// IPv4/IPv6 packet whose headers are malformed or truncated. Upper-layer
// headers themselves are not checked beyond their first byte being
// present. Nothing is allocated.
func Parse(frame []byte, l *Layers) bool {
	*l = Layers{}
	if len(frame) < EthernetLen {
		return false
	}
	e := Ethernet(frame)
	l.EtherType = e.Type()
	l.L3 = EthernetLen
	l.L3End = len(frame)
	switch l.EtherType {
	case EtherTypeIPv4:
		ip := IPv4(frame[EthernetLen:])
		if !ip.IsValid() {
			return false
		}
		l.L3End = EthernetLen + int(ip.TotalLen())
		l.Proto = ip.Protocol()
		l.Fragment = ip.IsFragment()
		if ip.FragOffset() == 0 {
			l.L4 = EthernetLen + ip.HeaderLen()
		}
	case EtherTypeIPv6:
		ip := IPv6(frame[EthernetLen:])
		proto, off, frag, ok := ip.L4()
		if !ok {
			return false
		}
		l.L3End = EthernetLen + IPv6Len + int(ip.PayloadLen())
		l.Fragment = frag
		l.Proto = proto
		if !(frag && proto == ProtoFragment) {
			l.L4 = EthernetLen + off
		}
	}
	return true
}
