package l2

import (
	"math/bits"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// probe is the number of slots of a bucket; a MAC may occupy any of them.
const probe = 8

const (
	keyUsed = 1 << 48
	tagBits = 56
)

// Table is a fixed-size MAC address table with aging, shared by the
// workers of a VNI without locks.
//
// Concurrency: each slot is guarded by a sequence counter (a seqlock).
// A writer claims a slot with one compare-and-swap from an even to an odd
// count and releases it by storing the next even count; a writer that
// loses the race does not wait, it skips the update (learning is
// best-effort and the next frame from the same MAC learns again). Readers
// never write: they read the count, the fields, and the count again, and
// retry a few times before reporting a miss (which floods, a safe
// fallback). So any number of workers may learn and look up at once, and
// the control plane may purge entries, with no lock and no allocation.
// A MAC learned concurrently by two workers may briefly occupy two
// slots; the stale one ages out.
//
// A MAC lives in one bucket of probe slots chosen by its hash; when the
// bucket is full the least recently refreshed entry is evicted. The keys
// of a bucket are stored together (one cache line), the values apart. Each entry holds
// two 64-bit values and an 8-bit tag chosen by the user (a port index,
// a VTEP address). An entry takes 40 bytes and slots are not padded to
// cache lines: with thousands of VNIs memory matters more than the rare
// false sharing between neighbouring slots.
type Table struct {
	// keys[i] is the key of slots[i], kept apart so that the probe of a
	// bucket reads one cache line of keys.
	keys    []atomic.Uint64 // MAC | keyUsed | tag<<tagBits; 0 = empty
	slots   []slot
	bmask   uint64 // number of buckets - 1
	maxAge  int64
	refresh int64
	// ver counts the writes that change what a lookup or a learning may
	// find (a key or value changed, an aged entry revived, an entry
	// removed), so that a Hint can tell whether its entries still hold.
	// Refreshes of live entries do not change it.
	ver atomic.Uint64
}

type slot struct {
	seq  atomic.Uint64
	seen atomic.Int64
	v0   atomic.Uint64
	v1   atomic.Uint64
}

// NewTable returns a table of at least size slots (rounded up to a power
// of two, at least probe). Entries not refreshed for maxAge are ignored
// and reused; maxAge <= 0 disables aging.
func NewTable(size int, maxAge time.Duration) *Table {
	n := probe
	for n < size {
		n <<= 1
	}
	t := &Table{keys: make([]atomic.Uint64, n), slots: make([]slot, n), bmask: uint64(n/probe - 1), maxAge: int64(maxAge)}
	// A live entry with unchanged values is rewritten at most this
	// often, so that steady traffic does not bounce the cache line
	// between workers.
	t.refresh = int64(maxAge) / 8
	if t.refresh <= 0 || t.refresh > int64(time.Second) {
		t.refresh = int64(time.Second)
	}
	return t
}

// Size returns the number of slots.
func (t *Table) Size() int { return len(t.slots) }

func hashMAC(m uint64) uint64 {
	hi, lo := bits.Mul64(m^0x9e3779b97f4a7c15, 0xbf58476d1ce4e5b9)
	return hi ^ lo
}

// bucket returns the index of the first slot of m's bucket.
func (t *Table) bucket(m uint64) int { return int(hashMAC(m)&t.bmask) * probe }

func (t *Table) live(seen, now int64) bool {
	return t.maxAge <= 0 || now-seen <= t.maxAge
}

// Learn records mac -> (v0, v1, tag) at time now (monotonic
// nanoseconds). It returns false if the update was skipped because
// another writer held the slot.
func (t *Table) Learn(mac packet.MAC, v0, v1 uint64, tag uint8, now int64) bool {
	m := mac.Uint64()
	key := m | keyUsed | uint64(tag)<<tagBits
	base := t.bucket(m)
	keys := t.keys[base : base+probe]
	empty, oldest := -1, -1
	var oldestSeen int64
	var oldestKey uint64
	for i := range keys {
		k := keys[i].Load()
		if k == 0 {
			if empty < 0 {
				empty = i
			}
			continue
		}
		if k&(keyUsed-1) == m {
			s := &t.slots[base+i]
			if k == key && s.v0.Load() == v0 && s.v1.Load() == v1 && now-s.seen.Load() < t.refresh {
				return true
			}
			return t.write(base+i, k, key, v0, v1, now)
		}
		if seen := t.slots[base+i].seen.Load(); oldest < 0 || seen < oldestSeen {
			oldest, oldestSeen, oldestKey = i, seen, k
		}
	}
	if empty >= 0 {
		return t.write(base+empty, 0, key, v0, v1, now)
	}
	return t.write(base+oldest, oldestKey, key, v0, v1, now)
}

// write updates slot i if its key is still expect.
func (t *Table) write(i int, expect, key, v0, v1 uint64, now int64) bool {
	s := &t.slots[i]
	q := s.seq.Load()
	if q&1 != 0 || !s.seq.CompareAndSwap(q, q+1) {
		return false
	}
	ok := t.keys[i].Load() == expect
	if ok {
		if expect != key || s.v0.Load() != v0 || s.v1.Load() != v1 || !t.live(s.seen.Load(), now) {
			t.ver.Add(1)
		}
		s.v0.Store(v0)
		s.v1.Store(v1)
		s.seen.Store(now)
		t.keys[i].Store(key)
	}
	s.seq.Store(q + 2)
	return ok
}

// Lookup returns the live entry of mac at time now.
func (t *Table) Lookup(mac packet.MAC, now int64) (v0, v1 uint64, tag uint8, ok bool) {
	m := mac.Uint64()
	base := t.bucket(m)
	keys := t.keys[base : base+probe]
	for i := range keys {
		if k := keys[i].Load(); k == 0 || k&(keyUsed-1) != m {
			continue
		}
		s := &t.slots[base+i]
		for try := 0; try < 4; try++ {
			q := s.seq.Load()
			if q&1 != 0 {
				continue
			}
			k := keys[i].Load()
			a, b, seen := s.v0.Load(), s.v1.Load(), s.seen.Load()
			if s.seq.Load() != q {
				continue
			}
			if k != 0 && k&(keyUsed-1) == m && t.live(seen, now) {
				return a, b, uint8(k >> tagBits), true
			}
			break
		}
	}
	return 0, 0, 0, false
}

// claim takes slot i for a control-plane update, waiting for writers
// (they hold a slot for a few stores, but may be preempted meanwhile:
// yield rather than spin).
func (t *Table) claim(i int) uint64 {
	s := &t.slots[i]
	for {
		q := s.seq.Load()
		if q&1 == 0 && s.seq.CompareAndSwap(q, q+1) {
			return q
		}
		runtime.Gosched()
	}
}

// RemoveIf deletes the entries for which match returns true and returns
// how many it deleted. It is meant for the control plane (a removed port
// or VTEP); it is safe to call while workers learn and look up.
func (t *Table) RemoveIf(match func(mac packet.MAC, v0, v1 uint64, tag uint8) bool) int {
	n := 0
	for i := range t.slots {
		if t.keys[i].Load() == 0 {
			continue
		}
		q := t.claim(i)
		s := &t.slots[i]
		if k := t.keys[i].Load(); k != 0 && match(packet.MACFromUint64(k&(keyUsed-1)), s.v0.Load(), s.v1.Load(), uint8(k>>tagBits)) {
			t.ver.Add(1)
			t.keys[i].Store(0)
			n++
		}
		s.seq.Store(q + 2)
	}
	return n
}

// Remove deletes mac's entries and reports whether there was one.
func (t *Table) Remove(mac packet.MAC) bool {
	m := mac.Uint64()
	base := t.bucket(m)
	found := false
	for i := base; i < base+probe; i++ {
		if k := t.keys[i].Load(); k == 0 || k&(keyUsed-1) != m {
			continue
		}
		q := t.claim(i)
		if k := t.keys[i].Load(); k != 0 && k&(keyUsed-1) == m {
			t.ver.Add(1)
			t.keys[i].Store(0)
			found = true
		}
		t.slots[i].seq.Store(q + 2)
	}
	return found
}

// Flush deletes every entry.
func (t *Table) Flush() {
	t.RemoveIf(func(packet.MAC, uint64, uint64, uint8) bool { return true })
}

// Len returns the number of live entries at time now.
func (t *Table) Len(now int64) int {
	n := 0
	for i := range t.slots {
		if t.keys[i].Load() != 0 && t.live(t.slots[i].seen.Load(), now) {
			n++
		}
	}
	return n
}

// Range calls fn for each live entry at time now, until fn returns false.
// Entries changed during the walk may be seen in either state.
func (t *Table) Range(now int64, fn func(mac packet.MAC, v0, v1 uint64, tag uint8, seen int64) bool) {
	for i := range t.slots {
		s := &t.slots[i]
		q := s.seq.Load()
		k := t.keys[i].Load()
		a, b, seen := s.v0.Load(), s.v1.Load(), s.seen.Load()
		if q&1 != 0 || s.seq.Load() != q || k == 0 || !t.live(seen, now) {
			continue
		}
		if !fn(packet.MACFromUint64(k&(keyUsed-1)), a, b, uint8(k>>tagBits), seen) {
			return
		}
	}
}

// slotOf returns the slot Lookup(mac, now) reads when it finds mac with
// values (v0, 0) and tag 0, and -1 when it would find anything else.
// With first, that slot must also be the first one holding mac, the one
// Learn updates.
func (t *Table) slotOf(mac packet.MAC, v0 uint64, now int64, first bool) int {
	m := mac.Uint64()
	base := t.bucket(m)
	for i := base; i < base+probe; i++ {
		k := t.keys[i].Load()
		if k == 0 || k&(keyUsed-1) != m {
			continue
		}
		s := &t.slots[i]
		q := s.seq.Load()
		a, b, seen := s.v0.Load(), s.v1.Load(), s.seen.Load()
		if q&1 != 0 || s.seq.Load() != q || t.keys[i].Load() != k {
			return -1
		}
		if !t.live(seen, now) {
			if first {
				return -1
			}
			continue
		}
		if k != m|keyUsed || a != v0 || b != 0 {
			return -1
		}
		return i
	}
	return -1
}
