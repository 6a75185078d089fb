// Package udp implements the VXLAN underlay as a port.Port on a kernel UDP
// socket bound to the VTEP address, moving datagrams in batches with
// recvmmsg and sendmmsg. When the kernel offers them, UDP GRO (receive:
// the kernel hands over runs of same-flow datagrams as one, which
// ReadBatch splits again) and UDP GSO (send: a run of equal-sized
// datagrams to one peer leaves as one message) cut the per-datagram
// kernel work; the datagrams on the wire are the same either way.
//
// A Buf read holds one UDP payload (VXLAN header + inner frame) and its
// source in Buf.Peer; a Buf written is sent as one datagram to Buf.Peer.
//
// Multicast: a socket bound to a unicast address never receives datagrams
// sent to a group, so JoinGroup opens one extra socket bound to the group
// address and port, joined on the interface that holds the VTEP address
// (the kernel then sends the IGMP/MLD reports). Fd returns an epoll
// descriptor that covers every socket of the port.
package udp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port"
)

// Defaults for Options.
const (
	DefaultBatch        = 64
	DefaultSocketBuffer = 8 << 20
	// DefaultMulticastTTL is the TTL (IPv4) or hop limit (IPv6) of
	// datagrams sent to a multicast group. 1 would confine the underlay
	// to one link; 8 lets multicast cross a few routers of a routed
	// underlay while still bounding its scope.
	DefaultMulticastTTL = 8
)

// Options configure a UDP port. The zero value selects the defaults.
type Options struct {
	// Batch is the most datagrams one recvmmsg or sendmmsg moves
	// (default 64, at most 1024).
	Batch int
	// RecvBuffer and SendBuffer size the socket buffers (default 8 MiB;
	// SO_RCVBUFFORCE/SO_SNDBUFFORCE are tried first, then the limited
	// SO_RCVBUF/SO_SNDBUF).
	RecvBuffer, SendBuffer int
	// MulticastTTL is the TTL or hop limit of multicast datagrams
	// (default DefaultMulticastTTL).
	MulticastTTL int
	// NoGRO keeps UDP GRO off.
	NoGRO bool
	// NoGSO keeps UDP GSO off: every datagram is its own message.
	NoGSO bool
}

// sockaddr is large enough for both sockaddr_in and sockaddr_in6.
type sockaddr = unix.RawSockaddrInet6

const (
	cmsgSpace = 32 // room for one UDP_GRO or UDP_SEGMENT cmsg (24 bytes)
	maxBatch  = 1024
	// maxGSOSegments and maxGSOBytes bound one GSO send (the kernel's
	// UDP_MAX_SEGMENTS is 64 on older kernels; an IPv4 datagram holds
	// at most 65507 bytes).
	maxGSOSegments = 64
	maxGSOBytes    = 65000
)

// pending is the rest of a GRO-coalesced datagram that did not fit in the
// caller's batch: segments of seg bytes from off on.
type pending struct {
	buf *packet.Buf
	seg int
	off int
}

// mmsgState is the per-message state that recvmmsg and sendmmsg both
// need: headers, iovecs, addresses and control buffers.
type mmsgState struct {
	msgs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []sockaddr
	ctrl  []byte
}

// alloc sizes the state for batches of n messages.
func (m *mmsgState) alloc(n int) {
	m.msgs = make([]unix.Mmsghdr, n)
	m.iovs = make([]unix.Iovec, n)
	m.names = make([]sockaddr, n)
	m.ctrl = make([]byte, n*cmsgSpace)
}

// rxState is the preallocated recvmmsg state; touched by the reader only.
type rxState struct {
	mmsgState
	gso  []int
	seg  []int // segments per message
	keep []int // segments delivered in this batch
	dst  []int // first slot of each message's segments

	spare []*packet.Buf // free buffers for pending remainders
	pend  []pending
	head  int
}

