package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/butterfly-go/butterfly/internal/firewall"
	"github.com/butterfly-go/butterfly/internal/model"
)

// TestConntrackSaveLoad: a clean stop saves each vNIC's connection table
// (mode 0600); the next start gives the valid ones to the vNICs (Import)
// and consumes the file; a corrupt file or table is left out, not fatal.
func TestConntrackSaveLoad(t *testing.T) {
	cfg := testConfig(t)
	if err := os.MkdirAll(filepath.Dir(cfg.StateFile), 0o700); err != nil {
		t.Fatal(err)
	}
	d := &daemon{cfg: cfg, log: slog.New(slog.DiscardHandler)}
	dp := newFakeEngine()
	store := model.New(dp, model.Options{})
	valid := firewall.NewConntrack(16).Export(0)
	for _, id := range []string{"a", "b", "c"} {
		if _, err := store.AddNIC(model.NIC{ID: id, MACText: "52:54:00:00:00:01", VNI: 1, Type: model.NICTap}); err != nil {
			t.Fatal(err)
		}
	}
	dp.SetExport("a", valid)
	dp.SetExport("c", []byte("not a table"))
	d.saveConntrack(store, dp)
	path := conntrackFile(cfg.StateFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("no saved tables: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}

	st := store.State()
	d.loadConntrack(&st)
	got := map[string][]byte{}
	for _, n := range st.NICs {
		got[n.ID] = n.Import
	}
	if !bytes.Equal(got["a"], valid) || got["b"] != nil || got["c"] != nil {
		t.Errorf("imports %q, want a's table only", got)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("saved tables not consumed: %v", err)
	}

	// Loaded once: a second start (say after a SIGKILL) has nothing.
	st = store.State()
	d.loadConntrack(&st)
	for _, n := range st.NICs {
		if n.Import != nil {
			t.Errorf("%s: table loaded twice", n.ID)
		}
	}
	// A corrupt file is removed and loads nothing.
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.loadConntrack(&st)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("corrupt file kept: %v", err)
	}
}
