package firewall

import (
	"math/bits"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/packet"
)

// RuleRef is a security-group rule as the classifier compiled it: the
// group it came from (the first group listing it, when several do) and
// the rule.
type RuleRef struct {
	Group string
	Rule  model.Rule
}

// MatchKind is what decided a new flow.
type MatchKind uint8

// Match kinds.
const (
	// MatchNone: no rule allows the flow (and, for egress without
	// OUTBOUND rules, its source is not one of the vNIC's addresses).
	MatchNone MatchKind = iota
	// MatchRule: Match.Rule allows the flow.
	MatchRule
	// MatchDefaultEgress: the vNIC has no OUTBOUND rule and the packet
	// comes from one of its addresses.
	MatchDefaultEgress
	// MatchDHCP: the vNIC has no OUTBOUND rule and the packet is a
	// DHCPv4 discover or request.
	MatchDHCP
)

// Match tells what the policy said about a flow's first packet.
type Match struct {
	Kind MatchKind
	// Rule is the lowest-numbered compiled rule that allows the flow
	// (MatchRule).
	Rule RuleRef
	// DefaultEgress: the egress policy is the default one (the vNIC has
	// no OUTBOUND rule).
	DefaultEgress bool
}

// Explanation is what Decide would do now with a frame, as Explain finds
// it without changing anything.
type Explanation struct {
	Verdict Verdict
	// Note names what decided a frame that is not tracked (non-IP,
	// neighbour discovery, ICMP error, malformed, fragment), or why a
	// tracked or new flow got its verdict when the policy did not decide.
	Note string
	// Tracked: the frame belongs to a live tracked flow, whose Flow
	// (Expires included) is given.
	Tracked bool
	Flow    Flow
	// Evaluated: the policy was evaluated for the frame's flow (a new
	// flow, a tracked flow under a changed policy, an untracked ICMP
	// error), with result Match.
	Evaluated bool
	Match     Match
}

// Explain returns what Decide(frame, dir, pol, now) would decide, and
// why, without changing the table: the same parsing, table lookup,
// policy and TCP state machine (run on a copy of the tracked entry).
// Whether a full table would make room for a new flow is predicted from
// the slots insert would examine. Same concurrency contract as Decide:
// only the table's owner may call it.
func (c *Conntrack) Explain(frame []byte, dir Direction, pol *Policy, now int64) Explanation {
	var x Explanation
	var p frameInfo
	v, st := c.parse(frame, dir, pol, now, &p)
	switch st {
	case parseDone:
		x.Verdict, x.Note = v, p.why.String()
		if p.why == whyICMPErr && v == DropInvalid {
			x.Note = "malformed ICMP error"
		} else if p.why == whyICMPErr {
			x.Evaluated = true
			_, x.Match = pol.explain(&p.t.fk)
		}
		return x
	case parseFragment:
		fk := fragKey(&p.t.fk, p.fragID, p.fragProto)
		h := c.hash(&fk)
		if i, _ := c.find(&fk, h); i >= 0 && c.slots[i].expires > now {
			x.Verdict, x.Note = AcceptStateless, "fragment of an accepted packet"
			return x
		}
		x.Verdict, x.Note = DropFragment, "fragment without an accepted first fragment"
		return x
	}
	c.peek(&p.t, pol, now, &x)
	return x
}

// peek is track without changes: the verdict of t against the table and
// pol, explained in x.
func (c *Conntrack) peek(t *tuple, pol *Policy, now int64, x *Explanation) {
	var k key
	srcIsA := canonical(&t.fk, &k)
	h := c.hash(&k)
	if i, _ := c.find(&k, h); i >= 0 {
		e := c.slots[i] // a copy: hit changes it
		reopen := t.fk.proto == packet.ProtoTCP && (e.state == TCPTimeWait || e.state == TCPClose) &&
			t.tcpFlags&tcpSynMask == packet.TCPFlagSYN
		if e.expires > now && !reopen {
			x.Tracked = true
			x.Flow = flowOf(&e)
			if g := pol.Generation(); e.gen != g {
				ok := origKey(&e)
				x.Evaluated = true
				_, x.Match = pol.explain(&ok)
			}
			x.Verdict = hit(&e, t, srcIsA, pol, now)
			switch x.Verdict {
			case DropCut:
				x.Note = "tracked flow no longer allowed by the policy (cut)"
			case DropInvalid:
				x.Note = "does not fit the tracked flow's state (direction, TCP flags or sequence window)"
			}
			return
		}
	}
	what, pickup := "new flow", false
	if t.fk.proto == packet.ProtoTCP && t.tcpFlags&tcpSynMask != packet.TCPFlagSYN {
		if !c.canPickup(t, now) {
			x.Verdict, x.Note = DropInvalid, "TCP segment other than a SYN and no tracked connection"
			return
		}
		what, pickup = "connection in progress picked up (loose pickup after a restart)", true
	}
	x.Evaluated = true
	var ok bool
	ok, x.Match = pol.explain(&t.fk)
	switch {
	case !ok && pickup:
		x.Verdict, x.Note = DropInvalid, "TCP segment of no tracked connection: loose pickup refused, the policy would not let its sender open it"
		return
	case !ok:
		x.Verdict = DropNoRule
		return
	}
	switch c.roomFor(h, now) {
	case noRoom:
		x.Verdict, x.Note = DropTableFull, what+" and the connection table is full"
	case roomByEviction:
		x.Verdict, x.Note = Accept, what+"; the table is full: a peer's half-open flow is evicted for it"
	default:
		x.Verdict, x.Note = Accept, what
	}
}

