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
	for len(w.txq) < s.nics.len() {
		w.txq = append(w.txq, make([]*packet.Buf, 0, batchSize))
	}
	if n := s.nics.len(); len(w.last) < n {
		w.last = append(w.last, make([]int64, n-len(w.last))...)
		w.inActive = append(w.inActive, make([]bool, n-len(w.inActive))...)
		w.failed = append(w.failed, make([]bool, n-len(w.failed))...)
		w.ports = append(w.ports, make([]port.Port, n-len(w.ports))...)
		for len(w.portFd) < n {
			w.portFd = append(w.portFd, -1)
		}
	}
	if old := w.snap; old == nil || !samePolls(old.polls[w.id], s.polls[w.id]) || old.under != s.under {
		w.syncPorts(s)
	}
	for _, slot := range w.failedList {
		w.failed[slot] = false
		if c := s.nics.at(slot); c != nil && c.port == w.ports[slot] {
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

// portDelta is a change of the ports a worker owns, from the control
// plane: port p enters (add) or leaves slot in the snapshot of generation
// gen.
type portDelta struct {
	gen  uint64
	slot int
	p    port.Port
	add  bool
}

// takeDeltas returns, in order, the port changes of snapshots up to gen;
// later ones stay queued for a later snapshot.
func (w *worker) takeDeltas(gen uint64) []portDelta {
	w.deltaMu.Lock()
	defer w.deltaMu.Unlock()
	n := 0
	for n < len(w.deltas) && w.deltas[n].gen <= gen {
		n++
	}
	out := slices.Clone(w.deltas[:n])
	w.deltas = slices.Delete(w.deltas, 0, n)
	return out
}

// syncPorts applies the changes of the worker's ports up to snapshot s:
// ports that left are forgotten (epoll set, poll lists), new ones
// registered and polled at once. It costs what changed, not the number of
// ports the worker owns.
func (w *worker) syncPorts(s *snapshot) {
	ds := w.takeDeltas(s.gen)
	for i, d := range ds {
		if old := w.ports[d.slot]; old != nil && (!d.add || old != d.p) {
			w.forgetPort(d.slot)
		}
		// A port that came and went since the last snapshot this worker
		// used is not registered at all (it may be closed already).
		left := d.add && slices.ContainsFunc(ds[i+1:], func(x portDelta) bool { return !x.add && x.slot == d.slot && x.p == d.p })
		if d.add && !left && w.ports[d.slot] == nil {
			w.ports[d.slot] = d.p
			fd := d.p.Fd()
			w.portFd[d.slot] = fd
			if fd < 0 {
				w.nofd = append(w.nofd, d.slot)
				continue
			}
			w.watch(fd, fdReg{d.slot, d.p})
			// A new port is polled until it has been idle for a while.
			w.activate(d.slot)
		}
	}
	w.sleepMs = 1000
	if len(w.nofd) > 0 {
		w.sleepMs = 1
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

// forgetPort drops the port of slot from the worker's epoll set and poll
// lists. The port may be closed already (it left while the worker slept):
// its descriptor is the one recorded at registration, and the epoll entry
// is removed only if it is still that port's.
func (w *worker) forgetPort(slot int) {
	p, fd := w.ports[slot], w.portFd[slot]
	if reg, ok := w.fdSlot[fd]; ok && fd >= 0 && reg.p == p {
		unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, fd, nil)
		delete(w.fdSlot, fd)
	}
	drop := func(x int) bool { return x == slot }
	if w.inActive[slot] {
		w.active = slices.DeleteFunc(w.active, drop)
		w.inActive[slot] = false
	}
	if fd < 0 {
		w.nofd = slices.DeleteFunc(w.nofd, drop)
	}
	w.ports[slot], w.portFd[slot] = nil, -1
	w.failed[slot] = false
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
