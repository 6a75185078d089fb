package dataplane

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port"
)

// underSlot stands for the underlay in fdSlot.
const underSlot = -1

// worker is one packet-processing goroutine with its own buffer pool,
// transmit queues and epoll instance.
type worker struct {
	e    *Engine
	id   int
	cpu  int
	pool *packet.Pool

	// rx holds the buffers handed to ReadBatch; rxn of them are set.
	rx  []*packet.Buf
	rxn int
	// txq holds, per port slot, the frames to write; dirty lists the
	// slots with frames.
	txq   [][]*packet.Buf
	dirty []int
	// utx are the transmit queues of the underlay sockets.
	utx  [][]*packet.Buf
	segs []*packet.Buf
	// Counts accumulated per batch (see flushCounts).
	encapPkts, encapBytes uint64
	swRun                 *vniLong
	swRunN                uint64
	fwRun                 *element // the firewall element of filterToVM's run
	fwRunN                uint64
	// groHeads is scratch for coalesce.
	groHeads []groHead
	// fl is scratch for the ports a frame is flooded to.
	fl []uint32
	// share batches the frames other workers read from queues of a
	// vNIC of shareFrom, whose home this worker is (see shareIn).
	share     []*packet.Buf
	shareFrom *nicPort
	// srcOK is the last VXLAN source found in the sources of the
	// snapshot of generation srcGen: datagrams come in runs from one
	// peer, so most skip the map lookup.
	srcOK  netip.AddrPort
	srcGen uint64

	// fc is the worker's flow cache (nil: Config.NoFlowCache).
	fc *flowCache

	snap *snapshot
	// ack is the generation of snap, stored once the worker uses it.
	ack atomic.Uint64
	// ctReq is the control plane's pending request on a connection
	// tracking table this worker owns (see Engine.onOwner).
	ctReq atomic.Pointer[ctRequest]
	// sleeping is set while the worker waits in epoll, with its queues
	// flushed: it holds no configuration then (see pastGen). Producers of
	// handoffs wake it. pushed has bit i set when this worker
	// handed frames to worker i during the current iteration.
	sleeping atomic.Bool
	pushed   uint64
	// sleeps counts the epoll sleeps (for tests and tuning).
	sleeps atomic.Uint64
	// poolEmpty counts the reads of a port skipped because the pool had
	// no buffer: the port's frames wait in it for the next poll.
	poolEmpty atomic.Uint64
	// exited is set when run returns; tid is the OS thread of run.
	exited atomic.Bool
	tid    atomic.Int64

	epfd, evfd int
	// fdSlot maps the descriptors in the epoll set to their port slot
	// (underSlot for the underlay) and the port they were registered for.
	fdSlot map[int]fdReg
	// active lists the slots polled each iteration: ports that were
	// readable recently (inActive marks them; last is their last
	// traffic). nofd lists ports without a descriptor, always polled.
	active      []int
	inActive    []bool
	last        []int64
	nofd        []int
	underActive bool
	underLast   int64
	// failed marks ports whose reads fail (a TAP deleted behind our
	// back): they are no longer polled until the next configuration;
	// failedList lists them.
	failed     []bool
	failedList []int
	// ports is the port of each slot this worker owns, as registered,
	// and portFd its descriptor then (-1: none).
	ports  []port.Port
	portFd []int
	// deltas are the control plane's changes of this worker's ports not
	// applied yet (see syncPorts), guarded by deltaMu: taken only when
	// the worker's ports change, never per packet.
	deltaMu     sync.Mutex
	deltas      []portDelta
	underFailed bool
	lastRx      int64
	checkedAt   int64 // w.mono at the last readiness check (sleep(0))
	checkEvery  int64 // least time to the next one (see run)
	events      []unix.EpollEvent
	sleepMs     int
	now         int64 // wall clock, for traces (see tick)
	mono        int64 // monotonic, for MAC ageing and conntrack
	// wallOff is the wall clock minus mono, read at mono wallAt.
	wallOff, wallAt int64
	fwChecked       int64 // mono of the last checkFirewalls
	scratch         []byte
	ipID            uint16
}

