// Package config parses butterflyd's command line and INI file into a
// validated Config.
//
// As in the original, the INI file (-c) is read after the command line and
// every key it sets overrides the matching option. Unlike the original, a
// missing mandatory option is an error (the caller exits non-zero).
package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"gopkg.in/ini.v1"

	"github.com/butterfly-go/butterfly/internal/apiclient"
	"github.com/butterfly-go/butterfly/internal/logging"
	"github.com/butterfly-go/butterfly/internal/pcap"
)

// Defaults.
const (
	DefaultLogLevel  = "info"
	DefaultStateFile = "/var/lib/butterfly/state.json"
	// DefaultTraceDir is where packet traces are written; the daemon
	// creates it (mode 0700) at first use.
	DefaultTraceDir = "/var/lib/butterfly/trace"
	DefaultWorkers  = 1
	// MaxWorkers bounds --workers.
	MaxWorkers = 256
	// MaxConntrack bounds --conntrack-max.
	MaxConntrack = 1 << 24
	// DefaultConntrackPickup is the default --conntrack-pickup: Linux's
	// TCP_RTO_MAX, so that every TCP sender still retrying meets the
	// window; MaxConntrackPickup bounds it.
	DefaultConntrackPickup = 2 * time.Minute
	MaxConntrackPickup     = time.Hour
)

// Config is the daemon's validated configuration.
type Config struct {
	// ConfigFile is the INI file read, "" if none.
	ConfigFile string
	// VTEP is the outer source address for VXLAN (-i); its family picks
	// IPv4 or IPv6 outer headers.
	VTEP netip.Addr
	// Endpoint is the ZeroMQ endpoint the API binds (-e).
	Endpoint string
	// LogLevel is one of logging.LevelNames() (-l).
	LogLevel string
	// SocketDir is the existing directory for vhost-user sockets (-s),
	// absolute with symlinks resolved.
	SocketDir string
	// CPUs are the CPUs to pin the packet workers to (-u); empty = none.
	CPUs []int
	// PacketTrace is the global trace mode (-t): underlay capture and the
	// default of the per-vNIC packet_trace flag.
	PacketTrace bool
	// TraceDir is the directory trace files are confined to
	// (--trace-dir): a vNIC's trace path must name a file directly in it.
	TraceDir pcap.Dir
	// Syslog is false with --no-syslog.
	Syslog bool
	// UnderlayMTU is the underlay MTU (-m); 0 = take it from the VTEP's
	// link ("max" means the same).
	UnderlayMTU int
	// NoOffload disables TAP/vhost offloads (--no-offload).
	NoOffload bool
	// NoFlowCache turns the packet workers' flow cache off
	// (--no-flow-cache): every frame takes the full path.
	NoFlowCache bool
	// KeyFile is the API encryption key file given with -k ("" = not
	// given); it must exist.
	KeyFile string
	// AutoKeyFile is the key file used when -k is not given
	// (--auto-key): read, or created with a random key at first start.
	// "" (--auto-key none) = no key: the API accepts clear-text requests.
	AutoKeyFile string
	// StateFile is where the desired state is persisted; "" = not at all.
	StateFile string
	// Metrics is the Prometheus listen address, "" = off.
	Metrics string
	// VXLANPeers are the head-end replication VTEPs; empty = multicast.
	VXLANPeers []netip.Addr
	// Workers is the number of packet workers.
	Workers int
	// PollIdle is how long a packet worker keeps busy-polling after the
	// last packet before it sleeps in epoll; 0 = the dataplane's default,
	// negative = never sleep (lowest latency, one busy core per worker).
	PollIdle time.Duration
	// ConntrackMax is the number of connections the firewall tracks per
	// vNIC (--conntrack-max); 0 = the dataplane's default.
	ConntrackMax int
	// ConntrackPickup is the loose-pickup window after the start
	// (--conntrack-pickup): vNICs restored without saved connection
	// tables (without a state file: the vNICs added) pick up the TCP
	// connections in progress the policy allows until it ends; 0 = off.
	ConntrackPickup time.Duration
	// VhostClient is the vhost-user mode of vNICs added without one
	// (--vhost-client): true = client, the daemon connects to a socket
	// the VM's QEMU listens on; false = server, as the original.
	VhostClient bool
	// Cluster is the cluster-mode configuration ([cluster], --etcd,
	// --node); its Endpoints are empty in standalone mode (the default).
	Cluster Cluster
	// ShowVersion is set by -V: print the version and exit.
	ShowVersion bool
	// Help is set by -h/--help: print Usage() and exit.
	Help bool
	// Warnings are things the operator should know but that do not stop
	// the daemon (options without effect, unknown INI keys); the daemon
	// logs them once logging is up.
	Warnings []string
}

