package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port"
	"golang.org/x/sys/unix"
)

// Split virtqueue layout constants (virtio 1.x, "Split Virtqueues").
const (
	descSize     = 16
	descFNext    = 1
	descFWrite   = 2
	descFIndir   = 4
	usedFNoNotif = 1 // VRING_USED_F_NO_NOTIFY, set by the device
	availFNoIntr = 1 // VRING_AVAIL_F_NO_INTERRUPT, set by the driver
	maxQueueSize = 32768
	// fEventIdx is VIRTIO_RING_F_EVENT_IDX: used_event (after the avail
	// ring) and avail_event (after the used ring) replace the flags.
	fEventIdx = 29
	// fInOrder is VIRTIO_F_IN_ORDER: buffers are used in the order they
	// were made available, so a batch of transmitted frames is returned
	// with one used entry (the last chain's head) for the whole batch.
	fInOrder = 35
	// ethHdr and vlanTag bound a frame of a guest MTU: MTU plus the
	// Ethernet header, plus one 802.1Q tag when the frame carries one.
	ethHdr  = 14
	vlanTag = 4
)

// errBroken marks a ring the guest corrupted; the ring stops until the
// front end sets it up again.
var errBroken = errors.New("vhost-user: guest broke the virtqueue")

// dropCounters are a port's drops by reason. The rings of the port add to
// them at most once per batch.
type dropCounters struct {
	inMalformed atomic.Uint64 // transmitted frame too short, or larger than a Buf
	inTooBig    atomic.Uint64 // transmitted non-TSO frame larger than the guest MTU
	outTooBig   atomic.Uint64 // larger than the guest MTU, or than one receive chain without MRG_RXBUF
	outOffload  atomic.Uint64 // TSO frame for a guest without GUEST_TSO, or a bad partial checksum
}

// vring is a started split virtqueue. Everything but lastAvail, usedIdx,
// signalled, unpublished, guess, usedFlags, broken and the scratch is
// fixed at start; those belong to the one worker that drives the ring.
type vring struct {
	mem       *memTable
	num       uint16
	mask      uint16
	desc      []byte  // num*16 bytes
	availFI   *uint32 // avail.flags | avail.idx<<16
	availRing []byte  // num*2 bytes
	usedFI    *uint32 // used.flags | used.idx<<16
	usedRing  []byte  // num*8 bytes
	callFd    int     // -1 when the guest polls
	hdrLen    int     // 10 or 12
	mrg       bool    // VIRTIO_NET_F_MRG_RXBUF
	indirect  bool    // VIRTIO_RING_F_INDIRECT_DESC
	guestCsum bool    // the guest accepts NEEDS_CSUM frames
	guestTSO  bool    // the guest accepts TSO frames (both families)
	// eventIdx: VIRTIO_RING_F_EVENT_IDX. usedEvent is the driver's
	// used_event (avail ring tail), availEvent the device's avail_event
	// (used ring tail); both are guest memory.
	eventIdx  bool
	usedEvent *uint16
	// inOrder: VIRTIO_F_IN_ORDER (see dequeue).
	inOrder    bool
	availEvent *uint16
	// mtu points at the port's guest MTU (0: none announced); it is
	// enforced when the guest negotiated VIRTIO_NET_F_MTU (mtuNeg).
	mtu    *atomic.Uint32
	mtuNeg bool
	// drops, when set, receives the drops by reason.
	drops *dropCounters
	// dlog, while dirty-page logging is on, receives every page the ring
	// writes in guest memory; usedGPA and usedLen locate the used ring
	// (usedLen is 0 when the front end did not ask for it to be logged).
	dlog    *dirtyLog
	usedGPA uint64
	usedLen uint64

	// walk is the chain walker of readChain and writeFrame (chainAt).
	walk chain
	// ahead is the batch's avail entries as resolve found them, the
	// first one at avail index aheadAt; aheadN of them are valid.
	ahead   [maxAhead]aheadEntry
	aheadAt uint16
	aheadN  uint16
	// lines is resolve's scratch: the addresses it prefetches (a
	// buffer's first warmLines*64 bytes span at most warmLines+1 lines).
	lines [maxAhead * (warmLines + 1)]uintptr
	// guess is the descriptor the next transmitted frame most likely
	// starts at on an in-order ring: the one after the last head
	// dequeue took (see prefetchNext).
	guess uint16
	next  [2]uintptr // prefetchNext's scratch

	lastAvail uint16
	usedIdx   uint16
	// availSeen is the avail index enqueue last read: the entries up to
	// it are available whatever the guest did since.
	availSeen uint16
	// signalled is the used index at the last publish: the old index of
	// the vring_need_event test.
	signalled uint16
	// lazy is ringConf.lazy; unpublished is set while dequeue's used
	// entries wait for complete.
	lazy, unpublished bool
	// usedFlags is the device's notification state: usedFNoNotif while
	// the worker polls (kicks suppressed), 0 when it wants kicks; the
	// receive ring keeps usedFNoNotif. Without EVENT_IDX it is what
	// used.flags holds; with it used.flags stays 0 and avail_event does
	// the work.
	usedFlags uint16
	// armedAt is the avail_event written when kicks were last enabled
	// (EVENT_IDX): kicks are armed only while it is still lastAvail.
	armedAt uint16
	broken  bool
	callBuf [8]byte
}

