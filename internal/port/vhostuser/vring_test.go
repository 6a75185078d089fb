package vhostuser

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"

	"github.com/butterfly-go/butterfly/internal/packet"
	"golang.org/x/sys/unix"
)

// fakeGuest is guest memory in a Go slice with the driver side of two
// split rings, for testing the walker without a VM. Guest physical and
// front-end virtual addresses differ so that a mix-up shows.
type fakeGuest struct {
	t     testing.TB
	mem   []byte
	table *memTable
	num   uint16
	avail [4]uint16 // driver's avail idx, per ring (two queue pairs)
	seen  [4]uint16 // used entries already read
	next  [4]uint16 // next free descriptor
}

const (
	gpaBase  = 0x100000
	uaBase   = 0x7f0000000000
	ringArea = 0x10000 // per ring: desc, avail at +0x4000, used at +0x8000
	bufArea  = 0x40000
	slotSize = 2048
	memSize  = 4 << 20
)

func newFakeGuest(t testing.TB, num uint16) *fakeGuest {
	g := &fakeGuest{t: t, mem: make([]byte, bufArea+2*int(num)*slotSize), num: num}
	g.table = &memTable{regions: []memRegion{{gpa: gpaBase, uaddr: uaBase, mem: g.mem}}}
	return g
}

func (g *fakeGuest) conf(ring int, features uint64) ringConf {
	o := uint64(ring * ringArea)
	return ringConf{num: uint32(g.num), features: features,
		addr: vringAddr{index: uint32(ring), desc: uaBase + o, avail: uaBase + o + 0x4000, used: uaBase + o + 0x8000}}
}

func (g *fakeGuest) vring(ring int, features uint64) *vring {
	g.t.Helper()
	v, err := newVring(g.table, g.conf(ring, features), 0, -1)
	if err != nil {
		g.t.Fatal(err)
	}
	return v
}

// slot returns the guest physical address and bytes of buffer slot i of ring.
func (g *fakeGuest) slot(ring, i int) (uint64, []byte) {
	off := bufArea + (ring*int(g.num)+i)*slotSize
	return gpaBase + uint64(off), g.mem[off : off+slotSize]
}

func (g *fakeGuest) setDesc(ring int, i uint16, addr uint64, n uint32, flags, next uint16) {
	d := g.mem[ring*ringArea+int(i)*descSize:]
	binary.LittleEndian.PutUint64(d, addr)
	binary.LittleEndian.PutUint32(d[8:], n)
	binary.LittleEndian.PutUint16(d[12:], flags)
	binary.LittleEndian.PutUint16(d[14:], next)
}

func (g *fakeGuest) pushAvail(ring int, head uint16) {
	a := g.mem[ring*ringArea+0x4000:]
	binary.LittleEndian.PutUint16(a[4+2*int(g.avail[ring]%g.num):], head)
	g.avail[ring]++
	binary.LittleEndian.PutUint16(a[2:], g.avail[ring])
}

func (g *fakeGuest) setAvailFlags(ring int, f uint16) {
	binary.LittleEndian.PutUint16(g.mem[ring*ringArea+0x4000:], f)
}

// postTx queues pkt (header included) split into pieces of at most split bytes.
func (g *fakeGuest) postTx(pkt []byte, split int) { g.postTxOn(1, pkt, split) }

// postTxOn is postTx on transmit ring ring.
func (g *fakeGuest) postTxOn(ring int, pkt []byte, split int) {
	head := g.next[ring]
	for len(pkt) > 0 {
		i := g.next[ring] % g.num
		g.next[ring]++
		addr, buf := g.slot(ring, int(i))
		n := min(len(pkt), split, slotSize)
		copy(buf, pkt[:n])
		pkt = pkt[n:]
		flags := uint16(0)
		if len(pkt) > 0 {
			flags = descFNext
		}
		g.setDesc(ring, i, addr, uint32(n), flags, (i+1)%g.num)
	}
	g.pushAvail(ring, head%g.num)
}

// postRx queues k receive buffers of size bytes each.
func (g *fakeGuest) postRx(k int, size uint32) { g.postRxOn(0, k, size) }

