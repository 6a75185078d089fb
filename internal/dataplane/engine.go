package dataplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/butterfly-go/butterfly/internal/antispoof"
	"github.com/butterfly-go/butterfly/internal/firewall"
	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/packet"
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
	// openNetnsTAP opens a TAP in a pod's namespace (see openNetnsTAP).
	openNetnsTAP func(n model.NIC, offload, restoring bool, log *slog.Logger) (port.Port, error)
	// openVhost creates a vhost-user server socket at path.
	openVhost func(path string, offload bool, log *slog.Logger) (vhostPort, error)
	openTrace func(path string) (traceWriter, error)
	// manual: no worker goroutines; tests call worker.iterate.
	manual bool
	// clock replaces time.Now for the engine's start and the workers'
	// clocks (tests that replay the same traffic on two engines).
	clock func() time.Time
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
	// taps holds the interface names of the TAP vNICs in the daemon's
	// namespace (not those created in a pod's, NIC.Netns).
	taps map[string]bool
	// removing holds, under removingMu, the TAP interfaces of deleted
	// vNICs not removed yet, by removalKey (the kernel takes 15 to 40 ms
	// per device; see tapRemoval). removers counts the
	// goroutines that remove them, of which removeParallel at a time
	// hold a slot of removeSlots.
	removingMu  sync.Mutex
	removing    map[string]*tapRemoval
	removers    sync.WaitGroup
	removeSlots chan struct{}
	// restoring: see SetRestoring.
	restoring bool
	// pickupEnded: see EndPickup.
	pickupEnded bool
	// What the next snapshot shares with the previous ones: the VNIs'
	// entries (a new map when a VNI comes or goes) and, per worker, the
	// slots it polls (copied on write). vniDirty lists the VNIs whose
	// member ports changed, portsDirty the workers whose ports changed
	// (woken at publish to update their epoll sets).
	vniConfs   map[uint32]*vniConf
	polls      [][]int
	vniDirty   map[uint32]bool
	portsDirty []bool
	// confs are the vNICs' snapshot entries by slot; the chunks marked
	// in owned are not shared with a published snapshot yet (setConf
	// copies the others before writing). touched lists the vNICs whose
	// entry must be built anew.
	confs   nicTable
	owned   []bool
	touched []*nicEntry
	under   underlay
	txUnder []underlay
	utrace  traceWriter
	// sgs are the security groups by id, as the model last set them;
	// members are their shared member sets (also for ids that rules
	// refer to but that do not exist); fwRules are the compiled rules by
	// list of groups (see compile); fwGen numbers compiled policies;
	// ctLimit bounds the tracked connections of all vNICs.
	sgs map[string]model.SG
	// sgList is the list of the last SetSecurityGroups, sorted by id.
	sgList []model.SG
	// polMark numbers the SetSecurityGroups calls: nicEntry.polMark
	// says a call already gave the vNIC a new policy.
	polMark uint64
	// byGroup lists the vNICs of each group id their lists name, so a
	// group change finds its vNICs without looking at the others.
	byGroup map[string]map[*nicEntry]struct{}
	members map[string]*firewall.MemberSet
	fwRules map[string]ruleSet
	// listsOf indexes the keys of fwRules by the groups of their list
	// (setRules, dropRules keep it).
	listsOf map[string]map[string]struct{}
	fwGen   uint64
	ctLimit *firewall.Limit
	// waits times quiesce: how long each change waited for the awake
	// workers to adopt it (butterfly_engine_worker_wait_seconds).
	waits prometheus.Histogram

	workers []*worker
	// With several workers: fwd[u][v] carries frames from worker u to
	// worker v (the owner of their output port), ret[u][v] returns
	// buffers of v's pool that u released (each buffer's Owner is the
	// worker whose pool it belongs to). Both nil with one worker.
	fwd, ret [][]*ring
	wg       sync.WaitGroup
	stop     atomic.Bool

	urx, decap, encap, utx, utraceEl *element
	// sources are the VTEPs datagrams are accepted from (nil: any) and
	// remoteFlood the flood lists of cluster mode by VNI (SetRemotes).
	sources     map[netip.Addr]struct{}
	remoteFlood map[uint32][]netip.AddrPort
	remoteMACs  map[uint32]map[packet.MAC]netip.AddrPort
	neighbors   map[uint32]map[netip.Addr]packet.MAC
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
	// spoof is the vNIC's anti-spoofing configuration (from its MAC and
	// addresses: a change of its groups reuses it). Read-only once made.
	spoof *antispoof.Config
	// touched: its snapshot entry is out of date (see touch).
	touched bool
	// polMark is the Engine.polMark of the last SetSecurityGroups that
	// rebuilt its policy.
	polMark uint64
}

