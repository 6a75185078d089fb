package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/config"
	"github.com/butterfly-go/butterfly/internal/logging"
	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/model/modeltest"
	"github.com/butterfly-go/butterfly/internal/pcap"
	"github.com/butterfly-go/butterfly/internal/state"
)

// fakeEngine is the in-memory dataplane plus what the daemon needs of the
// real engine.
type fakeEngine struct {
	*modeltest.Dataplane
	mu     sync.Mutex
	closed int
	c      prometheus.Counter
}

func newFakeEngine() *fakeEngine {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "butterfly_fake_engine_total", Help: "test"})
	c.Add(3)
	return &fakeEngine{Dataplane: modeltest.NewDataplane(), c: c}
}

func (f *fakeEngine) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed++
	return nil
}

func (f *fakeEngine) Collector() prometheus.Collector { return f.c }

func (f *fakeEngine) closeCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// syncBuffer is a log sink safe for the daemon's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// running is a daemon served in-process.
type running struct {
	endpoint, metrics string
	logs              *syncBuffer
	lg                *logging.Logging
	done              chan error
	cancel            context.CancelFunc
}

func testConfig(t testing.TB) config.Config {
	dir := t.TempDir()
	td, err := pcap.NewDir(filepath.Join(dir, "trace"))
	if err != nil {
		t.Fatal(err)
	}
	return config.Config{
		Endpoint:  "ipc://" + filepath.Join(dir, "api"),
		LogLevel:  "info",
		SocketDir: dir,
		StateFile: filepath.Join(dir, "state", "state.json"),
		TraceDir:  td,
		Workers:   1,
	}
}

// startServe runs d.serve in a goroutine and waits until the API is bound
// (or serve failed: then done already holds the error).
func startServe(t *testing.T, cfg config.Config, dp engine) *running {
	t.Helper()
	logs := &syncBuffer{}
	lg, err := logging.New(logging.Options{Level: cfg.LogLevel, Stderr: logs})
	if err != nil {
		t.Fatal(err)
	}
	r := &running{logs: logs, lg: lg, done: make(chan error, 1)}
	ready := make(chan struct{})
	d := &daemon{cfg: cfg, log: lg.Logger(), setLogLevel: lg.SetLevel, pid: 4242,
		ready: func(endpoint, metrics string) {
			r.endpoint, r.metrics = endpoint, metrics
			close(ready)
		}}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- d.serve(ctx, dp, nil) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("serve did not return after cancel")
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", logs.String())
		}
	})
	select {
	case <-ready:
	case err := <-r.done:
		r.done <- err // leave it for the test
	case <-time.After(10 * time.Second):
		t.Fatal("daemon not ready after 10 s")
	}
	return r
}

func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return")
		return nil
	}
}

// testNIC is a TAP vNIC in VNI 7.
func testNIC(t *testing.T, id string) model.NIC {
	t.Helper()
	mac, err := model.ParseMAC("52:54:00:00:00:01")
	if err != nil {
		t.Fatal(err)
	}
	return model.NIC{ID: id, MACText: "52:54:00:00:00:01", MAC: mac, VNI: 7, Type: model.NICTap}
}

