// Package vhostuser is an in-house vhost-user back end for virtio-net
// (QEMU docs/interop/vhost-user.rst): a port.Port whose frames live in a
// VM's split virtqueues in shared memory.
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
// Fd returns an epoll descriptor that stays the same for the port's life:
// it becomes readable when the guest kicks its transmit ring or when a
// ring starts or stops. After Options.IdlePolls empty ReadBatch calls in
// a row (default 1) ReadBatch enables guest kicks and rearms Fd (one
// epoll_wait with a zero timeout, repeated every 8th empty call after
// that); from then on a worker may sleep on Fd, and wakes at most 8
// times for nothing.
package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/butterfly-go/butterfly/internal/packet"
	"golang.org/x/sys/unix"
)

// Virtio feature bits (virtio 1.x and vhost-user).
const (
	fCsum             = 0
	fGuestCsum        = 1
	fMTU              = 3
	fGuestTSO4        = 7
	fGuestTSO6        = 8
	fHostTSO4         = 11
	fHostTSO6         = 12
	fMrgRxbuf         = 15
	fIndirectDesc     = 28
	fProtocolFeatures = 30
	fVersion1         = 32
)

// Protocol feature bits.
const (
	pfMQ                = 0
	pfReplyAck          = 3
	pfNetMTU            = 4
	pfConfigureMemSlots = 15
)

// offeredProto are the protocol features the port offers.
const offeredProto = 1<<pfMQ | 1<<pfReplyAck | 1<<pfNetMTU | 1<<pfConfigureMemSlots

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
	client bool              // client mode: dial path, never create or remove it
	stop   chan struct{}
	epfd   int
	wake   int // eventfd in epfd, written on ring start and stop

	rings [2]atomic.Pointer[vring]
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

// Listen creates the socket at path (removing a stale one) and starts
// serving front ends on it, one at a time.
func Listen(path string, opts Options) (*Port, error) {
	p, err := newPort(path, opts)
	if err != nil {
		return nil, err
	}
	if p.ln, err = listenUnix(path); err != nil {
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
	p.offered = 1<<fVersion1 | 1<<fMrgRxbuf | 1<<fIndirectDesc | 1<<fProtocolFeatures | 1<<fMTU | 1<<fEventIdx
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

// listenUnix creates a listening socket at path (backlog 1: one front
// end at a time) on the runtime's poller. The listener never removes
// path itself.
func listenUnix(path string) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("vhost-user %s: socket: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return nil, fmt.Errorf("vhost-user %s: bind: %w", path, err)
	}
	if err := unix.Listen(fd, 1); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("vhost-user %s: listen: %w", path, err)
	}
	l, err := net.FileListener(f)
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("vhost-user %s: listener: %w", path, err)
	}
	ln := l.(*net.UnixListener)
	ln.SetUnlinkOnClose(false)
	return ln, nil
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
	r := p.rings[rxRing].Load()
	return r != nil && r.guestTSO
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
	if r := p.rings[txRing].Load(); r != nil && !r.broken {
		var dropped int
		var bytes uint64
		n, dropped, bytes = r.dequeue(bufs)
		if n == 0 && !r.broken && p.empty+1 >= p.idle {
			// The worker may sleep on Fd after this poll: ask for kicks
			// (first empty poll after activity) and harvest Fd when due,
			// then look again, so that neither a frame that raced with
			// the flag nor one whose kick the harvest consumed is left
			// in the ring with nobody to wake up for it.
			again := false
			if r.usedFlags != 0 {
				again = r.setNotify(true)
			}
			if harvest {
				unix.EpollWait(p.epfd, p.evs[:], 0)
				harvest = false
				again = again || r.hasPending()
			}
			if again {
				var d int
				var b uint64
				n, d, b = r.dequeue(bufs)
				dropped += d
				bytes += b
			}
		}
		// Kicks go off only when frames are returned: the worker polls
		// again after those.
		if n > 0 && r.usedFlags == 0 {
			r.setNotify(false)
		}
		if n > 0 || dropped > 0 {
			p.inFrames.Add(uint64(n))
			p.inBytes.Add(bytes)
			p.inDropped.Add(uint64(dropped))
		}
		if r.broken {
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

// WriteBatch delivers bufs to the guest. It returns how many it took
// (delivered, or dropped because the frame cannot be expressed to this
// guest); it stops at the first frame for which the guest has no room.
func (p *Port) WriteBatch(bufs []*packet.Buf) (int, error) {
	s := &p.seq[rxRing]
	s.Add(1)
	n := 0
	if r := p.rings[rxRing].Load(); r != nil && !r.broken {
		var dropped int
		var bytes uint64
		n, dropped, bytes = r.enqueue(bufs)
		p.outFrames.Add(uint64(n - dropped))
		p.outBytes.Add(bytes)
		p.outDropped.Add(uint64(dropped))
		if r.broken {
			p.markBroken(rxRing)
		}
	}
	s.Add(1)
	return n, nil
}

// markBroken records that the guest corrupted ring i. It runs once per
// corruption (a broken ring is skipped until the front end restarts it).
func (p *Port) markBroken(i int) {
	p.broken.Add(1)
	p.log.Warn("vhost-user ring stopped: the guest corrupted it", "ring", i)
}

// Close stops serving and disconnects the front end. In server mode it
// removes the socket; in client mode the socket is the front end's and
// stays.
func (p *Port) Close() error {
	p.closeOnce.Do(func() {
		p.closed.Store(true)
		close(p.stop)
		if p.ln != nil {
			p.ln.Close()
		}
		p.connMu.Lock()
		if p.conn != nil {
			p.conn.Close()
		}
		p.connMu.Unlock()
		<-p.done
		if !p.client {
			os.Remove(p.path)
		}
		p.closeFds()
	})
	return nil
}

// serve accepts front ends one at a time until Close.
func (p *Port) serve() {
	defer close(p.done)
	for !p.closed.Load() {
		c, err := p.ln.AcceptUnix()
		if err != nil {
			if p.closed.Load() {
				return
			}
			p.log.Error("vhost-user accept failed", "err", err)
			if !p.pause(100 * time.Millisecond) {
				return
			}
			continue
		}
		if served, _ := p.session(c); !served {
			return
		}
	}
}

// pause waits for d, or until Close; it reports whether the port is
// still open.
func (p *Port) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.stop:
		return false
	case <-t.C:
		return true
	}
}