var (
	_ model.Dataplane = (*Engine)(nil)
	_ model.SGUpdater = (*Engine)(nil)
)

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
	if h.openNetnsTAP == nil {
		h.openNetnsTAP = openNetnsTAP
	}
	if h.openTAP == nil {
		h.openTAP = openTAP
	}
	if h.openVhost == nil {
		readers := queueReaders(cfg.Workers)
		h.openVhost = func(path string, offload bool, log *slog.Logger) (vhostPort, error) {
			return openVhost(path, offload, readers, log)
		}
	}
	if h.openTrace == nil {
		h.openTrace = openPcap
	}
	e := &Engine{
		cfg:         cfg,
		log:         cfg.Logger,
		hooks:       h,
		start:       h.now(),
		nics:        make(map[string]*nicEntry),
		vnis:        make(map[uint32]*vniLong),
		taps:        make(map[string]bool),
		removing:    make(map[string]*tapRemoval),
		removeSlots: make(chan struct{}, removeParallel),

		vniConfs:   make(map[uint32]*vniConf),
		polls:      make([][]int, cfg.Workers),
		vniDirty:   make(map[uint32]bool),
		portsDirty: make([]bool, cfg.Workers),
		sgs:        make(map[string]model.SG),
		byGroup:    make(map[string]map[*nicEntry]struct{}),
		members:    make(map[string]*firewall.MemberSet),
		ctLimit:    firewall.NewLimit(cfg.ConntrackTotal),
		waits: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "butterfly_engine_worker_wait_seconds",
			Help: "Time a configuration change waited for the awake packet workers to move to it (a sleeping worker is not waited for).",
			// 1 µs to 1 s.
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 11),
		}),
	}
	if cfg.Cluster || len(cfg.HeadEnd) > 0 {
		e.sources = make(map[netip.Addr]struct{}, len(cfg.HeadEnd))
		for _, h := range cfg.HeadEnd {
			e.sources[h] = struct{}{}
		}
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
		e.fwd = make([][]*ring, cfg.Workers)
		e.ret = make([][]*ring, cfg.Workers)
		for u, w := range e.workers {
			var all []*packet.Buf
			for b := w.pool.Get(); b != nil; b = w.pool.Get() {
				all = append(all, b)
				b.Owner = u
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
	e.removers.Wait()
	return e.closeAll()
}

// closeParallel bounds the vNICs closeAll closes at once. The kernel
// takes about 15 ms to remove a TAP device, mostly waits (RCU grace
// periods) that overlap between devices: on this project's test machine
// 1,000 took 19 s one after the other and 1.7 s 32 at a time.
const closeParallel = 32

// removeParallel bounds the TAP devices of deleted vNICs removed at once
// (tapRemoval), each on an OS thread in a system call that the Go runtime
// keeps afterwards: 8 remove about 400 devices per second here.
const removeParallel = 8

func (e *Engine) closeAll() error {
	errs := closeNICs(e.nics)
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

// closeNICs closes the port and trace of every vNIC of nics, up to
// closeParallel at a time, and returns their errors.
func closeNICs(nics map[string]*nicEntry) []error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	ids := make(chan string)
	for range min(closeParallel, len(nics)) {
		wg.Go(func() {
			for id := range ids {
				n := nics[id]
				err := n.p.port.Close()
				if err != nil {
					err = fmt.Errorf("close vNIC %s: %w", id, err)
				}
				var terr error
				if n.tracer != nil {
					if terr = n.tracer.Close(); terr != nil {
						terr = fmt.Errorf("close trace of vNIC %s: %w", id, terr)
					}
				}
				if err != nil || terr != nil {
					mu.Lock()
					errs = append(errs, errors.Join(err, terr))
					mu.Unlock()
				}
			}
		})
	}
	for id := range nics {
		ids <- id
	}
	close(ids)
	wg.Wait()
	return errs
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
		drops:  newDropLog(e.cfg.Workers),
	}, pol: pol, spoof: antispoof.NewConfig(packet.MAC(n.MAC), n.IPs, n.IPAntiSpoof)}
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
	e.indexGroups(ent, nil, ent.nic.SecurityGroups)
	e.slots[slot] = ent
	e.touch(ent)
	if n.Type == model.NICTap && n.Netns == "" {
		e.taps[path] = true
	}
	v := e.vnis[n.VNI]
	v.members = append(v.members, uint32(slot))
	e.vniDirty[n.VNI] = true
	e.setPolled(ent.p.worker, slot, ent.p.port, true)
	e.addShares(ent.p)
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
	e.indexGroups(ent, ent.nic.SecurityGroups, n.SecurityGroups)
	ent.nic = n
	ent.pol = pol
	ent.spoof = antispoof.NewConfig(packet.MAC(n.MAC), n.IPs, n.IPAntiSpoof)
	e.touch(ent)
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
// A TAP interface, in the daemon's namespace or in a pod's, is removed in
// the background (errors are logged): a new vNIC taking its name in that
// namespace waits for it, and Close for every one.
func (e *Engine) DeleteNIC(id string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	ent, ok := e.nics[id]
	if !ok {
		return nil
	}
	delete(e.nics, id)
	e.indexGroups(ent, ent.nic.SecurityGroups, nil)
	if ent.nic.Netns == "" {
		delete(e.taps, ent.p.path)
	}
	slot := ent.p.slot
	e.slots[slot] = nil
	e.setConf(slot, nil)
	e.setPolled(ent.p.worker, slot, ent.p.port, false)
	e.removeShares(ent.p)
	if v := e.vnis[ent.nic.VNI]; v != nil {
		v.members = slices.DeleteFunc(v.members, func(x uint32) bool { return x == uint32(slot) })
		e.vniDirty[v.vni] = true
		if len(v.members) == 0 {
			e.detachVNI(v)
		}
	}
	gen := e.publishLocked()
	var errs []error
	// A TAP is removed in the background: the reply does not wait the
	// kernel's 15 to 40 ms, and a new vNIC taking its name (in the same
	// namespace) waits for it instead (tapName, openPort).
	var r *tapRemoval
	if ent.nic.Type == model.NICTap {
		r = e.newTAPRemoval(id, removalKey(ent.nic.Netns, ent.p.path), ent.p.port)
	}
	// The port is closed only once no worker can read it any more.
	e.release(gen, func() {
		ent.p.ct.Release()
		if r != nil {
			r.start()
		} else if err := removePort(ent.p.port); err != nil {
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
	if n := p.ct.PickedUp(); n != 0 {
		// Not a drop either: connections in progress tracked from the
		// middle after a restart (firewall.Conntrack.SetPickup).
		c.Drops["firewall_picked_up"] = n
	}
	addPortDrops(&c, p.port)
	c.Queues = queueCounters(p.port)
	return c, nil
}

// now is the time the engine's clocks read: time.Now, or the test's
// clock.
func (h *hooks) now() time.Time {
	if h.clock != nil {
		return h.clock()
	}
	return time.Now()
}

// since is the monotonic time elapsed since start, in nanoseconds, on
// the engine's clock: one clock read where now takes two (the wall
// clock's and the monotonic one's).
func (h *hooks) since(start time.Time) int64 {
	if h.clock != nil {
		return int64(h.clock().Sub(start))
	}
	return int64(time.Since(start))
}
