package firewall

import (
	"math/bits"
	"math/rand/v2"
	"sync/atomic"
)

// key is a canonical flow key: (a, pa) <= (b, pb).
type key struct {
	a, b   addr
	pa, pb uint16
	proto  uint8
	kind   uint8 // family | direction<<1 (fragments only) | kindFrag
}

// equal reports whether k and o are the same key, field by field (see
// canonical: a whole-struct comparison loads the key with wide loads).
func (k *key) equal(o *key) bool {
	return k.a.hi == o.a.hi && k.a.lo == o.a.lo && k.b.hi == o.b.hi && k.b.lo == o.b.lo &&
		k.pa == o.pa && k.pb == o.pb && k.proto == o.proto && k.kind == o.kind
}

const kindFrag = 0x80

// Entry flags.
const (
	flOrigIsA      = 1 << iota // the originator is endpoint a
	flOrigFrom                 // the first packet was FromVM
	flReplied                  // a packet from the responder was seen
	flFinOrig                  // the originator sent FIN
	flFinReply                 // the responder sent FIN
	flFirstFinOrig             // the first FIN came from the originator
	flLiberal                  // TCP windows are learnt, not enforced
	// flPickup (1<<7) is in pickup.go.
)

type entry struct {
	k       key
	expires int64
	gen     uint64
	hash    uint32
	state   TCPState
	flags   uint8
	// win is the TCP window state of the originator (0) and the
	// responder (1).
	win [2]tcpWin
}

// Conntrack is one vNIC's connection-tracking zone. See the package
// documentation for its rules and its concurrency contract.
type Conntrack struct {
	slots    []entry
	mask     uint32
	seed     uint64
	count    int
	capacity int
	// maxSlots is the size of the table at capacity (load <= 1/2).
	maxSlots int
	cursor   uint32
	// checkCursor is Check's position.
	checkCursor uint32
	limit       *Limit
	// pickupUntil ends the loose pickup of TCP connections (pickup.go).
	pickupUntil int64
	// evicted counts flows earlyDrop removed.
	evicted atomic.Uint64
	// pickedUp counts the connections pickup tracked.
	pickedUp atomic.Uint64
	// epoch counts the changes that move or remove entries (deleteAt,
	// resize): a Ref taken in another epoch is stale.
	epoch uint64
	// last is the entry the current DecideRef's packet hit or created;
	// inserted is the slot of the last entry insert created.
	last     Ref
	inserted uint32
}

// minSlots is the size of an empty zone's table (3 KB).
const minSlots = 32

// NewConntrack returns an empty zone holding at most capacity flows
// (minimum 1). Its table starts small (minSlots slots) and grows on
// demand, doubling when it is half full, up to 2 to 4 slots per flow of
// capacity; Check shrinks it again when it is mostly empty.
func NewConntrack(capacity int) *Conntrack {
	capacity = max(capacity, 1)
	n := 16
	for n < 2*capacity {
		n <<= 1
	}
	c := &Conntrack{seed: rand.Uint64() | 1, capacity: capacity, maxSlots: n}
	c.resize(min(minSlots, n))
	return c
}

// resize moves the entries into a new table of n slots (a power of two
// larger than the count). The entries keep their state; only their slots
// change.
func (c *Conntrack) resize(n int) {
	old := c.slots
	c.epoch++
	c.slots = make([]entry, n)
	c.mask = uint32(n - 1)
	for i := range old {
		e := &old[i]
		if e.state == stEmpty {
			continue
		}
		j := e.hash & c.mask
		for c.slots[j].state != stEmpty {
			j = (j + 1) & c.mask
		}
		c.slots[j] = *e
	}
}

// shrink makes a table less than 1/8 full smaller, down to minSlots,
// leaving it at most 1/4 full: it grows again only once its count has
// doubled, so it does not oscillate.
func (c *Conntrack) shrink() {
	n := len(c.slots)
	if n <= minSlots || c.count*8 >= n {
		return
	}
	for n/2 >= minSlots && c.count*4 <= n/2 {
		n >>= 1
	}
	c.resize(n)
}

// Limit bounds the total number of entries of several zones (e.g. all the
// vNICs of a host). It is safe for concurrent use; it costs an atomic
// operation per created or removed entry, none per packet of a tracked
// flow.
type Limit struct {
	max int64
	n   atomic.Int64
}

// NewLimit returns a limit of max entries in total.
func NewLimit(max int) *Limit { return &Limit{max: int64(max)} }

// Used returns the number of entries held under the limit.
func (l *Limit) Used() int { return int(l.n.Load()) }

func (l *Limit) take() bool {
	if l.n.Add(1) > l.max {
		l.n.Add(-1)
		return false
	}
	return true
}

// SetLimit makes the zone's entries count against l too; call it before
// the first Decide. A zone at l's limit drops new connections
// (DropTableFull) like a full table.
func (c *Conntrack) SetLimit(l *Limit) { c.limit = l }

// Release empties the zone and returns its entries to its Limit; call it
// when the vNIC is deleted.
func (c *Conntrack) Release() {
	if c.limit != nil {
		c.limit.n.Add(-int64(c.count))
	}
	c.slots = nil
	c.count = 0
	c.resize(min(minSlots, c.maxSlots))
}

// Len returns the number of entries (flows and fragment records), expired
// ones included until they are swept.
func (c *Conntrack) Len() int { return c.count }

// Capacity returns the maximum number of entries.
func (c *Conntrack) Capacity() int { return c.capacity }

