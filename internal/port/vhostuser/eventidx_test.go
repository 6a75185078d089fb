package vhostuser

import (
	"encoding/binary"
	"sync/atomic"
	"testing"

	"github.com/butterfly-go/butterfly/internal/packet"
	"golang.org/x/sys/unix"
)

// Event index fields of the fake guest's rings (EVENT_IDX layout).
func (g *fakeGuest) usedEventAt(ring int) []byte {
	return g.mem[ring*ringArea+0x4000+4+2*int(g.num):]
}

func (g *fakeGuest) availEventAt(ring int) []byte {
	return g.mem[ring*ringArea+0x8000+4+8*int(g.num):]
}

func (g *fakeGuest) setUsedEvent(ring int, v uint16) {
	binary.LittleEndian.PutUint16(g.usedEventAt(ring), v)
}

func (g *fakeGuest) availEvent(ring int) uint16 {
	return binary.LittleEndian.Uint16(g.availEventAt(ring))
}

// startAt puts both indices of ring at idx, as a guest that has run for a
// while would have them, so that index arithmetic wraps in the test.
func (g *fakeGuest) startAt(ring int, idx uint16) {
	binary.LittleEndian.PutUint16(g.mem[ring*ringArea+0x4000+2:], idx)
	binary.LittleEndian.PutUint16(g.mem[ring*ringArea+0x8000+2:], idx)
	g.avail[ring], g.seen[ring] = idx, idx
}

// postTxKick queues one 60-byte frame and returns whether the driver
// must kick, by the driver's side of EVENT_IDX.
func (g *fakeGuest) postTxKick() bool {
	old := g.avail[1]
	g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(60, 0)...), 4096)
	return needEvent(g.availEvent(1), g.avail[1], old)
}

const eventFeatures = netFeatures | 1<<fEventIdx

func TestNeedEvent(t *testing.T) {
	tests := []struct {
		name            string
		event, new, old uint16
		want            bool
	}{
		{"event is the first new entry", 5, 6, 5, true},
		{"event is the last new entry", 9, 10, 5, true},
		{"event not reached", 10, 10, 5, false},
		{"event already passed", 4, 10, 5, false},
		{"nothing new", 5, 5, 5, false},
		{"wraps: event before 0", 65535, 3, 65534, true},
		{"wraps: event after 0", 1, 3, 65534, true},
		{"wraps: event not reached", 3, 3, 65534, false},
		{"wraps: event passed long ago", 65000, 3, 65534, false},
		{"whole ring of 32768 new entries", 100, 32868, 100, true},
		{"event right behind old", 99, 132, 100, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := needEvent(tt.event, tt.new, tt.old); got != tt.want {
				t.Fatalf("needEvent(event %d, new %d, old %d) = %v, want %v", tt.event, tt.new, tt.old, got, tt.want)
			}
		})
	}
}

// TestEventIdxCalls: with EVENT_IDX the device calls once per batch, and
// only when the batch's used entries cross the guest's used_event; the
// flags are ignored both ways.
func TestEventIdxCalls(t *testing.T) {
	tests := []struct {
		name      string
		start     uint16 // used and avail index before the batch
		usedEvent uint16
		frames    int
		want      uint64
	}{
		{"event at the first entry", 10, 10, 4, 1},
		{"event inside the batch", 10, 12, 4, 1},
		{"event at the last entry", 10, 13, 4, 1},
		{"event just past the batch", 10, 14, 4, 0},
		{"event far ahead", 10, 200, 4, 0},
		{"event passed before the batch", 10, 9, 4, 0},
		{"wrap: batch crosses 0, event before", 65534, 65535, 4, 1},
		{"wrap: batch crosses 0, event after", 65534, 1, 4, 1},
		{"wrap: batch crosses 0, event past it", 65534, 2, 4, 0},
		{"wrap: event behind, old index near 0", 65534, 65533, 4, 0},
	}
	for _, tt := range tests {
		for _, rx := range []bool{false, true} {
			name := tt.name + "/dequeue"
			if rx {
				name = tt.name + "/enqueue"
			}
			t.Run(name, func(t *testing.T) {
				g := newFakeGuest(t, 256)
				ring := 1
				if rx {
					ring = 0
				}
				g.startAt(ring, tt.start)
				r := g.vring(ring, eventFeatures)
				r.callFd = eventfdPair(t)
				g.setUsedEvent(ring, tt.usedEvent)
				// NO_INTERRUPT must be ignored with EVENT_IDX.
				g.setAvailFlags(ring, availFNoIntr)
				bufs := newBufs(tt.frames)
				var n int
				if rx {
					g.postRx(tt.frames, 2048)
					for _, b := range bufs {
						b.SetLen(60)
					}
					n, _, _ = r.enqueue(bufs)
				} else {
					for i := 0; i < tt.frames; i++ {
						g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(60, 0)...), 4096)
					}
					n, _, _ = r.dequeue(bufs)
				}
				if n != tt.frames || r.broken {
					t.Fatalf("batch moved %d of %d frames (broken %v)", n, tt.frames, r.broken)
				}
				if u := g.used(ring); len(u) != tt.frames {
					t.Fatalf("%d used entries published, want %d", len(u), tt.frames)
				}
				if c := readEventfd(t, r.callFd); c != tt.want {
					t.Fatalf("calls = %d, want %d", c, tt.want)
				}
				if f := binary.LittleEndian.Uint16(g.mem[ring*ringArea+0x8000:]); f != 0 {
					t.Fatalf("used.flags = %#x with EVENT_IDX, want 0", f)
				}
			})
		}
	}
}

