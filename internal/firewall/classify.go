package firewall

import (
	"encoding/binary"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// tuple is a parsed packet's flow description.
type tuple struct {
	fk       flowKey
	seg      tcpSeg
	tcpFrag  bool // a TCP segment in fragments: its length is unknown
	tcpFlags uint8
	icmpType uint8
	isICMP   bool
}

// frameInfo is a frame's description for the connection tracking: its flow
// tuple, its fragment identity, and what parse decided on its own.
type frameInfo struct {
	t         tuple
	fragID    uint32
	fragProto uint8
	// fragment: the frame is a fragment (first or not).
	fragment bool
	// why says what decided a frame parse decided alone (parseDone).
	why why
}

// parseStep is what filter does after parse.
type parseStep uint8

const (
	// parseDone: parse decided (the returned verdict), nothing to track.
	parseDone parseStep = iota
	// parseTrack: p.t goes through the connection table.
	parseTrack
	// parseFragment: a non-first fragment, passed if its first fragment
	// was accepted.
	parseFragment
)

// why is what decided a frame that parse decided alone.
type why uint8

// Reasons parse gives for the frames it decides alone.
const (
	whyNone why = iota
	whyMalformed
	whyNotIP
	whyND
	whyICMPErr
	whyICMPFlow
)

// String describes w for Explain.
func (w why) String() string {
	switch w {
	case whyMalformed:
		return "malformed or truncated packet"
	case whyNotIP:
		return "not IP: passed untracked"
	case whyND:
		return "IPv6 neighbour discovery, router solicitation or MLD: passed untracked"
	case whyICMPErr:
		return "ICMP error about no tracked flow: policy"
	case whyICMPFlow:
		return "ICMP error about a tracked flow: passed untracked"
	}
	return ""
}

// parse describes frame into p; it never changes the table. A frame it
// decides alone (parseDone) gets the verdict it returns.
func (c *Conntrack) parse(frame []byte, dir Direction, pol *Policy, now int64, p *frameInfo) (Verdict, parseStep) {
	var l packet.Layers
	if !packet.Parse(frame, &l) {
		p.why = whyMalformed
		return DropInvalid, parseDone
	}
	t := &p.t
	t.fk.dir = dir
	switch {
	case l.IsIPv4():
		ip := packet.IPv4(frame[l.L3:l.L3End])
		t.fk.fam = fam4
		t.fk.src, t.fk.dst = addrFromBytes(ip.SrcBytes()), addrFromBytes(ip.DstBytes())
		p.fragID, p.fragProto = uint32(ip.ID()), l.Proto
	case l.IsIPv6():
		ip := packet.IPv6(frame[l.L3:l.L3End])
		t.fk.fam = fam6
		t.fk.src, t.fk.dst = addrFromBytes(ip.SrcBytes()), addrFromBytes(ip.DstBytes())
		if l.Fragment {
			var ok bool
			if p.fragID, p.fragProto, ok = ipv6Frag(ip); !ok {
				p.why = whyMalformed
				return DropInvalid, parseDone
			}
		}
	default:
		p.why = whyNotIP
		return AcceptStateless, parseDone
	}
	p.fragment = l.Fragment
	if l.Fragment && l.L4 == 0 {
		return 0, parseFragment
	}
	t.fk.proto = l.Proto
	l4 := frame[l.L4:l.L3End]
	switch l.Proto {
	case packet.ProtoTCP:
		tcp := packet.TCP(l4)
		if !tcp.IsValid() {
			p.why = whyMalformed
			return DropInvalid, parseDone
		}
		t.fk.sport, t.fk.dport, t.fk.portsValid = tcp.SrcPort(), tcp.DstPort(), true
		t.tcpFlags = tcp.Flags()
		t.seg = parseSeg(tcp, t.tcpFlags)
		t.tcpFrag = l.Fragment
	case packet.ProtoUDP, packet.ProtoSCTP:
		if len(l4) < 8 {
			p.why = whyMalformed
			return DropInvalid, parseDone
		}
		t.fk.sport = binary.BigEndian.Uint16(l4[0:2])
		t.fk.dport = binary.BigEndian.Uint16(l4[2:4])
		t.fk.portsValid = true
	case packet.ProtoICMPv4, packet.ProtoICMPv6:
		if l.Proto == packet.ProtoICMPv4 && t.fk.fam != fam4 || l.Proto == packet.ProtoICMPv6 && t.fk.fam != fam6 {
			break // tracked as an "other" protocol
		}
		ic := packet.ICMPv4(l4)
		if !ic.IsValid() {
			p.why = whyMalformed
			return DropInvalid, parseDone
		}
		t.isICMP = true
		t.icmpType = ic.Type()
		isErr := ic.IsError()
		if t.fk.fam == fam6 {
			isErr = packet.ICMPv6(l4).IsError()
			if v, ok := ndVerdict(dir, frame[l.L3:], t.icmpType, &t.fk, pol); ok {
				p.why = whyND
				return v, parseDone
			}
		}
		if isErr {
			p.why = whyICMPErr
			v := c.icmpError(&t.fk, l4[packet.ICMPHeaderLen:], pol, now, &p.why)
			return v, parseDone
		}
		if isEcho(t.fk.fam, t.icmpType) {
			// Echo by identifier, oriented as a port pair: a request is
			// (id, 0) and a reply (0, id), so a reply matches its
			// request's flow the other way round while a request the
			// other way round (same identifier) is a flow of its own.
			t.fk.sport, t.fk.dport = ic.Ident(), 0
			if t.icmpType == packet.ICMPv4EchoReply || t.icmpType == packet.ICMPv6EchoReply {
				t.fk.sport, t.fk.dport = 0, ic.Ident()
			}
		}
	}
	return 0, parseTrack
}

func (c *Conntrack) filter(frame []byte, dir Direction, pol *Policy, now int64) Verdict {
	var p frameInfo
	v, st := c.parse(frame, dir, pol, now, &p)
	return c.filterParsed(v, st, &p, pol, now)
}

// filterParsed is filter after parse returned v and st for p.
func (c *Conntrack) filterParsed(v Verdict, st parseStep, p *frameInfo, pol *Policy, now int64) Verdict {
	switch st {
	case parseDone:
		return v
	case parseFragment:
		fk := fragKey(&p.t.fk, p.fragID, p.fragProto)
		h := c.hash(&fk)
		if i, _ := c.find(&fk, h); i >= 0 && c.slots[i].expires > now {
			c.slots[i].expires = now + TimeoutFragment
			return AcceptStateless
		}
		return DropFragment
	}
	v = c.track(&p.t, pol, now)
	if v == Accept && p.fragment {
		c.recordFragment(&p.t.fk, p.fragID, p.fragProto, now)
	}
	return v
}

func isEcho(fam int, typ uint8) bool {
	if fam == fam4 {
		return typ == packet.ICMPv4Echo || typ == packet.ICMPv4EchoReply
	}
	return typ == packet.ICMPv6EchoRequest || typ == packet.ICMPv6EchoReply
}

// ndVerdict passes IPv6 neighbour discovery, router solicitation and MLD.
func ndVerdict(dir Direction, ip6 []byte, typ uint8, fk *flowKey, pol *Policy) (Verdict, bool) {
	hop := packet.IPv6(ip6).HopLimit()
	srcLL := fk.src.hi>>54 == 0xfe80>>6 // fe80::/10
	srcOK := srcLL || fk.src == (addr{}) || containsAddr(pol.ips[fam6], fk.src)
	switch typ {
	case packet.ICMPv6RouterSolicit:
		if dir == FromVM && hop == 255 && srcOK {
			return AcceptStateless, true
		}
	case packet.ICMPv6NeighborSolicit, packet.ICMPv6NeighborAdvert:
		if hop == 255 && (dir == ToVM || srcOK) {
			return AcceptStateless, true
		}
	case packet.ICMPv6RouterAdvert:
		if dir == ToVM && hop == 255 && srcLL {
			return AcceptStateless, true
		}
	case packet.ICMPv6MLDReport, packet.ICMPv6MLDDone, packet.ICMPv6MLDv2Report:
		if dir == FromVM && (srcLL || fk.src == (addr{})) {
			return AcceptStateless, true
		}
	}
	return 0, false
}

// canonical writes the canonical key of fk into k and reports whether fk's
// source is endpoint a.
func canonical(fk *flowKey, k *key) bool {
	// Field by field, into the caller's key: a key returned by value, or
	// an addr copied whole, is moved with wide loads of narrow stores
	// that the CPU cannot forward, each waiting for every store before
	// it (guest memory writes included) to reach the cache.
	k.proto, k.kind = fk.proto, uint8(fk.fam)
	if fk.src.less(fk.dst) || (fk.src == fk.dst && fk.sport <= fk.dport) {
		k.a.hi, k.a.lo, k.pa = fk.src.hi, fk.src.lo, fk.sport
		k.b.hi, k.b.lo, k.pb = fk.dst.hi, fk.dst.lo, fk.dport
		return true
	}
	k.a.hi, k.a.lo, k.pa = fk.dst.hi, fk.dst.lo, fk.dport
	k.b.hi, k.b.lo, k.pb = fk.src.hi, fk.src.lo, fk.sport
	return false
}

func fragKey(fk *flowKey, id uint32, proto uint8) key {
	return key{a: fk.src, b: fk.dst, pa: uint16(id >> 16), pb: uint16(id), proto: proto, kind: uint8(fk.fam) | uint8(fk.dir)<<1 | kindFrag}
}

// origKey rebuilds the first packet of e's flow.
func origKey(e *entry) flowKey {
	fk := flowKey{fam: int(e.k.kind & 1), proto: e.k.proto, portsValid: hasPorts(int32(e.k.proto))}
	if e.flags&flOrigFrom != 0 {
		fk.dir = FromVM
	}
	if e.flags&flOrigIsA != 0 {
		fk.src, fk.sport, fk.dst, fk.dport = e.k.a, e.k.pa, e.k.b, e.k.pb
	} else {
		fk.src, fk.sport, fk.dst, fk.dport = e.k.b, e.k.pb, e.k.a, e.k.pa
	}
	if !fk.portsValid {
		fk.sport, fk.dport = 0, 0
	}
	return fk
}

// classify evaluates pol for fk (ports ignored for port-less protocols).
func classify(pol *Policy, fk *flowKey) bool {
	if fk.portsValid {
		return pol.allows(fk)
	}
	k := *fk
	k.sport, k.dport = 0, 0
	return pol.allows(&k)
}

// icmpError passes an ICMP error whose quoted packet belongs to a tracked
// flow (the quoted packet was sent by the error's destination). Other
// errors follow the policy, untracked. It sets *w to whyICMPFlow when
// a tracked flow passes the error.
func (c *Conntrack) icmpError(outer *flowKey, q []byte, pol *Policy, now int64, w *why) Verdict {
	var fk flowKey
	fk.fam = outer.fam
	var l4 []byte
	if outer.fam == fam4 {
		ip := packet.IPv4(q)
		if len(q) < packet.IPv4MinLen || q[0]>>4 != 4 || ip.HeaderLen() < packet.IPv4MinLen || ip.HeaderLen() > len(q) {
			return DropInvalid
		}
		if ip.FragOffset() != 0 {
			return c.untracked(outer, pol)
		}
		fk.src, fk.dst, fk.proto = addrFromBytes(ip.SrcBytes()), addrFromBytes(ip.DstBytes()), ip.Protocol()
		l4 = q[ip.HeaderLen():]
	} else {
		if len(q) < packet.IPv6Len || q[0]>>4 != 6 {
			return DropInvalid
		}
		ip := packet.IPv6(q)
		w := ip.ExtHeaders(len(q))
		if !w.OK {
			return DropInvalid
		}
		if w.FragOff != 0 {
			return c.untracked(outer, pol)
		}
		fk.src, fk.dst, fk.proto = addrFromBytes(ip.SrcBytes()), addrFromBytes(ip.DstBytes()), w.Proto
		l4 = q[w.Off:]
	}
	if fk.src != outer.dst {
		return c.untracked(outer, pol)
	}
	switch fk.proto {
	case packet.ProtoTCP, packet.ProtoUDP, packet.ProtoSCTP:
		if len(l4) < 4 {
			return DropInvalid
		}
		fk.sport = binary.BigEndian.Uint16(l4[0:2])
		fk.dport = binary.BigEndian.Uint16(l4[2:4])
	case packet.ProtoICMPv4, packet.ProtoICMPv6:
		if len(l4) < packet.ICMPHeaderLen {
			return DropInvalid
		}
		if isEcho(fk.fam, l4[0]) {
			id := binary.BigEndian.Uint16(l4[4:6])
			fk.sport, fk.dport = id, 0 // keyed as parse keys echo
			if l4[0] == packet.ICMPv4EchoReply || l4[0] == packet.ICMPv6EchoReply {
				fk.sport, fk.dport = 0, id
			}
		}
	}
	var k key
	canonical(&fk, &k)
	h := c.hash(&k)
	if i, _ := c.find(&k, h); i >= 0 && c.slots[i].expires > now && c.slots[i].gen != genCut {
		*w = whyICMPFlow
		return AcceptStateless
	}
	return c.untracked(outer, pol)
}

// untracked evaluates pol for a packet that creates no entry.
func (c *Conntrack) untracked(fk *flowKey, pol *Policy) Verdict {
	if classify(pol, fk) {
		return AcceptStateless
	}
	return DropNoRule
}

// ipv6Frag finds the fragment header of ip: the identification and the
// header that follows it.
func ipv6Frag(ip packet.IPv6) (id uint32, next uint8, ok bool) {
	w := ip.ExtHeaders(packet.IPv6Len + int(ip.PayloadLen()))
	return w.FragID, w.FragNext, w.OK && w.Frag
}