// session serves the front end on the connected socket c until it
// disconnects or Close, then closes c. served is false, and nothing was
// served, if the port is already closed; ran reports whether a ring was
// started (the front end completed its setup).
func (p *Port) session(c *net.UnixConn) (served, ran bool) {
	p.connMu.Lock()
	if p.closed.Load() {
		p.connMu.Unlock()
		c.Close()
		return false, false
	}
	p.conn = c
	p.connMu.Unlock()
	p.conns.Add(1)
	p.log.Info("vhost-user front end connected")
	d := newDevice(p, c)
	err := d.run()
	d.teardown()
	p.connMu.Lock()
	p.conn = nil
	p.connMu.Unlock()
	c.Close()
	p.log.Info("vhost-user front end disconnected", "reason", err)
	return true, d.ran
}

// Client-mode redial delays: the first after a failure, and the bound.
const (
	dialRetryMin = 100 * time.Millisecond
	dialRetryMax = time.Second
)

// dialLoop connects to the front end's socket and serves each connection
// until Close, waiting between attempts: dialRetryMin after a session in
// which a ring ran, or after the first failure; the wait doubles up to
// dialRetryMax while dials fail or front ends hang up before starting a
// ring, so a missing or flapping front end costs at most one dial a
// second. Only the first failure of a series is logged at Info, the rest
// at Debug.
func (p *Port) dialLoop() {
	defer close(p.done)
	delay := time.Duration(0)
	failing := false
	for {
		if delay > 0 && !p.pause(delay) {
			return
		}
		if p.closed.Load() {
			return
		}
		c, err := dialUnix(p.path)
		if err != nil {
			if !failing {
				p.log.Info("vhost-user front end not reachable, retrying", "err", err)
				failing = true
			} else {
				p.log.Debug("vhost-user dial failed", "err", err)
			}
			delay = min(max(2*delay, dialRetryMin), dialRetryMax)
			continue
		}
		failing = false
		served, ran := p.session(c)
		if !served {
			return
		}
		if ran {
			delay = dialRetryMin
		} else {
			delay = min(max(2*delay, dialRetryMin), dialRetryMax)
		}
	}
}

// dialUnix connects a stream socket to path on the runtime's poller. A
// unix connect does not wait: a full backlog is a failed attempt.
func dialUnix(path string) (*net.UnixConn, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("vhost-user: %w", err)
	}
	return c, nil
}

// ringCtl is the control side of one ring.
type ringCtl struct {
	conf    ringConf
	base    uint16
	addrSet bool
	kicked  bool // SET_VRING_KICK received: the ring is started
	enabled bool
	kick    int
	call    int
	err     int
}

// device is the state of one front-end connection, owned by the control
// goroutine.
type device struct {
	p        *Port
	c        *conn
	features uint64
	proto    uint64
	featSet  bool
	mem      *memTable
	rings    [2]ringCtl
	ran      bool // a ring was started on this connection
}

