package dataplane

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/butterfly-go/butterfly/internal/antispoof"
	"github.com/butterfly-go/butterfly/internal/firewall"
	"github.com/butterfly-go/butterfly/internal/l2"
	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/pcap"
	"github.com/butterfly-go/butterfly/internal/port"
	"github.com/butterfly-go/butterfly/internal/vxlan"
)

const (
	// underPort is the switch port of the underlay in every VNI.
	underPort = ^uint32(0)
	// fdbSize and fdbMaxAge size each VNI's table of remote MACs.
	fdbSize   = 4096
	fdbMaxAge = 300 * time.Second
	// entropySockets is the number of extra underlay send sockets, bound
	// to ephemeral ports, that flows are spread over.
	entropySockets = 3
	// handoffRing is the capacity of a ring between two workers.
	handoffRing = 1024
)

// underlay is what the engine needs of the VXLAN underlay socket.
type underlay interface {
	port.Port
	JoinGroup(group netip.Addr) error
	LeaveGroup(group netip.Addr) error
}

// traceWriter is what the engine needs of a pcap writer.
type traceWriter interface {
	Capture(frame []byte, ts int64) bool
	Dropped() uint64
	Close() error
}

// hooks replace the engine's I/O in tests.
type hooks struct {
	openUnderlay func(cfg *Config) (underlay, error)
	// openEntropy opens an extra send socket (nil: none).
	openEntropy func(cfg *Config) (underlay, error)
	openTAP     func(name string, offload bool) (port.Port, string, error)
	// openVhost creates a vhost-user server socket at path.
	openVhost func(path string, offload bool, log *slog.Logger) (vhostPort, error)
	openTrace func(path string) (traceWriter, error)
	// manual: no worker goroutines; tests call worker.iterate.
	manual bool
}

// Engine is the packet engine. It implements model.Dataplane; its methods
// are safe for concurrent use.
type Engine struct {
	cfg   Config
	log   *slog.Logger
	hooks hooks

	snap atomic.Pointer[snapshot]

	mu     sync.Mutex // serializes the control plane
	gen    uint64
	closed bool
	nics   map[string]*nicEntry
	vnis   map[uint32]*vniLong
	slots  []*nicEntry
	nextW  int
	// taps holds the interface names of the TAP vNICs.
	taps map[string]bool
	// What the next snapshot shares with the previous ones: the VNIs'
	// entries (a new map when a VNI comes or goes) and, per worker, the
	// slots it polls (copied on write). vniDirty lists the VNIs whose
	// member ports changed, portsDirty the workers whose ports changed
	// (woken at publish to update their epoll sets).
	vniConfs   map[uint32]*vniConf
	polls      [][]int
	vniDirty   map[uint32]bool
	portsDirty []bool
	under      underlay
	txUnder    []underlay
	utrace     traceWriter
	// sgs are the security groups by id, as the model last set them;
	// members are their shared member sets (also for ids that rules
	// refer to but that do not exist); fwRules are the compiled rules by
	// list of groups (see compile); fwGen numbers compiled policies;
	// ctLimit bounds the tracked connections of all vNICs.
	sgs     map[string]model.SG
	members map[string]*firewall.MemberSet
	fwRules map[string]ruleSet
	fwGen   uint64
	ctLimit *firewall.Limit

	workers []*worker
	// With several workers: fwd[u][v] carries frames from worker u to
	// worker v (the owner of their output port), ret[u][v] returns
	// buffers of v's pool that u released, and owner maps every buffer
	// to the worker whose pool it belongs to. All nil with one worker.
	fwd, ret [][]*ring
	owner    map[*packet.Buf]int
	wg       sync.WaitGroup
	stop     atomic.Bool

	urx, decap, encap, utx, utraceEl *element
	// start is the origin of the workers' monotonic clock.
	start time.Time
}

// nicEntry is the control plane's record of a vNIC.
type nicEntry struct {
	nic    model.NIC
	p      *nicPort
	tracer traceWriter
	// tracePath is the path tracer writes.
	tracePath string
	// pol is the vNIC's compiled firewall policy.
	pol *firewall.Policy
	// conf is the vNIC's entry in the last snapshot; stale marks it out
	// of date (publishLocked rebuilds it).
	conf  *nicConf
	stale bool
}

