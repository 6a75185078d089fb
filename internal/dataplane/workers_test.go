package dataplane

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestTwoWorkersHandoff(t *testing.T) {
	h := newHarness(t, Config{Workers: 2}, true)
	a := h.add(t, nicOf("a", mac(1), 5)) // worker 0
	b := h.add(t, nicOf("b", mac(2), 5)) // worker 1
	if h.e.nics["a"].p.worker == h.e.nics["b"].p.worker {
		t.Fatal("vNICs not spread over the workers")
	}
	for i := 0; i < 200; i++ {
		a.inject(frame{data: udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 10, false)})
		b.inject(frame{data: udp4(t, mac(1), mac(2), "10.0.0.2", "10.0.0.1", 10, false)})
		b.inject(frame{data: udp4(t, mac(9), mac(2), "10.0.0.2", "10.0.0.9", 10, false)})
		if i%50 == 0 {
			h.step()
		}
	}
	for i := 0; i < 20; i++ {
		h.step()
	}
	// a gets b's frames for a and b's floods towards mac 9.
	if na, nb := len(a.take()), len(b.take()); na != 400 || nb != 200 {
		t.Fatalf("a got %d, b got %d frames, want 400 and 200", na, nb)
	}
	// b's frames to the unknown mac 9 flood to a and to the underlay,
	// which worker 0 owns.
	if n := len(h.under.take()); n < 200 {
		t.Fatalf("underlay got %d datagrams, want >= 200", n)
	}
	// Every buffer went home.
	for _, w := range h.e.workers {
		if got := w.pool.Available() + w.rxn; got != 512 {
			t.Errorf("worker %d holds %d of its 512 buffers", w.id, got)
		}
	}
}

// TestLiveChangesUnderTraffic runs real workers: traffic between a and b
// keeps flowing while other vNICs come and go, and deleted ports are
// closed only once no worker uses them.
func TestLiveChangesUnderTraffic(t *testing.T) {
	for _, workers := range []int{1, 2} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			h := newHarness(t, Config{Workers: workers}, false)
			a := h.add(t, nicOf("a", mac(1), 5))
			b := h.add(t, nicOf("b", mac(2), 5))
			b.count = true
			f := frame{data: udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 10, false)}
			var sent atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					a.mu.Lock()
					queued := len(a.in)
					a.mu.Unlock()
					if queued < 32 {
						a.inject(f, f, f, f)
						sent.Add(4)
					} else {
						time.Sleep(50 * time.Microsecond)
					}
				}
			}()
			var churned []*fakePort
			for i := 0; i < 30; i++ {
				id := fmt.Sprintf("c%d", i)
				p := h.add(t, nicOf(id, mac(byte(10+i)), uint32(6+i%2)))
				p.inject(frame{data: arp(t, mac(byte(10+i)), "10.0.0.9", "10.0.0.1")})
				churned = append(churned, p)
				if i%3 == 0 {
					n := nicOf("b", mac(2), 5)
					n.PacketTrace, n.TracePath = i%2 == 0, "/b.pcap"
					if err := h.e.UpdateNIC(n); err != nil {
						t.Fatal(err)
					}
				}
				if err := h.e.DeleteNIC(id); err != nil {
					t.Fatal(err)
				}
				waitFor(t, id+"'s port closed after DeleteNIC", p.closed.Load)
			}
			close(stop)
			wg.Wait()
			deadline := time.Now().Add(5 * time.Second)
			for b.written.Load() != sent.Load() && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if b.written.Load() != sent.Load() {
				ca, _ := h.e.Counters("a")
				cb, _ := h.e.Counters("b")
				t.Fatalf("b got %d of %d frames; a %+v b %+v", b.written.Load(), sent.Load(), ca, cb)
			}
			for i, p := range churned {
				if p.useAfterClose.Load() {
					t.Errorf("c%d used after Close", i)
				}
			}
			if c, _ := h.e.Counters("b"); c.TxPackets != uint64(sent.Load()) {
				t.Errorf("b TxPackets %d, want %d", c.TxPackets, sent.Load())
			}
			if err := h.e.Close(); err != nil {
				t.Fatal(err)
			}
			if !a.closed.Load() || !b.closed.Load() || !h.under.closed.Load() {
				t.Error("Close left ports open")
			}
		})
	}
}

func TestIdleWorkerSleeps(t *testing.T) {
	h := newHarness(t, Config{}, false)
	a := h.add(t, nicOf("a", mac(1), 5))
	b := h.add(t, nicOf("b", mac(2), 5))
	w := h.e.workers[0]
	waitFor(t, "the worker to sleep", w.sleeping.Load)
	// A frame still gets through (the 1 ms sleep of fd-less fakes).
	a.inject(frame{data: udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 10, false)})
	waitFor(t, "delivery", func() bool { return b.written.Load() == 1 })
	_ = netip.Addr{}
}

