package vhostuser

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port"
	"golang.org/x/sys/unix"
)

// Packed virtqueue layout (virtio 1.1+, "Packed Virtqueues").
const (
	// fRingPacked is VIRTIO_F_RING_PACKED.
	fRingPacked = 34
	// pdescFAvail and pdescFUsed are a packed descriptor's AVAIL and
	// USED flags: a descriptor is available when AVAIL equals the
	// driver's wrap counter and USED does not, used when both equal
	// the device's.
	pdescFAvail = 1 << 7
	pdescFUsed  = 1 << 15
	// Event suppression flags (struct pvirtq_event_suppress).
	evEnable  = 0
	evDisable = 1
	evDesc    = 2 // notify at the descriptor off_wrap names (EVENT_IDX)
	// wrapBit is the wrap counter's bit in off_wrap and, for both
	// halves, in the ring state of GET/SET_VRING_BASE.
	wrapBit = 1 << 15
)

// usedRec is one used element of a receive frame, written once the whole
// frame has found room.
type usedRec struct {
	id    uint16
	slots uint16 // ring slots of the buffer's chain
	n     uint32 // bytes written
}

// packedRing is a started packed virtqueue. The driver makes chains of
// descriptors available in ring order; the device (in order) writes one
// used element per chain over the chain's first slot, with the buffer id
// of the chain's last descriptor, and moves on by the chain's length.
// Everything but the indices, wrap counters and batch state is fixed at
// start; those belong to the one worker that drives the ring.
type packedRing struct {
	mem       *memTable
	num       uint16
	desc      []byte  // num*16 bytes: the descriptor ring
	drv       *uint32 // driver event suppression: off_wrap | flags<<16
	dev       *uint32 // device event suppression, written by the ring
	callFd    int     // -1 when the guest polls
	hdrLen    int     // 10 or 12
	mrg       bool    // VIRTIO_NET_F_MRG_RXBUF
	indirect  bool    // VIRTIO_RING_F_INDIRECT_DESC
	guestCsum bool    // the guest accepts NEEDS_CSUM frames
	guestTSO  bool    // the guest accepts TSO frames (both families)
	eventIdx  bool    // VIRTIO_RING_F_EVENT_IDX: the driver may ask for evDesc
	mtu       *atomic.Uint32
	mtuNeg    bool
	drops     *dropCounters
	// dlog, while dirty-page logging is on, receives every page the
	// ring writes: buffers, descriptors written back, the device area.
	dlog    *dirtyLog
	descGPA uint64
	devGPA  uint64

	lastAvail uint16 // next slot to read
	availWrap bool   // the driver's wrap counter at lastAvail
	usedIdx   uint16 // next slot to write back
	usedWrap  bool
	// signalled is usedIdx at the last publish: the old index of the
	// evDesc test.
	signalled uint16
	// headSlot is the first slot written back since the last publish
	// (-1: none); its id and flags (headWord) are stored last, by
	// publish, so the driver sees the batch whole. batchSlots counts
	// the slots written since then.
	headSlot   int
	headWord   uint32
	batchSlots uint32
	// lazy is ringConf.lazy: dequeue leaves the head for complete.
	lazy     bool
	devFlags uint16 // what the device area says: evEnable or evDisable
	broken   bool
	recs     []usedRec // capacity num, reused by every receive frame
	callBuf  [8]byte

	// ahead is the batch's run of one-descriptor chains as resolve
	// found them, from slot lastAvail on (head is the buffer id);
	// aheadI is the next one to take and aheadN the end of the run.
	ahead  [maxAhead]aheadEntry
	aheadI int
	aheadN int
	// lines is resolve's scratch (see vring.lines).
	lines [maxAhead * (warmLines + 1)]uintptr
}

