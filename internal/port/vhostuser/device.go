package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

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
	fNetMQ            = 22
	fIndirectDesc     = 28
	fProtocolFeatures = 30
	fVersion1         = 32
)

// Protocol feature bits.
const (
	pfMQ                = 0
	pfLogShmfd          = 1
	pfReplyAck          = 3
	pfNetMTU            = 4
	pfConfigureMemSlots = 15
)

// offeredProto are the protocol features the port offers.
const offeredProto = 1<<pfMQ | 1<<pfLogShmfd | 1<<pfReplyAck | 1<<pfNetMTU | 1<<pfConfigureMemSlots

// ringCtl is the control side of one ring.
type ringCtl struct {
	conf    ringConf
	base    uint32 // SET_VRING_BASE's num (packed: wrap counter in bit 15)
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
	dlog     *dirtyLog // the dirty-page log of SET_LOG_BASE, if any
	rings    [numRings]ringCtl
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
		closeFd(&r.kick, d.p.kickEpfd(i))
		closeFd(&r.call, -1)
		closeFd(&r.err, -1)
		*r = ringCtl{kick: -1, call: -1, err: -1}
	}
}

// closeFd closes *fd, if open, after taking it out of the epoll set
// epfd (-1: none), and sets it to -1.
func closeFd(fd *int, epfd int) {
	if *fd >= 0 {
		if epfd >= 0 {
			unix.EpollCtl(epfd, unix.EPOLL_CTL_DEL, *fd, nil)
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

// handler applies one request to the device and returns the reply
// payload for requests that have one.
type handler func(d *device, m *msg) ([]byte, error)

// handlers maps each request code the back end knows to its method;
// a code without one is an unknown request. The table is never written.
var handlers = [...]handler{
	reqGetFeatures:         (*device).getFeatures,
	reqSetFeatures:         (*device).setFeatures,
	reqSetOwner:            (*device).setOwner,
	reqResetOwner:          (*device).reset,
	reqSetMemTable:         (*device).setMemTable,
	reqSetLogBase:          (*device).setLogBase,
	reqSetLogFd:            (*device).setLogFd,
	reqSetVringNum:         (*device).setVringNum,
	reqSetVringAddr:        (*device).setVringAddr,
	reqSetVringBase:        (*device).setVringBase,
	reqGetVringBase:        (*device).getVringBase,
	reqSetVringKick:        (*device).setVringKick,
	reqSetVringCall:        (*device).setVringCall,
	reqSetVringErr:         (*device).setVringErr,
	reqGetProtocolFeatures: (*device).getProtocolFeatures,
	reqSetProtocolFeatures: (*device).setProtocolFeatures,
	reqGetQueueNum:         (*device).getQueueNum,
	reqSetVringEnable:      (*device).setVringEnable,
	reqNetSetMTU:           (*device).netSetMTU,
	reqResetDevice:         (*device).reset,
	reqGetMaxMemSlots:      (*device).getMaxMemSlots,
	reqAddMemReg:           (*device).addMemReg,
	reqRemMemReg:           (*device).remMemReg,
}

// handle applies one message and returns the reply payload for requests
// that have one.
func (d *device) handle(m *msg) ([]byte, error) {
	if int64(m.req) >= int64(len(handlers)) || handlers[m.req] == nil {
		return nil, fmt.Errorf("unknown request %d", m.req)
	}
	return handlers[m.req](d, m)
}

func (d *device) getFeatures(*msg) ([]byte, error) { return u64(d.p.offered), nil }

func (d *device) setFeatures(m *msg) ([]byte, error) {
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
}

func (d *device) getProtocolFeatures(*msg) ([]byte, error) { return u64(offeredProto), nil }

func (d *device) setProtocolFeatures(m *msg) ([]byte, error) {
	v, err := m.u64()
	if err != nil {
		return nil, err
	}
	d.proto = v & offeredProto
	return nil, nil
}

func (d *device) setOwner(*msg) ([]byte, error) { return nil, nil }

// reset (RESET_OWNER, RESET_DEVICE) stops the rings and forgets their
// configuration and the negotiated features.
func (d *device) reset(*msg) ([]byte, error) {
	d.stopAll()
	d.resetRings()
	d.features, d.featSet = 0, false
	return nil, nil
}

// getQueueNum reports the queue pairs the port serves (MaxQueuePairs).
func (d *device) getQueueNum(*msg) ([]byte, error) { return u64(MaxQueuePairs), nil }

func (d *device) getMaxMemSlots(*msg) ([]byte, error) { return u64(maxMemSlots), nil }

func (d *device) setMemTable(m *msg) ([]byte, error) {
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
}

func (d *device) addMemReg(m *msg) ([]byte, error) {
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
}

func (d *device) remMemReg(m *msg) ([]byte, error) {
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
}

// ringState decodes a vring state payload and returns the ring it
// names.
func (d *device) ringState(m *msg) (vringState, *ringCtl, error) {
	s, err := m.state()
	if err != nil {
		return s, nil, err
	}
	if s.index >= numRings {
		return s, nil, fmt.Errorf("ring %d does not exist (%d queue pairs)", s.index, MaxQueuePairs)
	}
	return s, &d.rings[s.index], nil
}

func (d *device) setVringNum(m *msg) ([]byte, error) {
	s, r, err := d.ringState(m)
	if err != nil {
		return nil, err
	}
	r.conf.num = s.num
	d.restart(int(s.index))
	return nil, nil
}

func (d *device) setVringBase(m *msg) ([]byte, error) {
	s, r, err := d.ringState(m)
	if err != nil {
		return nil, err
	}
	r.base = s.num
	d.restart(int(s.index))
	return nil, nil
}

// getVringBase stops the ring and replies with where it stopped.
func (d *device) getVringBase(m *msg) ([]byte, error) {
	s, r, err := d.ringState(m)
	if err != nil {
		return nil, err
	}
	d.stop(int(s.index))
	r.kicked = false
	closeFd(&r.kick, d.p.kickEpfd(int(s.index)))
	return binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, s.index), uint32(r.base)), nil
}

func (d *device) setVringEnable(m *msg) ([]byte, error) {
	s, r, err := d.ringState(m)
	if err != nil {
		return nil, err
	}
	r.enabled = s.num != 0
	d.p.log.Debug("vhost-user SET_VRING_ENABLE", "ring", s.index, "enabled", r.enabled)
	d.restart(int(s.index))
	return nil, nil
}

func (d *device) setVringAddr(m *msg) ([]byte, error) {
	a, err := m.addr()
	if err != nil {
		return nil, err
	}
	if a.index >= numRings {
		return nil, fmt.Errorf("ring %d does not exist (%d queue pairs)", a.index, MaxQueuePairs)
	}
	r := &d.rings[a.index]
	r.conf.addr, r.addrSet = a, true
	d.restart(int(a.index))
	return nil, nil
}

// ringFd decodes the payload of SET_VRING_KICK/CALL/ERR: the ring index
// and the eventfd, or -1 when the front end polls instead (bit 8).
func (d *device) ringFd(m *msg) (int, int, error) {
	v, err := m.u64()
	if err != nil {
		return 0, -1, err
	}
	i := int(v & 0xff)
	if i >= numRings {
		return 0, -1, fmt.Errorf("ring %d does not exist (%d queue pairs)", i, MaxQueuePairs)
	}
	fd := -1
	if v&0x100 == 0 {
		if fd = m.takeFd(); fd < 0 {
			return 0, -1, fmt.Errorf("request %d for ring %d carries no fd", m.req, i)
		}
	}
	return i, fd, nil
}

// setVringKick installs the ring's kick eventfd (watched by Fd for the
// transmit ring), which starts the ring.
func (d *device) setVringKick(m *msg) ([]byte, error) {
	i, fd, err := d.ringFd(m)
	if err != nil {
		return nil, err
	}
	r := &d.rings[i]
	d.stop(i)
	closeFd(&r.kick, d.p.kickEpfd(i))
	r.kick, r.kicked = fd, true
	if ep := d.p.kickEpfd(i); fd >= 0 && ep >= 0 {
		if err := d.p.watch(ep, fd); err != nil {
			return nil, err
		}
	}
	if d.features&(1<<fProtocolFeatures) == 0 {
		r.enabled = true
	}
	d.restart(i)
	return nil, nil
}

func (d *device) setVringCall(m *msg) ([]byte, error) {
	i, fd, err := d.ringFd(m)
	if err != nil {
		return nil, err
	}
	r := &d.rings[i]
	d.stop(i)
	closeFd(&r.call, -1)
	r.call = fd
	d.restart(i)
	return nil, nil
}

func (d *device) setVringErr(m *msg) ([]byte, error) {
	i, fd, err := d.ringFd(m)
	if err != nil {
		return nil, err
	}
	r := &d.rings[i]
	closeFd(&r.err, -1)
	r.err = fd
	return nil, nil
}

func (d *device) netSetMTU(m *msg) ([]byte, error) {
	v, err := m.u64()
	if err != nil {
		return nil, err
	}
	if v < 68 || v > 65535 {
		return nil, fmt.Errorf("guest MTU %d out of range", v)
	}
	d.p.mtu.Store(uint32(v))
	return nil, nil
}

// setLogBase maps the dirty-page log the front end shares for a live
// migration (payload: size and offset; the fd comes with it) and moves
// the rings to it. Its reply has no payload.
func (d *device) setLogBase(m *msg) ([]byte, error) {
	if d.proto&(1<<pfLogShmfd) == 0 {
		return nil, errors.New("SET_LOG_BASE without the LOG_SHMFD protocol feature")
	}
	if len(m.payload) < 16 {
		return nil, fmt.Errorf("%w: SET_LOG_BASE wants 16 bytes, got %d", errPayload, len(m.payload))
	}
	fd := m.takeFd()
	if fd < 0 {
		return nil, errors.New("SET_LOG_BASE carries no fd")
	}
	l, err := mapLog(fd, binary.LittleEndian.Uint64(m.payload), binary.LittleEndian.Uint64(m.payload[8:]))
	if err != nil {
		return nil, err
	}
	old := d.dlog
	d.stopAll()
	d.dlog = l
	d.restartAll()
	old.unmap()
	return []byte{}, nil
}

// setLogFd takes the eventfd a front end may pass for log updates; the
// back end has none to signal (it marks the log as it writes).
func (d *device) setLogFd(m *msg) ([]byte, error) {
	if fd := m.takeFd(); fd >= 0 {
		unix.Close(fd)
	}
	return nil, nil
}

// stop takes ring i off the data path, waits for a batch in flight to
// leave it, and keeps its last avail index as the base for a restart.
func (d *device) stop(i int) {
	old := d.p.rings[i].Swap(nil)
	if old == nil {
		return
	}
	d.p.quiesce(i)
	// The used entries a reader left for CompleteReads go out before
	// the front end takes the ring back.
	(*old).complete()
	d.rings[i].base = (*old).state()
	d.p.signal()
}

// restart rebuilds ring i from its configuration if it can run.
func (d *device) restart(i int) {
	d.stop(i)
	r := &d.rings[i]
	if !r.kicked || !r.enabled || !r.addrSet || d.mem == nil {
		return
	}
	r.conf.features = d.features
	r.conf.lazy = isTx(i)
	var q queue
	var err error
	if d.features&(1<<fRingPacked) != 0 {
		q, err = newPackedRing(d.mem, r.conf, r.base, r.call)
	} else {
		q, err = newVring(d.mem, r.conf, uint16(r.base), r.call)
	}
	if err != nil {
		d.p.log.Warn("vhost-user ring not started", "ring", i, "err", err)
		return
	}
	var dlog *dirtyLog
	if d.features&(1<<fLogAll) != 0 {
		dlog = d.dlog
	}
	q.attach(&d.p.mtu, &d.p.drops, dlog)
	d.p.rings[i].Store(&q)
	d.p.usePair(i / 2)
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
	d.dlog.unmap()
	d.dlog = nil
	d.p.mtu.Store(0)
}
