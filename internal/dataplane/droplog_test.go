package dataplane

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/butterfly-go/butterfly/internal/model"
)

// TestDropLog: the frames a vNIC drops are logged on it with their reason
// and a decode, oldest first; n bounds the answer and the log keeps the
// last dropLogSize drops per worker; frames that pass are not logged.
func TestDropLog(t *testing.T) {
	h := newHarness(t, Config{}, true)
	if err := h.e.SetSecurityGroups([]model.SG{openSG()}); err != nil {
		t.Fatal(err)
	}
	a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
	nb := nicOf("b", mac(2), 5, "10.0.0.2")
	nb.SecurityGroups = nil // no rule: everything towards b is dropped
	b := h.add(t, nb)
	// b -> a passes (default egress, a's open group): nothing logged.
	b.inject(udpFlow(t, false, 9, 9))
	h.step()
	if got := len(a.take()); got != 1 {
		t.Fatalf("b -> a: %d frames arrived", got)
	}
	for i := range 40 {
		a.inject(udpFlow(t, true, uint16(1000+i), 2000))
		h.step()
	}
	// A frame a sends with another source MAC: anti-spoofing, on a.
	a.inject(frame{data: build(t, eth(mac(2), mac(9), layers.EthernetTypeIPv4))})
	h.step()

	all, err := h.e.Drops("b", -1)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != dropLogSize {
		t.Fatalf("b's log holds %d drops, want the last %d", len(all), dropLogSize)
	}
	for i, d := range all {
		// Flows 1000..1039 were dropped; the log holds the last 32: 1008..1039.
		want := fmt.Sprintf("IPv4 10.0.0.1 > 10.0.0.2 UDP %d > 2000", 1008+i)
		if d.Reason != "firewall_no_rule" || !strings.Contains(d.Decode, want) || d.Length != 60 {
			t.Fatalf("drop %d of b: %+v, want firewall_no_rule of %q, 60 bytes", i, d, want)
		}
		if i > 0 && d.Time.Before(all[i-1].Time) {
			t.Fatalf("drops not in time order: %v after %v", d.Time, all[i-1].Time)
		}
	}
	last, err := h.e.Drops("b", 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(last) != 2 || last[0] != all[len(all)-2] || last[1] != all[len(all)-1] {
		t.Fatalf("Drops(b, 2) = %+v, want the last two of %d", last, len(all))
	}
	da, err := h.e.Drops("a", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(da) != 1 || da[0].Reason != "antispoof_src_mac" || !strings.HasPrefix(da[0].Decode, "02:00:00:00:00:09 > 02:00:00:00:00:02") {
		t.Fatalf("a's drops %+v, want one antispoof_src_mac from 02:00:00:00:00:09", da)
	}
	if _, err := h.e.Drops("nope", 1); err == nil {
		t.Fatal("Drops of an unknown vNIC succeeded")
	}
}

// TestDropTimes: a drop is logged with the engine clock's wall time,
// which the worker derives from its monotonic clock between two wall
// clock reads: exact across small steps and steps past wallEvery.
func TestDropTimes(t *testing.T) {
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := newHarnessClock(t, Config{}, true, false, func() time.Time { return clock })
	a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
	nb := nicOf("b", mac(2), 5, "10.0.0.2")
	nb.SecurityGroups = nil // everything towards b is dropped
	h.add(t, nb)
	steps := []time.Duration{0, time.Microsecond, 300 * time.Millisecond, 900 * time.Millisecond,
		1500 * time.Millisecond, time.Nanosecond, 3 * time.Hour, 999 * time.Millisecond}
	for i, step := range steps {
		clock = clock.Add(step)
		a.inject(udpFlow(t, true, uint16(1000+i), 2000))
		h.step()
		d, err := h.e.Drops("b", 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(d) != 1 || !d[0].Time.Equal(clock) {
			t.Fatalf("after a step of %v: drops %+v, want one at %v", step, d, clock)
		}
	}
}

// TestRecordDropAllocs: logging a drop allocates nothing.
func TestRecordDropAllocs(t *testing.T) {
	h := newHarness(t, Config{}, true)
	h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
	f := udpFlow(t, true, 1, 2).data
	w, p := h.e.workers[0], h.e.nics["a"].p
	if n := testing.AllocsPerRun(1000, func() { w.recordDrop(p, dropNoRoute, f) }); n != 0 {
		t.Fatalf("recordDrop allocates %v times", n)
	}
}

// BenchmarkRecordDrop measures what logging a dropped frame adds to the
// drop (on the worker, for each dropped frame).
func BenchmarkRecordDrop(b *testing.B) {
	h := newHarness(b, Config{}, true)
	h.add(b, nicOf("a", mac(1), 5, "10.0.0.1"))
	for _, size := range []int{60, 1514} {
		f := make([]byte, size)
		copy(f, udpFlow(b, true, 1, 2).data)
		b.Run(fmt.Sprint(size, "B"), func(b *testing.B) {
			w, p := h.e.workers[0], h.e.nics["a"].p
			b.ReportAllocs()
			for b.Loop() {
				w.recordDrop(p, dropNoRoute, f)
			}
		})
	}
}

// TestDropsAndExplainWhileForwarding reads a vNIC's drop log and explains
// its frames again and again while two running workers drop and pass its
// traffic: each worker's rings and connection tables are read on that
// worker (run with -race).
func TestDropsAndExplainWhileForwarding(t *testing.T) {
	h := newHarness(t, Config{Workers: 2}, false)
	a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
	nb := nicOf("b", mac(2), 5, "10.0.0.2")
	nb.SecurityGroups = nil // everything towards b is dropped
	h.add(t, nb)
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for p := 0; !stop.Load(); p++ {
			a.inject(udpFlow(t, true, uint16(1+p%512), 53))
			runtime.Gosched()
		}
	}()
	probe := udpFlow(t, true, 7, 53).data
	seen := 0
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; i < 20 || seen == 0 && time.Now().Before(deadline); i++ {
		d, err := h.e.Drops("b", -1)
		if err != nil {
			t.Fatal(err)
		}
		seen = max(seen, len(d))
		x, err := h.e.Explain("a", probe)
		if err != nil {
			t.Fatal(err)
		}
		if x.Verdict != "drop firewall_no_rule" && !strings.HasSuffix(x.Verdict, "; drop vNIC b: firewall_no_rule") {
			t.Fatalf("explain: %q, want b's firewall to drop it", x.Verdict)
		}
	}
	stop.Store(true)
	wg.Wait()
	if seen == 0 {
		t.Fatal("no drop was logged")
	}
}
