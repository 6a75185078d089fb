package apiserver

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/api/protocol"
)

const pythonPath = "/usr/bin/python3"

// pyProto generates the Python classes of the wire protocol with protoc
// into a temporary directory and checks that the Debian python3-zmq and
// python3-protobuf modules are importable. The tests need them (CI installs
// python3-zmq, python3-protobuf and protobuf-compiler); -short skips them.
func pyProto(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("libzmq peer tests need python3-zmq; skipped in -short mode")
	}
	protoDir, err := filepath.Abs("../../api/protocol")
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(protoDir, "*.proto"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no .proto files in %s: %v", protoDir, err)
	}
	dir := t.TempDir()
	args := append([]string{"--python_out=" + dir, "-I", protoDir}, files...)
	if out, err := exec.Command("protoc", args...).CombinedOutput(); err != nil {
		t.Fatalf("protoc (package protobuf-compiler) failed: %v\n%s", err, out)
	}
	check := exec.Command(pythonPath, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import zmq, message_pb2", dir)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("%s cannot import zmq and the generated classes (install python3-zmq python3-protobuf): %v\n%s",
			pythonPath, err, out)
	}
	return dir
}

// runPeer runs one scenario of testdata/pypeer.py and decodes its JSON.
func runPeer(t testing.TB, pydir, scenario, endpoint string, args ...string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, pythonPath, append([]string{"testdata/pypeer.py", pydir, scenario, endpoint}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python peer %s: %v\nstderr:\n%s", scenario, err, stderr.String())
	}
	var res map[string]any
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("python peer %s output %q: %v", scenario, out, err)
	}
	if e, ok := res["error"]; ok {
		t.Fatalf("python peer %s: %v (%v)", scenario, e, res)
	}
	return res
}

