package vhostuser

import (
	"bytes"
	"encoding/binary"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// packedGuest is the driver side of two packed rings over a fakeGuest's
// memory: descriptor ring at the ring's area, driver event area at
// +0x4000, device event area at +0x8000. Buffer ids are handed out by
// the driver and written in each chain's last descriptor only; the other
// descriptors of a chain carry a junk id, so that a device taking the id
// from the wrong descriptor shows.
type packedGuest struct {
	*fakeGuest
	avail     [2]uint16 // next slot to make available
	availWrap [2]bool
	used      [2]uint16 // next slot to read back
	usedWrap  [2]bool
	nextID    [2]uint16
	out       [2]int      // chains outstanding
	chains    [2][]uint16 // by outstanding id: chain slots (0: not outstanding)
}

// pd is one descriptor a test posts.
type pd struct {
	addr  uint64
	n     uint32
	flags uint16
}

const junkID = 0xbeef

func newPackedGuest(t testing.TB, num uint16) *packedGuest {
	g := &packedGuest{fakeGuest: newFakeGuest(t, num)}
	for i := range 2 {
		g.availWrap[i], g.usedWrap[i] = true, true
		g.chains[i] = make([]uint16, 1<<16)
	}
	return g
}

func (g *packedGuest) ring(ring int, features uint64) *packedRing {
	g.t.Helper()
	r, err := newPackedRing(g.table, g.conf(ring, features|1<<fRingPacked), wrapBit, -1)
	if err != nil {
		g.t.Fatal(err)
	}
	return r
}

func (g *packedGuest) descAt(ring int, slot uint16) []byte {
	o := ring*ringArea + int(slot)*descSize
	return g.mem[o : o+descSize]
}

// post makes one chain available and returns its buffer id. The head's
// flags are written last, as a driver does.
func (g *packedGuest) post(ring int, ds []pd) uint16 {
	id := g.nextID[ring]
	g.nextID[ring]++
	head := g.avail[ring]
	var headFlags uint16
	for i, d := range ds {
		slot := g.avail[ring]
		f := d.flags
		if i < len(ds)-1 {
			f |= descFNext
		}
		if g.availWrap[ring] {
			f |= pdescFAvail
		} else {
			f |= pdescFUsed
		}
		e := g.descAt(ring, slot)
		binary.LittleEndian.PutUint64(e, d.addr)
		binary.LittleEndian.PutUint32(e[8:], d.n)
		did := uint16(junkID)
		if i == len(ds)-1 {
			did = id
		}
		binary.LittleEndian.PutUint16(e[12:], did)
		if i == 0 {
			headFlags = f
		} else {
			binary.LittleEndian.PutUint16(e[14:], f)
		}
		if g.avail[ring]++; g.avail[ring] == g.num {
			g.avail[ring], g.availWrap[ring] = 0, !g.availWrap[ring]
		}
	}
	binary.LittleEndian.PutUint16(g.descAt(ring, head)[14:], headFlags)
	g.chains[ring][id] = uint16(len(ds))
	g.out[ring]++
	return id
}

// postTx queues pkt (header included) in pieces of at most split bytes,
// one descriptor each, in the buffer slots of the ring slots they take.
func (g *packedGuest) postTx(pkt []byte, split int) uint16 {
	var ds []pd
	slot := g.avail[1]
	for len(pkt) > 0 {
		addr, buf := g.slot(1, int(slot))
		n := min(len(pkt), split, slotSize)
		copy(buf, pkt[:n])
		pkt = pkt[n:]
		ds = append(ds, pd{addr, uint32(n), 0})
		slot = (slot + 1) % g.num
	}
	return g.post(1, ds)
}

// postTxIndirect queues pkt in pieces of split bytes through one
// indirect table, laid in the head slot's buffer with the data after it.
func (g *packedGuest) postTxIndirect(pkt []byte, split int) uint16 {
	addr, buf := g.slot(1, int(g.avail[1]))
	const dataOff = 256
	k := 0
	for off := 0; off < len(pkt); off += split {
		n := min(split, len(pkt)-off)
		e := buf[k*descSize:]
		binary.LittleEndian.PutUint64(e, addr+dataOff+uint64(off))
		binary.LittleEndian.PutUint32(e[8:], uint32(n))
		binary.LittleEndian.PutUint16(e[12:], junkID)
		// NEXT is ignored in a table; WRITE too on transmit (DPDK's
		// driver sets it).
		binary.LittleEndian.PutUint16(e[14:], descFNext|descFWrite)
		k++
	}
	copy(buf[dataOff:], pkt)
	return g.post(1, []pd{{addr, uint32(k * descSize), descFIndir}})
}

// postRx queues k receive chains of one size-byte buffer.
func (g *packedGuest) postRx(k int, size uint32) {
	for range k {
		addr, _ := g.slot(0, int(g.avail[0]))
		g.post(0, []pd{{addr, size, descFWrite}})
	}
}

// used returns the used elements written back since the last call,
// checking that each is a used descriptor of the right wrap.
func (g *packedGuest) usedElems(ring int) []usedElem {
	var out []usedElem
	for g.out[ring] > 0 {
		e := g.descAt(ring, g.used[ring])
		f := binary.LittleEndian.Uint16(e[14:])
		want := uint16(0)
		if g.usedWrap[ring] {
			want = pdescFAvail | pdescFUsed
		}
		if f&(pdescFAvail|pdescFUsed) != want {
			return out
		}
		id := binary.LittleEndian.Uint16(e[12:])
		k := g.chains[ring][id]
		if k == 0 {
			g.t.Fatalf("ring %d slot %d: used id %#x was not outstanding", ring, g.used[ring], id)
		}
		g.chains[ring][id] = 0
		g.out[ring]--
		out = append(out, usedElem{uint32(id), binary.LittleEndian.Uint32(e[8:])})
		g.used[ring] += k
		if g.used[ring] >= g.num {
			g.used[ring] -= g.num
			g.usedWrap[ring] = !g.usedWrap[ring]
		}
	}
	return out
}

// setDriverEvent writes the driver event suppression area of ring.
func (g *packedGuest) setDriverEvent(ring int, flags, offWrap uint16) {
	a := g.mem[ring*ringArea+0x4000:]
	binary.LittleEndian.PutUint16(a, offWrap)
	binary.LittleEndian.PutUint16(a[2:], flags)
}

// deviceEvent returns the flags of the device event suppression area.
func (g *packedGuest) deviceEvent(ring int) uint16 {
	return binary.LittleEndian.Uint16(g.mem[ring*ringArea+0x8000+2:])
}

// TestPackedDequeue: single-descriptor, chained and indirect frames go
// round a 16-entry ring many times; each comes out whole, and each chain
// is returned once with the id of its last descriptor.
func TestPackedDequeue(t *testing.T) {
	g := newPackedGuest(t, 32)
	r := g.ring(1, netFeatures)
	bufs := newBufs(8)
	for round := range 60 {
		var want [][]byte
		var ids []uint16
		for k := range 3 {
			f := frameOf([]int{60 + round*7, 60, 200 + round*7}[k], byte(round+k))
			pkt := append(hdr12(packet.VNetHdr{}, 0), f...)
			switch k {
			case 0:
				ids = append(ids, g.postTx(pkt, 4096))
			case 1:
				ids = append(ids, g.postTx(pkt, 5+round%40)) // up to 15 pieces, the header split too
			default:
				ids = append(ids, g.postTxIndirect(pkt, 100))
			}
			want = append(want, f)
		}
		n, dropped, _ := r.dequeue(bufs)
		if n != 3 || dropped != 0 || r.broken {
			t.Fatalf("round %d: n=%d dropped=%d broken=%v", round, n, dropped, r.broken)
		}
		for i := range want {
			if !bytes.Equal(bufs[i].Bytes(), want[i]) {
				t.Fatalf("round %d frame %d: got %d bytes, want %d", round, i, bufs[i].Len(), len(want[i]))
			}
		}
		u := g.usedElems(1)
		if len(u) != 3 {
			t.Fatalf("round %d: %d used elements, want 3", round, len(u))
		}
		for i, e := range u {
			if e.id != uint32(ids[i]) {
				t.Fatalf("round %d: used id %d, want %d (the last descriptor's)", round, e.id, ids[i])
			}
		}
		if r.hasPending() {
			t.Fatalf("round %d: ring still has entries", round)
		}
	}
	if !g.availWrap[1] && g.avail[1] == 0 {
		t.Fatal("test did not wrap")
	}
}

// TestPackedEnqueueRunThenWalk: receive buffers of one descriptor each,
// which a batch resolves ahead, then a frame they cannot take in one:
// it and the frames after it are written by the chain walk from where
// the run stopped, across mergeable buffers, and every buffer is
// returned in order with its length.
func TestPackedEnqueueRunThenWalk(t *testing.T) {
	g := newPackedGuest(t, 16)
	r := g.ring(0, netFeatures)
	sizes := []int{60, 2000, 61, 62}
	for round := range 10 {
		g.postRx(5, 1024)
		out := newBufs(len(sizes))
		for i, b := range out {
			copy(b.Space(), frameOf(sizes[i], byte(round+i)))
			b.SetLen(sizes[i])
		}
		if n, dropped, _ := r.enqueue(out); n != 4 || dropped != 0 || r.broken {
			t.Fatalf("round %d: n=%d dropped=%d broken=%v", round, n, dropped, r.broken)
		}
		u := g.usedElems(0)
		wantN := []uint32{72, 1024, 2012 - 1024, 73, 74}
		if len(u) != len(wantN) {
			t.Fatalf("round %d: used %v", round, u)
		}
		for i, e := range u {
			if e.n != wantN[i] {
				t.Fatalf("round %d: used %v, want lengths %v", round, u, wantN)
			}
		}
		_, b0 := g.slot(0, int(u[1].id%uint32(g.num)))
		_, b1 := g.slot(0, int(u[2].id%uint32(g.num)))
		got := append(append([]byte{}, b0[12:1024]...), b1[:2012-1024]...)
		if !bytes.Equal(got, frameOf(2000, byte(round+1))) || binary.LittleEndian.Uint16(b0[10:]) != 2 {
			t.Fatalf("round %d: the 2000-byte frame did not arrive whole over two buffers", round)
		}
		_, b3 := g.slot(0, int(u[4].id%uint32(g.num)))
		if !bytes.Equal(b3[12:74], frameOf(62, byte(round+3))) {
			t.Fatalf("round %d: last frame wrong", round)
		}
	}
}

// TestPackedDequeueBatchLimit: a batch takes at most len(bufs) frames,
// the rest stay for the next one.
func TestPackedDequeueBatchLimit(t *testing.T) {
	g := newPackedGuest(t, 16)
	r := g.ring(1, netFeatures)
	for i := range 10 {
		g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(60, byte(i))...), 4096)
	}
	bufs := newBufs(4)
	total := 0
	for range 3 {
		n, _, _ := r.dequeue(bufs)
		total += n
	}
	if total != 10 || len(g.usedElems(1)) != 10 {
		t.Fatalf("read %d frames over three batches, want 10", total)
	}
}

