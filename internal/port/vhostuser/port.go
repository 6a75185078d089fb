// Package vhostuser is an in-house vhost-user back end for virtio-net
// (QEMU docs/interop/vhost-user.rst): a port.Port whose frames live in a
// VM's virtqueues in shared memory, split or, when the front end
// negotiates VIRTIO_F_RING_PACKED, packed.
//
// Listen creates the unix socket (server mode) and serves one front end
// at a time in its own goroutine. Dial (client mode) connects to a socket
// that the front end listens on (QEMU's "-chardev socket,server=on", DPDK
// virtio_user "server=1") and, whenever the connection ends or cannot be
// made, dials again with a bounded backoff (100 ms doubling to 1 s) until
// Close: a front end that restarts, or a back end restarted with the same
// path, resumes where it stopped without the other side doing anything.
//
// The data path (ReadBatch reads the guest's transmit rings, WriteBatch
// fills its receive rings) never locks: it loads each ring through an
// atomic pointer that the control goroutine swaps, and the control
// goroutine waits for a batch in flight to finish before it unmaps or
// reuses anything that batch could touch. ReadBatch and WriteBatch use
// separate rings and may run on different goroutines; each of them must
// have one caller at a time. ReadBatch leaves the guest's used entries
// for the frames it took to CompleteReads, which the caller makes once
// it has forwarded them (or to the next ReadBatch or PrepareSleep).
//
// Multiqueue (VIRTIO_NET_F_MQ, protocol feature MQ): the port serves up
// to MaxQueuePairs queue pairs, ring 2q being pair q's receive queue and
// ring 2q+1 its transmit queue; a ring is used only while the front end
// has it enabled (SET_VRING_ENABLE; QEMU turns the guest's
// VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET into these). ReadBatch takes frames
// from every enabled transmit ring, WriteBatch spreads frames over the
// enabled receive rings by flow hash, and QueueStats counts the frames
// of each pair.
//
// Control sockets (the listening socket, the connection to the front
// end) are on the Go runtime's poller, so a port waiting for a front
// end, for a redial or for the next message holds no OS thread: the
// number of threads does not grow with the number of ports. An idle port
// holds three descriptors in server mode (socket, epoll, eventfd) and two
// in client mode, plus an epoll descriptor per reader beyond the first
// (Options.Readers).
//
// A packed ring keeps no index in guest memory, so its position lives
// only in the back end and in QEMU's last GET_VRING_BASE: when the
// connection ends without one (the daemon killed, the vNIC deleted),
// QEMU reconnects with a stale ring state and the guest's NIC stays
// silent until its driver resets the device (a split ring resumes from
// the used index in guest memory). QEMU has no in-flight tracking for
// virtio-net that would close the gap.
//
// Fd returns an epoll descriptor that stays the same for the port's life:
// it becomes readable when the guest kicks its transmit ring or when a
// ring starts or stops. By default an empty ReadBatch enables guest kicks
// and rearms Fd (one epoll_wait with a zero timeout, on the first empty
// call in a row and every 8th after that): a worker may sleep on Fd after
// any empty ReadBatch, and wakes at most 8 times for nothing. With
// Options.ArmOnSleep kicks stay off while the port is polled, and the
// worker asks for them with PrepareSleep before it sleeps.
package vhostuser

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port"
	"github.com/butterfly-go/butterfly/internal/spinwait"
	"golang.org/x/sys/unix"
)

const (
	rxRing = 0 // guest receive queue of pair 0: WriteBatch
	txRing = 1 // guest transmit queue of pair 0: ReadBatch
	// MaxQueuePairs is the most queue pairs a port serves (what
	// GET_QUEUE_NUM reports): ring 2q is pair q's receive queue, ring
	// 2q+1 its transmit queue.
	MaxQueuePairs = 8
	numRings      = 2 * MaxQueuePairs
)

// isTx reports whether ring i is a transmit queue of the guest (odd).
func isTx(i int) bool { return i&1 == 1 }

// Options configures a port.
type Options struct {
	// Logger receives control-plane events (connections, protocol
	// errors); nil means slog.Default().
	Logger *slog.Logger
	// NoOffloads withholds CSUM, GUEST_CSUM and the TSO features, so the
	// guest sends complete, unsegmented frames.
	NoOffloads bool
	// Readers splits the reading of the guest's transmit rings between
	// this many callers (1 to MaxQueuePairs; 0 means 1), so that the
	// queue pairs of one port can be read on several threads: pair q is
	// read by reader q%Readers, reader 0 being the port's own ReadBatch
	// and Fd, the others Reader(k).
	Readers int
	// ArmOnSleep leaves kicks off in ReadBatch: the reader asks for them
	// with PrepareSleep before it sleeps on Fd.
	// A busy-polling reader then never has the guest kick, nor rearms
	// Fd, while it polls.
	ArmOnSleep bool
}

