// The sockets: creation, options, binding, and the interface that holds
// the VTEP address.

package udp

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func (p *Port) open() error {
	idx, held, err := findLink(&netlink.Handle{}, p.local.Addr())
	if err == nil {
		p.ifindex.Store(int32(idx))
	}
	p.held = held
	fd, err := p.socket()
	if err != nil {
		return err
	}
	p.fd = fd
	// The VTEP address may come up after the daemon (at boot): bind
	// to it even when the host does not have it yet.
	if p.v6 {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1)
	} else {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
	}
	if err != nil {
		return fmt.Errorf("FREEBIND: %w", err)
	}
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
	if idx != 0 {
		if err := p.setMulticastIF(idx); err != nil {
			return err
		}
	}
	if p.v6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, 0); err != nil {
			return fmt.Errorf("IPV6_MULTICAST_LOOP: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, p.opts.MulticastTTL); err != nil {
			return fmt.Errorf("IPV6_MULTICAST_HOPS: %w", err)
		}
	} else {
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

// setMulticastIF makes the unicast socket send multicast datagrams out of
// interface idx.
func (p *Port) setMulticastIF(idx int) error {
	if p.v6 {
		if err := unix.SetsockoptInt(p.fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, idx); err != nil {
			return fmt.Errorf("IPV6_MULTICAST_IF: %w", err)
		}
		return nil
	}
	mreq := &unix.IPMreqn{Address: p.local.Addr().As4(), Ifindex: int32(idx)}
	if err := unix.SetsockoptIPMreqn(p.fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, mreq); err != nil {
		return fmt.Errorf("IP_MULTICAST_IF: %w", err)
	}
	return nil
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
			s.ZoneId = uint32(p.ifindex.Load())
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

// LinkMTU returns the MTU of the interface that holds addr, or else of
// the one the kernel routes addr through (the underlay link of a VTEP).
func LinkMTU(addr netip.Addr) (int, error) {
	idx, _, err := findLink(&netlink.Handle{}, addr)
	if err != nil {
		return 0, err
	}
	link, err := netlink.LinkByIndex(idx)
	if err != nil {
		return 0, fmt.Errorf("udp: link of %v: %w", addr, err)
	}
	return link.Attrs().MTU, nil
}

// findLink returns the index of the interface holding addr (held), or
// else of the one the kernel routes addr through, asking through h (a
// handle on a namespace, or the zero Handle: the calling thread's).
func findLink(h *netlink.Handle, addr netip.Addr) (idx int, held bool, err error) {
	addr = addr.Unmap()
	family := netlink.FAMILY_V4
	if addr.Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := h.AddrList(nil, family)
	if err != nil {
		return 0, false, fmt.Errorf("udp: list addresses: %w", err)
	}
	ip := net.IP(addr.AsSlice())
	for _, a := range addrs {
		if a.IP.Equal(ip) {
			return a.LinkIndex, true, nil
		}
	}
	routes, err := h.RouteGet(ip)
	if err != nil || len(routes) == 0 {
		return 0, false, fmt.Errorf("udp: no interface holds %v: %v", addr, err)
	}
	return routes[0].LinkIndex, false, nil
}
