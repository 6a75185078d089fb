package dataplane

import (
	"sync/atomic"

	"github.com/butterfly-go/butterfly/internal/port"
)

// tapRemoval is the removal of a deleted vNIC's TAP device, in the
// daemon's namespace, after DeleteNIC has replied: the kernel takes 15
// to 40 ms per device (RCU grace periods), which nic_del does not wait
// for. A goroutine removes it once no worker can use the port (start),
// up to removeParallel devices at a time (each removal is a system call
// that holds an OS thread). A vNIC that wants the same interface name
// waits for it (waitRemoved), and removes the device itself if no
// goroutine has begun to, rather than wait behind a queue of others.
type tapRemoval struct {
	e        *Engine
	id, name string
	p        port.Port
	// released is closed once no worker can use p (DeleteNIC's release);
	// claimed is set by whoever removes p; done is closed once it is gone.
	released chan struct{}
	claimed  atomic.Bool
	done     chan struct{}
}

// newTAPRemoval registers the removal of vNIC id's TAP name, whose port
// is p; e.mu must be held.
func (e *Engine) newTAPRemoval(id, name string, p port.Port) *tapRemoval {
	r := &tapRemoval{e: e, id: id, name: name, p: p, released: make(chan struct{}), done: make(chan struct{})}
	e.removingMu.Lock()
	e.removing[name] = r
	e.removingMu.Unlock()
	e.removers.Add(1)
	return r
}

// start records that no worker can use the port any more and starts the
// goroutine that removes the device.
func (r *tapRemoval) start() {
	close(r.released)
	go func() {
		defer r.e.removers.Done()
		r.e.removeSlots <- struct{}{}
		defer func() { <-r.e.removeSlots }()
		r.remove()
	}()
}

// remove removes the device unless someone else has begun to.
func (r *tapRemoval) remove() {
	if !r.claimed.CompareAndSwap(false, true) {
		return
	}
	if err := removePort(r.p); err != nil {
		r.e.log.Error("removing a deleted vNIC's TAP", "id", r.id, "tap", r.name, "err", err)
	}
	close(r.done)
	r.e.removingMu.Lock()
	if r.e.removing[r.name] == r {
		delete(r.e.removing, r.name)
	}
	r.e.removingMu.Unlock()
}

// waitRemoved returns once the TAP interface name of a deleted vNIC, if
// one is still there, is gone: it removes the device itself when no
// goroutine has begun to.
func (e *Engine) waitRemoved(name string) {
	e.removingMu.Lock()
	r := e.removing[name]
	e.removingMu.Unlock()
	if r == nil {
		return
	}
	<-r.released
	r.remove()
	<-r.done
}
