package dataplane

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/port"
)

// TestDeleteNICRemovesTAPInBackground: DeleteNIC returns while the
// kernel is still removing the vNIC's TAP; a vNIC that takes the same
// interface name is created only once that removal is over (same name,
// no suffix), and Close waits for removals in progress.
func TestDeleteNICRemovesTAPInBackground(t *testing.T) {
	h := newHarnessFds(t, Config{}, false, true)
	old := h.add(t, nicOf("x", mac(1), 5))
	unblock := make(chan struct{})
	old.closing = func() { // the kernel's teardown, held (at most 5 s)
		select {
		case <-unblock:
		case <-time.After(5 * time.Second):
		}
	}

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
	added := make(chan error, 1)
	go func() {
		_, err := h.e.AddNIC(nicOf("x", mac(1), 5))
		added <- err
	}()
	select {
	case err := <-added:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the re-added vNIC waited for a removal slot")
	}
	if !old.closed.Load() {
		t.Error("the old TAP was not removed before the new one was opened")
	}
}
