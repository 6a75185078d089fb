package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/butterfly-go/butterfly/internal/apiserver"
	"github.com/butterfly-go/butterfly/internal/apiv0"
	"github.com/butterfly-go/butterfly/internal/cluster"
	"github.com/butterfly-go/butterfly/internal/config"
	"github.com/butterfly-go/butterfly/internal/dataplane"
	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/pcap"
	"github.com/butterfly-go/butterfly/internal/state"
	"github.com/butterfly-go/butterfly/internal/version"
)

// engine is what the daemon needs from the packet engine
// (*dataplane.Engine); tests use a fake.
type engine interface {
	model.Dataplane
	Close() error
	Collector() prometheus.Collector
}

// daemon holds what serve needs besides the configuration.
type daemon struct {
	cfg config.Config
	log *slog.Logger
	// setLogLevel changes the log level (app_config).
	setLogLevel func(string) error
	// pid names the default trace files.
	pid int
	// ready, if set, is called once the API (and the metrics server, ""
	// when off) are bound (tests).
	ready func(endpoint, metrics string)
}

// defaultTracePath is the pcap file of a vNIC added without a path: the
// original's name, butterfly-<pid>-<nic id>.pcap, in the trace directory.
func (d *daemon) defaultTracePath(id string) string {
	return filepath.Join(d.cfg.TraceDir.Path(), pcap.FileName(d.pid, id))
}

// serve runs the daemon on dp until ctx is done or app_quit arrives: lock
// the state file, bind the API, restore the saved state, start the metrics
// server, serve, then stop the API, close dp and release the lock. dp is
// closed in every case, and always before the lock is released, so that a
// daemon started on the same state file meanwhile cannot create vNICs (and
// vhost-user sockets) that this one then removes.
func (d *daemon) serve(ctx context.Context, dp engine, key []byte) (err error) {
	unlock := func() error { return nil }
	if d.cfg.StateFile != "" {
		u, lerr := state.Lock(d.cfg.StateFile)
		if lerr != nil {
			err = lerr
		} else {
			unlock = u
		}
	}
	defer func() {
		if cerr := dp.Close(); cerr != nil {
			d.log.Error("closing the dataplane", "err", cerr)
			err = errors.Join(err, fmt.Errorf("close dataplane: %w", cerr))
		}
		if uerr := unlock(); uerr != nil {
			d.log.Error("releasing the state-file lock", "err", uerr)
		}
	}()
	if err != nil {
		return err
	}
	storeOpts := model.Options{
		DefaultPacketTrace: d.cfg.PacketTrace,
		DefaultTracePath:   d.defaultTracePath,
		DefaultVhostClient: d.cfg.VhostClient,
	}
	store := model.New(dp, storeOpts)

	ctx, quit := context.WithCancel(ctx)
	defer quit()
	var srv *apiserver.Server
	opts := apiv0.Options{
		Quit: func() {
			d.log.Info("app_quit received, stopping")
			quit()
		},
		SetLogLevel: d.setLogLevel,
		Requests:    func() uint64 { return srv.Requests() },
		StartTime:   time.Now(),
		Now:         time.Now,
		Logger:      d.log,
	}
	// ps, the persistent store, is opened by restore below, before any
	// request is served.
	var ps *state.Store
	if d.cfg.StateFile != "" {
		opts.Persist = func(c model.Change) error {
			if err := ps.SaveChange(c); err != nil {
				d.log.Error("persisting state", "err", err)
				return err
			}
			return nil
		}
	}
	var agent *cluster.Agent
	if len(d.cfg.Cluster.Endpoints) > 0 {
		agent, err = d.newAgent(store, storeOpts, dp, opts.Persist)
		if err != nil {
			return err
		}
		defer agent.Close()
		opts.Cluster = agent
	}
	h := apiv0.New(store, opts)
	srv, err = apiserver.New(apiserver.Config{Endpoint: d.cfg.Endpoint, Key: key, Logger: d.log}, h)
	if err != nil {
		return fmt.Errorf("API endpoint %s: %w", d.cfg.Endpoint, err)
	}
	defer func() {
		if cerr := srv.Close(); cerr != nil {
			d.log.Error("closing the API", "err", cerr)
		}
	}()
	// The API is bound (a busy endpoint has stopped us before any vNIC
	// exists) but not served yet: requests wait for the restore.
	// The engine keeps vNICs whose namespace is gone, detached, instead
	// of failing them (see dataplane.Engine.SetRestoring).
	r, restoring := dp.(interface{ SetRestoring(bool) })
	if restoring {
		r.SetRestoring(true)
	}
	ps, err = d.restore(store)
	if restoring {
		r.SetRestoring(false)
	}
	// Only the restored vNICs pick up connections in progress: with a
	// state file, a vNIC added from now on is a new one.
	if p, ok := dp.(interface{ EndPickup() }); ok && d.cfg.StateFile != "" {
		p.EndPickup()
	}
	if err != nil {
		return err
	}
	if ps != nil {
		defer func() {
			if cerr := ps.Close(); cerr != nil {
				d.log.Error("closing the state journal", "err", cerr)
			}
		}()
	}

	if agent != nil && d.cfg.Cluster.Import {
		// Before the first read, which would remove the vNICs etcd
		// does not hold.
		res, err := agent.Import(ctx)
		if err != nil {
			return fmt.Errorf("--cluster-import (the state file's vNICs and groups to etcd; nothing applied from etcd yet): %w", err)
		}
		d.log.Info("cluster import: state file written to etcd", "written", len(res.Written), "kept", len(res.Kept))
		for _, k := range res.Kept {
			d.log.Warn("cluster import: etcd already holds this record, kept", "key", k)
		}
	}
	if agent != nil {
		// The agent starts from the restored state (etcd may be down)
		// and stops before the dataplane closes.
		actx, stopAgent := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); agent.Run(actx) }()
		defer func() { stopAgent(); <-done }()
	}

	var metricsAddr string
	if d.cfg.Metrics != "" {
		extra := []prometheus.Collector{h.Collector()}
		if agent != nil {
			extra = append(extra, agent.Collector())
		}
		addr, stopMetrics, err := d.startMetrics(dp.Collector(), extra...)
		if err != nil {
			return err
		}
		defer stopMetrics()
		metricsAddr = addr
	}

	if d.ready != nil {
		d.ready(srv.Endpoint(), metricsAddr)
	}
	d.log.Info("butterflyd running", "vtep", d.cfg.VTEP, "endpoint", srv.Endpoint(), "pid", d.pid)
	if err := srv.Serve(ctx); err != nil {
		return fmt.Errorf("API: %w", err)
	}
	d.log.Info("stopping: closing the API and removing vNICs")
	d.saveConntrack(store, dp)
	return nil
}

