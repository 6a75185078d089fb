package dataplane

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
)

// TestRestoreDetachesMissingNetns: while restoring, a netns TAP vNIC whose
// namespace is gone is added detached: it counts the frames it could not
// deliver as netns_gone and can be deleted; outside a restore the same
// vNIC is refused with an error naming the namespace.
func TestRestoreDetachesMissingNetns(t *testing.T) {
	h := newHarness(t, Config{}, true)
	gone := nicOf("pod-gone", mac(2), 42, "42.0.0.2")
	gone.Netns, gone.IfName = "/nonexistent/butterfly-test/ns", "eth0"

	_, err := h.e.AddNIC(gone)
	if err == nil || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), gone.Netns) {
		t.Fatalf("AddNIC with a missing namespace: %v, want a not-exist error naming it", err)
	}

	h.e.SetRestoring(true)
	path, err := h.e.AddNIC(gone)
	h.e.SetRestoring(false)
	if err != nil {
		t.Fatalf("restoring a vNIC whose namespace is gone: %v", err)
	}
	if path != "eth0" {
		t.Errorf("path %q, want eth0", path)
	}
	peer := h.add(t, nicOf("peer", mac(1), 42, "42.0.0.1"))
	for i := 0; i < 3; i++ {
		peer.inject(frame{data: arp(t, mac(1), "42.0.0.1", "42.0.0.2")})
		h.step()
	}
	c, err := h.e.Counters(gone.ID)
	if err != nil {
		t.Fatal(err)
	}
	if c.Drops[dropNetnsGone] != 3 {
		t.Errorf("drops %v, want %s: 3", c.Drops, dropNetnsGone)
	}
	if err := h.e.DeleteNIC(gone.ID); err != nil {
		t.Fatalf("DeleteNIC of a detached vNIC: %v", err)
	}
}