// startServer binds a server and runs Serve until the test ends.
func startServer(t testing.TB, cfg Config, h Handler) *Server {
	t.Helper()
	if cfg.Endpoint == "" {
		cfg.Endpoint = "tcp://127.0.0.1:*"
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	if h == nil {
		h = echoHandler()
	}
	s, err := New(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return 5 s after its context was cancelled")
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// echoJSON is what describe() in pypeer.py prints for echoed(id, typ).
func echoJSON(id, typ string) map[string]any {
	return map[string]any{"revision": 6.0, "message_id": id, "status": true, "nic_list": []any{typ}}
}

func errJSON(code string) map[string]any {
	return map[string]any{"revision": 6.0, "error": code}
}

func reply(ms ...map[string]any) map[string]any {
	l := make([]any, len(ms))
	for i, m := range ms {
		l[i] = m
	}
	return map[string]any{"messages": l}
}

func checkJSON(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		t.Fatalf("%s:\n got %s\nwant %s", what, g, w)
	}
}

func TestPythonRoundTrip(t *testing.T) {
	pydir := pyProto(t)
	for _, tc := range []struct{ name, endpoint string }{
		{"tcp", "tcp://127.0.0.1:*"},
		{"tcp6", "tcp://[::1]:*"},
		{"ipc", "ipc://" + filepath.Join(t.TempDir(), "api.sock")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "tcp6" {
				if _, err := os.Stat("/proc/net/if_inet6"); err != nil {
					t.Skip("no IPv6 on this host")
				}
			}
			s := startServer(t, Config{Endpoint: tc.endpoint, MaxMessageSize: -1}, nil)
			res := runPeer(t, pydir, "roundtrip", s.Endpoint())
			checkJSON(t, "replies", res["replies"], []any{
				reply(echoJSON("a", "nic_list"), errJSON("VERSION_NOT_MANAGED"), echoJSON("c", "sg_list")),
				reply(echoJSON("d", "app_status")),
				reply(echoJSON("e", "nic_details")),
			})
			if got := s.Requests(); got != 3 {
				t.Fatalf("Requests() = %d, want 3", got)
			}
		})
	}
}

func TestPythonMalformed(t *testing.T) {
	pydir := pyProto(t)
	s := startServer(t, Config{}, nil)
	frames := []string{
		"ffffff", // not protobuf
		"",       // empty frame: a Messages with nothing in it
		"0a00",   // one Message without its required revision
		"0a02",   // truncated
		// Encrypted, but this server has no key.
		hex.EncodeToString(mustMarshal(t, &protocol.Messages{Encrypted: &protocol.Encrypted{Aes256CbcSha512: make([]byte, 96)}})),
		hex.EncodeToString(mustMarshal(t, msgs(v0("ok", nicList())))),
	}
	res := runPeer(t, pydir, "raw", s.Endpoint(), frames...)
	checkJSON(t, "replies", res["replies"], []any{
		reply(errJSON("PARSE_ERROR")),
		reply(errJSON("REJECTED")),
		reply(errJSON("PARSE_ERROR")),
		reply(errJSON("PARSE_ERROR")),
		reply(errJSON("REJECTED")),
		reply(echoJSON("ok", "nic_list")),
	})
	if got := s.Requests(); got != uint64(len(frames)) {
		t.Fatalf("Requests() = %d, want %d", got, len(frames))
	}
}

func TestPythonMultipart(t *testing.T) {
	pydir := pyProto(t)
	s := startServer(t, Config{}, nil)
	res := runPeer(t, pydir, "multipart", s.Endpoint())
	checkJSON(t, "replies", res["replies"], []any{
		reply(errJSON("PARSE_ERROR")),
		reply(echoJSON("after", "nic_list")),
	})
}

func TestPythonHugeMessage(t *testing.T) {
	pydir := pyProto(t)
	for _, tc := range []struct {
		name string
		max  int64
		size int
	}{
		{"1MiB limit", 1 << 20, 2 << 20},
		{"default limit", 0, DefaultMaxMessageSize + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, Config{MaxMessageSize: tc.max}, nil)
			res := runPeer(t, pydir, "huge", s.Endpoint(), itoa(tc.size))
			if res["huge"] != "timeout" {
				t.Fatalf("oversized request got %v, want no reply (connection dropped)", res["huge"])
			}
			checkJSON(t, "normal client", res["normal"], reply(echoJSON("small", "nic_list")))
			checkJSON(t, "later client", res["after"], reply(echoJSON("after", "nic_list")))
			if got := s.Requests(); got != 2 {
				t.Fatalf("Requests() = %d, want 2 (the oversized request never reaches the server)", got)
			}
		})
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestPythonSilentPeers(t *testing.T) {
	pydir := pyProto(t)
	s := startServer(t, Config{}, nil)
	res := runPeer(t, pydir, "silent", s.Endpoint())
	want := make([]any, 5)
	for i := range want {
		want[i] = reply(echoJSON("s"+itoa(i), "nic_list"))
	}
	checkJSON(t, "replies", res["replies"], want)
	if res["silent"] != "open" {
		t.Errorf("silent raw TCP peer: %v, want still connected", res["silent"])
	}
	if sec := res["seconds"].(float64); sec > 3 {
		t.Errorf("5 requests beside silent peers took %.2f s", sec)
	}
}

func TestPythonConcurrentClients(t *testing.T) {
	pydir := pyProto(t)
	s := startServer(t, Config{}, nil)
	const clients, per = 100, 5
	res := runPeer(t, pydir, "concurrent", s.Endpoint(), itoa(clients), itoa(per))
	if ok := res["ok"].(float64); ok != clients*per {
		t.Fatalf("%v of %d requests answered correctly; errors: %v", ok, clients*per, res["errors"])
	}
	if got := s.Requests(); got != clients*per {
		t.Fatalf("Requests() = %d, want %d", got, clients*per)
	}
	t.Logf("%d clients x %d requests in %.2f s", clients, per, res["seconds"])
}

func TestPythonEncrypted(t *testing.T) {
	pydir := pyProto(t)
	key := testKey()
	s := startServer(t, Config{Key: key}, nil)
	res := runPeer(t, pydir, "encrypted", s.Endpoint(), hex.EncodeToString(key))
	if reason, ok := res["skip"]; ok {
		t.Skip(reason)
	}
	checkJSON(t, "decrypted reply", res["inner"],
		reply(echoJSON("x1", "nic_list"), errJSON("VERSION_NOT_MANAGED"), echoJSON("x2", "sg_list")))
	checkJSON(t, "clear request", res["clear"], reply(errJSON("REJECTED")))
}
