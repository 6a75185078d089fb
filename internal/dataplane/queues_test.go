package dataplane

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/port"
)

// fakeSplit is a vhost-user port with two readers: the port itself
// (reader 0) and reader 1, each an in-memory port.
type fakeSplit struct {
	fakeVhost
	r1 fakeReader
}

// fakeReader is a fake vhost-user reader: an in-memory port that records
// its CompleteReads calls.
type fakeReader struct {
	fakePort
	fakeCompleter
}

func (p *fakeSplit) Readers() int         { return 2 }
func (p *fakeSplit) Reader(int) port.Port { return &p.r1 }

// splitHarness is a manual engine with two workers, a vhost-user vNIC v
// (10.0.0.1, home worker 0) whose second reader worker 1 polls, and a
// TAP vNIC b (10.0.0.2, worker 1) in the same VNI, which has answered
// v once (the switch knows both MACs).
func splitHarness(t testing.TB, bypass bool, pool int) (*harness, *fakeSplit, *fakePort) {
	h := newHarness(t, Config{Workers: 2, PoolSize: pool}, true)
	sp := &fakeSplit{}
	h.e.hooks.openVhost = func(string, bool, *slog.Logger) (vhostPort, error) { return sp, nil }
	nv := nicOf("v", mac(1), 5, "10.0.0.1")
	nv.Type, nv.Bypass = model.NICVhostUser, bypass
	if _, err := h.e.AddNIC(nv); err != nil {
		t.Fatal(err)
	}
	nb := nicOf("b", mac(2), 5, "10.0.0.2")
	nb.Bypass = bypass
	b := h.add(t, nb)
	b.inject(frame{data: udp4(t, mac(1), mac(2), "10.0.0.2", "10.0.0.1", 10, false)})
	h.step()
	sp.take()
	return h, sp, b
}

// TestReadsCompleted: a worker tells a vhost-user reader it read frames
// from that they are forwarded (CompleteReads) once per batch with
// frames, after it sent them on: on the vNIC's home worker, and on
// another worker reading its second reader, whether that worker switches
// the frames itself (bypass) or hands them to the home worker.
func TestReadsCompleted(t *testing.T) {
	t.Run("home", func(t *testing.T) {
		h := newHarness(t, Config{}, true)
		nv := nicOf("v", mac(1), 5, "10.0.0.1")
		nv.Type = model.NICVhostUser
		path, err := h.e.AddNIC(nv)
		if err != nil {
			t.Fatal(err)
		}
		v := h.vhosts[path]
		b := h.add(t, nicOf("b", mac(2), 5, "10.0.0.2"))
		b.inject(frame{data: udp4(t, mac(1), mac(2), "10.0.0.2", "10.0.0.1", 10, false)})
		h.step()
		v.check = b.written.Load
		for i := range 5 {
			v.inject(frame{data: udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 20+i, false)})
		}
		h.step()
		if v.calls.Load() != 1 || v.seen[0] != 5 {
			t.Fatalf("CompleteReads called %d times, seeing %v frames at b; want once, after the 5", v.calls.Load(), v.seen)
		}
	})
	for _, bypass := range []bool{false, true} {
		t.Run(fmt.Sprint("share, bypass ", bypass), func(t *testing.T) {
			h, sp, b := splitHarness(t, bypass, 0)
			w0 := b.written.Load()
			sp.r1.check = b.written.Load
			for i := range 10 {
				sp.r1.inject(frame{data: udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 20+i, false)})
			}
			h.step()
			if n := b.written.Load() - w0; n != 10 {
				t.Fatalf("b got %d frames, want 10", n)
			}
			if sp.r1.calls.Load() != 1 {
				t.Fatalf("CompleteReads of reader 1 called %d times, want once", sp.r1.calls.Load())
			}
			// Switched where they were read: sent before the call.
			if bypass && sp.r1.seen[0]-w0 != 10 {
				t.Fatalf("CompleteReads of reader 1 with %d of the 10 frames at b", sp.r1.seen[0]-w0)
			}
			if sp.calls.Load() != 0 {
				t.Fatalf("CompleteReads of reader 0 called %d times without frames", sp.calls.Load())
			}
		})
	}
}

