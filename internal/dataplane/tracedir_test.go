package dataplane

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/butterfly-go/butterfly/internal/pcap"
)

// TestTraceConfinedToDir: with a trace directory, a vNIC's trace path is
// taken in it; a path outside it, with "..", through a symbolic link in it,
// onto an existing file that is not a trace, or already traced to by
// another vNIC, is refused with an error that says why, and no file
// outside the directory is created or changed.
func TestTraceConfinedToDir(t *testing.T) {
	base := t.TempDir()
	td, err := pcap.NewDir(filepath.Join(base, "trace"))
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, Config{TraceDir: td}, true)
	h.e.hooks.openTrace = openPcap

	victim := filepath.Join(base, "victim")
	const content = "precious\n"
	if err := os.WriteFile(victim, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	n := nicOf("a", mac(1), 5)
	n.PacketTrace, n.TracePath = true, "a.pcap"
	h.add(t, n)
	if st, err := os.Stat(filepath.Join(td.Path(), "a.pcap")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("relative trace name: %v (mode %v), want a 0600 file in the trace directory", err, st)
	}
	if st, err := os.Stat(td.Path()); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("trace directory: %v (mode %v), want created 0700", err, st)
	}
	if err := os.Symlink(victim, filepath.Join(td.Path(), "link.pcap")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(td.Path(), "notes.txt"), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct{ name, path, want string }{
		{"absolute elsewhere", victim, "confined to " + td.Path()},
		{"dot-dot", "../victim", `".." is not allowed`},
		{"subdirectory", "sub/x.pcap", "confined to"},
		{"symlink in the directory", "link.pcap", "symbolic link"},
		{"existing file", "notes.txt", "not overwritten"},
		{"another vNIC's trace", filepath.Join(td.Path(), "a.pcap"), "vNIC a traces to it"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := nicOf("b", mac(2), 5)
			b.PacketTrace, b.TracePath = true, tc.path
			if _, err := h.e.AddNIC(b); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("AddNIC with trace %q: %v, want an error saying %q", tc.path, err, tc.want)
			}
			// The same path refused by an update of a traced vNIC.
			u := n
			u.TracePath = tc.path
			if tc.name != "another vNIC's trace" {
				if err := h.e.UpdateNIC(u); err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("UpdateNIC with trace %q: %v, want an error saying %q", tc.path, err, tc.want)
				}
			}
		})
	}
	for _, f := range []string{victim, filepath.Join(td.Path(), "notes.txt")} {
		if b, _ := os.ReadFile(f); string(b) != content {
			t.Errorf("%s changed: %q", f, b)
		}
	}
	// The default name is in the directory too.
	c := nicOf("c", mac(3), 5)
	c.PacketTrace = true
	h.add(t, c)
	if _, err := os.Stat(filepath.Join(td.Path(), pcap.FileName(os.Getpid(), "c"))); err != nil {
		t.Errorf("default trace file: %v", err)
	}
}
