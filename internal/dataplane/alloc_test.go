package dataplane

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
)

// pathCase sets up one forwarding path: a harness whose source port
// replays a batch of frames on every poll, and the port that must see
// them.
type pathCase struct {
	name  string
	setup func(t testing.TB) (h *harness, sink *fakePort, perBatch int)
}

func replayBatch(f frame, n int) []frame {
	fs := make([]frame, n)
	for i := range fs {
		fs[i] = f
	}
	return fs
}

// learnRemote teaches the engine that mac 9 of vni is behind remote.
func learnRemote(t testing.TB, h *harness, vni uint32) {
	h.under.inject(frame{data: vxlanFrame(vni, arp(t, mac(9), "10.0.0.9", "10.0.0.1")), peer: netip.AddrPortFrom(remote, 4789)})
	h.step()
}

// localSwitch sets up an engine with cfg, two vNICs of an all-open group
// (both bypassing filtering with bypass) and a flow from a to b that b
// answered once: the local-switch case.
func localSwitch(cfg Config, bypass bool) func(t testing.TB) (*harness, *fakePort, int) {
	return func(t testing.TB) (*harness, *fakePort, int) {
		h := newHarness(t, cfg, true)
		na, nb := nicOf("a", mac(1), 5, "10.0.0.1"), nicOf("b", mac(2), 5, "10.0.0.2")
		if bypass {
			na, nb = bypassed(na), bypassed(nb)
		}
		return answered(t, h, h.add(t, na), h.add(t, nb))
	}
}

// answered has b (10.0.0.2) answer a (10.0.0.1) once, then makes a replay
// a batch of a's frames to b, whose frames are counted: the set-up of the
// cases where every frame of a reaches b.
func answered(t testing.TB, h *harness, a, b *fakePort) (*harness, *fakePort, int) {
	b.inject(frame{data: udp4(t, mac(1), mac(2), "10.0.0.2", "10.0.0.1", 10, false)})
	h.step()
	a.take()
	b.count = true
	a.replay = replayBatch(frame{data: udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 64, false)}, batchSize)
	return h, b, batchSize
}