// TestQueueShares: frames the vNIC's second worker reads from its
// queues reach b, counted once on the vNIC's port-rx (on the worker that
// read them); with a firewall they cross it on the home worker (which
// owns the connection table), without one they are switched where they
// were read. Frames read by the home worker go as before.
func TestQueueShares(t *testing.T) {
	for _, tt := range []struct {
		name   string
		bypass bool
		fwOn   int // worker whose firewall element counts them (-1: none)
	}{{"filtered", false, 0}, {"bypass", true, -1}} {
		t.Run(tt.name, func(t *testing.T) {
			h, sp, b := splitHarness(t, tt.bypass, 0)
			e := h.e
			e.mu.Lock()
			np := e.nics["v"].p
			e.mu.Unlock()
			if np.worker != 0 || len(np.shares) != 1 || np.shares[0].worker != 1 || np.shares[0].p != &sp.r1 {
				t.Fatalf("vNIC v: home %d, shares %+v; want home 0, reader 1 on worker 1", np.worker, np.shares)
			}
			rx0, fw0 := np.rx.per[0].packets, np.fw.per[0].packets
			for i := range 10 {
				sp.r1.inject(frame{data: udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 20+i, false)})
			}
			for i := range 5 {
				sp.inject(frame{data: udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 40+i, false)})
			}
			h.step()
			if got := b.take(); len(got) != 15 {
				t.Fatalf("b got %d frames, want 15", len(got))
			}
			if r0, r1 := np.rx.per[0].packets-rx0, np.rx.per[1].packets; r0 != 5 || r1 != 10 {
				t.Fatalf("port-rx of v: %d frames on worker 0, %d on worker 1; want 5 and 10", r0, r1)
			}
			f0, f1 := np.fw.per[0].packets-fw0, np.fw.per[1].packets
			if tt.fwOn == 0 && (f0 != 15 || f1 != 0) || tt.fwOn < 0 && f0+f1 != 0 {
				t.Fatalf("firewall of v counted %d frames on worker 0, %d on worker 1", f0, f1)
			}
			c, err := e.Counters("v")
			if err != nil {
				t.Fatal(err)
			}
			if c.RxPackets != 15 || len(c.Drops) != 0 {
				t.Fatalf("counters of v %+v, want 15 frames received, no drops", c)
			}
			// The vNIC leaves: both workers stop polling its readers.
			if err := e.DeleteNIC("v"); err != nil {
				t.Fatal(err)
			}
			h.step()
			for _, w := range e.workers {
				if w.ports[np.slot] != nil {
					t.Fatalf("worker %d still polls slot %d after the vNIC left", w.id, np.slot)
				}
			}
		})
	}
}

// TestQueueSharesHandoffFull: when the home worker falls behind by a full
// handoff ring, the frames another worker reads for it are dropped and
// counted (handoff_full); every frame read is delivered or counted.
func TestQueueSharesHandoffFull(t *testing.T) {
	h, sp, b := splitHarness(t, false, maxPoolSize)
	const total = handoffRing + 300
	for i := range total {
		sp.r1.inject(frame{data: udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 20+i%50, false)})
	}
	w1 := h.e.workers[1]
	for range 2 * total / batchSize {
		w1.iterate() // the home worker does not run meanwhile
	}
	h.step()
	c, err := h.e.Counters("v")
	if err != nil {
		t.Fatal(err)
	}
	got := uint64(len(b.take()))
	full := c.Drops[dropName(dropHandoffFull)]
	if c.RxPackets != total || full == 0 || got+full != total {
		t.Fatalf("read %d, delivered %d, handoff_full %d (drops %v); want %d read, some dropped, the rest delivered", c.RxPackets, got, full, c.Drops, total)
	}
}