// queue is a started virtqueue as the port drives it, split (vring) or
// packed (packedRing). The port makes a handful of calls per batch
// through it and none per frame: each layout has its own batch loops.
type queue interface {
	// dequeue reads frames the guest transmitted (see vring.dequeue).
	dequeue(bufs []*packet.Buf) (n, dropped int, bytes uint64)
	// enqueue delivers frames to the guest (see vring.enqueue).
	enqueue(bufs []*packet.Buf) (n, dropped int, bytes uint64)
	// setNotify enables or suppresses guest kicks; enabling reports
	// whether entries arrived meanwhile.
	setNotify(on bool) bool
	// kicksArmed reports whether the guest's next entry will kick.
	kicksArmed() bool
	// kicksOn reports whether kicks are enabled.
	kicksOn() bool
	// hasPending reports whether the guest made entries available that
	// the ring has not consumed.
	hasPending() bool
	// isBroken reports whether the guest corrupted the ring.
	isBroken() bool
	// takesTSO reports whether the guest accepts TSO frames.
	takesTSO() bool
	// state is the ring's position for GET_VRING_BASE and a restart.
	state() uint32
	// attach connects the ring to its port's MTU, drop counters and,
	// while logging is on, dirty log (nil when off).
	attach(mtu *atomic.Uint32, drops *dropCounters, dlog *dirtyLog)
	// complete publishes the used entries a lazy ring's dequeue left
	// (see ringConf.lazy); it does nothing when there are none.
	complete()
}

func (r *vring) kicksOn() bool  { return r.usedFlags == 0 }
func (r *vring) isBroken() bool { return r.broken }
func (r *vring) takesTSO() bool { return r.guestTSO }
func (r *vring) state() uint32  { return uint32(r.lastAvail) }
func (r *vring) attach(mtu *atomic.Uint32, drops *dropCounters, dlog *dirtyLog) {
	r.mtu, r.drops, r.dlog = mtu, drops, dlog
	r.logUsed() // newVring wrote the used ring's flags and avail_event
}

// ringConf is what the front end configured for one ring.
type ringConf struct {
	num      uint32
	addr     vringAddr
	features uint64
	// lazy: dequeue leaves the used entries of the frames it took for
	// complete to publish, or for the next dequeue (a port's transmit
	// rings; see Port.CompleteReads).
	lazy bool
}