// postRxOn is postRx on receive ring ring.
func (g *fakeGuest) postRxOn(ring, k int, size uint32) {
	for j := 0; j < k; j++ {
		i := g.next[ring] % g.num
		g.next[ring]++
		addr, _ := g.slot(ring, int(i))
		g.setDesc(ring, i, addr, size, descFWrite, 0)
		g.pushAvail(ring, i)
	}
}

type usedElem struct{ id, n uint32 }

// used returns the used entries published since the last call.
func (g *fakeGuest) used(ring int) []usedElem {
	u := g.mem[ring*ringArea+0x8000:]
	idx := binary.LittleEndian.Uint16(u[2:])
	var out []usedElem
	for ; g.seen[ring] != idx; g.seen[ring]++ {
		e := u[4+8*int(g.seen[ring]%g.num):]
		out = append(out, usedElem{binary.LittleEndian.Uint32(e), binary.LittleEndian.Uint32(e[4:])})
	}
	return out
}

const netFeatures = 1<<fVersion1 | 1<<fMrgRxbuf | 1<<fIndirectDesc | 1<<fGuestCsum | 1<<fGuestTSO4 | 1<<fGuestTSO6

func hdr12(v packet.VNetHdr, nbufs uint16) []byte {
	h := make([]byte, 12)
	h[0], h[1] = v.Flags, v.GSOType
	binary.LittleEndian.PutUint16(h[2:], v.HdrLen)
	binary.LittleEndian.PutUint16(h[4:], v.GSOSize)
	binary.LittleEndian.PutUint16(h[6:], v.CsumStart)
	binary.LittleEndian.PutUint16(h[8:], v.CsumOffset)
	binary.LittleEndian.PutUint16(h[10:], nbufs)
	return h
}

func frameOf(n int, seed byte) []byte {
	f := make([]byte, n)
	for i := range f {
		f[i] = seed + byte(i*7)
	}
	return f
}

func TestDequeue(t *testing.T) {
	vnet := packet.VNetHdr{Flags: packet.VNetFlagNeedsCsum, GSOType: packet.GSOTCPv4, HdrLen: 54, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	tests := []struct {
		name  string
		size  int
		split int
	}{
		{"one descriptor", 60, 4096},
		{"header alone then frame", 1514, 12},
		{"header split across descriptors", 300, 5},
		{"chain of many", 9000, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newFakeGuest(t, 256)
			r := g.vring(1, netFeatures)
			f := frameOf(tt.size, 3)
			g.postTx(append(hdr12(vnet, 0), f...), tt.split)
			g.postTx(append(hdr12(packet.VNetHdr{}, 0), f[:60]...), tt.split)
			bufs := newBufs(4)
			n, dropped, _ := r.dequeue(bufs)
			if n != 2 || dropped != 0 || r.broken {
				t.Fatalf("dequeue = %d frames, %d dropped, broken %v; want 2, 0, false", n, dropped, r.broken)
			}
			if !bytes.Equal(bufs[0].Bytes(), f) || bufs[0].VNet != vnet {
				t.Fatalf("frame 0: %d bytes, vnet %+v; want %d bytes, %+v", bufs[0].Len(), bufs[0].VNet, len(f), vnet)
			}
			if !bytes.Equal(bufs[1].Bytes(), f[:60]) || bufs[1].VNet != (packet.VNetHdr{}) {
				t.Fatalf("frame 1 wrong: %d bytes, vnet %+v", bufs[1].Len(), bufs[1].VNet)
			}
			if u := g.used(1); len(u) != 2 || u[0].id != 0 {
				t.Fatalf("used entries %v, want 2 starting at head 0", u)
			}
			if n, _, _ := r.dequeue(bufs); n != 0 {
				t.Fatalf("second dequeue got %d frames from an empty ring", n)
			}
		})
	}
}