var _ model.Dataplane = (*Engine)(nil)

// New starts an engine: it opens the underlay socket (VTEP:4789) and
// starts the workers.
func New(cfg Config) (*Engine, error) {
	return newEngine(cfg, hooks{})
}

func newEngine(cfg Config, h hooks) (*Engine, error) {
	cfg.HeadEnd = append([]netip.Addr(nil), cfg.HeadEnd...)
	cfg.CPUs = append([]int(nil), cfg.CPUs...)
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	if h.openUnderlay == nil {
		h.openUnderlay = openUDPUnderlay
		if h.openEntropy == nil {
			h.openEntropy = openUDPEntropy
		}
	}
	if h.openTAP == nil {
		h.openTAP = openTAP
	}
	if h.openVhost == nil {
		h.openVhost = openVhost
	}
	if h.openTrace == nil {
		h.openTrace = openPcap
	}
	e := &Engine{
		cfg:   cfg,
		log:   cfg.Logger,
		hooks: h,
		start: time.Now(),
		nics:  make(map[string]*nicEntry),
		vnis:  make(map[uint32]*vniLong),
		taps:  make(map[string]bool),

		vniConfs:   make(map[uint32]*vniConf),
		polls:      make([][]int, cfg.Workers),
		vniDirty:   make(map[uint32]bool),
		portsDirty: make([]bool, cfg.Workers),
		sgs:        make(map[string]model.SG),
		members:    make(map[string]*firewall.MemberSet),
		ctLimit:    firewall.NewLimit(cfg.ConntrackTotal),
	}
	vt := "vtep4"
	if cfg.VTEP.Is6() {
		vt = "vtep6"
	}
	e.urx = newElement("underlay-rx", "underlay", cfg.Workers)
	e.decap = newElement("vxlan-decap", vt, cfg.Workers)
	e.encap = newElement("vxlan-encap", vt, cfg.Workers)
	e.utx = newElement("underlay-tx", "underlay", cfg.Workers)
	e.utraceEl = newElement("trace", "underlay", cfg.Workers)

	u, err := h.openUnderlay(&cfg)
	if err != nil {
		return nil, fmt.Errorf("dataplane: underlay on %v:%d: %w", cfg.VTEP, vxlan.Port, err)
	}
	e.under = u
	e.txUnder = []underlay{u}
	for i := 0; h.openEntropy != nil && i < entropySockets; i++ {
		x, err := h.openEntropy(&cfg)
		if err != nil {
			e.log.Warn("underlay send socket not opened: less ECMP entropy", "err", err)
			break
		}
		e.txUnder = append(e.txUnder, x)
	}
	if cfg.TraceUnderlay != "" {
		t, err := h.openTrace(cfg.TraceUnderlay)
		if err != nil {
			for _, x := range e.txUnder {
				x.Close()
			}
			return nil, fmt.Errorf("dataplane: underlay trace %s: %w", cfg.TraceUnderlay, err)
		}
		e.utrace = t
	}
	for i := 0; i < cfg.Workers; i++ {
		cpu := -1
		if len(cfg.CPUs) > 0 {
			cpu = cfg.CPUs[i%len(cfg.CPUs)]
		}
		w, err := newWorker(e, i, cpu)
		if err != nil {
			e.closeAll()
			return nil, err
		}
		e.workers = append(e.workers, w)
	}
	if cfg.Workers > 1 {
		e.owner = map[*packet.Buf]int{}
		e.fwd = make([][]*ring, cfg.Workers)
		e.ret = make([][]*ring, cfg.Workers)
		for u, w := range e.workers {
			var all []*packet.Buf
			for b := w.pool.Get(); b != nil; b = w.pool.Get() {
				all = append(all, b)
				e.owner[b] = u
			}
			for _, b := range all {
				w.pool.Put(b)
			}
			e.fwd[u] = make([]*ring, cfg.Workers)
			e.ret[u] = make([]*ring, cfg.Workers)
			for v := range e.workers {
				e.fwd[u][v] = newRing(handoffRing)
				e.ret[u][v] = newRing(cfg.PoolSize)
			}
		}
	}
	for _, w := range e.workers {
		w.refillRx()
	}
	e.publishLocked()
	if !h.manual {
		for _, w := range e.workers {
			e.wg.Add(1)
			go w.run()
		}
	}
	e.log.Info("dataplane started", "vtep", cfg.VTEP, "workers", cfg.Workers,
		"underlay_mtu", cfg.UnderlayMTU, "head_end", len(cfg.HeadEnd) > 0)
	return e, nil
}