// pastGen reports whether the worker can no longer use a snapshot older
// than gen: it uses gen or a later one, it sleeps in epoll (it loads the
// newest snapshot before it touches a port again), or it has exited.
func (w *worker) pastGen(gen uint64) bool {
	return w.ack.Load() >= gen || w.sleeping.Load() || w.exited.Load()
}

func newWorker(e *Engine, id, cpu int) (*worker, error) {
	w := &worker{
		e:          e,
		id:         id,
		cpu:        cpu,
		pool:       packet.NewPool(e.cfg.PoolSize),
		rx:         make([]*packet.Buf, batchSize),
		segs:       make([]*packet.Buf, 0, 64),
		fl:         make([]uint32, 0, 1024),
		share:      make([]*packet.Buf, 0, batchSize),
		groHeads:   make([]groHead, 0, groMaxFlows),
		fdSlot:     map[int]fdReg{},
		events:     make([]unix.EpollEvent, 16),
		scratch:    make([]byte, packet.BufSize+64),
		epfd:       -1,
		evfd:       -1,
		checkEvery: epollCheckMin,
	}
	if !e.cfg.NoFlowCache {
		w.fc = &flowCache{}
	}
	var err error
	w.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("dataplane: worker %d: epoll_create: %w", id, err)
	}
	w.evfd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(w.epfd)
		return nil, fmt.Errorf("dataplane: worker %d: eventfd: %w", id, err)
	}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, w.evfd,
		&unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(w.evfd)}); err != nil {
		w.close()
		return nil, fmt.Errorf("dataplane: worker %d: epoll_ctl: %w", id, err)
	}
	return w, nil
}

func (w *worker) close() {
	if w.epfd >= 0 {
		unix.Close(w.epfd)
		w.epfd = -1
	}
	if w.evfd >= 0 {
		unix.Close(w.evfd)
		w.evfd = -1
	}
}

// wake interrupts the worker's epoll sleep.
func (w *worker) wake() {
	if w.evfd < 0 {
		return
	}
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(w.evfd, one[:])
}

// run is the worker's loop: it busy-polls while there is traffic and
// sleeps in epoll after an idle spell.
func (w *worker) run() {
	defer w.e.wg.Done()
	defer w.exited.Store(true)
	runtime.LockOSThread()
	if w.cpu < 0 {
		defer runtime.UnlockOSThread()
	}
	// A pinned thread is never unlocked: it ends with the worker instead
	// of going back to the Go scheduler with its one-CPU affinity (which
	// other goroutines, and processes they fork, would inherit).
	if w.cpu >= 0 {
		var set unix.CPUSet
		set.Set(w.cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			w.e.log.Warn("pinning worker", "worker", w.id, "cpu", w.cpu, "err", err)
		}
	}
	w.tid.Store(int64(unix.Gettid()))
	for i := uint64(0); !w.e.stop.Load(); i++ {
		n := w.iterate()
		switch {
		case w.idleNow():
			w.sleep(w.sleepMs)
		case (n == 0 || i%16 == 0) && w.mono-w.checkedAt >= w.checkEvery:
			// Pick up ports that became readable meanwhile: after an
			// empty iteration or every 16, at most every checkEvery.
			// A system call per empty iteration was most of the
			// worker's time with one frame in flight, and each one
			// delays the frames of the ports it polls (a system call
			// takes 1 to 1.4 µs on the benchmark machine). Checks that
			// find no news space out the next ones, up to
			// epollCheckMax; one that finds a port brings them back
			// to epollCheckMin.
			w.checkedAt = w.mono
			if w.sleep(0) {
				w.checkEvery = epollCheckMin
			} else {
				w.checkEvery = min(2*w.checkEvery, epollCheckMax)
			}
		}
	}
	w.drop()
}

// epollCheckMin and epollCheckMax bound the time between two readiness
// checks of a polling worker, in nanoseconds: a port outside the active
// set is seen readable at most epollCheckMax late, and at most
// epollCheckMin late while ports keep turning up.
const (
	epollCheckMin = int64(20 * time.Microsecond)
	epollCheckMax = int64(160 * time.Microsecond)
)

// sleepPreparer is a port whose wake-ups stay off while it is polled
// (vhost-user: guest kicks): the worker turns them on with PrepareSleep
// when the port leaves the active set, from then on watched through its
// Fd; PrepareSleep reports whether frames are waiting already.
type sleepPreparer interface{ PrepareSleep() bool }