// newVring validates the ring geometry against mem. base is the
// front end's last avail index; the used index is taken from guest memory
// and both resynchronise to it if they differ (frames in flight are lost).
func newVring(mem *memTable, c ringConf, base uint16, callFd int) (*vring, error) {
	n := c.num
	if n == 0 || n > maxQueueSize || n&(n-1) != 0 {
		return nil, fmt.Errorf("vhost-user: queue size %d is not a power of two up to %d", n, maxQueueSize)
	}
	f := c.features
	// With EVENT_IDX each ring has a 16-bit event index after its entries.
	tail := uint64(0)
	if f&(1<<fEventIdx) != 0 {
		tail = 2
	}
	desc := mem.user(c.addr.desc, uint64(n)*descSize)
	avail := mem.user(c.addr.avail, 4+2*uint64(n)+tail)
	used := mem.user(c.addr.used, 4+8*uint64(n)+tail)
	if desc == nil || avail == nil || used == nil {
		return nil, fmt.Errorf("vhost-user: ring addresses desc %#x avail %#x used %#x outside guest memory", c.addr.desc, c.addr.avail, c.addr.used)
	}
	if uintptr(unsafe.Pointer(&avail[0]))%4 != 0 || uintptr(unsafe.Pointer(&used[0]))%4 != 0 {
		return nil, fmt.Errorf("vhost-user: avail %#x or used %#x not 4-byte aligned", c.addr.avail, c.addr.used)
	}
	r := &vring{
		mem: mem, num: uint16(n), mask: uint16(n - 1),
		lazy:      c.lazy,
		desc:      desc,
		availFI:   (*uint32)(unsafe.Pointer(&avail[0])),
		availRing: avail[4:],
		usedFI:    (*uint32)(unsafe.Pointer(&used[0])),
		usedRing:  used[4:],
		callFd:    callFd,
		hdrLen:    10,
		mrg:       f&(1<<fMrgRxbuf) != 0,
		indirect:  f&(1<<fIndirectDesc) != 0,
		guestCsum: f&(1<<fGuestCsum) != 0,
		guestTSO:  f&(1<<fGuestTSO4) != 0 && f&(1<<fGuestTSO6) != 0,
		eventIdx:  tail != 0,
		inOrder:   f&(1<<fInOrder) != 0,
		mtuNeg:    f&(1<<fMTU) != 0,
		lastAvail: base,
		usedIdx:   base,
	}
	if r.mrg || f&(1<<fVersion1) != 0 {
		r.hdrLen = 12
	}
	r.usedGPA = c.addr.lg
	if c.addr.flags&vringFLog != 0 {
		r.usedLen = uint64(len(used))
	}
	if u := uint16(atomic.LoadUint32(r.usedFI) >> 16); u != base {
		r.lastAvail, r.usedIdx = u, u
	}
	r.signalled = r.usedIdx
	r.availSeen = r.lastAvail
	r.guess = r.lastAvail & r.mask
	if r.eventIdx {
		r.usedEvent = (*uint16)(unsafe.Pointer(&avail[4+2*int(n)]))
		r.availEvent = (*uint16)(unsafe.Pointer(&used[4+8*int(n)]))
	}
	if !isTx(int(c.addr.index)) {
		// The device never waits for receive buffers (it drops when the
		// guest has none), so kicks on the receive ring would only cost
		// the guest exits: suppress them for good, with the flag or with
		// an avail_event the guest passes only after 2^16 entries.
		r.usedFlags = usedFNoNotif
		if r.eventIdx {
			*r.availEvent = r.lastAvail - 1
		}
		r.storeUsed()
	} else if r.eventIdx {
		// The transmit ring starts wanting kicks: a stale avail_event
		// from an earlier session would make the guest stay silent.
		r.setNotify(true)
	}
	r.callBuf[0] = 1
	return r, nil
}

// needEvent is the virtio vring_need_event test: whether moving an index
// from old to newIdx crossed event, that is whether event is in
// [old, newIdx) modulo 2^16.
func needEvent(event, newIdx, old uint16) bool {
	return newIdx-event-1 < newIdx-old
}

// mtuLimit returns the largest untagged non-TSO frame the guest MTU
// allows (MTU plus the Ethernet header), or 0 for no limit. It is read
// once per batch.
func (r *vring) mtuLimit() int { return frameLimit(r.mtuNeg, r.mtu) }

// frameLimit is mtuLimit for a ring that negotiated VIRTIO_NET_F_MTU
// (neg) and reads the port's guest MTU from mtu.
func frameLimit(neg bool, mtu *atomic.Uint32) int {
	if !neg || mtu == nil {
		return 0
	}
	if m := int(mtu.Load()); m > 0 {
		return m + ethHdr
	}
	return 0
}