// DefaultClusterPrefix is the etcd key prefix of cluster mode.
const DefaultClusterPrefix = "/butterfly/"

// Cluster configures cluster mode: the daemon is programmed from etcd.
type Cluster struct {
	// Endpoints are the etcd client URLs (--etcd, [cluster] etcd); empty
	// means standalone mode.
	Endpoints []string
	// Node is this daemon's node name (--node, [cluster] node).
	Node string
	// Prefix is the etcd key prefix, ending with "/" ([cluster] prefix).
	Prefix string
	// CA, Cert and Key are the TLS files for etcd ([cluster] etcd-ca,
	// etcd-cert, etcd-key); empty CA and Cert mean plain connections.
	CA, Cert, Key string
	// NoARPSuppression turns off the answering of ARP requests and
	// neighbour solicitations for the cluster's addresses
	// (--no-arp-suppression, [cluster] arp-suppression = false): they
	// flood to the VNI's nodes like unknown ones.
	NoARPSuppression bool
	// Import writes the vNICs and security groups of the state file to
	// etcd, where it has no record of them, before following etcd
	// (--cluster-import): a standalone node moves to cluster mode with
	// its state.
	Import bool
}

// raw holds option values as text, before the INI overlay and validation.
type raw struct {
	configFile, ip, endpoint, logLevel, socketDir, cpus string
	nicMTU, dpdkArgs, dpdkPort, key, stateFile, metrics string
	peers, workers, pollIdle, conntrackMax, traceDir    string
	autoKey, conntrackPickup                            string
	etcd, node, prefix, etcdCA, etcdCert, etcdKey       string
	vhostClientINI, arpSuppressionINI                   string
	trace, noSyslog, noOffload, dpdkHelp, version, help bool
	vhostClient, noARPSuppression, clusterImport        bool
	noFlowCache                                         bool
}