// txState is the preallocated sendmmsg state; touched by the writer only.
type txState struct {
	mmsgState
	segs  []int          // datagrams in each message (>1: a GSO message)
	first []int          // first iovec of each message
	skip  []int          // unsendable buffers right before each message
	one   []unix.Mmsghdr // fallback: a GSO message's segments one by one

	gsoSent uint64 // GSO messages sent, for tests
}

// mcastSock is a socket bound to a joined multicast group.
type mcastSock struct {
	addr netip.Addr
	fd   int
}

// Port is a VXLAN underlay socket. ReadBatch and WriteBatch may run in
// two different goroutines (one reader, one writer); JoinGroup,
// LeaveGroup and the accessors may be called from any goroutine.
type Port struct {
	fd      int
	epfd    int
	local   netip.AddrPort
	v6      bool
	ifindex int
	gro     bool
	gso     atomic.Bool
	opts    Options

	rx rxState
	tx txState
	// refused counts the datagrams WriteBatch refused; written by the
	// writer, read by anyone.
	refused atomic.Uint64

	mu      sync.Mutex
	joined  map[netip.Addr]*mcastSock
	retired map[netip.Addr]*mcastSock // left groups; closed by Close
	active  atomic.Pointer[[]int]     // fds of joined groups, read by ReadBatch
	closed  bool
}

// Listen opens the underlay socket bound to local:port (local's family
// selects IPv4 or IPv6; port 0 picks a free port, see LocalAddr). The
// sockets live in the network namespace of the calling thread; JoinGroup
// must run in that namespace too.
func Listen(local netip.Addr, port uint16, opts Options) (*Port, error) {
	local = local.Unmap()
	if !local.IsValid() || local.IsUnspecified() || local.IsMulticast() {
		return nil, fmt.Errorf("udp: listen: invalid local address %v", local)
	}
	if opts.Batch <= 0 {
		opts.Batch = DefaultBatch
	}
	if opts.Batch > maxBatch {
		opts.Batch = maxBatch
	}
	if opts.RecvBuffer <= 0 {
		opts.RecvBuffer = DefaultSocketBuffer
	}
	if opts.SendBuffer <= 0 {
		opts.SendBuffer = DefaultSocketBuffer
	}
	if opts.MulticastTTL <= 0 {
		opts.MulticastTTL = DefaultMulticastTTL
	}
	if opts.MulticastTTL > 255 {
		return nil, fmt.Errorf("udp: listen: invalid multicast TTL %d", opts.MulticastTTL)
	}
	p := &Port{
		fd: -1, epfd: -1,
		local:   netip.AddrPortFrom(local, port),
		v6:      local.Is6(),
		opts:    opts,
		joined:  map[netip.Addr]*mcastSock{},
		retired: map[netip.Addr]*mcastSock{},
	}
	if err := p.open(); err != nil {
		p.Close()
		return nil, fmt.Errorf("udp: listen %v: %w", p.local, err)
	}
	p.allocRx()
	p.allocTx()
	return p, nil
}