func newDevice(p *Port, c *net.UnixConn) *device {
	d := &device{p: p, c: newConn(c)}
	for i := range d.rings {
		d.rings[i] = ringCtl{kick: -1, call: -1, err: -1}
	}
	d.resetRings()
	return d
}

func (d *device) resetRings() {
	for i := range d.rings {
		r := &d.rings[i]
		closeFd(&r.kick, d.p, i == txRing)
		closeFd(&r.call, nil, false)
		closeFd(&r.err, nil, false)
		*r = ringCtl{kick: -1, call: -1, err: -1}
	}
}

func closeFd(fd *int, p *Port, watched bool) {
	if *fd >= 0 {
		if watched {
			unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, *fd, nil)
		}
		unix.Close(*fd)
		*fd = -1
	}
}

func (d *device) run() error {
	for {
		m, err := d.c.read()
		if err != nil {
			return err
		}
		reply, herr := d.handle(m)
		m.closeFds()
		if herr != nil {
			d.p.log.Warn("vhost-user request failed", "request", m.req, "err", herr)
		}
		if reply != nil {
			if err := d.c.reply(m.req, reply); err != nil {
				return err
			}
		} else if m.flags&flagNeedReply != 0 && d.proto&(1<<pfReplyAck) != 0 {
			var status uint64
			if herr != nil {
				status = 1
			}
			if err := d.c.replyU64(m.req, status); err != nil {
				return err
			}
		}
	}
}

func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// handle applies one message and returns the reply payload for requests
// that have one.
func (d *device) handle(m *msg) ([]byte, error) {
	switch m.req {
	case reqGetFeatures:
		return u64(d.p.offered), nil
	case reqSetFeatures:
		v, err := m.u64()
		if err != nil {
			return nil, err
		}
		if v&^d.p.offered != 0 {
			return nil, fmt.Errorf("features %#x not offered", v&^d.p.offered)
		}
		d.features, d.featSet = v, true
		d.restartAll()
		return nil, nil
	case reqGetProtocolFeatures:
		return u64(offeredProto), nil
	case reqSetProtocolFeatures:
		v, err := m.u64()
		if err != nil {
			return nil, err
		}
		d.proto = v & offeredProto
		return nil, nil
	case reqSetOwner:
		return nil, nil
	case reqResetOwner, reqResetDevice:
		d.stopAll()
		d.resetRings()
		d.features, d.featSet = 0, false
		return nil, nil
	case reqGetQueueNum:
		return u64(1), nil
	case reqGetMaxMemSlots:
		return u64(maxMemSlots), nil
	case reqSetMemTable:
		rs, err := m.memTable()
		if err != nil {
			return nil, err
		}
		fds := m.fds
		m.fds = nil
		t, err := mapRegions(rs, fds)
		if err != nil {
			return nil, err
		}
		d.setMem(t)
		return nil, nil
	case reqAddMemReg:
		r, err := m.memReg()
		if err != nil {
			return nil, err
		}
		if len(m.fds) != 1 {
			return nil, fmt.Errorf("ADD_MEM_REG with %d fds", len(m.fds))
		}
		if d.mem != nil && len(d.mem.regions) >= maxMemSlots {
			return nil, fmt.Errorf("ADD_MEM_REG: all %d slots used", maxMemSlots)
		}
		fd := m.takeFd()
		one, err := mapRegions([]region{r}, []int{fd})
		if err != nil {
			return nil, err
		}
		t := &memTable{}
		if d.mem != nil {
			t.regions = append(t.regions, d.mem.regions...)
		}
		t.regions = append(t.regions, one.regions...)
		d.swapMem(t, nil)
		return nil, nil
	case reqRemMemReg:
		r, err := m.memReg()
		if err != nil {
			return nil, err
		}
		if d.mem == nil {
			return nil, errors.New("REM_MEM_REG without memory")
		}
		t := &memTable{}
		var gone []memRegion
		for _, x := range d.mem.regions {
			if x.gpa == r.gpa && uint64(len(x.mem)) == r.size && x.uaddr == r.uaddr {
				gone = append(gone, x)
			} else {
				t.regions = append(t.regions, x)
			}
		}
		if gone == nil {
			return nil, fmt.Errorf("REM_MEM_REG: no region at %#x", r.gpa)
		}
		d.swapMem(t, &memTable{regions: gone})
		return nil, nil
	case reqSetVringNum, reqSetVringBase, reqGetVringBase, reqSetVringEnable:
		s, err := m.state()
		if err != nil {
			return nil, err
		}
		if s.index > 1 {
			return nil, fmt.Errorf("ring %d does not exist", s.index)
		}
		r := &d.rings[s.index]
		switch m.req {
		case reqSetVringNum:
			r.conf.num = s.num
		case reqSetVringBase:
			r.base = uint16(s.num)
		case reqGetVringBase:
			d.stop(int(s.index))
			r.kicked = false
			closeFd(&r.kick, d.p, s.index == txRing)
			return binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, s.index), uint32(r.base)), nil
		case reqSetVringEnable:
			r.enabled = s.num != 0
		}
		d.restart(int(s.index))
		return nil, nil
	case reqSetVringAddr:
		a, err := m.addr()
		if err != nil {
			return nil, err
		}
		if a.index > 1 {
			return nil, fmt.Errorf("ring %d does not exist", a.index)
		}
		r := &d.rings[a.index]
		r.conf.addr, r.addrSet = a, true
		d.restart(int(a.index))
		return nil, nil
	case reqSetVringKick, reqSetVringCall, reqSetVringErr:
		v, err := m.u64()
		if err != nil {
			return nil, err
		}
		i := v & 0xff
		if i > 1 {
			return nil, fmt.Errorf("ring %d does not exist", i)
		}
		fd := -1
		if v&0x100 == 0 {
			if fd = m.takeFd(); fd < 0 {
				return nil, fmt.Errorf("request %d for ring %d carries no fd", m.req, i)
			}
		}
		r := &d.rings[i]
		switch m.req {
		case reqSetVringKick:
			d.stop(int(i))
			closeFd(&r.kick, d.p, i == txRing)
			r.kick, r.kicked = fd, true
			if fd >= 0 && i == txRing {
				if err := d.p.watch(fd); err != nil {
					return nil, err
				}
			}
			if d.features&(1<<fProtocolFeatures) == 0 {
				r.enabled = true
			}
		case reqSetVringCall:
			d.stop(int(i))
			closeFd(&r.call, nil, false)
			r.call = fd
		case reqSetVringErr:
			closeFd(&r.err, nil, false)
			r.err = fd
			return nil, nil
		}
		d.restart(int(i))
		return nil, nil
	case reqNetSetMTU:
		v, err := m.u64()
		if err != nil {
			return nil, err
		}
		if v < 68 || v > 65535 {
			return nil, fmt.Errorf("guest MTU %d out of range", v)
		}
		d.p.mtu.Store(uint32(v))
		return nil, nil
	case reqSetLogBase, reqSetLogFd, reqSendRARP:
		return nil, fmt.Errorf("request %d not supported", m.req)
	default:
		return nil, fmt.Errorf("unknown request %d", m.req)
	}
}