func newFlagSet(r *raw) *pflag.FlagSet {
	fs := pflag.NewFlagSet("butterflyd", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	fs.StringVarP(&r.configFile, "config", "c", "", "INI configuration `file`; its keys override command-line options")
	fs.StringVarP(&r.ip, "ip", "i", "", "VTEP source `address` for VXLAN (IPv4 or IPv6 outer); mandatory")
	fs.StringVarP(&r.endpoint, "endpoint", "e", apiclient.DefaultEndpoint, "ZeroMQ `endpoint` the API binds (tcp://, ipc://...)")
	fs.StringVarP(&r.logLevel, "log-level", "l", DefaultLogLevel, "log `level`: "+strings.Join(logging.LevelNames(), ", "))
	fs.BoolVarP(&r.version, "version", "V", false, "print the version and exit")
	fs.StringVarP(&r.socketDir, "socket-dir", "s", "", "existing `dir`ectory for vhost-user sockets; mandatory")
	fs.StringVarP(&r.cpus, "graph-cpu-core", "u", "", "pin packet workers to these `cpus` (comma-separated; default: no pinning)")
	fs.BoolVarP(&r.trace, "packet-trace", "t", false, "trace packets: underlay pcap and default per-vNIC packet_trace")
	fs.StringVar(&r.traceDir, "trace-dir", DefaultTraceDir, "`dir`ectory packet traces are written to, created with mode 0700; a vNIC's trace path must name a file in it")
	fs.StringVarP(&r.key, "key", "k", "", "API encryption key `file` (base64 of 32 bytes); clear-text requests are then refused (default: --auto-key)")
	fs.StringVar(&r.autoKey, "auto-key", apiclient.DefaultKeyFile, "without -k, the API key is read from this `file`, created with a random key at first start (mode 0600, a missing directory 0700); \"none\" = no key: any local user may use the API")
	fs.BoolVar(&r.noSyslog, "no-syslog", false, "log to stderr only, not to syslog")
	fs.StringVarP(&r.nicMTU, "nic-mtu", "m", "", "underlay `mtu` (or \"max\"); default: the MTU of the VTEP address's link")
	fs.BoolVar(&r.noOffload, "no-offload", false, "disable checksum/TSO offloads on vNICs")
	fs.BoolVar(&r.noFlowCache, "no-flow-cache", false, "turn the packet workers' flow cache off: every frame is parsed, checked and looked up in full (same decisions, more CPU; for diagnosis)")
	fs.StringVar(&r.stateFile, "state-file", DefaultStateFile, "persist the configuration in this `file` and restore it at start (\"\" = off)")
	fs.StringVar(&r.metrics, "metrics", "", "serve Prometheus metrics (/metrics) and Go profiles (/debug/pprof/) on this `address` (host:port; default off; keep it on loopback)")
	fs.StringVar(&r.peers, "vxlan-peers", "", "head-end replication: comma-separated remote VTEP `addresses` (default: multicast)")
	fs.StringVar(&r.workers, "workers", strconv.Itoa(DefaultWorkers), "number of packet `workers`")
	fs.StringVar(&r.pollIdle, "poll-idle", "", "busy-poll this `duration` after the last packet before sleeping (e.g. 100us, 2ms; \"never\" = never sleep; default 100us)")
	fs.StringVar(&r.conntrackMax, "conntrack-max", "", "connections tracked by the firewall per vNIC (`number`; default 65536)")
	fs.StringVar(&r.conntrackPickup, "conntrack-pickup", DefaultConntrackPickup.String(), "for this `duration` after a start, vNICs restored without saved connection tables (after a SIGKILL or crash; without a state file, the vNICs added) pick up the TCP connections in progress their rules would let open (0 = never; at most 1h)")
	fs.BoolVar(&r.vhostClient, "vhost-client", false, "vhost-user vNICs added without a mode are clients: the daemon connects to the socket the VM's QEMU listens on, and reconnects (default: server, the daemon listens)")
	fs.StringVar(&r.etcd, "etcd", "", "cluster mode: comma-separated etcd client `URLs`; the daemon is programmed from etcd (default: standalone)")
	fs.StringVar(&r.node, "node", "", "cluster mode: this daemon's node `name` (default: the host name)")
	fs.BoolVar(&r.clusterImport, "cluster-import", false, "cluster mode, the first start of a standalone node only: write the vNICs and security groups of its state file to etcd where it has none of them, so that it keeps them (etcd's records win)")
	fs.BoolVar(&r.noARPSuppression, "no-arp-suppression", false, "cluster mode: do not answer ARP and neighbour solicitations for the cluster's addresses locally; they flood to the VNI's nodes")
	fs.StringVar(&r.dpdkArgs, "dpdk-args", "", "accepted for compatibility; no effect (no DPDK)")
	fs.BoolVar(&r.dpdkHelp, "dpdk-help", false, "accepted for compatibility; no effect (no DPDK)")
	fs.StringVar(&r.dpdkPort, "dpdk-port", "", "accepted for compatibility; no effect (no DPDK)")
	fs.BoolVarP(&r.help, "help", "h", false, "show this help and exit")
	return fs
}

// Usage returns the --help text.
func Usage() string {
	var b strings.Builder
	b.WriteString("Usage: butterflyd [options]\n\nButterfly userspace virtual switch daemon.\n\nOptions:\n")
	b.WriteString(newFlagSet(&raw{}).FlagUsages())
	b.WriteString(`
Configuration file (-c): read after the command line; every key it sets
overrides the matching option.
  [general]  log-level, ip, endpoint, socket-dir, graph-core-id (or
             graph-cpu-core), nic-mtu, state-file, metrics, vxlan-peers,
             workers, poll-idle, conntrack-max, conntrack-pickup,
             vhost-client (true or false), trace-dir;
             dpdk-args and dpdk-port are accepted without effect
  [security] encryption_key_path, auto_key_path
  [cluster]  etcd, node, prefix (default /butterfly/), etcd-ca, etcd-cert,
             etcd-key, arp-suppression (true or false, default true)
`)
	return b.String()
}

// iniKeys maps "section.key" to the raw field it sets.
func iniKeys(r *raw) map[string]*string {
	return map[string]*string{
		"general.log-level":            &r.logLevel,
		"general.ip":                   &r.ip,
		"general.endpoint":             &r.endpoint,
		"general.socket-dir":           &r.socketDir,
		"general.graph-core-id":        &r.cpus,
		"general.graph-cpu-core":       &r.cpus,
		"general.dpdk-args":            &r.dpdkArgs,
		"general.nic-mtu":              &r.nicMTU,
		"general.dpdk-port":            &r.dpdkPort,
		"general.state-file":           &r.stateFile,
		"general.metrics":              &r.metrics,
		"general.vxlan-peers":          &r.peers,
		"general.workers":              &r.workers,
		"general.poll-idle":            &r.pollIdle,
		"general.conntrack-max":        &r.conntrackMax,
		"general.conntrack-pickup":     &r.conntrackPickup,
		"general.vhost-client":         &r.vhostClientINI,
		"general.trace-dir":            &r.traceDir,
		"security.encryption_key_path": &r.key,
		"security.auto_key_path":       &r.autoKey,
		"cluster.etcd":                 &r.etcd,
		"cluster.node":                 &r.node,
		"cluster.prefix":               &r.prefix,
		"cluster.etcd-ca":              &r.etcdCA,
		"cluster.etcd-cert":            &r.etcdCert,
		"cluster.etcd-key":             &r.etcdKey,
		"cluster.arp-suppression":      &r.arpSuppressionINI,
	}
}

// Parse parses the daemon's arguments (without the program name), reads
// the INI file if -c is given and validates the result. With -h or -V it
// returns at once with Help or ShowVersion set.
func Parse(args []string) (Config, error) {
	var r raw
	fs := newFlagSet(&r)
	if err := fs.Parse(args); err != nil {
		return Config{}, fmt.Errorf("%w (see --help)", err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	if r.help {
		return Config{Help: true}, nil
	}
	if r.version {
		return Config{ShowVersion: true}, nil
	}
	var cfg Config
	if fs.Changed("dpdk-args") {
		cfg.Warnings = append(cfg.Warnings, "--dpdk-args has no effect: this implementation does not use DPDK")
	}
	if r.dpdkHelp {
		cfg.Warnings = append(cfg.Warnings, "--dpdk-help has no effect: this implementation does not use DPDK")
	}
	if fs.Changed("dpdk-port") {
		cfg.Warnings = append(cfg.Warnings, "--dpdk-port has no effect: this implementation does not use DPDK")
	}
	if r.configFile != "" {
		w, err := applyINI(&r, r.configFile)
		if err != nil {
			return Config{}, err
		}
		cfg.Warnings = append(cfg.Warnings, w...)
		cfg.ConfigFile = r.configFile
	}
	if err := cfg.fill(&r); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// applyINI overlays the keys of the INI file at path on r.
func applyINI(r *raw, path string) (warnings []string, err error) {
	f, err := ini.LoadSources(ini.LoadOptions{Insensitive: false}, path)
	if err != nil {
		return nil, fmt.Errorf("failed to open configuration file %s: %w", path, err)
	}
	keys := iniKeys(r)
	for _, sec := range f.Sections() {
		name := sec.Name()
		if name == ini.DefaultSection && len(sec.Keys()) == 0 {
			continue
		}
		if name != "general" && name != "security" && name != "cluster" {
			warnings = append(warnings, fmt.Sprintf("%s: unknown section [%s] ignored", path, name))
			continue
		}
		for _, k := range sec.Keys() {
			dst, ok := keys[name+"."+k.Name()]
			if !ok {
				warnings = append(warnings, fmt.Sprintf("%s: unknown key %q in [%s] ignored", path, k.Name(), name))
				continue
			}
			*dst = strings.TrimSpace(k.Value())
			switch k.Name() {
			case "dpdk-args", "dpdk-port":
				warnings = append(warnings, fmt.Sprintf("%s: %s has no effect: this implementation does not use DPDK", path, k.Name()))
			}
		}
	}
	return warnings, nil
}

// fill validates r into cfg, reporting every problem at once.
func (cfg *Config) fill(r *raw) error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	var missing bool
	if r.ip == "" {
		bad("IP to use is not set (-i/--ip or [general] ip)")
		missing = true
	} else if a, err := netip.ParseAddr(r.ip); err != nil || a.Zone() != "" {
		bad("invalid VTEP address %q (-i/--ip): want an IPv4 or IPv6 address", r.ip)
	} else if a = a.Unmap(); !a.IsGlobalUnicast() && !a.IsLoopback() {
		bad("invalid VTEP address %s (-i/--ip): must be a unicast address", a)
	} else {
		cfg.VTEP = a
	}

	if r.socketDir == "" {
		bad("socket folder is not set (-s/--socket-dir or [general] socket-dir)")
		missing = true
	} else if dir, err := resolveDir(r.socketDir); err != nil {
		bad("socket folder (-s/--socket-dir): %w", err)
	} else {
		cfg.SocketDir = dir
	}

	cfg.Endpoint = r.endpoint
	if !strings.Contains(r.endpoint, "://") {
		bad("invalid API endpoint %q (-e/--endpoint): want transport://address, e.g. %s", r.endpoint, apiclient.DefaultEndpoint)
	}

	if _, err := logging.ParseLevel(r.logLevel); err != nil {
		bad("-l/--log-level: %w", err)
	} else {
		cfg.LogLevel = strings.ToLower(strings.TrimSpace(r.logLevel))
	}

	if cpus, err := parseCPUs(r.cpus); err != nil {
		bad("-u/--graph-cpu-core: %w", err)
	} else {
		cfg.CPUs = cpus
	}

	if mtu, err := parseMTU(r.nicMTU, cfg.VTEP); err != nil {
		bad("-m/--nic-mtu: %w", err)
	} else {
		cfg.UnderlayMTU = mtu
	}

	if n, err := strconv.Atoi(r.workers); err != nil || n < 1 || n > MaxWorkers {
		bad("--workers: %q is not a number between 1 and %d", r.workers, MaxWorkers)
	} else {
		cfg.Workers = n
	}

	switch v := strings.TrimSpace(r.pollIdle); v {
	case "":
	case "never":
		cfg.PollIdle = -1
	default:
		if d, err := time.ParseDuration(v); err != nil || d <= 0 || d > time.Minute {
			bad("--poll-idle: %q is not a duration between 1us and 1m, or \"never\"", r.pollIdle)
		} else {
			cfg.PollIdle = d
		}
	}

	if v := strings.TrimSpace(r.conntrackMax); v != "" {
		if n, err := strconv.Atoi(v); err != nil || n < 1 || n > MaxConntrack {
			bad("--conntrack-max: %q is not a number between 1 and %d", r.conntrackMax, MaxConntrack)
		} else {
			cfg.ConntrackMax = n
		}
	}

	if d, err := time.ParseDuration(strings.TrimSpace(r.conntrackPickup)); err != nil || d < 0 || d > MaxConntrackPickup {
		bad("--conntrack-pickup: %q is not a duration between 0 and %v", r.conntrackPickup, MaxConntrackPickup)
	} else {
		cfg.ConntrackPickup = d
	}

	cfg.VhostClient = r.vhostClient
	if v := strings.TrimSpace(r.vhostClientINI); v != "" {
		if b, err := strconv.ParseBool(v); err != nil {
			bad("vhost-client: %q is not true or false", r.vhostClientINI)
		} else {
			cfg.VhostClient = b
		}
	}

	if peers, err := parsePeers(r.peers, cfg.VTEP); err != nil {
		bad("--vxlan-peers: %w", err)
	} else {
		cfg.VXLANPeers = peers
	}

	if r.metrics != "" {
		if _, port, err := net.SplitHostPort(r.metrics); err != nil || port == "" {
			bad("--metrics: %q is not a host:port listen address", r.metrics)
		}
	}
	cfg.Metrics = r.metrics

	cfg.StateFile = r.stateFile
	if cfg.StateFile != "" {
		abs, err := filepath.Abs(cfg.StateFile)
		if err != nil {
			bad("--state-file: %w", err)
		}
		cfg.StateFile = abs
	}

	if dir, err := traceDir(r.traceDir); err != nil {
		bad("--trace-dir: %w", err)
	} else {
		cfg.TraceDir = dir
	}

	cfg.KeyFile = r.key
	switch v := strings.TrimSpace(r.autoKey); v {
	case "none":
	case "":
		bad("--auto-key: empty path (\"none\" turns the key off)")
	default:
		if abs, err := filepath.Abs(v); err != nil {
			bad("--auto-key: %w", err)
		} else {
			cfg.AutoKeyFile = abs
		}
	}
	if c, err := parseCluster(r); err != nil {
		bad("cluster: %w", err)
	} else {
		cfg.Cluster = c
		if len(c.Endpoints) > 0 && len(cfg.VXLANPeers) > 0 {
			bad("cluster: --vxlan-peers and --etcd are exclusive (in cluster mode the flood lists come from etcd)")
		}
	}
	cfg.PacketTrace = r.trace
	cfg.Syslog = !r.noSyslog
	cfg.NoOffload = r.noOffload
	cfg.NoFlowCache = r.noFlowCache

	if missing {
		errs = append(errs, errors.New("some arguments are missing, see --help"))
	}
	return errors.Join(errs...)
}

// parseCluster checks the cluster options: without etcd URLs the other
// keys must be unset (standalone); with them, every URL is http(s)://
// host:port, the node name is given (default: the host name) and fits in
// an etcd key, the prefix starts and ends with "/", and the TLS files
// come as documented (a certificate needs its key).
func parseCluster(r *raw) (Cluster, error) {
	var c Cluster
	if strings.TrimSpace(r.etcd) == "" {
		if r.noARPSuppression {
			r.arpSuppressionINI = "false"
		}
		if r.clusterImport {
			return Cluster{}, errors.New("--cluster-import is set but not etcd (--etcd): cluster mode needs the etcd URLs")
		}
		for name, v := range map[string]string{"node": r.node, "prefix": r.prefix, "etcd-ca": r.etcdCA, "etcd-cert": r.etcdCert,
			"etcd-key": r.etcdKey, "arp-suppression": r.arpSuppressionINI} {
			if strings.TrimSpace(v) != "" {
				return Cluster{}, fmt.Errorf("%s is set but not etcd (--etcd): cluster mode needs the etcd URLs", name)
			}
		}
		return c, nil
	}
	for _, u := range strings.Split(r.etcd, ",") {
		u = strings.TrimSpace(u)
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" || pu.Port() == "" {
			return Cluster{}, fmt.Errorf("--etcd: %q is not an http:// or https:// URL with a port", u)
		}
		c.Endpoints = append(c.Endpoints, u)
	}
	c.Node = strings.TrimSpace(r.node)
	if c.Node == "" {
		h, err := os.Hostname()
		if err != nil {
			return Cluster{}, fmt.Errorf("--node not given and no host name: %w", err)
		}
		c.Node = h
	}
	if len(c.Node) > 64 || strings.ContainsAny(c.Node, "/ \t\n") {
		return Cluster{}, fmt.Errorf("--node: %q is not a node name (at most 64 characters, no '/' or spaces)", c.Node)
	}
	c.Prefix = strings.TrimSpace(r.prefix)
	if c.Prefix == "" {
		c.Prefix = DefaultClusterPrefix
	}
	if !strings.HasPrefix(c.Prefix, "/") || !strings.HasSuffix(c.Prefix, "/") {
		return Cluster{}, fmt.Errorf("prefix: %q must start and end with '/'", c.Prefix)
	}
	c.CA, c.Cert, c.Key = strings.TrimSpace(r.etcdCA), strings.TrimSpace(r.etcdCert), strings.TrimSpace(r.etcdKey)
	if (c.Cert == "") != (c.Key == "") {
		return Cluster{}, errors.New("etcd-cert and etcd-key go together")
	}
	c.NoARPSuppression = r.noARPSuppression
	c.Import = r.clusterImport
	if v := strings.TrimSpace(r.arpSuppressionINI); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return Cluster{}, fmt.Errorf("arp-suppression: %q is not true or false", r.arpSuppressionINI)
		}
		c.NoARPSuppression = !b
	}
	return c, nil
}

