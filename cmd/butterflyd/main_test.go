package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/crypto"
)

// TestBinary builds butterflyd and runs it as a process: option errors
// without root; with root, in a network namespace of its own with TAP
// vNICs: restart, kill -9 while changes stream in, corrupt state file.
func TestBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "butterflyd")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Run("option errors", func(t *testing.T) { testOptionErrors(t, bin) })
	t.Run("restart restores", func(t *testing.T) { testRestartRestores(t, bin) })
	t.Run("kill -9 keeps acknowledged changes", func(t *testing.T) { testKillNine(t, bin) })
	t.Run("corrupt state file", func(t *testing.T) { testCorruptStateFile(t, bin) })
	t.Run("trace files confined", func(t *testing.T) { testTraceConfined(t, bin) })
	t.Run("auto key", func(t *testing.T) { testAutoKey(t, bin) })
	t.Run("gc percent", func(t *testing.T) { testGCPercent(t, bin) })
}

// testGCPercent: the daemon runs with a GC target of defaultGCPercent
// unless the environment sets GOGC, which then wins; the target is read
// from the daemon's own metrics (go_gc_gogc_percent).
func testGCPercent(t *testing.T, bin string) {
	tests := []struct {
		name string
		gogc string // "" = not in the environment
		want string
	}{
		{"default", "", strconv.Itoa(defaultGCPercent)},
		{"GOGC=100", "100", "100"},
		{"GOGC=60", "60", "60"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := daemonGCPercent(t, bin, tt.gogc); got != tt.want {
				t.Errorf("go_gc_gogc_percent %s, want %s", got, tt.want)
			}
		})
	}
}

// daemonGCPercent starts butterflyd on loopback with GOGC=gogc in its
// environment ("" = unset) and its metrics on, returns the value of its
// go_gc_gogc_percent metric, and stops it.
func daemonGCPercent(t *testing.T, bin, gogc string) string {
	t.Helper()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "-i", "127.0.0.1", "-s", dir, "-e", "ipc://"+filepath.Join(dir, "api"),
		"--state-file", "", "--no-syslog", "-l", "error", "--auto-key", "none",
		"--trace-dir", filepath.Join(dir, "trace"), "--metrics", addr)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GOGC=") })
	if gogc != "" {
		cmd.Env = append(cmd.Env, "GOGC="+gogc)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			time.Sleep(20 * time.Millisecond) // poll until the listener is up
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(body)) {
			if v, ok := strings.CutPrefix(line, "go_gc_gogc_percent "); ok {
				return strings.TrimSpace(v)
			}
		}
		t.Fatalf("no go_gc_gogc_percent in the metrics:\n%s", body)
	}
	t.Fatalf("metrics at %s not up after 15 s; stderr:\n%s", addr, stderr.String())
	return ""
}

func testOptionErrors(t *testing.T, bin string) {
	dir := t.TempDir()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     string
		stdout   bool
	}{
		{"missing -i", []string{"-s", dir}, 2, "IP to use is not set", false},
		{"missing -s", []string{"-i", "10.0.0.1"}, 2, "socket folder is not set", false},
		{"bad key file", []string{"-i", "10.0.0.1", "-s", dir, "--no-syslog", "-k", filepath.Join(dir, "nokey")}, 1, "cannot load encryption key", false},
		{"version", []string{"-V"}, 0, `butterfly version: "`, true},
		{"help", []string{"--help"}, 0, "--state-file", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(bin, tt.args...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tt.wantCode, stderr.String())
			}
			got := stderr.String()
			if tt.stdout {
				got = stdout.String()
			}
			if !strings.Contains(got, tt.want) {
				t.Errorf("output %q lacks %q", got, tt.want)
			}
		})
	}
}

// nsHost is a network namespace with an underlay address, where the test
// runs butterflyd.
type nsHost struct {
	t                           *testing.T
	bin, ns, dir                string
	endpoint, state, sock, logf string
	mu                          sync.Mutex
	cmd                         *exec.Cmd
	exited                      chan struct{}
	exitErr                     error
}

func mustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newNSHost(t *testing.T, bin string) *nsHost {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, TAP devices)")
	}
	dir := t.TempDir()
	h := &nsHost{
		t: t, bin: bin, dir: dir,
		ns:       fmt.Sprintf("bfdt-%d-%d", os.Getpid(), rand.IntN(1<<30)),
		endpoint: "ipc://" + filepath.Join(dir, "api"),
		state:    filepath.Join(dir, "state", "state.json"),
		sock:     filepath.Join(dir, "sock"),
		logf:     filepath.Join(dir, "butterflyd.log"),
	}
	if err := os.Mkdir(h.sock, 0o755); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "ip", "netns", "add", h.ns)
	t.Cleanup(func() {
		h.kill()
		if t.Failed() {
			b, _ := os.ReadFile(h.logf)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("butterflyd log (tail):\n%s", b)
		}
		if out, err := exec.Command("ip", "netns", "del", h.ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v %s", h.ns, err, out)
		}
	})
	mustRun(t, "ip", "-n", h.ns, "link", "set", "lo", "up")
	mustRun(t, "ip", "-n", h.ns, "link", "add", "ul", "type", "veth", "peer", "name", "ulp")
	mustRun(t, "ip", "-n", h.ns, "addr", "add", "10.79.0.1/24", "dev", "ul")
	mustRun(t, "ip", "-n", h.ns, "link", "set", "ul", "up")
	mustRun(t, "ip", "-n", h.ns, "link", "set", "ulp", "up")
	return h
}

// start runs butterflyd in the namespace and waits until its API answers.
func (h *nsHost) start() *api {
	t := h.t
	t.Helper()
	logf, err := os.OpenFile(h.logf, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// "ip netns exec" execs the daemon: the PID is butterflyd's.
	cmd := exec.Command("ip", "netns", "exec", h.ns, h.bin,
		"-i", "10.79.0.1", "-s", h.sock, "-e", h.endpoint, "--state-file", h.state,
		"--vxlan-peers", "10.79.0.2", "--no-syslog", "-l", "debug", "--trace-dir", h.traceDir(),
		"--auto-key", h.keyFile())
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		h.mu.Lock()
		h.exitErr = err
		h.mu.Unlock()
		close(exited)
	}()
	h.mu.Lock()
	h.cmd, h.exited = cmd, exited
	h.mu.Unlock()

	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("butterflyd exited at start: %v", h.exitErr)
		default:
		}
		// A REQ socket waits for the endpoint to appear; a timeout closes
		// it, so dial afresh each round.
		// The daemon creates its key before it binds the API.
		key, _ := crypto.LoadKeyFile(h.keyFile())
		a := dialAPIKey(t, h.endpoint, key)
		if _, err := a.call(&protocol.MessageV0_Request{AppStatus: proto.Bool(true)}); err == nil {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatal("butterflyd API not up after 15 s")
		}
	}
}

// kill sends SIGKILL to the daemon this test started (if running) and
// waits for it.
func (h *nsHost) kill() {
	h.mu.Lock()
	cmd, exited := h.cmd, h.exited
	h.cmd = nil
	h.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// stop sends SIGTERM and returns the exit error (nil = status 0).
func (h *nsHost) stop() error {
	h.t.Helper()
	h.mu.Lock()
	cmd, exited := h.cmd, h.exited
	h.cmd = nil
	h.mu.Unlock()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		h.t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		h.t.Fatal("butterflyd ignored SIGTERM for 15 s")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.exitErr
}

// links returns the interface names in the namespace.
func (h *nsHost) links() []string {
	out := mustRun(h.t, "ip", "-n", h.ns, "-o", "link", "show")
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			names = append(names, name)
		}
	}
	return names
}

func (h *nsHost) hasLinks(names ...string) error {
	have := h.links()
	for _, n := range names {
		if !slices.Contains(have, n) {
			return fmt.Errorf("no interface %q in %s (have %q)", n, h.ns, have)
		}
	}
	return nil
}

// keyFile is the daemon's --auto-key.
func (h *nsHost) keyFile() string { return filepath.Join(h.dir, "keys", "api.key") }

// testAutoKey: started without -k, the daemon creates a key file, mode
// 0600 in a 0700 directory, and requires it: a clear-text client is refused
// (and changes nothing), a client with the key from the file is served,
// and a restart keeps the same key.
func testAutoKey(t *testing.T, bin string) {
	h := newNSHost(t, bin)
	a := h.start()
	st, err := os.Stat(h.keyFile())
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v (mode %v), want 0600", err, st)
	}
	if st, err := os.Stat(filepath.Dir(h.keyFile())); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("key directory: %v (mode %v), want 0700", err, st)
	}
	before, err := os.ReadFile(h.keyFile())
	if err != nil {
		t.Fatal(err)
	}
	clear := dialAPI(t, h.endpoint)
	if _, err := clear.call(sgAdd("sg-x")); err == nil {
		t.Error("a clear-text request was served by a daemon with a key")
	}
	a.must(sgAdd("sg-y"))
	if got := a.sgList(); !slices.Equal(got, []string{"sg-y"}) {
		t.Errorf("sg_list = %q, want only sg-y", got)
	}
	if err := h.stop(); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	a = h.start()
	if after, _ := os.ReadFile(h.keyFile()); !bytes.Equal(after, before) {
		t.Error("the key changed across a restart")
	}
	if got := a.sgList(); !slices.Equal(got, []string{"sg-y"}) {
		t.Errorf("sg_list after restart = %q", got)
	}
}

