package vhosttest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Front-end request codes (QEMU docs/interop/vhost-user.rst, "Front-end
// message types").
const (
	reqGetFeatures         = 1
	reqSetFeatures         = 2
	reqSetOwner            = 3
	reqSetMemTable         = 5
	reqSetVringNum         = 8
	reqSetVringAddr        = 9
	reqSetVringBase        = 10
	reqSetVringKick        = 12
	reqSetVringCall        = 13
	reqGetProtocolFeatures = 15
	reqSetProtocolFeatures = 16
	reqSetVringEnable      = 18
)

// Message header flags: version 1, reply, and "ack this request".
const (
	hdrVersion   = 0x1
	hdrVersionM  = 0x3
	hdrReply     = 0x4
	hdrNeedReply = 0x8
	hdrLen       = 12
)

// Feature bits: VIRTIO_F_VERSION_1, VHOST_USER_F_PROTOCOL_FEATURES and
// the protocol feature REPLY_ACK.
const (
	featVersion1         = 32
	featProtocolFeatures = 30
	protoReplyAck        = 3
)

// Guest memory of a FrontEnd: one memfd region holding the two split
// rings (descriptor table, then the available and used rings on the
// next page) and the receive buffers the front end posts.
const (
	queueSize  = 256
	ringStride = 0x2000 // per ring
	availOff   = 0x1000 // 4 + 2*256 + 2 bytes
	usedOff    = 0x1400 // 4 + 8*256 + 2 bytes, ends before ringStride
	bufOff     = 2 * ringStride
	bufSize    = 2048
	rxBufs     = 4
	memSize    = bufOff + rxBufs*bufSize
	// guestBase is the guest physical address of the region.
	guestBase = 0x100000
	// descWrite is VIRTQ_DESC_F_WRITE: the device writes the buffer.
	descWrite = 2
)

// replyTimeout bounds each wait for the back end's reply.
const replyTimeout = 5 * time.Second

// FrontEnd is a minimal vhost-user front end holding a virtio-net
// device up on a back end's socket, as a VM's QEMU does, with no guest
// behind it: it negotiates VIRTIO_F_VERSION_1 and the protocol's
// REPLY_ACK, gives the back end 24 KiB of guest memory (a memfd), starts
// queue pair 0 (two split rings of 256 entries, each with its kick and
// call eventfds) and posts 4 receive buffers of 2 KiB on the receive
// ring. It holds one socket, one memfd and four eventfds until Close.
type FrontEnd struct {
	c          *net.UnixConn
	timeout    time.Duration
	mfd        int
	mem        []byte
	kick, call [2]int
}

// Dial connects to the server-mode vhost-user socket at path and brings
// the device up; it returns once the back end has acknowledged every
// step, so the back end's rings run. Each wait for a reply is bounded (5
// s): a back end that does not answer makes Dial fail, not hang.
func Dial(path string) (*FrontEnd, error) { return dial(path, replyTimeout) }

func dial(path string, timeout time.Duration) (*FrontEnd, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("vhost-user front end: %w", err)
	}
	f := &FrontEnd{c: c, timeout: timeout, mfd: -1, kick: [2]int{-1, -1}, call: [2]int{-1, -1}}
	if err := f.setup(); err != nil {
		f.Close()
		return nil, fmt.Errorf("vhost-user front end on %s: %w", path, err)
	}
	return f, nil
}

// Close disconnects from the back end and releases the guest memory and
// the eventfds. It returns the socket's close error; call it once.
func (f *FrontEnd) Close() error {
	err := f.c.Close()
	if f.mem != nil {
		unix.Munmap(f.mem)
		f.mem = nil
	}
	for _, fd := range []*int{&f.mfd, &f.kick[0], &f.kick[1], &f.call[0], &f.call[1]} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
	return err
}

// setup does what QEMU does to start a virtio-net device on a vhost-user
// back end, one queue pair.
func (f *FrontEnd) setup() error {
	if err := f.allocate(); err != nil {
		return err
	}
	offered, err := f.get(reqGetFeatures)
	if err != nil {
		return err
	}
	const want = 1<<featVersion1 | 1<<featProtocolFeatures
	if offered&want != want {
		return fmt.Errorf("back end offers features %#x, without VERSION_1 or PROTOCOL_FEATURES", offered)
	}
	proto, err := f.get(reqGetProtocolFeatures)
	if err != nil {
		return err
	}
	if proto&(1<<protoReplyAck) == 0 {
		return fmt.Errorf("back end offers protocol features %#x, without REPLY_ACK", proto)
	}
	// Every request from here on is acknowledged.
	if err := f.send(reqSetProtocolFeatures, 0, u64(1<<protoReplyAck)); err != nil {
		return err
	}
	type step struct {
		req     uint32
		payload []byte
		fds     []int
	}
	steps := []step{
		{reqSetOwner, nil, nil},
		{reqSetFeatures, u64(want), nil},
		{reqSetMemTable, f.memTable(), []int{f.mfd}},
	}
	for i := range 2 {
		base := uint64(i * ringStride)
		addr := binary.LittleEndian.AppendUint32(nil, uint32(i))
		addr = binary.LittleEndian.AppendUint32(addr, 0) // flags: no dirty log
		ua := f.uaddr()
		for _, v := range []uint64{ua + base, ua + base + usedOff, ua + base + availOff, 0} {
			addr = binary.LittleEndian.AppendUint64(addr, v)
		}
		steps = append(steps, []step{
			{reqSetVringNum, ringState(i, queueSize), nil},
			{reqSetVringBase, ringState(i, 0), nil},
			{reqSetVringAddr, addr, nil},
			{reqSetVringCall, u64(uint64(i)), []int{f.call[i]}},
			{reqSetVringKick, u64(uint64(i)), []int{f.kick[i]}},
			{reqSetVringEnable, ringState(i, 1), nil},
		}...)
	}
	for _, s := range steps {
		if err := f.send(s.req, hdrNeedReply, s.payload, s.fds...); err != nil {
			return err
		}
		ack, err := f.reply(s.req)
		if err != nil {
			return err
		}
		if ack != 0 {
			return fmt.Errorf("back end refused request %d (status %d)", s.req, ack)
		}
	}
	return nil
}