// TestEventIdxCallOncePerBatch: a guest that keeps used_event at the
// next entry (interrupt on every completion) still gets one call per
// batch, and a batch that publishes nothing makes no call.
func TestEventIdxCallOncePerBatch(t *testing.T) {
	g := newFakeGuest(t, 256)
	r := g.vring(1, eventFeatures)
	r.callFd = eventfdPair(t)
	bufs := newBufs(32)
	for round := 0; round < 3; round++ {
		g.setUsedEvent(1, g.avail[1]) // the driver re-arms at its next entry
		for i := 0; i < 32; i++ {
			g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(60, 0)...), 4096)
		}
		if n, _, _ := r.dequeue(bufs); n != 32 {
			t.Fatalf("round %d: dequeue %d", round, n)
		}
		if c := readEventfd(t, r.callFd); c != 1 {
			t.Fatalf("round %d: %d calls for a batch of 32, want 1", round, c)
		}
	}
	if n, _, _ := r.dequeue(bufs); n != 0 {
		t.Fatalf("empty ring gave %d frames", n)
	}
	if c := readEventfd(t, r.callFd); c != 0 {
		t.Fatalf("%d calls for an empty batch", c)
	}
}

// TestEventIdxKicks: avail_event tells the driver when to kick. A new
// ring asks for the next entry (overwriting a stale value from an earlier
// session); while the worker polls the driver kicks at most once; when
// the worker goes idle it asks again for the next entry.
func TestEventIdxKicks(t *testing.T) {
	for _, start := range []uint16{0, 65533} {
		g := newFakeGuest(t, 256)
		g.startAt(1, start)
		binary.LittleEndian.PutUint16(g.availEventAt(1), start-100) // stale
		r := g.vring(1, eventFeatures)
		if e := g.availEvent(1); e != start {
			t.Fatalf("start %d: avail_event %d after start, want %d", start, e, start)
		}
		if !g.postTxKick() {
			t.Fatalf("start %d: first frame on a new ring does not kick", start)
		}
		bufs := newBufs(8)
		if n, _, _ := r.dequeue(bufs); n != 1 {
			t.Fatalf("start %d: dequeue %d", start, n)
		}
		r.setNotify(false) // frames flow: the worker polls
		kicks := 0
		for i := 0; i < 20; i++ {
			if g.postTxKick() {
				kicks++
			}
			if i%4 == 3 {
				r.dequeue(bufs)
			}
		}
		if kicks != 0 {
			t.Fatalf("start %d: %d kicks while the worker polls, want 0", start, kicks)
		}
		for {
			if n, _, _ := r.dequeue(bufs); n == 0 {
				break
			}
		}
		if r.setNotify(true) {
			t.Fatalf("start %d: setNotify reports entries on a drained ring", start)
		}
		if e := g.availEvent(1); e != r.lastAvail {
			t.Fatalf("start %d: avail_event %d when idle, want the next entry %d", start, e, r.lastAvail)
		}
		if !g.postTxKick() {
			t.Fatalf("start %d: frame after the worker went idle does not kick", start)
		}
		if g.postTxKick() {
			t.Fatalf("start %d: second frame kicks again before the worker ran", start)
		}
		// An entry that raced with re-enabling is reported.
		r.setNotify(false)
		if !r.setNotify(true) {
			t.Fatalf("start %d: setNotify misses pending entries", start)
		}
	}
}