// Evicted returns how many flows were evicted from a full table. Safe for
// concurrent use.
func (c *Conntrack) Evicted() uint64 { return c.evicted.Load() }

func mix(h, v uint64) uint64 {
	h ^= v
	h *= 0x9e3779b97f4a7c15
	return h ^ h>>29
}

func (c *Conntrack) hash(k *key) uint32 {
	// Two chains, one per endpoint, seeded differently: their
	// multiplications overlap, three in a row instead of five.
	x := mix(mix(c.seed, k.a.hi), k.a.lo)
	y := mix(mix(bits.RotateLeft64(c.seed, 32)^0x5851f42d4c957f2d, k.b.hi), k.b.lo)
	h := mix(x^y, uint64(k.pa)<<32|uint64(k.pb)<<16|uint64(k.proto)<<8|uint64(k.kind))
	return uint32(h>>32) ^ uint32(h)
}

// find returns the slot of k, or -1 and the first free slot.
func (c *Conntrack) find(k *key, h uint32) (int, int) {
	i := h & c.mask
	for {
		e := &c.slots[i]
		if e.state == stEmpty {
			return -1, int(i)
		}
		if e.hash == h && e.k.equal(k) {
			return int(i), -1
		}
		i = (i + 1) & c.mask
	}
}

// deleteAt empties slot i and shifts back the entries of its cluster.
func (c *Conntrack) deleteAt(i uint32) {
	c.epoch++
	c.count--
	if c.limit != nil {
		c.limit.n.Add(-1)
	}
	for {
		c.slots[i].state = stEmpty
		j := i
		for {
			j = (j + 1) & c.mask
			e := &c.slots[j]
			if e.state == stEmpty {
				return
			}
			home := e.hash & c.mask
			// Move e to i unless its home lies cyclically in (i, j].
			if i <= j {
				if home <= i || home > j {
					break
				}
			} else if home <= i && home > j {
				break
			}
		}
		c.slots[i] = c.slots[j]
		i = j
	}
}

// sweep examines n slots for expired entries.
func (c *Conntrack) sweep(now int64, n int) {
	if c.count == 0 {
		return
	}
	for ; n > 0; n-- {
		i := c.cursor & c.mask
		e := &c.slots[i]
		if e.state != stEmpty && e.expires <= now {
			c.deleteAt(i) // re-examine slot i: an entry may have moved in
			continue
		}
		c.cursor++
	}
}

// genCut marks a flow Check found no longer allowed: its next packet is
// dropped as DropCut and removes it. Policy generations never reach it.
const genCut = ^uint64(0)

// cutLinger bounds how long a flow marked by Check stays in the table.
const cutLinger = TimeoutClose

// earlyDropScan is the number of slots earlyDrop examines.
const earlyDropScan = 64

// evictable reports whether e is a flow a peer opened towards the VM that
// is not yet assured: a TCP connection short of ESTABLISHED, or another
// flow the VM never answered. Such flows are what a flood of new
// connections from outside leaves behind. A picked-up TCP flow whose
// other direction was not seen yet (pickup.go) is evictable too, in
// either direction.
func (e *entry) evictable() bool {
	if e.gen == genCut || e.flags&flPickup != 0 {
		return true
	}
	if e.flags&flOrigFrom != 0 {
		return false
	}
	switch {
	case e.state == TCPSynSent || e.state == TCPSynRecv || e.state == TCPClose:
		return true
	case e.state >= stUDP && e.state <= stOther:
		return e.flags&flReplied == 0
	}
	return false
}

// earlyDrop makes room in a full table, like Linux's early drop: among
// the earlyDropScan slots from h's home, it removes the evictable entry
// closest to expiry. So a peer flooding the VM with connections it never
// completes cannot lock the VM out of new connections, while flows the
// VM opened itself and established flows are never evicted (a VM that
// floods the network only fills its own table). It reports whether an
// entry was removed.
func (c *Conntrack) earlyDrop(h uint32) bool {
	victim, found := uint32(0), false
	for n, i := 0, h&c.mask; n < earlyDropScan; n, i = n+1, (i+1)&c.mask {
		e := &c.slots[i]
		if e.state == stEmpty || !e.evictable() {
			continue
		}
		if !found || e.expires < c.slots[victim].expires {
			victim, found = i, true
		}
	}
	if found {
		c.deleteAt(victim)
		c.evicted.Add(1)
	}
	return found
}

// insert adds k at free slot free; false when the table is full.
func (c *Conntrack) insert(k *key, h uint32, free int, now int64) (*entry, bool) {
	if c.count >= c.capacity || c.limit != nil && c.limit.n.Load() >= c.limit.max {
		// Reclaim expired entries first.
		c.sweep(now, 64)
		if c.count >= c.capacity || c.limit != nil && c.limit.n.Load() >= c.limit.max {
			// Then make room at the expense of a peer's half-open flow.
			if !c.earlyDrop(h) {
				return nil, false
			}
		}
		_, free = c.find(k, h) // the sweep may have moved entries
	}
	if (c.count+1)*2 > len(c.slots) && len(c.slots) < c.maxSlots {
		c.resize(2 * len(c.slots))
		_, free = c.find(k, h)
	}
	if c.limit != nil && !c.limit.take() {
		return nil, false
	}
	c.count++
	e := &c.slots[free]
	*e = entry{k: *k, hash: h}
	c.inserted = uint32(free)
	return e, true
}