// Results of roomFor.
const (
	room = iota
	roomByEviction
	noRoom
)

// roomFor tells whether insert would find room for a new flow of hash h
// now: the table is below its bounds (room), or the slots insert examines
// hold an expired entry (room) or an evictable one (roomByEviction), or
// not (noRoom).
func (c *Conntrack) roomFor(h uint32, now int64) int {
	if c.count < c.capacity && (c.limit == nil || c.limit.n.Load() < c.limit.max) {
		return room
	}
	if c.count == 0 {
		return noRoom
	}
	for n, i := 0, c.cursor&c.mask; n < 64; n, i = n+1, (i+1)&c.mask {
		if e := &c.slots[i]; e.state != stEmpty && e.expires <= now {
			return room
		}
	}
	for n, i := 0, h&c.mask; n < earlyDropScan; n, i = n+1, (i+1)&c.mask {
		if e := &c.slots[i]; e.state != stEmpty && e.evictable() {
			return roomByEviction
		}
	}
	return noRoom
}

// flowOf describes tracked entry e.
func flowOf(e *entry) Flow {
	fk := origKey(e)
	f := Flow{Dir: fk.dir, Proto: e.k.proto, Src: fk.src.netip(fk.fam), Dst: fk.dst.netip(fk.fam),
		Replied: e.flags&flReplied != 0, Expires: e.expires}
	f.SrcPort, f.DstPort = e.k.pb, e.k.pa
	if e.flags&flOrigIsA != 0 {
		f.SrcPort, f.DstPort = e.k.pa, e.k.pb
	}
	if e.k.proto == packet.ProtoICMPv4 || e.k.proto == packet.ProtoICMPv6 {
		// An echo flow is keyed (identifier, 0); Flow gives the
		// identifier in both ports.
		f.SrcPort |= f.DstPort
		f.DstPort = f.SrcPort
	}
	if e.state <= TCPClose {
		f.State = e.state
	}
	return f
}

// explain is allows with the reason: the rule that matched, or the
// default egress.
func (p *Policy) explain(k *flowKey) (bool, Match) {
	fk := *k
	if !fk.portsValid {
		fk.sport, fk.dport = 0, 0 // as classify
	}
	t := &p.rules.tables[fk.dir][fk.fam]
	peer := fk.src
	if fk.dir == FromVM {
		if !p.rules.hasOutbound {
			m := Match{DefaultEgress: true}
			switch {
			case containsAddr(p.ips[fk.fam], fk.src):
				m.Kind = MatchDefaultEgress
			case fk.fam == fam4 && fk.proto == 17 && fk.portsValid && fk.src == (addr{}) &&
				fk.dst == addr{0, 0xffffffff} && fk.sport == 68 && fk.dport == 67:
				m.Kind = MatchDHCP
			}
			return m.Kind != MatchNone, m
		}
		peer = fk.dst
	}
	i := t.firstMatch(fk.fam, fk.proto, fk.dport, peer)
	if i < 0 {
		return false, Match{}
	}
	return true, Match{Kind: MatchRule, Rule: p.rules.ref(t.refs[i])}
}

// firstMatch is match returning the index of the lowest rule that allows
// the packet, -1 if none.
func (t *table) firstMatch(fam int, proto uint8, port uint16, a addr) int {
	if t.w == 0 {
		return -1
	}
	w := t.w
	pt := &t.ports[t.protoIdx[proto]]
	pi := searchU32(pt.pts, uint32(port))
	pbits := pt.bits[pi*w : (pi+1)*w]
	ci := searchAddr(t.cidrPts, a)
	best := lowestAnd(pbits, t.cidrBits[ci*w:(ci+1)*w])
	for i := range t.members {
		m := &t.members[i]
		if j := lowestAnd(pbits, m.bits); j >= 0 && (best < 0 || j < best) && m.set.contains(fam, a) {
			best = j
		}
	}
	return best
}

// lowestAnd returns the index of the lowest bit set in both a and b, -1
// if none.
func lowestAnd(a, b []uint64) int {
	b = b[:len(a)]
	for i := range a {
		if x := a[i] & b[i]; x != 0 {
			return i*64 + bits.TrailingZeros64(x)
		}
	}
	return -1
}