// newPackedRing validates the ring geometry against mem. base is the
// ring state of SET_VRING_BASE: the next slot in bits 0-14 and the
// driver's wrap counter in bit 15; the device resumes writing back where
// it reads (nothing is in flight across a stop).
func newPackedRing(mem *memTable, c ringConf, base uint32, callFd int) (*packedRing, error) {
	n := c.num
	if n == 0 || n > maxQueueSize {
		return nil, fmt.Errorf("vhost-user: packed queue size %d not in 1..%d", n, maxQueueSize)
	}
	idx := uint16(base &^ wrapBit & 0xffff)
	if uint32(idx) >= n {
		return nil, fmt.Errorf("vhost-user: packed ring base %d beyond the %d-entry ring", idx, n)
	}
	desc := mem.user(c.addr.desc, uint64(n)*descSize)
	drv := mem.user(c.addr.avail, 4)
	dev := mem.user(c.addr.used, 4)
	if desc == nil || drv == nil || dev == nil {
		return nil, fmt.Errorf("vhost-user: packed ring addresses desc %#x driver %#x device %#x outside guest memory", c.addr.desc, c.addr.avail, c.addr.used)
	}
	if uintptr(unsafe.Pointer(&desc[0]))%16 != 0 || uintptr(unsafe.Pointer(&drv[0]))%4 != 0 || uintptr(unsafe.Pointer(&dev[0]))%4 != 0 {
		return nil, fmt.Errorf("vhost-user: packed ring desc %#x not 16-byte or event areas %#x %#x not 4-byte aligned", c.addr.desc, c.addr.avail, c.addr.used)
	}
	f := c.features
	r := &packedRing{
		mem: mem, num: uint16(n), desc: desc,
		lazy:      c.lazy,
		drv:       (*uint32)(unsafe.Pointer(&drv[0])),
		dev:       (*uint32)(unsafe.Pointer(&dev[0])),
		callFd:    callFd,
		hdrLen:    10,
		mrg:       f&(1<<fMrgRxbuf) != 0,
		indirect:  f&(1<<fIndirectDesc) != 0,
		guestCsum: f&(1<<fGuestCsum) != 0,
		guestTSO:  f&(1<<fGuestTSO4) != 0 && f&(1<<fGuestTSO6) != 0,
		eventIdx:  f&(1<<fEventIdx) != 0,
		mtuNeg:    f&(1<<fMTU) != 0,
		descGPA:   mem.gpaOf(c.addr.desc),
		devGPA:    mem.gpaOf(c.addr.used),
		lastAvail: idx, availWrap: base&wrapBit != 0,
		usedIdx: idx, usedWrap: base&wrapBit != 0,
		signalled: idx,
		headSlot:  -1,
		recs:      make([]usedRec, 0, n),
	}
	if r.mrg || f&(1<<fVersion1) != 0 {
		r.hdrLen = 12
	}
	// The device never waits for receive buffers (it drops when the
	// guest has none): the receive ring never asks for kicks. The
	// transmit ring starts wanting them.
	r.setNotify(isTx(int(c.addr.index)))
	r.callBuf[0] = 1
	return r, nil
}

func (r *packedRing) kicksOn() bool    { return r.devFlags == evEnable }
func (r *packedRing) kicksArmed() bool { return r.devFlags == evEnable }
func (r *packedRing) isBroken() bool   { return r.broken }
func (r *packedRing) takesTSO() bool   { return r.guestTSO }

// state returns the next slot and wrap counter of the driver (bits 0-15)
// and of the device (bits 16-31, as QEMU reads them); they are equal
// between batches.
func (r *packedRing) state() uint32 {
	return uint32(wrapped(r.lastAvail, r.availWrap)) | uint32(wrapped(r.usedIdx, r.usedWrap))<<16
}

// attach also marks the device area, written at start before the ring
// had its log.
func (r *packedRing) attach(mtu *atomic.Uint32, drops *dropCounters, dlog *dirtyLog) {
	r.mtu, r.drops, r.dlog = mtu, drops, dlog
	if dlog != nil {
		dlog.mark(r.devGPA, 4)
	}
}

// wrapped packs an index and a wrap counter as off_wrap does.
func wrapped(i uint16, w bool) uint16 {
	if w {
		return i | wrapBit
	}
	return i
}

// flagsAt loads the flags of the descriptor in slot i, ordered before
// the loads of the rest of it that follow.
func (r *packedRing) flagsAt(i uint16) uint16 {
	return uint16(atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.desc[int(i)*descSize+12]))) >> 16)
}

// availAt reports whether slot i is available under the driver's wrap
// counter w.
func (r *packedRing) availAt(i uint16, w bool) bool { return isAvail(r.flagsAt(i), w) }

// isAvail reports whether descriptor flags f say available under the
// driver's wrap counter w.
func isAvail(f uint16, w bool) bool {
	want := uint16(pdescFUsed)
	if w {
		want = pdescFAvail
	}
	return f&(pdescFAvail|pdescFUsed) == want
}