// TestDequeueInOrder: with VIRTIO_F_IN_ORDER a transmitted batch is
// returned with one used entry, the head of its last chain (malformed
// frames included), the index moved past the whole batch; without it,
// one entry per chain.
func TestDequeueInOrder(t *testing.T) {
	for _, tt := range []struct {
		name    string
		inOrder bool
	}{{"in order", true}, {"not negotiated", false}} {
		t.Run(tt.name, func(t *testing.T) {
			g := newFakeGuest(t, 8)
			features := uint64(netFeatures)
			if tt.inOrder {
				features |= 1 << fInOrder
			}
			r := g.vring(1, features)
			used := g.mem[ringArea+0x8000+4:]
			for i := range 8 * 8 {
				used[i] = 0xee // never written by the driver
			}
			f := frameOf(60, 1)
			g.postTx(append(hdr12(packet.VNetHdr{}, 0), f...), 4096) // head 0
			g.postTx(append(hdr12(packet.VNetHdr{}, 0), f...), 40)   // heads 1, 2
			g.postTx(hdr12(packet.VNetHdr{}, 0), 4096)               // head 3: no frame, dropped
			g.postTx(append(hdr12(packet.VNetHdr{}, 0), f...), 4096) // head 4
			bufs := newBufs(8)
			n, dropped, _ := r.dequeue(bufs)
			if n != 3 || dropped != 1 || r.broken {
				t.Fatalf("dequeue = %d frames, %d dropped, broken %v; want 3, 1, false", n, dropped, r.broken)
			}
			if idx := binary.LittleEndian.Uint16(g.mem[ringArea+0x8000+2:]); idx != 4 {
				t.Fatalf("used index %d, want 4", idx)
			}
			want := []usedElem{{0, 0}, {1, 0}, {3, 0}, {4, 0}}
			if tt.inOrder {
				want = []usedElem{{0xeeeeeeee, 0xeeeeeeee}, {0xeeeeeeee, 0xeeeeeeee}, {0xeeeeeeee, 0xeeeeeeee}, {4, 0}}
			}
			if got := g.used(1); !slices.Equal(got, want) {
				t.Fatalf("used entries %v, want %v", got, want)
			}
			// the next batch goes on from there
			g.postTx(append(hdr12(packet.VNetHdr{}, 0), f...), 4096) // head 5
			if n, _, _ := r.dequeue(bufs); n != 1 {
				t.Fatalf("second dequeue: %d frames, want 1", n)
			}
			if got := g.used(1); len(got) != 1 || got[0] != (usedElem{5, 0}) {
				t.Fatalf("second batch's used entries %v, want [{5 0}]", got)
			}
		})
	}
}

func TestDequeueIndirect(t *testing.T) {
	g := newFakeGuest(t, 256)
	r := g.vring(1, netFeatures)
	f := frameOf(700, 9)
	pkt := append(hdr12(packet.VNetHdr{}, 0), f...)
	// The indirect table lives in slot 10; its two entries point at slots 11, 12.
	tAddr, tBuf := g.slot(1, 10)
	a1, b1 := g.slot(1, 11)
	a2, b2 := g.slot(1, 12)
	copy(b1, pkt[:400])
	copy(b2, pkt[400:])
	binary.LittleEndian.PutUint64(tBuf, a1)
	binary.LittleEndian.PutUint32(tBuf[8:], 400)
	binary.LittleEndian.PutUint16(tBuf[12:], descFNext)
	binary.LittleEndian.PutUint16(tBuf[14:], 1)
	binary.LittleEndian.PutUint64(tBuf[16:], a2)
	binary.LittleEndian.PutUint32(tBuf[24:], uint32(len(pkt)-400))
	g.setDesc(1, 0, tAddr, 32, descFIndir, 0)
	g.pushAvail(1, 0)
	bufs := newBufs(2)
	if n, _, _ := r.dequeue(bufs); n != 1 || !bytes.Equal(bufs[0].Bytes(), f) {
		t.Fatalf("indirect frame: n=%d len=%d broken=%v", n, bufs[0].Len(), r.broken)
	}
	// Without the feature the same chain breaks the ring.
	g2 := newFakeGuest(t, 256)
	copy(g2.mem, g.mem)
	g2.avail = g.avail
	binary.LittleEndian.PutUint32(g2.mem[ringArea+0x8000:], 0) // nothing used yet
	r2 := g2.vring(1, netFeatures&^(1<<fIndirectDesc))
	if n, _, _ := r2.dequeue(bufs); n != 0 || !r2.broken {
		t.Fatalf("indirect without INDIRECT_DESC: n=%d broken=%v, want 0 and broken", n, r2.broken)
	}
}

