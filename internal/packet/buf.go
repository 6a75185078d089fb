// Package packet holds packet buffers, their pool, zero-copy header views
// (Ethernet, ARP, IPv4, IPv6, ICMP, TCP, UDP, VXLAN), checksums and software
// segmentation of TSO frames.
package packet

import "net/netip"

const (
	// Headroom is the space kept in front of every frame so that an outer
	// VXLAN header (at most 14+40+8+8 bytes) can be prepended in place.
	Headroom = 128
	// MaxFrame is the largest frame a buffer holds: a 64 KiB TSO super-frame
	// plus its Ethernet header.
	MaxFrame = 65536 + 14
	// BufSize is the size of a buffer's backing array.
	BufSize = Headroom + MaxFrame
)

// VNetHdr is the offload metadata of a frame, the fields of struct
// virtio_net_hdr (see the virtio specification, "Device Operation").
type VNetHdr struct {
	Flags      uint8  // VIRTIO_NET_HDR_F_NEEDS_CSUM (1), _DATA_VALID (2)
	GSOType    uint8  // VIRTIO_NET_HDR_GSO_NONE (0), TCPV4 (1), UDP (3), TCPV6 (4), UDP_L4 (5), ECN (0x80)
	HdrLen     uint16 // length of the headers to copy in each segment
	GSOSize    uint16 // payload bytes per segment
	CsumStart  uint16 // where checksumming starts, from the frame start
	CsumOffset uint16 // where the checksum goes, from CsumStart
}

// Offload flags and GSO types of VNetHdr.
const (
	VNetFlagNeedsCsum = 1
	VNetFlagDataValid = 2

	GSONone  = 0
	GSOTCPv4 = 1
	GSOUDP   = 3
	GSOTCPv6 = 4
	GSOUDPL4 = 5
	GSOECN   = 0x80
)

// Buf is one frame in a preallocated buffer. The frame occupies
// b[off:off+n]; the bytes before off are headroom for encapsulation.
// A Buf belongs to one worker at a time and is never shared.
type Buf struct {
	b   []byte
	off int
	n   int

	// VNet is the frame's offload metadata (zero for a plain frame).
	VNet VNetHdr
	// InPort is the index of the port the frame came from.
	InPort uint32
	// Peer is the remote underlay endpoint of a VXLAN datagram: its
	// source on receive, its destination on send.
	Peer netip.AddrPort
	// Owner is the index of the pool (the packet worker) the buffer
	// belongs to, for those who release it elsewhere. Reset keeps it.
	Owner int
}

// NewBuf allocates a buffer. Pools call it once per buffer at start.
func NewBuf() *Buf {
	return &Buf{b: make([]byte, BufSize), off: Headroom}
}

// Reset empties the frame and its metadata, restoring the headroom.
func (p *Buf) Reset() {
	p.off = Headroom
	p.n = 0
	p.VNet = VNetHdr{}
	p.InPort = 0
	p.Peer = netip.AddrPort{}
}

// Bytes returns the frame.
func (p *Buf) Bytes() []byte { return p.b[p.off : p.off+p.n] }

// Len returns the frame length.
func (p *Buf) Len() int { return p.n }

// Space returns the writable area from the frame start to the end of the
// buffer, for reading a frame into it; call SetLen afterwards.
func (p *Buf) Space() []byte { return p.b[p.off:] }

// SetLen sets the frame length, clamped to the buffer.
func (p *Buf) SetLen(n int) {
	if n < 0 {
		n = 0
	}
	if max := len(p.b) - p.off; n > max {
		n = max
	}
	p.n = n
}

// Prepend grows the frame by n bytes at its front and returns the new
// front bytes. It returns nil if the headroom is too small.
func (p *Buf) Prepend(n int) []byte {
	if n < 0 || n > p.off {
		return nil
	}
	p.off -= n
	p.n += n
	return p.b[p.off : p.off+n]
}

// TrimFront drops n bytes from the front of the frame (decapsulation).
// It returns false if the frame is shorter than n.
func (p *Buf) TrimFront(n int) bool {
	if n < 0 || n > p.n {
		return false
	}
	p.off += n
	p.n -= n
	return true
}

// Pool is a free list of buffers owned by one worker. It is not safe for
// concurrent use; each worker has its own.
type Pool struct {
	free []*Buf
}

// NewPool preallocates n buffers.
func NewPool(n int) *Pool {
	p := &Pool{free: make([]*Buf, 0, n)}
	for i := 0; i < n; i++ {
		p.free = append(p.free, NewBuf())
	}
	return p
}

// Get returns a reset buffer, or nil if the pool is empty.
func (p *Pool) Get() *Buf {
	n := len(p.free)
	if n == 0 {
		return nil
	}
	b := p.free[n-1]
	p.free = p.free[:n-1]
	b.Reset()
	return b
}

// Put returns a buffer to the pool.
func (p *Pool) Put(b *Buf) {
	if b != nil && len(p.free) < cap(p.free) {
		p.free = append(p.free, b)
	}
}

// Available returns the number of free buffers.
func (p *Pool) Available() int { return len(p.free) }