// stillBusy readies the port this worker polls for slot, idle for the
// idle spell, to be watched through its Fd, and reports whether it must
// stay in the active set instead: frames arrived meanwhile.
func (w *worker) stillBusy(slot int) bool {
	if w.failed[slot] {
		return false
	}
	sp, ok := w.ports[slot].(sleepPreparer)
	if !ok || !sp.PrepareSleep() {
		return false
	}
	w.last[slot] = w.mono
	return true
}

// idleNow reports whether every port has been idle for the idle spell:
// no port with a descriptor left in the active set and nothing received
// recently on the others.
func (w *worker) idleNow() bool {
	return len(w.active) == 0 && !w.underActive && w.mono-w.lastRx >= int64(w.e.cfg.PollIdle)
}

// sleep waits in epoll (at most timeoutMs; 0 only checks) until a port is
// readable or the control plane wakes the worker, puts the readable
// ports in the active set, and reports whether it found any news: a
// port (or the underlay) readable that was not in the active set, or a
// wake-up.
func (w *worker) sleep(timeoutMs int) bool {
	if timeoutMs != 0 {
		// Nothing may stay queued for a port: the control plane may
		// close it while the worker sleeps.
		w.flushAll()
		w.sleeping.Store(true)
		defer w.sleeping.Store(false)
		if w.e.fwd != nil {
			for u := range w.e.workers {
				if !w.e.fwd[u][w.id].empty() {
					return true
				}
			}
		}
		w.sleeps.Add(1)
	}
	n, err := unix.EpollWait(w.epfd, w.events, timeoutMs)
	if err != nil && err != unix.EINTR {
		w.e.log.Error("epoll_wait", "worker", w.id, "err", err)
		time.Sleep(time.Millisecond)
		return false
	}
	news := false
	for i := 0; i < n; i++ {
		fd := int(w.events[i].Fd)
		reg, ok := w.fdSlot[fd]
		switch slot := reg.slot; {
		case fd == w.evfd:
			var b [8]byte
			unix.Read(w.evfd, b[:])
			news = true
		case !ok:
		case slot == underSlot:
			news = news || !w.underActive
			w.underActive = true
			w.underLast = w.mono
		case !w.inActive[slot]:
			w.inActive[slot] = true
			w.last[slot] = w.mono
			w.active = append(w.active, slot)
			news = true
		}
	}
	return news
}

// iterate moves to the newest configuration if needed, polls the ports
// of the active set (and those without a descriptor) once, and returns
// the number of frames it received or took over from other workers.
func (w *worker) iterate() int {
	if s := w.e.snap.Load(); s != w.snap {
		w.apply(s)
	}
	s := w.snap
	w.tick()
	idle := int64(w.e.cfg.PollIdle)
	total := 0
	if w.e.fwd != nil {
		total += w.drainRings(s)
	}
	j := 0
	for _, slot := range w.active {
		n := w.rxNIC(s, s.nics.at(slot))
		total += n
		if n > 0 {
			w.last[slot] = w.mono
		}
		if w.mono-w.last[slot] < idle && !w.failed[slot] || w.stillBusy(slot) {
			w.active[j] = slot
			j++
		} else {
			w.inActive[slot] = false
		}
	}
	w.active = w.active[:j]
	for _, slot := range w.nofd {
		if !w.failed[slot] {
			total += w.rxNIC(s, s.nics.at(slot))
		}
	}
	if w.id == 0 && s.under != nil && !w.underFailed && (w.underActive || s.underFd < 0) {
		n := w.rxUnderlay(s)
		total += n
		if n > 0 {
			w.underLast = w.mono
		}
		w.underActive = s.underFd >= 0 && w.mono-w.underLast < idle && !w.underFailed
	}
	if total > 0 {
		w.lastRx = w.mono
	}
	w.checkFirewalls(s)
	if w.pushed != 0 {
		for i, o := range w.e.workers {
			if w.pushed&(1<<i) != 0 && o.sleeping.Load() {
				o.wake()
			}
		}
		w.pushed = 0
	}
	return total
}