func TestEnqueue(t *testing.T) {
	vnet := packet.VNetHdr{Flags: packet.VNetFlagNeedsCsum, GSOType: packet.GSOTCPv6, HdrLen: 74, GSOSize: 1428, CsumStart: 54, CsumOffset: 16}
	tests := []struct {
		name      string
		features  uint64
		posted    int
		bufSize   uint32
		frame     int
		wantN     int
		wantBufs  int // receive buffers the frame takes
		wantDrops int
	}{
		{"small frame, one buffer", netFeatures, 4, 2048, 60, 1, 1, 0},
		{"mergeable spreads 5000 bytes", netFeatures, 8, 2048, 5000, 1, 3, 0},
		{"mergeable 64K TSO frame", netFeatures, 64, 2048, 65000, 1, 32, 0},
		{"no room: not accepted", netFeatures, 2, 2048, 5000, 0, 0, 0},
		{"no MRG_RXBUF, too big: dropped", netFeatures &^ (1 << fMrgRxbuf), 4, 2048, 5000, 1, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newFakeGuest(t, 256)
			r := g.vring(0, tt.features)
			g.postRx(tt.posted, tt.bufSize)
			b := packet.NewBuf()
			f := frameOf(tt.frame, 1)
			copy(b.Space(), f)
			b.SetLen(len(f))
			b.VNet = vnet
			n, drops, _ := r.enqueue([]*packet.Buf{b})
			if n != tt.wantN || drops != tt.wantDrops || r.broken {
				t.Fatalf("enqueue = %d, %d drops, broken %v; want %d, %d", n, drops, r.broken, tt.wantN, tt.wantDrops)
			}
			u := g.used(0)
			if len(u) != tt.wantBufs {
				t.Fatalf("%d used buffers, want %d", len(u), tt.wantBufs)
			}
			if tt.wantBufs == 0 {
				return
			}
			var got []byte
			for _, e := range u {
				_, s := g.slot(0, int(e.id))
				got = append(got, s[:e.n]...)
			}
			if want := append(hdr12(vnet, uint16(tt.wantBufs)), f...); !bytes.Equal(got, want) {
				t.Fatalf("guest received %d bytes (header % x), want %d (header % x)", len(got), got[:12], len(want), want[:12])
			}
		})
	}
}

// TestEnqueueManyBuffers spreads frames over many receive buffers (more
// used entries in one batch than maxAhead), and has a frame find no room
// after some of its buffers were written (rolled back): the guest must see
// exactly the frames delivered, each whole, and a frame refused for room
// must arrive whole once the guest posts more buffers.
func TestEnqueueManyBuffers(t *testing.T) {
	const bufSize, frame = 256, 5000 // 20 buffers a frame
	perFrame := (12 + frame + bufSize - 1) / bufSize
	tests := []struct {
		name     string
		posted   int
		frames   int
		wantSent int
	}{
		{"80 entries in one batch", 100, 4, 4},
		{"no room for the 4th frame", 70, 4, 3},
		{"no room for the 2nd frame", 30, 2, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newFakeGuest(t, 256)
			r := g.vring(0, netFeatures)
			g.postRx(tt.posted, bufSize)
			var bufs []*packet.Buf
			var frames [][]byte
			for i := range tt.frames {
				b := packet.NewBuf()
				f := frameOf(frame, byte(i))
				b.SetLen(copy(b.Space(), f))
				bufs, frames = append(bufs, b), append(frames, f)
			}
			check := func(u []usedElem, want [][]byte) {
				t.Helper()
				if len(u) != len(want)*perFrame {
					t.Fatalf("%d used entries, want %d", len(u), len(want)*perFrame)
				}
				for i, f := range want {
					var got []byte
					for _, e := range u[i*perFrame : (i+1)*perFrame] {
						_, s := g.slot(0, int(e.id))
						got = append(got, s[:e.n]...)
					}
					if w := append(hdr12(packet.VNetHdr{}, uint16(perFrame)), f...); !bytes.Equal(got, w) {
						t.Fatalf("frame %d: guest received %d bytes, want %d", i, len(got), len(w))
					}
				}
			}
			n, drops, _ := r.enqueue(bufs)
			if n != tt.wantSent || drops != 0 || r.broken {
				t.Fatalf("enqueue = %d, %d drops, broken %v; want %d sent", n, drops, r.broken, tt.wantSent)
			}
			check(g.used(0), frames[:n])
			if n == tt.frames {
				return
			}
			g.postRx(perFrame*(tt.frames-n), bufSize)
			m, drops, _ := r.enqueue(bufs[n:])
			if m != tt.frames-n || drops != 0 || r.broken {
				t.Fatalf("second enqueue = %d, %d drops, broken %v; want %d sent", m, drops, r.broken, tt.frames-n)
			}
			check(g.used(0), frames[n:])
		})
	}
}

