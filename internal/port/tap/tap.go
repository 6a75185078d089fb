// Package tap implements port.Port on a Linux TAP device.
//
// The device is created with IFF_TAP|IFF_NO_PI|IFF_TUN_EXCL and, when
// offloads are requested, IFF_VNET_HDR: every frame then travels with a
// struct virtio_net_hdr in front of it, so that TCP between two TAPs on one
// host moves as 64 KiB TSO segments with partial checksums, untouched.
//
// The file descriptor is a raw, non-blocking int that never reaches Go's
// runtime poller: the dataplane sleeps in its own epoll. The TAP is
// configured (TUNSETIFF, offloads) before anyone polls the descriptor;
// tun_chr_poll reports EPOLLERR without a wait queue on an unattached
// descriptor, so a descriptor registered before TUNSETIFF never wakes up.
package tap

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port"
)

// vnetHdrLen is the size of the virtio_net_hdr the port exchanges with the
// kernel: the 10-byte legacy header, without num_buffers. num_buffers only
// exists with VIRTIO_NET_F_MRG_RXBUF, which a TAP never needs since a whole
// frame always fits in one read.
const vnetHdrLen = packet.VNetHdrLen

// MaxNameLen is the longest interface name Linux accepts (IFNAMSIZ - 1).
const MaxNameLen = unix.IFNAMSIZ - 1

// TUNSETOFFLOAD flags (include/uapi/linux/if_tun.h).
const (
	tunFCsum   = 0x01
	tunFTSO4   = 0x02
	tunFTSO6   = 0x04
	tunFTSOECN = 0x08
	tunFUSO4   = 0x20
	tunFUSO6   = 0x40
)

// ErrNameInUse reports that an interface with the requested name already
// exists; the caller may retry with another name.
var ErrNameInUse = errors.New("interface name already in use")

// ErrDeviceGone reports that the device no longer exists (for instance its
// namespace was deleted): the port is dead and should be closed. Its
// descriptor then polls as always ready (EPOLLERR).
var ErrDeviceGone = errors.New("TAP device is gone")

// Options configure a TAP port.
type Options struct {
	// Offload enables IFF_VNET_HDR and the checksum, TSO4, TSO6 and TSO
	// ECN offloads (plus UDP segmentation offload when the kernel has it
	// and NoUSO is false). Frames read may then be up to 64 KiB with
	// partial checksums, described by Buf.VNet.
	Offload bool
	// NoUSO keeps UDP segmentation offload (GSO type UDP_L4) off even
	// when Offload is set and the kernel supports it.
	NoUSO bool
	// MTU sets the device MTU when non-zero (the kernel default is 1500).
	MTU int
	// Netns, when set, is the path of the network namespace the device
	// lives in (a bind mount such as /var/run/netns/X, or
	// /proc/PID/ns/net). The device is then persistent (TUNSETPERSIST):
	// closing the port leaves it, with its addresses and routes, and the
	// next Open of that name in that namespace re-attaches to it; Remove
	// deletes it.
	Netns string
	// MAC, when set, becomes the device's MAC address.
	MAC net.HardwareAddr
	// NoIPv6 turns the kernel's IPv6 off on the device before it goes up,
	// in the namespace it is created in: a switch's side of a vNIC is no
	// host interface. Otherwise the kernel gives it a link-local address
	// and routes (bringing each new device up then walks every IPv6
	// route, which made the 10,000th vNIC cost several times the first)
	// and sends router solicitations and MLD reports into the switch. A
	// device moved to another namespace gets that namespace's defaults.
	NoIPv6 bool
}

