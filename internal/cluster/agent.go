package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/dataplane"
	"github.com/butterfly-go/butterfly/internal/model"
)

// Config configures an Agent.
type Config struct {
	// Endpoints are etcd's client URLs.
	Endpoints []string
	// Node is this daemon's node name, VTEP its VXLAN address and
	// Version its version (registered in etcd).
	Node    string
	VTEP    netip.Addr
	Version string
	// Prefix is the key prefix (starts and ends with '/').
	Prefix string
	// CA, Cert and Key are the TLS files ("" = plain).
	CA, Cert, Key string
	// Store is the daemon's store; the Agent is its only writer in
	// cluster mode. StoreOptions are the options it was created with.
	Store        *model.Store
	StoreOptions model.Options
	// Remotes receives the other nodes' VTEPs (*dataplane.Engine).
	Remotes interface {
		SetRemotes(dataplane.Remotes) error
	}
	// Persist saves the store's changes (the state file); nil = not.
	Persist func(model.Change) error
	// RemotesFile keeps the last remotes given to the dataplane, so that
	// a daemon restarted while etcd is down forwards to the other nodes
	// as before ("" = not kept).
	RemotesFile string
	// LeaseTTL is the node's lease (default 5 s): a node whose daemon
	// stops renewing it leaves the other nodes' flood lists that long
	// after.
	LeaseTTL time.Duration
	// Timeout bounds each etcd request of an API mutation (default 5 s).
	Timeout time.Duration
	// HoldDown is how long the removal of a group's rules or members,
	// or of a group, waits before it is enforced (default 1 s; additions
	// apply at once): an orchestrator that replays a group by
	// re-creating it empty and re-adding its rules within it cuts no flow.
	HoldDown time.Duration
	// NoARPSuppression leaves the addresses of the cluster's vNICs out
	// of the remotes: ARP requests and neighbour solicitations for them
	// flood to the VNI's nodes instead of being answered locally.
	NoARPSuppression bool
	Logger           *slog.Logger
}

// Agent keeps the daemon's store and dataplane in line with etcd and
// writes the API's mutations to etcd.
type Agent struct {
	cfg    Config
	layout Layout
	cli    *clientv3.Client
	log    *slog.Logger

	// mu guards what follows; apply runs under it.
	mu      sync.Mutex
	view    *View
	applied int64 // etcd revision the store reflects
	// notify is closed (and replaced) whenever applied grows.
	notify    chan struct{}
	applyErrs map[string]error // by "nic X" / "sg X"
	remotes   dataplane.Remotes
	pushed    bool
	connected bool
	lastErr   string
	lastSeen  map[string]time.Time
	lastAlive map[string]bool // the nodes live at the last apply
	resyncs   uint64
	// pending are the groups whose removals are deferred, with when
	// they were first deferred; timer runs the apply that enforces them.
	pending map[string]time.Time
	timer   *time.Timer
	closed  bool
	// imports are the fw_import data of nic_add requests in flight, by
	// vNIC id, given to the vNIC's creation when its record is applied.
	imports map[string][]byte
	// The objects the next apply diffs: every one after a full read
	// (dirtyAll), else the groups and this node's vNICs whose keys
	// changed since the last apply (besides the groups whose removals
	// wait and the objects the store refused, always diffed again).
	dirtyAll  bool
	dirtyNICs map[string]bool
	dirtySGs  map[string]bool
}

// New returns an Agent for cfg. It does not contact etcd yet (Run does),
// so that a daemon starts, on its state file, while etcd is down.
func New(cfg Config) (*Agent, error) {
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 5 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.HoldDown <= 0 {
		cfg.HoldDown = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	tlsCfg, err := tlsConfig(cfg)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          2 * time.Second,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		TLS:                  tlsCfg,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: etcd client: %w", err)
	}
	l := Layout{Prefix: cfg.Prefix}
	return &Agent{
		cfg:       cfg,
		layout:    l,
		cli:       cli,
		log:       cfg.Logger.With("cluster_node", cfg.Node),
		view:      NewView(l),
		notify:    make(chan struct{}),
		applyErrs: map[string]error{},
		lastSeen:  map[string]time.Time{},
		lastAlive: map[string]bool{},
		pending:   map[string]time.Time{},
		imports:   map[string][]byte{},
		dirtyNICs: map[string]bool{},
		dirtySGs:  map[string]bool{},
		lastErr:   "not connected yet",
	}, nil
}