func (p *Port) open() error {
	idx, err := interfaceIndex(p.local.Addr())
	if err == nil {
		p.ifindex = idx
	}
	fd, err := p.socket()
	if err != nil {
		return err
	}
	p.fd = fd
	if err := p.bind(fd, p.local); err != nil {
		return err
	}
	if p.local.Port() == 0 {
		// Learn the port the kernel picked.
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return fmt.Errorf("getsockname: %w", err)
		}
		switch sa := sa.(type) {
		case *unix.SockaddrInet4:
			p.local = netip.AddrPortFrom(p.local.Addr(), uint16(sa.Port))
		case *unix.SockaddrInet6:
			p.local = netip.AddrPortFrom(p.local.Addr(), uint16(sa.Port))
		}
	}
	if p.v6 {
		if p.ifindex != 0 {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, p.ifindex); err != nil {
				return fmt.Errorf("IPV6_MULTICAST_IF: %w", err)
			}
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, 0); err != nil {
			return fmt.Errorf("IPV6_MULTICAST_LOOP: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, p.opts.MulticastTTL); err != nil {
			return fmt.Errorf("IPV6_MULTICAST_HOPS: %w", err)
		}
	} else {
		mreq := &unix.IPMreqn{Address: p.local.Addr().As4(), Ifindex: int32(p.ifindex)}
		if err := unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, mreq); err != nil {
			return fmt.Errorf("IP_MULTICAST_IF: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 0); err != nil {
			return fmt.Errorf("IP_MULTICAST_LOOP: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, p.opts.MulticastTTL); err != nil {
			return fmt.Errorf("IP_MULTICAST_TTL: %w", err)
		}
	}
	if !p.opts.NoGRO {
		p.gro = unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
	}
	if !p.opts.NoGSO {
		// Probe: a zero segment size is accepted where GSO exists.
		p.gso.Store(unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT, 0) == nil)
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll_create1: %w", err)
	}
	p.epfd = epfd
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// socket creates a non-blocking UDP socket of the port's family with
// SO_REUSEADDR and large buffers.
func (p *Port) socket() (int, error) {
	family := unix.AF_INET
	if p.v6 {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("SO_REUSEADDR: %w", err)
	}
	if p.v6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("IPV6_V6ONLY: %w", err)
		}
	}
	setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, p.opts.RecvBuffer)
	setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, p.opts.SendBuffer)
	return fd, nil
}

// setBuffer sets a socket buffer size, beyond the sysctl limit when the
// process may (CAP_NET_ADMIN); a failure leaves the kernel default.
func setBuffer(fd, force, plain, size int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, size)
	}
}

func (p *Port) bind(fd int, ap netip.AddrPort) error {
	var sa unix.Sockaddr
	if p.v6 {
		s := &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
		if a := ap.Addr(); a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() {
			s.ZoneId = uint32(p.ifindex)
		}
		sa = s
	} else {
		sa = &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fmt.Errorf("bind %v: %w", ap, err)
	}
	return nil
}

func (p *Port) allocRx() {
	n := p.opts.Batch
	r := &p.rx
	r.alloc(n)
	r.gso = make([]int, n)
	r.seg = make([]int, n)
	r.keep = make([]int, n)
	r.dst = make([]int, n)
	if p.gro {
		// One spare per message: at most every message of one
		// recvmmsg leaves a remainder behind.
		r.spare = make([]*packet.Buf, n)
		for i := range r.spare {
			r.spare[i] = packet.NewBuf()
		}
		r.pend = make([]pending, 0, n)
	}
}

func (p *Port) allocTx() {
	n := p.opts.Batch
	t := &p.tx
	t.alloc(n)
	t.segs = make([]int, n)
	t.first = make([]int, n)
	t.skip = make([]int, n)
	t.one = make([]unix.Mmsghdr, min(n, maxGSOSegments))
}

// Fd returns an epoll descriptor that is readable when any socket of the
// port (the unicast socket or a joined group's) has datagrams.
func (p *Port) Fd() int { return p.epfd }

// LocalAddr returns the bound VTEP address and port.
func (p *Port) LocalAddr() netip.AddrPort { return p.local }

// GRO reports whether UDP GRO is on: one read may then return a batch of
// segments the kernel coalesced, which ReadBatch splits.
func (p *Port) GRO() bool { return p.gro }

// Pending reports whether ReadBatch holds segments of a coalesced datagram
// that did not fit in the previous batch. It is only true after a full
// batch; the next ReadBatch returns them first.
func (p *Port) Pending() bool { return p.rx.head < len(p.rx.pend) }

// Close closes every socket of the port. The worker must have stopped
// using it.
func (p *Port) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	var errs []error
	for _, g := range p.joined {
		errs = append(errs, unix.Close(g.fd))
	}
	for _, g := range p.retired {
		errs = append(errs, unix.Close(g.fd))
	}
	p.active.Store(nil)
	if p.epfd >= 0 {
		errs = append(errs, unix.Close(p.epfd))
	}
	if p.fd >= 0 {
		errs = append(errs, unix.Close(p.fd))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("udp %v: close: %w", p.local, err)
	}
	return nil
}