func (r *packedRing) hasPending() bool { return r.availAt(r.lastAvail, r.availWrap) }

// advance moves slot i with wrap counter w on by k slots (k <= num).
func (r *packedRing) advance(i uint16, w bool, k uint16) (uint16, bool) {
	i += k
	if i >= r.num {
		i -= r.num
		w = !w
	}
	return i, w
}

// addUsed writes back one used element for a chain of slots slots: id
// and length now, and id and flags last of all for the first element of
// a batch (publish stores it).
func (r *packedRing) addUsed(id uint16, n uint32, slots uint16, flags uint16) {
	d := r.desc[int(r.usedIdx)*descSize : int(r.usedIdx)*descSize+descSize]
	binary.LittleEndian.PutUint32(d[8:], n)
	if r.usedWrap {
		flags |= pdescFAvail | pdescFUsed
	}
	w := uint32(id) | uint32(flags)<<16
	if r.headSlot < 0 {
		r.headSlot, r.headWord, r.batchSlots = int(r.usedIdx), w, 0
	} else {
		binary.LittleEndian.PutUint32(d[12:], w)
	}
	r.batchSlots += uint32(slots)
	r.usedIdx, r.usedWrap = r.advance(r.usedIdx, r.usedWrap, slots)
}

// publish makes the elements written back since the last publish
// visible, storing the first one's flags last, and interrupts the guest
// at most once, if its driver area asks: always (evEnable), never
// (evDisable), or when the batch passed the descriptor it names
// (evDesc, with EVENT_IDX). The area is read after the store, a full
// barrier on amd64, so a driver that re-enables interrupts and then
// looks at the ring cannot miss this batch.
func (r *packedRing) publish() {
	if r.headSlot < 0 {
		return
	}
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&r.desc[r.headSlot*descSize+12])), r.headWord)
	r.logDescs()
	r.headSlot = -1
	old := r.signalled
	r.signalled = r.usedIdx
	if r.callFd < 0 {
		return
	}
	ev := atomic.LoadUint32(r.drv)
	switch uint16(ev >> 16) {
	case evDisable:
		return
	case evDesc:
		if r.eventIdx && !r.passed(uint16(ev), old) {
			return
		}
	}
	unix.Write(r.callFd, r.callBuf[:])
}

// complete publishes the used elements dequeue left on a lazy ring.
func (r *packedRing) complete() { r.publish() }

// passed reports whether moving the used index from old to usedIdx (a
// non-empty batch, at most one lap) passed the slot of offWrap: the
// indices are laid on one line, the earlier lap below zero, and the
// virtio need_event test applies.
func (r *packedRing) passed(offWrap, old uint16) bool {
	newIdx := r.usedIdx
	if newIdx <= old {
		old -= r.num
	}
	off := offWrap &^ wrapBit
	if (offWrap&wrapBit != 0) != r.usedWrap {
		off -= r.num
	}
	return needEvent(off, newIdx, old)
}

// logDescs marks the descriptors written back since the last publish
// while dirty-page logging is on.
func (r *packedRing) logDescs() {
	if r.dlog == nil {
		return
	}
	start, k := uint64(r.headSlot), uint64(r.batchSlots)
	if k >= uint64(r.num) {
		r.dlog.mark(r.descGPA, uint64(r.num)*descSize)
		return
	}
	if end := start + k; end <= uint64(r.num) {
		r.dlog.mark(r.descGPA+start*descSize, k*descSize)
	} else {
		r.dlog.mark(r.descGPA+start*descSize, (uint64(r.num)-start)*descSize)
		r.dlog.mark(r.descGPA, (end-uint64(r.num))*descSize)
	}
}

// setNotify enables (or suppresses) guest kicks in the device area and,
// when enabling, reports whether entries arrived meanwhile. The area's
// store is the barrier between it and the load of the next descriptor.
func (r *packedRing) setNotify(on bool) bool {
	r.devFlags = evDisable
	if on {
		r.devFlags = evEnable
	}
	atomic.StoreUint32(r.dev, uint32(r.devFlags)<<16)
	if r.dlog != nil {
		r.dlog.mark(r.devGPA, 4)
	}
	return on && r.hasPending()
}

