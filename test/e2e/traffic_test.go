package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// iperfReport is the part of iperf3's JSON output the tests read.
type iperfReport struct {
	Error string `json:"error"`
	End   struct {
		SumReceived struct {
			Bytes         int64   `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
		Sum struct { // UDP
			Bytes       int64   `json:"bytes"`
			Packets     int64   `json:"packets"`
			LostPackets int64   `json:"lost_packets"`
			LostPercent float64 `json:"lost_percent"`
		} `json:"sum"`
	} `json:"end"`
}

// iperf runs a one-shot iperf3 server in srv and a client in cli towards
// dst for secs seconds. extra are client flags (-u -b 50M for UDP).
func iperf(t *testing.T, srv, cli *labtest.VM, dst string, secs int, extra ...string) iperfReport {
	t.Helper()
	server := exec.Command("ip", "netns", "exec", srv.NS, "iperf3", "-s", "-1", "-p", "5201")
	if err := server.Start(); err != nil {
		t.Fatalf("iperf3 server: %v", err)
	}
	done := make(chan struct{})
	go func() { server.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			server.Process.Kill()
			<-done
		}
	})
	labtest.Eventually(t, 5*time.Second, "iperf3 server listening", func() error {
		out, err := srv.Exec("ss", "-Hltn", "sport = :5201")
		if err == nil && strings.TrimSpace(out) == "" {
			return fmt.Errorf("no listener yet")
		}
		return err
	})
	args := append([]string{"iperf3", "-c", dst, "-p", "5201", "-t", fmt.Sprint(secs), "-J", "--connect-timeout", "5000"}, extra...)
	out, err := cli.Exec(args...)
	var r iperfReport
	if jerr := json.Unmarshal([]byte(out), &r); jerr != nil {
		t.Fatalf("iperf3 %v: %v; output: %s", args, err, out)
	}
	if r.Error != "" || err != nil {
		t.Fatalf("iperf3 %v: %v %s", args, err, r.Error)
	}
	return r
}

// TestIperf: TCP and UDP streams between two VMs on one host and across
// two hosts over VXLAN, on IPv4 and IPv6 underlays.
func TestIperf(t *testing.T) {
	for _, f := range []labtest.Family{labtest.IPv4, labtest.IPv6} {
		t.Run(f.String()+"-underlay", func(t *testing.T) {
			l := newLab(t)
			h1, h2 := l.OpenHostPair(f, labtest.DaemonOpts{})
			a, b, c := h1.AddVM(vnicSpec(1)), h1.AddVM(vnicSpec(2)), h2.AddVM(vnicSpec(3))
			a.Reaches(t, b.IP(0))
			a.Reaches(t, c.IP(0))
			for _, tc := range []struct {
				name string
				dst  *labtest.VM
			}{{"same-host", b}, {"across-hosts", c}} {
				if f == labtest.IPv6 && tc.dst.Host == h1 {
					continue // the local path does not depend on the underlay
				}
				t.Run(tc.name+"/tcp", func(t *testing.T) {
					r := iperf(t, tc.dst, a, tc.dst.IP(0), 2)
					t.Logf("TCP %s: %.2f Gbit/s", tc.name, r.End.SumReceived.BitsPerSecond/1e9)
					// 2 s at even 10 Mbit/s is 2.5 MB: anything less is broken.
					if r.End.SumReceived.Bytes < 2_500_000 {
						t.Errorf("TCP %s: only %d bytes received", tc.name, r.End.SumReceived.Bytes)
					}
				})
				t.Run(tc.name+"/udp", func(t *testing.T) {
					r := iperf(t, tc.dst, a, tc.dst.IP(0), 2, "-u", "-b", "20M", "-l", "1200")
					s := r.End.Sum
					t.Logf("UDP %s: %d datagrams sent, %d lost (%.1f%%)", tc.name, s.Packets, s.LostPackets, s.LostPercent)
					if s.Packets < 1000 || s.LostPercent > 10 {
						t.Errorf("UDP %s: %d datagrams, %.1f%% lost; want >= 1000 and <= 10%%", tc.name, s.Packets, s.LostPercent)
					}
				})
			}
		})
	}
}
