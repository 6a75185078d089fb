package tap

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// openIn is Open with opts.Netns: the TUN descriptor is opened inside the
// namespace (the kernel creates, or looks up, the device in the namespace
// of the process that opened /dev/net/tun), then the device is made
// persistent and configured there. The namespace is not held open after
// Open returns, so deleting it destroys the device.
func openIn(name string, opts Options) (*Port, error) {
	fail := func(err error) (*Port, error) {
		return nil, fmt.Errorf("tap %q in %s: %w", name, opts.Netns, err)
	}
	ns, err := netns.GetFromPath(opts.Netns)
	if err != nil {
		return fail(fmt.Errorf("open namespace: %w", err))
	}
	defer ns.Close()
	fd, err := openTunIn(ns)
	if err != nil {
		return fail(err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		unix.Close(fd)
		return fail(fmt.Errorf("netlink in namespace: %w", err))
	}
	defer h.Close()
	p := &Port{fd: fd, name: name, vnet: opts.Offload, netns: opts.Netns}
	p.goneErr = fmt.Errorf("tap %q in %s: %w", name, opts.Netns, ErrDeviceGone)
	if l, err := h.LinkByName(name); err == nil {
		if _, ok := l.(*netlink.Tuntap); !ok || l.Type() != "tuntap" {
			unix.Close(fd)
			return fail(fmt.Errorf("%w (a %s interface)", ErrNameInUse, l.Type()))
		}
		p.reattached = true
	}
	if err := p.setup(opts, *h, false); err != nil {
		if !p.reattached {
			// Created here: do not leave a persistent device behind.
			_ = unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 0)
		}
		unix.Close(fd)
		return fail(err)
	}
	return p, nil
}

// openTunIn opens /dev/net/tun from a thread in namespace ns. The thread
// is locked to a goroutine that ends without unlocking it, so the runtime
// destroys it instead of reusing a thread in another namespace.
func openTunIn(ns netns.NsHandle) (int, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(ns), unix.CLONE_NEWNET); err != nil {
			ch <- result{-1, fmt.Errorf("enter namespace (is it a network namespace?): %w", err)}
			return
		}
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			err = fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}

// handleAt returns a netlink handle in the namespace at path.
func handleAt(path string) (*netlink.Handle, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink in namespace %s: %w", path, err)
	}
	return h, nil
}

// Remove deletes the device, persistent or not, and closes the port: a
// persistent device (Options.Netns) is made non-persistent first, so that
// closing the last descriptor destroys it. A device already gone (its
// namespace deleted) is not an error.
func (p *Port) Remove() error {
	var err error
	if p.netns != "" {
		if e := unix.IoctlSetInt(p.fd, unix.TUNSETPERSIST, 0); e != nil && e != unix.EBADFD {
			err = fmt.Errorf("tap %q: TUNSETPERSIST 0: %w", p.name, e)
		}
	}
	return errors.Join(err, p.Close())
}

// InPlace reports whether the device this port opened is still there: in
// its namespace (or the daemon's), same ifindex and name, a TAP. It asks
// the kernel (netlink); for the control path only.
func (p *Port) InPlace() bool {
	h := &netlink.Handle{}
	if p.netns != "" {
		var err error
		if h, err = handleAt(p.netns); err != nil {
			return false
		}
		defer h.Close()
	}
	l, err := h.LinkByIndex(p.ifindex)
	return err == nil && l.Attrs().Name == p.name && l.Type() == "tuntap"
}