// tlsConfig builds the client's TLS configuration from the files (nil
// without CA or certificate).
func tlsConfig(cfg Config) (*tls.Config, error) {
	if cfg.CA == "" && cfg.Cert == "" {
		return nil, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CA != "" {
		pem, err := os.ReadFile(cfg.CA)
		if err != nil {
			return nil, fmt.Errorf("cluster: etcd-ca: %w", err)
		}
		t.RootCAs = x509.NewCertPool()
		if !t.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cluster: etcd-ca %s: no PEM certificate", cfg.CA)
		}
	}
	if cfg.Cert != "" {
		c, err := tls.LoadX509KeyPair(cfg.Cert, cfg.Key)
		if err != nil {
			return nil, fmt.Errorf("cluster: etcd-cert/etcd-key: %w", err)
		}
		t.Certificates = []tls.Certificate{c}
	}
	return t, nil
}

// Close closes the etcd client (Run must have returned).
func (a *Agent) Close() error { return a.cli.Close() }

// Run registers the node, keeps its lease and follows etcd until ctx is
// done: a full read, then a watch from the next revision; after a
// compaction or a watch failure it reads everything again. While etcd is
// unreachable the store and the dataplane keep their last state.
func (a *Agent) Run(ctx context.Context) {
	if r, ok := a.loadRemotes(); ok && a.cfg.Remotes != nil {
		a.mu.Lock()
		if !a.pushed {
			if err := a.cfg.Remotes.SetRemotes(r); err != nil {
				a.log.Error("programming the saved VTEPs of the other nodes", "err", err)
			} else {
				a.log.Info("saved cluster peers restored", "file", a.cfg.RemotesFile, "sources", len(r.Sources), "vnis", len(r.Flood))
			}
		}
		a.mu.Unlock()
	}
	defer func() {
		// No deferred removal is applied once Run returned.
		a.mu.Lock()
		a.closed = true
		if a.timer != nil {
			a.timer.Stop()
		}
		a.mu.Unlock()
	}()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a.keepAlive(ctx) }()
	go func() { defer wg.Done(); a.health(ctx) }()
	defer wg.Wait()
	for ctx.Err() == nil {
		rev, err := a.resync(ctx)
		if err != nil {
			a.setErr(err)
			sleep(ctx, 500*time.Millisecond)
			continue
		}
		a.watch(ctx, rev)
		sleep(ctx, 200*time.Millisecond)
	}
}

