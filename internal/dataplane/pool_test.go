package dataplane

import (
	"testing"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// TestDryPoolKeepsFrames: while a worker's buffer pool is empty it reads
// no port; the frames wait in their port, are not counted as drops, and
// arrive once buffers come back. The skipped reads are counted on the
// worker.
func TestDryPoolKeepsFrames(t *testing.T) {
	h := newHarness(t, Config{}, true)
	a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
	b := h.add(t, nicOf("b", mac(2), 5, "10.0.0.2"))
	w := h.e.workers[0]
	h.step()

	// Take every buffer: those of the pool and those set for the next read.
	var held []*packet.Buf
	for bf := w.pool.Get(); bf != nil; bf = w.pool.Get() {
		held = append(held, bf)
	}
	held = append(held, w.rx[:w.rxn]...)
	w.rxn = 0

	a.inject(udpFlow(t, true, 1000, 7))
	h.step()
	if got := len(b.take()); got != 0 {
		t.Fatalf("%d frames delivered with no buffer to read them into", got)
	}
	skipped := w.poolEmpty.Load()
	if skipped == 0 {
		t.Error("reads skipped for lack of buffers not counted on the worker")
	}
	checkMetrics(t, h.e, []metricWant{{"butterfly_worker_pool_empty_total", map[string]string{"worker": "0"}, float64(skipped)}})
	c, err := h.e.Counters("a")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Drops) != 0 || c.RxPackets != 0 {
		t.Errorf("vNIC a's counters %+v, want no frame received and no drop: its frame waits in the port", c)
	}

	for _, bf := range held {
		w.pool.Put(bf)
	}
	h.step()
	if got := len(b.take()); got != 1 {
		t.Fatalf("%d frames delivered after the buffers came back, want 1", got)
	}
	if c, _ := h.e.Counters("a"); len(c.Drops) != 0 || c.RxPackets != 1 {
		t.Errorf("vNIC a's counters %+v, want 1 frame received, no drop", c)
	}
}
