package firewall

import (
	"github.com/butterfly-go/butterfly/internal/packet"
)

// Verdict is the outcome of Decide: accepted or dropped, and why.
type Verdict uint8

// Verdicts. Accept* values pass the packet; the others drop it.
const (
	// Accept is a packet of a tracked flow or a new flow the policy allows.
	Accept Verdict = iota
	// AcceptStateless is a packet passed without tracking: non-IP, IPv6
	// neighbour discovery/MLD, an ICMP error or a fragment of an accepted
	// packet.
	AcceptStateless
	// DropNoRule is a new flow no rule allows.
	DropNoRule
	// DropInvalid is a malformed packet or one that does not fit the
	// flow's state (e.g. a TCP segment without SYN and no tracked flow).
	DropInvalid
	// DropTableFull is a new flow refused because the table is full.
	DropTableFull
	// DropCut is a packet of a tracked flow that the current policy no
	// longer allows; the flow is removed.
	DropCut
	// DropFragment is a non-first fragment without an accepted first one.
	DropFragment
	numVerdicts
)

// String names the verdict (the drop reason for drops).
func (v Verdict) String() string {
	switch v {
	case Accept:
		return "accept"
	case AcceptStateless:
		return "accept_stateless"
	case DropNoRule:
		return "no_rule"
	case DropInvalid:
		return "invalid"
	case DropTableFull:
		return "table_full"
	case DropCut:
		return "cut"
	case DropFragment:
		return "fragment"
	}
	return "unknown"
}

// Allowed reports whether the packet passes.
func (v Verdict) Allowed() bool { return v <= AcceptStateless }

// Timeouts, as Linux nf_conntrack's defaults.
const (
	sec               = int64(1e9)
	TimeoutSynSent    = 120 * sec
	TimeoutSynRecv    = 60 * sec
	TimeoutEstablish  = 5 * 24 * 3600 * sec
	TimeoutFinWait    = 120 * sec
	TimeoutCloseWait  = 60 * sec
	TimeoutLastAck    = 30 * sec
	TimeoutTimeWait   = 120 * sec
	TimeoutClose      = 10 * sec
	TimeoutUDP        = 30 * sec
	TimeoutUDPAssured = 180 * sec
	TimeoutICMP       = 30 * sec
	TimeoutOther      = 600 * sec
	TimeoutFragment   = 30 * sec
)

// Decide decides on one Ethernet frame crossing the vNIC in direction dir
// under policy pol (not nil) at monotonic time now (ns). It does not
// allocate, except when a new flow makes the table grow (amortized:
// doubling). Expired entries are collected by Check (and by an insertion
// into a full table), not per packet: the collection walks the table in
// slot order, which on a table larger than the caches costs each packet
// misses of its own.
func (c *Conntrack) Decide(frame []byte, dir Direction, pol *Policy, now int64) Verdict {
	return c.filter(frame, dir, pol, now)
}

func (c *Conntrack) recordFragment(fk *flowKey, id uint32, proto uint8, now int64) {
	k := fragKey(fk, id, proto)
	h := c.hash(&k)
	i, free := c.find(&k, h)
	var e *entry
	if i >= 0 {
		e = &c.slots[i]
	} else {
		var ok bool
		if e, ok = c.insert(&k, h, free, now); !ok {
			return // following fragments will be dropped and counted
		}
		e.state = stFrag
	}
	e.expires = now + TimeoutFragment
}

const tcpSynMask = packet.TCPFlagSYN | packet.TCPFlagACK | packet.TCPFlagRST | packet.TCPFlagFIN

