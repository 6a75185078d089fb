package dataplane

import (
	"slices"
	"time"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port"
	"github.com/butterfly-go/butterfly/internal/spinwait"
	"github.com/butterfly-go/butterfly/internal/vxlan"
)

// publishLocked publishes a snapshot of the current configuration and
// returns its generation. Its cost follows the change, not the size of
// the configuration: only the entries of the vNICs touched since are
// built, those of the others (in chunks of nicChunk slots), the VNIs and
// the poll lists of unchanged workers are shared with the previous
// snapshot. Only the workers whose set
// of ports changed are woken, to update their epoll set; the others pick
// the snapshot up at their next batch, or when they wake.
func (e *Engine) publishLocked() uint64 {
	e.gen++
	s := &snapshot{
		gen:     e.gen,
		vnis:    e.vniConfs,
		polls:   e.polls,
		under:   e.under,
		txUnder: e.txUnder,
		underFd: -1,
		utrace:  e.utrace,
		vtep:    e.cfg.VTEP,
		sources: e.sources,
	}
	if e.under != nil {
		s.underFd = e.under.Fd()
	}
	s.mtu = vxlan.InnerMTU(e.cfg.UnderlayMTU, e.cfg.VTEP.Is6()) + packet.EthernetLen
	s.mtuInner4 = uint16(s.mtu - 14)
	s.mtuInner6 = uint32(s.mtu - 14)
	for _, ent := range e.touched {
		ent.touched = false
		if slot := ent.p.slot; e.slots[slot] == ent {
			e.setConf(slot, e.nicConf(ent))
		}
	}
	e.touched = e.touched[:0]
	e.growConfs(len(e.slots))
	e.confs.n = len(e.slots)
	s.nics = nicTable{chunks: slices.Clone(e.confs.chunks), n: e.confs.n}
	clear(e.owned)
	for vni := range e.vniDirty {
		if v := e.vnis[vni]; v != nil {
			ports := slices.Clone(v.members)
			if s.under != nil {
				ports = append(ports, underPort)
			}
			v.l2.SetPorts(ports)
		}
		delete(e.vniDirty, vni)
	}
	vnis := s.vnis
	s.known = func(vni uint32) bool { return vnis[vni] != nil }
	e.snap.Store(s)
	for w, dirty := range e.portsDirty {
		if dirty {
			e.workers[w].wake()
			e.portsDirty[w] = false
		}
	}
	return s.gen
}

// setConf sets the snapshot entry of slot for the next snapshot. A chunk
// the published snapshots share is copied first. e.mu must be held.
func (e *Engine) setConf(slot int, c *nicConf) {
	e.growConfs(slot + 1)
	i := slot / nicChunk
	if !e.owned[i] {
		chunk := *e.confs.chunks[i]
		e.confs.chunks[i] = &chunk
		e.owned[i] = true
	}
	e.confs.chunks[i][slot%nicChunk] = c
}

// growConfs adds chunks to e.confs until it has room for n slots.
func (e *Engine) growConfs(n int) {
	for len(e.confs.chunks)*nicChunk < n {
		e.confs.chunks = append(e.confs.chunks, new([nicChunk]*nicConf))
		e.owned = append(e.owned, true)
	}
}

// touch marks ent's snapshot entry out of date: the next publishLocked
// builds it anew. Every change of what nicConf holds calls it. e.mu must
// be held.
func (e *Engine) touch(ent *nicEntry) {
	if !ent.touched {
		ent.touched = true
		e.touched = append(e.touched, ent)
	}
}

// nicConf builds ent's snapshot entry.
func (e *Engine) nicConf(ent *nicEntry) *nicConf {
	pol := ent.pol
	if ent.nic.Bypass {
		pol = nil
	}
	return &nicConf{
		nicPort: ent.p,
		mac:     ent.nic.MAC,
		vni:     e.vniConfs[ent.nic.VNI],
		bypass:  ent.nic.Bypass,
		spoof:   ent.spoof,
		pol:     pol,
		tracer:  ent.tracer,
	}
}

// setPolled adds port p in slot to the ports worker w polls (or removes
// it) in the next snapshot: the poll lists are copied on write, as
// snapshots share them, and the worker is told the change itself, so that
// it updates its epoll set without looking at its other ports.
func (e *Engine) setPolled(w, slot int, p port.Port, on bool) {
	polls := slices.Clone(e.polls)
	if on {
		polls[w] = append(slices.Clone(polls[w]), slot)
	} else {
		polls[w] = slices.DeleteFunc(slices.Clone(polls[w]), func(x int) bool { return x == slot })
	}
	e.polls = polls
	e.portsDirty[w] = true
	wk := e.workers[w]
	wk.deltaMu.Lock()
	wk.deltas = append(wk.deltas, portDelta{gen: e.gen + 1, slot: slot, p: p, add: on})
	wk.deltaMu.Unlock()
}

// quiesce waits until no worker can still use a snapshot older than gen,
// so that resources only older snapshots referenced can be released: a
// worker is past it once it has moved to generation gen or later, or
// while it sleeps in epoll (it holds no configuration there: it loads the
// newest snapshot before it touches a port again). It reports false when
// a worker did not get there within cfg.StallTimeout; that worker is
// logged as stuck. The wait is timed in e.waits.
func (e *Engine) quiesce(gen uint64) bool {
	if e.hooks.manual {
		return true
	}
	start := time.Now()
	defer func() { e.waits.Observe(time.Since(start).Seconds()) }()
	deadline := start.Add(e.cfg.StallTimeout)
	for _, w := range e.workers {
		// A busy worker moves on at its next batch, within microseconds.
		if !spinwait.Until(func() bool { return w.pastGen(gen) }, deadline) {
			e.log.Error("worker stuck: it has not reached the new configuration; resources it may use stay open until it does",
				"worker", w.id, "tid", w.tid.Load(), "gen", gen, "at", w.ack.Load())
			return false
		}
	}
	return true
}

// release runs free once no worker can use a snapshot older than gen: at
// once when quiesce confirms it, else (a stuck worker) in the background
// when the workers get there, or when the engine closes. A port is thus
// never closed while a worker may still read it.
func (e *Engine) release(gen uint64, free func()) {
	if e.quiesce(gen) {
		free()
		return
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for !e.stop.Load() {
			past := true
			for _, w := range e.workers {
				past = past && w.pastGen(gen)
			}
			if past {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		e.log.Info("stuck worker moved on: releasing what it held", "gen", gen)
		free()
	}()
}