// pchain walks the chain starting at a slot of a packed ring: the
// descriptors of the ring from that slot while NEXT is set, or the table
// of a single indirect descriptor, with every index, length and address
// bounded.
type pchain struct {
	r     *packedRing
	slot  uint16 // next ring slot
	slots uint16 // ring slots the chain used so far
	id    uint16 // buffer id of the last ring descriptor read
	done  bool   // the ring part is over
	table []byte // the indirect table, when there is one
	ti    uint32 // next entry of table
	addr  uint64 // guest physical address of the buffer next returned
}

func (r *packedRing) chainAt(slot uint16) pchain { return pchain{r: r, slot: slot} }

// next returns the next buffer of the chain and its flags. ok is false at
// the end; err is errBroken for any malformed descriptor.
func (c *pchain) next() (buf []byte, flags uint16, ok bool, err error) {
	r := c.r
	var d []byte
	if c.table != nil {
		if c.ti >= uint32(len(c.table))/descSize {
			return nil, 0, false, nil
		}
		d = c.table[c.ti*descSize : c.ti*descSize+descSize]
		c.ti++
		flags = binary.LittleEndian.Uint16(d[14:])
		if flags&descFIndir != 0 {
			return nil, 0, false, errBroken // one level only
		}
	} else {
		if c.done {
			return nil, 0, false, nil
		}
		if c.slots == r.num {
			return nil, 0, false, errBroken // longer than the ring
		}
		d = r.desc[int(c.slot)*descSize : int(c.slot)*descSize+descSize]
		c.slots++
		if c.slot++; c.slot == r.num {
			c.slot = 0
		}
		c.id = binary.LittleEndian.Uint16(d[12:])
		flags = binary.LittleEndian.Uint16(d[14:])
		if flags&descFNext == 0 {
			c.done = true
		}
		if flags&descFIndir != 0 {
			// The whole buffer, alone in its chain.
			n := binary.LittleEndian.Uint32(d[8:])
			if !r.indirect || c.slots != 1 || flags&descFNext != 0 ||
				n == 0 || n%descSize != 0 || n/descSize > maxQueueSize {
				return nil, 0, false, errBroken
			}
			t := r.mem.guest(binary.LittleEndian.Uint64(d), n)
			if t == nil {
				return nil, 0, false, errBroken
			}
			c.table = t
			return c.next()
		}
	}
	addr := binary.LittleEndian.Uint64(d)
	n := binary.LittleEndian.Uint32(d[8:])
	buf = r.mem.guest(addr, n)
	if buf == nil && n != 0 {
		return nil, 0, false, errBroken
	}
	c.addr = addr
	return buf, flags, true, nil
}

// dequeue moves up to len(bufs) frames the guest transmitted into bufs
// (vring.dequeue's contract).
func (r *packedRing) dequeue(bufs []*packet.Buf) (n, dropped int, bytes uint64) {
	r.complete()
	var malformed, tooBig uint64
	lim := frameLimit(r.mtuNeg, r.mtu)
	r.resolve(len(bufs), false, nil)
	for n+int(malformed+tooBig) < len(bufs) {
		b := bufs[n]
		var ok bool
		var id, slots uint16
		if r.aheadI < r.aheadN {
			a := &r.ahead[r.aheadI]
			r.aheadI++
			ok, id, slots = readOne(a.buf, r.hdrLen, b), a.head, 1
		} else {
			if !r.hasPending() {
				break
			}
			c := r.chainAt(r.lastAvail)
			var err error
			ok, err = r.readChain(&c, b)
			if err != nil {
				r.broken = true
				break
			}
			id, slots = c.id, c.slots
		}
		r.lastAvail, r.availWrap = r.advance(r.lastAvail, r.availWrap, slots)
		r.addUsed(id, 0, slots, 0)
		switch {
		case !ok:
			malformed++
		case b.VNet.GSOType == packet.GSONone && overMTU(b.Bytes(), lim):
			tooBig++
			b.SetLen(0)
		default:
			bytes += uint64(b.Len())
			n++
		}
	}
	r.aheadN = 0
	dropped = int(malformed + tooBig)
	if !r.lazy {
		r.publish()
	}
	if dropped > 0 && r.drops != nil {
		r.drops.inMalformed.Add(malformed)
		r.drops.inTooBig.Add(tooBig)
	}
	return n, dropped, bytes
}

