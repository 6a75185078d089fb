package vhostuser

import (
	"testing"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// benchPortOf makes a port for the benchmarks, without socket or epoll:
// it never rearms (frames are always there). It marks its batches as
// Listen's ports do (see canFence).
func benchPortOf() *Port {
	p := &Port{armOnSleep: true, fenced: canFence()}
	p.pairs.Store(1)
	p.r0 = Reader{p: p, n: 1, epfd: -1}
	p.rd = []*Reader{&p.r0}
	return p
}

// benchPort measures batches of 32 64-byte frames through the port's
// ReadBatch (guest transmit) or WriteBatch (guest receive) on a split or
// packed ring in fake guest memory: the ring's work and the port's
// around it. The fake driver runs inside the timed loop.
func benchPort(b *testing.B, packed, rx bool) {
	p := benchPortOf()
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

// benchPairs is benchPort on two split queue pairs: ReadBatch takes 16
// frames from each transmit ring; WriteBatch spreads 32 frames of 32
// UDP flows over both receive rings by flow hash (100-byte frames).
func benchPairs(b *testing.B, rx bool) {
	p := benchPortOf()
	p.pairs.Store(2)
	g := newFakeGuest(b, 256)
	// Room for the buffers of four rings.
	g.mem = make([]byte, bufArea+4*int(g.num)*slotSize)
	g.table = &memTable{regions: []memRegion{{gpa: gpaBase, uaddr: uaBase, mem: g.mem}}}
	first := 1
	if rx {
		first = 0
	}
	for _, ring := range []int{first, first + 2} {
		var q queue = g.vring(ring, netFeatures)
		p.rings[ring].Store(&q)
	}
	bufs := newBufs(32)
	var per [2]int // frames per receive ring: the flows hash the same way each time
	for i, x := range bufs {
		udpFrame(x, uint16(i), 0)
		per[packet.FlowHash(x.Bytes())%2]++
	}
	pkt := append(hdr12(packet.VNetHdr{}, 0), frameOf(64, 0)...)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var n int
		if rx {
			g.postRxOn(0, per[0], 2048)
			g.postRxOn(2, per[1], 2048)
			n, _, _ = p.WriteBatch(bufs)
		} else {
			for j := range 32 {
				g.postTxOn(1+2*(j%2), pkt, 4096)
			}
			n, _ = p.ReadBatch(bufs)
		}
		if n != 32 {
			b.Fatalf("batch of %d", n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(32*b.N), "ns/frame")
}

func BenchmarkPortRead64Split2Pairs(b *testing.B)   { benchPairs(b, false) }
func BenchmarkPortWrite100Split2Pairs(b *testing.B) { benchPairs(b, true) }

// BenchmarkPortPoll measures what a worker's poll of a vhost-user port
// costs when the guest has sent nothing (empty) or one 64-byte frame
// (one, as with one frame in flight): with the batch marks as plain
// stores where the kernel has membarrier (fenced) and as atomic adds.
func BenchmarkPortPoll(b *testing.B) {
	for _, c := range []struct {
		name          string
		frames        int
		fenced, needs bool
	}{
		{"empty/atomic", 0, false, false},
		{"empty/fenced", 0, true, true},
		{"one/atomic", 1, false, false},
		{"one/fenced", 1, true, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			p := benchPortOf()
			if c.needs && !p.fenced {
				b.Skip("no membarrier private expedited command here")
			}
			p.fenced = c.fenced
			g := newFakeGuest(b, 256)
			var q queue = g.vring(txRing, netFeatures)
			p.rings[txRing].Store(&q)
			bufs := newBufs(32)
			pkt := append(hdr12(packet.VNetHdr{}, 0), frameOf(64, 0)...)
			for b.Loop() {
				for range c.frames {
					g.postTx(pkt, 4096)
				}
				if n, _ := p.ReadBatch(bufs); n != c.frames {
					b.Fatalf("batch of %d, want %d", n, c.frames)
				}
			}
		})
	}
}
