package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/apiclient"
	"github.com/butterfly-go/butterfly/internal/pcap"
)

func writeINI(t *testing.T, dir, text string) string {
	t.Helper()
	p := filepath.Join(dir, "butterflyd.ini")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaults(t *testing.T) {
	dir := t.TempDir()
	cfg, err := Parse([]string{"-i", "10.0.0.1", "-s", dir})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		VTEP:        netip.MustParseAddr("10.0.0.1"),
		Endpoint:    apiclient.DefaultEndpoint,
		LogLevel:    DefaultLogLevel,
		SocketDir:   mustReal(t, dir),
		Syslog:      true,
		StateFile:   DefaultStateFile,
		TraceDir:    mustDir(t, DefaultTraceDir),
		AutoKeyFile: apiclient.DefaultKeyFile,
		Workers:     1,
	}
	want.ConntrackPickup = DefaultConntrackPickup
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Parse defaults:\n got %+v\nwant %+v", cfg, want)
	}
}

func mustDir(t *testing.T, path string) pcap.Dir {
	t.Helper()
	d, err := pcap.NewDir(path)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func mustReal(t *testing.T, dir string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestFlags(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(t.TempDir(), "sock-link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "plain-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		check   func(Config) bool
		wantErr string // substring; "" = success
	}{
		{"long forms", []string{"--ip", "::101", "--socket-dir", dir, "--endpoint", "ipc:///tmp/x", "--log-level", "debug",
			"--graph-cpu-core", "1", "--packet-trace", "--no-syslog", "--nic-mtu", "9000", "--no-offload", "--no-flow-cache", "--key", "/k",
			"--state-file", "", "--metrics", "127.0.0.1:9100", "--vxlan-peers", "::102,::103", "--workers", "2"},
			func(c Config) bool {
				return c.VTEP == netip.MustParseAddr("::101") && c.Endpoint == "ipc:///tmp/x" && c.LogLevel == "debug" &&
					reflect.DeepEqual(c.CPUs, []int{1}) && c.PacketTrace && !c.Syslog && c.UnderlayMTU == 9000 &&
					c.NoOffload && c.NoFlowCache && c.KeyFile == "/k" && c.StateFile == "" && c.Metrics == "127.0.0.1:9100" &&
					reflect.DeepEqual(c.VXLANPeers, []netip.Addr{netip.MustParseAddr("::102"), netip.MustParseAddr("::103")}) &&
					c.Workers == 2
			}, ""},
		{"short forms", []string{"-i", "10.0.0.1", "-s", dir, "-e", "tcp://0.0.0.0:1", "-l", "none", "-u", "3,1,3", "-t", "-m", "max", "-k", "key"},
			func(c Config) bool {
				return c.Endpoint == "tcp://0.0.0.0:1" && c.LogLevel == "none" && reflect.DeepEqual(c.CPUs, []int{1, 3}) &&
					c.PacketTrace && c.UnderlayMTU == 0 && c.KeyFile == "key" && !c.NoFlowCache
			}, ""},
		{"equals form", []string{"--ip=10.0.0.1", "-s" + dir, "--nic-mtu=1500"},
			func(c Config) bool { return c.UnderlayMTU == 1500 }, ""},
		{"socket dir symlink resolved", []string{"-i", "10.0.0.1", "-s", link},
			func(c Config) bool { return c.SocketDir == mustReal(t, dir) }, ""},
		{"relative state file made absolute", []string{"-i", "10.0.0.1", "-s", dir, "--state-file", "st.json"},
			func(c Config) bool { return filepath.IsAbs(c.StateFile) && filepath.Base(c.StateFile) == "st.json" }, ""},
		{"trace dir", []string{"-i", "10.0.0.1", "-s", dir, "--trace-dir", "/srv/trace/"},
			func(c Config) bool { return c.TraceDir.Path() == "/srv/trace" }, ""},
		{"relative trace dir made absolute", []string{"-i", "10.0.0.1", "-s", dir, "--trace-dir", "tr"},
			func(c Config) bool {
				return filepath.IsAbs(c.TraceDir.Path()) && filepath.Base(c.TraceDir.Path()) == "tr"
			}, ""},
		{"empty trace dir", []string{"-i", "10.0.0.1", "-s", dir, "--trace-dir", ""}, nil, "--trace-dir: empty"},
		{"auto key", []string{"-i", "10.0.0.1", "-s", dir, "--auto-key", "/srv/k"},
			func(c Config) bool { return c.AutoKeyFile == "/srv/k" && c.KeyFile == "" }, ""},
		{"auto key none", []string{"-i", "10.0.0.1", "-s", dir, "--auto-key", "none"},
			func(c Config) bool { return c.AutoKeyFile == "" }, ""},
		{"auto key relative", []string{"-i", "10.0.0.1", "-s", dir, "--auto-key", "k"},
			func(c Config) bool { return filepath.IsAbs(c.AutoKeyFile) }, ""},
		{"auto key empty", []string{"-i", "10.0.0.1", "-s", dir, "--auto-key", ""}, nil, "--auto-key: empty"},
		{"dpdk options warn", []string{"-i", "10.0.0.1", "-s", dir, "--dpdk-args", "-c1", "--dpdk-help", "--dpdk-port", "3"},
			func(c Config) bool { return len(c.Warnings) == 3 && strings.Contains(c.Warnings[0], "no effect") }, ""},
		{"version", []string{"-V"}, func(c Config) bool { return c.ShowVersion }, ""},
		{"version long, no mandatory options needed", []string{"--version", "-l", "bogus"}, func(c Config) bool { return c.ShowVersion }, ""},
		{"help", []string{"--help"}, func(c Config) bool { return c.Help }, ""},
		{"help short", []string{"-h"}, func(c Config) bool { return c.Help }, ""},

		{"missing ip", []string{"-s", dir}, nil, "IP to use is not set"},
		{"missing socket dir", []string{"-i", "10.0.0.1"}, nil, "socket folder is not set"},
		{"missing both", nil, nil, "some arguments are missing"},
		{"socket dir absent", []string{"-i", "10.0.0.1", "-s", filepath.Join(dir, "nope")}, nil, "no such file"},
		{"socket dir is a file", []string{"-i", "10.0.0.1", "-s", file}, nil, "not a directory"},
		{"bad ip", []string{"-i", "10.0.0", "-s", dir}, nil, "invalid VTEP address"},
		{"multicast ip", []string{"-i", "239.1.1.1", "-s", dir}, nil, "unicast"},
		{"unspecified ip", []string{"-i", "::", "-s", dir}, nil, "unicast"},
		{"bad level", []string{"-i", "10.0.0.1", "-s", dir, "-l", "loud"}, nil, "unknown log level"},
		{"bad endpoint", []string{"-i", "10.0.0.1", "-s", dir, "-e", "127.0.0.1:9999"}, nil, "invalid API endpoint"},
		{"bad cpu", []string{"-i", "10.0.0.1", "-s", dir, "-u", "x"}, nil, "not a CPU number"},
		{"negative cpu", []string{"-i", "10.0.0.1", "-s", dir, "-u", "-1"}, nil, "not a CPU number"},
		{"mtu too small v6", []string{"-i", "::1", "-s", dir, "-m", "1000"}, nil, "between 1280 and 65535"},
		{"mtu too big", []string{"-i", "10.0.0.1", "-s", dir, "-m", "70000"}, nil, "between 576 and 65535"},
		{"poll idle duration", []string{"-i", "10.0.0.1", "-s", dir, "--poll-idle", "2ms"},
			func(c Config) bool { return c.PollIdle == 2*time.Millisecond }, ""},
		{"poll idle never", []string{"-i", "10.0.0.1", "-s", dir, "--poll-idle", "never"},
			func(c Config) bool { return c.PollIdle < 0 }, ""},
		{"poll idle default", []string{"-i", "10.0.0.1", "-s", dir},
			func(c Config) bool { return c.PollIdle == 0 }, ""},
		{"poll idle zero", []string{"-i", "10.0.0.1", "-s", dir, "--poll-idle", "0s"}, nil, "--poll-idle"},
		{"poll idle text", []string{"-i", "10.0.0.1", "-s", dir, "--poll-idle", "soon"}, nil, "--poll-idle"},
		{"workers zero", []string{"-i", "10.0.0.1", "-s", dir, "--workers", "0"}, nil, "--workers"},
		{"conntrack max", []string{"-i", "10.0.0.1", "-s", dir, "--conntrack-max", "1000"},
			func(c Config) bool { return c.ConntrackMax == 1000 }, ""},
		{"conntrack max default", []string{"-i", "10.0.0.1", "-s", dir},
			func(c Config) bool { return c.ConntrackMax == 0 }, ""},
		{"conntrack max zero", []string{"-i", "10.0.0.1", "-s", dir, "--conntrack-max", "0"}, nil, "--conntrack-max"},
		{"conntrack max huge", []string{"-i", "10.0.0.1", "-s", dir, "--conntrack-max", "99999999999"}, nil, "--conntrack-max"},
		{"workers text", []string{"-i", "10.0.0.1", "-s", dir, "--workers", "two"}, nil, "--workers"},
		{"conntrack pickup default", []string{"-i", "10.0.0.1", "-s", dir},
			func(c Config) bool { return c.ConntrackPickup == 2*time.Minute }, ""},
		{"conntrack pickup", []string{"-i", "10.0.0.1", "-s", dir, "--conntrack-pickup", "30s"},
			func(c Config) bool { return c.ConntrackPickup == 30*time.Second }, ""},
		{"conntrack pickup off", []string{"-i", "10.0.0.1", "-s", dir, "--conntrack-pickup", "0"},
			func(c Config) bool { return c.ConntrackPickup == 0 }, ""},
		{"conntrack pickup negative", []string{"-i", "10.0.0.1", "-s", dir, "--conntrack-pickup", "-1s"}, nil, "--conntrack-pickup"},
		{"conntrack pickup too long", []string{"-i", "10.0.0.1", "-s", dir, "--conntrack-pickup", "2h"}, nil, "--conntrack-pickup"},
		{"conntrack pickup text", []string{"-i", "10.0.0.1", "-s", dir, "--conntrack-pickup", "long"}, nil, "--conntrack-pickup"},
		{"vhost client", []string{"-i", "10.0.0.1", "-s", dir, "--vhost-client"},
			func(c Config) bool { return c.VhostClient }, ""},
		{"vhost client explicit false", []string{"-i", "10.0.0.1", "-s", dir, "--vhost-client=false"},
			func(c Config) bool { return !c.VhostClient }, ""},
		{"vhost client default", []string{"-i", "10.0.0.1", "-s", dir},
			func(c Config) bool { return !c.VhostClient }, ""},
		{"vhost client bad", []string{"-i", "10.0.0.1", "-s", dir, "--vhost-client=maybe"}, nil, "vhost-client"},
		{"peer family", []string{"-i", "10.0.0.1", "-s", dir, "--vxlan-peers", "::1"}, nil, "family"},
		{"peer self", []string{"-i", "10.0.0.1", "-s", dir, "--vxlan-peers", "10.0.0.2,10.0.0.1"}, nil, "own VTEP"},
		{"peer multicast", []string{"-i", "10.0.0.1", "-s", dir, "--vxlan-peers", "230.0.0.1"}, nil, "unicast"},
		{"peer garbage", []string{"-i", "10.0.0.1", "-s", dir, "--vxlan-peers", "host"}, nil, "not an IP"},
		{"metrics bad", []string{"-i", "10.0.0.1", "-s", dir, "--metrics", "9100"}, nil, "--metrics"},
		{"unknown flag", []string{"-i", "10.0.0.1", "-s", dir, "--pid", "x"}, nil, "unknown flag"},
		{"positional", []string{"-i", "10.0.0.1", "-s", dir, "extra"}, nil, "unexpected argument"},
		{"missing config file", []string{"-c", filepath.Join(dir, "none.ini")}, nil, "failed to open configuration file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) error = %v, want it to contain %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.args, err)
			}
			if !tt.check(cfg) {
				t.Errorf("Parse(%q) = %+v", tt.args, cfg)
			}
		})
	}
}