// resync reads every key and applies the result; it returns the revision
// read.
func (a *Agent) resync(ctx context.Context) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	resp, err := a.cli.Get(rctx, a.cfg.Prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("cluster: reading %s: %w", a.cfg.Prefix, err)
	}
	v := NewView(a.layout)
	for _, kv := range resp.Kvs {
		if err := v.Put(string(kv.Key), kv.Value); err != nil {
			a.log.Warn("invalid cluster record ignored", "key", string(kv.Key), "err", err)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.view = v
	a.resyncs++
	a.dirtyAll = true
	a.applyLocked(resp.Header.Revision, everything)
	a.log.Info("cluster state read", "revision", resp.Header.Revision, "keys", len(resp.Kvs),
		"nics", len(v.NICs[a.cfg.Node]), "sgs", len(v.SGs), "nodes", len(v.Nodes), "invalid", len(v.Invalid))
	return resp.Header.Revision, nil
}

// watch follows changes after rev until the watch fails or ctx is done.
func (a *Agent) watch(ctx context.Context, rev int64) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := a.cli.Watch(wctx, a.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for resp := range wch {
		if resp.CompactRevision != 0 {
			a.log.Warn("cluster watch compacted: reading everything again", "compact_revision", resp.CompactRevision)
			return
		}
		if err := resp.Err(); err != nil {
			a.setErr(fmt.Errorf("cluster: watch: %w", err))
			return
		}
		if len(resp.Events) == 0 {
			continue
		}
		evs := make([]event, len(resp.Events))
		for i, ev := range resp.Events {
			evs[i] = event{key: string(ev.Kv.Key), value: ev.Kv.Value, del: ev.Type == clientv3.EventTypeDelete}
		}
		a.mu.Lock()
		a.applyEventsLocked(resp.Header.Revision, evs)
		a.mu.Unlock()
	}
}

// event is one change of a key: its new value, or its deletion.
type event struct {
	key   string
	value []byte
	del   bool
}

// applyEventsLocked follows a batch of changes that etcd committed at
// revision rev. a.mu is held.
func (a *Agent) applyEventsLocked(rev int64, evs []event) {
	var what changed
	for _, ev := range evs {
		what |= a.affects(ev.key)
		if k, err := a.layout.Parse(ev.key); err == nil {
			switch {
			case k.Kind == KindSG:
				a.dirtySGs[k.ID] = true
			case k.Kind == KindNIC && k.Node == a.cfg.Node:
				a.dirtyNICs[k.ID] = true
			}
		}
		if ev.del {
			a.view.Delete(ev.key)
			continue
		}
		if err := a.view.Put(ev.key, ev.value); err != nil {
			a.log.Warn("invalid cluster record ignored", "key", ev.key, "err", err)
		}
	}
	a.applyLocked(rev, what)
}

// changed says what a batch of events may change on this node.
type changed uint8

const (
	// changedStore: a security group or one of this node's vNICs.
	changedStore changed = 1 << iota
	// changedRemotes: a node, or any node's vNIC.
	changedRemotes
	everything = changedStore | changedRemotes
)

// affects returns what a change of key may change on this node (every
// key the layout does not define: nothing but its report).
func (a *Agent) affects(key string) changed {
	k, err := a.layout.Parse(key)
	if err != nil {
		return 0
	}
	switch {
	case k.Kind == KindSG:
		return changedStore
	case k.Kind == KindNIC && k.Node == a.cfg.Node:
		return everything // its addresses are in the remotes (suppression)
	}
	return changedRemotes
}

// applyLocked makes the store (when what has changedStore) and the
// dataplane's remotes (changedRemotes) follow the view, persists the
// change and publishes rev as applied. a.mu is held.
func (a *Agent) applyLocked(rev int64, what changed) {
	now := time.Now()
	// Last seen: now for the live nodes, and for those whose lease just
	// went (they were live until this change).
	for name := range a.lastAlive {
		if _, ok := a.view.Alive[name]; !ok {
			a.lastSeen[name] = now
			delete(a.lastAlive, name)
		}
	}
	for name := range a.view.Alive {
		a.lastSeen[name] = now
		a.lastAlive[name] = true
	}
	if what&changedStore != 0 {
		a.applyStoreLocked(rev, now)
	}
	if what&changedRemotes != 0 && a.cfg.Remotes != nil {
		r := a.view.Remotes(a.cfg.Node)
		if a.cfg.NoARPSuppression {
			r.Neighbors = nil
		}
		if !a.pushed || !EqualRemotes(r, a.remotes) {
			if err := a.cfg.Remotes.SetRemotes(r); err != nil {
				a.log.Error("programming the other nodes' VTEPs", "err", err)
			} else {
				a.remotes, a.pushed = r, true
				a.log.Info("cluster peers", "sources", len(r.Sources), "vnis", len(r.Flood))
				a.saveRemotes(r)
			}
		}
	}
	if rev > a.applied {
		a.applied = rev
		close(a.notify)
		a.notify = make(chan struct{})
	}
}

// applyStoreLocked makes the store follow the view for the objects that
// may differ (see dirtyAll) and persists the change. a.mu is held.
func (a *Agent) applyStoreLocked(rev int64, now time.Time) {
	held, heldSGs := a.view.Held(a.cfg.Node)
	hold := func(id string) bool {
		t, ok := a.pending[id]
		return !ok || now.Sub(t) < a.cfg.HoldDown
	}
	all := a.dirtyAll
	cur, wantNICs, wantSGs := a.dirtyLocked()
	ops, deferred := Diff(cur, wantNICs, wantSGs, held, heldSGs, a.cfg.StoreOptions.DefaultTracePath, hold)
	a.deferLocked(deferred, now)
	for i, op := range ops {
		if data, ok := a.imports[op.ID]; ok && op.Kind == OpAddNIC {
			ops[i].NIC.Import = data
			delete(a.imports, op.ID) // used once
		}
	}
	errs := Apply(a.cfg.Store, ops)
	for what, err := range errs {
		if prev, ok := a.applyErrs[what]; !ok || prev.Error() != err.Error() {
			a.log.Error("cluster record not applied", "object", what, "err", err)
		}
	}
	if all {
		a.applyErrs = errs
	} else {
		for id := range a.dirtyNICs {
			delete(a.applyErrs, "nic "+id)
		}
		for id := range a.dirtySGs {
			delete(a.applyErrs, "sg "+id)
		}
		maps.Copy(a.applyErrs, errs)
	}
	a.dirtyAll = false
	clear(a.dirtyNICs)
	clear(a.dirtySGs)
	if len(ops) > 0 {
		a.log.Debug("cluster change applied", "revision", rev, "operations", len(ops), "failed", len(errs))
	}
	ch := a.cfg.Store.TakeChanges()
	if a.cfg.Persist != nil && (len(ch.NICs)+len(ch.SGs)+len(ch.DelNICs)+len(ch.DelSGs) > 0) {
		if err := a.cfg.Persist(ch); err != nil {
			a.log.Error("persisting the cluster state", "err", err)
		}
	}
}

// dirtyLocked returns what the next apply diffs: the store's whole state
// and the view's desired state after a full read; else the store's and
// the view's objects among the changed groups and vNICs, the groups whose
// removals wait and the objects the store refused (added to dirtyNICs
// and dirtySGs). a.mu is held.
func (a *Agent) dirtyLocked() (cur model.State, nics map[string]model.NIC, sgs map[string]model.SG) {
	if a.dirtyAll {
		return a.cfg.Store.State(), a.view.NICs[a.cfg.Node], a.view.SGs
	}
	for id := range a.pending {
		a.dirtySGs[id] = true
	}
	for what := range a.applyErrs {
		if id, ok := strings.CutPrefix(what, "nic "); ok {
			a.dirtyNICs[id] = true
		} else if id, ok := strings.CutPrefix(what, "sg "); ok {
			a.dirtySGs[id] = true
		}
	}
	nics, sgs = map[string]model.NIC{}, map[string]model.SG{}
	for id := range a.dirtySGs {
		if l, err := a.cfg.Store.SGDetails(id); err == nil {
			cur.SGs = append(cur.SGs, l[0])
		}
		if sg, ok := a.view.SGs[id]; ok {
			sgs[id] = sg
		}
	}
	for id := range a.dirtyNICs {
		if l, err := a.cfg.Store.NICDetails(id); err == nil {
			cur.NICs = append(cur.NICs, l[0])
		}
		if n, ok := a.view.NICs[a.cfg.Node][id]; ok {
			nics[id] = n
		}
	}
	// Diff's order: by id.
	slices.SortFunc(cur.SGs, func(x, y model.SG) int { return strings.Compare(x.ID, y.ID) })
	slices.SortFunc(cur.NICs, func(x, y model.NIC) int { return strings.Compare(x.ID, y.ID) })
	return cur, nics, sgs
}

// deferLocked records the groups whose removals wait (first time seen)
// and arms the timer of the apply that enforces the oldest. a.mu is held.
func (a *Agent) deferLocked(deferred []string, now time.Time) {
	next := map[string]time.Time{}
	for _, id := range deferred {
		if t, ok := a.pending[id]; ok {
			next[id] = t
		} else {
			next[id] = now
		}
	}
	a.pending = next
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
	}
	if len(next) == 0 {
		return
	}
	oldest := now
	for _, t := range next {
		if t.Before(oldest) {
			oldest = t
		}
	}
	a.timer = time.AfterFunc(oldest.Add(a.cfg.HoldDown).Sub(now), func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if !a.closed {
			a.applyLocked(a.applied, changedStore)
		}
	})
}

