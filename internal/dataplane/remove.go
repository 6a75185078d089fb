package dataplane

import (
	"strings"
	"sync/atomic"

	"github.com/butterfly-go/butterfly/internal/port"
)

// tapRemoval is the removal of a deleted vNIC's TAP device, in the
// daemon's namespace or in a pod's, after DeleteNIC has replied: the
// kernel takes 15 to 40 ms per device (RCU grace periods), which nic_del
// does not wait for. A goroutine removes it once no worker can use the
// port (start), up to removeParallel devices at a time (each removal is
// a system call that holds an OS thread). A vNIC that wants the same
// interface name in the same namespace waits for it (waitRemoved), and
// removes the device itself if no goroutine has begun to, rather than
// wait behind a queue of others.
type tapRemoval struct {
	e       *Engine
	id, key string // key: see removalKey
	p       port.Port
	// released is closed once no worker can use p (DeleteNIC's release);
	// claimed is set by whoever removes p; done is closed once it is gone.
	released chan struct{}
	claimed  atomic.Bool
	done     chan struct{}
}

// removalKey names a TAP interface among those being removed: its name
// in the daemon's namespace, the namespace's path and its name in a
// pod's (no interface name holds a NUL).
func removalKey(netns, name string) string {
	if netns == "" {
		return name
	}
	return netns + "\x00" + name
}

// newTAPRemoval registers the removal of vNIC id's TAP (key: see
// removalKey), whose port is p; e.mu must be held.
func (e *Engine) newTAPRemoval(id, key string, p port.Port) *tapRemoval {
	r := &tapRemoval{e: e, id: id, key: key, p: p, released: make(chan struct{}), done: make(chan struct{})}
	e.removingMu.Lock()
	e.removing[key] = r
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
		r.e.log.Error("removing a deleted vNIC's TAP", "id", r.id, "tap", strings.ReplaceAll(r.key, "\x00", " "), "err", err)
	}
	close(r.done)
	r.e.removingMu.Lock()
	if r.e.removing[r.key] == r {
		delete(r.e.removing, r.key)
	}
	r.e.removingMu.Unlock()
}

// waitRemoved returns once the TAP interface of a deleted vNIC named by
// key (see removalKey), if one is still there, is gone: it removes the
// device itself when no goroutine has begun to.
func (e *Engine) waitRemoved(key string) {
	e.removingMu.Lock()
	r := e.removing[key]
	e.removingMu.Unlock()
	if r == nil {
		return
	}
	<-r.released
	r.remove()
	<-r.done
}
