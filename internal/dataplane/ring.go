package dataplane

import (
	"sync/atomic"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// handoff is a frame passed from one worker to the worker that owns its
// output port: a vNIC (to) or the underlay (to == nil); or, with fromVM,
// a frame the vNIC to sent, read from one of its queues by another
// worker, for its home worker to process (see rxShare).
type handoff struct {
	b      *packet.Buf
	to     *nicPort
	fromVM bool
}

// ring is a single-producer single-consumer queue between two workers.
type ring struct {
	head atomic.Uint64 // next to pop (consumer)
	_    [56]byte
	tail atomic.Uint64 // next to push (producer)
	_    [56]byte
	mask uint64
	it   []handoff
}

func newRing(size int) *ring {
	n := 1
	for n < size {
		n <<= 1
	}
	return &ring{mask: uint64(n - 1), it: make([]handoff, n)}
}

// push appends h; false when the ring is full.
func (r *ring) push(h handoff) bool {
	t := r.tail.Load()
	if t-r.head.Load() > r.mask {
		return false
	}
	r.it[t&r.mask] = h
	r.tail.Store(t + 1)
	return true
}

// pop removes the oldest entry.
func (r *ring) pop() (handoff, bool) {
	h := r.head.Load()
	if h == r.tail.Load() {
		return handoff{}, false
	}
	x := r.it[h&r.mask]
	r.it[h&r.mask] = handoff{}
	r.head.Store(h + 1)
	return x, true
}

// empty reports whether the ring has nothing to pop.
func (r *ring) empty() bool { return r.head.Load() == r.tail.Load() }