// TestEventIdxRingBounds: with EVENT_IDX the rings include their event
// fields, so a ring whose used_event would lie outside guest memory is
// refused.
func TestEventIdxRingBounds(t *testing.T) {
	g := newFakeGuest(t, 256)
	c := g.conf(0, eventFeatures)
	end := uint64(uaBase + len(g.mem))
	c.addr.avail = end - (4 + 2*256) // fits without used_event only
	if _, err := newVring(g.table, c, 0, -1); err == nil {
		t.Fatal("avail ring without room for used_event accepted")
	}
	c.features = netFeatures
	if _, err := newVring(g.table, c, 0, -1); err != nil {
		t.Fatalf("same ring without EVENT_IDX refused: %v", err)
	}
}

// idleEventIdxPort returns a port whose front end negotiated EVENT_IDX,
// after one empty ReadBatch (the port waits for kicks), and 8 buffers.
func idleEventIdxPort(t *testing.T) (*Port, *frontEnd, []*packet.Buf) {
	t.Helper()
	p := listenTest(t)
	f := dialFrontEnd(t, p)
	f.without = 1 << fRingPacked
	f.setup()
	bufs := newBufs(8)
	if n, _ := p.ReadBatch(bufs); n != 0 {
		t.Fatalf("ReadBatch of an empty ring: %d", n)
	}
	return p, f, bufs
}

// TestEventIdxSession negotiates EVENT_IDX through the protocol: the
// guest needs to kick only after the port went idle, and gets one call
// per WriteBatch that crosses used_event.
func TestEventIdxSession(t *testing.T) {
	p, f, bufs := idleEventIdxPort(t)
	for round := 0; round < 3; round++ {
		if !f.g.postTxKick() {
			t.Fatalf("round %d: first frame after an idle poll does not need a kick", round)
		}
		unix.Write(f.kick[1], binary.LittleEndian.AppendUint64(nil, 1))
		if !fdReadable(t, p.Fd(), 1e9) {
			t.Fatalf("round %d: kick did not wake Fd", round)
		}
		if n, _ := p.ReadBatch(bufs); n != 1 {
			t.Fatalf("round %d: ReadBatch %d", round, n)
		}
		for i := 0; i < 5; i++ {
			if f.g.postTxKick() {
				t.Fatalf("round %d: frame %d needs a kick while the port is busy", round, i)
			}
		}
		if n, _ := p.ReadBatch(bufs); n != 5 {
			t.Fatalf("round %d: ReadBatch %d, want 5", round, n)
		}
		if n, _ := p.ReadBatch(bufs); n != 0 {
			t.Fatalf("round %d: ReadBatch %d on a drained ring", round, n)
		}
	}
	// Receive side: used_event 2 entries ahead of a batch of 4.
	f.g.postRx(8, 2048)
	f.g.setUsedEvent(0, 2)
	out := newBufs(4)
	for _, b := range out {
		b.SetLen(60)
	}
	if n, _, _ := p.WriteBatch(out); n != 4 {
		t.Fatalf("WriteBatch %d", n)
	}
	if c := readEventfd(t, f.call[0]); c != 1 {
		t.Fatalf("%d calls, want 1", c)
	}
	if n, _, _ := p.WriteBatch(out[:2]); n != 2 {
		t.Fatalf("WriteBatch %d", n)
	}
	if c := readEventfd(t, f.call[0]); c != 0 {
		t.Fatalf("%d calls past used_event, want 0", c)
	}
}

