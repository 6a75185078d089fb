package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/sys/unix"
)

// Front-end request codes (QEMU docs/interop/vhost-user.rst, "Front-end
// message types").
const (
	reqGetFeatures         = 1
	reqSetFeatures         = 2
	reqSetOwner            = 3
	reqResetOwner          = 4
	reqSetMemTable         = 5
	reqSetLogBase          = 6
	reqSetLogFd            = 7
	reqSetVringNum         = 8
	reqSetVringAddr        = 9
	reqSetVringBase        = 10
	reqGetVringBase        = 11
	reqSetVringKick        = 12
	reqSetVringCall        = 13
	reqSetVringErr         = 14
	reqGetProtocolFeatures = 15
	reqSetProtocolFeatures = 16
	reqGetQueueNum         = 17
	reqSetVringEnable      = 18
	reqNetSetMTU           = 20
	reqResetDevice         = 34
	reqGetMaxMemSlots      = 36
	reqAddMemReg           = 37
	reqRemMemReg           = 38
)

// Header flag bits.
const (
	flagVersion   = 0x1
	flagVersionM  = 0x3
	flagReply     = 0x4
	flagNeedReply = 0x8
)

const (
	hdrSize = 12
	// maxPayload bounds a message body; the largest legal one is the
	// memory table (8 + 8*32 bytes). Anything bigger is a protocol error.
	maxPayload = 4096
	// maxFds is the most descriptors one message may carry.
	maxFds = 8
	// maxRegions is the most memory regions a table may hold.
	maxRegions = 8
	// maxMemSlots is what GET_MAX_MEM_SLOTS reports.
	maxMemSlots = 8
	regionSize  = 32
)

// Errors of the message codec.
var (
	errShortHeader = errors.New("vhost-user: short message header")
	errVersion     = errors.New("vhost-user: unsupported message version")
	errTooBig      = errors.New("vhost-user: message payload too large")
	errTooManyFds  = errors.New("vhost-user: too many file descriptors")
	errPayload     = errors.New("vhost-user: malformed payload")
)

// msg is one decoded front-end message. fds are owned by the message until
// taken by the handler; closeFds closes the rest.
type msg struct {
	req     uint32
	flags   uint32
	payload []byte
	fds     []int
}

// decodeHeader parses the 12-byte header and checks its version and size.
func decodeHeader(b []byte) (req, flags, size uint32, err error) {
	if len(b) < hdrSize {
		return 0, 0, 0, errShortHeader
	}
	req = binary.LittleEndian.Uint32(b[0:])
	flags = binary.LittleEndian.Uint32(b[4:])
	size = binary.LittleEndian.Uint32(b[8:])
	if flags&flagVersionM != flagVersion {
		return 0, 0, 0, fmt.Errorf("%w: flags %#x", errVersion, flags)
	}
	if size > maxPayload {
		return 0, 0, 0, fmt.Errorf("%w: %d bytes", errTooBig, size)
	}
	return req, flags, size, nil
}

// encodeReply builds a reply to req with payload.
func encodeReply(dst []byte, req uint32, payload []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst[:0], req)
	dst = binary.LittleEndian.AppendUint32(dst, flagVersion|flagReply)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(payload)))
	return append(dst, payload...)
}

// u64 decodes a u64 payload.
func (m *msg) u64() (uint64, error) {
	if len(m.payload) < 8 {
		return 0, fmt.Errorf("%w: request %d wants 8 bytes, got %d", errPayload, m.req, len(m.payload))
	}
	return binary.LittleEndian.Uint64(m.payload), nil
}

// vringState is the payload of SET_VRING_NUM/BASE, GET_VRING_BASE and
// SET_VRING_ENABLE.
type vringState struct{ index, num uint32 }

func (m *msg) state() (vringState, error) {
	if len(m.payload) < 8 {
		return vringState{}, fmt.Errorf("%w: request %d wants a vring state, got %d bytes", errPayload, m.req, len(m.payload))
	}
	return vringState{binary.LittleEndian.Uint32(m.payload), binary.LittleEndian.Uint32(m.payload[4:])}, nil
}

// vringAddr is the payload of SET_VRING_ADDR; desc, used and avail are
// front-end virtual addresses.
type vringAddr struct {
	index, flags          uint32
	desc, used, avail, lg uint64
}

func (m *msg) addr() (vringAddr, error) {
	p := m.payload
	if len(p) < 40 {
		return vringAddr{}, fmt.Errorf("%w: vring address wants 40 bytes, got %d", errPayload, len(p))
	}
	le := binary.LittleEndian
	return vringAddr{le.Uint32(p), le.Uint32(p[4:]), le.Uint64(p[8:]), le.Uint64(p[16:]), le.Uint64(p[24:]), le.Uint64(p[32:])}, nil
}

// region is one memory region descriptor.
type region struct {
	gpa, size, uaddr, offset uint64
}

func decodeRegion(p []byte) region {
	le := binary.LittleEndian
	return region{le.Uint64(p), le.Uint64(p[8:]), le.Uint64(p[16:]), le.Uint64(p[24:])}
}