// resolve reads the run of available chains of one descriptor from slot
// lastAvail on, at most k (and maxAhead) of them, into r.ahead before any
// frame is copied, and has the CPU fetch what the copies will touch:
// first the lines of those descriptors (consecutive slots, four to a
// line), then the first lines of each buffer, for writing on the
// receive ring (write set; up to the header and frame i of bufs). A
// descriptor is taken when its flags, loaded once, say available under
// the driver's wrap counter, it has neither NEXT nor INDIRECT, its WRITE
// flag is write, its buffer lies in guest memory and holds at least the
// header; the run stops at the first that is not, and the chain walk
// takes over from there with every check of its own. Nothing is
// consumed and nothing is written.
func (r *packedRing) resolve(k int, write bool, bufs []*packet.Buf) {
	k = min(k, maxAhead, int(r.num))
	r.aheadI, r.aheadN = 0, 0
	if k == 0 || !r.hasPending() {
		// An empty poll: no descriptor lines fetched from the guest,
		// which is writing them.
		return
	}
	lines := r.lines[:0]
	base := uintptr(unsafe.Pointer(&r.desc[0]))
	slot := r.lastAvail
	for i := 0; i < k; i++ {
		if p := base + uintptr(slot)*descSize; i == 0 || p&63 == 0 {
			lines = append(lines, p)
		}
		if slot++; slot == r.num {
			slot = 0
		}
	}
	prefetch(lines, false)
	lines = lines[:0]
	want := uint16(0)
	if write {
		want = descFWrite
	}
	slot, wrap := r.lastAvail, r.availWrap
	for i := 0; i < k; i++ {
		f := r.flagsAt(slot)
		if !isAvail(f, wrap) || f&(descFNext|descFIndir|descFWrite) != want {
			break
		}
		d := r.desc[int(slot)*descSize : int(slot)*descSize+descSize]
		addr := binary.LittleEndian.Uint64(d)
		n := binary.LittleEndian.Uint32(d[8:])
		if n < uint32(r.hdrLen) {
			break
		}
		buf := r.mem.guest(addr, n)
		if buf == nil {
			break
		}
		a := &r.ahead[i]
		a.buf, a.addr, a.head, a.flags = buf, addr, binary.LittleEndian.Uint16(d[12:]), f
		r.aheadN = i + 1
		lines = bufLines(lines, buf, addr, write, r.hdrLen, bufs, i)
		slot, wrap = r.advance(slot, wrap, 1)
	}
	prefetch(lines, write)
}

// readChain copies one guest frame into b, walking the whole chain (its
// length and buffer id are needed even when the frame is dropped). ok
// is false for a frame that is too short or too long; err breaks the
// ring.
func (r *packedRing) readChain(c *pchain, b *packet.Buf) (ok bool, err error) {
	var gather [12]byte
	var hdr []byte
	got, total, tooBig := 0, 0, false
	space := b.Space()
	for {
		buf, flags, more, err := c.next()
		if err != nil {
			return false, err
		}
		if !more {
			break
		}
		// A transmit buffer the guest marks writable is refused, except
		// in an indirect table: DPDK's virtio driver presets WRITE on
		// every entry of its packed indirect tables, transmit included;
		// the device only reads them either way.
		if flags&descFWrite != 0 && c.table == nil {
			return false, errBroken
		}
		if got < r.hdrLen {
			if got == 0 && len(buf) >= r.hdrLen {
				hdr = buf[:r.hdrLen]
				got = r.hdrLen
				buf = buf[r.hdrLen:]
			} else {
				k := copy(gather[got:r.hdrLen], buf)
				got += k
				buf = buf[k:]
				hdr = gather[:r.hdrLen]
			}
		}
		if tooBig || total+len(buf) > len(space) {
			tooBig = true
			continue
		}
		total += copy(space[total:], buf)
	}
	if got < r.hdrLen || total == 0 || tooBig {
		return false, nil
	}
	b.SetLen(total)
	b.VNet.Decode(hdr)
	return true, nil
}