// Port is a TAP device. Like every port.Port it is driven by one worker at
// a time; Name, Offload, SetMTU and TxRefused may be called from any
// goroutine.
type Port struct {
	fd      int
	name    string
	ifindex int
	vnet    bool
	uso     bool
	// netns is Options.Netns; reattached tells that the persistent
	// device existed before Open.
	netns      string
	reattached bool

	// iov is the scratch vector for writev when a buffer has no
	// headroom for the vnet header; hdr holds that header.
	iov [2]unix.Iovec
	hdr [vnetHdrLen]byte

	// refused counts the frames WriteBatch refused; written by the
	// worker, read by anyone.
	refused atomic.Uint64

	// goneErr is returned, preformatted, on every call once the device
	// has disappeared, so a dead port costs no allocation.
	goneErr error

	closeOnce sync.Once
	closeErr  error
}

// Open creates the TAP device name, configures it and brings it up. It
// fails with an error wrapping ErrNameInUse when an interface with that
// name exists. With opts.Netns the device is created in that namespace,
// persistent, or, when a TAP of that name exists there and no one uses
// it, re-attached to (same device, addresses and routes; Reattached);
// another kind of interface or a TAP in use with that name is
// ErrNameInUse.
func Open(name string, opts Options) (*Port, error) {
	if name == "" || len(name) > MaxNameLen {
		return nil, fmt.Errorf("tap %q: name must be 1 to %d bytes", name, MaxNameLen)
	}
	if opts.MTU < 0 || opts.MTU > 65535 {
		return nil, fmt.Errorf("tap %q: invalid MTU %d", name, opts.MTU)
	}
	if opts.Netns != "" {
		return openIn(name, opts)
	}
	if _, err := netlink.LinkByName(name); err == nil {
		return nil, fmt.Errorf("tap %q: %w", name, ErrNameInUse)
	}
	// Raw open: the descriptor must not reach the runtime poller.
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("tap %q: open /dev/net/tun: %w", name, err)
	}
	p := &Port{fd: fd, name: name, vnet: opts.Offload}
	p.goneErr = fmt.Errorf("tap %q: %w", name, ErrDeviceGone)
	if err := p.setup(opts, netlink.Handle{}, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %q: %w", name, err)
	}
	return p, nil
}

// setup attaches the descriptor to the device (TUNSETIFF; excl: only a
// new one), sets its offloads and configures it through h, a netlink
// handle in the device's namespace.
func (p *Port) setup(opts Options, h netlink.Handle, excl bool) error {
	ifr, err := unix.NewIfreq(p.name)
	if err != nil {
		return fmt.Errorf("ifreq: %w", err)
	}
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if excl {
		flags |= unix.IFF_TUN_EXCL
	}
	if opts.Offload {
		flags |= unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(p.fd, unix.TUNSETIFF, ifr); err != nil {
		if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) || errors.Is(err, unix.EINVAL) {
			// EBUSY: a TUN/TAP of that name exists (IFF_TUN_EXCL);
			// EINVAL: a non-TUN interface has the name.
			if _, lerr := h.LinkByName(p.name); lerr == nil {
				return fmt.Errorf("TUNSETIFF: %w (%v)", ErrNameInUse, err)
			}
		}
		return fmt.Errorf("TUNSETIFF: %w", err)
	}
	if opts.Offload {
		if err := unix.IoctlSetPointerInt(p.fd, unix.TUNSETVNETHDRSZ, vnetHdrLen); err != nil {
			return fmt.Errorf("TUNSETVNETHDRSZ: %w", err)
		}
		base := tunFCsum | tunFTSO4 | tunFTSO6 | tunFTSOECN
		if !opts.NoUSO {
			// USO4/6 exist since Linux 6.2; older kernels say EINVAL.
			if err := unix.IoctlSetInt(p.fd, unix.TUNSETOFFLOAD, base|tunFUSO4|tunFUSO6); err == nil {
				p.uso = true
			}
		}
		if !p.uso {
			if err := unix.IoctlSetInt(p.fd, unix.TUNSETOFFLOAD, base); err != nil {
				return fmt.Errorf("TUNSETOFFLOAD: %w", err)
			}
		}
	}
	if opts.Netns != "" {
		if err := unix.IoctlSetInt(p.fd, unix.TUNSETPERSIST, 1); err != nil {
			return fmt.Errorf("TUNSETPERSIST: %w", err)
		}
	}
	return p.configure(h, opts)
}