// TestEnqueueAvailSeen has the guest post receive buffers between
// batches: enqueue works from the avail index it read last while that
// covers the frames, and must read it again to use buffers posted since
// when it does not.
func TestEnqueueAvailSeen(t *testing.T) {
	tests := []struct {
		name         string
		post1, send1 int
		post2, send2 int
		want1, want2 int
	}{
		{"enough seen: later posts wait", 8, 2, 4, 6, 2, 6},
		{"too few seen: read again", 4, 2, 4, 6, 2, 6},
		{"none left: read again", 2, 2, 3, 3, 2, 3},
		{"more frames than posted", 2, 4, 2, 4, 2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newFakeGuest(t, 256)
			r := g.vring(0, netFeatures)
			send := func(k int) int {
				bufs := newBufs(k)
				for i, b := range bufs {
					b.SetLen(copy(b.Space(), frameOf(60, byte(i))))
				}
				n, drops, _ := r.enqueue(bufs)
				if drops != 0 || r.broken {
					t.Fatalf("enqueue: %d drops, broken %v", drops, r.broken)
				}
				if u := g.used(0); len(u) != n {
					t.Fatalf("%d used entries for %d frames", len(u), n)
				}
				return n
			}
			g.postRx(tt.post1, 2048)
			if n := send(tt.send1); n != tt.want1 {
				t.Fatalf("first batch: %d frames delivered, want %d", n, tt.want1)
			}
			g.postRx(tt.post2, 2048)
			if n := send(tt.send2); n != tt.want2 {
				t.Fatalf("second batch: %d frames delivered, want %d", n, tt.want2)
			}
		})
	}
}

func TestEnqueueOffloadFallback(t *testing.T) {
	g := newFakeGuest(t, 256)
	r := g.vring(0, 1<<fVersion1|1<<fMrgRxbuf) // no GUEST_CSUM, no GUEST_TSO
	g.postRx(8, 2048)
	tso := packet.NewBuf()
	tso.SetLen(3000)
	tso.VNet = packet.VNetHdr{GSOType: packet.GSOTCPv4, GSOSize: 1448}
	if n, drops, _ := r.enqueue([]*packet.Buf{tso}); n != 1 || drops != 1 {
		t.Fatalf("TSO frame to a guest without GUEST_TSO: n=%d drops=%d, want taken and dropped", n, drops)
	}
	if u := g.used(0); len(u) != 0 {
		t.Fatalf("dropped TSO frame used %d buffers", len(u))
	}
	// A partial checksum is completed before delivery and the flag cleared.
	b := packet.NewBuf()
	f := frameOf(100, 0)
	copy(b.Space(), f)
	b.SetLen(100)
	b.VNet = packet.VNetHdr{Flags: packet.VNetFlagNeedsCsum, CsumStart: 34, CsumOffset: 6}
	if n, drops, _ := r.enqueue([]*packet.Buf{b}); n != 1 || drops != 0 {
		t.Fatalf("csum frame: n=%d drops=%d", n, drops)
	}
	u := g.used(0)
	_, s := g.slot(0, int(u[0].id))
	if s[0] != 0 || binary.LittleEndian.Uint16(s[10:]) != 1 {
		t.Fatalf("header flags %#x num_buffers %d, want 0 and 1", s[0], binary.LittleEndian.Uint16(s[10:]))
	}
	want := frameOf(100, 0)
	if err := packet.CompleteChecksum(want, 34, 6); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s[12:112], want) {
		t.Fatalf("delivered frame % x, want the checksum completed: % x", s[12+34:12+42], want[34:42])
	}
}