// tick reads the worker's clock: mono, and now derived from it. The
// wall clock is read only once a second (wallEvery), to follow its
// steps: every iteration reads the clock, and a wall clock read costs as
// much as a monotonic one.
func (w *worker) tick() {
	w.mono = w.e.hooks.since(w.e.start)
	if w.wallAt == 0 || w.mono-w.wallAt >= wallEvery {
		t := w.e.hooks.now()
		w.wallAt = int64(t.Sub(w.e.start))
		w.wallOff = t.UnixNano() - w.wallAt
	}
	w.now = w.wallOff + w.mono
}

// wallEvery is how often, in monotonic nanoseconds, a worker reads the
// wall clock for the times of its traces and drop records.
const wallEvery = int64(time.Second)

// portFailed stops polling a port whose reads fail, so that a broken
// descriptor (always readable, always failing) cannot make the worker
// spin. The next configuration change tries it again.
func (w *worker) portFailed(slot, fd int, name string, err error) {
	if fd >= 0 {
		if _, ok := w.fdSlot[fd]; ok {
			unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, fd, nil)
			delete(w.fdSlot, fd)
		}
	}
	if slot == underSlot {
		w.underFailed = true
		w.underActive = false
	} else if !w.failed[slot] {
		w.failed[slot] = true
		w.failedList = append(w.failedList, slot)
	}
	w.e.log.Warn("port read failed; not polled until the next configuration change", "port", name, "worker", w.id, "err", err)
}

// handoff passes a frame to the worker that owns its output port.
func (w *worker) handoff(to int, h handoff) {
	if !w.e.fwd[w.id][to].push(h) {
		if h.to != nil {
			h.to.tx.drop(w.id, dropTxFull)
		} else {
			w.e.utx.drop(w.id, dropTxFull)
		}
		w.put(h.b)
		return
	}
	w.pushed |= 1 << to
}

// drainRings takes back this worker's buffers from the others and queues
// the frames they handed over for its ports.
func (w *worker) drainRings(s *snapshot) int {
	n := 0
	for u := range w.e.workers {
		if u == w.id {
			continue
		}
		ret := w.e.ret[u][w.id]
		for {
			h, ok := ret.pop()
			if !ok {
				break
			}
			w.pool.Put(h.b)
		}
		in := w.e.fwd[u][w.id]
		for {
			h, ok := in.pop()
			if !ok {
				break
			}
			n++
			switch {
			case h.fromVM:
				w.shareIn(s, h)
			case h.to == nil:
				if s.under == nil {
					w.put(h.b)
					continue
				}
				w.queueUnderlay(s, h.b)
			case s.nics.of(h.to) != nil:
				w.enqueue(s, h.to.slot, h.b)
			default: // the port left meanwhile
				h.to.tx.drop(w.id, dropNoRoute)
				w.put(h.b)
			}
		}
		w.shareFlush(s)
	}
	if n > 0 {
		w.flushAll()
	}
	return n
}

// put releases a buffer: to this worker's pool, or back to the worker
// whose pool it came from.
func (w *worker) put(b *packet.Buf) {
	if w.e.ret != nil && b.Owner != w.id {
		w.e.ret[w.id][b.Owner].push(handoff{b: b})
		return
	}
	w.pool.Put(b)
}

// drop releases the worker's references before it exits.
func (w *worker) drop() {
	w.flushAll()
	for fd := range w.fdSlot {
		unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, fd, nil)
		delete(w.fdSlot, fd)
	}
	w.snap = nil
}

// refillRx fills rx with buffers from the pool.
func (w *worker) refillRx() {
	for w.rxn < len(w.rx) {
		b := w.get()
		if b == nil {
			return
		}
		w.rx[w.rxn] = b
		w.rxn++
	}
}

// get takes a buffer from the pool; when it is empty it first flushes the
// queues, which returns their buffers.
func (w *worker) get() *packet.Buf {
	if b := w.pool.Get(); b != nil {
		return b
	}
	w.flushAll()
	return w.pool.Get()
}

// take removes the first n received buffers from rx, keeping the rest
// for the next read, and refills it.
func (w *worker) take(n int) {
	copy(w.rx, w.rx[n:w.rxn])
	for i := w.rxn - n; i < w.rxn; i++ {
		w.rx[i] = nil
	}
	w.rxn -= n
	w.refillRx()
}