// stop takes ring i off the data path, waits for a batch in flight to
// leave it, and keeps its last avail index as the base for a restart.
func (d *device) stop(i int) {
	old := d.p.rings[i].Swap(nil)
	if old == nil {
		return
	}
	d.p.quiesce(i)
	d.rings[i].base = old.lastAvail
	d.p.signal()
}

func (p *Port) quiesce(i int) {
	s := p.seq[i].Load()
	if s&1 == 0 {
		return
	}
	for p.seq[i].Load() == s {
		time.Sleep(10 * time.Microsecond)
	}
}

func (p *Port) signal() {
	var one [8]byte
	one[0] = 1
	unix.Write(p.wake, one[:])
}

// restart rebuilds ring i from its configuration if it can run.
func (d *device) restart(i int) {
	d.stop(i)
	r := &d.rings[i]
	if !r.kicked || !r.enabled || !r.addrSet || d.mem == nil {
		return
	}
	r.conf.features = d.features
	v, err := newVring(d.mem, r.conf, r.base, r.call)
	if err != nil {
		d.p.log.Warn("vhost-user ring not started", "ring", i, "err", err)
		return
	}
	v.mtu, v.drops = &d.p.mtu, &d.p.drops
	d.p.rings[i].Store(v)
	d.ran = true
	d.p.signal()
}

func (d *device) restartAll() {
	for i := range d.rings {
		d.restart(i)
	}
}

func (d *device) stopAll() {
	for i := range d.rings {
		d.stop(i)
	}
}

// setMem replaces the memory table: rings stop, move to the new table and
// restart; the old mappings go only after no ring can use them.
func (d *device) setMem(t *memTable) { d.swapMem(t, d.mem) }

func (d *device) swapMem(t, unmap *memTable) {
	d.stopAll()
	d.mem = t
	d.restartAll()
	unmap.unmap()
}

// teardown stops the rings and releases everything of the connection.
func (d *device) teardown() {
	d.stopAll()
	d.resetRings()
	d.mem.unmap()
	d.mem = nil
	d.p.mtu.Store(0)
}