func TestHostileRings(t *testing.T) {
	far := uint64(gpaBase + bufArea + 2*256*slotSize)
	tests := []struct {
		name  string
		ring  int
		setup func(g *fakeGuest)
	}{
		{"head index beyond ring", 1, func(g *fakeGuest) { g.pushAvail(1, 300) }},
		{"avail idx jumps past ring size", 1, func(g *fakeGuest) {
			binary.LittleEndian.PutUint16(g.mem[ringArea+0x4000+2:], 1000)
		}},
		{"descriptor loop", 1, func(g *fakeGuest) {
			a, _ := g.slot(1, 0)
			g.setDesc(1, 0, a, 10, descFNext, 1)
			g.setDesc(1, 1, a, 10, descFNext, 0)
			g.pushAvail(1, 0)
		}},
		{"next beyond ring", 1, func(g *fakeGuest) {
			a, _ := g.slot(1, 0)
			g.setDesc(1, 0, a, 10, descFNext, 5000)
			g.pushAvail(1, 0)
		}},
		{"address outside memory", 1, func(g *fakeGuest) { g.setDesc(1, 0, far, 64, 0, 0); g.pushAvail(1, 0) }},
		{"length runs past region", 1, func(g *fakeGuest) { g.setDesc(1, 0, far-10, 64, 0, 0); g.pushAvail(1, 0) }},
		{"address wraps", 1, func(g *fakeGuest) { g.setDesc(1, 0, ^uint64(0)-8, 64, 0, 0); g.pushAvail(1, 0) }},
		{"writable descriptor in transmit chain", 1, func(g *fakeGuest) {
			a, _ := g.slot(1, 0)
			g.setDesc(1, 0, a, 64, descFWrite, 0)
			g.pushAvail(1, 0)
		}},
		{"nested indirect", 1, func(g *fakeGuest) {
			a, tb := g.slot(1, 0)
			binary.LittleEndian.PutUint64(tb, a)
			binary.LittleEndian.PutUint32(tb[8:], 16)
			binary.LittleEndian.PutUint16(tb[12:], descFIndir)
			g.setDesc(1, 0, a, 16, descFIndir, 0)
			g.pushAvail(1, 0)
		}},
		{"indirect table of odd size", 1, func(g *fakeGuest) {
			a, _ := g.slot(1, 0)
			g.setDesc(1, 0, a, 17, descFIndir, 0)
			g.pushAvail(1, 0)
		}},
		{"read-only receive buffer", 0, func(g *fakeGuest) {
			a, _ := g.slot(0, 0)
			g.setDesc(0, 0, a, 2048, 0, 0)
			g.pushAvail(0, 0)
		}},
		{"receive buffer smaller than header", 0, func(g *fakeGuest) {
			a, _ := g.slot(0, 0)
			g.setDesc(0, 0, a, 4, descFWrite, 0)
			g.pushAvail(0, 0)
		}},
		{"receive buffer outside memory", 0, func(g *fakeGuest) { g.setDesc(0, 0, far, 2048, descFWrite, 0); g.pushAvail(0, 0) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newFakeGuest(t, 256)
			r := g.vring(tt.ring, netFeatures)
			tt.setup(g)
			playHostile(t, r, tt.ring, func() int { return len(g.used(tt.ring)) })
		})
	}
}

// playHostile runs one batch on ring q, which a hostile guest set up
// (ring 1: the transmit ring, dequeue; 0: the receive ring, enqueue), and
// fails t unless nothing came through, the ring stopped and written
// reports nothing written back to the guest.
func playHostile(t *testing.T, q queue, ring int, written func() int) {
	t.Helper()
	bufs := newBufs(8)
	bufs[0].SetLen(60)
	var n int
	if ring == 1 {
		n, _, _ = q.dequeue(bufs)
	} else {
		n, _, _ = q.enqueue(bufs[:1])
	}
	if n != 0 || !q.isBroken() {
		t.Fatalf("hostile ring: n=%d broken=%v, want 0 frames and a broken ring", n, q.isBroken())
	}
	if w := written(); w != 0 {
		t.Fatalf("broken ring wrote back %d used entries", w)
	}
}