// ReadBatch receives datagrams without blocking. Coalesced (GRO)
// datagrams are split into one Buf per segment. ReadBatch may reorder the
// buffer pointers within bufs. When it returns a full batch, segments may
// remain inside the port (see Pending): call it again before sleeping.
func (p *Port) ReadBatch(bufs []*packet.Buf) (int, error) {
	out := p.drainPending(bufs)
	if out == len(bufs) {
		return out, nil
	}
	n, err := p.recv(p.fd, bufs[out:])
	out += n
	if err != nil {
		return out, err
	}
	if g := p.active.Load(); g != nil {
		for _, fd := range *g {
			if out == len(bufs) {
				break
			}
			n, err := p.recv(fd, bufs[out:])
			out += n
			if err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

// drainPending hands out remainders of coalesced datagrams.
func (p *Port) drainPending(bufs []*packet.Buf) int {
	r := &p.rx
	out := 0
	for r.head < len(r.pend) && out < len(bufs) {
		e := &r.pend[r.head]
		data := e.buf.Bytes()
		end := min(e.off+e.seg, len(data))
		b := bufs[out]
		b.SetLen(copy(b.Space(), data[e.off:end]))
		b.Peer = e.buf.Peer
		out++
		e.off = end
		if e.off >= len(data) {
			r.spare = append(r.spare, e.buf)
			e.buf = nil
			r.head++
		}
	}
	if r.head == len(r.pend) {
		r.pend = r.pend[:0]
		r.head = 0
	}
	return out
}

// recv runs one recvmmsg on fd into bufs and splits coalesced datagrams.
func (p *Port) recv(fd int, bufs []*packet.Buf) (int, error) {
	r := &p.rx
	m := min(len(bufs), len(r.msgs))
	if m == 0 {
		return 0, nil
	}
	for i := 0; i < m; i++ {
		sp := bufs[i].Space()
		r.iovs[i].Base = &sp[0]
		r.iovs[i].SetLen(len(sp))
		h := &r.msgs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Namelen = uint32(unsafe.Sizeof(r.names[i]))
		h.Iov = &r.iovs[i]
		h.Iovlen = 1
		if p.gro {
			h.Control = &r.ctrl[i*cmsgSpace]
			h.SetControllen(cmsgSpace)
		} else {
			h.Control = nil
			h.Controllen = 0
		}
		h.Flags = 0
		r.msgs[i].Len = 0
	}
	var got uintptr
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(m), unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e == unix.EAGAIN {
			return 0, nil
		}
		if e != 0 {
			return 0, fmt.Errorf("udp %v: recvmmsg: %w", p.local, e)
		}
		got = n
		break
	}
	n := int(got)
	// Pass 1: decode each message, count its segments and place them.
	pos := 0
	for i := 0; i < n; i++ {
		b := bufs[i]
		h := &r.msgs[i].Hdr
		l := int(r.msgs[i].Len)
		r.seg[i], r.keep[i], r.dst[i], r.gso[i] = 0, 0, pos, 0
		if h.Flags&unix.MSG_TRUNC != 0 || l == 0 {
			continue // truncated or empty: drop
		}
		peer, ok := p.decodeName(&r.names[i], h.Namelen)
		if !ok {
			continue
		}
		b.SetLen(l)
		b.Peer = peer
		k := 1
		if p.gro {
			if g := groSize(r.ctrl[i*cmsgSpace:], int(h.Controllen)); g > 0 && l > g {
				r.gso[i] = g
				k = (l + g - 1) / g
			}
		}
		r.seg[i] = k
		keep := min(k, len(bufs)-pos)
		if keep < k {
			p.stash(b, r.gso[i], keep)
		}
		r.keep[i] = keep
		pos += keep
	}
	// Pass 2, backwards: move each message to its first slot and copy
	// its other segments into the following (free) slots. Slots between
	// the unprocessed messages and the processed ones always hold free
	// buffers, so nothing is overwritten.
	for i := n - 1; i >= 0; i-- {
		keep := r.keep[i]
		if keep == 0 {
			continue
		}
		d := r.dst[i]
		if d != i {
			bufs[d], bufs[i] = bufs[i], bufs[d]
		}
		if r.seg[i] == 1 {
			continue
		}
		src := bufs[d]
		g := r.gso[i]
		l := src.Len()
		data := src.Space()[:l]
		for s := 1; s < keep; s++ {
			seg := data[s*g : min((s+1)*g, l)]
			b := bufs[d+s]
			b.SetLen(copy(b.Space(), seg))
			b.Peer = src.Peer
		}
		src.SetLen(g)
	}
	return pos, nil
}

// stash copies segments from first on of a coalesced datagram into a spare
// buffer that ReadBatch hands out next time.
func (p *Port) stash(b *packet.Buf, g, first int) {
	r := &p.rx
	if len(r.spare) == 0 {
		return // cannot happen: one spare per message
	}
	if g <= 0 {
		g = b.Len() // a plain datagram: one segment
	}
	sp := r.spare[len(r.spare)-1]
	r.spare = r.spare[:len(r.spare)-1]
	sp.Reset()
	sp.SetLen(copy(sp.Space(), b.Bytes()[first*g:]))
	sp.Peer = b.Peer
	r.pend = append(r.pend, pending{buf: sp, seg: g})
}

// groSize returns the UDP_GRO segment size in a control buffer, or 0.
func groSize(ctrl []byte, n int) int {
	if n > len(ctrl) {
		n = len(ctrl)
	}
	ctrl = ctrl[:n]
	for len(ctrl) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&ctrl[0]))
		cl := int(h.Len)
		if cl < unix.SizeofCmsghdr || cl > len(ctrl) {
			return 0
		}
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && cl >= unix.SizeofCmsghdr+4 {
			v := int(*(*int32)(unsafe.Pointer(&ctrl[unix.SizeofCmsghdr])))
			if v < 0 {
				return 0
			}
			return v
		}
		sp := unix.CmsgSpace(cl - unix.SizeofCmsghdr)
		if sp > len(ctrl) {
			return 0
		}
		ctrl = ctrl[sp:]
	}
	return 0
}