// configure sets the device's MTU and MAC (when given) through h, a
// netlink handle in the device's namespace, and brings it up.
func (p *Port) configure(h netlink.Handle, opts Options) error {
	link, err := h.LinkByName(p.name)
	if err != nil {
		return fmt.Errorf("find link: %w", err)
	}
	p.ifindex = link.Attrs().Index
	if opts.MTU != 0 {
		if err := h.LinkSetMTU(link, opts.MTU); err != nil {
			return fmt.Errorf("set MTU %d: %w", opts.MTU, err)
		}
	}
	if len(opts.MAC) > 0 && !bytes.Equal(link.Attrs().HardwareAddr, opts.MAC) {
		if err := h.LinkSetHardwareAddr(link, opts.MAC); err != nil {
			return fmt.Errorf("set MAC %v: %w", opts.MAC, err)
		}
	}
	if opts.NoIPv6 {
		// The sysctl of the calling thread's namespace, the device's.
		err := os.WriteFile("/proc/sys/net/ipv6/conf/"+p.name+"/disable_ipv6", []byte("1"), 0)
		if err != nil && !errors.Is(err, fs.ErrNotExist) { // no IPv6 in this kernel
			return fmt.Errorf("disable IPv6: %w", err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set link up: %w", err)
	}
	return nil
}

// Ifindex returns the device's interface index (in its namespace).
func (p *Port) Ifindex() int { return p.ifindex }

// Reattached reports whether Open found the persistent device of
// Options.Netns in place and attached to it rather than creating it.
func (p *Port) Reattached() bool { return p.reattached }

// Name returns the interface name.
func (p *Port) Name() string { return p.name }

// Offload reports whether frames carry a vnet header (Options.Offload).
func (p *Port) Offload() bool { return p.vnet }

// USO reports whether UDP segmentation offload was enabled: frames read
// may then carry GSO type UDP_L4.
func (p *Port) USO() bool { return p.uso }

// Fd returns the raw non-blocking descriptor for the caller's epoll.
func (p *Port) Fd() int { return p.fd }

// SetMTU changes the device MTU. It works while the device is in the
// namespace the port was opened in (Options.Netns, or the caller's).
func (p *Port) SetMTU(mtu int) error {
	if mtu < 68 || mtu > 65535 {
		return fmt.Errorf("tap %q: invalid MTU %d", p.name, mtu)
	}
	h := netlink.Handle{}
	if p.netns != "" {
		nh, err := handleAt(p.netns)
		if err != nil {
			return fmt.Errorf("tap %q: %w", p.name, err)
		}
		defer nh.Close()
		h = *nh
	}
	link, err := h.LinkByName(p.name)
	if err != nil {
		return fmt.Errorf("tap %q: find link: %w", p.name, err)
	}
	if err := h.LinkSetMTU(link, mtu); err != nil {
		return fmt.Errorf("tap %q: set MTU %d: %w", p.name, mtu, err)
	}
	return nil
}

// Close closes the descriptor, which destroys a non-persistent device
// (a persistent one, Options.Netns, stays: see Remove). The worker must
// have stopped using the port.
func (p *Port) Close() error {
	p.closeOnce.Do(func() {
		if err := unix.Close(p.fd); err != nil {
			p.closeErr = fmt.Errorf("tap %q: close: %w", p.name, err)
		}
	})
	return p.closeErr
}

// ReadBatch reads frames until the device queue is empty or bufs is full.
// With offloads, each frame's vnet header is decoded into Buf.VNet and
// the frame starts at Buf.Bytes(). A frame the kernel had to truncate or
// a malformed header is skipped.
func (p *Port) ReadBatch(bufs []*packet.Buf) (int, error) {
	n := 0
	hl := 0
	if p.vnet {
		hl = vnetHdrLen
	}
	for n < len(bufs) {
		b := bufs[n]
		// Read the header into the headroom so the frame lands at the
		// buffer's normal offset: one read, no copy.
		if hl > 0 && b.Prepend(hl) == nil {
			return n, fmt.Errorf("tap %q: buffer without headroom", p.name)
		}
		space := b.Space()
		r, err := unix.Read(p.fd, space)
		if err != nil {
			if hl > 0 {
				b.TrimFront(hl)
			}
			b.SetLen(0)
			if err == unix.EINTR {
				continue
			}
			if err == unix.EAGAIN {
				return n, nil
			}
			if err == unix.EBADFD {
				return n, p.goneErr
			}
			return n, fmt.Errorf("tap %q: read: %w", p.name, err)
		}
		if r >= len(space) || r < hl+14 {
			// Truncated (did not fit) or runt: skip it.
			b.SetLen(0)
			if hl > 0 {
				b.TrimFront(hl)
			}
			continue
		}
		b.SetLen(r)
		if hl > 0 {
			b.VNet.Decode(b.Bytes())
			b.TrimFront(hl)
		}
		n++
	}
	return n, nil
}

// WriteBatch writes frames until done or the device queue is full
// (port.Port's contract). With offloads each frame is preceded by the
// vnet header built from Buf.VNet. A frame the kernel rejects (for
// instance an inconsistent vnet header, or the device is down) is refused
// and counted (TxRefused); the frames' contents are left as they were.
func (p *Port) WriteBatch(bufs []*packet.Buf) (sent, dropped int, err error) {
loop:
	for sent+dropped < len(bufs) {
		b := bufs[sent+dropped]
		var werr error
		if p.vnet {
			werr = p.writeVNet(b)
		} else {
			_, werr = unix.Write(p.fd, b.Bytes())
			for werr == unix.EINTR {
				_, werr = unix.Write(p.fd, b.Bytes())
			}
		}
		switch werr {
		case nil:
			sent = port.MoveSent(bufs, sent, dropped)
		case unix.EINVAL, unix.EMSGSIZE, unix.EFAULT, unix.EIO:
			dropped++ // bad frame or device down: refuse this one
		case unix.EAGAIN, unix.ENOBUFS:
			break loop // queue full
		case unix.EBADFD:
			err = p.goneErr
			break loop
		default:
			err = fmt.Errorf("tap %q: write: %w", p.name, werr)
			break loop
		}
	}
	if dropped > 0 {
		p.refused.Add(uint64(dropped))
	}
	return sent, dropped, err
}

// TxRefused returns the number of frames WriteBatch refused.
func (p *Port) TxRefused() uint64 { return p.refused.Load() }

func (p *Port) writeVNet(b *packet.Buf) error {
	if h := b.Prepend(vnetHdrLen); h != nil {
		b.VNet.Encode(h)
		_, err := unix.Write(p.fd, b.Bytes())
		for err == unix.EINTR {
			_, err = unix.Write(p.fd, b.Bytes())
		}
		b.TrimFront(vnetHdrLen)
		return err
	}
	// No headroom: gather the header from the port's scratch space.
	b.VNet.Encode(p.hdr[:])
	f := b.Bytes()
	p.iov[0].Base = &p.hdr[0]
	p.iov[0].SetLen(vnetHdrLen)
	p.iov[1].SetLen(len(f))
	cnt := 1
	if len(f) > 0 {
		p.iov[1].Base = &f[0]
		cnt = 2
	}
	for {
		_, _, e := unix.Syscall(unix.SYS_WRITEV, uintptr(p.fd), uintptr(unsafe.Pointer(&p.iov[0])), uintptr(cnt))
		if e == unix.EINTR {
			continue
		}
		p.iov[1].Base = nil
		if e != 0 {
			return e
		}
		return nil
	}
}
