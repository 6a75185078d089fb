package vhostuser

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	mathbits "math/bits"
	"slices"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/butterfly-go/butterfly/internal/packet"
	"golang.org/x/sys/unix"
)

// logPages returns the pages marked in a log's bitmap.
func logPages(words []uint64) []uint64 {
	var out []uint64
	for w, v := range words {
		for b := 0; b < 64; b++ {
			if v&(1<<b) != 0 {
				out = append(out, uint64(w*64+b))
			}
		}
	}
	return out
}

// pagesOf returns the pages the n bytes at gpa lie in.
func pagesOf(set map[uint64]bool, gpa, n uint64) {
	for p := gpa >> logPageShift; n > 0 && p <= (gpa+n-1)>>logPageShift; p++ {
		set[p] = true
	}
}

func TestDirtyLogMark(t *testing.T) {
	tests := []struct {
		name   string
		gpa, n uint64
		want   []uint64
	}{
		{"one byte", 0, 1, []uint64{0}},
		{"nothing", 0x5000, 0, nil},
		{"last byte of a page", 0xfff, 1, []uint64{0}},
		{"across a page boundary", 0x1fff, 2, []uint64{1, 2}},
		{"across a word of the bitmap", 64<<12 - 1, 2, []uint64{63, 64}},
		{"several pages", 3 << 12, 3<<12 + 1, []uint64{3, 4, 5, 6}},
		{"end of the log", 255 << 12, 2 << 12, []uint64{255}},
		{"beyond the log", 1 << 40, 10, nil},
		{"wraps the address space", ^uint64(0) - 10, 100, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &dirtyLog{words: make([]uint64, 4)} // 256 pages
			l.mark(tt.gpa, tt.n)
			if got := logPages(l.words); !slices.Equal(got, tt.want) {
				t.Fatalf("mark(%#x, %d) marked pages %v, want %v", tt.gpa, tt.n, got, tt.want)
			}
		})
	}
}

// TestDirtyLogRings: with the log on, every page the receive ring writes
// (the bytes of each buffer it fills, header included, in any of the
// chains a frame spans) and the used ring's pages are marked, and
// nothing else; the transmit ring, which only reads buffers, marks its
// used ring only. Without a log nothing is marked.
func TestDirtyLogRings(t *testing.T) {
	usedGPA := func(ring int) uint64 { return gpaBase + uint64(ring*ringArea) + 0x8000 }
	logged := func(g *fakeGuest, ring int, features uint64, l *dirtyLog) *vring {
		c := g.conf(ring, features)
		c.addr.flags, c.addr.lg = vringFLog, usedGPA(ring)
		v, err := newVring(g.table, c, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		v.dlog = l
		return v
	}
	for _, on := range []bool{true, false} {
		g := newFakeGuest(t, 256)
		l := &dirtyLog{words: make([]uint64, 1024)} // 256 MiB of guest memory
		var dl *dirtyLog
		if on {
			dl = l
		}
		rx := logged(g, 0, netFeatures, dl)
		g.postRx(8, slotSize)
		// 100 bytes, then 3000 bytes over two buffers (MRG_RXBUF), then
		// 1000: buffers 0, 1+2 and 3, two of them 2 KiB slots sharing a
		// page with the next.
		var bufs []*packet.Buf
		for _, n := range []int{100, 3000, 1000} {
			b := packet.NewBuf()
			b.SetLen(n)
			bufs = append(bufs, b)
		}
		if n, d, _ := rx.enqueue(bufs); n != 3 || d != 0 {
			t.Fatalf("enqueue %d, dropped %d", n, d)
		}
		want := map[uint64]bool{}
		for _, u := range g.used(0) {
			gpa, _ := g.slot(0, int(u.id))
			pagesOf(want, gpa, uint64(u.n))
		}
		pagesOf(want, usedGPA(0), 4+8*256)
		if !on {
			want = map[uint64]bool{}
		}
		if got, w := logPages(l.words), slices.Sorted(maps.Keys(want)); !slices.Equal(got, w) {
			t.Fatalf("log on %v: receive ring marked pages %#x, want %#x", on, got, w)
		}

		clear(l.words)
		tx := logged(g, 1, netFeatures, dl)
		g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(3000, 1)...), 1500)
		if n, _, _ := tx.dequeue(newBufs(4)); n != 1 {
			t.Fatalf("dequeue %d", n)
		}
		want = map[uint64]bool{}
		if on {
			pagesOf(want, usedGPA(1), 4+8*256)
		}
		if got, w := logPages(l.words), slices.Sorted(maps.Keys(want)); !slices.Equal(got, w) {
			t.Fatalf("log on %v: transmit ring marked pages %#x, want %#x", on, got, w)
		}
	}
}