// Stats are a port's counters, from the switch's point of view: In is
// what the guest transmitted, Out what was delivered to it.
type Stats struct {
	InFrames, InBytes, InDropped    uint64
	OutFrames, OutBytes, OutDropped uint64
	// Broken counts rings stopped because the guest corrupted them.
	Broken uint64
	// Connections counts front ends accepted (server mode) or
	// connected to (client mode).
	Connections uint64
}

// Port is a vhost-user virtio-net port, in server mode (Listen) or
// client mode (Dial).
type Port struct {
	path   string
	log    *slog.Logger
	ln     *net.UnixListener // server mode; nil in client mode
	sockID fileID            // the socket file ln is bound to
	client bool              // client mode: dial path, never create or remove it
	stop   chan struct{}
	epfd   int // reader 0's epoll descriptor (Fd)
	wake   int // eventfd in every reader's epoll, written on ring start and stop

	rings [numRings]atomic.Pointer[queue]
	// seq is odd while a batch uses the ring: the data path adds one
	// before and after (bump), quiesce reads it atomically.
	seq [numRings]uint64
	// fenced: the data path marks seq with plain stores and quiesce
	// fences first (see canFence).
	fenced bool
	// pairs is one more than the highest queue pair a ring of which ever
	// started (1 at least): the data path looks at no ring beyond.
	pairs atomic.Uint32
	// armOnSleep is Options.ArmOnSleep.
	armOnSleep bool
	// r0 is the port's own reader (ReadBatch, Fd); rd are all the
	// readers, r0 first (Options.Readers).
	r0 Reader
	rd []*Reader
	// wq is WriteBatch's scratch: the frames for each receive ring.
	wq [MaxQueuePairs][]*packet.Buf
	// qin and qout count the frames of each queue pair (QueueStats);
	// their sums are Stats' InFrames and OutFrames. A batch adds to a
	// counter only what it changes: each add is a locked instruction,
	// which waits for the batch's stores into guest memory.
	qin, qout [MaxQueuePairs]atomic.Uint64

	inBytes, inDropped   atomic.Uint64
	outBytes, outDropped atomic.Uint64
	broken, conns        atomic.Uint64
	mtu                  atomic.Uint32
	// drops are the frames the rings dropped, by reason (see Drops).
	drops dropCounters

	offered   uint64
	closeOnce sync.Once
	connMu    sync.Mutex
	conn      *net.UnixConn // nil when no front end
	closed    atomic.Bool
	done      chan struct{}
}

// Listen creates the socket at path and starts serving front ends on
// it, one at a time. A socket already at path is replaced if nobody
// listens on it; if something does (a VM's QEMU in client mode, another
// daemon), Listen fails and leaves it.
func Listen(path string, opts Options) (*Port, error) {
	p, err := newPort(path, opts)
	if err != nil {
		return nil, err
	}
	if p.ln, p.sockID, err = listenUnix(path); err != nil {
		p.closeFds()
		return nil, err
	}
	go p.serve()
	return p, nil
}

// Dial starts a client-mode port: a goroutine connects to the socket at
// path, which a front end listens on, serves the connection, and dials
// again when it ends or when the socket is missing or refuses, waiting
// 100 ms after a failure, doubling up to 1 s, until Close. Dial does not
// wait for the first connection; it fails only when the port's own
// descriptors cannot be created.
func Dial(path string, opts Options) (*Port, error) {
	p, err := newPort(path, opts)
	if err != nil {
		return nil, err
	}
	p.client = true
	go p.dialLoop()
	return p, nil
}

// Client reports whether the port is in client mode (made by Dial).
func (p *Port) Client() bool { return p.client }

