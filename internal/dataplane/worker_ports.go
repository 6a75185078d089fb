package dataplane

import (
	"slices"

	"golang.org/x/sys/unix"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port"
)

// fdReg is a descriptor's registration in a worker's epoll set. The
// port is kept because a descriptor number may be closed and reused by
// another port while the worker sleeps (it does not take part in
// releasing ports then).
type fdReg struct {
	slot int
	p    port.Port
}

// apply switches to snapshot s: it flushes what it queued under the old
// one, sizes its queues and, when its set of ports changed, updates its
// epoll set and poll lists (new ports are polled at once; the others keep
// their state, so a change costs the worker nothing per port it already
// had). Ports whose reads failed are tried again. It then acknowledges
// the generation: from now on the worker holds no reference to older
// snapshots.
func (w *worker) apply(s *snapshot) {
	w.flushAll()
	for len(w.utx) < len(s.txUnder) {
		w.utx = append(w.utx, make([]*packet.Buf, 0, batchSize))
	}
	for len(w.txq) < len(s.nics) {
		w.txq = append(w.txq, make([]*packet.Buf, 0, batchSize))
	}
	if n := len(s.nics); len(w.last) < n {
		w.last = append(w.last, make([]int64, n-len(w.last))...)
		w.inActive = append(w.inActive, make([]bool, n-len(w.inActive))...)
		w.failed = append(w.failed, make([]bool, n-len(w.failed))...)
		w.ports = append(w.ports, make([]port.Port, n-len(w.ports))...)
	}
	mine := s.polls[w.id]
	if old := w.snap; old == nil || !samePolls(old.polls[w.id], mine) || old.under != s.under {
		w.syncPorts(s, mine)
	}
	for _, slot := range w.failedList {
		w.failed[slot] = false
		if c := s.nics[slot]; c != nil && c.port == w.ports[slot] {
			w.watch(c.port.Fd(), fdReg{slot, c.port})
			w.activate(slot)
		}
	}
	w.failedList = w.failedList[:0]
	if w.underFailed {
		w.underFailed = false
		if s.under != nil && s.underFd >= 0 {
			w.watch(s.underFd, fdReg{underSlot, s.under})
			w.underActive, w.underLast = true, w.mono
		}
	}
	w.snap = s
	w.ack.Store(s.gen)
}

// samePolls reports whether two snapshots share a worker's poll list
// (the control plane copies a list on write).
func samePolls(a, b []int) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// syncPorts brings the worker's epoll set and poll lists to the ports it
// owns in s (mine): ports that left are forgotten, new ones registered
// and polled at once.
func (w *worker) syncPorts(s *snapshot, mine []int) {
	gone := func(slot int, p port.Port) bool {
		return slot >= len(s.nics) || s.nics[slot] == nil || s.nics[slot].port != p
	}
	for fd, reg := range w.fdSlot {
		if reg.slot == underSlot && reg.p == s.under {
			continue
		}
		if reg.slot == underSlot || gone(reg.slot, reg.p) {
			unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, fd, nil)
			delete(w.fdSlot, fd)
		}
	}
	keep := func(slots []int) []int {
		return slices.DeleteFunc(slots, func(slot int) bool {
			if gone(slot, w.ports[slot]) {
				w.inActive[slot] = false
				return true
			}
			return false
		})
	}
	w.active, w.nofd = keep(w.active), keep(w.nofd)
	owned := make(map[int]bool, len(mine))
	for _, slot := range mine {
		owned[slot] = true
	}
	for slot, p := range w.ports {
		if p != nil && (!owned[slot] || gone(slot, p)) {
			w.ports[slot] = nil
			w.failed[slot] = false
		}
	}
	w.sleepMs = 1000
	for _, slot := range mine {
		p := s.nics[slot].port
		if w.ports[slot] == p {
			if p.Fd() < 0 {
				w.sleepMs = 1
			}
			continue
		}
		w.ports[slot] = p
		fd := p.Fd()
		if fd < 0 {
			w.nofd = append(w.nofd, slot)
			w.sleepMs = 1
			continue
		}
		w.watch(fd, fdReg{slot, p})
		// A new port is polled until it has been idle for a while.
		w.activate(slot)
	}
	if w.id == 0 && s.under != nil {
		if s.underFd < 0 {
			w.sleepMs = 1
		} else if reg, ok := w.fdSlot[s.underFd]; !ok || reg.p != s.under {
			w.watch(s.underFd, fdReg{underSlot, s.under})
			w.underActive, w.underLast = true, w.mono
		}
	}
}

// watch registers fd in the worker's epoll set, replacing what the same
// number stood for before.
func (w *worker) watch(fd int, reg fdReg) {
	if fd < 0 {
		return
	}
	if old, ok := w.fdSlot[fd]; ok && old.p == reg.p {
		w.fdSlot[fd] = reg
		return
	}
	unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	delete(w.fdSlot, fd)
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd,
		&unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
		w.e.log.Error("epoll_ctl add", "worker", w.id, "fd", fd, "err", err)
		w.sleepMs = 1
		return
	}
	w.fdSlot[fd] = reg
}

// activate puts slot in the active set.
func (w *worker) activate(slot int) {
	if !w.inActive[slot] {
		w.inActive[slot] = true
		w.active = append(w.active, slot)
	}
	w.last[slot] = w.mono
}