// TestDirtyLogProtocol drives a live migration's logging through the
// protocol: LOG_ALL and LOG_SHMFD are offered; SET_LOG_BASE maps the
// front end's log (answered with an empty reply); while LOG_ALL is acked
// the pages of delivered frames and of the used ring are marked, with the
// log's offset honoured; once LOG_ALL is dropped nothing more is marked.
// A bad log is refused and the session goes on.
func TestDirtyLogProtocol(t *testing.T) {
	p := listenTest(t)
	f := dialFrontEnd(t, p)
	f.without |= 1 << fLogAll
	f.setup()
	f.send(reqGetFeatures, 0, nil)
	offered := binary.LittleEndian.Uint64(f.recv(reqGetFeatures))
	f.send(reqGetProtocolFeatures, 0, nil)
	pf := binary.LittleEndian.Uint64(f.recv(reqGetProtocolFeatures))
	if offered&(1<<fLogAll) == 0 || pf&(1<<pfLogShmfd) == 0 {
		t.Fatalf("LOG_ALL or LOG_SHMFD not offered: features %#x, protocol features %#x", offered, pf)
	}
	f.call64(reqSetProtocolFeatures, 1<<pfReplyAck|1<<pfLogShmfd, false)

	// The log: 4 KiB covers 128 MiB; put it 8 bytes into the memfd.
	const logSize, logOff = 4096, 8
	lfd, err := unix.MemfdCreate("vhu-log", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(lfd)
	if err := unix.Ftruncate(lfd, logOff+logSize); err != nil {
		t.Fatal(err)
	}
	lm, err := unix.Mmap(lfd, 0, logOff+logSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(lm)
	words := unsafe.Slice((*uint64)(unsafe.Pointer(&lm[logOff])), logSize/8)
	setLog := func(size, off uint64) {
		pl := binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, size), off)
		f.send(reqSetLogBase, 0, pl, lfd)
	}
	setLog(0, 0) // no log at all: refused, no reply
	setLog(logSize, 3)
	setLog(logSize, logOff)
	if r := f.recv(reqSetLogBase); len(r) != 0 {
		t.Fatalf("SET_LOG_BASE reply has %d bytes of payload, want none", len(r))
	}
	base := (offered &^ f.without) | 1<<fLogAll
	if ack := f.call64(reqSetFeatures, base, true); ack != 0 {
		t.Fatalf("SET_FEATURES with LOG_ALL: ack %d", ack)
	}
	// QEMU then sets each ring's address again, with VHOST_VRING_F_LOG
	// and the used ring's guest physical address.
	c := f.g.conf(0, 0)
	a := binary.LittleEndian.AppendUint32(nil, 0)
	a = binary.LittleEndian.AppendUint32(a, vringFLog)
	for _, v := range []uint64{c.addr.desc, c.addr.used, c.addr.avail, gpaBase + 0x8000} {
		a = binary.LittleEndian.AppendUint64(a, v)
	}
	f.send(reqSetVringAddr, flagNeedReply, a)
	if ack := binary.LittleEndian.Uint64(f.recv(reqSetVringAddr)); ack != 0 {
		t.Fatalf("SET_VRING_ADDR with VHOST_VRING_F_LOG: ack %d", ack)
	}

	deliver := func() map[uint64]bool {
		t.Helper()
		f.g.postRx(2, slotSize)
		out := newBufs(2)
		for _, b := range out {
			b.SetLen(1200)
		}
		if n, _, _ := p.WriteBatch(out); n != 2 {
			t.Fatalf("WriteBatch %d", n)
		}
		want := map[uint64]bool{}
		for _, u := range f.g.used(0) {
			gpa, _ := f.g.slot(0, int(u.id))
			pagesOf(want, gpa, uint64(u.n))
		}
		return want
	}
	want := deliver()
	pagesOf(want, gpaBase+0x8000, 4+8*256)
	if got, w := logPages(words), slices.Sorted(maps.Keys(want)); !slices.Equal(got, w) {
		t.Fatalf("pages marked while logging %#x, want %#x", got, w)
	}
	if !bytes.Equal(lm[:logOff], make([]byte, logOff)) {
		t.Fatalf("bytes before the log's offset written: % x", lm[:logOff])
	}

	clear(words)
	if ack := f.call64(reqSetFeatures, base&^(1<<fLogAll), true); ack != 0 {
		t.Fatalf("SET_FEATURES without LOG_ALL: ack %d", ack)
	}
	deliver()
	if got := logPages(words); len(got) != 0 {
		t.Fatalf("pages marked after logging stopped: %#x", got)
	}
}