// Close stops the workers and releases every port.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	e.stop.Store(true)
	for _, w := range e.workers {
		w.wake()
	}
	e.wg.Wait()
	return e.closeAll()
}

func (e *Engine) closeAll() error {
	var errs []error
	for id, n := range e.nics {
		if err := n.p.port.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close vNIC %s: %w", id, err))
		}
		if n.tracer != nil {
			if err := n.tracer.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close trace of vNIC %s: %w", id, err))
			}
		}
	}
	e.nics = map[string]*nicEntry{}
	for _, u := range e.txUnder {
		if err := u.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close underlay: %w", err))
		}
	}
	if e.utrace != nil {
		if err := e.utrace.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close underlay trace: %w", err))
		}
	}
	for _, w := range e.workers {
		w.close()
	}
	return errors.Join(errs...)
}

// AddNIC creates the vNIC's port and attaches it to its VNI. n.Import,
// when set, is loaded into the vNIC's connection tracking first (see
// newConntrack); invalid data fails the call and nothing is created.
func (e *Engine) AddNIC(n model.NIC) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return "", errors.New("dataplane: engine closed")
	}
	if _, ok := e.nics[n.ID]; ok {
		return "", fmt.Errorf("dataplane: vNIC %q already exists", n.ID)
	}
	switch n.Type {
	case model.NICTap:
	case model.NICVhostUser:
	case model.NICBench:
		return "", errors.New("BENCH vNICs are not supported")
	default:
		return "", fmt.Errorf("dataplane: unknown vNIC type %d", n.Type)
	}
	if n.VNI >= 1<<24 {
		return "", fmt.Errorf("dataplane: VNI %d does not fit 24 bits", n.VNI)
	}
	slot := -1
	for i, s := range e.slots {
		if s == nil {
			slot = i
			break
		}
	}
	if slot < 0 {
		if len(e.slots) >= maxSlots {
			return "", fmt.Errorf("dataplane: too many vNICs (%d)", len(e.slots))
		}
		slot = len(e.slots)
		e.slots = append(e.slots, nil)
	}
	pol, err := e.compile(n)
	if err != nil {
		return "", err
	}
	ct, err := e.newConntrack(n.ID, pol, n.Import)
	if err != nil {
		return "", err
	}
	n.Import = nil
	p, path, tsoOK, err := e.openPort(n)
	if err != nil {
		ct.Release()
		return "", err
	}
	ent := &nicEntry{nic: n, p: &nicPort{
		id:     n.ID,
		slot:   slot,
		worker: e.nextW % e.cfg.Workers,
		port:   p,
		path:   path,
		gro:    !e.cfg.NoOffload,
		tsoOK:  tsoOK,
		rx:     newElement("port-rx", n.ID, e.cfg.Workers),
		anti:   newElement("antispoof", "antispoof-"+n.ID, e.cfg.Workers),
		fw:     newElement("firewall", "firewall-"+n.ID, e.cfg.Workers),
		ct:     ct,
		trace:  newElement("trace", "trace-"+n.ID, e.cfg.Workers),
		tx:     newElement("port-tx", n.ID, e.cfg.Workers),
	}, pol: pol}
	if n.PacketTrace {
		if err := e.openNICTrace(ent, n); err != nil {
			p.Close()
			ct.Release()
			return "", err
		}
	}
	if _, err := e.attachVNI(n.VNI); err != nil {
		p.Close()
		ct.Release()
		if ent.tracer != nil {
			ent.tracer.Close()
		}
		return "", err
	}
	e.nextW++
	ent.nic.Path = path
	e.nics[n.ID] = ent
	e.slots[slot] = ent
	if n.Type == model.NICTap {
		e.taps[path] = true
	}
	v := e.vnis[n.VNI]
	v.members = append(v.members, uint32(slot))
	e.vniDirty[n.VNI] = true
	e.setPolled(ent.p.worker, slot, true)
	// Return once no worker can use the old configuration, so that the
	// VM's first frames after nic_add's reply meet the new one.
	e.quiesce(e.publishLocked())
	e.log.Info("vNIC added", "id", n.ID, "path", path, "vni", n.VNI, "worker", ent.p.worker)
	return path, nil
}