// traceDir parses the trace directory: not empty, made absolute.
func traceDir(s string) (pcap.Dir, error) {
	if strings.TrimSpace(s) == "" {
		return pcap.Dir{}, errors.New("empty directory")
	}
	abs, err := filepath.Abs(s)
	if err != nil {
		return pcap.Dir{}, fmt.Errorf("%s: %w", s, err)
	}
	return pcap.NewDir(abs)
}

// resolveDir checks that dir is an existing directory and returns its
// absolute path with symlinks resolved.
func resolveDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("%s: %w", dir, err)
	}
	resolved, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("%s: %w", dir, err)
	}
	st, err := os.Stat(resolved)
	if err != nil {
		return "", fmt.Errorf("%s: %w", dir, err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("%s is not a directory", dir)
	}
	return resolved, nil
}

// parseCPUs parses "", "3" or "0,2,3" into sorted unique CPU numbers.
func parseCPUs(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	seen := map[int]bool{}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not a CPU number", strings.TrimSpace(f))
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out, nil
}

// parseMTU parses the underlay MTU: "" or "max" = 0 (from the link).
// An IPv6 underlay needs at least 1280, IPv4 at least 576.
func parseMTU(s string, vtep netip.Addr) (int, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.EqualFold(s, "max") {
		return 0, nil
	}
	lo := 576
	if vtep.Is6() {
		lo = 1280
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > 65535 {
		return 0, fmt.Errorf("%q is not \"max\" or an MTU between %d and 65535", s, lo)
	}
	return n, nil
}

// parsePeers parses comma- or space-separated unicast addresses of the
// VTEP's family, dropping duplicates.
func parsePeers(s string, vtep netip.Addr) ([]netip.Addr, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	for _, f := range fields {
		a, err := netip.ParseAddr(f)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%q is not an IP address", f)
		}
		a = a.Unmap()
		if a.IsMulticast() || a.IsUnspecified() {
			return nil, fmt.Errorf("%s is not a unicast address", a)
		}
		if vtep.IsValid() && a.Is4() != vtep.Is4() {
			return nil, fmt.Errorf("%s is not of the VTEP address's family (%s)", a, vtep)
		}
		if a == vtep {
			return nil, fmt.Errorf("%s is this host's own VTEP address", a)
		}
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out, nil
}