// migration plays the copy of guest memory of a live migration against
// a dirty log: the front end syncs the log (copies every marked page to
// the destination and clears its bit) after each mark the back end makes,
// the worst moment, and once more when checked, as QEMU's last sync with
// the guest stopped; the guest's own writes reach the destination at once
// (guestWrote). A back end that marks a page before it writes there lets
// a sync copy the page without the write, and nothing marks it again: the
// destination then differs.
type migration struct {
	t    *testing.T
	mem  []byte // guest memory, at gpaBase
	dest []byte // the destination's copy
	l    *dirtyLog
}

func newMigration(t *testing.T, mem []byte, l *dirtyLog) *migration {
	m := &migration{t: t, mem: mem, dest: slices.Clone(mem), l: l}
	l.marked = m.sync
	return m
}

func (m *migration) sync() {
	const page = 1 << logPageShift
	for w := range m.l.words {
		for bits := atomic.SwapUint64(&m.l.words[w], 0); bits != 0; bits &= bits - 1 {
			off := uint64(w*64+mathbits.TrailingZeros64(bits))<<logPageShift - gpaBase
			if off >= uint64(len(m.mem)) {
				m.t.Fatalf("page at guest address %#x marked, outside guest memory", off+gpaBase)
			}
			copy(m.dest[off:off+page], m.mem[off:off+page])
		}
	}
}

func (m *migration) guestWrote() { copy(m.dest, m.mem) }

// check runs the last sync and fails if the destination differs.
func (m *migration) check(what string) {
	m.t.Helper()
	m.sync()
	if bytes.Equal(m.dest, m.mem) {
		return
	}
	for i := range m.dest {
		if m.dest[i] != m.mem[i] {
			m.t.Fatalf("%s: the destination differs at guest address %#x (offset %#x in a ring area, %#x past the buffers' start)",
				what, gpaBase+i, i%ringArea, i-bufArea)
		}
	}
}

// migrationRing is what migrationSteps drives: a split or packed ring.
type migrationRing interface {
	enqueue(bufs []*packet.Buf) (n, dropped int, bytes uint64)
	dequeue(bufs []*packet.Buf) (n, dropped int, bytes uint64)
	setNotify(on bool) bool
}

// migrationSteps delivers frame i on rx (the guest posted a receive
// buffer), takes the frame the guest posted on tx, and switches
// notifications off and on, checking the destination after each step.
func migrationSteps(t *testing.T, m *migration, rx, tx migrationRing, i int) {
	t.Helper()
	b := packet.NewBuf()
	b.SetLen(100 + i)
	b.Bytes()[0] = byte(i + 1)
	if n, _, _ := rx.enqueue([]*packet.Buf{b}); n != 1 {
		t.Fatalf("frame %d not delivered", i)
	}
	m.check(fmt.Sprintf("receive %d", i))
	if n, _, _ := tx.dequeue(newBufs(4)); n != 1 {
		t.Fatalf("frame %d not dequeued", i)
	}
	m.check(fmt.Sprintf("transmit %d", i))
	for _, on := range []bool{i%2 == 0, i%2 != 0} {
		rx.setNotify(on)
		tx.setNotify(on)
		m.check(fmt.Sprintf("notifications %v after frame %d", on, i))
	}
}

// TestDirtyLogAfterWrite: on split rings, a live migration's destination
// gets every byte the back end wrote (buffers with their headers, used
// entries, index and flags, avail_event), however its syncs of the log
// fall (see migration). With a mark before the store of the used index,
// the last sync copied the old index.
func TestDirtyLogAfterWrite(t *testing.T) {
	for _, features := range []uint64{netFeatures, netFeatures | 1<<fEventIdx} {
		g := newFakeGuest(t, 256)
		l := &dirtyLog{words: make([]uint64, 1024)}
		m := newMigration(t, g.mem, l)
		var rings [2]*vring
		for i := range rings {
			c := g.conf(i, features)
			c.addr.flags, c.addr.lg = vringFLog, gpaBase+uint64(i*ringArea)+0x8000
			r, err := newVring(g.table, c, 0, -1)
			if err != nil {
				t.Fatal(err)
			}
			r.attach(nil, nil, l)
			rings[i] = r
		}
		m.check("attach")
		for i := range 5 {
			g.postRx(1, slotSize)
			g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(60, byte(i))...), 4096)
			m.guestWrote()
			migrationSteps(t, m, rings[0], rings[1], i)
			g.used(0)
			g.used(1)
		}
	}
}
