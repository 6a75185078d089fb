// Multicast: one socket per joined group, bound to the group address.

package udp

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// mcastSock is a socket bound to a joined multicast group.
type mcastSock struct {
	addr netip.Addr
	fd   int
	// ifindex is the interface of the membership, 0 while there is none
	// (the VTEP address has no link yet).
	ifindex int
}

// JoinGroup joins a multicast group on the VTEP's interface and starts
// receiving datagrams sent to group at the port's UDP port. Joining a
// joined group does nothing. While the VTEP address has no link yet the
// membership waits for it (see Listen).
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
	if p.ifindex.Load() != 0 {
		if err := p.membership(g, true); err != nil {
			if p.retired[group] == nil {
				unix.Close(g.fd)
			}
			return fmt.Errorf("udp %v: join %v: %w", p.local, group, err)
		}
	}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, g.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(g.fd)}); err != nil {
		_ = p.membership(g, false)
		if p.retired[group] == nil {
			unix.Close(g.fd)
		}
		return fmt.Errorf("udp %v: join %v: epoll_ctl: %w", p.local, group, err)
	}
	delete(p.retired, group)
	p.nRetired.Store(int32(len(p.retired)))
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
	// The socket stays open (a reader may be using it) until the next
	// ReadBatch, Close or a new join of the same group.
	p.retired[group] = g
	p.nRetired.Store(int32(len(p.retired)))
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

// membership joins g on the port's interface, or leaves it on the
// interface it was joined on; leaving a group that has no membership does
// nothing.
func (p *Port) membership(g *mcastSock, join bool) error {
	idx := p.ifindex.Load()
	if !join {
		idx = int32(g.ifindex)
		if idx == 0 {
			return nil
		}
	}
	if p.v6 {
		opt := unix.IPV6_JOIN_GROUP
		if !join {
			opt = unix.IPV6_LEAVE_GROUP
		}
		mreq := &unix.IPv6Mreq{Multiaddr: g.addr.As16(), Interface: uint32(idx)}
		if err := unix.SetsockoptIPv6Mreq(g.fd, unix.IPPROTO_IPV6, opt, mreq); err != nil {
			return fmt.Errorf("setsockopt %d: %w", opt, err)
		}
	} else {
		opt := unix.IP_ADD_MEMBERSHIP
		if !join {
			opt = unix.IP_DROP_MEMBERSHIP
		}
		mreq := &unix.IPMreqn{Multiaddr: g.addr.As4(), Address: p.local.Addr().As4(), Ifindex: idx}
		if err := unix.SetsockoptIPMreqn(g.fd, unix.IPPROTO_IP, opt, mreq); err != nil {
			return fmt.Errorf("setsockopt %d: %w", opt, err)
		}
	}
	g.ifindex = 0
	if join {
		g.ifindex = int(idx)
	}
	return nil
}

// closeRetired closes the sockets of left groups. Only the reader calls
// it, between two reads: no list of fds it loaded is in use then.
func (p *Port) closeRetired() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for group, g := range p.retired {
		unix.Close(g.fd)
		delete(p.retired, group)
	}
	p.nRetired.Store(0)
}
