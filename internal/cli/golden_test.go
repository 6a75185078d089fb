package cli

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// splitLine splits a scenario line into words; double quotes group words,
// "" is an empty word and a backslash inside quotes escapes the next rune.
func splitLine(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	inWord, quoted, escaped := false, false, false
	for _, r := range line {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case r == '\\' && quoted:
			escaped = true
		case r == '"':
			quoted = !quoted
			inWord = true
		case r == ' ' && !quoted:
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("unbalanced quote in %q", line)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// scenarios are command sequences run against one fresh daemon each; the
// output of every command (stdout, stderr, exit status) is compared with
// testdata/<name>.golden. Run "go test ./internal/cli -update" to rewrite
// the files after a deliberate change, and review the diff.
var scenarios = []struct {
	name  string
	setup func(ts *testServer)
	lines string
}{
	{
		name: "nic",
		setup: func(ts *testServer) {
			ts.dp.SetStats("nic_1", model.NICStats{In: 1234, Out: 5678})
			ts.dp.SetCounters("nic_1", model.NICCounters{
				RxPackets: 10, RxBytes: 1000, TxPackets: 20, TxBytes: 2000,
				Drops:  map[string]uint64{"firewall": 3, "antispoof": 1},
				Queues: []model.QueueCounters{{RxPackets: 4, TxPackets: 20}, {RxPackets: 6, TxPackets: 0}},
			})
		},
		lines: `
nic list
nic add --ip 42.0.0.1 --mac 42:42:42:42:42:01 --vni 1337 --id nic_1
nic add --ip 42.0.0.1 --mac 42:42:42:42:42:01 --vni 1337 --id nic_1
nic add --ip 42.0.0.2 --ip 2001:0db8:0000:85a3:0000:0000:ac1f:8001 --mac 42:42:42:42:42:02 --vni 1337 --id nic_2 --enable-antispoof --sg sg-1
nic add --mac 42:42:42:42:42:03 --vni 7 --id tap_3 --type TAP --bypass-filtering --packet-trace true --trace-path /var/tmp/tap_3.pcap
nic add --ip 42.0.0.3 --mac 42:42:42:42:42:03 --vni 1337 + nic list
nic add --ip 42.0.0.1 --vni 1337 --id nic_x
nic add --ip 42.0.0.1 --mac 42:42:42:42:42:01 --id nic_x
nic add --mac 42:42:42:42:42:01 --vni 16777216 --id nic_x
nic add --mac 42:42:42:42:42:01 --vni ten --id nic_x
nic add --mac 42:42:42:42:42:01 --vni 1 --id nic_x --type 0
nic add --mac 42:42:42:42:42:01 --vni 1 --id nic_x --trace-path ./x.pcap
nic add --mac 42:42:42:42:42:01 --vni 1 --id nic_x --packet-trace maybe
nic add --mac 42:42:42:42:42:01 --vni 1 --id nic_x --ip 42.0.0.256
nic add --mac 42:42:42:42:01 --vni 1 --id nic_x
nic add --ip 42.0.0.3 --mac 42:42:42:42:42:03 --vni 1337 --id nic_3 + nic add --ip 42.0.0.4 --mac 42:42:42:42:42:04 --vni 1337 --id nic_4 + nic list
nic del nic_3 + nic del nic_4 nic_not_here
nic list
nic details nic_1
nic details nic_2
nic details tap_3
nic details nic_not_here
nic details
nic stats nic_1
nic stats nic_2
nic stats nic_not_here
nic stats
nic counters nic_1
nic counters nic_not_here
nic update --id nic_1 --ip 42.0.0.11 --ip 42.0.0.12 --enable-antispoof true
nic details nic_1
nic update --id nic_1 --ip -e
nic details nic_1
nic update --id nic_1 --ip 300.1.1.1
nic update --id nic_not_here --ip 42.0.0.1
nic update --id nic_1 --enable-antispoof yes
nic update --id nic_1 --trace-path ./tests.pcap
nic update --ip 42.0.0.1
nic sg list nic_1
nic sg add nic_1 sg-2 sg-1
nic sg add nic_1 sg-1
nic sg list nic_1
nic sg add nic_not_here sg-1
nic sg add nic_1
nic sg del nic_1 sg-1 sg-not-here
nic sg list nic_1
nic sg del nic_1 sg-2
nic sg list nic_1
nic sg set nic_1 sg-3 sg-4
nic sg list nic_1
nic sg set nic_1
nic sg list nic_1
nic sg del nic_not_here sg-1
nic sg list nic_not_here
nic sg list
nic sg
nic sg bogus
nic bogus
nic
nic del
nic del nic_1 nic_2 tap_3
nic list
`,
	},
	{
		name: "sg",
		lines: `
sg list
sg add sg-3
sg add sg-1 sg-2 sg-3
sg list
sg add
sg rule add sg-1 --dir in --ip-proto tcp --port 22 --cidr 10.0.0.0/24
sg rule add sg-1 --dir in --ip-proto tcp --port 22 --cidr 10.0.0.0/24
sg rule add sg-1 --ip-proto 42 --cidr 10.0.0.0/24
sg rule add sg-1 --dir in --ip-proto tcp --port-start 1000 --port-end 2000 --cidr 10.0.0.0/24
sg rule add sg-1 --ip-proto 42 --sg-members sg-2
sg rule add sg-1 --ip-proto tcp --port 9999 --sg-members sg-2
sg rule add sg-1 --ip-proto udp --port 9999 --sg-members sg-2
sg rule add sg-1 --ip-proto icmp --sg-members sg-2
sg rule add sg-1 --ip-proto all --sg-members sg-2
sg rule add sg-1 --ip-proto 58 --cidr 2001:db8::/32
sg rule add sg-1 --ip-proto 42 --sg-members sg-2 --dir out
sg rule add sg-4 --ip-proto 42 --cidr 10.0.0.0/24
sg rule list sg-1
sg rule list sg-4
sg rule list sg-not-here
sg rule list
sg rule add --ip-proto 42 --sg-members sg-2
sg rule add sg-1 --sg-members sg-2
sg rule add sg-1 --ip-proto 42
sg rule add sg-1 --dir in --ip-proto tcp --port-start 1000 --cidr 10.0.0.0/24
sg rule add sg-1 --ip-proto 256 --sg-members sg-2
sg rule add sg-1 --ip-proto not_a_proto --sg-members sg-2
sg rule add sg-1 --ip-proto tcp --sg-members sg-2
sg rule add sg-1 --ip-proto tcp --port -1 --cidr 10.0.0.0/24
sg rule add sg-1 --ip-proto tcp --port 65536 --cidr 10.0.0.0/24
sg rule add sg-1 --ip-proto tcp --port-start 70000 --port-end 70001 --cidr 10.0.0.0/24
sg rule add sg-1 --ip-proto tcp --port-start 1000 --port-end not_a_port --cidr 10.0.0.0/24
sg rule add sg-1 --dir in --ip-proto tcp --port-start 2000 --port-end 1000 --cidr 10.0.0.0/24
sg rule add sg-1 --ip-proto tcp --port 80 --port-start 80 --port-end 81 --cidr 10.0.0.0/24
sg rule add sg-1 --ip-proto 42 --cidr 10.0.0.0/24 --sg-members sg-2
sg rule add sg-1 --ip-proto 42 --cidr 10.0.0.0
sg rule add sg-1 --ip-proto 42 --cidr 10.0.0.0/33
sg rule add sg-1 --ip-proto 42 --sg-members sg-2 --dir not_a_dir
sg rule del sg-1 f44fac34f8667927
sg rule del sg-1 CFDB94F9418C88F1
sg rule del sg-1 f44fac34f8667927
sg rule del sg-1 --ip-proto tcp --port 22 --cidr 10.0.0.0/24
sg rule del sg-1 --dir out --ip-proto 42 --sg-members sg-2
sg rule list sg-1
sg rule del sg-1 not-a-hash
sg rule del sg_1 0123456789abcdef
sg rule del sg-1 0123456789abcdef --ip-proto 42
sg rule del sg-1
sg rule del
sg member add sg-1 10.0.0.1
sg member add sg-1 10.0.0.2
sg member add sg-1 10.0.0.1
sg member add sg-1 2001:0db8:0000:85a3:0000:0000:ac1f:8001
sg member add sg-1 2001:db8:0:85a3::ac1f:8001
sg member add sg-1 2001:db8:0:85a3::ac1f:8002
sg member add sg-6 10.0.0.1
sg member add sg-1
sg member add sg-1 not_an_ip
sg member list sg-1
sg member list sg-2
sg member list sg-6
sg member list not-a-sg
sg member list
sg member del sg-1 10.0.0.1
sg member del sg-1 10.0.0.1
sg member del sg-1 2001:0db8:0000:85a3:0000:0000:ac1f:8002
sg member del not-a-sg 10.0.0.1
sg member del sg-1
sg member del sg-1 not_an_ip
sg member list sg-1
sg member bogus
sg rule
sg
sg del
sg del sg-1
sg del sg-2 sg-3 + sg del sg-4 not-a-sg
sg list
`,
	},
	{
		name: "app",
		lines: `
status
status help
shutdown help
dump help
request help
nic add help
sg rule del help
-h
help
badcommand
--not-a-command
nic list --verbose
sg add sg-1 + badcommand
sg add sg-1 + sg rule add sg-1 --ip-proto tcp --port 70000 --cidr 10.0.0.0/24
sg add sg-1 + sg member add sg-1 not_an_ip + sg add sg-2
sg list
nic add --id a --mac 42:42:42:42:42:01 --vni 1 + + nic list
sg list +
+
request
request /nonexistent/request.txt
status
`,
	},
}

func TestGolden(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			ts := startServer(t, serverOpts{})
			if sc.setup != nil {
				sc.setup(ts)
			}
			var got strings.Builder
			for _, line := range strings.Split(strings.TrimSpace(sc.lines), "\n") {
				args := splitLine(t, line)
				r := ts.run(args...)
				fmt.Fprintf(&got, "$ butterfly %s\n%s", quoteArgs(args), r.stdout)
				if r.stderr != "" {
					fmt.Fprintf(&got, "[stderr]\n%s", r.stderr)
				}
				fmt.Fprintf(&got, "[exit %d]\n\n", r.code)
			}
			compareGolden(t, filepath.Join("testdata", sc.name+".golden"), got.String())
		})
	}
}

func compareGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run with -update and review the diff):\n%s", path, lineDiff(string(want), got))
	}
}

// lineDiff shows the first differing lines of want and got.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			lo := max(0, i-3)
			return fmt.Sprintf("line %d:\n  want: %q\n  got:  %q\ncontext (got):\n%s", i+1, wl, gl,
				strings.Join(g[lo:min(len(g), i+4)], "\n"))
		}
	}
	return "(no line difference)"
}