// TestMissingBothReportsBoth checks that every problem is reported at once.
func TestMissingBothReportsBoth(t *testing.T) {
	_, err := Parse([]string{"-l", "loud"})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"IP to use is not set", "socket folder is not set", "unknown log level", "see --help"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestINI(t *testing.T) {
	dir := t.TempDir()
	sockINI := t.TempDir()
	tests := []struct {
		name    string
		ini     string
		args    []string
		check   func(Config) bool
		wantErr string
	}{
		{"ini alone", `
[general]
log-level=debug
ip=42.0.0.1
endpoint=ipc:///run/b.sock
socket-dir=` + sockINI + `
graph-core-id=1
nic-mtu=2000
state-file=/tmp/s.json
metrics=:9100
vxlan-peers=42.0.0.2, 42.0.0.3
workers=2
[security]
encryption_key_path=/etc/butterfly/key
`, nil, func(c Config) bool {
			return c.VTEP == netip.MustParseAddr("42.0.0.1") && c.LogLevel == "debug" && c.Endpoint == "ipc:///run/b.sock" &&
				c.SocketDir == mustReal(t, sockINI) && reflect.DeepEqual(c.CPUs, []int{1}) && c.UnderlayMTU == 2000 &&
				c.StateFile == "/tmp/s.json" && c.Metrics == ":9100" && len(c.VXLANPeers) == 2 && c.Workers == 2 &&
				c.KeyFile == "/etc/butterfly/key" && len(c.Warnings) == 0
		}, ""},
		{"ini overrides command line", "[general]\nip=42.0.0.1\nlog-level=warning\nsocket-dir=" + sockINI + "\n",
			[]string{"-i", "10.0.0.1", "-l", "debug", "-s", dir, "-e", "tcp://127.0.0.1:1"},
			func(c Config) bool {
				return c.VTEP == netip.MustParseAddr("42.0.0.1") && c.LogLevel == "warning" &&
					c.SocketDir == mustReal(t, sockINI) && c.Endpoint == "tcp://127.0.0.1:1"
			}, ""},
		{"documented graph-cpu-core spelling", "[general]\ngraph-cpu-core=2\n", []string{"-i", "10.0.0.1", "-s", dir},
			func(c Config) bool { return reflect.DeepEqual(c.CPUs, []int{2}) }, ""},
		{"quoted value and comments", "; comment\n[general]\n# other\ndpdk-args=\"-c1 -n1\"\nip = 10.0.0.9\n",
			[]string{"-s", dir}, func(c Config) bool {
				return c.VTEP == netip.MustParseAddr("10.0.0.9") && len(c.Warnings) == 1 && strings.Contains(c.Warnings[0], "dpdk-args")
			}, ""},
		{"unknown key and section warn", "[general]\nip=10.0.0.1\ncolour=blue\n[extra]\na=b\n", []string{"-s", dir},
			func(c Config) bool {
				return len(c.Warnings) == 2 && strings.Contains(c.Warnings[0], `"colour"`) && strings.Contains(c.Warnings[1], "[extra]")
			}, ""},
		{"ini empty state-file disables persistence", "[general]\nstate-file=\n", []string{"-i", "10.0.0.1", "-s", dir},
			func(c Config) bool { return c.StateFile == "" }, ""},
		{"ini invalid value", "[general]\nnic-mtu=huge\n", []string{"-i", "10.0.0.1", "-s", dir}, nil, "--nic-mtu"},
		{"ini trace-dir", "[general]\ntrace-dir=/srv/t\n", []string{"-i", "10.0.0.1", "-s", dir, "--trace-dir", "/x"},
			func(c Config) bool { return c.TraceDir.Path() == "/srv/t" }, ""},
		{"ini auto_key_path", "[security]\nauto_key_path=none\n", []string{"-i", "10.0.0.1", "-s", dir},
			func(c Config) bool { return c.AutoKeyFile == "" }, ""},
		{"ini vhost-client", "[general]\nvhost-client=true\n", []string{"-i", "10.0.0.1", "-s", dir},
			func(c Config) bool { return c.VhostClient }, ""},
		{"ini vhost-client overrides the option", "[general]\nvhost-client = false\n", []string{"-i", "10.0.0.1", "-s", dir, "--vhost-client"},
			func(c Config) bool { return !c.VhostClient }, ""},
		{"ini vhost-client unset keeps the option", "[general]\nip=10.0.0.1\n", []string{"-s", dir, "--vhost-client"},
			func(c Config) bool { return c.VhostClient }, ""},
		{"ini conntrack-pickup", "[general]\nconntrack-pickup=45s\n", []string{"-i", "10.0.0.1", "-s", dir, "--conntrack-pickup", "1m"},
			func(c Config) bool { return c.ConntrackPickup == 45*time.Second }, ""},
		{"ini vhost-client invalid", "[general]\nvhost-client=sometimes\n", []string{"-i", "10.0.0.1", "-s", dir}, nil, "vhost-client"},
		{"ini missing mandatory", "[general]\nlog-level=info\n", nil, nil, "IP to use is not set"},
		{"not an ini file", "[general\nip", []string{"-i", "10.0.0.1", "-s", dir}, nil, "failed to open configuration file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeINI(t, t.TempDir(), tt.ini)
			cfg, err := Parse(append([]string{"-c", p}, tt.args...))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.ConfigFile != p {
				t.Errorf("ConfigFile = %q, want %q", cfg.ConfigFile, p)
			}
			if !tt.check(cfg) {
				t.Errorf("got %+v", cfg)
			}
		})
	}
}