func pathCases() []pathCase {
	return []pathCase{
		{"local-switch", localSwitch(Config{}, false)},
		// The same without the flow cache: every frame takes the full
		// path (anti-spoofing, both connection tables, MAC table).
		{"local-switch-no-flow-cache", localSwitch(Config{NoFlowCache: true}, false)},
		// The same with both vNICs bypassing filtering (no anti-spoofing,
		// no firewall), and with b's group holding 100 rules, the flow
		// matching the last: the firewall's cost per packet.
		{"local-switch-bypass", localSwitch(Config{}, true)},
		{"local-switch-100-rules", func(t testing.TB) (*harness, *fakePort, int) {
			h := newHarness(t, Config{}, true)
			g := model.SG{ID: "g"}
			for i := range 99 {
				g.Rules = append(g.Rules, udpRule(model.Inbound, uint32(3000+i), fmt.Sprintf("10.%d.0.0/16", 100+i), ""))
			}
			g.Rules = append(g.Rules, udpRule(model.Inbound, 2000, "10.0.0.1/32", ""))
			if err := h.e.SetSecurityGroups([]model.SG{openSG(), g}); err != nil {
				t.Fatal(err)
			}
			a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
			nb := nicOf("b", mac(2), 5, "10.0.0.2")
			nb.SecurityGroups = []string{"g"}
			b := h.add(t, nb)
			return answered(t, h, a, b)
		}},
		{"local-switch-traced", func(t testing.TB) (*harness, *fakePort, int) {
			h := newHarness(t, Config{}, true)
			n := nicOf("a", mac(1), 5, "10.0.0.1")
			n.PacketTrace, n.TracePath = true, "/t.pcap"
			a := h.add(t, n)
			h.traces["/t.pcap"].count = true
			// b traced too: frames towards it are captured after its
			// firewall
			nb := nicOf("b", mac(2), 5, "10.0.0.2")
			nb.PacketTrace, nb.TracePath = true, "/tb.pcap"
			b := h.add(t, nb)
			h.traces["/tb.pcap"].count = true
			return answered(t, h, a, b)
		}},
		{"firewall-no-rule", func(t testing.TB) (*harness, *fakePort, int) {
			// b is in no group: every frame of a is dropped at b's
			// firewall (ToVM); nothing must reach b.
			h := newHarness(t, Config{}, true)
			a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
			n := nicOf("b", mac(2), 5, "10.0.0.2")
			n.SecurityGroups = nil
			b := h.add(t, n)
			b.inject(frame{data: udp4(t, mac(1), mac(2), "10.0.0.2", "10.0.0.1", 10, false)})
			h.step()
			a.take()
			a.replay = replayBatch(frame{data: udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 64, false)}, batchSize)
			return h, b, 0
		}},
		{"flood", func(t testing.TB) (*harness, *fakePort, int) {
			h := newHarness(t, Config{}, true)
			a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
			b := h.add(t, nicOf("b", mac(2), 5, "10.0.0.2"))
			c := h.add(t, nicOf("c", mac(3), 5, "10.0.0.3"))
			b.count, c.count, h.under.count = true, true, true
			a.replay = replayBatch(frame{data: arp(t, mac(1), "10.0.0.1", "10.0.0.2")}, batchSize)
			return h, b, batchSize
		}},
		{"encap", func(t testing.TB) (*harness, *fakePort, int) {
			h := newHarness(t, Config{}, true)
			a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
			learnRemote(t, h, 5)
			a.take()
			h.under.count = true
			a.replay = replayBatch(frame{data: udp4(t, mac(9), mac(1), "10.0.0.1", "10.0.0.9", 64, false)}, batchSize)
			return h, h.under, batchSize
		}},
		{"encap-tso", func(t testing.TB) (*harness, *fakePort, int) {
			h := newHarness(t, Config{}, true)
			a := h.add(t, bypassed(nicOf("a", mac(1), 5, "10.0.0.1")))
			learnRemote(t, h, 5)
			a.take()
			h.under.count = true
			a.replay = replayBatch(tsoFrame(t, mac(9), mac(1), 16000, 1398), 8)
			return h, h.under, 8 * 12
		}},
		{"encap-too-big", func(t testing.TB) (*harness, *fakePort, int) {
			h := newHarness(t, Config{}, true)
			a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
			learnRemote(t, h, 5)
			a.take()
			a.count = true
			a.replay = replayBatch(frame{data: udp4(t, mac(9), mac(1), "10.0.0.1", "10.0.0.9", 1472, true)}, batchSize)
			return h, a, batchSize
		}},
		{"decap", func(t testing.TB) (*harness, *fakePort, int) {
			h := newHarness(t, Config{}, true)
			a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
			a.count = true
			h.under.replay = replayBatch(frame{
				data: vxlanFrame(5, udp4(t, mac(1), mac(9), "10.0.0.9", "10.0.0.1", 64, false)),
				peer: netip.AddrPortFrom(remote, 4789),
			}, batchSize)
			return h, a, batchSize
		}},
		{"decap-gro", func(t testing.TB) (*harness, *fakePort, int) {
			h := newHarness(t, Config{}, true)
			a := h.add(t, bypassed(nicOf("a", mac(1), 5, "10.0.0.1")))
			a.count = true
			p := pattern(1000, 0)
			var fs []frame
			for i := 0; i < batchSize; i++ {
				fs = append(fs, frame{data: vxlanFrame(5, tcpSeg(t, false, 40000, uint32(i*1000), p, nil)), peer: netip.AddrPortFrom(remote, 4789)})
			}
			h.under.replay = fs
			return h, a, 1
		}},
		// Cluster mode: ARP requests answered locally, unicast to another
		// node's vNIC MAC, and decapsulation with the source check.
		{"cluster-arp-suppressed", func(t testing.TB) (*harness, *fakePort, int) {
			h := clusterHarness(t)
			a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
			a.count = true
			a.replay = replayBatch(frame{data: arp(t, mac(1), "10.0.0.1", "10.0.0.9")}, batchSize)
			return h, a, batchSize
		}},
		{"cluster-ns-suppressed", func(t testing.TB) (*harness, *fakePort, int) {
			h := clusterHarness(t)
			a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1", "fd00::1"))
			a.count = true
			a.replay = replayBatch(frame{data: nsFrame(t, mac(1), "fd00::1", "fd00::9")}, batchSize)
			return h, a, batchSize
		}},
		{"cluster-remote-mac", func(t testing.TB) (*harness, *fakePort, int) {
			h := clusterHarness(t)
			a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
			h.under.count = true
			a.replay = replayBatch(frame{data: udp4(t, mac(9), mac(1), "10.0.0.1", "10.0.0.9", 64, false)}, batchSize)
			return h, h.under, batchSize
		}},
		{"cluster-decap", func(t testing.TB) (*harness, *fakePort, int) {
			h := clusterHarness(t)
			a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
			a.count = true
			h.under.replay = replayBatch(frame{
				data: vxlanFrame(5, udp4(t, mac(1), mac(9), "10.0.0.9", "10.0.0.1", 64, false)),
				peer: netip.AddrPortFrom(remote, 4789),
			}, batchSize)
			return h, a, batchSize
		}},
		{"decap-traced-underlay", func(t testing.TB) (*harness, *fakePort, int) {
			h := newHarness(t, Config{TraceUnderlay: "/u.pcap"}, true)
			h.traces["/u.pcap"].count = true
			a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
			a.count = true
			h.under.replay = replayBatch(frame{
				data: vxlanFrame(5, udp4(t, mac(1), mac(9), "10.0.0.9", "10.0.0.1", 64, false)),
				peer: netip.AddrPortFrom(remote, 4789),
			}, batchSize)
			return h, a, batchSize
		}},
	}
}