func newPort(path string, opts Options) (*Port, error) {
	p := &Port{path: path, log: opts.Logger, stop: make(chan struct{}), done: make(chan struct{})}
	if p.log == nil {
		p.log = slog.Default()
	}
	p.log = p.log.With("vhost-user", path)
	p.armOnSleep = opts.ArmOnSleep
	p.fenced = canFence()
	p.pairs.Store(1)
	p.offered = 1<<fNetMQ | 1<<fVersion1 | 1<<fRingPacked | 1<<fMrgRxbuf | 1<<fIndirectDesc | 1<<fProtocolFeatures | 1<<fMTU | 1<<fEventIdx | 1<<fLogAll | 1<<fInOrder
	if !opts.NoOffloads {
		p.offered |= 1<<fCsum | 1<<fGuestCsum | 1<<fHostTSO4 | 1<<fHostTSO6 | 1<<fGuestTSO4 | 1<<fGuestTSO6
	}
	var err error
	if p.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("vhost-user %s: epoll: %w", path, err)
	}
	if p.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		unix.Close(p.epfd)
		return nil, fmt.Errorf("vhost-user %s: eventfd: %w", path, err)
	}
	n := max(1, min(opts.Readers, MaxQueuePairs))
	p.r0 = Reader{p: p, k: 0, n: n, epfd: p.epfd}
	p.rd = []*Reader{&p.r0}
	for k := 1; k < n; k++ {
		r := &Reader{p: p, k: k, n: n, epfd: -1}
		p.rd = append(p.rd, r)
		if r.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
			p.closeFds()
			return nil, fmt.Errorf("vhost-user %s: epoll: %w", path, err)
		}
	}
	for _, r := range p.rd {
		if err := p.watch(r.epfd, p.wake); err != nil {
			p.closeFds()
			return nil, err
		}
	}
	return p, nil
}

// watch adds fd to the epoll set epfd, edge-triggered.
func (p *Port) watch(epfd, fd int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(fd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("vhost-user %s: epoll add fd %d: %w", p.path, fd, err)
	}
	return nil
}

// kickEpfd returns the epoll set that watches the kicks of ring i: its
// reader's for a transmit ring, -1 for a receive ring (not watched).
func (p *Port) kickEpfd(i int) int {
	if !isTx(i) {
		return -1
	}
	return p.rd[(i/2)%len(p.rd)].epfd
}

func (p *Port) closeFds() {
	unix.Close(p.wake)
	for _, r := range p.rd[1:] {
		if r.epfd >= 0 {
			unix.Close(r.epfd)
		}
	}
	unix.Close(p.epfd)
}

// Path returns the socket path.
func (p *Port) Path() string { return p.path }

// Fd returns the port's epoll descriptor (see the package comment); with
// several readers it wakes for reader 0's queue pairs.
func (p *Port) Fd() int { return p.epfd }

// Readers returns the number of readers of the port (Options.Readers).
func (p *Port) Readers() int { return len(p.rd) }

// Reader returns reader k of the port (Options.Readers), 1 <= k <
// Readers: a port.Port (a *Reader) whose ReadBatch reads the transmit rings of the
// queue pairs q with q%Readers == k, as the port's own ReadBatch does
// for reader 0, and whose Fd wakes for those rings. Its WriteBatch takes
// nothing (the port's WriteBatch writes every receive ring) and its Close
// does nothing (the port's Close releases it). The same k gives the same
// Reader.
func (p *Port) Reader(k int) port.Port { return p.rd[k] }

// Reader reads the transmit rings of a share of a port's queue pairs
// (see Port.Reader); one caller at a time.
type Reader struct {
	p    *Port
	k, n int // the pairs q with q%n == k
	epfd int
	evs  [4]unix.EpollEvent
	// empty counts consecutive empty ReadBatch calls; next counts the
	// calls, for the round robin over the pairs.
	empty, next uint32
}

// Fd returns the reader's epoll descriptor: readable when the guest
// kicks one of its transmit rings or a ring starts or stops.
func (r *Reader) Fd() int { return r.epfd }

// WriteBatch takes no frame: frames for the guest go to Port.WriteBatch.
func (r *Reader) WriteBatch(bufs []*packet.Buf) (sent, dropped int, err error) { return 0, 0, nil }

// Close does nothing: the reader lives as long as its port.
func (r *Reader) Close() error { return nil }

// MTU returns the guest MTU the front end announced with NET_SET_MTU
// (QEMU's host_mtu), or 0 if it announced none. Frames larger than MTU
// plus the Ethernet header should reach the guest only as GSO frames.
func (p *Port) MTU() int { return int(p.mtu.Load()) }