// keepAlive registers the node and keeps its lease alive, again after
// every loss (etcd down longer than the TTL).
//
// When ctx ends (the daemon stops) the lease is revoked, so that the
// other nodes drop this one from their flood lists at once and a restart
// registers without waiting for it to expire.
func (a *Agent) keepAlive(ctx context.Context) {
	for ctx.Err() == nil {
		ka, lease, err := a.register(ctx)
		if err != nil {
			a.setErr(err)
			sleep(ctx, 500*time.Millisecond)
			continue
		}
		for range ka {
		}
		if ctx.Err() == nil {
			a.log.Warn("cluster lease lost: registering again")
			continue
		}
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if _, err := a.cli.Revoke(rctx, lease); err != nil {
			a.log.Warn("cluster: revoking the node's lease at stop", "err", err)
		}
		cancel()
	}
}

func (a *Agent) register(ctx context.Context) (<-chan *clientv3.LeaseKeepAliveResponse, clientv3.LeaseID, error) {
	rctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	val := string(EncodeNode(NodeInfo{Name: a.cfg.Node, VTEP: a.cfg.VTEP, Version: a.cfg.Version}))
	lease, err := a.cli.Grant(rctx, int64((a.cfg.LeaseTTL+time.Second-1)/time.Second))
	if err != nil {
		return nil, 0, fmt.Errorf("cluster: lease: %w", err)
	}
	// The alive key is created only if no live lease holds it: two
	// daemons never run as the same node. A daemon restarted before its
	// previous lease expired waits for it (at most LeaseTTL).
	alive := a.layout.Alive(a.cfg.Node)
	tr, err := a.cli.Txn(rctx).If(clientv3.Compare(clientv3.Version(alive), "=", 0)).Then(
		clientv3.OpPut(a.layout.Node(a.cfg.Node), val),
		clientv3.OpPut(alive, val, clientv3.WithLease(lease.ID)),
	).Commit()
	if err == nil && !tr.Succeeded {
		err = fmt.Errorf("node name %q is held by a live lease (another daemon with this --node, or this one before a restart): waiting for it to expire", a.cfg.Node)
	}
	if err != nil {
		_, _ = a.cli.Revoke(rctx, lease.ID)
		return nil, 0, fmt.Errorf("cluster: registering node %s: %w", a.cfg.Node, err)
	}
	ka, err := a.cli.KeepAlive(ctx, lease.ID)
	if err != nil {
		return nil, 0, fmt.Errorf("cluster: lease keep-alive: %w", err)
	}
	a.log.Info("cluster node registered", "vtep", a.cfg.VTEP, "lease_ttl", a.cfg.LeaseTTL)
	return ka, lease.ID, nil
}