// TestPackedEnqueue: frames of several sizes into mergeable receive
// buffers, round a 16-entry ring many times: the frame, header and
// num_buffers arrive; each buffer is returned with its id and length.
func TestPackedEnqueue(t *testing.T) {
	g := newPackedGuest(t, 16)
	r := g.ring(0, netFeatures)
	sizes := []int{60, 1500, 5000}
	for round := range 40 {
		g.postRx(6, 2048) // 1 + 1 + 3 buffers, one to spare
		out := newBufs(len(sizes))
		for i, b := range out {
			copy(b.Space(), frameOf(sizes[i], byte(round+i)))
			b.SetLen(sizes[i])
		}
		n, dropped, _ := r.enqueue(out)
		if n != 3 || dropped != 0 || r.broken {
			t.Fatalf("round %d: n=%d dropped=%d broken=%v", round, n, dropped, r.broken)
		}
		u := g.usedElems(0)
		if len(u) != 5 {
			t.Fatalf("round %d: %d used elements, want 5", round, len(u))
		}
		// Reassemble each frame from its buffers (buffer i is the slot
		// its id was posted at: ids and slots advance together here).
		k := 0
		for i, size := range sizes {
			_, first := g.slot(0, int(u[k].id%uint32(g.num)))
			nb := int(binary.LittleEndian.Uint16(first[10:]))
			var got []byte
			for j := 0; j < nb; j++ {
				_, s := g.slot(0, int(u[k+j].id%uint32(g.num)))
				n := int(u[k+j].n)
				if j == 0 {
					got = append(got, s[12:n]...)
				} else {
					got = append(got, s[:n]...)
				}
			}
			k += nb
			if !bytes.Equal(got, frameOf(size, byte(round+i))) {
				t.Fatalf("round %d frame %d: %d bytes in %d buffers, want %d", round, i, len(got), nb, size)
			}
		}
		// The spare buffer is consumed next round: drain it now so
		// every round starts from an empty ring.
		spare := newBufs(1)
		spare[0].SetLen(60)
		if n, _, _ := r.enqueue(spare); n != 1 {
			t.Fatalf("round %d: spare buffer not used", round)
		}
		g.usedElems(0)
	}
}