// decodeName converts a raw source address without allocating.
func (p *Port) decodeName(sa *sockaddr, n uint32) (netip.AddrPort, bool) {
	switch sa.Family {
	case unix.AF_INET:
		if n < unix.SizeofSockaddrInet4 {
			return netip.AddrPort{}, false
		}
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&s4.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), port), true
	case unix.AF_INET6:
		if n < unix.SizeofSockaddrInet6 {
			return netip.AddrPort{}, false
		}
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port), true
	}
	return netip.AddrPort{}, false
}

// encodeName fills a raw destination address; false if ap does not suit
// the socket's family.
func (p *Port) encodeName(sa *sockaddr, ap netip.AddrPort) (uint32, bool) {
	a := ap.Addr()
	if ap.Port() == 0 || !a.IsValid() {
		return 0, false
	}
	if p.v6 {
		if !a.Is6() || a.Is4In6() {
			return 0, false
		}
		*sa = sockaddr{Family: unix.AF_INET6, Addr: a.As16()}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], ap.Port())
		if a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() {
			sa.Scope_id = uint32(p.ifindex)
		}
		return unix.SizeofSockaddrInet6, true
	}
	a = a.Unmap()
	if !a.Is4() {
		return 0, false
	}
	s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
	*s4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.As4()}
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&s4.Port))[:], ap.Port())
	return unix.SizeofSockaddrInet4, true
}

