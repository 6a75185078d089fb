// Waiting for a VTEP address the host does not have yet.

package udp

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/vishvananda/netlink"
)

// addrPoll is how often a port looks for its missing VTEP address;
// addrWarnEvery is how many looks pass between two warnings.
const (
	addrPoll      = time.Second
	addrWarnEvery = 60
)

// waitAddr warns that the VTEP address is missing and starts the
// goroutine that waits for it (watchAddr). It runs in Listen, in the
// port's namespace.
func (p *Port) waitAddr() error {
	h, err := netlink.NewHandle() // bound to the calling thread's namespace
	if err != nil {
		return fmt.Errorf("netlink handle: %w", err)
	}
	log := p.opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("vtep", p.local.Addr())
	log.Warn("underlay: the VTEP address is not configured on this host yet; bound anyway, traffic flows once it is")
	p.stop = make(chan struct{})
	p.watchDone = make(chan struct{})
	go p.watchAddr(h, log)
	return nil
}

// watchAddr polls, through h, until the VTEP address is configured,
// warning every addrWarnEvery polls, then moves the port's multicast to
// the address's link (attach). It ends early with Close.
func (p *Port) watchAddr(h *netlink.Handle, log *slog.Logger) {
	defer close(p.watchDone)
	defer h.Close()
	t := time.NewTicker(addrPoll)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		idx, held, err := findLink(h, p.local.Addr())
		if !held {
			if n%addrWarnEvery == 0 {
				log.Warn("underlay: the VTEP address is still not configured on this host", "err", err)
			}
			continue
		}
		if err := p.attach(idx); err != nil {
			log.Error("underlay: the VTEP address is configured but multicast could not move to its link", "ifindex", idx, "err", err)
			return
		}
		log.Info("underlay: the VTEP address is configured now", "ifindex", idx)
		return
	}
}

// attach makes idx, the link of the VTEP address, the port's multicast
// interface and moves the group memberships to it.
func (p *Port) attach(idx int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	var errs []error
	if int(p.ifindex.Load()) != idx {
		p.ifindex.Store(int32(idx))
		if err := p.setMulticastIF(idx); err != nil {
			errs = append(errs, err)
		}
	}
	for _, g := range p.joined {
		if g.ifindex == idx {
			continue
		}
		if err := p.membership(g, false); err != nil {
			errs = append(errs, fmt.Errorf("leave %v: %w", g.addr, err))
		}
		if err := p.membership(g, true); err != nil {
			errs = append(errs, fmt.Errorf("join %v: %w", g.addr, err))
		}
	}
	return errors.Join(errs...)
}