// TestPackedEnqueueNoRoom: a frame that does not fit in the buffers
// posted waits, the descriptors it walked left intact, until the guest
// posts more; without MRG_RXBUF a frame larger than one buffer is
// dropped.
func TestPackedEnqueueNoRoom(t *testing.T) {
	g := newPackedGuest(t, 16)
	r := g.ring(0, netFeatures)
	g.postRx(2, 2048)
	out := newBufs(1)
	copy(out[0].Space(), frameOf(5000, 3))
	out[0].SetLen(5000)
	if n, _, _ := r.enqueue(out); n != 0 || r.broken {
		t.Fatalf("n=%d broken=%v with 2 of 3 buffers, want 0, not broken", n, r.broken)
	}
	if u := g.usedElems(0); len(u) != 0 {
		t.Fatalf("%d used elements for a frame that did not fit", len(u))
	}
	g.postRx(1, 2048)
	if n, _, _ := r.enqueue(out); n != 1 {
		t.Fatalf("n=%d after a third buffer, want 1", n)
	}
	if u := g.usedElems(0); len(u) != 3 || u[0].n != 2048 || u[2].n != 5012-2*2048 {
		t.Fatalf("used %v, want three buffers", u)
	}

	g2 := newPackedGuest(t, 16)
	r2 := g2.ring(0, netFeatures&^(1<<fMrgRxbuf))
	g2.postRx(4, 2048)
	out2 := newBufs(2)
	out2[0].SetLen(5000)
	out2[1].SetLen(100)
	if n, dropped, _ := r2.enqueue(out2); n != 2 || dropped != 1 {
		t.Fatalf("without MRG_RXBUF: n=%d dropped=%d, want the big frame dropped and the small one sent", n, dropped)
	}
	if u := g2.usedElems(0); len(u) != 1 || u[0].n != 112 {
		t.Fatalf("used %v, want one buffer of 112 bytes", u)
	}
}