// TestIdlePortServedWhileBusy: a port that went idle leaves the set the
// worker polls and is watched through its descriptor; while another port
// keeps the worker busy (it never sleeps in epoll), the idle port's next
// frame is still picked up, by the worker's readiness checks.
func TestIdlePortServedWhileBusy(t *testing.T) {
	h := newHarnessFds(t, Config{PollIdle: 5 * time.Millisecond}, false, true)
	b := h.add(t, nicOf("b", mac(2), 5))
	b.count = true
	c := h.add(t, nicOf("c", mac(3), 5))
	d := h.add(t, nicOf("d", mac(4), 5))
	// The switch learns b (its frame floods to c and d).
	b.inject(frame{data: udp4(t, mac(9), mac(2), "10.0.0.2", "10.0.0.9", 10, false)})
	waitFor(t, "b's frame at d", func() bool { return d.written.Load() == 1 })
	d.take()
	// a has frames for b on every poll.
	h.replays = map[string][]frame{"a": replayBatch(frame{data: udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 10, false)}, 4)}
	a := h.add(t, nicOf("a", mac(1), 5))
	w := h.e.workers[0]
	// c left the poll set: a was read 1,000 times while c was not.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c0, a0 := c.reads.Load(), a.reads.Load()
		for a.reads.Load()-a0 < 1000 {
			if time.Now().After(deadline) {
				t.Fatal("a was not polled")
			}
			runtime.Gosched()
		}
		if c.reads.Load() == c0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("c stayed in the poll set while idle")
		}
	}
	slept := w.sleeps.Load()
	want := udp4(t, mac(4), mac(3), "10.0.0.3", "10.0.0.4", 10, false)
	c.inject(frame{data: want})
	waitFor(t, "c's frame at d", func() bool { return d.written.Load() == 2 })
	if got := d.take(); len(got) != 1 || !bytes.Equal(got[0].data, want) {
		t.Fatalf("d got %d frames, want c's", len(got))
	}
	if n := w.sleeps.Load() - slept; n != 0 {
		t.Fatalf("the worker slept %d times with a always busy", n)
	}
}

// TestNeverIdleWorkerBusyPolls: with a negative PollIdle the worker
// never sleeps in epoll, so sparse traffic pays no wake-up.
func TestNeverIdleWorkerBusyPolls(t *testing.T) {
	h := newHarness(t, Config{PollIdle: -1}, false)
	a := h.add(t, nicOf("a", mac(1), 5))
	b := h.add(t, nicOf("b", mac(2), 5))
	w := h.e.workers[0]
	a.inject(frame{data: udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 10, false)})
	waitFor(t, "delivery", func() bool { return b.written.Load() == 1 })
	// Far longer than the default idle spell: the worker must not sleep.
	deadline := time.Now().Add(20 * defaultPollIdle)
	for time.Now().Before(deadline) {
		if w.sleeping.Load() || w.sleeps.Load() != 0 {
			t.Fatalf("worker slept %d times with PollIdle < 0", w.sleeps.Load())
		}
		runtime.Gosched()
	}
}

// TestFailedPortNotPolled: a port whose reads fail is dropped from the
// poll set (instead of spinning on it) until the configuration changes;
// the other ports keep working.
func TestFailedPortNotPolled(t *testing.T) {
	h := newHarness(t, Config{}, true)
	a := h.add(t, nicOf("a", mac(1), 5))
	b := h.add(t, nicOf("b", mac(2), 5))
	a.readErr = errors.New("file descriptor in bad state")
	h.step()
	reads := a.reads.Load()
	h.step()
	if a.reads.Load() != reads {
		t.Fatalf("failed port polled again (%d -> %d reads)", reads, a.reads.Load())
	}
	b.inject(frame{data: udp4(t, mac(1), mac(2), "10.0.0.2", "10.0.0.1", 10, false)})
	h.step()
	if len(a.take()) != 1 {
		t.Fatal("frames to the failed port's vNIC no longer delivered")
	}
	if c, _ := h.e.Counters("a"); c.Drops["rx_error"] != 1 {
		t.Fatalf("drops %v, want rx_error 1", c.Drops)
	}
	// A configuration change retries it.
	h.add(t, nicOf("c", mac(3), 5))
	h.step()
	if a.reads.Load() != reads+1 {
		t.Fatalf("failed port not retried after a configuration change (%d reads)", a.reads.Load())
	}
}

// TestWorkerAffinity: each worker runs on its own OS thread, pinned to
// its CPU.
func TestWorkerAffinity(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs two CPUs")
	}
	h := newHarness(t, Config{Workers: 2, CPUs: []int{1, 0}}, false)
	for i, want := range []int{1, 0} {
		w := h.e.workers[i]
		waitFor(t, "the worker to start", func() bool { return w.tid.Load() != 0 })
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(int(w.tid.Load()), &set); err != nil {
			t.Fatal(err)
		}
		if set.Count() != 1 || !set.IsSet(want) {
			t.Errorf("worker %d may run on %d CPUs (CPU %d set: %v), want only CPU %d", i, set.Count(), want, set.IsSet(want), want)
		}
	}
	if h.e.workers[0].tid.Load() == h.e.workers[1].tid.Load() {
		t.Error("two workers share an OS thread")
	}
	// Once the engine is closed no pinned thread is left to the Go
	// scheduler: other goroutines, and the processes they start, would
	// inherit its one-CPU affinity.
	if err := h.e.Close(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var pinned atomic.Int32
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var set unix.CPUSet
			if err := unix.SchedGetaffinity(0, &set); err == nil && set.Count() == 1 {
				pinned.Add(1)
			}
			time.Sleep(time.Millisecond) // keep the thread busy so that others take other threads
		}()
	}
	wg.Wait()
	if n := pinned.Load(); n != 0 {
		t.Errorf("%d goroutines ran on a thread a closed worker left pinned", n)
	}
}