// memTable decodes SET_MEM_TABLE: the region count must match the fds.
func (m *msg) memTable() ([]region, error) {
	p := m.payload
	if len(p) < 8 {
		return nil, fmt.Errorf("%w: memory table of %d bytes", errPayload, len(p))
	}
	n := binary.LittleEndian.Uint32(p)
	if n > maxRegions {
		return nil, fmt.Errorf("%w: %d memory regions (max %d)", errPayload, n, maxRegions)
	}
	if len(p) < 8+int(n)*regionSize {
		return nil, fmt.Errorf("%w: memory table of %d regions in %d bytes", errPayload, n, len(p))
	}
	if int(n) != len(m.fds) {
		return nil, fmt.Errorf("%w: %d memory regions but %d fds", errPayload, n, len(m.fds))
	}
	rs := make([]region, n)
	for i := range rs {
		rs[i] = decodeRegion(p[8+i*regionSize:])
	}
	return rs, nil
}

// memReg decodes ADD_MEM_REG/REM_MEM_REG (u64 padding, one region).
func (m *msg) memReg() (region, error) {
	if len(m.payload) < 8+regionSize {
		return region{}, fmt.Errorf("%w: single region wants %d bytes, got %d", errPayload, 8+regionSize, len(m.payload))
	}
	return decodeRegion(m.payload[8:]), nil
}

// takeFd removes and returns the message's first fd, or -1.
func (m *msg) takeFd() int {
	if len(m.fds) == 0 {
		return -1
	}
	fd := m.fds[0]
	m.fds = m.fds[1:]
	return fd
}

// closeFds closes every fd not taken.
func (m *msg) closeFds() {
	for _, fd := range m.fds {
		unix.Close(fd)
	}
	m.fds = nil
}

// parseRights extracts the fds of SCM_RIGHTS control messages. Every fd
// received is returned (so the caller can close them) even on error.
func parseRights(oob []byte) ([]int, error) {
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("vhost-user: control message: %w", err)
	}
	var fds []int
	for i := range cmsgs {
		if cmsgs[i].Header.Level != unix.SOL_SOCKET || cmsgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&cmsgs[i])
		if err != nil {
			return fds, fmt.Errorf("vhost-user: SCM_RIGHTS: %w", err)
		}
		fds = append(fds, got...)
	}
	if len(fds) > maxFds {
		return fds, fmt.Errorf("%w: %d", errTooManyFds, len(fds))
	}
	return fds, nil
}

// conn reads and writes messages on a connected unix stream socket. The
// socket is on the Go runtime's poller: a goroutine waiting for the next
// message holds no OS thread, and closing the socket wakes it.
type conn struct {
	uc  *net.UnixConn
	hdr [hdrSize]byte
	buf [maxPayload]byte
	oob []byte
	out []byte
}

func newConn(uc *net.UnixConn) *conn {
	return &conn{uc: uc, oob: make([]byte, unix.CmsgSpace(maxFds*4)), out: make([]byte, 0, hdrSize+maxPayload)}
}

// read returns the next message. The header and its fds come in one
// recvmsg; the payload may need more reads. A message whose header is
// invalid cannot be resynchronised and ends the connection.
func (c *conn) read() (*msg, error) {
	n, oobn, rflags, _, err := c.uc.ReadMsgUnix(c.hdr[:], c.oob)
	var fds []int
	if oobn > 0 {
		var perr error
		fds, perr = parseRights(c.oob[:oobn])
		if perr != nil {
			closeAll(fds)
			return nil, perr
		}
	}
	if errors.Is(err, io.EOF) {
		closeAll(fds)
		return nil, errClosed
	}
	if err != nil {
		closeAll(fds)
		return nil, fmt.Errorf("vhost-user: recvmsg: %w", err)
	}
	if rflags&unix.MSG_CTRUNC != 0 {
		// More fds than the 8 the protocol allows: the kernel dropped
		// the rest, so the message cannot be honoured.
		closeAll(fds)
		return nil, fmt.Errorf("%w: control data truncated", errTooManyFds)
	}
	if err := c.readFull(c.hdr[n:]); err != nil {
		closeAll(fds)
		return nil, err
	}
	req, flags, size, err := decodeHeader(c.hdr[:])
	if err != nil {
		closeAll(fds)
		return nil, err
	}
	if err := c.readFull(c.buf[:size]); err != nil {
		closeAll(fds)
		return nil, err
	}
	return &msg{req: req, flags: flags, payload: c.buf[:size], fds: fds}, nil
}

var errClosed = errors.New("vhost-user: front end closed the connection")

func (c *conn) readFull(b []byte) error {
	if _, err := io.ReadFull(c.uc, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return errClosed
		}
		return fmt.Errorf("vhost-user: read: %w", err)
	}
	return nil
}

// reply sends a reply to req.
func (c *conn) reply(req uint32, payload []byte) error {
	c.out = encodeReply(c.out, req, payload)
	if _, err := c.uc.Write(c.out); err != nil {
		return fmt.Errorf("vhost-user: reply to request %d: %w", req, err)
	}
	return nil
}

func (c *conn) replyU64(req uint32, v uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	return c.reply(req, b[:])
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