// TestPackedEnqueueChainedBuffer: a receive buffer made of a chain of
// three descriptors is filled across them and returned as one element
// with the last descriptor's id and the whole length.
func TestPackedEnqueueChainedBuffer(t *testing.T) {
	g := newPackedGuest(t, 8)
	r := g.ring(0, netFeatures&^(1<<fMrgRxbuf))
	var ds []pd
	for i := range 3 {
		a, _ := g.slot(0, i)
		ds = append(ds, pd{a, 600, descFWrite})
	}
	id := g.post(0, ds)
	out := newBufs(1)
	copy(out[0].Space(), frameOf(1500, 9))
	out[0].SetLen(1500)
	if n, _, _ := r.enqueue(out); n != 1 {
		t.Fatalf("n=%d", n)
	}
	u := g.usedElems(0)
	if len(u) != 1 || u[0].id != uint32(id) || u[0].n != 1512 {
		t.Fatalf("used %v, want id %d with 1512 bytes", u, id)
	}
	var got []byte
	for i := range 3 {
		_, s := g.slot(0, i)
		got = append(got, s[:600]...)
	}
	if !bytes.Equal(got[12:1512], frameOf(1500, 9)) {
		t.Fatal("frame not laid across the chain")
	}
	if r.lastAvail != 3 || r.usedIdx != 3 {
		t.Fatalf("ring at avail %d used %d, want 3 and 3", r.lastAvail, r.usedIdx)
	}
}

// TestPackedCallSuppression: the driver area decides the calls: enable
// calls once per batch, disable never, desc-specific (EVENT_IDX) only
// for a batch that passes the descriptor it names, across wraps.
func TestPackedCallSuppression(t *testing.T) {
	g := newPackedGuest(t, 8)
	r := g.ring(1, netFeatures|1<<fEventIdx)
	fd := eventfdPair(t)
	r.callFd = fd
	bufs := newBufs(8)
	send := func(k int) {
		for range k {
			g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(60, 0)...), 4096)
		}
		if n, _, _ := r.dequeue(bufs); n != k {
			t.Fatalf("dequeue %d of %d", n, k)
		}
		g.usedElems(1)
	}
	send(3)
	if c := readEventfd(t, fd); c != 1 {
		t.Fatalf("enable: %d calls, want 1 per batch", c)
	}
	g.setDriverEvent(1, evDisable, 0)
	send(3)
	if c := readEventfd(t, fd); c != 0 {
		t.Fatalf("disable: %d calls, want 0", c)
	}
	// Used index at 6, wrap 1. Ask for a call at slot 1 of the next lap
	// (wrap 0): a batch of 2 (to 8 = 0, wrap 0) does not reach it, the
	// next of 2 (to slot 2) passes it.
	g.setDriverEvent(1, evDesc, 1)
	send(2)
	if c := readEventfd(t, fd); c != 0 {
		t.Fatalf("desc not reached: %d calls, want 0", c)
	}
	send(2)
	if c := readEventfd(t, fd); c != 1 {
		t.Fatalf("desc passed: %d calls, want 1", c)
	}
	// Slot 1 of the lap just finished is behind: no call.
	send(1)
	if c := readEventfd(t, fd); c != 0 {
		t.Fatalf("desc behind: %d calls, want 0", c)
	}
	// Without EVENT_IDX, a desc-specific request counts as enable.
	r.eventIdx = false
	send(1)
	if c := readEventfd(t, fd); c != 1 {
		t.Fatalf("desc without EVENT_IDX: %d calls, want 1", c)
	}
}