// enqueue copies frames into the guest's receive buffers (vring.enqueue's
// contract: it stops at the first frame that finds no room).
func (r *packedRing) enqueue(bufs []*packet.Buf) (n, dropped int, bytes uint64) {
	var offload, tooBig uint64
	lim := frameLimit(r.mtuNeg, r.mtu)
	sent := 0
	r.resolve(len(bufs), true, bufs)
	for sent+dropped < len(bufs) {
		b := bufs[sent+dropped]
		if b.VNet.GSOType != packet.GSONone {
			if !r.guestTSO {
				offload++
				dropped++
				continue
			}
		} else if overMTU(b.Bytes(), lim) {
			tooBig++
			dropped++
			continue
		}
		if b.VNet.Flags&packet.VNetFlagNeedsCsum != 0 && !r.guestCsum {
			if packet.FinishChecksum(b) != nil {
				offload++
				dropped++
				continue
			}
		}
		res := r.writeFrame(b)
		if res == writeBroken {
			r.broken = true
			break
		}
		if res == writeNoRoom {
			break
		}
		if res == writeDropped {
			tooBig++
			dropped++
			continue
		}
		bytes += uint64(b.Len())
		sent = port.MoveSent(bufs, sent, dropped)
	}
	r.aheadN = 0
	r.publish()
	if dropped > 0 && r.drops != nil {
		r.drops.outOffload.Add(offload)
		r.drops.outTooBig.Add(tooBig)
	}
	return sent + dropped, dropped, bytes
}

// writeFrame writes one frame with its header into as many receive
// chains as it needs (one without MRG_RXBUF). The used elements are
// written back only once the frame fits: they overwrite the driver's
// descriptors, which a frame that does not fit leaves for the next one.
func (r *packedRing) writeFrame(b *packet.Buf) int {
	frame := b.Bytes()
	if r.aheadI < r.aheadN {
		a := &r.ahead[r.aheadI]
		if len(frame) <= len(a.buf)-r.hdrLen {
			// One descriptor takes the header and the whole frame.
			r.aheadI++
			k := writeOne(a.buf, r.hdrLen, b)
			if r.dlog != nil {
				r.dlog.mark(a.addr, uint64(k))
			}
			r.addUsed(a.head, uint32(k), 1, descFWrite)
			r.lastAvail, r.availWrap = r.advance(r.lastAvail, r.availWrap, 1)
			return writeOK
		}
		// The walk below starts at lastAvail: the rest of the run is
		// read again there.
		r.aheadI, r.aheadN = 0, 0
	}
	slot, wrap := r.lastAvail, r.availWrap
	var hdrDst []byte
	// The header's buffer is marked dirty after the header is written,
	// last; the other buffers as soon as the frame's bytes are in.
	var hdrGPA, hdrSpan uint64
	recs := r.recs[:0]
	slots := uint32(0)
	for hdrDst == nil || len(frame) > 0 {
		if !r.availAt(slot, wrap) {
			return writeNoRoom
		}
		if !r.mrg && len(recs) == 1 {
			return writeDropped
		}
		c := r.chainAt(slot)
		written := uint32(0)
		for {
			buf, flags, more, err := c.next()
			if err != nil {
				return writeBroken
			}
			if !more {
				break
			}
			if flags&descFWrite == 0 {
				return writeBroken
			}
			h := 0
			if hdrDst == nil {
				if len(buf) < r.hdrLen {
					// Every receive buffer holds at least the header.
					return writeBroken
				}
				hdrDst = buf[:r.hdrLen]
				buf = buf[r.hdrLen:]
				h = r.hdrLen
			}
			k := copy(buf, frame)
			frame = frame[k:]
			written += uint32(h + k)
			if h != 0 {
				hdrGPA, hdrSpan = c.addr, uint64(h+k)
			} else if r.dlog != nil && k > 0 {
				r.dlog.mark(c.addr, uint64(k))
			}
		}
		if hdrDst == nil {
			return writeBroken // an empty receive chain
		}
		if slots += uint32(c.slots); slots > uint32(r.num) {
			return writeBroken // chains that go round the ring
		}
		recs = append(recs, usedRec{id: c.id, slots: c.slots, n: written})
		slot, wrap = r.advance(slot, wrap, c.slots)
	}
	b.VNet.Encode(hdrDst)
	if r.hdrLen == 12 {
		binary.LittleEndian.PutUint16(hdrDst[10:], uint16(len(recs)))
	}
	if r.dlog != nil {
		r.dlog.mark(hdrGPA, hdrSpan)
	}
	for _, u := range recs {
		r.addUsed(u.id, u.n, u.slots, descFWrite)
	}
	r.lastAvail, r.availWrap = slot, wrap
	return writeOK
}
