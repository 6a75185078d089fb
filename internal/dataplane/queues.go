package dataplane

import (
	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/port"
	"github.com/butterfly-go/butterfly/internal/port/vhostuser"
)

// Multiqueue vNICs over several workers. A vhost-user port with several
// queue pairs is read by up to min(workers, 8) workers: its home worker
// (nicPort.worker) reads the pairs q with q%n == 0 through the port
// itself, worker (home+k)%W reads those with q%n == k through the port's
// reader k (a share). The home worker alone writes the port (its
// WriteBatch spreads frames over every enabled receive queue by flow
// hash) and owns the vNIC's connection tracking and trace, so a share
// passes the frames it reads to the home worker through the handoff
// rings, unless the vNIC has no firewall and no trace: then the share
// switches them itself. Each frame is counted once, by the worker that
// handles it, on the per-worker counters of the vNIC's elements.

// splitPort is a port whose transmit side several workers can read
// (vhostuser.Port with Options.Readers).
type splitPort interface {
	Readers() int
	Reader(k int) port.Port
}

// share is a worker reading some of a vNIC's queues, and the port it
// reads them through.
type share struct {
	worker int
	p      port.Port
}

// queueReaders is the number of workers a multiqueue vNIC is read by.
func queueReaders(workers int) int { return min(workers, vhostuser.MaxQueuePairs) }

// addShares makes the workers after p's home worker poll the readers of
// a port that has several (e.mu held).
func (e *Engine) addShares(p *nicPort) {
	sp, ok := p.port.(splitPort)
	if !ok {
		return
	}
	for k := 1; k < sp.Readers(); k++ {
		sh := share{worker: (p.worker + k) % e.cfg.Workers, p: sp.Reader(k)}
		p.shares = append(p.shares, sh)
		e.setPolled(sh.worker, p.slot, sh.p, true)
	}
}

// removeShares stops the polling of p's readers (e.mu held).
func (e *Engine) removeShares(p *nicPort) {
	for _, sh := range p.shares {
		e.setPolled(sh.worker, p.slot, sh.p, false)
	}
}

// rxShare reads a batch from the queues of a vNIC this worker reads for
// its home worker, counts it on port-rx and switches it here when the
// vNIC has neither firewall nor trace; otherwise it hands every frame to
// the home worker (dropped, as handoff_full, when that ring is full).
func (w *worker) rxShare(s *snapshot, nic *nicConf) int {
	p := w.ports[nic.slot]
	if p == nil {
		return 0
	}
	if w.rxn == 0 {
		w.refillRx()
		if w.rxn == 0 {
			w.poolEmpty.Add(1)
			return 0
		}
	}
	n, err := p.ReadBatch(w.rx[:w.rxn])
	if err != nil {
		nic.rx.drop(w.id, dropRxError)
		if n <= 0 {
			w.portFailed(nic.slot, p.Fd(), nic.id, err)
			return 0
		}
	}
	if n <= 0 {
		return 0
	}
	n = min(n, w.rxn)
	if nic.pol == nil && nic.tracer == nil {
		return w.forwardRead(s, nic, p, n)
	}
	var bytes uint64
	q := w.e.fwd[w.id][nic.worker]
	for _, b := range w.rx[:n] {
		bytes += uint64(b.Len())
		if !q.push(handoff{b: b, to: nic.nicPort, fromVM: true}) {
			nic.rx.drop(w.id, dropHandoffFull)
			w.recordDrop(nic.nicPort, dropHandoffFull, b.Bytes())
			w.put(b)
		}
	}
	nic.rx.add(w.id, uint64(n), bytes)
	w.pushed |= 1 << nic.worker
	w.take(n)
	w.flushAll()
	completeReads(p)
	return n
}

// shareIn takes a frame another worker read from a queue of a vNIC this
// worker is the home of, batching the frames of one vNIC for fromVM.
func (w *worker) shareIn(s *snapshot, h handoff) {
	if len(w.share) > 0 && (w.shareFrom != h.to || len(w.share) == cap(w.share)) {
		w.shareFlush(s)
	}
	w.shareFrom = h.to
	w.share = append(w.share, h.b)
}

// shareFlush processes the batch shareIn gathered (port-rx counted them
// already, on the worker that read them).
func (w *worker) shareFlush(s *snapshot) {
	if len(w.share) == 0 {
		return
	}
	p := w.shareFrom
	if nic := s.nics.of(p); nic != nil {
		w.countFromVM(nic, w.fromVM(s, nic, w.share))
	} else { // the vNIC left meanwhile
		for _, b := range w.share {
			w.put(b)
		}
	}
	clear(w.share)
	w.share = w.share[:0]
	w.shareFrom = nil
}

var _ splitPort = (*vhostuser.Port)(nil)

// queueCounters returns the frames of each queue pair of a vhost-user
// port whose guest used more than one, nil for other ports.
func queueCounters(p port.Port) []model.QueueCounters {
	vp, ok := p.(*vhostuser.Port)
	if !ok {
		return nil
	}
	qs := vp.QueueStats()
	if len(qs) < 2 {
		return nil
	}
	out := make([]model.QueueCounters, len(qs))
	for i, q := range qs {
		out[i] = model.QueueCounters{RxPackets: q.In, TxPackets: q.Out}
	}
	return out
}