// TestPackedKickSuppression: the device area asks for kicks on the
// transmit ring until told otherwise and never on the receive ring;
// enabling reports entries that arrived meanwhile.
func TestPackedKickSuppression(t *testing.T) {
	g := newPackedGuest(t, 8)
	tx := g.ring(1, netFeatures)
	rx := g.ring(0, netFeatures)
	if g.deviceEvent(1) != evEnable || g.deviceEvent(0) != evDisable {
		t.Fatalf("device areas tx %d rx %d, want enable and disable", g.deviceEvent(1), g.deviceEvent(0))
	}
	if rx.kicksOn() || !tx.kicksArmed() {
		t.Fatal("kick state does not match the device areas")
	}
	tx.setNotify(false)
	if g.deviceEvent(1) != evDisable || tx.kicksOn() {
		t.Fatal("setNotify(false) did not disable kicks")
	}
	g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(60, 0)...), 4096)
	if !tx.setNotify(true) || g.deviceEvent(1) != evEnable {
		t.Fatal("setNotify(true) missed the entry posted while kicks were off")
	}
}

// TestPackedRingState: GET_VRING_BASE's state carries the wrap counter
// in bit 15, and a ring started from it resumes where the old one
// stopped, past a wrap.
func TestPackedRingState(t *testing.T) {
	g := newPackedGuest(t, 8)
	r := g.ring(1, netFeatures)
	bufs := newBufs(8)
	for i := range 11 {
		g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(60, byte(i))...), 4096)
		if i == 4 || i == 10 {
			r.dequeue(bufs)
			g.usedElems(1) // before the driver reuses the slots
		}
	}
	st := r.state()
	if want := uint32(3 | 3<<16); st != want { // 11 = one lap + 3: wrap 0
		t.Fatalf("state %#x, want %#x", st, want)
	}
	r2, err := newPackedRing(g.table, g.conf(1, netFeatures|1<<fRingPacked), st, -1)
	if err != nil {
		t.Fatal(err)
	}
	g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(70, 1)...), 4096)
	if n, _, _ := r2.dequeue(bufs); n != 1 || bufs[0].Len() != 70 {
		t.Fatalf("restarted ring read %d frames", n)
	}
	if u := g.usedElems(1); len(u) != 1 {
		t.Fatalf("restarted ring wrote back %d elements", len(u))
	}
	if _, err := newPackedRing(g.table, g.conf(1, netFeatures|1<<fRingPacked), 9, -1); err == nil {
		t.Fatal("base beyond the ring accepted")
	}
}