// loadState returns the state a daemon restarted on path would find: it
// opens a copy of the snapshot and its journal ("<path>.journal"), so
// that the running daemon's files and lock are left alone.
func loadState(t *testing.T, path string) model.State {
	t.Helper()
	cp := filepath.Join(t.TempDir(), "state.json")
	for _, suffix := range []string{"", ".journal"} {
		data, err := os.ReadFile(path + suffix)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cp+suffix, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, st, err := state.Open(cp, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestPersistEveryMutation checks that each acknowledged change is already
// in the state file when its reply arrives, that metrics are served, and
// that app_quit stops serve cleanly and closes the engine.
func TestPersistEveryMutation(t *testing.T) {
	cfg := testConfig(t)
	cfg.Metrics = "127.0.0.1:0"
	dp := newFakeEngine()
	r := startServe(t, cfg, dp)
	a := dialAPI(t, r.endpoint)

	steps := []struct {
		req   *protocol.MessageV0_Request
		check func(model.State) bool
	}{
		{sgAdd("sg-a"), func(s model.State) bool { return len(s.SGs) == 1 && s.SGs[0].ID == "sg-a" }},
		{memberAdd("sg-a", "10.0.0.7"), func(s model.State) bool { return len(s.SGs[0].Members) == 1 }},
		{tcpRuleAdd("sg-a", 22), func(s model.State) bool { return len(s.SGs[0].Rules) == 1 }},
		{tapNIC("vnic-1", 42, "52:54:00:12:34:56", "10.0.0.7"), func(s model.State) bool {
			return len(s.NICs) == 1 && s.NICs[0].ID == "vnic-1" && s.NICs[0].VNI == 42
		}},
		{&protocol.MessageV0_Request{NicDel: proto.String("vnic-1")}, func(s model.State) bool { return len(s.NICs) == 0 }},
	}
	for i, s := range steps {
		a.must(s.req)
		if st := loadState(t, cfg.StateFile); !s.check(st) {
			t.Fatalf("step %d: state file after the reply: %+v", i, st)
		}
	}
	// A refused request changes nothing.
	files := func() []byte {
		snap, _ := os.ReadFile(cfg.StateFile)
		journal, err := os.ReadFile(cfg.StateFile + ".journal")
		if err != nil {
			t.Fatalf("journal: %v", err)
		}
		return append(snap, journal...)
	}
	before := files()
	if len(before) == 0 {
		t.Fatal("nothing persisted")
	}
	if _, err := a.call(tapNIC("bad", 1, "not-a-mac")); !errors.Is(err, errRefused) {
		t.Errorf("bad nic_add: %v, want refused", err)
	}
	if after := files(); !bytes.Equal(before, after) {
		t.Error("a refused request wrote to the state files")
	}

	resp, err := http.Get("http://" + r.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"butterfly_fake_engine_total 3", "go_goroutines", "process_",
		`butterfly_api_requests_total{request="nic_add",result="error"} 1`, `butterfly_api_request_seconds_count{request="nic_add"}`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	resp, err = http.Get("http://" + r.metrics + "/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "heap profile") {
		t.Errorf("heap profile: %s: %.200s", resp.Status, body)
	}

	a.must(&protocol.MessageV0_Request{AppQuit: proto.Bool(true)})
	if err := r.wait(t); err != nil {
		t.Fatalf("serve after app_quit: %v", err)
	}
	if dp.closeCount() != 1 {
		t.Errorf("engine closed %d times, want 1", dp.closeCount())
	}
	if _, err := http.Get("http://" + r.metrics + "/metrics"); err == nil {
		t.Error("metrics still served after stop")
	}
}

// TestRestore starts a daemon on a saved state and checks the API and the
// engine see it; the -t default and default trace path (in the trace
// directory) apply to new vNICs; a saved trace path outside the trace
// directory is replaced by the default one, a path in it is kept.
func TestRestore(t *testing.T) {
	cfg := testConfig(t)
	cfg.PacketTrace = true
	src := model.New(modeltest.NewDataplane(), model.Options{})
	if err := src.AddSG(model.SG{ID: "sg-1"}); err != nil {
		t.Fatal(err)
	}
	savedTrace := map[string]string{"n1": "/tmp/butterfly-17-n1.pcap", "n2": "kept.pcap"}
	for _, id := range []string{"n1", "n2"} {
		n := testNIC(t, id)
		n.IPs = []netip.Addr{netip.MustParseAddr("10.1.0.1")}
		n.SecurityGroups = []string{"sg-1"}
		n.PacketTrace, n.TracePath = true, savedTrace[id]
		if _, err := src.AddNIC(n); err != nil {
			t.Fatal(err)
		}
	}
	if err := state.Save(cfg.StateFile, src.State()); err != nil {
		t.Fatal(err)
	}
	dp := newFakeEngine()
	r := startServe(t, cfg, dp)
	a := dialAPI(t, r.endpoint)
	if got := a.nicList(); strings.Join(got, ",") != "n1,n2" {
		t.Errorf("nic_list after restore = %q", got)
	}
	if got := a.sgList(); strings.Join(got, ",") != "sg-1" {
		t.Errorf("sg_list after restore = %q", got)
	}
	if got := dp.NICIDs(); strings.Join(got, ",") != "n1,n2" {
		t.Errorf("engine vNICs after restore = %q", got)
	}
	wantTrace := map[string]string{"n1": filepath.Join(cfg.TraceDir.Path(), "butterfly-4242-n1.pcap"), "n2": "kept.pcap"}
	for id, want := range wantTrace {
		if n, _ := dp.NIC(id); !n.PacketTrace || n.TracePath != want {
			t.Errorf("restored %s traces to %q (on: %t), want %q", id, n.TracePath, n.PacketTrace, want)
		}
	}
	// The trace path replaced at restore is persisted.
	for _, n := range loadState(t, cfg.StateFile).NICs {
		if n.TracePath != wantTrace[n.ID] {
			t.Errorf("state file: %s traces to %q, want %q", n.ID, n.TracePath, wantTrace[n.ID])
		}
	}
	a.must(tapNIC("n3", 7, "52:54:00:00:00:03"))
	d := a.must(&protocol.MessageV0_Request{NicDetails: proto.String("n3")}).GetNicDetails()
	want := filepath.Join(cfg.TraceDir.Path(), "butterfly-4242-n3.pcap")
	if len(d) != 1 || !d[0].GetPacketTrace() || d[0].GetPacketTracePath() != want {
		t.Errorf("nic_details n3 = %v, want packet_trace on %s", d, want)
	}
}

func TestCorruptStateStartsEmpty(t *testing.T) {
	cfg := testConfig(t)
	if err := os.MkdirAll(filepath.Dir(cfg.StateFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.StateFile, []byte(`{"version":1,"nics":[{"id":"x"`), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startServe(t, cfg, newFakeEngine())
	a := dialAPI(t, r.endpoint)
	if got := a.nicList(); len(got) != 0 {
		t.Errorf("nic_list = %q, want empty", got)
	}
	moved, _ := filepath.Glob(cfg.StateFile + ".corrupt-*")
	if len(moved) != 1 {
		t.Errorf("corrupt copies: %q", moved)
	}
	if !strings.Contains(r.logs.String(), "corrupt") {
		t.Errorf("log does not mention the corrupt file:\n%s", r.logs.String())
	}
	// The daemon keeps working and persisting.
	a.must(sgAdd("sg-new"))
	if st := loadState(t, cfg.StateFile); len(st.SGs) != 1 {
		t.Errorf("state after sg_add: %+v", st)
	}
}

func TestRestoreFailureKeepsCopy(t *testing.T) {
	cfg := testConfig(t)
	src := model.New(modeltest.NewDataplane(), model.Options{})
	for _, id := range []string{"good", "broken"} {
		if _, err := src.AddNIC(testNIC(t, id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := state.Save(cfg.StateFile, src.State()); err != nil {
		t.Fatal(err)
	}
	dp := newFakeEngine()
	dp.FailOn(modeltest.OpAddNIC, "broken", errors.New("tap: device busy"))
	r := startServe(t, cfg, dp)
	a := dialAPI(t, r.endpoint)
	if got := a.nicList(); strings.Join(got, ",") != "good" {
		t.Errorf("nic_list = %q, want good", got)
	}
	if !strings.Contains(r.logs.String(), "device busy") {
		t.Errorf("log does not explain the failure:\n%s", r.logs.String())
	}
	copies, _ := filepath.Glob(cfg.StateFile + ".restore-failed-*")
	if len(copies) != 1 {
		t.Fatalf("restore-failed copies: %q", copies)
	}
	if st := loadState(t, copies[0]); len(st.NICs) != 2 {
		t.Errorf("kept copy has %d vNICs, want 2", len(st.NICs))
	}
	// The state file holds what was restored, not the dropped vNIC, also
	// after a change that does not touch it.
	a.must(sgAdd("sg-new"))
	if st := loadState(t, cfg.StateFile); len(st.NICs) != 1 || st.NICs[0].ID != "good" || len(st.SGs) != 1 {
		t.Errorf("state file after the restore and sg_add: %+v", st)
	}
}

func TestServeErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, cfg *config.Config)
		want  string
	}{
		{"unreadable state file", func(t *testing.T, cfg *config.Config) {
			if err := os.MkdirAll(cfg.StateFile, 0o700); err != nil {
				t.Fatal(err)
			}
		}, "cannot read the state file"},
		{"bad endpoint", func(t *testing.T, cfg *config.Config) { cfg.Endpoint = "bogus://x" }, "API endpoint"},
		{"metrics address unusable", func(t *testing.T, cfg *config.Config) { cfg.Metrics = "256.0.0.1:1" }, "metrics"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			tt.setup(t, &cfg)
			dp := newFakeEngine()
			d := &daemon{cfg: cfg, log: slog.New(slog.DiscardHandler), setLogLevel: func(string) error { return nil }}
			err := d.serve(context.Background(), dp, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("serve error = %v, want it to contain %q", err, tt.want)
			}
			if dp.closeCount() != 1 {
				t.Errorf("engine closed %d times, want 1", dp.closeCount())
			}
		})
	}
}

// TestSignalStopsAndLogLevel: app_config changes the live level, and a
// cancelled context (SIGTERM) stops serve with no error.
func TestSignalStopsAndLogLevel(t *testing.T) {
	cfg := testConfig(t)
	cfg.StateFile = ""
	dp := newFakeEngine()
	r := startServe(t, cfg, dp)
	a := dialAPI(t, r.endpoint)
	a.must(&protocol.MessageV0_Request{AppConfig: &protocol.MessageV0_AppConfigReq{LogLevel: proto.String("debug")}})
	if r.lg.Level() != "debug" {
		t.Errorf("level after app_config = %q", r.lg.Level())
	}
	st := a.must(&protocol.MessageV0_Request{AppStatus: proto.Bool(true)}).GetAppStatus()
	if st.GetRequestCounter() < 2 {
		t.Errorf("app_status request_counter = %d", st.GetRequestCounter())
	}
	r.cancel()
	if err := r.wait(t); err != nil {
		t.Errorf("serve after cancel: %v", err)
	}
	if dp.closeCount() != 1 {
		t.Errorf("engine closed %d times", dp.closeCount())
	}
	if _, err := os.Stat(filepath.Join(cfg.SocketDir, "state")); err == nil {
		t.Error("state written with persistence off")
	}
}

// TestSecondDaemonRefused: a second daemon on the same state file stops at
// start without touching the first one's vNICs.
func TestSecondDaemonRefused(t *testing.T) {
	cfg := testConfig(t)
	first := newFakeEngine()
	r := startServe(t, cfg, first)
	a := dialAPI(t, r.endpoint)
	a.must(tapNIC("n1", 7, "52:54:00:00:00:01"))

	cfg2 := cfg
	cfg2.Endpoint = "ipc://" + filepath.Join(t.TempDir(), "api2")
	second := newFakeEngine()
	d := &daemon{cfg: cfg2, log: slog.New(slog.DiscardHandler), setLogLevel: func(string) error { return nil }}
	err := d.serve(context.Background(), second, nil)
	if err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("second serve error = %v, want state file in use", err)
	}
	if ids := second.NICIDs(); len(ids) != 0 {
		t.Errorf("second daemon created vNICs %q", ids)
	}
	if got := a.nicList(); strings.Join(got, ",") != "n1" {
		t.Errorf("first daemon's nic_list = %q", got)
	}
}

// TestJournalRestart: changes persisted in the journal come back after a
// restart, an incomplete last record (a crash while writing an
// unacknowledged change) is dropped with a log line, and the daemon goes
// on persisting after it.
func TestJournalRestart(t *testing.T) {
	cfg := testConfig(t)
	r := startServe(t, cfg, newFakeEngine())
	a := dialAPI(t, r.endpoint)
	a.must(sgAdd("sg-a"))
	a.must(tcpRuleAdd("sg-a", 22))
	a.must(tapNIC("vnic-1", 42, "52:54:00:12:34:56", "10.0.0.7"))
	a.must(&protocol.MessageV0_Request{AppQuit: proto.Bool(true)})
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	// A torn record after the last one (the journal's preallocated zeros
	// follow it): a header announcing 100 bytes, then only 10.
	j, err := os.ReadFile(cfg.StateFile + ".journal")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(cfg.StateFile+".journal", os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(append([]byte{100, 0, 0, 0, 1, 2, 3, 4}, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14), int64(len(bytes.TrimRight(j, "\x00")))); err != nil {
		t.Fatal(err)
	}
	f.Close()

	r = startServe(t, cfg, newFakeEngine())
	a = dialAPI(t, r.endpoint)
	if got := a.nicList(); strings.Join(got, ",") != "vnic-1" {
		t.Errorf("nic_list after restart = %q", got)
	}
	if rules := a.sgDetails("sg-a").GetRule(); len(rules) != 1 || rules[0].GetPortStart() != 22 {
		t.Errorf("sg-a rules after restart = %v", rules)
	}
	if !strings.Contains(r.logs.String(), "incomplete last record") {
		t.Errorf("log does not report the torn record:\n%s", r.logs.String())
	}
	a.must(sgAdd("sg-b"))
	if st := loadState(t, cfg.StateFile); len(st.SGs) != 2 || len(st.NICs) != 1 {
		t.Errorf("state after the restart and sg_add: %+v", st)
	}
}

// TestVhostClientDefault: --vhost-client makes vhost-user vNICs added
// without a mode clients; the resolved mode is persisted, so a daemon
// restarted with the other default restores each vNIC in its own mode.
func TestVhostClientDefault(t *testing.T) {
	cfg := testConfig(t)
	cfg.VhostClient = true
	dp := newFakeEngine()
	r := startServe(t, cfg, dp)
	a := dialAPI(t, r.endpoint)
	vhost := func(id string, client *bool) *protocol.MessageV0_Request {
		return &protocol.MessageV0_Request{NicAdd: &protocol.MessageV0_Nic{Id: proto.String(id),
			Mac: proto.String("52:54:00:00:00:09"), Vni: proto.Uint32(7), VhostUserClient: client}}
	}
	a.must(vhost("by-default", nil))
	a.must(vhost("server", proto.Bool(false)))
	want := map[string]bool{"by-default": true, "server": false}
	for id, client := range want {
		if n, _ := dp.NIC(id); n.VhostClient != client {
			t.Errorf("engine vNIC %s: VhostClient %t, want %t", id, n.VhostClient, client)
		}
	}
	st := loadState(t, cfg.StateFile)
	for _, n := range st.NICs {
		if n.VhostClient != want[n.ID] {
			t.Errorf("state file: %s VhostClient %t, want %t", n.ID, n.VhostClient, want[n.ID])
		}
	}
	a.must(&protocol.MessageV0_Request{AppQuit: proto.Bool(true)})
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}

	cfg.VhostClient = false
	dp2 := newFakeEngine()
	r2 := startServe(t, cfg, dp2)
	for id, client := range want {
		if n, ok := dp2.NIC(id); !ok || n.VhostClient != client {
			t.Errorf("restored on a server-default daemon: %s = %+v, want VhostClient %t", id, n, client)
		}
	}
	a2 := dialAPI(t, r2.endpoint)
	a2.must(vhost("new", nil))
	if n, _ := dp2.NIC("new"); n.VhostClient {
		t.Error("a server-default daemon added a client vNIC")
	}
}

// lockProbeEngine reports, when the daemon closes it, whether the state
// file was still locked at that moment.
type lockProbeEngine struct {
	*fakeEngine
	stateFile     string
	lockedAtClose chan bool
}

func (e *lockProbeEngine) Close() error {
	unlock, err := state.Lock(e.stateFile)
	if err == nil {
		_ = unlock()
	}
	e.lockedAtClose <- err != nil
	return e.fakeEngine.Close()
}

// TestStateLockHeldUntilDataplaneClosed checks that serve closes the
// dataplane (which removes the vNICs and their vhost-user sockets) before
// it releases the state-file lock: a second daemon that gets the lock must
// not find the first one's sockets still in place.
func TestStateLockHeldUntilDataplaneClosed(t *testing.T) {
	cfg := testConfig(t)
	dp := &lockProbeEngine{fakeEngine: newFakeEngine(), stateFile: cfg.StateFile, lockedAtClose: make(chan bool, 1)}
	r := startServe(t, cfg, dp)
	r.cancel()
	if err := r.wait(t); err != nil {
		t.Fatalf("serve: %v", err)
	}
	if locked := <-dp.lockedAtClose; !locked {
		t.Error("the state-file lock was released before the dataplane was closed")
	}
}
