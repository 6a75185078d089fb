// Command butterflyd is the Butterfly virtual switch daemon: it owns the
// host's vNICs (TAP and vhost-user), switches their traffic per VNI over
// VXLAN, filters it with security groups, and is driven over the ZeroMQ
// API. Its configuration is persisted in a state file (a snapshot plus an
// append-only journal, "<file>.journal", synced before each reply) and
// restored at start. Run `butterflyd --help` for the options.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/butterfly-go/butterfly/internal/apiserver"
	"github.com/butterfly-go/butterfly/internal/config"
	"github.com/butterfly-go/butterfly/internal/dataplane"
	"github.com/butterfly-go/butterfly/internal/logging"
	"github.com/butterfly-go/butterfly/internal/pcap"
	"github.com/butterfly-go/butterfly/internal/version"
)

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// defaultGCPercent is the Go garbage collector's target (GOGC: the heap
// may grow by this percentage of the live heap between collections) the
// daemon runs with when the environment does not set GOGC. The packet
// path allocates nothing; the control path's changes leave garbage, and
// with Go's default of 100 the heap grows into memory never touched
// before, whose first-touch page faults cost more here than the extra
// collections of a lower target (BENCHMARKS.md: 10,000 rule changes,
// resident memory).
const defaultGCPercent = 25

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1 // start-up or runtime failure
	exitUsage   = 2 // bad or missing options
)

// run is the whole daemon; it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := config.Parse(args)
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "butterflyd: %s\n", line)
		}
		return exitUsage
	}
	if cfg.Help {
		fmt.Fprint(stdout, config.Usage())
		return exitOK
	}
	if cfg.ShowVersion {
		fmt.Fprintln(stdout, version.String())
		return exitOK
	}

	lg, err := logging.New(logging.Options{Level: cfg.LogLevel, Stderr: stderr, Syslog: cfg.Syslog})
	if lg == nil {
		fmt.Fprintf(stderr, "butterflyd: logging: %v\n", err)
		return exitFailure
	}
	defer lg.Close()
	log := lg.Logger()
	if err != nil {
		log.Warn("logging", "err", err)
	}
	log.Info("starting butterflyd", "version", version.Version, "commit", version.Commit, "config", cfg.ConfigFile)
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}

	key, err := apiKey(cfg, log)
	if err != nil {
		log.Error("API key", "err", err)
		fmt.Fprintf(stderr, "butterflyd: %v\n", err)
		return exitFailure
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	defer stop()
	go func() {
		// After the first signal, restore the default action so that a
		// second one ends a stop that hangs.
		<-ctx.Done()
		stop()
	}()

	pid := os.Getpid()
	dcfg := dataplane.Config{
		VTEP:            cfg.VTEP,
		Workers:         cfg.Workers,
		CPUs:            usableCPUs(cfg.CPUs, runtime.NumCPU(), log),
		UnderlayMTU:     cfg.UnderlayMTU,
		HeadEnd:         cfg.VXLANPeers,
		Cluster:         len(cfg.Cluster.Endpoints) > 0,
		SocketDir:       cfg.SocketDir,
		NoOffload:       cfg.NoOffload,
		NoFlowCache:     cfg.NoFlowCache,
		PollIdle:        cfg.PollIdle,
		ConntrackMax:    cfg.ConntrackMax,
		ConntrackPickup: cfg.ConntrackPickup,
		TraceDir:        cfg.TraceDir,
		Logger:          log,
	}
	if cfg.PacketTrace {
		if err := cfg.TraceDir.Prepare(); err != nil {
			log.Error("cannot trace the underlay", "err", err)
			return exitFailure
		}
		dcfg.TraceUnderlay = filepath.Join(cfg.TraceDir.Path(), pcap.FileName(pid, "main"))
	}
	dp, err := dataplane.New(dcfg)
	if err != nil {
		log.Error("cannot start the dataplane", "err", err)
		return exitFailure
	}
	d := &daemon{cfg: cfg, log: log, setLogLevel: lg.SetLevel, pid: pid}
	if err := d.serve(ctx, dp, key); err != nil {
		log.Error("butterflyd failed", "err", err)
		return exitFailure
	}
	log.Info("butterflyd stopped")
	return exitOK
}

// noKeyWarning is the warning logged when the API has no key (--auto-key
// none); it is louder when the endpoint is reachable from the network.
func noKeyWarning(endpoint string) string {
	if apiserver.IsLoopback(endpoint) {
		return "no API key (--auto-key none): the API accepts clear-text requests, " +
			"and every local user who can reach the endpoint can reconfigure this switch"
	}
	return "no API key (--auto-key none) and the API endpoint is reachable from the network: " +
		"anyone who can connect can reconfigure this switch; set a key or bind to loopback"
}

// usableCPUs drops (with a warning) CPU numbers this machine does not
// have, as the original ignored an out-of-range core.
func usableCPUs(cpus []int, n int, log *slog.Logger) []int {
	var out []int
	for _, c := range cpus {
		if c >= n {
			log.Warn("ignoring CPU out of range for pinning", "cpu", c, "cpus", n)
			continue
		}
		out = append(out, c)
	}
	return out
}
