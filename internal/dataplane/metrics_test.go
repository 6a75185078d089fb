package dataplane

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func metricValue(t *testing.T, fams []*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue(), true
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

func TestCollector(t *testing.T) {
	h := newHarness(t, Config{}, true)
	a := h.add(t, nicOf("a", mac(1), 5))
	b := h.add(t, nicOf("b", mac(2), 5))
	f := udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 100, false)
	a.inject(frame{data: f}, frame{data: f}, frame{data: udp4(t, mac(2), mac(3), "10.0.0.1", "10.0.0.2", 100, false)})
	h.step()
	b.take()
	checkMetrics(t, h.e, []metricWant{
		{"butterfly_nic_rx_packets_total", map[string]string{"nic": "a"}, 3},
		{"butterfly_nic_tx_packets_total", map[string]string{"nic": "b"}, 2},
		{"butterfly_nic_tx_bytes_total", map[string]string{"nic": "b"}, float64(2 * len(f))},
		{"butterfly_nic_drops_total", map[string]string{"nic": "a", "reason": "antispoof_src_mac"}, 1},
		{"butterfly_element_packets_total", map[string]string{"type": "switch", "name": "switch-5"}, 2},
		{"butterfly_element_drops_total", map[string]string{"type": "antispoof", "name": "antispoof-a", "reason": "antispoof_src_mac"}, 1},
		// b never sent, so both frames to it were also flooded.
		{"butterfly_element_packets_total", map[string]string{"type": "underlay-tx", "name": "underlay"}, 2},
		{"butterfly_worker_sleeps_total", map[string]string{"worker": "0"}, 0}, // manual engine: never sleeps
	})
}

// TestPcapTraceFile runs the real pcap writer: the trace file holds the
// frames of both directions.
func TestPcapTraceFile(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, Config{}, true)
	h.e.hooks.openTrace = openPcap
	n := nicOf("a", mac(1), 5)
	n.PacketTrace, n.TracePath = true, filepath.Join(dir, "a.pcap")
	a := h.add(t, n)
	b := h.add(t, nicOf("b", mac(2), 5))
	out := udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 10, false)
	in := udp4(t, mac(1), mac(2), "10.0.0.2", "10.0.0.1", 20, false)
	a.inject(frame{data: out})
	b.inject(frame{data: in})
	h.step()
	// Turning the trace off closes (and flushes) the file.
	n.PacketTrace = false
	if err := h.e.UpdateNIC(n); err != nil {
		t.Fatal(err)
	}
	fh, err := os.Open(n.TracePath)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	r, err := pcapgo.NewReader(fh)
	if err != nil {
		t.Fatal(err)
	}
	var got [][]byte
	for {
		data, _, err := r.ReadPacketData()
		if err != nil {
			break
		}
		got = append(got, data)
	}
	if len(got) != 2 || len(got[0]) != len(out) || len(got[1]) != len(in) {
		t.Fatalf("pcap holds %d frames, want the 2 of both directions", len(got))
	}
}

// metricWant is a metric's expected value: name, labels (a subset of the
// sample's) and value.
type metricWant struct {
	name   string
	labels map[string]string
	want   float64
}

// checkMetrics gathers e's metrics and checks each wanted value.
func checkMetrics(t *testing.T, e *Engine, wants []metricWant) {
	t.Helper()
	fams := gather(t, e)
	for _, c := range wants {
		got, ok := metricValue(t, fams, c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
}

// gather returns e's metrics, gathered through a pedantic registry.
func gather(t *testing.T, e *Engine) []*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(e.Collector()); err != nil {
		t.Fatal(err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// TestWorkerWaitMetric checks that each configuration change records the
// time it waited for the workers, whether the worker is busy (a port has
// frames at every poll) or asleep.
func TestWorkerWaitMetric(t *testing.T) {
	h := newHarnessFds(t, Config{Workers: 1}, false, true)
	rules := scaleRules(2)
	a, b := model.SG{ID: "g", Rules: rules[:1]}, model.SG{ID: "g", Rules: rules}
	groupOf(t, h, a, 2)
	waits := func() uint64 {
		t.Helper()
		for _, f := range gather(t, h.e) {
			if f.GetName() == "butterfly_engine_worker_wait_seconds" {
				return f.GetMetric()[0].GetHistogram().GetSampleCount()
			}
		}
		t.Fatal("no butterfly_engine_worker_wait_seconds")
		return 0
	}
	// Each call changes the group: b and a alternate from where the
	// last call left it.
	changes := 0
	change := func(n int) {
		t.Helper()
		for range n {
			sg := &a
			if changes%2 == 0 {
				sg = &b
			}
			changes++
			if err := h.e.UpdateSecurityGroup("g", sg); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name  string
		setup func()
	}{
		{"worker asleep", func() {
			waitFor(t, "the worker asleep", func() bool { return h.e.workers[0].sleeping.Load() })
		}},
		{"worker busy", func() { keepBusy(t, h) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup()
			before := waits()
			change(5)
			if got := waits() - before; got != 5 {
				t.Errorf("%d waits recorded for 5 changes", got)
			}
		})
	}
}
