package dataplane

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
)

// TestRestoreDetachesMissingNetns: while restoring, a netns TAP vNIC whose
// namespace is gone is added detached: it counts the frames it could not
// deliver as netns_gone, is reported by NICIssues and can be deleted; outside a restore the same
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
	if h.e.Attached(gone.ID) || h.e.Attached("peer") {
		t.Error("Attached: true for a detached vNIC or one outside a namespace")
	}
	is := h.e.NICIssues()
	if len(is) != 1 || is[0].ID != gone.ID || !strings.Contains(is[0].Reason, gone.Netns) || !strings.Contains(is[0].Reason, "gone") {
		t.Errorf("issues %+v, want one for %s naming %s", is, gone.ID, gone.Netns)
	}
	if err := h.e.DeleteNIC(gone.ID); err != nil {
		t.Fatalf("DeleteNIC of a detached vNIC: %v", err)
	}
	if is := h.e.NICIssues(); len(is) != 0 {
		t.Errorf("issues after the delete: %+v", is)
	}
}

// TestNetnsNameNotReserved: a TAP in a pod's namespace neither takes its
// name in the daemon's namespace nor frees it when deleted: a host TAP
// vNIC whose id is that name gets it, and keeps it after the pod's vNIC
// is deleted.
func TestNetnsNameNotReserved(t *testing.T) {
	const name = "abcdefghijklmno" // 15 bytes: ids starting with it map to it
	h := newHarness(t, Config{}, true)
	pod := nicOf("pod", mac(2), 42)
	pod.Netns, pod.IfName = "/nonexistent/butterfly-test/ns", name
	h.e.SetRestoring(true) // detached: no namespace needed
	if _, err := h.e.AddNIC(pod); err != nil {
		t.Fatal(err)
	}
	h.e.SetRestoring(false)
	path, err := h.e.AddNIC(nicOf(name, mac(1), 42))
	if err != nil {
		t.Fatal(err)
	}
	if path != name {
		t.Errorf("host TAP of vNIC %s named %q, want %s", name, path, name)
	}
	if err := h.e.DeleteNIC("pod"); err != nil {
		t.Fatal(err)
	}
	path, err = h.e.AddNIC(nicOf(name+"X", mac(3), 42))
	if err != nil {
		t.Fatal(err)
	}
	if path != name[:13]+"-1" {
		t.Errorf("host TAP of vNIC %sX named %q, want %s-1 (%s is taken)", name, path, name[:13], name)
	}
}