// newAgent returns the cluster agent of cluster mode (--etcd): it
// programs store and the engine's remotes from etcd and persists what it
// changes with persist.
func (d *daemon) newAgent(store *model.Store, opts model.Options, dp engine, persist func(model.Change) error) (*cluster.Agent, error) {
	rem, ok := dp.(interface {
		SetRemotes(dataplane.Remotes) error
	})
	if !ok {
		return nil, errors.New("cluster mode: the dataplane cannot take remote VTEPs")
	}
	c := d.cfg.Cluster
	var remotesFile string
	if d.cfg.StateFile != "" {
		remotesFile = d.cfg.StateFile + ".cluster"
	}
	a, err := cluster.New(cluster.Config{
		Endpoints: c.Endpoints, Node: c.Node, VTEP: d.cfg.VTEP, Version: version.Version,
		Prefix: c.Prefix, CA: c.CA, Cert: c.Cert, Key: c.Key, NoARPSuppression: c.NoARPSuppression,
		Store: store, StoreOptions: opts, Remotes: rem, Persist: persist, RemotesFile: remotesFile, Logger: d.log,
	})
	if err != nil {
		return nil, err
	}
	d.log.Info("cluster mode", "node", c.Node, "etcd", strings.Join(c.Endpoints, ","), "prefix", c.Prefix)
	return a, nil
}