// clusterHarness is a cluster-mode harness where remote (a node) has
// mac 9 (10.0.0.9, fd00::9) in VNI 5.
func clusterHarness(t testing.TB) *harness {
	h := newHarness(t, Config{Cluster: true}, true)
	if err := h.e.SetRemotes(Remotes{
		Sources:   []netip.Addr{remote},
		Flood:     map[uint32][]netip.Addr{5: {remote}},
		MACs:      map[uint32][]RemoteMAC{5: {{MAC: mac(9), VTEP: remote}}},
		Neighbors: map[uint32][]Neighbor{5: {{IP: netip.MustParseAddr("10.0.0.9"), MAC: mac(9)}, {IP: netip.MustParseAddr("fd00::9"), MAC: mac(9)}}},
	}); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestZeroAllocs pushes batches through every forwarding path and checks
// that nothing is allocated per batch (so nothing per packet).
func TestZeroAllocs(t *testing.T) {
	for _, pc := range pathCases() {
		t.Run(pc.name, func(t *testing.T) {
			h, sink, per := pc.setup(t)
			w := h.e.workers[0]
			w.iterate() // warm up
			before := sink.written.Load()
			allocs := testing.AllocsPerRun(50, func() { w.iterate() })
			if allocs != 0 {
				t.Errorf("%.1f allocations per batch, want 0", allocs)
			}
			if got := sink.written.Load() - before; got < int64(50*per) {
				t.Errorf("sink got %d frames over 51 batches, want >= %d", got, 50*per)
			}
		})
	}
}

// BenchmarkPath measures the forwarding cost per packet of each path.
func BenchmarkPath(b *testing.B) {
	for _, pc := range pathCases() {
		b.Run(pc.name, func(b *testing.B) {
			h, sink, per := pc.setup(b)
			w := h.e.workers[0]
			w.iterate()
			before := sink.written.Load()
			b.ReportAllocs()
			b.ResetTimer()
			pkts := 0
			for pkts < b.N {
				pkts += w.iterate()
			}
			b.StopTimer()
			out := sink.written.Load() - before
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(pkts), "ns/pkt")
			b.ReportMetric(float64(out)/float64(pkts), "out/in")
			_ = per
		})
	}
}

// TestZeroAllocsHandoff covers the paths between two workers: a frame
// for a vNIC or for the underlay owned by the other worker, and the
// return of its buffer.
func TestZeroAllocsHandoff(t *testing.T) {
	h := newHarness(t, Config{Workers: 2}, true)
	a := h.add(t, nicOf("a", mac(1), 5)) // worker 0
	b := h.add(t, nicOf("b", mac(2), 5)) // worker 1
	learnRemote(t, h, 5)
	b.inject(frame{data: udp4(t, mac(1), mac(2), "10.0.0.2", "10.0.0.1", 10, false)})
	h.step()
	a.take()
	a.count, h.under.count = true, true
	half := make([]frame, 0, batchSize)
	for i := 0; i < batchSize/2; i++ {
		half = append(half,
			frame{data: udp4(t, mac(1), mac(2), "10.0.0.2", "10.0.0.1", 64, false)}, // to a, worker 0
			frame{data: udp4(t, mac(9), mac(2), "10.0.0.2", "10.0.0.9", 64, false)}) // to the underlay, worker 0
	}
	b.replay = half
	w0, w1 := h.e.workers[0], h.e.workers[1]
	run := func() { w1.iterate(); w0.iterate() }
	run()
	before := a.written.Load() + h.under.written.Load()
	if allocs := testing.AllocsPerRun(50, run); allocs != 0 {
		t.Errorf("%.1f allocations per batch, want 0", allocs)
	}
	if got := a.written.Load() + h.under.written.Load() - before; got < 50*batchSize {
		t.Errorf("%d frames crossed over 51 batches, want >= %d", got, 50*batchSize)
	}
}