// TestShippedINI checks that dist/butterflyd.ini uses only known keys and
// validates once its socket directory exists.
func TestShippedINI(t *testing.T) {
	p := filepath.Join("..", "..", "dist", "butterflyd.ini")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no shipped INI: %v", err)
	}
	var r raw
	newFlagSet(&r) // the options' defaults
	warnings, err := applyINI(&r, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 {
		t.Errorf("shipped INI gives warnings: %q", warnings)
	}
	if r.ip == "" || r.socketDir == "" {
		t.Errorf("shipped INI lacks ip or socket-dir: %+v", r)
	}
	r.socketDir = t.TempDir()
	var cfg Config
	if err := cfg.fill(&r); err != nil {
		t.Errorf("shipped INI does not validate: %v", err)
	}
}

func TestUsage(t *testing.T) {
	u := Usage()
	for _, want := range []string{"--ip", "-i,", "--socket-dir", "--state-file", "--trace-dir", "--metrics", "--vxlan-peers", "--workers",
		"--no-syslog", "--nic-mtu", "--no-flow-cache", "--dpdk-args", "override", "encryption_key_path", "graph-core-id", "--help"} {
		if !strings.Contains(u, want) {
			t.Errorf("usage lacks %q", want)
		}
	}
}

func TestCluster(t *testing.T) {
	dir := t.TempDir()
	base := []string{"-i", "10.0.0.1", "-s", dir}
	tests := []struct {
		name    string
		args    []string
		ini     string
		want    Cluster
		wantErr string
	}{
		{name: "standalone by default", args: nil},
		{name: "flags", args: []string{"--etcd", "http://127.0.0.1:2379, http://127.0.0.2:2379", "--node", "h1"},
			want: Cluster{Endpoints: []string{"http://127.0.0.1:2379", "http://127.0.0.2:2379"}, Node: "h1", Prefix: DefaultClusterPrefix}},
		{name: "ini", ini: "[cluster]\netcd = https://10.1.1.1:2379\nnode = n2\nprefix = /bf/\netcd-ca = /ca.pem\netcd-cert = /c.pem\netcd-key = /k.pem\n",
			want: Cluster{Endpoints: []string{"https://10.1.1.1:2379"}, Node: "n2", Prefix: "/bf/", CA: "/ca.pem", Cert: "/c.pem", Key: "/k.pem"}},
		{name: "ini overrides flags", args: []string{"--etcd", "http://127.0.0.1:1", "--node", "a"}, ini: "[cluster]\nnode = b\n",
			want: Cluster{Endpoints: []string{"http://127.0.0.1:1"}, Node: "b", Prefix: DefaultClusterPrefix}},
		{name: "bad url", args: []string{"--etcd", "127.0.0.1:2379", "--node", "a"}, wantErr: "not an http:// or https:// URL"},
		{name: "no port", args: []string{"--etcd", "http://127.0.0.1", "--node", "a"}, wantErr: "with a port"},
		{name: "node without etcd", args: []string{"--node", "a"}, wantErr: "node is set but not etcd"},
		{name: "bad node", args: []string{"--etcd", "http://h:1", "--node", "a/b"}, wantErr: "is not a node name"},
		{name: "bad prefix", args: []string{"--etcd", "http://h:1", "--node", "a"}, ini: "[cluster]\nprefix = butterfly\n", wantErr: "must start and end with '/'"},
		{name: "cert without key", args: []string{"--etcd", "http://h:1", "--node", "a"}, ini: "[cluster]\netcd-cert = /c\n", wantErr: "go together"},
		{name: "arp suppression off (flag)", args: []string{"--etcd", "http://h:1", "--node", "a", "--no-arp-suppression"},
			want: Cluster{Endpoints: []string{"http://h:1"}, Node: "a", Prefix: DefaultClusterPrefix, NoARPSuppression: true}},
		{name: "arp suppression off (ini)", args: []string{"--etcd", "http://h:1", "--node", "a"}, ini: "[cluster]\narp-suppression = false\n",
			want: Cluster{Endpoints: []string{"http://h:1"}, Node: "a", Prefix: DefaultClusterPrefix, NoARPSuppression: true}},
		{name: "arp suppression on (ini overrides the flag)", args: []string{"--etcd", "http://h:1", "--node", "a", "--no-arp-suppression"},
			ini: "[cluster]\narp-suppression = true\n", want: Cluster{Endpoints: []string{"http://h:1"}, Node: "a", Prefix: DefaultClusterPrefix}},
		{name: "bad arp-suppression", args: []string{"--etcd", "http://h:1", "--node", "a"}, ini: "[cluster]\narp-suppression = maybe\n", wantErr: "not true or false"},
		{name: "import", args: []string{"--etcd", "http://h:1", "--node", "a", "--cluster-import"},
			want: Cluster{Endpoints: []string{"http://h:1"}, Node: "a", Prefix: DefaultClusterPrefix, Import: true}},
		{name: "import without etcd", args: []string{"--cluster-import"}, wantErr: "--cluster-import is set but not etcd"},
		{name: "no-arp-suppression without etcd", args: []string{"--no-arp-suppression"}, wantErr: "arp-suppression is set but not etcd"},
		{name: "exclusive with vxlan-peers", args: []string{"--etcd", "http://h:1", "--node", "a", "--vxlan-peers", "10.0.0.2"}, wantErr: "exclusive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append(append([]string(nil), base...), tt.args...)
			if tt.ini != "" {
				args = append(args, "-c", writeINI(t, t.TempDir(), tt.ini))
			}
			cfg, err := Parse(args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) error = %v, want %q", args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg.Cluster, tt.want) {
				t.Errorf("Cluster = %+v, want %+v", cfg.Cluster, tt.want)
			}
			if len(cfg.Warnings) > 0 {
				t.Errorf("warnings: %q", cfg.Warnings)
			}
		})
	}
}