// UpdateNIC applies a vNIC's new IPs, anti-spoofing, bypass and trace
// settings.
func (e *Engine) UpdateNIC(n model.NIC) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	ent, ok := e.nics[n.ID]
	if !ok {
		return fmt.Errorf("dataplane: vNIC %q does not exist", n.ID)
	}
	old := ent.nic
	pol := ent.pol
	if !slices.Equal(n.IPs, old.IPs) || !slices.Equal(n.SecurityGroups, old.SecurityGroups) {
		p, err := e.compile(n)
		if err != nil {
			return err
		}
		pol = p
	}
	var oldTracer traceWriter
	switch {
	case n.PacketTrace && (ent.tracer == nil || e.tracePath(n) != ent.tracePath):
		prev := ent.tracer
		if err := e.openNICTrace(ent, n); err != nil {
			return err
		}
		oldTracer = prev
	case !n.PacketTrace && ent.tracer != nil:
		oldTracer = ent.tracer
		ent.tracer = nil
		ent.tracePath = ""
	}
	// ID, MAC, VNI and type never change through an update.
	n.MAC, n.VNI, n.Type, n.Path = old.MAC, old.VNI, old.Type, old.Path
	ent.nic = n
	ent.pol = pol
	ent.stale = true
	// Return once no worker can use the old configuration (nor the old
	// trace).
	gen := e.publishLocked()
	if oldTracer != nil {
		e.release(gen, func() {
			if err := oldTracer.Close(); err != nil {
				e.log.Warn("closing packet trace", "id", n.ID, "err", err)
			}
		})
	} else {
		e.quiesce(gen)
	}
	return nil
}

// DeleteNIC removes the vNIC; its port is closed once no worker uses it.
func (e *Engine) DeleteNIC(id string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	ent, ok := e.nics[id]
	if !ok {
		return nil
	}
	delete(e.nics, id)
	delete(e.taps, ent.p.path)
	slot := ent.p.slot
	e.slots[slot] = nil
	e.setPolled(ent.p.worker, slot, false)
	if v := e.vnis[ent.nic.VNI]; v != nil {
		v.members = slices.DeleteFunc(v.members, func(x uint32) bool { return x == uint32(slot) })
		e.vniDirty[v.vni] = true
		if len(v.members) == 0 {
			e.detachVNI(v)
		}
	}
	gen := e.publishLocked()
	var errs []error
	// The port is closed only once no worker can read it any more.
	e.release(gen, func() {
		ent.p.ct.Release()
		if err := ent.p.port.Close(); err != nil {
			errs = append(errs, fmt.Errorf("dataplane: close vNIC %s: %w", id, err))
		}
		if ent.tracer != nil {
			if err := ent.tracer.Close(); err != nil {
				errs = append(errs, fmt.Errorf("dataplane: close trace of vNIC %s: %w", id, err))
			}
		}
	})
	e.log.Info("vNIC deleted", "id", id)
	return errors.Join(errs...)
}

// Stats returns the vNIC's byte counters: In from the VM, Out to it.
func (e *Engine) Stats(id string) (model.NICStats, error) {
	c, err := e.Counters(id)
	if err != nil {
		return model.NICStats{}, err
	}
	return model.NICStats{In: c.RxBytes, Out: c.TxBytes}, nil
}

// Counters returns the vNIC's packet and byte counters and its drops by
// reason (drops at its port-rx, antispoof, trace and port-tx elements;
// port-rx also counts the drops of its frames further down the graph).
func (e *Engine) Counters(id string) (model.NICCounters, error) {
	e.mu.Lock()
	ent, ok := e.nics[id]
	e.mu.Unlock()
	if !ok {
		return model.NICCounters{}, fmt.Errorf("dataplane: vNIC %q does not exist", id)
	}
	p := ent.p
	var c model.NICCounters
	var drops [numDrops]uint64
	c.RxPackets, c.RxBytes, drops = p.rx.totals()
	for _, el := range []*element{p.anti, p.fw, p.trace} {
		_, _, d := el.totals()
		for r := range d {
			drops[r] += d[r]
		}
	}
	var d [numDrops]uint64
	c.TxPackets, c.TxBytes, d = p.tx.totals()
	for r := range d {
		drops[r] += d[r]
	}
	c.Drops = map[string]uint64{}
	for r, v := range drops {
		if v != 0 {
			c.Drops[dropName(dropReason(r))] = v
		}
	}
	if n := p.ct.Evicted(); n != 0 {
		// Not a packet drop: half-open flows of peers removed from a
		// full table (firewall.Conntrack.Evicted).
		c.Drops["firewall_evicted"] = n
	}
	addPortDrops(&c, p.port)
	return c, nil
}

