package pcap

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// captureOne writes one frame of n bytes to a new writer on path.
func captureOne(t *testing.T, path string, id uint64, n int) {
	t.Helper()
	w, err := NewWriter(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !w.Capture(frame(id, n), time.Now().UnixNano()) {
		t.Fatal("frame dropped")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestNewWriterNeverOverwrites: a new trace file is created with mode
// 0600; an existing trace is appended to, keeping its records; a symbolic
// link, a file that is not such a trace, a file with another hard link and
// a FIFO are refused and left untouched.
func TestNewWriterNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "t.pcap")
	captureOne(t, path, 1, 60)
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("new trace: %v, mode %v; want 0600", err, st.Mode())
	}
	captureOne(t, path, 2, 70)
	got := readAll(t, path)
	if len(got) != 2 || !bytes.Equal(got[0].data, frame(1, 60)) || !bytes.Equal(got[1].data, frame(2, 70)) {
		t.Fatalf("after a second writer: %d records, want the first one kept and the second appended", len(got))
	}

	victim := filepath.Join(dir, "victim")
	const content = "root:x:0:0:root:/root:/bin/bash\n"
	if err := os.WriteFile(victim, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.pcap")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(dir, "dangling.pcap")
	if err := os.Symlink(filepath.Join(dir, "created-through-link"), dangling); err != nil {
		t.Fatal(err)
	}
	hard := filepath.Join(dir, "hard.pcap")
	if err := os.Link(path, hard); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.pcap")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path, want string }{
		{"symlink to a file", link, "symbolic link"},
		{"dangling symlink", dangling, "symbolic link"},
		{"not a trace", victim, "not a packet trace"},
		{"second hard link", hard, "hard links"},
		{"fifo", fifo, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := NewWriter(tc.path, 0)
			if err == nil {
				w.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
	if b, _ := os.ReadFile(victim); string(b) != content {
		t.Errorf("the victim file changed: %q", b)
	}
	if _, err := os.Lstat(filepath.Join(dir, "created-through-link")); !os.IsNotExist(err) {
		t.Errorf("a file was created through the dangling link: %v", err)
	}
	if n := len(readAll(t, path)); n != 2 {
		t.Errorf("the hard-linked trace has %d records, want 2", n)
	}
}

// TestNewWriterAppendBound: the size bound counts what the file held.
func TestNewWriterAppendBound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.pcap")
	captureOne(t, path, 1, 100)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(path, st.Size()+recordHeaderLen+50)
	if err != nil {
		t.Fatal(err)
	}
	w.Capture(frame(2, 100), time.Now().UnixNano())
	w.Capture(frame(3, 50), time.Now().UnixNano())
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, path); len(got) != 2 || w.Dropped() != 1 {
		t.Errorf("%d records, %d dropped; want 2 and 1", len(got), w.Dropped())
	}
}

func TestDirResolve(t *testing.T) {
	d, err := NewDir("/var/lib/butterfly/trace/")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, want string }{
		{"vm1.pcap", "/var/lib/butterfly/trace/vm1.pcap"},
		{"./trace_nic1.pcap", "/var/lib/butterfly/trace/trace_nic1.pcap"},
		{"/var/lib/butterfly/trace/vm1.pcap", "/var/lib/butterfly/trace/vm1.pcap"},
		{"/var/lib/butterfly/trace//./vm1.pcap", "/var/lib/butterfly/trace/vm1.pcap"},
		{"/tmp/x", ""},
		{"/etc/shadow", ""},
		{"../state.json", ""},
		{"/var/lib/butterfly/trace/../state.json", ""},
		{"a/../b.pcap", ""},
		{"sub/x.pcap", ""},
		{"/var/lib/butterfly/trace", ""},
		{".", ""},
		{"", ""},
		{"/var/lib/butterfly/trace2/x", ""},
	}
	for _, tc := range tests {
		got, err := d.Resolve(tc.name)
		if tc.want == "" {
			if err == nil {
				t.Errorf("Resolve(%q) = %q, want refused", tc.name, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	if _, err := d.Resolve("/tmp/x"); err == nil || !strings.Contains(err.Error(), "/var/lib/butterfly/trace") {
		t.Errorf("refusal %v does not name the trace directory", err)
	}
	if _, err := NewDir("trace"); err == nil {
		t.Error("NewDir accepted a relative path")
	}
	if got, err := (Dir{}).Resolve("/tmp/x.pcap"); err != nil || got != "/tmp/x.pcap" {
		t.Errorf("zero Dir: %q, %v", got, err)
	}
}

// TestDirPrepare: a missing directory is created with mode 0700; one that
// others may write to, or a symbolic link, is refused.
func TestDirPrepare(t *testing.T) {
	base := t.TempDir()
	d, _ := NewDir(filepath.Join(base, "a", "trace"))
	if err := d.Prepare(); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(d.Path()); err != nil || st.Mode().Perm() != 0o700 || !st.IsDir() {
		t.Fatalf("created %v, %v; want a 0700 directory", st.Mode(), err)
	}
	if err := d.Prepare(); err != nil {
		t.Errorf("second Prepare: %v", err)
	}

	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(d.Path(), link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{open, link} {
		d, _ := NewDir(p)
		if err := d.Prepare(); err == nil {
			t.Errorf("Prepare(%s) accepted it", p)
		}
	}
}