// restore opens the state file (snapshot and journal) and loads it into
// store; it returns the state.Store that persists later changes (nil when
// no state file is configured). Corrupt files were moved aside by
// state.Open: log it and start empty. Any other open error is fatal, so
// that a file this daemon cannot read is never overwritten. vNICs that
// cannot be recreated are logged and dropped; the loaded state is then
// kept as <state-file>.restore-failed-<unix> for the operator.
func (d *daemon) restore(store *model.Store) (*state.Store, error) {
	path := d.cfg.StateFile
	if path == "" {
		d.log.Info("no state file: configuration is not persisted")
		return nil, nil
	}
	ps, st, err := state.Open(path, state.Options{Logger: d.log})
	var corrupt *state.CorruptError
	switch {
	case errors.As(err, &corrupt):
		d.log.Error("state file corrupt, starting empty", "err", err)
		return ps, nil
	case err != nil:
		return nil, fmt.Errorf("cannot read the state file: %w", err)
	}
	if info := ps.Info(); info.Replayed > 0 || info.TornBytes > 0 {
		d.log.Info("state journal replayed", "records", info.Replayed, "torn_bytes_dropped", info.TornBytes)
	}
	if len(st.NICs) == 0 && len(st.SGs) == 0 {
		d.log.Info("no saved configuration", "state_file", path)
		return ps, nil
	}
	d.confineTraces(&st)
	d.loadConntrack(&st)
	rerr := store.Restore(st)
	got := store.State()
	d.log.Info("configuration restored", "state_file", path,
		"nics", len(got.NICs), "nics_saved", len(st.NICs), "sgs", len(got.SGs), "sgs_saved", len(st.SGs))
	// Requests persist their changes only (SaveChange): make the files
	// hold what was restored first (vNICs dropped, trace paths confined,
	// paths the dataplane gave), one record if anything differs. If that
	// fails, ps keeps the state and the next change writes a snapshot.
	store.TakeChanges()
	if err := ps.Save(got); err != nil {
		d.log.Error("persisting the restored state", "err", err)
	}
	if rerr == nil {
		return ps, nil
	}
	for _, line := range strings.Split(rerr.Error(), "\n") {
		d.log.Error("restore failed", "err", line)
	}
	keep := fmt.Sprintf("%s.restore-failed-%d", path, time.Now().Unix())
	if err := state.Save(keep, st); err != nil {
		d.log.Error("could not keep a copy of the saved state", "err", err)
	} else {
		d.log.Warn("the state as saved before the failed restore is kept", "path", keep)
	}
	return ps, nil
}

// confineTraces gives the vNICs of a saved state whose trace path is not in
// the trace directory (saved by an older version, or with another
// --trace-dir) the default path, so that they are restored with a trace
// file the daemon may write.
func (d *daemon) confineTraces(st *model.State) {
	for i, n := range st.NICs {
		if n.TracePath == "" {
			continue
		}
		if _, err := d.cfg.TraceDir.Resolve(n.TracePath); err != nil {
			st.NICs[i].TracePath = d.defaultTracePath(n.ID)
			d.log.Warn("saved trace path outside the trace directory replaced", "nic", n.ID,
				"saved", n.TracePath, "now", st.NICs[i].TracePath)
		}
	}
}

// startMetrics serves Prometheus metrics (the engine's collector, Go
// runtime and process) on cfg.Metrics. The listener is bound before it
// returns so that a bad address stops the daemon at start; addr is the
// address bound.
func (d *daemon) startMetrics(c prometheus.Collector, extra ...prometheus.Collector) (addr string, stop func(), err error) {
	reg := prometheus.NewRegistry()
	cs := []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})}
	if c != nil {
		cs = append(cs, c)
	}
	cs = append(cs, extra...)
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return "", nil, fmt.Errorf("metrics: %w", err)
		}
	}
	ln, err := net.Listen("tcp", d.cfg.Metrics)
	if err != nil {
		return "", nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelError)}))
	// Go's profiles, for operators and the benchmark program
	// (/debug/pprof/heap?gc=1 collects garbage first: the live heap).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("metrics server", "err", err)
		}
	}()
	d.log.Info("metrics served", "address", ln.Addr().String(), "path", "/metrics")
	return ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
	}, nil
}