// WriteBatch sends each Buf as one datagram to its Peer with sendmmsg
// (port.Port's contract). A full socket buffer stops it; a datagram the
// kernel refuses (no route, too big, wrong family) or that cannot be sent
// (no peer, wrong family, empty) is refused and counted (TxRefused). With
// UDP GSO, consecutive buffers for the same peer of equal length (the
// last of a run may be shorter) go out as one GSO message; the kernel
// splits them back into the same datagrams.
func (p *Port) WriteBatch(bufs []*packet.Buf) (sent, dropped int, err error) {
	c := tally{bufs: bufs}
	for i, more := 0, true; more && i < len(bufs); {
		i, more, err = p.sendChunk(bufs, i, &c)
	}
	if c.dropped > 0 {
		p.refused.Add(uint64(c.dropped))
	}
	return c.sent, c.dropped, err
}

// tally sorts the buffers of a WriteBatch into sent and refused as the
// datagrams are handled, in their original order (port.MoveSent).
type tally struct {
	bufs          []*packet.Buf
	sent, dropped int
}

// send records that the next k datagrams were sent.
func (c *tally) send(k int) {
	for ; k > 0; k-- {
		c.sent = port.MoveSent(c.bufs, c.sent, c.dropped)
	}
}

// refuse records that the next k datagrams were refused.
func (c *tally) refuse(k int) { c.dropped += k }

// sendChunk sends the datagrams of bufs from i on that fit in one
// sendmmsg's state, records their fate in c and returns where the next
// chunk starts; more is false when the socket buffer is full or sending
// failed (err).
func (p *Port) sendChunk(bufs []*packet.Buf, i int, c *tally) (next int, more bool, err error) {
	t := &p.tx
	gso := p.gso.Load()
	m, iv, skipped := 0, 0, 0
	for i < len(bufs) && m < len(t.msgs) && iv < len(t.iovs) {
		b := bufs[i]
		i++
		nl, ok := p.encodeName(&t.names[m], b.Peer)
		if !ok || b.Len() == 0 {
			skipped++
			continue
		}
		t.skip[m] = skipped
		skipped = 0
		first, size, total := iv, b.Len(), b.Len()
		setIov(&t.iovs[iv], b.Bytes())
		iv++
		for gso && i < len(bufs) && iv < len(t.iovs) && iv-first < maxGSOSegments {
			nb := bufs[i]
			l := nb.Len()
			if nb.Peer != b.Peer || l == 0 || l > size || total+l > maxGSOBytes {
				break
			}
			setIov(&t.iovs[iv], nb.Bytes())
			iv++
			i++
			total += l
			if l < size {
				break // a shorter datagram ends the run
			}
		}
		h := &t.msgs[m].Hdr
		h.Name = (*byte)(unsafe.Pointer(&t.names[m]))
		h.Namelen = nl
		h.Iov = &t.iovs[first]
		h.Iovlen = uint64(iv - first)
		h.Flags = 0
		h.Control = nil
		h.Controllen = 0
		if iv-first > 1 {
			cm := t.ctrl[m*cmsgSpace : (m+1)*cmsgSpace]
			ch := (*unix.Cmsghdr)(unsafe.Pointer(&cm[0]))
			ch.Level = unix.IPPROTO_UDP
			ch.Type = unix.UDP_SEGMENT
			ch.SetLen(unix.CmsgLen(2))
			*(*uint16)(unsafe.Pointer(&cm[unix.SizeofCmsghdr])) = uint16(size)
			h.Control = &cm[0]
			h.SetControllen(unix.CmsgSpace(2))
		}
		t.segs[m] = iv - first
		t.first[m] = first
		m++
	}
	defer p.clearTx(iv)
	j := 0
	for j < m {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(p.fd), uintptr(unsafe.Pointer(&t.msgs[j])), uintptr(m-j), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			for k := j; k < j+int(n); k++ {
				c.refuse(t.skip[k])
				c.send(t.segs[k])
				if t.segs[k] > 1 {
					t.gsoSent++
				}
			}
			j += int(n)
		case unix.EINTR:
		case unix.EAGAIN, unix.ENOBUFS:
			return i, false, nil
		case unix.EIO, unix.EMSGSIZE, unix.EINVAL, unix.ENETUNREACH, unix.EHOSTUNREACH, unix.ENETDOWN,
			unix.EHOSTDOWN, unix.ECONNREFUSED, unix.EPERM, unix.EACCES, unix.EADDRNOTAVAIL, unix.EAFNOSUPPORT:
			c.refuse(t.skip[j])
			if t.segs[j] > 1 {
				// The GSO message failed (EIO: the device cannot
				// checksum; EINVAL: segments above the path MTU):
				// send its datagrams one by one.
				if e == unix.EIO {
					p.gso.Store(false)
				}
				if full := p.sendEach(j, c); full {
					return i, false, nil
				}
			} else {
				c.refuse(1) // a plain datagram the kernel refused
			}
			j++
		default:
			return i, false, fmt.Errorf("udp %v: sendmmsg: %w", p.local, e)
		}
	}
	c.refuse(skipped)
	return i, true, nil
}