// overMTU reports whether frame f exceeds lim (from mtuLimit), allowing
// one 802.1Q tag more.
func overMTU(f []byte, lim int) bool {
	if lim == 0 || len(f) <= lim {
		return false
	}
	return len(f) > lim+vlanTag || f[12] != 0x81 || f[13] != 0x00
}

// pending returns the number of avail entries not yet consumed and the
// avail flags, or marks the ring broken if the guest claims more than num.
func (r *vring) pending() (int, uint16) {
	fi := atomic.LoadUint32(r.availFI)
	p := uint16(fi>>16) - r.lastAvail
	if p > r.num {
		r.broken = true
		return 0, 0
	}
	return int(p), uint16(fi)
}

// hasPending reports whether the guest made entries available that the
// ring has not consumed.
func (r *vring) hasPending() bool {
	p, _ := r.pending()
	return p > 0
}

// storeUsed writes used.flags and used.idx with one 32-bit store (the
// device owns used.flags); the index is the one of the last publish
// (signalled), so that a change of flags publishes no entry a lazy ring
// keeps for complete. On amd64 the store is an XCHG, a full barrier:
// loads of the driver's flags or used_event after it see what the driver
// wrote before it read our index.
func (r *vring) storeUsed() {
	flags := r.usedFlags
	if r.eventIdx {
		flags = 0
	}
	atomic.StoreUint32(r.usedFI, uint32(r.signalled)<<16|uint32(flags))
}

// publish makes the used entries added since the last publish visible
// and interrupts the guest at most once, if it asked: with EVENT_IDX when
// the new entries cross its used_event, otherwise when it did not set
// VRING_AVAIL_F_NO_INTERRUPT. Both are read after the index store, so a
// driver that re-enables interrupts and then checks the index cannot
// miss this batch.
func (r *vring) publish() {
	old := r.signalled
	r.signalled = r.usedIdx
	r.storeUsed()
	r.logUsed()
	if r.callFd < 0 {
		return
	}
	if r.eventIdx {
		if !needEvent(*r.usedEvent, r.usedIdx, old) {
			return
		}
	} else if uint16(atomic.LoadUint32(r.availFI))&availFNoIntr != 0 {
		return
	}
	unix.Write(r.callFd, r.callBuf[:])
}

// complete publishes the used entries dequeue left on a lazy ring.
func (r *vring) complete() {
	if r.unpublished {
		r.unpublished = false
		r.publish()
	}
}

// setNotify enables (or suppresses) guest kicks and, when enabling,
// reports whether entries arrived meanwhile. With EVENT_IDX, enabling
// sets avail_event to the next entry the device will read, so the guest
// kicks when it makes that entry available; suppressing writes nothing:
// avail_event stays behind the avail index, and a driver only kicks when
// its new entries cross it (once more every 2^16 entries at worst).
func (r *vring) setNotify(on bool) bool {
	if on {
		r.usedFlags = 0
	} else {
		r.usedFlags = usedFNoNotif
	}
	if r.eventIdx {
		if !on {
			return false
		}
		*r.availEvent = r.lastAvail
		r.armedAt = r.lastAvail
	}
	r.storeUsed() // also the barrier between avail_event and the avail load
	r.logUsed()
	if !on {
		return false
	}
	p, _ := r.pending()
	return p > 0
}

// logUsed marks the used ring's pages while dirty-page logging is on,
// after the store of the index. Entries, index, flags and avail_event
// all lie in those few pages (at most 3 for 1,024 entries), so the whole
// ring is marked once per write of the index.
func (r *vring) logUsed() {
	if r.dlog != nil && r.usedLen != 0 {
		r.dlog.mark(r.usedGPA, r.usedLen)
	}
}

// kicksArmed reports whether the guest's next entry will kick: kicks
// are enabled and, with EVENT_IDX, avail_event still names the next
// entry the device reads (entries consumed since, even dropped ones,
// leave it behind, and a guest only kicks when its index crosses it).
func (r *vring) kicksArmed() bool {
	return r.usedFlags == 0 && (!r.eventIdx || r.armedAt == r.lastAvail)
}