func TestPackedHostileRings(t *testing.T) {
	far := uint64(gpaBase + bufArea + 2*256*slotSize)
	tests := []struct {
		name     string
		ring     int
		features uint64
		setup    func(g *packedGuest)
	}{
		{"chain longer than the ring", 1, netFeatures, func(g *packedGuest) {
			a, _ := g.slot(1, 0)
			ds := make([]pd, 16)
			for i := range ds {
				ds[i] = pd{a, 10, descFNext}
			}
			g.post(1, ds)
		}},
		{"address outside memory", 1, netFeatures, func(g *packedGuest) { g.post(1, []pd{{far, 64, 0}}) }},
		{"length runs past region", 1, netFeatures, func(g *packedGuest) { g.post(1, []pd{{far - 10, 64, 0}}) }},
		{"address wraps", 1, netFeatures, func(g *packedGuest) { g.post(1, []pd{{^uint64(0) - 8, 64, 0}}) }},
		{"writable descriptor in transmit chain", 1, netFeatures, func(g *packedGuest) {
			a, _ := g.slot(1, 0)
			g.post(1, []pd{{a, 64, descFWrite}})
		}},
		{"indirect without the feature", 1, netFeatures &^ (1 << fIndirectDesc), func(g *packedGuest) {
			g.postTxIndirect(append(hdr12(packet.VNetHdr{}, 0), frameOf(60, 0)...), 100)
		}},
		{"indirect and next", 1, netFeatures, func(g *packedGuest) {
			a, _ := g.slot(1, 0)
			g.post(1, []pd{{a, 16, descFIndir}, {a, 10, 0}})
		}},
		{"indirect inside a chain", 1, netFeatures, func(g *packedGuest) {
			a, _ := g.slot(1, 0)
			g.post(1, []pd{{a, 20, 0}, {a, 16, descFIndir}})
		}},
		{"nested indirect", 1, netFeatures, func(g *packedGuest) {
			a, tb := g.slot(1, 0)
			binary.LittleEndian.PutUint64(tb, a)
			binary.LittleEndian.PutUint32(tb[8:], 16)
			binary.LittleEndian.PutUint16(tb[14:], descFIndir)
			g.post(1, []pd{{a, 16, descFIndir}})
		}},
		{"indirect table of odd size", 1, netFeatures, func(g *packedGuest) {
			a, _ := g.slot(1, 0)
			g.post(1, []pd{{a, 17, descFIndir}})
		}},
		{"empty indirect table", 1, netFeatures, func(g *packedGuest) {
			a, _ := g.slot(1, 0)
			g.post(1, []pd{{a, 0, descFIndir}})
		}},
		{"indirect table outside memory", 1, netFeatures, func(g *packedGuest) { g.post(1, []pd{{far, 64, descFIndir}}) }},
		{"indirect entry outside memory", 1, netFeatures, func(g *packedGuest) {
			a, tb := g.slot(1, 0)
			binary.LittleEndian.PutUint64(tb, far)
			binary.LittleEndian.PutUint32(tb[8:], 64)
			g.post(1, []pd{{a, 16, descFIndir}})
		}},
		{"read-only receive buffer", 0, netFeatures, func(g *packedGuest) {
			a, _ := g.slot(0, 0)
			g.post(0, []pd{{a, 2048, 0}})
		}},
		{"receive buffer smaller than header", 0, netFeatures, func(g *packedGuest) {
			a, _ := g.slot(0, 0)
			g.post(0, []pd{{a, 4, descFWrite}})
		}},
		{"receive buffer outside memory", 0, netFeatures, func(g *packedGuest) { g.post(0, []pd{{far, 2048, descFWrite}}) }},
		{"receive chain longer than the ring", 0, netFeatures, func(g *packedGuest) {
			a, _ := g.slot(0, 0)
			ds := make([]pd, 16)
			for i := range ds {
				ds[i] = pd{a, 12, descFWrite | descFNext}
			}
			g.post(0, ds)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newPackedGuest(t, 16)
			r := g.ring(tt.ring, tt.features)
			tt.setup(g)
			playHostile(t, r, tt.ring, func() int { return len(g.usedElems(tt.ring)) })
		})
		// The same descriptor after two good chains of one descriptor,
		// which a batch resolves ahead: those two go through and are
		// returned, then the ring breaks. (A chain of the ring's size
		// has no room after them.)
		if strings.Contains(tt.name, "longer than the ring") {
			continue
		}
		t.Run(tt.name+" after a run", func(t *testing.T) {
			g := newPackedGuest(t, 16)
			r := g.ring(tt.ring, tt.features)
			bufs := newBufs(8)
			for _, b := range bufs {
				b.SetLen(60)
			}
			var n int
			if tt.ring == 1 {
				for i := range 2 {
					g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(60, byte(i))...), 4096)
				}
				tt.setup(g)
				n, _, _ = r.dequeue(bufs)
			} else {
				g.postRx(2, 2048)
				tt.setup(g)
				n, _, _ = r.enqueue(bufs[:3])
			}
			if n != 2 || !r.broken {
				t.Fatalf("n=%d broken=%v, want the 2 good frames and a broken ring", n, r.broken)
			}
			if u := g.usedElems(tt.ring); len(u) != 2 {
				t.Fatalf("%d chains returned, want the 2 good ones", len(u))
			}
		})
	}
}