// GuestTSO reports whether the guest's receive ring takes TSO frames
// (it negotiated GUEST_TSO4 and GUEST_TSO6). WriteBatch drops TSO frames
// when it does not, so a caller segments them first. The answer can
// change whenever the front end restarts the ring.
func (p *Port) GuestTSO() bool {
	r := p.ring(rxRing)
	return r != nil && r.takesTSO()
}

// ring returns ring i, or nil while it is stopped.
func (p *Port) ring(i int) queue {
	if q := p.rings[i].Load(); q != nil {
		return *q
	}
	return nil
}

// Ready reports whether both rings are running.
func (p *Port) Ready() bool {
	return p.rings[rxRing].Load() != nil && p.rings[txRing].Load() != nil
}

// Stats returns a snapshot of the counters.
func (p *Port) Stats() Stats {
	var in, out uint64
	for q := range p.qin {
		in += p.qin[q].Load()
		out += p.qout[q].Load()
	}
	return Stats{
		InFrames: in, InBytes: p.inBytes.Load(), InDropped: p.inDropped.Load(),
		OutFrames: out, OutBytes: p.outBytes.Load(), OutDropped: p.outDropped.Load(),
		Broken: p.broken.Load(), Connections: p.conns.Load(),
	}
}

// maxRearms bounds the re-arm-and-look-again rounds of one ReadBatch.
const maxRearms = 4

// ReadBatch fills bufs with frames the guest transmitted, from the
// transmit rings of every queue pair that runs (of reader 0's pairs with
// several readers), starting with a different pair at each call so that
// a busy pair cannot starve the others. When it finds none it re-enables
// guest kicks and rearms Fd.
func (p *Port) ReadBatch(bufs []*packet.Buf) (int, error) { return p.r0.ReadBatch(bufs) }

// ReadBatch is Port.ReadBatch for the reader's queue pairs.
func (rd *Reader) ReadBatch(bufs []*packet.Buf) (int, error) {
	p := rd.p
	np := int(p.pairs.Load())
	rd.mark(np)
	// Harvest Fd's edge-triggered events so it sleeps again: on the
	// first empty poll in a row and every 8th after that, so a stale
	// wake-up costs a sleeping worker at most 8 spurious polls.
	harvest := !p.armOnSleep && rd.empty%8 == 0
	var rs [MaxQueuePairs]queue
	var qs [MaxQueuePairs]uint8
	var got [MaxQueuePairs]int
	live := 0
	for q := rd.k; q < np; q += rd.n {
		if r := p.ring(2*q + 1); r != nil && !r.isBroken() {
			rs[live], qs[live] = r, uint8(q)
			live++
		}
	}
	n := 0
	if live > 0 {
		start := int(rd.next % uint32(live))
		var dropped int
		var bytes uint64
		n, dropped, bytes = dequeueAll(rs[:live], got[:live], start, bufs)
		// The worker may sleep on Fd after an empty poll: ask for kicks
		// at the next entry and harvest Fd when due, then look again, so
		// that neither a frame that raced with the flag nor one whose
		// kick the harvest consumed is left in a ring with nobody to
		// wake up for it. Frames dropped on the way move a ring on
		// without returning anything: kicks are re-armed after them.
		for try := 0; n == 0 && !p.armOnSleep; try++ {
			if try == maxRearms {
				// A guest that keeps posting frames the port drops:
				// leave Fd readable so the worker comes back.
				rd.signal()
				break
			}
			again := false
			for _, r := range rs[:live] {
				if !r.isBroken() && !r.kicksArmed() {
					again = r.setNotify(true) || again
				}
			}
			if harvest {
				unix.EpollWait(rd.epfd, rd.evs[:], 0)
				harvest = false
				for _, r := range rs[:live] {
					again = again || (!r.isBroken() && r.hasPending())
				}
			}
			if !again {
				break
			}
			m, d, b := dequeueAll(rs[:live], got[:live], start, bufs)
			n += m
			dropped += d
			bytes += b
		}
		for k, r := range rs[:live] {
			// Kicks go off only on rings that returned frames: the
			// worker polls again after those.
			if got[k] > 0 {
				p.qin[qs[k]].Add(uint64(got[k]))
				if r.kicksOn() {
					r.setNotify(false)
				}
			}
			if r.isBroken() {
				p.markBroken(2*int(qs[k]) + 1)
			}
		}
		if n > 0 {
			p.inBytes.Add(bytes)
		}
		if dropped > 0 {
			p.inDropped.Add(uint64(dropped))
		}
	}
	rd.next++
	rd.mark(np)
	if n == 0 {
		rd.empty++
		if harvest {
			unix.EpollWait(rd.epfd, rd.evs[:], 0)
		}
	} else {
		rd.empty = 0
	}
	return n, nil
}

