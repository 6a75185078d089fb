package firewall

import "github.com/butterfly-go/butterfly/internal/packet"

// Ref names the entry of a tracked flow that a packet used, so that the
// flow's next packets in the same direction reach it without a table
// lookup (the dataplane's flow cache keeps it). A Ref stays valid while
// no entry of its zone moves or is removed: entries move only when one is
// removed or the table is resized, and both change the zone's epoch,
// which the Ref holds. The zero Ref names nothing.
type Ref struct {
	epoch  uint64
	slot   uint32
	srcIsA bool
	ok     bool
}

// Valid reports whether r names an entry (it may be stale: see Usable).
func (r Ref) Valid() bool { return r.ok }

// DecideRef is Decide, and also returns a Ref to the entry the packet hit
// or created when it was accepted (Accept) as a packet of a tracked flow
// that is not a fragment; the zero Ref otherwise.
func (c *Conntrack) DecideRef(frame []byte, dir Direction, pol *Policy, now int64) (Verdict, Ref) {
	c.last = Ref{}
	var p frameInfo
	v, st := c.parse(frame, dir, pol, now, &p)
	if st != parseTrack || p.fragment {
		return c.filterParsed(v, st, &p, pol, now), Ref{}
	}
	v = c.track(&p.t, pol, now)
	if v != Accept {
		return v, Ref{}
	}
	return v, c.last
}

// Usable reports whether Hit may take the place of Decide for a packet
// with TCP flags tcpFlags (0 for other protocols) of the flow whose entry
// r named, at now: r is not stale, and the entry neither expired nor is
// a closed TCP connection that a SYN reopens (Decide replaces those). It
// changes nothing.
func (c *Conntrack) Usable(r Ref, tcpFlags uint8, now int64) bool {
	if !r.ok || r.epoch != c.epoch || int(r.slot) >= len(c.slots) {
		return false
	}
	e := &c.slots[r.slot]
	if e.state == stEmpty || e.state == stFrag || e.expires <= now {
		return false
	}
	return !((e.state == TCPTimeWait || e.state == TCPClose) && tcpFlags&tcpSynMask == packet.TCPFlagSYN)
}

// Hit decides, as Decide would, on a packet crossing the vNIC in
// direction dir whose flow has the entry r names, with the same effects
// on the entry (TCP state and window tracking, timers, policy
// generation: a flow the policy no longer allows is cut and removed).
// tcp is the packet's TCP header and payload (nil for UDP and ICMP
// echo). The caller guarantees what Decide would have found by lookup:
// Usable(r, ...) is true and the packet, not a fragment, has the flow key
// (addresses, protocol, ports or echo identifier) of the packet r was
// returned for, in the same direction.
func (c *Conntrack) Hit(r Ref, tcp packet.TCP, dir Direction, pol *Policy, now int64) Verdict {
	var t tuple
	t.fk.dir = dir
	if tcp != nil {
		t.fk.proto = packet.ProtoTCP
		t.tcpFlags = tcp.Flags()
		t.seg = parseSeg(tcp, t.tcpFlags)
	}
	v := hit(&c.slots[r.slot], &t, r.srcIsA, pol, now)
	if v == DropCut {
		c.deleteAt(r.slot)
	}
	return v
}