func (c *Conntrack) track(t *tuple, pol *Policy, now int64) Verdict {
	var k key
	srcIsA := canonical(&t.fk, &k)
	h := c.hash(&k)
	i, free := c.find(&k, h)
	if i >= 0 {
		e := &c.slots[i]
		switch {
		case e.expires <= now:
			c.deleteAt(uint32(i))
		case t.fk.proto == packet.ProtoTCP && (e.state == TCPTimeWait || e.state == TCPClose) &&
			t.tcpFlags&tcpSynMask == packet.TCPFlagSYN:
			c.deleteAt(uint32(i)) // reopened: a new connection
		default:
			v := hit(e, t, srcIsA, pol, now)
			if v == DropCut {
				c.deleteAt(uint32(i))
			} else if v == Accept {
				c.last = Ref{epoch: c.epoch, slot: uint32(i), srcIsA: srcIsA, ok: true}
			}
			return v
		}
		_, free = c.find(&k, h)
	}
	if t.fk.proto == packet.ProtoTCP && t.tcpFlags&tcpSynMask != packet.TCPFlagSYN {
		if c.canPickup(t, now) {
			return c.pickup(t, &k, h, free, srcIsA, pol, now)
		}
		return DropInvalid
	}
	if !classify(pol, &t.fk) {
		return DropNoRule
	}
	e, ok := c.insert(&k, h, free, now)
	if !ok {
		return DropTableFull
	}
	e.gen = pol.Generation()
	if srcIsA {
		e.flags |= flOrigIsA
	}
	if t.fk.dir == FromVM {
		e.flags |= flOrigFrom
	}
	switch {
	case t.fk.proto == packet.ProtoTCP:
		e.state = TCPSynSent
		e.expires = now + TimeoutSynSent
		e.win[0].init(&t.seg, segEnd(&t.seg, t.tcpFlags), true)
		if t.tcpFrag {
			e.flags |= flLiberal
		}
	case t.fk.proto == packet.ProtoUDP:
		e.state = stUDP
		e.expires = now + TimeoutUDP
	case t.isICMP:
		e.state = stICMP
		e.expires = now + TimeoutICMP
	default:
		e.state = stOther
		e.expires = now + TimeoutOther
	}
	c.last = Ref{epoch: c.epoch, slot: c.inserted, srcIsA: srcIsA, ok: true}
	return Accept
}

// hit updates tracked entry e for packet t and returns its verdict; on
// DropCut the caller removes e. It reads and writes e only (Explain runs
// it on a copy).
func hit(e *entry, t *tuple, srcIsA bool, pol *Policy, now int64) Verdict {
	fromOrig := srcIsA == (e.flags&flOrigIsA != 0)
	origDir := ToVM
	if e.flags&flOrigFrom != 0 {
		origDir = FromVM
	}
	if fromOrig != (t.fk.dir == origDir) {
		// An originator's packet in the responder's direction (or the
		// reverse): spoofed or looped.
		if e.k.a != e.k.b {
			return DropInvalid
		}
	}
	if g := pol.Generation(); e.gen != g {
		ok := origKey(e)
		if e.gen == genCut || !classify(pol, &ok) {
			return DropCut
		}
		e.gen = g
	}
	if !fromOrig {
		e.flags |= flReplied
	}
	switch e.state {
	case stUDP:
		if e.flags&flReplied != 0 {
			e.expires = now + TimeoutUDPAssured
		} else {
			e.expires = now + TimeoutUDP
		}
	case stICMP:
		e.expires = now + TimeoutICMP
	case stOther:
		e.expires = now + TimeoutOther
	default:
		if t.tcpFrag {
			e.flags |= flLiberal
		}
		if !tcpWindow(e, fromOrig, &t.seg, t.tcpFlags) || !tcpStep(e, fromOrig, t.tcpFlags) {
			return DropInvalid
		}
		e.expires = now + tcpTimeout(e.state)
		if e.flags&flPickup != 0 {
			// Picked up: confirmed by its other direction only.
			if fromOrig {
				e.expires = min(e.expires, now+TimeoutPickup)
			} else {
				e.flags &^= flPickup
			}
		}
	}
	return Accept
}

// Check examines up to budget slots, continuing where the previous call
// stopped: it removes expired entries and re-evaluates flows admitted under
// another generation than pol's, cutting those pol no longer allows. It
// returns the number of flows cut. Decide already cuts such a flow at its
// next packet; Check does it proactively after a policy change, in bounded
// steps, so that a cut flow stops at once even if the policy changes back.
// A flow Check cuts stays marked for at most cutLinger (10 s): its next
// packet is dropped as DropCut (not DropInvalid) and removes it, and a
// full table evicts it first. Same concurrency contract as Decide.
func (c *Conntrack) Check(pol *Policy, now int64, budget int) (cut int) {
	c.shrink()
	g := pol.Generation()
	for ; budget > 0 && c.count > 0; budget-- {
		i := c.checkCursor & c.mask
		e := &c.slots[i]
		switch {
		case e.state == stEmpty || e.state == stFrag && e.expires > now:
		case e.expires <= now:
			c.deleteAt(i)
			continue
		case e.gen != g && e.gen != genCut:
			ok := origKey(e)
			if !classify(pol, &ok) {
				// Keep the flow, marked, until its next packet so that
				// packet counts as cut, not as invalid; it lingers at
				// most cutLinger and is the first to be evicted.
				e.gen = genCut
				e.expires = min(e.expires, now+cutLinger)
				cut++
				break
			}
			e.gen = g
		}
		c.checkCursor++
	}
	return cut
}
