package dataplane

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/port"
)

// TestDeleteNICRemovesTAPInBackground: DeleteNIC returns while the
// kernel is still removing the vNIC's TAP; a vNIC that takes the same
// interface name is created only once that removal is over (same name,
// no suffix), and Close waits for removals in progress.
func TestDeleteNICRemovesTAPInBackground(t *testing.T) {
	h := newHarnessFds(t, Config{}, false, true)
	old := h.add(t, nicOf("x", mac(1), 5))
	unblock := holdClose(old)

	if err := h.e.DeleteNIC("x"); err != nil {
		t.Fatal(err)
	}
	if old.closed.Load() {
		t.Fatal("the port was closed while its removal was held")
	}
	if _, err := h.e.Counters("x"); err == nil {
		t.Fatal("vNIC x still known after DeleteNIC")
	}

	var oldGoneAtOpen atomic.Bool
	orig := h.e.hooks.openTAP
	h.e.hooks.openTAP = func(name string, offload bool) (p port.Port, path string, err error) {
		oldGoneAtOpen.Store(old.closed.Load())
		return orig(name, offload)
	}
	added := make(chan string)
	go func() {
		path, err := h.e.AddNIC(nicOf("x", mac(1), 5))
		if err != nil {
			t.Error(err)
		}
		added <- path
	}()
	close(unblock)
	if path := <-added; path != "x" {
		t.Errorf("re-added vNIC's TAP %q, want the same name %q", path, "x")
	}
	if !oldGoneAtOpen.Load() {
		t.Error("the new TAP was opened before the old one of the same name was removed")
	}

	// Close waits for a removal in progress: this one lasts until Close
	// has begun.
	h.mu.Lock()
	again := h.ports["x"]
	h.mu.Unlock()
	again.closing = func() { waitFor(t, "Close begun", h.e.stop.Load) }
	if err := h.e.DeleteNIC("x"); err != nil {
		t.Fatal(err)
	}
	if err := h.e.Close(); err != nil {
		t.Fatal(err)
	}
	if !again.closed.Load() {
		t.Error("Close returned before the deleted vNIC's TAP was removed")
	}
}

// TestReaddDoesNotQueueBehindRemovals: a vNIC re-added with the id of one
// just deleted removes the old TAP device itself when the removals in
// the background are all busy, rather than wait behind them.
func TestReaddDoesNotQueueBehindRemovals(t *testing.T) {
	h := newHarnessFds(t, Config{}, false, true)
	old := h.add(t, nicOf("x", mac(1), 5))
	for range removeParallel { // every removal slot busy
		h.e.removeSlots <- struct{}{}
	}
	t.Cleanup(func() {
		for range removeParallel {
			<-h.e.removeSlots
		}
	})
	if err := h.e.DeleteNIC("x"); err != nil {
		t.Fatal(err)
	}
	addWithoutWait(t, h, nicOf("x", mac(1), 5), "the re-added vNIC waited for a removal slot")
	if !old.closed.Load() {
		t.Error("the old TAP was not removed before the new one was opened")
	}
}

// TestDeleteNICRemovesPodTAPInBackground: a TAP in a pod's namespace is
// removed after DeleteNIC returns, like one in the daemon's; a vNIC
// with its interface name in that namespace waits for it, one with that
// name in another namespace does not.
func TestDeleteNICRemovesPodTAPInBackground(t *testing.T) {
	h := newHarnessFds(t, Config{}, false, true)
	var mu sync.Mutex
	pods := map[string]*fakePort{} // by namespace
	var oldGoneAtOpen atomic.Bool
	var old *fakePort
	h.e.hooks.openNetnsTAP = func(n model.NIC, _, _ bool, _ *slog.Logger) (port.Port, error) {
		mu.Lock()
		defer mu.Unlock()
		if old != nil && n.Netns == "/ns/1" {
			oldGoneAtOpen.Store(old.closed.Load())
		}
		p := &fakePort{}
		p.withEventfd(t)
		pods[n.Netns] = p
		return p, nil
	}
	pod := func(id, netns string, m byte) model.NIC {
		n := nicOf(id, mac(m), 5)
		n.Netns, n.IfName = netns, "eth0"
		return n
	}
	if _, err := h.e.AddNIC(pod("a", "/ns/1", 1)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	old = pods["/ns/1"]
	mu.Unlock()
	unblock := holdClose(old)

	if err := h.e.DeleteNIC("a"); err != nil {
		t.Fatal(err)
	}
	if old.closed.Load() {
		t.Fatal("the pod's TAP was removed before DeleteNIC returned")
	}
	// eth0 in another pod: no wait.
	addWithoutWait(t, h, pod("b", "/ns/2", 2), "a vNIC in another namespace waited for the removal")
	if old.closed.Load() {
		t.Fatal("the old TAP was removed before its removal was released")
	}
	// eth0 in the same pod again: waits until the old one is gone.
	again := make(chan error, 1)
	go func() {
		_, err := h.e.AddNIC(pod("a", "/ns/1", 1))
		again <- err
	}()
	close(unblock)
	if err := <-again; err != nil {
		t.Fatal(err)
	}
	if !oldGoneAtOpen.Load() {
		t.Error("the pod's new TAP was opened before the old one of the same name was removed")
	}
}

// holdClose holds p's close, as the kernel's teardown of a TAP would,
// until the returned channel is closed (at most 5 s).
func holdClose(p *fakePort) chan struct{} {
	unblock := make(chan struct{})
	p.closing = func() {
		select {
		case <-unblock:
		case <-time.After(5 * time.Second):
		}
	}
	return unblock
}

// addWithoutWait adds n and fails with waited if that takes over 5 s
// (the add would be waiting for something held).
func addWithoutWait(t *testing.T, h *harness, n model.NIC, waited string) {
	t.Helper()
	added := make(chan error, 1)
	go func() {
		_, err := h.e.AddNIC(n)
		added <- err
	}()
	select {
	case err := <-added:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal(waited)
	}
}
