package cli

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The command lines and expected exit statuses of the original's CLI
// scenarios tests/49_cli_reliable and tests/60_dump_load_BT_config, in
// order. As in the original harness, every command line gets "-t <ms> -e
// <endpoint>" appended. In test 60, RESTART replaces the daemon with a
// fresh one, "dump" output is kept in DUMPFILE, and DIFFDUMP checks that
// the last dump equals the kept one.
const (
	original49 = `
1
0 -h
0 --help
1 badcommand
1 --not-a-command
0 request help
1 nic
0 nic help
1 nic add
0 nic add help
0 nic add --ip 42.0.0.1 --mac 42:42:42:42:42:01 --vni 1337 --id nic_1
0 nic add --ip 42.0.0.1 --mac 42:42:42:42:42:01 --vni 1337 --id nic_1
0 nic add --ip 42.0.0.2 --mac 42:42:42:42:42:01 --vni 1337 --id nic_2 --enable-antispoof
0 nic add --mac 42:42:42:42:42:01 --vni 1337 --id nic_not_created
1 nic add --ip 42.0.0.1 --vni 1337 --id nic_not_created
1 nic add --ip 42.0.0.1 --mac 42:42:42:42:42:01 --id nic_not_created
1 nic add --ip 42.0.0.1 --mac 42:42:42:42:42:01 --vni 1337
0 nic add --ip 42.0.0.3 --mac 42:42:42:42:42:03 --vni 1337 --id nic_3 + nic add --ip 42.0.0.4 --mac 42:42:42:42:42:04 --vni 1337 --id nic_4 + nic list
0 nic del nic_3 + nic del nic_4
0 nic list
0 nic list help
0 nic list -v
0 nic list --verbose
1 nic stats
0 nic stats help
0 nic stats nic_1
0 nic stats nic_2
1 nic stats nic_not_here
1 nic details
0 nic details help
0 nic details nic_1
0 nic details nic_2
1 nic details nic_not_here
1 nic sg
0 nic sg help
1 nic sg add
0 nic sg add help
0 nic sg add nic_1 sg-1
0 nic sg add nic_1 sg-1
0 nic sg add nic_2 sg-1 sg-2
0 nic sg add nic_2 sg-1 sg-2
1 nic sg add nic_not_here sg-1
1 nic sg add nic_not_here sg-1 sg-2
1 nic sg add sg-1
1 nic sg add sg-1 sg-2
1 nic sg list
0 nic sg list help
0 nic sg list nic_1
0 nic sg list nic_2
1 nic sg list nic_not_here
1 nic sg del
0 nic sg del help
0 nic sg del nic_1 sg-1
0 nic sg del nic_1 sg-1
0 nic sg del nic_1 sg-not-here
0 nic sg del nic_2 sg-not-here
0 nic sg del nic_2 sg-1 sg-2
0 nic sg del nic_2 sg-1 sg-2
1 nic sg del nic_not_here sg-1
1 nic sg del nic_not_here sg-1 sg-2
1 nic sg del sg-1
1 nic sg del sg-1 sg-2
1 nic del
0 nic del help
0 nic del nic_1
0 nic del nic_1
0 nic add --ip 42.0.0.1 --mac 42:42:42:42:42:01 --vni 1337 --id nic_1
0 nic del nic_1 nic_2 nic_not_here
0 nic add --ip 42.0.0.1 --mac 42:42:42:42:42:01 --vni 1337 --id nic_1
0 nic add --ip 42.0.0.2 --mac 42:42:42:42:42:01 --vni 1337 --id nic_2 --enable-antispoof
0 nic add --ip 42.0.0.2 --mac 42:42:42:42:42:01 --vni 1337 --id nic_22 --bypass-filtering
1 sg
0 sg help
1 sg add
0 sg add help
0 sg add sg-3
0 sg add sg-1
0 sg add sg-1 sg-2 sg-3
0 sg list
0 sg list help
1 sg rule
0 sg rule help
1 sg rule add
0 sg rule add help
0 sg rule add sg-1 --dir in --ip-proto tcp --port 22 --cidr 10.0.0.0/24
0 sg rule add sg-1 --dir in --ip-proto tcp --port 22 --cidr 10.0.0.0/24
0 sg rule add sg-1 --ip-proto 42 --cidr 10.0.0.0/24
0 sg rule add sg-1 --dir in --ip-proto tcp --port-start 1000 --port-end 2000 --cidr 10.0.0.0/24
0 sg rule add sg-1 --ip-proto 42 --sg-members sg-2
0 sg rule add sg-1 --ip-proto 42 --sg-members sg-2
0 sg rule add sg-1 --ip-proto tcp --port 9999 --sg-members sg-2
0 sg rule add sg-1 --ip-proto udp --port 9999 --sg-members sg-2
0 sg rule add sg-1 --ip-proto icmp --sg-members sg-2
0 sg rule add sg-1 --ip-proto 42 --sg-members sg-3
0 sg rule add sg-4 --ip-proto 42 --cidr 10.0.0.0/24
0 sg rule add sg-1 --ip-proto 42 --sg-members sg-5
0 sg rule add sg-1 --ip-proto -1 --sg-members sg-2
0 sg rule add sg-1 --ip-proto all --sg-members sg-2
1 sg rule add --ip-proto 42 --sg-members sg-2
1 sg rule add sg-1 --sg-members sg-2
1 sg rule add sg-1 --ip-proto 42
1 sg rule add sg-1
1 sg rule add sg-1 --dir in --ip-proto tcp --port-start 1000 --cidr 10.0.0.0/24
1 sg rule add sg-1 --dir in --ip-proto tcp --port-end 1000 --cidr 10.0.0.0/24
1 sg rule add sg-1 --ip-proto 256 --sg-members sg-2
1 sg rule add sg-1 --ip-proto not_a_proto --sg-members sg-2
1 sg rule add sg-1 --ip-proto tcp --sg-members sg-2
1 sg rule add sg-1 --ip-proto udp --sg-members sg-2
1 sg rule add sg-1 --ip-proto tcp --port -1 --cidr 10.0.0.0/24
1 sg rule add sg-1 --ip-proto tcp --port 65536 --cidr 10.0.0.0/24
1 sg rule add sg-1 --ip-proto tcp --port not_a_port --cidr 10.0.0.0/24
1 sg rule add sg-1 --dir in --ip-proto tcp --port-start not_a_port --port-end 2000 --cidr 10.0.0.0/24
1 sg rule add sg-1 --dir in --ip-proto tcp --port-start 1000 --port-end not_a_port --cidr 10.0.0.0/24
1 sg rule add sg-1 --dir in --ip-proto tcp --port-start 2000 --port-end 1000 --cidr 10.0.0.0/24
0 sg rule add sg-1 --ip-proto 42 --sg-members sg-2 --dir out
1 sg rule add sg-1 --ip-proto 42 --sg-members sg-2 --dir not_a_dir
1 sg rule list
0 sg rule list help
0 sg rule list sg-1
0 sg rule list sg-2
0 sg rule list sg-4
1 sg rule list sg-not-here
1 sg rule del
0 sg rule del help
0 sg rule del sg-1 f44fac34f8667927
0 sg rule del sg-1 cfdb94f9418c88f1
1 sg rule del sg-1 f44fac34f8667927
1 sg rule del not-a-sg
1 sg rule del sg_1 not-a-hash
1 sg member
0 sg member help
1 sg member add
0 sg member add help
0 sg member add sg-1 10.0.0.1
0 sg member add sg-1 10.0.0.2
0 sg member add sg-1 10.0.0.1
0 sg member add sg-1 2001:0db8:0000:85a3:0000:0000:ac1f:8001
0 sg member add sg-1 2001:db8:0:85a3::ac1f:8001
0 sg member add sg-1 2001:db8:0:85a3::ac1f:8002
0 sg member add sg-6 10.0.0.1
1 sg member add sg-1
1 sg member add sg-1 not_an_ip
1 sg member list
0 sg member list help
0 sg member list sg-1
0 sg member list sg-2
0 sg member list sg-6
1 sg member list not-a-sg
1 sg member del
0 sg member del help
0 sg member del sg-1 10.0.0.1
0 sg member del sg-1 10.0.0.1
0 sg member del sg-1 2001:0db8:0000:85a3:0000:0000:ac1f:8002
0 sg member del not-a-sg 10.0.0.1
0 sg member del sg-1 172.0.0.1
1 sg member del sg-1 
1 sg member del sg-1 not_an_ip
1 sg del
0 sg del help
0 sg del sg-1
0 sg del sg-2 sg-3
0 sg del sg-4 not-a-sg
0 sg del not-a-sg
0 status help
0 status
0 status
0 status
0 shutdown help
0 shutdown
`
	original60 = `
RESTART
0 nic add --ip 10.0.0.1 --mac 01:02:03:04:05:06 --vni 1 --id nic01
0 nic add --ip 10.0.0.1 --mac 01:02:03:04:05:06 --vni 2 --id nic02 --enable-antispoof
0 nic add --ip 10.0.0.1 --mac 01:02:03:04:05:06 --vni 3 --id nic03 --bypass-filtering
0 nic add --ip 10.0.0.1 --mac 01:02:03:04:05:06 --vni 1 --id nic01 --sg sg-1 --sg sg-2 --packet-trace true --trace-path test.pcap
1 nic add --id nic04 --ip 10.0.0.1 --mac 01:02:03:04:05:06 --type 0 --vni 2 --sg sg-1 --enable-antispoof true --trace-path ./test.pcap
1 nic add --id nic05 --ip 10.0.0.1 --mac 01:02:03:04:05:06 --type TESTS + nic update --id nic02 --packet-trace false --trace-path ./tests.pcap
0 nic update --id nic01 --enable-antispoof true --packet-trace true + nic update --id nic01 --enable-antispoof false + nic update --id nic01 --enable-antispoof true + --version + -V
1 nic update --id nic01 --trace-path ./tests.pcap + nic update
0 nic add --ip 10.0.0.1 --mac 01:02:03:04:05:06 --vni 4 --id nic04
0 nic add --ip 10.0.0.2 --mac 02:02:03:04:05:06 --vni 4 --id nic05
0 nic add --ip 10.0.0.3 --mac 03:02:03:04:05:06 --vni 4 --id nic06
0 nic add --ip 10.0.0.1 --mac 01:02:03:04:05:06 --vni 5 --id nic07 --enable-antispoof
0 nic add --ip 10.0.0.2 --mac 02:02:03:04:05:06 --vni 5 --id nic08 --enable-antispoof
0 nic add --ip 10.0.0.3 --mac 03:02:03:04:05:06 --vni 5 --id nic09 --enable-antispoof
0 nic add --ip 10.0.0.1 --mac 01:02:03:04:05:06 --vni 6 --id nic10 --bypass-filtering
0 nic add --ip 10.0.0.2 --mac 02:02:03:04:05:06 --vni 6 --id nic11 --bypass-filtering
0 nic add --ip 10.0.0.3 --mac 03:02:03:04:05:06 --vni 6 --id nic12 --bypass-filtering
0 sg add sg-a sg-b sg-c sg-d sg-e sg-f
0 nic sg add nic01 sg-a
0 sg member add sg-a 10.0.0.1
0 nic sg add nic02 sg-b
0 sg member add sg-b 10.0.0.1
0 nic sg add nic03 sg-c
0 sg member add sg-c 10.0.0.1
0 nic sg add nic04 sg-d
0 nic sg add nic05 sg-d
0 nic sg add nic06 sg-d
0 sg member add sg-d 10.0.0.1
0 sg member add sg-d 10.0.0.2
0 sg member add sg-d 10.0.0.3
0 nic sg add nic07 sg-e
0 nic sg add nic08 sg-e
0 nic sg add nic09 sg-e
0 sg member add sg-e 10.0.0.1
0 sg member add sg-e 10.0.0.2
0 sg member add sg-e 10.0.0.3
0 nic sg add nic10 sg-f
0 nic sg add nic11 sg-f
0 nic sg add nic12 sg-f
0 sg member add sg-f 10.0.0.1
0 sg member add sg-f 10.0.0.2
0 sg member add sg-f 10.0.0.3
0 sg rule add sg-a --ip-proto tcp --port-start 22 --port-end 80 --cidr 42.0.0.1/32
0 sg rule add sg-b --ip-proto all --cidr 0.0.0.0/0
0 sg rule add sg-c --ip-proto udp --port 8000 --cidr 0.0.0.0/0
0 sg rule add sg-c --ip-proto udp --port 8080 --cidr 0.0.0.0/0
0 sg rule add sg-c --ip-proto udp --port 8888 --cidr 0.0.0.0/0
0 sg rule add sg-d --ip-proto icmp --sg-members sg-d
0 sg rule add sg-d --ip-proto all --sg-members sg-d
0 dump
RESTART
0 request DUMPFILE
0 dump
DIFFDUMP
1
0 -h
0 --help
1 -k
0 nic stats help
0 nic details help
0 nic sg list help
1 nic sg list -v
1 nic details request
1 nic stats request
0 nic list help
0 nic list
0 status
1 request
0 shutdown
0 dump help
`
)