func TestOversizeFrameDropped(t *testing.T) {
	g := newFakeGuest(t, 256)
	r := g.vring(1, netFeatures)
	// 40 descriptors of 2048 bytes: more than a Buf holds.
	g.postTx(make([]byte, 40*2048), 2048)
	g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(60, 0)...), 2048)
	bufs := newBufs(4)
	n, dropped, _ := r.dequeue(bufs)
	if n != 1 || dropped != 1 || r.broken || bufs[0].Len() != 60 {
		t.Fatalf("n=%d dropped=%d broken=%v len=%d; want the oversize frame dropped and the next one read", n, dropped, r.broken, bufs[0].Len())
	}
	if u := g.used(1); len(u) != 2 {
		t.Fatalf("%d used entries, want both chains returned", len(u))
	}
}

func TestCallSuppression(t *testing.T) {
	g := newFakeGuest(t, 256)
	r := g.vring(1, netFeatures)
	fds := eventfdPair(t)
	r.callFd = fds
	for i := 0; i < 5; i++ {
		g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(60, 0)...), 4096)
	}
	bufs := newBufs(8)
	r.dequeue(bufs)
	if c := readEventfd(t, fds); c != 1 {
		t.Fatalf("call eventfd counted %d, want one call per batch", c)
	}
	g.setAvailFlags(1, availFNoIntr)
	g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(60, 0)...), 4096)
	r.dequeue(bufs)
	if c := readEventfd(t, fds); c != 0 {
		t.Fatalf("call eventfd counted %d with VRING_AVAIL_F_NO_INTERRUPT, want 0", c)
	}
}

func TestZeroAllocs(t *testing.T) {
	g := newFakeGuest(t, 256)
	tx := g.vring(1, netFeatures)
	rx := g.vring(0, netFeatures)
	in := newBufs(32)
	out := newBufs(32)
	for _, b := range out {
		b.SetLen(1500)
	}
	pkt := append(hdr12(packet.VNetHdr{}, 0), frameOf(1500, 0)...)
	allocs := testing.AllocsPerRun(100, func() {
		for i := 0; i < 32; i++ {
			g.postTx(pkt, 4096)
		}
		g.postRx(32, 2048)
		if n, _, _ := tx.dequeue(in); n != 32 {
			t.Fatalf("dequeue %d", n)
		}
		if n, _, _ := rx.enqueue(out); n != 32 {
			t.Fatalf("enqueue %d", n)
		}
		g.seen = [4]uint16{} // the driver does not read used entries here
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch pair, want 0", allocs)
	}
}

func eventfdPair(t testing.TB) int {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// readEventfd returns the counter (0 if never written) and resets it.
func readEventfd(t *testing.T, fd int) uint64 {
	t.Helper()
	var b [8]byte
	if _, err := unix.Read(fd, b[:]); err == unix.EAGAIN {
		return 0
	} else if err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint64(b[:])
}

// benchRings measures one batch of 32 frames of size bytes through the
// transmit (dequeue) or receive (enqueue) ring in fake guest memory.
func benchRings(b *testing.B, size int, rx bool) {
	g := newFakeGuest(b, 256)
	tx := g.vring(1, netFeatures)
	rxr := g.vring(0, netFeatures)
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
		} else {
			for j := 0; j < 32; j++ {
				g.postTx(pkt, 4096)
			}
			if n, _, _ := tx.dequeue(bufs); n != 32 {
				b.Fatalf("dequeue %d", n)
			}
		}
	}
	b.ReportMetric(float64(32*b.N)/b.Elapsed().Seconds()/1e6, "Mpps")
}

// The driver side (postTx/postRx) runs inside the timed loop, so these
// are lower bounds of the back end's rate.
func BenchmarkDequeue64(b *testing.B)   { benchRings(b, 64, false) }
func BenchmarkDequeue1500(b *testing.B) { benchRings(b, 1500, false) }
func BenchmarkEnqueue64(b *testing.B)   { benchRings(b, 64, true) }
func BenchmarkEnqueue1500(b *testing.B) { benchRings(b, 1500, true) }
