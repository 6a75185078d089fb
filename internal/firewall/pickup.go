package firewall

import "github.com/butterfly-go/butterfly/internal/packet"

// Loose pickup of TCP connections in progress.
//
// A zone that starts without the connections its vNIC had (the daemon
// was killed, so no table was saved) would drop every segment of the
// connections established before as invalid: they are not SYNs and no
// entry knows them. A zone given a pickup deadline (SetPickup) instead
// tracks such a connection from the middle, as Linux's
// nf_conntrack_tcp_loose does, but within bounds:
//
//   - only until the deadline (the engine sets it to the end of a window
//     after the daemon's start, for zones created without saved tables);
//   - only a plain ACK segment (ACK set; SYN, FIN and RST clear), as
//     Linux: a RST or FIN of an unknown connection proves nothing and is
//     dropped as before;
//   - only when the policy allows a new connection from the segment's
//     sender in the segment's direction, the check a SYN gets: pickup
//     admits no packet a SYN in its place would not have been allowed to
//     open. The segment's sender becomes the flow's originator, so a
//     later policy change re-evaluates the flow in that direction.
//
// A picked-up flow is ESTABLISHED and liberal (its windows are learnt,
// never enforced: the window scale was in the SYNs, which were not seen).
// Until a packet of its other direction is seen it lives TimeoutPickup
// and a full table may evict it, like a half-open connection; so
// segments forged during the window cannot fill the table with 5-day
// entries.

// flPickup marks a picked-up flow whose other direction is not seen yet.
const flPickup = 1 << 7

// TimeoutPickup is the lifetime of a picked-up flow until a packet of its
// other direction is seen; then its state's timeout applies.
const TimeoutPickup = 60 * sec

// SetPickup lets the zone pick up TCP connections in progress until
// monotonic time until (ns; the time Decide is given), as described
// above; 0 (the default) never. Same concurrency contract as Decide.
func (c *Conntrack) SetPickup(until int64) { c.pickupUntil = until }

// canPickup reports whether t, a TCP segment other than a SYN that no
// live entry knows, may be picked up at now (the policy aside).
func (c *Conntrack) canPickup(t *tuple, now int64) bool {
	return now < c.pickupUntil && t.tcpFlags&tcpSynMask == packet.TCPFlagACK
}

// pickup tracks t's connection from the middle (canPickup is true; k, h
// and free are t's canonical key, its hash and the free slot find gave).
func (c *Conntrack) pickup(t *tuple, k *key, h uint32, free int, srcIsA bool, pol *Policy, now int64) Verdict {
	if !classify(pol, &t.fk) {
		return DropInvalid
	}
	e, ok := c.insert(k, h, free, now)
	if !ok {
		return DropTableFull
	}
	e.gen = pol.Generation()
	e.flags = flLiberal | flPickup
	if srcIsA {
		e.flags |= flOrigIsA
	}
	if t.fk.dir == FromVM {
		e.flags |= flOrigFrom
	}
	e.state = TCPEstablished
	e.expires = now + TimeoutPickup
	tcpWindow(e, true, &t.seg, t.tcpFlags) // liberal: learns, always passes
	c.pickedUp.Add(1)
	return Accept
}

// PickedUp returns how many connections in progress the zone picked up.
// Safe for concurrent use.
func (c *Conntrack) PickedUp() uint64 { return c.pickedUp.Load() }
