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
// The data path (ReadBatch reads the guest's transmit ring 1, WriteBatch
// fills its receive ring 0) never locks: it loads each ring through an
// atomic pointer that the control goroutine swaps, and the control
// goroutine waits for a batch in flight to finish before it unmaps or
// reuses anything that batch could touch. ReadBatch and WriteBatch use
// separate rings and may run on different goroutines; each of them must
// have one caller at a time.
//
// Control sockets (the listening socket, the connection to the front
// end) are on the Go runtime's poller, so a port waiting for a front
// end, for a redial or for the next message holds no OS thread: the
// number of threads does not grow with the number of ports. An idle port
// holds three descriptors in server mode (socket, epoll, eventfd) and two
// in client mode.
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
// ring starts or stops. After Options.IdlePolls empty ReadBatch calls in
// a row (default 1) ReadBatch enables guest kicks and rearms Fd (one
// epoll_wait with a zero timeout, repeated every 8th empty call after
// that); from then on a worker may sleep on Fd, and wakes at most 8
// times for nothing.
package vhostuser

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/butterfly-go/butterfly/internal/packet"
	"golang.org/x/sys/unix"
)

const (
	rxRing = 0 // guest receive queue: WriteBatch
	txRing = 1 // guest transmit queue: ReadBatch
)

// Options configures a port.
type Options struct {
	// Logger receives control-plane events (connections, protocol
	// errors); nil means slog.Default().
	Logger *slog.Logger
	// NoOffloads withholds CSUM, GUEST_CSUM and the TSO features, so the
	// guest sends complete, unsegmented frames.
	NoOffloads bool
	// IdlePolls is how many ReadBatch calls in a row must find nothing
	// before the port asks the guest for kicks and rearms Fd; a worker
	// must not sleep on Fd before that many. The default, 1, lets a
	// worker sleep after any empty ReadBatch; a busy-polling worker sets
	// more (say 64) so that the guest does not kick, and the port does
	// not rearm Fd, between bursts.
	IdlePolls int
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
	epfd   int
	wake   int // eventfd in epfd, written on ring start and stop

	rings [2]atomic.Pointer[queue]
	seq   [2]atomic.Uint64 // odd while a batch uses the ring
	evs   [4]unix.EpollEvent
	empty uint32 // consecutive empty ReadBatch calls (worker-owned)
	idle  uint32 // Options.IdlePolls

	inFrames, inBytes, inDropped    atomic.Uint64
	outFrames, outBytes, outDropped atomic.Uint64
	broken, conns                   atomic.Uint64
	mtu                             atomic.Uint32
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
	p.idle = uint32(max(1, min(opts.IdlePolls, 1<<20)))
	p.offered = 1<<fVersion1 | 1<<fRingPacked | 1<<fMrgRxbuf | 1<<fIndirectDesc | 1<<fProtocolFeatures | 1<<fMTU | 1<<fEventIdx | 1<<fLogAll | 1<<fInOrder
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
	if err := p.watch(p.wake); err != nil {
		p.closeFds()
		return nil, err
	}
	return p, nil
}

func (p *Port) watch(fd int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("vhost-user %s: epoll add fd %d: %w", p.path, fd, err)
	}
	return nil
}

func (p *Port) closeFds() {
	unix.Close(p.wake)
	unix.Close(p.epfd)
}

// Path returns the socket path.
func (p *Port) Path() string { return p.path }

// Fd returns the port's epoll descriptor (see the package comment).
func (p *Port) Fd() int { return p.epfd }

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
	return Stats{
		InFrames: p.inFrames.Load(), InBytes: p.inBytes.Load(), InDropped: p.inDropped.Load(),
		OutFrames: p.outFrames.Load(), OutBytes: p.outBytes.Load(), OutDropped: p.outDropped.Load(),
		Broken: p.broken.Load(), Connections: p.conns.Load(),
	}
}

// maxRearms bounds the re-arm-and-look-again rounds of one ReadBatch.
const maxRearms = 4

// ReadBatch fills bufs with frames the guest transmitted. When it finds
// none it re-enables guest kicks and rearms Fd.
func (p *Port) ReadBatch(bufs []*packet.Buf) (int, error) {
	s := &p.seq[txRing]
	s.Add(1)
	n := 0
	// Harvest Fd's edge-triggered events so it sleeps again: on the
	// IdlePolls-th empty poll in a row and every 8th after that, so a
	// stale wake-up costs a sleeping worker at most 8 spurious polls.
	harvest := p.empty+1 >= p.idle && (p.empty+1-p.idle)%8 == 0
	if r := p.ring(txRing); r != nil && !r.isBroken() {
		var dropped int
		var bytes uint64
		n, dropped, bytes = r.dequeue(bufs)
		// The worker may sleep on Fd after an empty poll: ask for kicks
		// at the next entry and harvest Fd when due, then look again, so
		// that neither a frame that raced with the flag nor one whose
		// kick the harvest consumed is left in the ring with nobody to
		// wake up for it. Frames dropped on the way move the ring on
		// without returning anything: kicks are re-armed after them.
		for try := 0; n == 0 && !r.isBroken() && p.empty+1 >= p.idle; try++ {
			if try == maxRearms {
				// A guest that keeps posting frames the port drops:
				// leave Fd readable so the worker comes back.
				p.signal()
				break
			}
			again := false
			if !r.kicksArmed() {
				again = r.setNotify(true)
			}
			if harvest {
				unix.EpollWait(p.epfd, p.evs[:], 0)
				harvest = false
				again = again || r.hasPending()
			}
			if !again {
				break
			}
			var d int
			var b uint64
			n, d, b = r.dequeue(bufs)
			dropped += d
			bytes += b
		}
		// Kicks go off only when frames are returned: the worker polls
		// again after those.
		if n > 0 && r.kicksOn() {
			r.setNotify(false)
		}
		if n > 0 || dropped > 0 {
			p.inFrames.Add(uint64(n))
			p.inBytes.Add(bytes)
			p.inDropped.Add(uint64(dropped))
		}
		if r.isBroken() {
			p.markBroken(txRing)
		}
	}
	s.Add(1)
	if n == 0 {
		p.empty++
		if harvest {
			unix.EpollWait(p.epfd, p.evs[:], 0)
		}
	} else {
		p.empty = 0
	}
	return n, nil
}

// WriteBatch delivers bufs to the guest (port.Port's contract): it sends
// frames until the guest has no room, and refuses, counting them in
// Drops, the frames it cannot express to this guest.
func (p *Port) WriteBatch(bufs []*packet.Buf) (sent, dropped int, err error) {
	s := &p.seq[rxRing]
	s.Add(1)
	if r := p.ring(rxRing); r != nil && !r.isBroken() {
		var n int
		var bytes uint64
		n, dropped, bytes = r.enqueue(bufs)
		sent = n - dropped
		p.outFrames.Add(uint64(sent))
		p.outBytes.Add(bytes)
		p.outDropped.Add(uint64(dropped))
		if r.isBroken() {
			p.markBroken(rxRing)
		}
	}
	s.Add(1)
	return sent, dropped, nil
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
func (p *Port) quiesce(i int) {
	s := p.seq[i].Load()
	if s&1 == 0 {
		return
	}
	for p.seq[i].Load() == s {
		time.Sleep(10 * time.Microsecond)
	}
}

// signal wakes Fd (a ring started or stopped).
func (p *Port) signal() {
	var one [8]byte
	one[0] = 1
	unix.Write(p.wake, one[:])
}