// health checks every second that etcd answers a quorum read.
func (a *Agent) health(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := a.cli.Get(rctx, a.layout.Node(a.cfg.Node))
		cancel()
		if ctx.Err() != nil {
			return
		}
		a.mu.Lock()
		was := a.connected
		a.connected = err == nil
		if err != nil {
			a.lastErr = err.Error()
		} else {
			a.lastErr = ""
		}
		a.mu.Unlock()
		if was != (err == nil) {
			if err != nil {
				a.log.Error("etcd unavailable: forwarding continues on the last state, mutations fail", "err", err)
			} else {
				a.log.Info("etcd available")
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *Agent) setErr(err error) {
	a.log.Warn("cluster", "err", err)
	a.mu.Lock()
	a.lastErr = err.Error()
	a.mu.Unlock()
}

// waitApplied waits until the store reflects revision rev.
func (a *Agent) waitApplied(ctx context.Context, rev int64) error {
	for {
		a.mu.Lock()
		done, ch := a.applied >= rev, a.notify
		a.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("committed in etcd (revision %d) but not yet applied on this node: %w", rev, ctx.Err())
		}
	}
}

// Status is the cluster part of app_status.
func (a *Agent) Status() *protocol.MessageV0_ClusterStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := &protocol.MessageV0_ClusterStatus{
		Node:      proto.String(a.cfg.Node),
		Connected: proto.Bool(a.connected),
		Revision:  proto.Int64(a.applied),
		Invalid:   a.invalidLocked(),
	}
	if !a.connected && a.lastErr != "" {
		st.Error = proto.String(a.lastErr)
	}
	return st
}

// invalidLocked lists the invalid records and the objects the store
// refused, sorted.
func (a *Agent) invalidLocked() []string {
	out := a.view.InvalidList()
	for what, err := range a.applyErrs {
		out = append(out, what+": "+err.Error())
	}
	sort.Strings(out)
	return out
}

// Nodes lists the registered nodes (cluster_nodes).
func (a *Agent) Nodes() []*protocol.MessageV0_ClusterNode {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*protocol.MessageV0_ClusterNode
	for _, name := range sortedIDs(a.view.Nodes) {
		n := a.view.Nodes[name]
		_, alive := a.view.Alive[name]
		var seen uint64
		if alive {
			seen = uint64(time.Now().Unix())
		} else if t, ok := a.lastSeen[name]; ok {
			seen = uint64(t.Unix())
		}
		out = append(out, &protocol.MessageV0_ClusterNode{
			Name: proto.String(name), Vtep: proto.String(n.VTEP.String()), Version: proto.String(n.Version),
			Alive: proto.Bool(alive), LastSeen: proto.Uint64(seen),
		})
	}
	return out
}