func (r *vring) head() uint16 {
	return binary.LittleEndian.Uint16(r.availRing[2*(r.lastAvail&r.mask):])
}

func (r *vring) addUsed(id uint16, n uint32) {
	// One store: each store into guest memory waits in the store queue
	// until the guest's core gives up the line.
	binary.LittleEndian.PutUint64(r.usedRing[8*(r.usedIdx&r.mask):], uint64(id)|uint64(n)<<32)
	r.usedIdx++
}

// chain iterates over a descriptor chain, following one level of
// indirection, with every index and the total length bounded.
type chain struct {
	r     *vring
	table []byte // the descriptor table being walked
	count uint32 // entries in table
	idx   uint32
	steps uint32
	done  bool
	addr  uint64 // guest physical address of the buffer next returned
}

// chainAt starts r's chain walker (r.walk) at head and returns it. The
// walker is set field by field in place: a chain built as a value and
// copied is read back with wide loads that cannot be forwarded from the
// narrow stores that built it, and such a load waits for every store
// before it, the previous frames' writes into guest memory included,
// to reach the cache (most of writeFrame's time in a profile of the
// vhost benchmark).
func (r *vring) chainAt(head uint16) *chain {
	c := &r.walk
	c.r, c.table, c.count, c.idx = r, r.desc, uint32(r.num), uint32(head)
	c.steps, c.done, c.addr = 0, false, 0
	return c
}

// next returns the next buffer of the chain and its flags. ok is false at
// the end; err is errBroken for any malformed descriptor.
func (c *chain) next() (buf []byte, flags uint16, ok bool, err error) {
	for !c.done {
		if c.idx >= c.count || c.steps >= c.count {
			return nil, 0, false, errBroken
		}
		c.steps++
		d := c.table[c.idx*descSize : c.idx*descSize+descSize]
		addr := binary.LittleEndian.Uint64(d)
		n := binary.LittleEndian.Uint32(d[8:])
		flags = binary.LittleEndian.Uint16(d[12:])
		next := binary.LittleEndian.Uint16(d[14:])
		if flags&descFIndir != 0 {
			// One level only, and only at the top table.
			if !c.r.indirect || &c.table[0] != &c.r.desc[0] || flags&descFNext != 0 ||
				n == 0 || n%descSize != 0 || n/descSize > maxQueueSize {
				return nil, 0, false, errBroken
			}
			t := c.r.mem.guest(addr, n)
			if t == nil {
				return nil, 0, false, errBroken
			}
			c.table, c.count, c.idx, c.steps = t, n/descSize, 0, 0
			continue
		}
		buf = c.r.mem.guest(addr, n)
		if buf == nil && n != 0 {
			return nil, 0, false, errBroken
		}
		if flags&descFNext != 0 {
			c.idx = uint32(next)
		} else {
			c.done = true
		}
		c.addr = addr
		return buf, flags, true, nil
	}
	return nil, 0, false, nil
}