// TestGuestMTU: with VIRTIO_NET_F_MTU negotiated and an MTU announced,
// non-TSO frames longer than MTU+14 (+4 with an 802.1Q tag) are dropped
// both ways and counted; TSO frames pass; without the feature nothing is
// enforced.
func TestGuestMTU(t *testing.T) {
	tagged := func(n int) []byte {
		f := frameOf(n, 0)
		f[12], f[13] = 0x81, 0x00
		return f
	}
	plain := func(n int) []byte {
		f := frameOf(n, 0)
		f[12], f[13] = 0x08, 0x00
		return f
	}
	tso := packet.VNetHdr{GSOType: packet.GSOTCPv4, GSOSize: 1000, HdrLen: 54}
	tests := []struct {
		name     string
		features uint64
		mtu      uint32
		frame    []byte
		vnet     packet.VNetHdr
		wantDrop bool
	}{
		{"MTU-sized frame passes", netFeatures | 1<<fMTU, 1500, plain(1514), packet.VNetHdr{}, false},
		{"one byte over is dropped", netFeatures | 1<<fMTU, 1500, plain(1515), packet.VNetHdr{}, true},
		{"tagged frame gets 4 more bytes", netFeatures | 1<<fMTU, 1500, tagged(1518), packet.VNetHdr{}, false},
		{"tagged frame over", netFeatures | 1<<fMTU, 1500, tagged(1519), packet.VNetHdr{}, true},
		{"small MTU", netFeatures | 1<<fMTU, 1000, plain(1100), packet.VNetHdr{}, true},
		{"TSO frame passes", netFeatures | 1<<fMTU, 1000, plain(1800), tso, false},
		{"no MTU announced", netFeatures | 1<<fMTU, 0, plain(1800), packet.VNetHdr{}, false},
		{"MTU not negotiated", netFeatures, 1000, plain(1800), packet.VNetHdr{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mtu atomic.Uint32
			mtu.Store(tt.mtu)
			var drops dropCounters
			g := newFakeGuest(t, 256)
			tx, rx := g.vring(1, tt.features), g.vring(0, tt.features)
			for _, r := range []*vring{tx, rx} {
				r.mtu, r.drops = &mtu, &drops
			}
			// Guest to switch.
			g.postTx(append(hdr12(tt.vnet, 0), tt.frame...), 4096)
			bufs := newBufs(2)
			n, dropped, _ := tx.dequeue(bufs)
			if tt.wantDrop != (n == 0 && dropped == 1) || n+dropped != 1 {
				t.Fatalf("dequeue: %d frames, %d dropped; want drop %v", n, dropped, tt.wantDrop)
			}
			if got := drops.inTooBig.Load(); (got == 1) != tt.wantDrop {
				t.Fatalf("inTooBig = %d", got)
			}
			if u := g.used(1); len(u) != 1 {
				t.Fatalf("%d used entries, want the chain returned", len(u))
			}
			// Switch to guest (mergeable buffers, so size is no limit).
			g.postRx(4, 2048)
			b := bufs[1]
			b.Reset()
			copy(b.Space(), tt.frame)
			b.SetLen(len(tt.frame))
			b.VNet = tt.vnet
			n, dropped, _ = rx.enqueue([]*packet.Buf{b})
			if n != 1 || (dropped == 1) != tt.wantDrop {
				t.Fatalf("enqueue: took %d, dropped %d; want drop %v", n, dropped, tt.wantDrop)
			}
			if got := drops.outTooBig.Load(); (got == 1) != tt.wantDrop {
				t.Fatalf("outTooBig = %d", got)
			}
			if u := g.used(0); (len(u) == 0) != tt.wantDrop {
				t.Fatalf("%d receive buffers used, want drop %v", len(u), tt.wantDrop)
			}
		})
	}
}

// TestDropCounters: each drop is counted under its reason, with the
// bytes of the frames WriteBatch took but did not deliver.
func TestDropCounters(t *testing.T) {
	var drops dropCounters
	g := newFakeGuest(t, 256)
	noMrg := uint64(1<<fVersion1 | 1<<fGuestCsum) // no MRG_RXBUF, no GUEST_TSO
	tx, rx := g.vring(1, netFeatures), g.vring(0, noMrg)
	tx.drops, rx.drops = &drops, &drops
	g.postTx(hdr12(packet.VNetHdr{}, 0), 4096)               // header only: malformed
	g.postTx(make([]byte, 40*2048), 2048)                    // larger than a Buf
	g.postTx(append(hdr12(packet.VNetHdr{}, 0), 1, 2), 4096) // fine
	if n, d, _ := tx.dequeue(newBufs(4)); n != 1 || d != 2 {
		t.Fatalf("dequeue %d frames, %d dropped; want 1, 2", n, d)
	}
	g.postRx(4, 2048)
	big, tsoB, ok := packet.NewBuf(), packet.NewBuf(), packet.NewBuf()
	big.SetLen(3000)
	tsoB.SetLen(2000)
	tsoB.VNet = packet.VNetHdr{GSOType: packet.GSOTCPv4, GSOSize: 1000}
	ok.SetLen(100)
	batch := []*packet.Buf{big, tsoB, ok}
	if n, d, _ := rx.enqueue(batch); n != 3 || d != 2 {
		t.Fatalf("enqueue took %d, dropped %d; want 3, 2", n, d)
	}
	if batch[0] != ok {
		t.Fatal("the delivered frame is not first in the batch (port.Port's WriteBatch contract)")
	}
	want := [4]uint64{2, 0, 1, 1}
	got := [4]uint64{drops.inMalformed.Load(), drops.inTooBig.Load(), drops.outTooBig.Load(), drops.outOffload.Load()}
	if got != want {
		t.Fatalf("drops (in malformed, in too big, out too big, out offload) = %v, want %v", got, want)
	}
}