// traceFile resolves a vNIC's trace path (default pcap.FileName) in
// cfg.TraceDir.
func (e *Engine) traceFile(n model.NIC) (string, error) {
	name := n.TracePath
	if name == "" {
		name = pcap.FileName(os.Getpid(), n.ID)
	}
	return e.cfg.TraceDir.Resolve(name)
}

// tracePath is the file a vNIC's trace goes to; a path the trace
// directory refuses is returned as given, for openNICTrace to report.
func (e *Engine) tracePath(n model.NIC) string {
	p, err := e.traceFile(n)
	if err != nil {
		return n.TracePath
	}
	return p
}

// openNICTrace opens the vNIC's trace: its path must be in the trace
// directory and not used by another trace of this engine.
func (e *Engine) openNICTrace(ent *nicEntry, n model.NIC) error {
	path, err := e.traceFile(n)
	if err != nil {
		return fmt.Errorf("dataplane: vNIC %s: packet trace: %w", n.ID, err)
	}
	if path == e.cfg.TraceUnderlay {
		return fmt.Errorf("dataplane: vNIC %s: packet trace %s: the underlay trace writes it", n.ID, path)
	}
	for id, o := range e.nics {
		if o != ent && o.tracer != nil && o.tracePath == path {
			return fmt.Errorf("dataplane: vNIC %s: packet trace %s: vNIC %s traces to it", n.ID, path, id)
		}
	}
	if err := e.cfg.TraceDir.Prepare(); err != nil {
		return fmt.Errorf("dataplane: vNIC %s: packet trace: %w", n.ID, err)
	}
	t, err := e.hooks.openTrace(path)
	if err != nil {
		return fmt.Errorf("dataplane: vNIC %s: packet trace %s: %w", n.ID, path, err)
	}
	ent.tracer = t
	ent.tracePath = path
	return nil
}

// attachVNI returns the VNI's long-lived state, creating it (and joining
// its multicast group) for its first vNIC.
func (e *Engine) attachVNI(vni uint32) (*vniLong, error) {
	if v, ok := e.vnis[vni]; ok {
		return v, nil
	}
	v := &vniLong{
		vni: vni,
		sw:  newElement("switch", fmt.Sprintf("switch-%d", vni), e.cfg.Workers),
		l2:  l2.New(vni, l2.Options{}),
		fdb: vxlan.NewFDB(fdbSize, fdbMaxAge),
	}
	if len(e.cfg.HeadEnd) == 0 {
		g := floodGroup(vni, e.cfg.VTEP.Is6())
		if err := e.under.JoinGroup(g); err != nil {
			return nil, fmt.Errorf("dataplane: VNI %d: join %v: %w", vni, g, err)
		}
		v.group = g
	}
	e.vnis[vni] = v
	c := &vniConf{vniLong: v}
	if v.group.IsValid() {
		c.flood = []netip.AddrPort{netip.AddrPortFrom(v.group, vxlan.Port)}
	}
	for _, h := range e.cfg.HeadEnd {
		c.flood = append(c.flood, netip.AddrPortFrom(h, vxlan.Port))
	}
	confs := maps.Clone(e.vniConfs)
	confs[vni] = c
	e.vniConfs = confs
	return v, nil
}

// floodGroup returns the VNI's multicast group (vxlan.MulticastGroup). The
// original's IPv6 groups are ff00::<vni>, scope 0, which Linux drops on
// receive (RFC 4291 2.7 reserves scope 0): such a group gets scope 5,
// site-local (ff05::<vni>).
func floodGroup(vni uint32, v6 bool) netip.Addr {
	g := vxlan.MulticastGroup(vni, v6)
	if b := g.As16(); g.Is6() && b[1]&0x0f == 0 {
		b[1] |= 0x05
		g = netip.AddrFrom16(b)
	}
	return g
}