// dequeue moves up to len(bufs) frames the guest transmitted into bufs and
// returns how many it filled, and how many it dropped: malformed frames
// and non-TSO frames longer than the guest MTU are returned to the guest
// unread.
func (r *vring) dequeue(bufs []*packet.Buf) (n, dropped int, bytes uint64) {
	r.complete()
	r.prefetchNext()
	p, _ := r.pending()
	if p > len(bufs) {
		p = len(bufs)
	}
	if p == 0 {
		return 0, 0, 0
	}
	r.resolve(p, false, nil)
	var malformed, tooBig uint64
	lim := r.mtuLimit()
	// With IN_ORDER, one used entry returns the whole batch: the head of
	// its last chain, the index moved past them all.
	var last uint16
	consumed := 0
	for i := 0; i < p; i++ {
		var head uint16
		var ok bool
		var err error
		b := bufs[n]
		if a := r.resolved(); a == nil {
			head = r.head()
			r.lastAvail++
			ok, err = r.readChain(head, b)
		} else {
			head = a.head
			r.lastAvail++
			if a.buf != nil && a.flags&descFWrite == 0 && len(a.buf) >= r.hdrLen {
				ok = readOne(a.buf, r.hdrLen, b)
			} else {
				ok, err = r.readChain(head, b)
			}
		}
		if err != nil {
			r.broken = true
			r.lastAvail--
			break
		}
		if r.inOrder {
			last = head
			consumed++
			r.guess = (head + 1) & r.mask
		} else {
			r.addUsed(head, 0)
		}
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
	if consumed > 0 {
		r.usedIdx += uint16(consumed - 1)
		r.addUsed(last, 0)
	}
	dropped = int(malformed + tooBig)
	if n+dropped > 0 {
		if r.lazy {
			r.unpublished = true
		} else {
			r.publish()
		}
	}
	if dropped > 0 && r.drops != nil {
		r.drops.inMalformed.Add(malformed)
		r.drops.inTooBig.Add(tooBig)
	}
	return n, dropped, bytes
}

// prefetchNext has the CPU fetch the lines the read of the next frame
// misses on after the avail index, so that they come in parallel with
// it instead of one after the other: the avail entry at lastAvail and,
// on an in-order ring (whose driver takes descriptors in turn), the
// descriptor that entry most likely names. The guest's core writes them
// just before the index; a wrong guess costs one useless fetch.
func (r *vring) prefetchNext() {
	r.next[0] = uintptr(unsafe.Pointer(&r.availRing[2*int(r.lastAvail&r.mask)]))
	n := 1
	if r.inOrder {
		r.next[1] = uintptr(unsafe.Pointer(&r.desc[int(r.guess&r.mask)*descSize]))
		n = 2
	}
	prefetch(r.next[:n], false)
}

// maxAhead bounds the avail entries resolve reads ahead in one batch.
const maxAhead = 64

// aheadEntry is an avail entry as resolve found it: the head of its
// chain and, when that chain is one descriptor (no NEXT, no INDIRECT)
// whose buffer lies in guest memory, the buffer, its guest address and
// flags. Any other chain has buf nil and is walked descriptor by
// descriptor, with every check of the walk. A packed ring's resolve keeps
// only chains of one descriptor, with their buffer id in head.
type aheadEntry struct {
	buf   []byte
	addr  uint64
	head  uint16
	flags uint16
}

// resolve reads the next k avail entries (at most maxAhead) and their
// head descriptors before any frame is copied, and has the CPU fetch the
// lines of guest memory the copies will touch: the guest's core wrote
// them last, so each is a cache miss, and asked for together the misses
// of the batch overlap instead of adding up frame after frame. A first
// pass reads the avail entries and prefetches their head descriptors; a
// second reads the descriptors and prefetches the first warmLines lines
// of each buffer, for writing (with ownership) on the receive ring (write
// set), up to the header and frame i of bufs will take. Every index and
// address is checked as in the walk; nothing is consumed and nothing is
// written. The copies then take each entry's head and one-descriptor
// buffer from r.ahead without reading the ring again.
func (r *vring) resolve(k int, write bool, bufs []*packet.Buf) {
	k = min(k, maxAhead)
	r.aheadAt, r.aheadN = r.lastAvail, uint16(k)
	lines := r.lines[:0]
	for i := range r.ahead[:k] {
		a := &r.ahead[i]
		head := binary.LittleEndian.Uint16(r.availRing[2*((r.lastAvail+uint16(i))&r.mask):])
		a.head, a.buf = head, nil
		if head < r.num {
			lines = append(lines, uintptr(unsafe.Pointer(&r.desc[int(head)*descSize])))
		}
	}
	prefetch(lines, false)
	lines = lines[:0]
	for i := range r.ahead[:k] {
		a := &r.ahead[i]
		head := a.head
		if head >= r.num {
			continue // the walk breaks the ring on it
		}
		d := r.desc[int(head)*descSize : int(head)*descSize+descSize]
		addr := binary.LittleEndian.Uint64(d)
		n := binary.LittleEndian.Uint32(d[8:])
		flags := binary.LittleEndian.Uint16(d[12:])
		if flags&descFIndir != 0 || n == 0 {
			continue
		}
		buf := r.mem.guest(addr, n)
		if buf == nil {
			continue
		}
		if flags&descFNext == 0 {
			a.buf, a.addr, a.flags = buf, addr, flags
		}
		lines = bufLines(lines, buf, addr, write, r.hdrLen, bufs, i)
	}
	prefetch(lines, write)
}

// bufLines appends to lines the cache lines of buf (at guest address
// addr, not empty) that a copy will touch first: its first byte, then
// each line start after it within warmLines*64 bytes, and for a receive
// buffer (write) within the header and frame i of bufs. The guest's
// regions are page-aligned, so guest and host addresses share their
// offset within a line; a transmitted header often ends a line and its
// frame starts the next.
func bufLines(lines []uintptr, buf []byte, addr uint64, write bool, hdrLen int, bufs []*packet.Buf, i int) []uintptr {
	m := min(uint32(len(buf)), warmLines*64)
	if write && i < len(bufs) {
		m = min(m, uint32(hdrLen+bufs[i].Len()))
	}
	p := uintptr(unsafe.Pointer(&buf[0]))
	lines = append(lines, p)
	for off := 64 - uint32(addr&63); off < m; off += 64 {
		lines = append(lines, p+uintptr(off))
	}
	return lines
}

// resolved returns the avail entry at r.lastAvail as resolve found it,
// or nil when resolve did not reach it in this batch.
func (r *vring) resolved() *aheadEntry {
	i := r.lastAvail - r.aheadAt
	if i >= r.aheadN || int(i) >= len(r.ahead) {
		return nil
	}
	return &r.ahead[i]
}

// warmLines bounds the cache lines of one buffer resolve prefetches.
const warmLines = 3

// readOne copies into b the frame of a chain of one descriptor whose
// buffer buf (at least hdrLen long) holds the virtio header and the
// frame: readChain's work without the walk, for both ring layouts. ok is
// false for a frame that is empty or larger than b.
func readOne(buf []byte, hdrLen int, b *packet.Buf) (ok bool) {
	frame := buf[hdrLen:]
	space := b.Space()
	if len(frame) == 0 || len(frame) > len(space) {
		return false
	}
	b.SetLen(copy(space, frame))
	b.VNet.Decode(buf[:hdrLen])
	return true
}

// writeOne writes b's frame and its virtio header (hdrLen bytes; a
// 12-byte one says num_buffers 1) into the receive buffer buf,
// which must hold both, and returns the bytes written: writeFrame's work
// for a frame that one descriptor takes, for both ring layouts.
func writeOne(buf []byte, hdrLen int, b *packet.Buf) int {
	b.VNet.Encode(buf)
	if hdrLen == 12 {
		binary.LittleEndian.PutUint16(buf[10:], 1)
	}
	return hdrLen + copy(buf[hdrLen:], b.Bytes())
}

// readChain copies one guest frame into b. ok is false for a frame that
// is too short or too long (dropped); err breaks the ring. The virtio
// header is decoded where it lies when one descriptor holds all of it
// (the usual case), and gathered into a local copy otherwise.
func (r *vring) readChain(head uint16, b *packet.Buf) (ok bool, err error) {
	var gather [12]byte
	var hdr []byte
	got, total, tooBig := 0, 0, false
	space := b.Space()
	c := r.chainAt(head)
	for {
		buf, flags, more, err := c.next()
		if err != nil {
			return false, err
		}
		if !more {
			break
		}
		if flags&descFWrite != 0 {
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
		if total+len(buf) > len(space) {
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

// enqueue copies frames into the guest's receive buffers and returns how
// many it took and how many of those it dropped: TSO frames for a guest
// without GUEST_TSO, partial checksums it cannot complete, non-TSO frames
// longer than the guest MTU, and frames larger than one receive chain
// without MRG_RXBUF. It stops at the first frame that finds no room (the
// rest are not taken). On return bufs[0:n-dropped] are the frames
// delivered and bufs[n-dropped:n] the dropped ones (port.MoveSent);
// bytes are those of the delivered frames.
func (r *vring) enqueue(bufs []*packet.Buf) (n, dropped int, bytes uint64) {
	// The avail index, which the guest's core writes at each refill, is
	// read again only when the entries seen available at the last read
	// are fewer than the frames: one cache miss less per batch.
	p := int(r.availSeen - r.lastAvail)
	read := p < len(bufs)
	if read {
		p, _ = r.pending()
		r.availSeen = r.lastAvail + uint16(p)
	}
	if r.broken {
		return 0, 0, 0
	}
	end := r.lastAvail + uint16(p)
	startUsed := r.usedIdx
	r.resolve(min(p, len(bufs)), true, bufs)
	var offload, tooBig uint64
	lim := r.mtuLimit()
	sent := 0
	for sent+dropped < len(bufs) {
		b := bufs[sent+dropped]
		if b.VNet.GSOType != packet.GSONone {
			if !r.guestTSO {
				offload++ // the engine segments before sending to such a guest
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
		res := r.writeFrame(b, end)
		if res == writeBroken {
			r.broken = true
			break
		}
		if res == writeNoRoom {
			// A frame over several buffers (MRG_RXBUF) may need more
			// than were seen: read the index once before giving up.
			if !read {
				read = true
				if q, _ := r.pending(); !r.broken && r.lastAvail+uint16(q) != end {
					end = r.lastAvail + uint16(q)
					r.availSeen = end
					continue
				}
			}
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
	if r.usedIdx != startUsed {
		r.publish()
	}
	if dropped > 0 && r.drops != nil {
		r.drops.outOffload.Add(offload)
		r.drops.outTooBig.Add(tooBig)
	}
	return sent + dropped, dropped, bytes
}

const (
	writeOK = iota
	writeDropped
	writeNoRoom
	writeBroken
)

// writeFrame writes one frame with its header into as many receive chains
// as it needs (one without MRG_RXBUF), rolling back if it does not fit.
func (r *vring) writeFrame(b *packet.Buf, end uint16) int {
	frame := b.Bytes()
	if a := r.resolved(); a != nil && a.buf != nil && a.flags&descFWrite != 0 &&
		r.lastAvail != end && len(frame) <= len(a.buf)-r.hdrLen && len(a.buf) >= r.hdrLen {
		// One descriptor takes the header and the whole frame.
		k := writeOne(a.buf, r.hdrLen, b)
		if r.dlog != nil {
			r.dlog.mark(a.addr, uint64(k))
		}
		r.lastAvail++
		r.addUsed(a.head, uint32(k))
		return writeOK
	}
	startAvail, startUsed := r.lastAvail, r.usedIdx
	var hdrDst []byte
	// The header's buffer is marked dirty after the header is written,
	// last; the other buffers as soon as the frame's bytes are in.
	var hdrGPA, hdrSpan uint64
	nbufs := uint16(0)
	for hdrDst == nil || len(frame) > 0 {
		if r.lastAvail == end || (!r.mrg && nbufs == 1) {
			noRoom := r.lastAvail == end
			r.lastAvail, r.usedIdx = startAvail, startUsed
			if noRoom {
				return writeNoRoom
			}
			return writeDropped
		}
		head := r.head()
		r.lastAvail++
		c := r.chainAt(head)
		written := uint32(0)
		for {
			buf, flags, more, err := c.next()
			if err != nil {
				r.lastAvail, r.usedIdx = startAvail, startUsed
				return writeBroken
			}
			if !more {
				break
			}
			if flags&descFWrite == 0 {
				r.lastAvail, r.usedIdx = startAvail, startUsed
				return writeBroken
			}
			h := 0
			if hdrDst == nil {
				if len(buf) < r.hdrLen {
					// The spec requires every receive buffer to hold
					// at least the header.
					r.lastAvail, r.usedIdx = startAvail, startUsed
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
			} else if r.dlog != nil {
				r.dlog.mark(c.addr, uint64(k))
			}
			if len(frame) == 0 {
				break
			}
		}
		if hdrDst == nil {
			r.lastAvail, r.usedIdx = startAvail, startUsed
			return writeBroken // an empty receive chain
		}
		r.addUsed(head, written)
		nbufs++
	}
	// The header goes straight into the guest's first buffer.
	b.VNet.Encode(hdrDst)
	if r.hdrLen == 12 {
		binary.LittleEndian.PutUint16(hdrDst[10:], nbufs)
	}
	if r.dlog != nil {
		r.dlog.mark(hdrGPA, hdrSpan)
	}
	return writeOK
}