// TestPackedRingGeometry: sizes and addresses the ring cannot use are
// refused; sizes need not be powers of two.
func TestPackedRingGeometry(t *testing.T) {
	g := newPackedGuest(t, 16)
	tests := []struct {
		name string
		edit func(c *ringConf)
		ok   bool
	}{
		{"as posted", func(c *ringConf) {}, true},
		{"size not a power of two", func(c *ringConf) { c.num = 12 }, true},
		{"size 0", func(c *ringConf) { c.num = 0 }, false},
		{"size too large", func(c *ringConf) { c.num = maxQueueSize + 1 }, false},
		{"descriptors outside memory", func(c *ringConf) { c.addr.desc = uaBase + memSize }, false},
		{"descriptors misaligned", func(c *ringConf) { c.addr.desc += 8 }, false},
		{"driver area misaligned", func(c *ringConf) { c.addr.avail += 2 }, false},
		{"device area outside memory", func(c *ringConf) { c.addr.used = 1 }, false},
	}
	for _, tt := range tests {
		c := g.conf(1, netFeatures|1<<fRingPacked)
		tt.edit(&c)
		_, err := newPackedRing(g.table, c, wrapBit, -1)
		if (err == nil) != tt.ok {
			t.Errorf("%s: err %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestPackedZeroAllocs(t *testing.T) {
	g := newPackedGuest(t, 256)
	tx := g.ring(1, netFeatures)
	rx := g.ring(0, netFeatures)
	in := newBufs(32)
	out := newBufs(32)
	for _, b := range out {
		b.SetLen(3000) // two buffers each
	}
	pkt := append(hdr12(packet.VNetHdr{}, 0), frameOf(1500, 0)...)
	// AllocsPerRun runs the function twice.
	for i := 0; i < 64; i++ {
		g.postTx(pkt, 600)
	}
	g.postRx(128, 2048)
	allocs := testing.AllocsPerRun(1, func() {
		if n, _, _ := tx.dequeue(in); n != 32 {
			t.Fatalf("dequeue %d", n)
		}
		if n, _, _ := rx.enqueue(out); n != 32 {
			t.Fatalf("enqueue %d", n)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch pair, want 0", allocs)
	}
}

// benchPacked is benchRings for a packed ring: one batch of 32 frames.
func benchPacked(b *testing.B, size int, rx bool) {
	g := newPackedGuest(b, 256)
	tx := g.ring(1, netFeatures)
	rxr := g.ring(0, netFeatures)
	bufs := newBufs(32)
	for _, x := range bufs {
		x.SetLen(size)
	}
	pkt := append(hdr12(packet.VNetHdr{}, 0), frameOf(size, 0)...)
	b.SetBytes(int64(32 * size))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if rx {
			g.postRx(32, 2048)
			if n, _, _ := rxr.enqueue(bufs); n != 32 {
				b.Fatalf("enqueue %d", n)
			}
			g.usedElems(0)
		} else {
			for j := 0; j < 32; j++ {
				g.postTx(pkt, 4096)
			}
			if n, _, _ := tx.dequeue(bufs); n != 32 {
				b.Fatalf("dequeue %d", n)
			}
			g.usedElems(1)
		}
	}
	b.ReportMetric(float64(32*b.N)/b.Elapsed().Seconds()/1e6, "Mpps")
}

// As with the split benchmarks, the fake driver runs inside the timed
// loop.
func BenchmarkPackedDequeue64(b *testing.B) { benchPacked(b, 64, false) }
func BenchmarkPackedEnqueue64(b *testing.B) { benchPacked(b, 64, true) }

// TestPackedDirtyLog: with the log on, a packed ring marks the buffers
// it fills, the descriptors it writes back (both ends of a batch that
// wraps) and its device area (written at start, before the log was
// attached), and nothing else.
func TestPackedDirtyLog(t *testing.T) {
	const num = 512 // two pages of descriptors per ring
	descGPA := func(ring int) uint64 { return gpaBase + uint64(ring*ringArea) }
	g := newPackedGuest(t, num)
	l := &dirtyLog{words: make([]uint64, 1024)}
	rx := g.ring(0, netFeatures)
	rx.dlog = l
	g.postRx(4, slotSize)
	bufs := newBufs(2)
	bufs[0].SetLen(100)
	bufs[1].SetLen(3000)
	if n, _, _ := rx.enqueue(bufs); n != 2 {
		t.Fatalf("enqueue %d", n)
	}
	want := map[uint64]bool{}
	for _, u := range g.usedElems(0) {
		gpa, _ := g.slot(0, int(u.id))
		pagesOf(want, gpa, uint64(u.n))
	}
	pagesOf(want, descGPA(0), 3*descSize)
	if got, w := logPages(l.words), slices.Sorted(maps.Keys(want)); !slices.Equal(got, w) {
		t.Fatalf("receive ring marked pages %#x, want %#x", got, w)
	}

	clear(l.words)
	tx, err := newPackedRing(g.table, g.conf(1, netFeatures|1<<fRingPacked), wrapBit|(num-2), -1)
	if err != nil {
		t.Fatal(err)
	}
	tx.attach(nil, nil, l)
	g.avail[1], g.used[1] = num-2, num-2
	for i := range 4 {
		g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(60, byte(i))...), 4096)
	}
	if n, _, _ := tx.dequeue(newBufs(8)); n != 4 {
		t.Fatalf("dequeue %d", n)
	}
	if u := g.usedElems(1); len(u) != 4 {
		t.Fatalf("%d used elements", len(u))
	}
	want = map[uint64]bool{}
	pagesOf(want, descGPA(1)+(num-2)*descSize, 2*descSize)
	pagesOf(want, descGPA(1), 2*descSize)
	pagesOf(want, descGPA(1)+0x8000, 4)
	if got, w := logPages(l.words), slices.Sorted(maps.Keys(want)); !slices.Equal(got, w) {
		t.Fatalf("transmit ring marked pages %#x, want %#x", got, w)
	}
}

// TestPackedProtocolSession: a front end that negotiates
// VIRTIO_F_RING_PACKED gets packed rings started from SET_VRING_BASE's
// state (wrap counter in bit 15); frames go both ways through the port,
// and GET_VRING_BASE reports the position with its wrap counter.
func TestPackedProtocolSession(t *testing.T) {
	p := listenTest(t)
	f := dialFrontEnd(t, p)
	f.without = 1 << fEventIdx
	f.base = wrapBit | 254 // two slots before the end of the 256-entry ring
	f.setup()
	for i := range 2 {
		if _, ok := p.ring(i).(*packedRing); !ok {
			t.Fatalf("ring %d is not packed", i)
		}
	}
	g := &packedGuest{fakeGuest: f.g}
	for i := range 2 {
		g.avail[i], g.used[i] = 254, 254
		g.availWrap[i], g.usedWrap[i] = true, true
		g.chains[i] = make([]uint16, 1<<16)
	}
	bufs := newBufs(8)
	for i := range 3 {
		g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(60+i, 5)...), 4096)
	}
	if n, _ := p.ReadBatch(bufs); n != 3 || bufs[2].Len() != 62 {
		t.Fatalf("ReadBatch: %d frames", n)
	}
	// The used elements wait for CompleteReads.
	if u := g.usedElems(1); len(u) != 0 {
		t.Fatalf("%d used elements on the transmit ring before CompleteReads", len(u))
	}
	p.CompleteReads()
	if u := g.usedElems(1); len(u) != 3 {
		t.Fatalf("%d used elements on the transmit ring", len(u))
	}
	g.postRx(4, 2048)
	out := newBufs(1)
	out[0].SetLen(80)
	if n, _, _ := p.WriteBatch(out); n != 1 {
		t.Fatalf("WriteBatch: %d", n)
	}
	if u := g.usedElems(0); len(u) != 1 || u[0].n != 92 {
		t.Fatalf("receive used elements %v, want one of 92 bytes", u)
	}
	if c := readEventfd(t, f.call[0]); c != 1 {
		t.Fatalf("call eventfd %d, want 1", c)
	}
	// 254 + 3 on a 256-entry ring: slot 1 of the next lap, wrap 0.
	f.send(reqGetVringBase, 0, state(1, 0))
	if b := f.recv(reqGetVringBase); binary.LittleEndian.Uint32(b[4:]) != 1|1<<16 {
		t.Fatalf("GET_VRING_BASE = % x, want slot 1, wrap 0, in both halves", b)
	}
}

// TestPackedDirtyLogAfterWrite: on packed rings, a live migration's
// destination gets every byte the back end wrote (buffers, descriptors
// written back, the device area), however its syncs of the log fall (see
// migration).
func TestPackedDirtyLogAfterWrite(t *testing.T) {
	for _, features := range []uint64{netFeatures, netFeatures | 1<<fEventIdx} {
		g := newPackedGuest(t, 256)
		l := &dirtyLog{words: make([]uint64, 1024)}
		m := newMigration(t, g.mem, l)
		rx, tx := g.ring(0, features), g.ring(1, features)
		rx.attach(nil, nil, l)
		tx.attach(nil, nil, l)
		m.check("attach")
		for i := range 5 {
			g.postRx(1, slotSize)
			g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(60, byte(i))...), 4096)
			m.guestWrote()
			migrationSteps(t, m, rx, tx, i)
			g.usedElems(0)
			g.usedElems(1)
		}
	}
}