// NICs lists every node's vNICs (cluster_nics).
func (a *Agent) NICs() []*protocol.MessageV0_ClusterNic {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*protocol.MessageV0_ClusterNic
	for _, node := range sortedIDs(a.view.NICs) {
		m := a.view.NICs[node]
		for _, id := range sortedIDs(m) {
			n := m[id]
			out = append(out, &protocol.MessageV0_ClusterNic{
				Node: proto.String(node), Id: proto.String(id), Vni: proto.Uint32(n.VNI), Mac: proto.String(n.MACText),
			})
		}
	}
	return out
}

// Collector returns the cluster metrics: butterfly_cluster_connected,
// butterfly_cluster_revision, butterfly_cluster_invalid_records and
// butterfly_cluster_resyncs_total.
func (a *Agent) Collector() prometheus.Collector { return collector{a} }

type collector struct{ a *Agent }

var (
	descConnected = prometheus.NewDesc("butterfly_cluster_connected", "1 when etcd answers quorum reads.", nil, nil)
	descRevision  = prometheus.NewDesc("butterfly_cluster_revision", "etcd revision the node's state reflects.", nil, nil)
	descInvalid   = prometheus.NewDesc("butterfly_cluster_invalid_records", "Cluster records ignored as invalid or refused by the node.", nil, nil)
	descResyncs   = prometheus.NewDesc("butterfly_cluster_resyncs_total", "Full reads of the cluster state (start, compaction, watch failure).", nil, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descConnected
	ch <- descRevision
	ch <- descInvalid
	ch <- descResyncs
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	a.mu.Lock()
	conn := 0.0
	if a.connected {
		conn = 1
	}
	rev, inv, rs := float64(a.applied), float64(len(a.view.Invalid)+len(a.applyErrs)), float64(a.resyncs)
	a.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, conn)
	ch <- prometheus.MustNewConstMetric(descRevision, prometheus.GaugeValue, rev)
	ch <- prometheus.MustNewConstMetric(descInvalid, prometheus.GaugeValue, inv)
	ch <- prometheus.MustNewConstMetric(descResyncs, prometheus.CounterValue, rs)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// errUnavailable wraps an etcd failure of a mutation: "unavailable"
// when etcd could not be reached or could not commit (no quorum, no
// leader, timeouts on either side), "refused" otherwise.
func errUnavailable(err error) error {
	if unavailable(err) {
		return fmt.Errorf("cluster: etcd unavailable (unreachable or no quorum), the change is not confirmed and not applied here: %w", err)
	}
	return fmt.Errorf("cluster: etcd refused the change: %w", err)
}

func unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	switch rpctypes.Error(err) {
	case rpctypes.ErrNoLeader, rpctypes.ErrLeaderChanged, rpctypes.ErrTimeout, rpctypes.ErrTimeoutDueToLeaderFail,
		rpctypes.ErrTimeoutDueToConnectionLost, rpctypes.ErrTimeoutWaitAppliedIndex:
		return true
	}
	// A server that timed out with the request's deadline answers
	// "context deadline exceeded" with code Unknown.
	return strings.Contains(err.Error(), context.DeadlineExceeded.Error())
}

// loadRemotes reads RemotesFile; ok is false when there is none or it
// cannot be read (logged).
func (a *Agent) loadRemotes() (dataplane.Remotes, bool) {
	if a.cfg.RemotesFile == "" {
		return dataplane.Remotes{}, false
	}
	b, err := os.ReadFile(a.cfg.RemotesFile)
	if errors.Is(err, os.ErrNotExist) {
		return dataplane.Remotes{}, false
	}
	var r dataplane.Remotes
	if err == nil {
		err = json.Unmarshal(b, &r)
	}
	if err != nil {
		a.log.Error("saved cluster peers unreadable, ignored", "file", a.cfg.RemotesFile, "err", err)
		return dataplane.Remotes{}, false
	}
	return r, true
}

// saveRemotes writes r to RemotesFile (atomically: a new file renamed).
func (a *Agent) saveRemotes(r dataplane.Remotes) {
	if a.cfg.RemotesFile == "" {
		return
	}
	b, err := json.Marshal(r)
	if err == nil {
		tmp := a.cfg.RemotesFile + ".tmp"
		if err = os.WriteFile(tmp, b, 0o600); err == nil {
			err = os.Rename(tmp, a.cfg.RemotesFile)
		}
	}
	if err != nil {
		a.log.Error("saving the cluster peers", "file", a.cfg.RemotesFile, "err", err)
	}
}
