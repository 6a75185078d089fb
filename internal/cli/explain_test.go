package cli

import (
	"strings"
	"testing"
)

// TestExplainOptions: the options of explain become the request (shown
// by -v; the test daemon's dataplane cannot explain, so the daemon
// refuses it after it is sent) and invalid questions are refused before
// anything is sent.
func TestExplainOptions(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.mustRun(t, splitLine(t, addA)...)
	ts.mustRun(t, splitLine(t, addB)...)
	sent := []struct{ cmd, req string }{
		{"explain --from vm-a --dst 192.0.2.11 --proto tcp --dport 22",
			`explain{nic_id:"vm-a" dst:"192.0.2.11" protocol:6 dport:22}`},
		{"explain --from vm-a --dst fd00::2 --proto icmp --sport 7 --src fd00::1 --dst-mac " + macB,
			`explain{nic_id:"vm-a" dst:"fd00::2" src:"fd00::1" protocol:58 sport:7 dst_mac:"` + macB + `"}`},
		{"explain --from vm-a --dst 192.0.2.11 --proto 6 --tcp-flags ack,psh --dst-mac 52:54:00:00:0a:02",
			`explain{nic_id:"vm-a" dst:"192.0.2.11" protocol:6 dst_mac:"52:54:00:00:0a:02" tcp_flags:24}`},
		{"explain --from vm-a --frame 52:54:00:00:0a:02:52:54:00:00:0a:01:08:06",
			`explain{nic_id:"vm-a" frame:"RT\000\000\n\002RT\000\000\n\001\010\006"}`},
	}
	for _, c := range sent {
		r := ts.run(append(splitLine(t, c.cmd), "-v")...)
		norm := strings.Join(strings.Fields(r.stderr+r.stdout), "")
		if r.code != 1 || !strings.Contains(norm, strings.ReplaceAll(c.req, " ", "")) ||
			!strings.Contains(r.stderr, "the dataplane cannot explain frames") {
			t.Errorf("butterfly %s: exit %d, want the request %s sent and refused by the test daemon\nstdout: %s\nstderr: %s",
				c.cmd, r.code, c.req, r.stdout, r.stderr)
		}
	}
	refused := []struct{ cmd, errHas string }{
		{"explain --dst 192.0.2.11 --proto tcp", "--from is required"},
		{"explain --from vm-a --proto tcp", "--dst and --proto are required"},
		{"explain --from vm-a --dst 192.0.2.11", "--dst and --proto are required"},
		{"explain --from vm-a --dst 192.0.2.300 --proto tcp", `--dst: "192.0.2.300" is not an IP address`},
		{"explain --from vm-a --dst 192.0.2.11 --proto gre", "--proto: want tcp, udp, icmp or a number"},
		{"explain --from vm-a --dst 192.0.2.11 --proto tcp --dport 70000", "--dport: want a port"},
		{"explain --from vm-a --dst 192.0.2.11 --proto udp --tcp-flags syn", "--tcp-flags goes with --proto tcp"},
		{"explain --from vm-a --dst 192.0.2.11 --proto tcp --tcp-flags urg", "--tcp-flags: want syn"},
		{"explain --from vm-a --frame zz", "--frame: want an Ethernet frame in hex"},
		{"explain --from vm-a --frame 00 --dst 192.0.2.11", "--frame cannot be combined with --dst"},
		{"explain --from vm-a extra", "explain"},
	}
	for _, c := range refused {
		r := ts.run(append(splitLine(t, c.cmd), "-v")...)
		if r.code != 1 || !strings.Contains(r.stderr, c.errHas) || strings.Contains(r.stderr+r.stdout, "explain {") {
			t.Errorf("butterfly %s: exit %d, want refused with %q before sending\nstdout: %s\nstderr: %s", c.cmd, r.code, c.errHas, r.stdout, r.stderr)
		}
	}
}

// TestNICDropsOptions: nic drops sends the count (10 by default) and
// refuses a negative one before sending.
func TestNICDropsOptions(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.mustRun(t, splitLine(t, addA)...)
	for _, c := range []struct{ cmd, req string }{
		{"nic drops vm-a", `nic_drops{nic_id:"vm-a" count:10}`},
		{"nic drops vm-a -n 3", `nic_drops{nic_id:"vm-a" count:3}`},
	} {
		r := ts.run(append(splitLine(t, c.cmd), "-v")...)
		norm := strings.Join(strings.Fields(r.stderr+r.stdout), "")
		if r.code != 1 || !strings.Contains(norm, strings.ReplaceAll(c.req, " ", "")) ||
			!strings.Contains(r.stderr, "the dataplane keeps no dropped frames") {
			t.Errorf("butterfly %s: exit %d, want the request %s sent and refused by the test daemon\nstdout: %s\nstderr: %s",
				c.cmd, r.code, c.req, r.stdout, r.stderr)
		}
	}
	for _, c := range []struct{ cmd, errHas string }{
		{"nic drops vm-a -n -1", "-n: want a number of drops"},
		{"nic drops", "missing NIC id"},
	} {
		r := ts.run(append(splitLine(t, c.cmd), "-v")...)
		if r.code != 1 || !strings.Contains(r.stderr, c.errHas) || strings.Contains(r.stdout, "nic_drops") {
			t.Errorf("butterfly %s: exit %d, want refused with %q before sending\nstdout: %s\nstderr: %s", c.cmd, r.code, c.errHas, r.stdout, r.stderr)
		}
	}
}