// detachVNI forgets the VNI (and leaves its group); it has no vNIC left.
func (e *Engine) detachVNI(v *vniLong) {
	delete(e.vnis, v.vni)
	confs := maps.Clone(e.vniConfs)
	delete(confs, v.vni)
	e.vniConfs = confs
	if v.group.IsValid() {
		if err := e.under.LeaveGroup(v.group); err != nil {
			e.log.Warn("leaving multicast group", "vni", v.vni, "group", v.group, "err", err)
		}
	}
}

// publishLocked publishes a snapshot of the current configuration and
// returns its generation. Its cost follows the change, not the size of
// the configuration: the entries of unchanged vNICs, the VNIs and the
// poll lists of unchanged workers are shared with the previous snapshot
// (only the slot array of pointers is copied). Only the workers whose set
// of ports changed are woken, to update their epoll set; the others pick
// the snapshot up at their next batch, or when they wake.
func (e *Engine) publishLocked() uint64 {
	e.gen++
	s := &snapshot{
		gen:     e.gen,
		nics:    make([]*nicConf, len(e.slots)),
		vnis:    e.vniConfs,
		polls:   e.polls,
		under:   e.under,
		txUnder: e.txUnder,
		underFd: -1,
		utrace:  e.utrace,
		vtep:    e.cfg.VTEP,
	}
	if e.under != nil {
		s.underFd = e.under.Fd()
	}
	s.mtu = vxlan.InnerMTU(e.cfg.UnderlayMTU, e.cfg.VTEP.Is6()) + packet.EthernetLen
	s.mtuInner4 = uint16(s.mtu - 14)
	s.mtuInner6 = uint32(s.mtu - 14)
	for slot, ent := range e.slots {
		if ent == nil {
			continue
		}
		s.nics[slot] = e.nicConfOf(ent)
	}
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

// nicConfOf returns the snapshot entry of ent: the one of the previous
// snapshot while nothing it holds changed, else a new one.
func (e *Engine) nicConfOf(ent *nicEntry) *nicConf {
	pol := ent.pol
	if ent.nic.Bypass {
		pol = nil
	}
	if c := ent.conf; c != nil && !ent.stale && c.pol == pol && c.tracer == ent.tracer {
		return c
	}
	ent.conf = &nicConf{
		nicPort: ent.p,
		mac:     ent.nic.MAC,
		vni:     e.vniConfs[ent.nic.VNI],
		bypass:  ent.nic.Bypass,
		spoof:   antispoof.NewConfig(packet.MAC(ent.nic.MAC), ent.nic.IPs, ent.nic.IPAntiSpoof),
		pol:     pol,
		tracer:  ent.tracer,
	}
	ent.stale = false
	return ent.conf
}

// setPolled adds (or removes) slot to the ports worker w polls; the
// lists are copied on write, as snapshots share them.
func (e *Engine) setPolled(w, slot int, on bool) {
	polls := slices.Clone(e.polls)
	if on {
		polls[w] = append(slices.Clone(polls[w]), slot)
	} else {
		polls[w] = slices.DeleteFunc(slices.Clone(polls[w]), func(x int) bool { return x == slot })
	}
	e.polls = polls
	e.portsDirty[w] = true
}

// quiesce waits until no worker can still use a snapshot older than gen,
// so that resources only older snapshots referenced can be released: a
// worker is past it once it has moved to generation gen or later, or
// while it sleeps in epoll (it holds no configuration there: it loads the
// newest snapshot before it touches a port again). It reports false when
// a worker did not get there within cfg.StallTimeout; that worker is
// logged as stuck.
func (e *Engine) quiesce(gen uint64) bool {
	if e.hooks.manual {
		return true
	}
	deadline := time.Now().Add(e.cfg.StallTimeout)
	for _, w := range e.workers {
		for !w.pastGen(gen) {
			if time.Now().After(deadline) {
				e.log.Error("worker stuck: it has not reached the new configuration; resources it may use stay open until it does",
					"worker", w.id, "tid", w.tid.Load(), "gen", gen, "at", w.ack.Load())
				return false
			}
			time.Sleep(20 * time.Microsecond)
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