// sendEach sends the datagrams of GSO message j as separate messages and
// records their fate in c. It reports whether the socket buffer was full.
func (p *Port) sendEach(j int, c *tally) bool {
	t := &p.tx
	src := &t.msgs[j].Hdr
	k := t.segs[j]
	for s := 0; s < k; s++ {
		h := &t.one[s].Hdr
		*h = unix.Msghdr{Name: src.Name, Namelen: src.Namelen, Iov: &t.iovs[t.first[j]+s], Iovlen: 1}
	}
	for from := 0; from < k; {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(p.fd), uintptr(unsafe.Pointer(&t.one[from])), uintptr(k-from), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			c.send(int(n))
			from += int(n)
		case unix.EINTR:
		case unix.EAGAIN, unix.ENOBUFS:
			return true
		default:
			c.refuse(1)
			from++
		}
	}
	return false
}

func setIov(v *unix.Iovec, b []byte) {
	v.Base = &b[0]
	v.SetLen(len(b))
}

// TxRefused returns the number of datagrams WriteBatch refused.
func (p *Port) TxRefused() uint64 { return p.refused.Load() }

// GSO reports whether WriteBatch coalesces datagrams with UDP GSO. It
// turns off by itself when the kernel reports that the egress device
// cannot do it (EIO).
func (p *Port) GSO() bool { return p.gso.Load() }

// clearTx drops the references to the caller's buffers.
func (p *Port) clearTx(m int) {
	for k := 0; k < m; k++ {
		p.tx.iovs[k].Base = nil
	}
}

// JoinGroup joins a multicast group on the VTEP's interface and starts
// receiving datagrams sent to group at the port's UDP port. Joining a
// joined group does nothing.
func (p *Port) JoinGroup(group netip.Addr) error {
	group = group.Unmap()
	if !group.IsMulticast() || group.Is6() != p.v6 {
		return fmt.Errorf("udp %v: join %v: not a multicast address of the VTEP's family", p.local, group)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("udp %v: join %v: port closed", p.local, group)
	}
	if _, ok := p.joined[group]; ok {
		return nil
	}
	g := p.retired[group]
	if g == nil {
		fd, err := p.groupSocket(group)
		if err != nil {
			return fmt.Errorf("udp %v: join %v: %w", p.local, group, err)
		}
		g = &mcastSock{addr: group, fd: fd}
	}
	if err := p.membership(g, true); err != nil {
		if p.retired[group] == nil {
			unix.Close(g.fd)
		}
		return fmt.Errorf("udp %v: join %v: %w", p.local, group, err)
	}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, g.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(g.fd)}); err != nil {
		_ = p.membership(g, false)
		if p.retired[group] == nil {
			unix.Close(g.fd)
		}
		return fmt.Errorf("udp %v: join %v: epoll_ctl: %w", p.local, group, err)
	}
	delete(p.retired, group)
	p.joined[group] = g
	p.publish()
	return nil
}