// mark adds one to the batch marks (Port.seq) of the transmit rings of
// the reader's first np queue pairs: before and after each use of them.
func (rd *Reader) mark(np int) {
	for q := rd.k; q < np; q += rd.n {
		bump(&rd.p.seq[2*q+1], rd.p.fenced)
	}
}

// CompleteReads returns to the guest the buffers of the frames the
// port's ReadBatch took: it publishes the used entries of its transmit
// rings, which ReadBatch leaves for this call, to be made once the frames
// are forwarded. The store of a used index is a cache miss on a line the
// guest reads, followed by a full barrier: made before the frames are
// forwarded, it delays them by a transfer of that line between cores.
// The next ReadBatch or PrepareSleep publishes them when nobody calls
// this, and so does a stop of the ring.
func (p *Port) CompleteReads() { p.r0.CompleteReads() }

// CompleteReads is Port.CompleteReads for the reader's queue pairs.
func (rd *Reader) CompleteReads() {
	p := rd.p
	np := int(p.pairs.Load())
	rd.mark(np)
	for q := rd.k; q < np; q += rd.n {
		if r := p.ring(2*q + 1); r != nil {
			r.complete()
		}
	}
	rd.mark(np)
}

// PrepareSleep readies the port for a worker about to sleep on Fd (the
// port's first reader; see Reader.PrepareSleep).
func (p *Port) PrepareSleep() bool { return p.r0.PrepareSleep() }

// PrepareSleep readies the reader for a worker about to sleep on its Fd:
// it rearms Fd (an epoll_wait with a zero timeout), asks the guest for a
// kick at the next entry of each of its transmit rings, and reports
// whether frames are waiting already, in which case the worker must poll
// again instead of sleeping. Fd is rearmed first: a kick after that
// makes it readable again, and a frame posted before the kicks were
// asked for is seen by the last check. It is the reader's call, never
// concurrent with its ReadBatch; the next ReadBatch that returns frames
// from a ring turns that ring's kicks off.
func (rd *Reader) PrepareSleep() bool {
	p := rd.p
	np := int(p.pairs.Load())
	rd.mark(np)
	unix.EpollWait(rd.epfd, rd.evs[:], 0)
	pending := false
	for q := rd.k; q < np; q += rd.n {
		r := p.ring(2*q + 1)
		if r == nil {
			continue
		}
		r.complete()
		if !r.isBroken() {
			if !r.kicksArmed() {
				pending = r.setNotify(true) || pending
			}
			pending = pending || r.hasPending()
		}
	}
	rd.mark(np)
	return pending
}

// dequeueAll reads from the rings rs in turn, from rs[start] on, until
// bufs is full, adding to got the frames each ring returned.
func dequeueAll(rs []queue, got []int, start int, bufs []*packet.Buf) (n, dropped int, bytes uint64) {
	for j := range rs {
		if n == len(bufs) {
			break
		}
		k := start + j
		if k >= len(rs) {
			k -= len(rs)
		}
		if rs[k].isBroken() {
			continue
		}
		m, d, b := rs[k].dequeue(bufs[n:])
		got[k] += m
		n += m
		dropped += d
		bytes += b
	}
	return n, dropped, bytes
}

// WriteBatch delivers bufs to the guest (port.Port's contract): it sends
// frames until the guest has no room, and refuses, counting them in
// Drops, the frames it cannot express to this guest. With several queue
// pairs running it spreads the frames over their receive rings by flow
// hash (packet.FlowHash), so the frames of one flow keep their order.
func (p *Port) WriteBatch(bufs []*packet.Buf) (sent, dropped int, err error) {
	np := int(p.pairs.Load())
	for q := range np {
		bump(&p.seq[2*q], p.fenced)
	}
	var rs [MaxQueuePairs]queue
	var qs [MaxQueuePairs]uint8
	live := 0
	for q := range np {
		if r := p.ring(2 * q); r != nil && !r.isBroken() {
			rs[live], qs[live] = r, uint8(q)
			live++
		}
	}
	switch live {
	case 0:
	case 1:
		sent, dropped = p.writeRing(rs[0], int(qs[0]), bufs)
	default:
		sent, dropped = p.steer(rs[:live], qs[:live], bufs)
	}
	for q := range np {
		bump(&p.seq[2*q], p.fenced)
	}
	return sent, dropped, nil
}