// traceDir is the daemon's --trace-dir.
func (h *nsHost) traceDir() string { return filepath.Join(h.dir, "trace") }

// testTraceConfined: over the API, a trace path outside the trace
// directory is refused with an error that names the directory, and the
// file it named is left as it was (the original truncated it); a relative
// name is created in the directory, mode 0600, and the daemon keeps
// serving.
func testTraceConfined(t *testing.T, bin string) {
	h := newNSHost(t, bin)
	a := h.start()
	victim := filepath.Join(h.dir, "victim")
	const content = "root-owned content\n"
	if err := os.WriteFile(victim, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{victim, "../victim"} {
		req := tapNIC("t1", 3, macOf(9))
		req.NicAdd.PacketTrace, req.NicAdd.PacketTracePath = proto.Bool(true), proto.String(path)
		_, err := a.call(req)
		if !errors.Is(err, errRefused) || !strings.Contains(err.Error(), h.traceDir()) {
			t.Errorf("nic_add with trace path %s: %v, want refused naming %s", path, err, h.traceDir())
		}
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != content {
		t.Errorf("victim file after the refused requests: %q, %v", b, err)
	}
	req := tapNIC("t1", 3, macOf(9))
	req.NicAdd.PacketTrace, req.NicAdd.PacketTracePath = proto.Bool(true), proto.String("t1.pcap")
	a.must(req)
	if st, err := os.Stat(filepath.Join(h.traceDir(), "t1.pcap")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("trace file in the trace directory: %v (mode %v), want 0600", err, st)
	}
	if st, err := os.Stat(h.traceDir()); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("trace directory: %v (mode %v), want 0700", err, st)
	}
	if got := a.nicList(); !slices.Equal(got, []string{"t1"}) {
		t.Errorf("nic_list = %q", got)
	}
}

func macOf(i int) string { return fmt.Sprintf("52:54:00:00:%02x:%02x", i>>8&0xff, i&0xff) }

func testRestartRestores(t *testing.T, bin string) {
	h := newNSHost(t, bin)
	a := h.start()
	a.must(sgAdd("sg-web"))
	a.must(tcpRuleAdd("sg-web", 80))
	a.must(memberAdd("sg-web", "10.5.0.1"))
	ids := []string{"vm-a", "vm-b", "vm-c"}
	for i, id := range ids {
		req := tapNIC(id, 42+uint32(i%2), macOf(i+1), fmt.Sprintf("10.5.0.%d", i+1))
		req.NicAdd.SecurityGroup = []string{"sg-web"}
		a.must(req)
	}
	if err := h.hasLinks(ids...); err != nil {
		t.Fatal(err)
	}
	details := a.must(&protocol.MessageV0_Request{NicDetails: proto.String("")}).GetNicDetails()
	sg := a.sgDetails("sg-web")

	if err := h.stop(); err != nil {
		t.Fatalf("SIGTERM: butterflyd exited with %v, want status 0", err)
	}
	for _, id := range ids {
		if slices.Contains(h.links(), id) {
			t.Errorf("TAP %s still exists after a graceful stop", id)
		}
	}

	a = h.start()
	if got := a.nicList(); !slices.Equal(got, ids) {
		t.Errorf("nic_list after restart = %q, want %q", got, ids)
	}
	if err := h.hasLinks(ids...); err != nil {
		t.Error(err)
	}
	got := a.must(&protocol.MessageV0_Request{NicDetails: proto.String("")}).GetNicDetails()
	if len(got) != len(details) {
		t.Fatalf("nic_details: %d vNICs after restart, %d before", len(got), len(details))
	}
	for i := range got {
		if !proto.Equal(got[i], details[i]) {
			t.Errorf("vNIC after restart:\n%v\nbefore:\n%v", got[i], details[i])
		}
	}
	if gsg := a.sgDetails("sg-web"); !proto.Equal(gsg, sg) {
		t.Errorf("sg after restart:\n%v\nbefore:\n%v", gsg, sg)
	}
}

// op is one mutation of the kill -9 stream and how to check it.
type op struct {
	desc  string
	req   *protocol.MessageV0_Request
	check func(a *api) error
}

// streamOps returns the i-th group of mutations: a security group with a
// rule and a member, and a TAP vNIC using it.
func streamOps(i int) []op {
	sg := fmt.Sprintf("sg-%d", i)
	nic := fmt.Sprintf("k9-%d", i)
	member := fmt.Sprintf("10.6.%d.%d", i/250, i%250+1)
	port := uint32(1000 + i)
	nicReq := tapNIC(nic, 100+uint32(i%3), macOf(i+1), member)
	nicReq.NicAdd.SecurityGroup = []string{sg}
	return []op{
		{"sg_add " + sg, sgAdd(sg), func(a *api) error {
			if !slices.Contains(a.sgList(), sg) {
				return errors.New("missing")
			}
			return nil
		}},
		{"sg_rule_add " + sg, tcpRuleAdd(sg, port), func(a *api) error {
			for _, r := range a.sgDetails(sg).GetRule() {
				if r.GetPortStart() == port {
					return nil
				}
			}
			return errors.New("rule missing")
		}},
		{"sg_member_add " + sg, memberAdd(sg, member), func(a *api) error {
			if !slices.Contains(a.sgDetails(sg).GetMember(), member) {
				return errors.New("member missing")
			}
			return nil
		}},
		{"nic_add " + nic, nicReq, func(a *api) error {
			if !slices.Contains(a.nicList(), nic) {
				return errors.New("missing from nic_list")
			}
			return nil
		}},
	}
}

func testKillNine(t *testing.T, bin string) {
	h := newNSHost(t, bin)
	a := h.start()
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("seed %d", seed)

	var mu sync.Mutex
	var acked []op
	var lastErr error
	streamDone := make(chan struct{})
	go func() {
		defer close(streamDone)
		for i := 0; ; i++ {
			for _, o := range streamOps(i) {
				_, err := a.call(o.req)
				mu.Lock()
				if err != nil {
					lastErr = err
					mu.Unlock()
					return
				}
				acked = append(acked, o)
				mu.Unlock()
			}
		}
	}()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	// Let some changes through, then kill at a random moment.
	deadline := time.Now().Add(20 * time.Second)
	for count() < 8 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d changes acknowledged in 20 s", count())
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
	h.kill()
	<-streamDone
	mu.Lock()
	done := slices.Clone(acked)
	mu.Unlock()
	if lastErr == nil || errors.Is(lastErr, errRefused) {
		t.Fatalf("stream ended by %v, want a transport error from the kill", lastErr)
	}
	t.Logf("%d changes acknowledged before kill -9; the next one failed with: %v", len(done), lastErr)

	a = h.start()
	var nics []string
	for _, o := range done {
		if err := o.check(a); err != nil {
			t.Errorf("acknowledged %s lost after kill -9 and restart: %v", o.desc, err)
		}
		if o.req.NicAdd != nil {
			nics = append(nics, o.req.NicAdd.GetId())
		}
	}
	if err := h.hasLinks(nics...); err != nil {
		t.Errorf("TAP vNICs not recreated: %v", err)
	}
	// The daemon keeps working after the restart.
	a.must(sgAdd("after-restart"))
}

func testCorruptStateFile(t *testing.T, bin string) {
	h := newNSHost(t, bin)
	if err := os.MkdirAll(filepath.Dir(h.state), 0o700); err != nil {
		t.Fatal(err)
	}
	garbage := []byte(`{"version":1,"nics":[{"id":"half`)
	if err := os.WriteFile(h.state, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	a := h.start()
	if got := a.nicList(); len(got) != 0 {
		t.Errorf("nic_list = %q, want empty", got)
	}
	moved, _ := filepath.Glob(h.state + ".corrupt-*")
	if len(moved) != 1 {
		t.Fatalf("moved-aside files: %q", moved)
	}
	if b, _ := os.ReadFile(moved[0]); !bytes.Equal(b, garbage) {
		t.Errorf("moved-aside file content changed: %q", b)
	}
	logs, _ := os.ReadFile(h.logf)
	if !strings.Contains(string(logs), "corrupt") {
		t.Errorf("log does not mention the corrupt state file")
	}
	a.must(sgAdd("fresh"))
	if err := h.stop(); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
}
