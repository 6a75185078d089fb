package dataplane

import (
	"fmt"
	"slices"
	"time"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/packet"
)

const (
	// dropLogSize is the number of drops a vNIC's log keeps per worker.
	dropLogSize = 32
	// dropSnap is the number of bytes of a dropped frame kept: the
	// Ethernet, IP (with a few IPv6 extension headers) and transport
	// headers.
	dropSnap = 96
)

// dropRec is one dropped frame: when, why, its length and first bytes.
type dropRec struct {
	at     int64 // wall clock, ns
	length uint32
	n      uint8 // bytes kept in head
	reason dropReason
	head   [dropSnap]byte
}

// dropRing holds the last dropLogSize drops one worker recorded for a
// vNIC. Only that worker writes it; the control plane reads it on that
// worker (Engine.onWorker).
type dropRing struct {
	next uint64 // drops recorded; the next goes to recs[next%dropLogSize]
	recs [dropLogSize]dropRec
}

// dropLog is a vNIC's log of its last dropped frames: one ring per
// worker, so that any worker records a drop without a lock.
type dropLog struct {
	rings []dropRing
}

func newDropLog(workers int) *dropLog {
	return &dropLog{rings: make([]dropRing, workers)}
}

// recordDrop logs a frame of vNIC p's dropped by worker w for reason r:
// a copy of its first bytes into w's ring of p, no lock, no allocation.
func (w *worker) recordDrop(p *nicPort, r dropReason, frame []byte) {
	if p == nil || p.drops == nil || w.id >= len(p.drops.rings) {
		return
	}
	ring := &p.drops.rings[w.id]
	rec := &ring.recs[ring.next%dropLogSize]
	ring.next++
	rec.at = w.now
	rec.length = uint32(len(frame))
	rec.reason = r
	rec.n = uint8(copy(rec.head[:], frame))
}

// Drops returns the last n frames vNIC id dropped (at most dropLogSize
// per worker), oldest first, each with its time, drop reason (as in
// Counters), length and a one-line decode of its first bytes. Each
// worker copies its own ring between two batches: the data path is not
// locked.
func (e *Engine) Drops(id string, n int) ([]model.Drop, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ent, ok := e.nics[id]
	if !ok {
		return nil, fmt.Errorf("dataplane: vNIC %q does not exist", id)
	}
	log := ent.p.drops
	var recs []dropRec
	for wi := range log.rings {
		ring := &log.rings[wi]
		var got []dropRec
		if err := e.onWorker(wi, func(int64) {
			k := min(ring.next, dropLogSize)
			for i := ring.next - k; i < ring.next; i++ {
				got = append(got, ring.recs[i%dropLogSize])
			}
		}); err != nil {
			return nil, fmt.Errorf("dataplane: drops of vNIC %s: %w", id, err)
		}
		recs = append(recs, got...)
	}
	slices.SortStableFunc(recs, func(a, b dropRec) int {
		switch {
		case a.at < b.at:
			return -1
		case a.at > b.at:
			return 1
		}
		return 0
	})
	if n >= 0 && len(recs) > n {
		recs = recs[len(recs)-n:]
	}
	out := make([]model.Drop, len(recs))
	for i, r := range recs {
		out[i] = model.Drop{
			Time:   time.Unix(0, r.at),
			Reason: dropName(r.reason),
			Length: int(r.length),
			Decode: packet.DescribeHead(r.head[:r.n], int(r.length)),
		}
	}
	return out, nil
}