// TestZeroAllocsShares: a batch read by a vNIC's second worker, handed to
// its home worker through the firewall and on to b, allocates nothing;
// nor does the bypass path, switched where it was read.
func TestZeroAllocsShares(t *testing.T) {
	for _, bypass := range []bool{false, true} {
		h, sp, b := splitHarness(t, bypass, 0)
		b.count = true
		sp.r1.replay = replayBatch(frame{data: udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 64, false)}, batchSize)
		w0, w1 := h.e.workers[0], h.e.workers[1]
		run := func() { w1.iterate(); w0.iterate(); w1.iterate() }
		run()
		before := b.written.Load()
		if allocs := testing.AllocsPerRun(50, run); allocs != 0 {
			t.Errorf("bypass %v: %.1f allocations per batch, want 0", bypass, allocs)
		}
		if got := b.written.Load() - before; got < 50*batchSize {
			t.Errorf("bypass %v: b got %d frames over 51 batches, want >= %d", bypass, got, 50*batchSize)
		}
	}
}

// BenchmarkShares measures the cost per frame delivered to b of batches
// read by a vNIC's second worker: handed to the home worker through the
// firewall and back to b's worker (filtered), or switched where they
// were read (bypass); both workers run in turn on one thread. Compare
// with BenchmarkPath's local-switch cases (one worker).
func BenchmarkShares(b *testing.B) {
	for _, bypass := range []bool{false, true} {
		name := "filtered"
		if bypass {
			name = "bypass"
		}
		b.Run(name, func(b *testing.B) {
			h, sp, sink := splitHarness(b, bypass, 0)
			sink.count = true
			sp.r1.replay = replayBatch(frame{data: udp4(b, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 64, false)}, batchSize)
			w0, w1 := h.e.workers[0], h.e.workers[1]
			w1.iterate()
			w0.iterate()
			before := sink.written.Load()
			b.ResetTimer()
			out := int64(0)
			for out < int64(b.N) {
				w1.iterate()
				w0.iterate()
				out = sink.written.Load() - before
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(out), "ns/pkt")
		})
	}
}

// TestQueueSharesRunning: the same with the workers running (go test
// -race): while frames cross a filtered multiqueue vNIC from both of its
// workers for long enough that each worker runs its periodic connection
// table check several times, only the home worker touches the vNIC's
// table (the second worker once checked it too: a data race).
func TestQueueSharesRunning(t *testing.T) {
	h := newHarnessFds(t, Config{Workers: 2}, false, true)
	sp := &fakeSplit{}
	sp.withEventfd(t)
	sp.r1.withEventfd(t)
	h.e.hooks.openVhost = func(string, bool, *slog.Logger) (vhostPort, error) { return sp, nil }
	nv := nicOf("v", mac(1), 5, "10.0.0.1")
	nv.Type = model.NICVhostUser
	if _, err := h.e.AddNIC(nv); err != nil {
		t.Fatal(err)
	}
	b := h.add(t, nicOf("b", mac(2), 5, "10.0.0.2"))
	b.inject(frame{data: udp4(t, mac(1), mac(2), "10.0.0.2", "10.0.0.1", 10, false)})
	waitFor(t, "b's frame to reach v", func() bool { return len(sp.take()) == 1 })
	// Traffic paced over 160 ms, so that both workers pass their 10 ms
	// table check several times while frames cross.
	const rounds = 40
	for i := range rounds {
		for j := range 5 {
			sp.r1.inject(frame{data: udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 20+j, false)})
			sp.inject(frame{data: udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 20+j, false)})
		}
		if i%10 == 0 {
			// new flows too, so that the table changes
			sp.r1.inject(frame{data: udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.3", 20+i, false)})
		}
		time.Sleep(4 * time.Millisecond)
	}
	want := rounds*10 + rounds/10
	got := 0
	waitFor(t, "frames to reach b", func() bool { got += len(b.take()); return got >= want })
	if got != want {
		t.Fatalf("b got %d frames, want %d", got, want)
	}
}
