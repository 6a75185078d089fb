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
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
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
	// Logger receives the warnings about a VTEP address the host does
	// not have yet (nil: none are logged).
	Logger *slog.Logger
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

// Port is a VXLAN underlay socket. ReadBatch and WriteBatch may run in
// two different goroutines (one reader, one writer); JoinGroup,
// LeaveGroup and the accessors may be called from any goroutine.
type Port struct {
	fd    int
	epfd  int
	local netip.AddrPort
	v6    bool
	gro   bool
	gso   atomic.Bool
	opts  Options

	// ifindex is the interface of the VTEP address (or that routes to
	// it; 0: none): multicast goes out of it and joins groups on it.
	// held reports whether the address was configured at Listen.
	ifindex atomic.Int32
	held    bool
	// stop and watchDone end the goroutine that waits for a missing
	// VTEP address (nil when the address was there).
	stop, watchDone chan struct{}
	stopOnce        sync.Once

	rx rxState
	tx txState
	// refused counts the datagrams WriteBatch refused; written by the
	// writer, read by anyone.
	refused atomic.Uint64

	mu     sync.Mutex
	joined map[netip.Addr]*mcastSock
	// retired are the sockets of left groups: the reader may still hold
	// a list with their fds during a ReadBatch, so they are closed at the
	// start of the next one (the reader is single) or by Close; a group
	// joined again meanwhile takes its socket back. nRetired is their
	// number, read by ReadBatch without the lock.
	retired  map[netip.Addr]*mcastSock
	nRetired atomic.Int32
	active   atomic.Pointer[[]int] // fds of joined groups, read by ReadBatch
	closed   bool
}

// Listen opens the underlay socket bound to local:port (local's family
// selects IPv4 or IPv6; port 0 picks a free port, see LocalAddr). The
// sockets live in the network namespace of the calling thread; JoinGroup
// must run in that namespace too. The host need not have local yet
// (IP_FREEBIND): the port then warns until the address is configured,
// and moves its multicast interface and memberships to the address's
// link once it is.
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
	if !p.held {
		if err := p.waitAddr(); err != nil {
			p.Close()
			return nil, fmt.Errorf("udp: listen %v: %w", p.local, err)
		}
	}
	return p, nil
}

// Fd returns an epoll descriptor that is readable when any socket of the
// port (the unicast socket or a joined group's) has datagrams.
func (p *Port) Fd() int { return p.epfd }

// LocalAddr returns the bound VTEP address and port.
func (p *Port) LocalAddr() netip.AddrPort { return p.local }

// Close closes every socket of the port. The worker must have stopped
// using it.
func (p *Port) Close() error {
	if p.stop != nil {
		p.stopOnce.Do(func() { close(p.stop) })
		<-p.watchDone
	}
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
	clear(p.retired)
	p.nRetired.Store(0)
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