// writeRing delivers bufs to receive ring r of queue pair q and counts
// what it sent and refused.
func (p *Port) writeRing(r queue, q int, bufs []*packet.Buf) (sent, dropped int) {
	n, dropped, bytes := r.enqueue(bufs)
	sent = n - dropped
	if sent > 0 {
		p.qout[q].Add(uint64(sent))
		p.outBytes.Add(bytes)
	}
	if dropped > 0 {
		p.outDropped.Add(uint64(dropped))
	}
	if r.isBroken() {
		p.markBroken(2 * q)
	}
	return sent, dropped
}

// steer spreads bufs over the receive rings rs (of the pairs qs) by flow
// hash, keeping the order of each ring's frames, and then lays bufs out
// as WriteBatch promises: the frames sent, the frames refused, the
// frames not taken.
func (p *Port) steer(rs []queue, qs []uint8, bufs []*packet.Buf) (sent, dropped int) {
	k := uint32(len(rs))
	for i := range rs {
		p.wq[i] = p.wq[i][:0]
	}
	for _, b := range bufs {
		i := packet.FlowHash(b.Bytes()) % k
		p.wq[i] = append(p.wq[i], b)
	}
	var res [MaxQueuePairs][2]int
	for i, r := range rs {
		s, d := p.writeRing(r, int(qs[i]), p.wq[i])
		res[i] = [2]int{s, d}
		sent += s
		dropped += d
	}
	a, b, c := 0, sent, sent+dropped
	for i := range rs {
		w, s, d := p.wq[i], res[i][0], res[i][1]
		a += copy(bufs[a:], w[:s])
		b += copy(bufs[b:], w[s:s+d])
		c += copy(bufs[c:], w[s+d:])
	}
	return sent, dropped
}

// QueueStats are the frames of one queue pair: In read from its
// transmit ring, Out written to its receive ring.
type QueueStats struct {
	In, Out uint64
}

// QueueStats returns the frames of each queue pair up to the highest
// one that ever ran on the port (pair 0 at least). They add up to
// Stats' InFrames and OutFrames.
func (p *Port) QueueStats() []QueueStats {
	out := make([]QueueStats, p.pairs.Load())
	for q := range out {
		out[q] = QueueStats{In: p.qin[q].Load(), Out: p.qout[q].Load()}
	}
	return out
}

// usePair records that a ring of queue pair q started, so that the data
// path looks at the rings of the pairs up to q (control goroutine).
func (p *Port) usePair(q int) {
	if uint32(q) >= p.pairs.Load() {
		p.pairs.Store(uint32(q) + 1)
	}
}

// markBroken records that the guest corrupted ring i. It runs once per
// corruption (a broken ring is skipped until the front end restarts it).
func (p *Port) markBroken(i int) {
	p.broken.Add(1)
	p.log.Warn("vhost-user ring stopped: the guest corrupted it", "ring", i)
}

// Close stops serving and disconnects the front end. In server mode it
// first removes the socket, if the path still names the socket Listen
// created; in client mode the socket is the front end's and stays.
func (p *Port) Close() error {
	p.closeOnce.Do(func() {
		p.closed.Store(true)
		close(p.stop)
		if p.ln != nil {
			p.removeSocket()
			p.ln.Close()
		}
		p.connMu.Lock()
		if p.conn != nil {
			p.conn.Close()
		}
		p.connMu.Unlock()
		<-p.done
		p.closeFds()
	})
	return nil
}

// quiesce waits until a batch in flight on ring i, if any, has left it.
// The caller has taken the ring off the data path: a batch that starts
// later does not see it.
func (p *Port) quiesce(i int) {
	if p.fenced {
		if err := fence(); err != nil {
			p.log.Error("membarrier failed: a batch's mark may not be seen yet", "ring", i, "err", err)
		}
	}
	s := atomic.LoadUint64(&p.seq[i])
	if s&1 == 0 {
		return
	}
	spinwait.Until(func() bool { return atomic.LoadUint64(&p.seq[i]) != s }, time.Time{})
}

// signal wakes every reader's Fd (a ring started or stopped).
func (p *Port) signal() {
	var one [8]byte
	one[0] = 1
	unix.Write(p.wake, one[:])
}

// signal leaves the reader's Fd readable: it rearms the port's wake-up
// eventfd (the other readers wake for nothing once).
func (rd *Reader) signal() { rd.p.signal() }