// TestRxRingNoKicks: the receive ring asks the guest never to kick (the
// device does not wait for receive buffers), with the flag or with
// avail_event, and keeps asking across publishes.
func TestRxRingNoKicks(t *testing.T) {
	for _, ev := range []bool{false, true} {
		features := uint64(netFeatures)
		if ev {
			features |= 1 << fEventIdx
		}
		g := newFakeGuest(t, 256)
		g.startAt(0, 65530)
		r := g.vring(0, features)
		out := newBufs(8)
		for _, b := range out {
			b.SetLen(60)
		}
		kicks := 0
		for round := 0; round < 3; round++ {
			for i := 0; i < 8; i++ {
				old := g.avail[0]
				g.postRx(1, 2048)
				flags := binary.LittleEndian.Uint16(g.mem[0x8000:])
				if ev && needEvent(g.availEvent(0), g.avail[0], old) || !ev && flags&usedFNoNotif == 0 {
					kicks++
				}
			}
			if n, _, _ := r.enqueue(out); n != 8 {
				t.Fatalf("event_idx %v: enqueue %d", ev, n)
			}
		}
		if kicks != 0 {
			t.Errorf("event_idx %v: the guest had to kick %d times for receive buffers", ev, kicks)
		}
	}
}

// TestEventIdxKickAfterDroppedFrames: frames the port drops itself
// (malformed here) still move the ring on, so a port waiting for kicks
// must move avail_event with them: otherwise the guest's next frames
// never cross it, never kick, and its transmit queue stalls for good.
// Every round ends with the port idle; the next good frame must kick.
func TestEventIdxKickAfterDroppedFrames(t *testing.T) {
	bad := hdr12(packet.VNetHdr{}, 0) // a virtio header and no frame
	good := append(hdr12(packet.VNetHdr{}, 0), frameOf(60, 0)...)
	tests := []struct {
		name      string
		bad, good int // frames posted before the kick that wakes the port
	}{
		{"one dropped frame", 1, 0},
		{"dropped frames fill a batch", 8, 0},
		{"dropped frames span batches", 20, 0},
		{"good frame then dropped ones", 3, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, f, bufs := idleEventIdxPort(t)
			for round := 0; round < 3; round++ {
				old := f.g.avail[1]
				for i := 0; i < tt.good; i++ {
					f.g.postTx(good, 4096)
				}
				for i := 0; i < tt.bad; i++ {
					f.g.postTx(bad, 4096)
				}
				if !needEvent(f.g.availEvent(1), f.g.avail[1], old) {
					t.Fatalf("round %d: the frames after an idle poll do not kick", round)
				}
				got := 0
				for i := 0; i < 10; i++ {
					n, _ := p.ReadBatch(bufs)
					got += n
				}
				if got != tt.good {
					t.Fatalf("round %d: ReadBatch returned %d frames, want %d", round, got, tt.good)
				}
				if !f.g.postTxKick() {
					t.Fatalf("round %d: the guest's next frame does not kick an idle port (avail_event %d, avail %d)",
						round, f.g.availEvent(1), f.g.avail[1])
				}
				if n, _ := p.ReadBatch(bufs); n != 1 {
					t.Fatalf("round %d: ReadBatch %d, want the good frame", round, n)
				}
				if n, _ := p.ReadBatch(bufs); n != 0 {
					t.Fatalf("round %d: ReadBatch %d on a drained ring", round, n)
				}
			}
		})
	}
}