// TestOriginalScenarios replays the original's CLI scenarios and checks
// every exit status.
func TestOriginalScenarios(t *testing.T) {
	for _, sc := range []struct{ name, lines string }{
		{"49_cli_reliable", original49},
		{"60_dump_load_BT_config", original60},
	} {
		t.Run(sc.name, func(t *testing.T) {
			ts := startServer(t, serverOpts{})
			dumpFile := filepath.Join(t.TempDir(), "dump1.req")
			var firstDump, lastDump string
			for i, line := range strings.Split(strings.TrimSpace(sc.lines), "\n") {
				switch line {
				case "RESTART":
					ts = startServer(t, serverOpts{})
					continue
				case "DIFFDUMP":
					if firstDump != lastDump {
						t.Errorf("dumps differ:\n%s", lineDiff(firstDump, lastDump))
					}
					continue
				}
				code, rest, _ := strings.Cut(line, " ")
				want, err := strconv.Atoi(code)
				if err != nil {
					t.Fatalf("line %d: bad status in %q", i+1, line)
				}
				args := strings.Fields(strings.ReplaceAll(rest, "DUMPFILE", dumpFile))
				r := ts.run(args...)
				if r.code != want {
					t.Errorf("butterfly %s: exit %d, want %d\nstdout: %s\nstderr: %s", rest, r.code, want, r.stdout, r.stderr)
				}
				if len(args) == 1 && args[0] == "dump" {
					if firstDump == "" {
						firstDump = r.stdout
						if err := os.WriteFile(dumpFile, []byte(r.stdout), 0o644); err != nil {
							t.Fatal(err)
						}
					}
					lastDump = r.stdout
				}
			}
		})
	}
}