// allocate makes the guest memory and the rings' eventfds, and posts the
// receive buffers: descriptor i of ring 0 is buffer i, all available.
func (f *FrontEnd) allocate() error {
	var err error
	if f.mfd, err = unix.MemfdCreate("vhosttest-guest", unix.MFD_CLOEXEC); err != nil {
		return fmt.Errorf("memfd: %w", err)
	}
	if err := unix.Ftruncate(f.mfd, memSize); err != nil {
		return fmt.Errorf("memfd size: %w", err)
	}
	if f.mem, err = unix.Mmap(f.mfd, 0, memSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return fmt.Errorf("mmap guest memory: %w", err)
	}
	for i := range 2 {
		if f.kick[i], err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
			return fmt.Errorf("kick eventfd: %w", err)
		}
		if f.call[i], err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
			return fmt.Errorf("call eventfd: %w", err)
		}
	}
	le := binary.LittleEndian
	for i := range rxBufs {
		d := f.mem[i*16:]
		le.PutUint64(d, guestBase+bufOff+uint64(i*bufSize))
		le.PutUint32(d[8:], bufSize)
		le.PutUint16(d[12:], descWrite)
		le.PutUint16(f.mem[availOff+4+2*i:], uint16(i))
	}
	le.PutUint16(f.mem[availOff+2:], rxBufs) // avail idx
	return nil
}

// uaddr is the front end's address of its guest memory, which
// SET_VRING_ADDR's ring addresses are relative to.
func (f *FrontEnd) uaddr() uint64 { return uint64(uintptr(unsafe.Pointer(&f.mem[0]))) }

// memTable is SET_MEM_TABLE's payload: one region, the whole memfd.
func (f *FrontEnd) memTable() []byte {
	b := binary.LittleEndian.AppendUint32(nil, 1)
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, v := range []uint64{guestBase, memSize, f.uaddr(), 0} {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}

// send writes one request with its fds.
func (f *FrontEnd) send(req, flags uint32, payload []byte, fds ...int) error {
	b := binary.LittleEndian.AppendUint32(nil, req)
	b = binary.LittleEndian.AppendUint32(b, hdrVersion|flags)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
	b = append(b, payload...)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := f.c.SetWriteDeadline(time.Now().Add(f.timeout)); err != nil {
		return fmt.Errorf("request %d: %w", req, err)
	}
	if _, _, err := f.c.WriteMsgUnix(b, oob, nil); err != nil {
		if hungUp(err) {
			return fmt.Errorf("request %d: back end closed the connection: %w", req, err)
		}
		return fmt.Errorf("request %d: %w", req, err)
	}
	return nil
}

// get sends request req, which has no payload, and returns its u64
// reply.
func (f *FrontEnd) get(req uint32) (uint64, error) {
	if err := f.send(req, 0, nil); err != nil {
		return 0, err
	}
	return f.reply(req)
}

// reply reads the back end's u64 reply to req, waiting at most
// f.timeout.
func (f *FrontEnd) reply(req uint32) (uint64, error) {
	if err := f.c.SetReadDeadline(time.Now().Add(f.timeout)); err != nil {
		return 0, fmt.Errorf("reply to request %d: %w", req, err)
	}
	var h [hdrLen + 8]byte
	if _, err := io.ReadFull(f.c, h[:hdrLen]); err != nil {
		if hungUp(err) {
			return 0, fmt.Errorf("reply to request %d: back end closed the connection: %w", req, err)
		}
		return 0, fmt.Errorf("reply to request %d: %w", req, err)
	}
	le := binary.LittleEndian
	got, flags, size := le.Uint32(h[0:]), le.Uint32(h[4:]), le.Uint32(h[8:])
	if got != req || flags&hdrVersionM != hdrVersion || flags&hdrReply == 0 || size != 8 {
		return 0, fmt.Errorf("reply to request %d: header request %d, flags %#x, %d bytes; want a u64 reply", req, got, flags, size)
	}
	if _, err := io.ReadFull(f.c, h[hdrLen:]); err != nil {
		return 0, fmt.Errorf("reply to request %d: %w", req, err)
	}
	return le.Uint64(h[hdrLen:]), nil
}

// hungUp reports whether err says the back end closed the connection.
func hungUp(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE)
}

func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// ringState is the payload of SET_VRING_NUM, SET_VRING_BASE and
// SET_VRING_ENABLE.
func ringState(i int, num uint32) []byte {
	return binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, uint32(i)), num)
}
