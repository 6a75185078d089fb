package vhostuser

import (
	"testing"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// benchPort measures batches of 32 64-byte frames through the port's
// ReadBatch (guest transmit) or WriteBatch (guest receive) on a split or
// packed ring in fake guest memory: the ring's work and the port's
// around it. The fake driver runs inside the timed loop.
func benchPort(b *testing.B, packed, rx bool) {
	p := &Port{idle: 1 << 20} // never rearms: frames are always there
	ring := txRing
	if rx {
		ring = rxRing
	}
	bufs := newBufs(32)
	for _, x := range bufs {
		x.SetLen(64)
	}
	pkt := append(hdr12(packet.VNetHdr{}, 0), frameOf(64, 0)...)
	var post, reap func()
	if packed {
		g := newPackedGuest(b, 256)
		var q queue = g.ring(ring, netFeatures)
		p.rings[ring].Store(&q)
		post = func() {
			if rx {
				g.postRx(32, 2048)
				return
			}
			for range 32 {
				g.postTx(pkt, 4096)
			}
		}
		reap = func() { g.usedElems(ring) }
	} else {
		g := newFakeGuest(b, 256)
		var q queue = g.vring(ring, netFeatures)
		p.rings[ring].Store(&q)
		post = func() {
			if rx {
				g.postRx(32, 2048)
				return
			}
			for range 32 {
				g.postTx(pkt, 4096)
			}
		}
		reap = func() {}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		post()
		var n int
		if rx {
			n, _, _ = p.WriteBatch(bufs)
		} else {
			n, _ = p.ReadBatch(bufs)
		}
		if n != 32 {
			b.Fatalf("batch of %d", n)
		}
		reap()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(32*b.N), "ns/frame")
}

func BenchmarkPortRead64Split(b *testing.B)   { benchPort(b, false, false) }
func BenchmarkPortWrite64Split(b *testing.B)  { benchPort(b, false, true) }
func BenchmarkPortRead64Packed(b *testing.B)  { benchPort(b, true, false) }
func BenchmarkPortWrite64Packed(b *testing.B) { benchPort(b, true, true) }
