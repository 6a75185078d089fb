package logging

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseLevel(t *testing.T) {
	tests := []struct {
		in      string
		want    slog.Level
		wantErr bool
	}{
		{"none", LevelNone, false},
		{"error", slog.LevelError, false},
		{"ERR", slog.LevelError, false},
		{"warning", slog.LevelWarn, false},
		{"warn", slog.LevelWarn, false},
		{"info", slog.LevelInfo, false},
		{" Debug ", slog.LevelDebug, false},
		{"", 0, true},
		{"verbose", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseLevel(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseLevel(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && got != tt.want {
			t.Errorf("ParseLevel(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
	for _, name := range LevelNames() {
		l, err := ParseLevel(name)
		if err != nil || LevelName(l) != name {
			t.Errorf("LevelName(ParseLevel(%q)) = %q, %v", name, LevelName(l), err)
		}
	}
	if err := func() error { _, err := ParseLevel("loud"); return err }(); !strings.Contains(err.Error(), "none, error, warning, info, debug") {
		t.Errorf("error %q does not list the levels", err)
	}
}

func TestSetLevelLive(t *testing.T) {
	var buf bytes.Buffer
	lg, err := New(Options{Level: "error", Stderr: &buf})
	if err != nil {
		t.Fatal(err)
	}
	log := lg.Logger()
	log.Info("hidden-info")
	log.Error("shown-error")
	if err := lg.SetLevel("debug"); err != nil {
		t.Fatal(err)
	}
	if lg.Level() != "debug" {
		t.Errorf("Level() = %q, want debug", lg.Level())
	}
	log.Debug("shown-debug")
	if err := lg.SetLevel("none"); err != nil {
		t.Fatal(err)
	}
	log.Error("hidden-error")
	if err := lg.SetLevel("bogus"); err == nil {
		t.Error("SetLevel(bogus) succeeded")
	}
	if lg.Level() != "none" {
		t.Errorf("a failed SetLevel changed the level to %q", lg.Level())
	}
	out := buf.String()
	for _, s := range []string{"shown-error", "shown-debug"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
	for _, s := range []string{"hidden-info", "hidden-error"} {
		if strings.Contains(out, s) {
			t.Errorf("output has %q:\n%s", s, out)
		}
	}
}

type fakeSyslog struct{ lines []string }

func (f *fakeSyslog) add(sev, m string) error { f.lines = append(f.lines, sev+" "+m); return nil }
func (f *fakeSyslog) Err(m string) error      { return f.add("err", m) }
func (f *fakeSyslog) Warning(m string) error  { return f.add("warning", m) }
func (f *fakeSyslog) Info(m string) error     { return f.add("info", m) }
func (f *fakeSyslog) Debug(m string) error    { return f.add("debug", m) }

func TestSyslogHandlerFormat(t *testing.T) {
	f := &fakeSyslog{}
	lv := new(slog.LevelVar)
	lv.Set(slog.LevelDebug)
	log := slog.New(NewSyslogHandler(f, lv))
	log.Error("boom", "nic", "vnic 1", "n", 3)
	log.Warn("careful", "err", fmt.Errorf("x=y"))
	log.With("comp", "api").WithGroup("req").Info("got", "id", 7, slog.Group("g", "a", ""))
	log.Debug("dbg")
	lv.Set(slog.LevelDebug - 4)
	log.Log(context.Background(), slog.LevelDebug-4, "trace")
	lv.Set(slog.LevelWarn)
	log.Info("dropped")
	want := []string{
		`err boom nic="vnic 1" n=3`,
		`warning careful err="x=y"`,
		`info got comp=api req.id=7 req.g.a=""`,
		`debug dbg`,
		`debug trace`,
	}
	if strings.Join(f.lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(f.lines, "\n"), strings.Join(want, "\n"))
	}
}

// TestSyslogReal sends records to a syslog socket the test owns and checks
// priority (facility LOCAL0), ident and text, and that stderr gets the
// same records.
func TestSyslogReal(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "log.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var stderr bytes.Buffer
	lg, err := New(Options{Level: "info", Stderr: &stderr, Syslog: true, SyslogNetwork: "unixgram", SyslogAddr: sock})
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	lg.Logger().Warn("vnic added", "id", "tap0")
	lg.Logger().Debug("not sent")
	lg.Logger().Error("second")

	read := func() string {
		buf := make([]byte, 4096)
		if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no syslog message: %v", err)
		}
		return string(buf[:n])
	}
	// LOCAL0 (16<<3) + warning (4) = 132; + err (3) = 131.
	pid := fmt.Sprintf("butterfly[%d]: ", os.Getpid())
	for _, want := range []string{"<132>", "<131>"} {
		m := read()
		if !strings.HasPrefix(m, want) || !strings.Contains(m, pid) {
			t.Errorf("syslog message %q: want prefix %q and %q", m, want, pid)
		}
		if want == "<132>" && !strings.HasSuffix(strings.TrimSpace(m), "vnic added id=tap0") {
			t.Errorf("syslog message %q lacks the text", m)
		}
	}
	if !strings.Contains(stderr.String(), "vnic added") || !strings.Contains(stderr.String(), "second") {
		t.Errorf("stderr lacks the records: %q", stderr.String())
	}
	if strings.Contains(stderr.String(), "not sent") {
		t.Errorf("stderr has a debug record at info level")
	}
}

func TestSyslogUnavailable(t *testing.T) {
	var stderr bytes.Buffer
	lg, err := New(Options{Stderr: &stderr, Syslog: true, SyslogNetwork: "unixgram", SyslogAddr: filepath.Join(t.TempDir(), "none")})
	if err == nil {
		t.Fatal("New succeeded with an unreachable syslog")
	}
	if lg == nil {
		t.Fatal("New returned no usable logger with the syslog error")
	}
	lg.Logger().Info("still works")
	if !strings.Contains(stderr.String(), "still works") {
		t.Errorf("stderr output lost: %q", stderr.String())
	}
}

func TestBadInitialLevel(t *testing.T) {
	if _, err := New(Options{Level: "loud"}); err == nil {
		t.Error("New accepted level loud")
	}
}
