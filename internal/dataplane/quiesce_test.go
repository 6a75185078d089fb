package dataplane

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port"
)

// sleepsOf returns the epoll sleeps of all the engine's workers.
func sleepsOf(e *Engine) uint64 {
	var n uint64
	for _, w := range e.workers {
		n += w.sleeps.Load()
	}
	return n
}

func allSleeping(e *Engine) func() bool {
	return func() bool {
		for _, w := range e.workers {
			if !w.sleeping.Load() {
				return false
			}
		}
		return true
	}
}

// TestChangesWithWorkersAsleep: a worker asleep in epoll holds no
// configuration, so changes that do not touch its ports neither wake it
// nor wait for it; yet the first frames after each change meet the new
// configuration (policy change, nic_add), as when workers are busy.
func TestChangesWithWorkersAsleep(t *testing.T) {
	h := newHarnessFds(t, Config{Workers: 2}, false, true)
	g := func(port uint32) []model.SG {
		return []model.SG{openSG(), {ID: "g", Rules: []model.Rule{
			udpRule(model.Inbound, port, "0.0.0.0/0", ""),
			{Direction: model.Outbound, Protocol: -1, CIDR: openSG().Rules[0].CIDR},
		}}}
	}
	if err := h.e.SetSecurityGroups(g(7)); err != nil {
		t.Fatal(err)
	}
	a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
	nb := nicOf("b", mac(2), 5, "10.0.0.2")
	nb.SecurityGroups = []string{"g"}
	b := h.add(t, nb)
	a.inject(udpFlow(t, true, 1000, 7))
	waitFor(t, "the allowed frame", func() bool { return b.written.Load() == 1 })

	waitFor(t, "every worker asleep", allSleeping(h.e))
	s0 := sleepsOf(h.e)
	for i := range 50 {
		if err := h.e.SetSecurityGroups(g(uint32(100 + i%2))); err != nil {
			t.Fatal(err)
		}
	}
	// Each wake-up would end in a new sleep; a worker's own 1 s epoll
	// timeout may fall in between.
	if n := sleepsOf(h.e) - s0; n > 2 {
		t.Fatalf("50 policy changes woke the sleeping workers %d times", n)
	}

	// Port 7 is no longer allowed: a new flow and the tracked one, sent
	// right after the change, are both dropped.
	if err := h.e.SetSecurityGroups(g(8)); err != nil {
		t.Fatal(err)
	}
	a.inject(udpFlow(t, true, 1000, 7), udpFlow(t, true, 1001, 7))
	waitFor(t, "both drops", func() bool {
		c, _ := h.e.Counters("b")
		return c.Drops["firewall_no_rule"]+c.Drops["firewall_cut"] == 2
	})
	a.inject(udpFlow(t, true, 1002, 8))
	waitFor(t, "the frame to port 8", func() bool { return b.written.Load() == 2 })

	// A vNIC added while every worker sleeps gets the very next frame.
	waitFor(t, "every worker asleep", allSleeping(h.e))
	c := h.add(t, nicOf("c", mac(3), 5, "10.0.0.3"))
	a.inject(frame{data: udp4(t, mac(3), mac(1), "10.0.0.1", "10.0.0.3", 10, false)})
	waitFor(t, "delivery to the new vNIC", func() bool { return c.written.Load() == 1 })
	if b.written.Load() != 2 {
		t.Fatalf("b got %d frames, want 2", b.written.Load())
	}
}

// TestPortsComeAndGoWhileAsleep: vNICs added and deleted while every
// worker sleeps, whose descriptors the kernel reuses at once, leave the
// workers' epoll sets right: the vNIC that last got a reused descriptor
// wakes its worker and gets its frames.
func TestPortsComeAndGoWhileAsleep(t *testing.T) {
	h := newHarnessFds(t, Config{Workers: 2}, false, true)
	a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
	for i := range 20 {
		waitFor(t, "every worker asleep", allSleeping(h.e))
		id := fmt.Sprintf("x%d", i)
		h.add(t, nicOf(id, mac(byte(10+i)), 5))
		if err := h.e.DeleteNIC(id); err != nil {
			t.Fatal(err)
		}
		// The next one likely gets the descriptor number just closed.
		id = fmt.Sprintf("y%d", i)
		y := h.add(t, nicOf(id, mac(byte(40+i)), 5))
		y.inject(frame{data: udp4(t, mac(1), mac(byte(40+i)), "10.0.0.9", "10.0.0.1", 10, false)})
		waitFor(t, "a frame from "+id, func() bool { return a.written.Load() == int64(i+1) })
		if i%2 == 0 {
			if err := h.e.DeleteNIC(id); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// stallPort is a fake port whose ReadBatch blocks while stall is set, as
// a worker stuck in a port would.
type stallPort struct {
	*fakePort
	stall   atomic.Bool
	inside  atomic.Bool
	release chan struct{}
}

func (p *stallPort) ReadBatch(bufs []*packet.Buf) (int, error) {
	if p.stall.Load() {
		p.inside.Store(true)
		<-p.release
		p.inside.Store(false)
	}
	return p.fakePort.ReadBatch(bufs)
}

// TestStuckWorkerKeepsPortsOpen: when a worker does not reach a new
// configuration in time, DeleteNIC reports it but does not close the
// deleted vNIC's port under it; the port is closed once the worker
// moves on.
func TestStuckWorkerKeepsPortsOpen(t *testing.T) {
	h := newHarnessFds(t, Config{StallTimeout: 50 * time.Millisecond, PollIdle: -1}, false, false)
	sp := &stallPort{fakePort: &fakePort{}, release: make(chan struct{})}
	orig := h.e.hooks.openTAP
	h.e.hooks.openTAP = func(name string, offload bool) (port.Port, string, error) {
		if name == "s" {
			return sp, name, nil
		}
		return orig(name, offload)
	}
	h.add(t, nicOf("s", mac(1), 5))
	b := h.add(t, nicOf("b", mac(2), 5))
	sp.stall.Store(true)
	waitFor(t, "the worker stuck in a read", sp.inside.Load)
	if err := h.e.DeleteNIC("b"); err != nil {
		t.Fatal(err)
	}
	if b.closed.Load() {
		t.Fatal("DeleteNIC closed a port while its worker was stuck")
	}
	sp.stall.Store(false)
	close(sp.release)
	waitFor(t, "the port closed once the worker moved on", b.closed.Load)
	if b.useAfterClose.Load() {
		t.Fatal("port used after Close")
	}
}

// BenchmarkAddDeleteNIC measures nic_add + nic_del with many vNICs
// already present: its cost must not grow with their number.
func BenchmarkAddDeleteNIC(b *testing.B) {
	for _, existing := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("existing=%d", existing), func(b *testing.B) {
			h := newHarnessFds(b, Config{Workers: 2}, false, true)
			for i := range existing {
				n := bypassed(nicOf(fmt.Sprintf("n%d", i), [6]byte{2, 1, byte(i >> 16), byte(i >> 8), byte(i), 0}, uint32(100+i%100)))
				if _, err := h.e.AddNIC(n); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				n := bypassed(nicOf("x", mac(1), uint32(100+i%100)))
				if _, err := h.e.AddNIC(n); err != nil {
					b.Fatal(err)
				}
				if err := h.e.DeleteNIC("x"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