// LeaveGroup leaves a joined multicast group. Leaving a group that is not
// joined is an error.
func (p *Port) LeaveGroup(group netip.Addr) error {
	group = group.Unmap()
	p.mu.Lock()
	defer p.mu.Unlock()
	g, ok := p.joined[group]
	if !ok {
		return fmt.Errorf("udp %v: leave %v: group not joined", p.local, group)
	}
	delete(p.joined, group)
	// The socket stays open (a reader may be using it) until Close or a
	// new join of the same group.
	p.retired[group] = g
	p.publish()
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, g.fd, nil)
	if err := p.membership(g, false); err != nil {
		return fmt.Errorf("udp %v: leave %v: %w", p.local, group, err)
	}
	// Discard what was queued before the drop.
	var b [1]byte
	for {
		if _, _, err := unix.Recvfrom(g.fd, b[:], unix.MSG_DONTWAIT|unix.MSG_TRUNC); err != nil {
			break
		}
	}
	return nil
}

// Groups returns the joined groups.
func (p *Port) Groups() []netip.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]netip.Addr, 0, len(p.joined))
	for a := range p.joined {
		out = append(out, a)
	}
	return out
}

func (p *Port) publish() {
	fds := make([]int, 0, len(p.joined))
	for _, g := range p.joined {
		fds = append(fds, g.fd)
	}
	p.active.Store(&fds)
}

func (p *Port) groupSocket(group netip.Addr) (int, error) {
	fd, err := p.socket()
	if err != nil {
		return -1, err
	}
	if p.v6 {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_ALL, 0)
	} else {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0)
	}
	if p.gro {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("UDP_GRO: %w", err)
		}
	}
	if err := p.bind(fd, netip.AddrPortFrom(group, p.local.Port())); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func (p *Port) membership(g *mcastSock, join bool) error {
	if p.v6 {
		opt := unix.IPV6_JOIN_GROUP
		if !join {
			opt = unix.IPV6_LEAVE_GROUP
		}
		mreq := &unix.IPv6Mreq{Multiaddr: g.addr.As16(), Interface: uint32(p.ifindex)}
		if err := unix.SetsockoptIPv6Mreq(g.fd, unix.IPPROTO_IPV6, opt, mreq); err != nil {
			return fmt.Errorf("setsockopt %d: %w", opt, err)
		}
		return nil
	}
	opt := unix.IP_ADD_MEMBERSHIP
	if !join {
		opt = unix.IP_DROP_MEMBERSHIP
	}
	mreq := &unix.IPMreqn{Multiaddr: g.addr.As4(), Address: p.local.Addr().As4(), Ifindex: int32(p.ifindex)}
	if err := unix.SetsockoptIPMreqn(g.fd, unix.IPPROTO_IP, opt, mreq); err != nil {
		return fmt.Errorf("setsockopt %d: %w", opt, err)
	}
	return nil
}

// LinkMTU returns the MTU of the interface that holds addr (the underlay
// link of a VTEP).
func LinkMTU(addr netip.Addr) (int, error) {
	idx, err := interfaceIndex(addr)
	if err != nil {
		return 0, err
	}
	link, err := netlink.LinkByIndex(idx)
	if err != nil {
		return 0, fmt.Errorf("udp: link of %v: %w", addr, err)
	}
	return link.Attrs().MTU, nil
}

// interfaceIndex finds the interface holding addr, or else the one the
// kernel routes addr through.
func interfaceIndex(addr netip.Addr) (int, error) {
	addr = addr.Unmap()
	family := netlink.FAMILY_V4
	if addr.Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := netlink.AddrList(nil, family)
	if err != nil {
		return 0, fmt.Errorf("udp: list addresses: %w", err)
	}
	ip := net.IP(addr.AsSlice())
	for _, a := range addrs {
		if a.IP.Equal(ip) {
			return a.LinkIndex, nil
		}
	}
	routes, err := netlink.RouteGet(ip)
	if err != nil || len(routes) == 0 {
		return 0, fmt.Errorf("udp: no interface holds %v: %v", addr, err)
	}
	return routes[0].LinkIndex, nil
}
