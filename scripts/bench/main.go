// Command bench measures Butterfly against the Linux kernel (and DPDK's
// vhost-user back end), side by side in one run, on the lab harness
// (internal/labtest): every "host" and "VM" is a network namespace it creates
// (prefix bfb<pid>), every process it starts is stopped by PID and every
// namespace deleted when a case ends, also on failure or Ctrl-C.
//
//	go run ./scripts/bench [flags] [section...]   (as root; scripts/bench.sh wraps it)
//
// Sections (default: paths idle api go):
//
//	paths     k-bridge, bf-local, k-vxlan, bf-vxlan: ping, iperf3 TCP, iperf3 UDP 64 B
//	idle      butterflyd's CPU with 100 idle TAP vNICs, then also 100 vhost-user vNICs
//	api       API speed and the daemon's memory, threads and fds (see api.go)
//	go        the dataplane's and the API server's Go benchmarks
//	firewall  butterfly's firewall against nftables (see firewall.go), writes firewall.md
//	vhost     vhost-user VM to VM against DPDK's vhost back end (see vhost.go), writes vhost.md
//	cluster   cluster mode on a real etcd: broadcast frames crossing the underlay with and
//	          without ARP suppression, start-up of a node programming 1,000 vNICs and
//	          100 groups of 100 rules from etcd (see cluster.go)
//
// Every figure is printed as a "RESULT label | ..." line with the
// machine's hypervisor steal and load average over its measurement, and the
// paths, idle, api and go figures are summed up in OUT/results.md. Compare
// only figures of the same run. Each flag's default comes from the BENCH_*
// environment variable named in its help, so scripts/bench.sh's former
// knobs still work.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// config is the run's settings (flags).
type config struct {
	secs, udpSecs, pings, idleSecs int
	fwSecs, fwUDPSecs, fwPings     int
	fwRounds                       int
	daemonArgs                     []string
	out                            string
	root                           string
	apiNICs, apiGroups, apiRules   int
	apiNICType                     string
	apiLatSamples                  int
	apiVhostConnected              float64
	vhSecs, vhWarm, vhRounds       int
	clusterARPs, clusterNICs       int
	clusterGroups, clusterRules    int
	vhBackends, vhCases            []string
	vhPprof                        string
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func envFloat(name string, def float64) float64 {
	if v, err := strconv.ParseFloat(os.Getenv(name), 64); err == nil {
		return v
	}
	return def
}

func envStr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func main() {
	var c config
	var daemonArgs string
	flag.IntVar(&c.secs, "seconds", envInt("BENCH_SECONDS", 10), "iperf3 TCP seconds per path (BENCH_SECONDS)")
	flag.IntVar(&c.udpSecs, "udp-seconds", envInt("BENCH_UDP_SECONDS", 5), "iperf3 UDP seconds per path (BENCH_UDP_SECONDS)")
	flag.IntVar(&c.pings, "pings", envInt("BENCH_PINGS", 50), "pings 20 ms apart per path; 20 times as many 0.2 ms apart (BENCH_PINGS)")
	flag.IntVar(&c.idleSecs, "idle-seconds", envInt("BENCH_IDLE_SECONDS", 10), "CPU sampling time of the idle section (BENCH_IDLE_SECONDS)")
	flag.IntVar(&c.fwSecs, "fw-seconds", envInt("BENCH_SECONDS", 5), "firewall section: iperf3 TCP seconds (BENCH_SECONDS)")
	flag.IntVar(&c.fwUDPSecs, "fw-udp-seconds", envInt("BENCH_UDP_SECONDS", 3), "firewall section: iperf3 UDP seconds (BENCH_UDP_SECONDS)")
	flag.IntVar(&c.fwPings, "fw-pings", envInt("BENCH_PINGS", 20), "firewall section: pings (BENCH_PINGS)")
	flag.IntVar(&c.fwRounds, "fw-rounds", envInt("BENCH_FW_ROUNDS", 1), "firewall section: rounds over the six paths (BENCH_FW_ROUNDS)")
	flag.StringVar(&daemonArgs, "daemon-args", os.Getenv("BENCH_DAEMON_ARGS"), "more butterflyd options, space separated (BENCH_DAEMON_ARGS)")
	flag.StringVar(&c.out, "out", os.Getenv("BENCH_OUT"), "results directory; default a new /tmp/butterfly-bench.* (BENCH_OUT)")
	flag.StringVar(&c.root, "root", "", "the repository to build butterflyd from; default the one holding the working directory")
	flag.IntVar(&c.apiNICs, "api-nics", envInt("BENCH_API_NICS", 1000), "api section: vNICs per phase, e.g. 10000 (BENCH_API_NICS)")
	flag.IntVar(&c.apiGroups, "api-groups", envInt("BENCH_API_GROUPS", 100), "api section: security groups (BENCH_API_GROUPS)")
	flag.IntVar(&c.apiRules, "api-rules", envInt("BENCH_API_RULES", 100), "api section: rules per group (BENCH_API_RULES)")
	flag.StringVar(&c.apiNICType, "api-nic-type", envStr("BENCH_API_NIC_TYPE", "TAP"), "api section: type of the first vNIC phase, TAP or VHOST_USER_SERVER (BENCH_API_NIC_TYPE)")
	flag.IntVar(&c.apiLatSamples, "api-latency-samples", envInt("BENCH_API_LATENCY_SAMPLES", 100), "api section: sg_rule_add requests timed per group (BENCH_API_LATENCY_SAMPLES)")
	flag.Float64Var(&c.apiVhostConnected, "api-vhost-connected", envFloat("BENCH_API_VHOST_CONNECTED", 0.5), "api section: fraction (0 to 1) of the vhost-user vNICs given a front end after api-nic-add-vhost (BENCH_API_VHOST_CONNECTED)")
	flag.IntVar(&c.vhSecs, "vhost-seconds", envInt("BENCH_VHOST_SECONDS", 10), "vhost section: measuring seconds per case (BENCH_VHOST_SECONDS)")
	flag.IntVar(&c.vhWarm, "vhost-warm", envInt("BENCH_VHOST_WARM", 3), "vhost section: warm-up seconds per case (BENCH_VHOST_WARM)")
	flag.IntVar(&c.clusterARPs, "cluster-arps", envInt("BENCH_CLUSTER_ARPS", 100), "cluster section: ARP requests per case (BENCH_CLUSTER_ARPS)")
	flag.IntVar(&c.clusterNICs, "cluster-nics", envInt("BENCH_CLUSTER_NICS", 1000), "cluster section: vNICs of the starting node (BENCH_CLUSTER_NICS)")
	flag.IntVar(&c.clusterGroups, "cluster-groups", envInt("BENCH_CLUSTER_GROUPS", 100), "cluster section: security groups of the starting node (BENCH_CLUSTER_GROUPS)")
	flag.IntVar(&c.clusterRules, "cluster-rules", envInt("BENCH_CLUSTER_RULES", 100), "cluster section: rules per group (BENCH_CLUSTER_RULES)")
	flag.IntVar(&c.vhRounds, "vhost-rounds", envInt("BENCH_VHOST_ROUNDS", 3), "vhost section: rounds (BENCH_VHOST_ROUNDS)")
	flag.StringVar(&c.vhPprof, "vhost-pprof", os.Getenv("BENCH_VHOST_PPROF"), "vhost section: keep a CPU profile of butterflyd over each measured window in this directory (for scripts/pgo.sh; BENCH_VHOST_PPROF)")
	cases := flag.String("vhost-cases", envStr("BENCH_VHOST_CASES", "64,1500,lat,lat1"), "vhost section: cases, comma separated (BENCH_VHOST_CASES)")
	backends := flag.String("vhost-backends", envStr("BENCH_VHOST_BACKENDS", strings.Join(vhDefaultBackends, ",")), "vhost section: back ends, comma separated, of "+strings.Join(vhAllBackends, " ")+" (BENCH_VHOST_BACKENDS)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: bench [flags] [paths] [idle] [api] [go] [firewall] [vhost] [cluster]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	c.vhBackends, c.vhCases = strings.Split(*backends, ","), strings.Split(*cases, ",")
	c.daemonArgs = strings.Fields(daemonArgs)
	if err := run(c, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(c config, sections []string) error {
	if os.Geteuid() != 0 {
		return errors.New("run as root (namespaces, TAP devices)")
	}
	if len(sections) == 0 {
		sections = []string{"paths", "idle", "api", "go"}
	}
	known := map[string]bool{"paths": true, "idle": true, "api": true, "go": true, "firewall": true, "vhost": true, "cluster": true}
	for _, s := range sections {
		if !known[s] {
			return fmt.Errorf("unknown section %s (paths idle api go vhost firewall cluster)", s)
		}
	}
	for _, be := range c.vhBackends {
		if !slices.Contains(vhAllBackends, be) {
			return fmt.Errorf("unknown vhost back end %q (%s)", be, strings.Join(vhAllBackends, " "))
		}
	}
	for _, cs := range c.vhCases {
		if !slices.ContainsFunc(vhCases, func(k vhCaseT) bool { return k.name == cs }) {
			return fmt.Errorf("unknown vhost case %q (64 1500 lat)", cs)
		}
	}
	if c.apiVhostConnected < 0 || c.apiVhostConnected > 1 {
		return fmt.Errorf("-api-vhost-connected %v: want a fraction from 0 to 1", c.apiVhostConnected)
	}
	if c.vhPprof != "" {
		if err := os.MkdirAll(c.vhPprof, 0o755); err != nil {
			return err
		}
	}
	if err := raiseFdLimit(); err != nil {
		return err
	}
	var err error
	if c.root == "" {
		if c.root, err = moduleRoot(); err != nil {
			return err
		}
	}
	if c.out == "" {
		if c.out, err = os.MkdirTemp("", "butterfly-bench."); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "bfb.")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin, err := labtest.Build(c.root, work)
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	b := &bench{cfg: c, bin: bin, r: results{}, cases: newCaseRunner()}
	stopSignals := b.cases.cleanupOnSignal(syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	b.say("bench: %s kernel %s, %d CPUs, TCP %ds, UDP %ds, results in %s", nowUTC(), kernel(), numCPU(), c.secs, c.udpSecs, c.out)
	for _, s := range sections {
		switch s {
		case "paths":
			b.paths()
		case "idle":
			b.idle()
		case "api":
			b.api()
		case "go":
			b.say("== dataplane Go benchmarks (ns per packet)")
			b.gobench("dataplane-bench", "./internal/dataplane/...")
			b.say("== API server Go benchmarks")
			b.gobench("apiserver-bench", "./internal/apiserver/")
		case "firewall":
			b.firewall()
		case "vhost":
			b.vhost()
		case "cluster":
			b.cluster()
		}
	}
	return b.writeSummary()
}

// raiseFdLimit sets the soft limit on open fds to the hard one: the api
// section's vhost-user front ends hold six each. (Go's runtime does so at
// start too, since Go 1.19; this keeps the bench independent of that.)
func raiseFdLimit() error {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return fmt.Errorf("fd limit: %w", err)
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return fmt.Errorf("raising the fd limit to %d: %w", rl.Max, err)
		}
	}
	return nil
}

// moduleRoot is the nearest directory holding go.mod, from the working
// directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: give -root")
		}
		dir = parent
	}
}
