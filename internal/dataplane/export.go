package dataplane

import (
	"fmt"
	"time"

	"github.com/butterfly-go/butterfly/internal/firewall"
)

// ownerTimeout bounds how long the control plane waits for a worker to run
// a request on a connection-tracking table it owns.
const ownerTimeout = 5 * time.Second

// ctRequest is work the control plane hands to the worker that owns a
// vNIC's connection tracking: fn runs on that worker, between two
// iterations, with the worker's monotonic clock; done is closed after.
type ctRequest struct {
	fn   func(now int64)
	done chan struct{}
}

// serveCTRequest runs the pending control-plane request, if any. Workers
// call it once per iteration: one atomic load when there is none.
func (w *worker) serveCTRequest() {
	r := w.ctReq.Load()
	if r == nil || !w.ctReq.CompareAndSwap(r, nil) {
		return
	}
	r.fn(w.mono)
	close(r.done)
}

// onOwner runs fn on the worker that owns p's connection tracking and
// waits for it: a Conntrack is single-threaded (the data path takes no
// lock), so the control plane never reads one from its own goroutine
// while workers run. e.mu must be held (see onWorker).
func (e *Engine) onOwner(p *nicPort, fn func(now int64)) error {
	return e.onWorker(p.worker, fn)
}

// onWorker runs fn on worker wi, between two iterations, and waits for
// it. Without running workers (tests in manual mode, or a worker that
// exited) fn runs here. e.mu must be held: there is one request at a
// time, and Close cannot stop the workers meanwhile.
func (e *Engine) onWorker(wi int, fn func(now int64)) error {
	w := e.workers[wi]
	if e.hooks.manual || w.exited.Load() {
		fn(int64(e.hooks.now().Sub(e.start)))
		return nil
	}
	r := &ctRequest{fn: fn, done: make(chan struct{})}
	if !w.ctReq.CompareAndSwap(nil, r) {
		return fmt.Errorf("dataplane: worker %d has a pending request", w.id)
	}
	w.wake()
	t := time.NewTimer(ownerTimeout)
	defer t.Stop()
	select {
	case <-r.done:
		return nil
	case <-t.C:
		if w.ctReq.CompareAndSwap(r, nil) {
			return fmt.Errorf("dataplane: worker %d did not answer within %v", w.id, ownerTimeout)
		}
		<-r.done // the worker took it meanwhile: it finishes soon
		return nil
	}
}

// ExportNIC returns the vNIC's tracked connections in the firewall's
// export format (firewall.Conntrack.Export). The table is serialized by
// the worker that owns it, between two batches: the data path keeps
// running without a lock, and that worker pauses for the time of the
// serialization (about a millisecond per 10,000 flows).
func (e *Engine) ExportNIC(id string) ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ent, ok := e.nics[id]
	if !ok {
		return nil, fmt.Errorf("dataplane: vNIC %q does not exist", id)
	}
	var data []byte
	ct := ent.p.ct
	if err := e.onOwner(ent.p, func(now int64) { data = ct.Export(now) }); err != nil {
		return nil, fmt.Errorf("dataplane: export vNIC %s: %w", id, err)
	}
	return data, nil
}

// EndPickup closes the pickup window (Config.ConntrackPickup) early for
// the vNICs created from now on; those created before keep it. The
// daemon calls it once the vNICs of its state file are restored: a vNIC
// added later is a new one, whose connections all start with a SYN.
// Without a state file the window stays open, for an orchestrator that
// adds its vNICs again after a restart.
func (e *Engine) EndPickup() {
	e.mu.Lock()
	e.pickupEnded = true
	e.mu.Unlock()
}

// newConntrack returns the connection tracking of vNIC id under policy
// pol, loaded with data (an export of another host, or the table a clean
// stop saved) when it is set. Without data, within the pickup window
// (Config.ConntrackPickup) after the engine's start and before EndPickup,
// the zone picks up TCP connections in progress until the window ends.
// e.mu is held. The table is not
// shared yet, so the control plane fills it directly.
func (e *Engine) newConntrack(id string, pol *firewall.Policy, data []byte) (*firewall.Conntrack, error) {
	ct := firewall.NewConntrack(e.cfg.ConntrackMax)
	ct.SetLimit(e.ctLimit)
	if len(data) == 0 {
		// The workers' clock (Decide's now) is the time since e.start.
		if until := int64(e.cfg.ConntrackPickup); !e.pickupEnded && int64(time.Since(e.start)) < until {
			ct.SetPickup(until)
			e.log.Debug("vNIC picks up TCP connections in progress", "id", id,
				"until", e.start.Add(e.cfg.ConntrackPickup).Format(time.RFC3339))
		}
		return ct, nil
	}
	st, err := ct.Import(data, pol, int64(time.Since(e.start)))
	if err != nil {
		ct.Release()
		return nil, fmt.Errorf("dataplane: vNIC %s: fw_import: %w", id, err)
	}
	e.log.Info("vNIC connection tracking imported", "id", id, "imported", st.Imported,
		"denied_by_policy", st.Denied, "table_full", st.Full)
	if st.Full > 0 {
		e.log.Warn("imported connections dropped: table full", "id", id, "dropped", st.Full,
			"conntrack_max", e.cfg.ConntrackMax)
	}
	return ct, nil
}
