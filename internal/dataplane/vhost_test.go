package dataplane

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
)

// TestVhostUserSocketLifecycle checks that a vhost-user vNIC listens on
// <SocketDir>/qemu-vhost-<id>, reports that path, and that DeleteNIC
// removes the socket; ids that cannot name a file are refused.
func TestVhostUserSocketLifecycle(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, Config{SocketDir: dir}, true)
	n := nicOf("vm-1", mac(1), 1)
	n.Type = model.NICVhostUser
	path, err := h.e.AddNIC(n)
	if err != nil {
		t.Fatalf("AddNIC: %v", err)
	}
	want := filepath.Join(dir, "qemu-vhost-vm-1")
	if path != want {
		t.Errorf("path = %q, want %q", path, want)
	}
	if fi, err := os.Stat(want); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket %s: %v, %v", want, fi, err)
	}
	if err := h.e.DeleteNIC("vm-1"); err != nil {
		t.Fatalf("DeleteNIC: %v", err)
	}
	if _, err := os.Stat(want); !os.IsNotExist(err) {
		t.Errorf("socket still there after DeleteNIC: %v", err)
	}
	for _, id := range []string{"a/b", "..", "x\x00y"} {
		bad := nicOf(id, mac(2), 1)
		bad.Type = model.NICVhostUser
		if _, err := h.e.AddNIC(bad); err == nil {
			t.Errorf("AddNIC(%q) succeeded", id)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left in socket dir: %v", ents)
	}
}
