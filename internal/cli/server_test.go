package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/apiserver"
	"github.com/butterfly-go/butterfly/internal/apiv0"
	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/model/modeltest"
)

// Fixed clock of the test daemons, so that status output is stable.
var (
	testStart = time.Unix(1700000000, 0)
	testNow   = time.Unix(1700000042, 0)
)

// testServer is an in-process butterflyd API: apiserver + apiv0 + model on
// a fake dataplane, bound to an ipc endpoint in a temporary directory.
type testServer struct {
	endpoint string
	dp       *modeltest.Dataplane
	store    *model.Store
	srv      *apiserver.Server
	done     chan error
	cancel   context.CancelFunc
}

type serverOpts struct {
	key []byte
	// vhostClient is the daemon's default vhost-user mode.
	vhostClient bool
	// cluster, when set, puts the daemon in cluster mode.
	cluster apiv0.Cluster
}

func startServer(t *testing.T, o serverOpts) *testServer {
	t.Helper()
	dir := t.TempDir()
	dp := modeltest.NewDataplane()
	dp.SetSocketDir("/run/butterfly")
	dp.SetDOT("strict graph G {\n  rankdir=LR\n}")
	store := model.New(dp, model.Options{
		DefaultTracePath:   func(id string) string { return "/tmp/butterfly-test-" + id + ".pcap" },
		DefaultVhostClient: o.vhostClient,
	})
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{
		endpoint: "ipc://" + filepath.Join(dir, "api.sock"),
		dp:       dp,
		store:    store,
		done:     make(chan error, 1),
		cancel:   cancel,
	}
	h := apiv0.New(store, apiv0.Options{
		Logger:    slog.New(slog.DiscardHandler),
		Quit:      cancel,
		Requests:  func() uint64 { return ts.srv.Requests() },
		StartTime: testStart,
		Now:       func() time.Time { return testNow },
		Cluster:   o.cluster,
	})
	srv, err := apiserver.New(apiserver.Config{Endpoint: ts.endpoint, Key: o.key, Logger: slog.New(slog.DiscardHandler)}, h)
	if err != nil {
		t.Fatalf("apiserver.New: %v", err)
	}
	ts.srv = srv
	go func() { ts.done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ts.done:
		case <-time.After(5 * time.Second):
			t.Errorf("server did not stop")
		}
		_ = srv.Close()
	})
	return ts
}

// result is the outcome of one CLI run.
type result struct {
	stdout, stderr string
	code           int
}

// run runs the CLI against ts with a 5 s timeout.
func (ts *testServer) run(args ...string) result {
	full := append(append([]string(nil), args...), "-e", ts.endpoint, "-t", "5000")
	var out, errb bytes.Buffer
	code := runCLI(full, &out, &errb)
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

// mustRun runs the CLI and fails the test unless it exits 0.
func (ts *testServer) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	r := ts.run(args...)
	if r.code != 0 {
		t.Fatalf("butterfly %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// quoteArgs renders a command line for golden files.
func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'") {
			q[i] = fmt.Sprintf("%q", a)
		} else {
			q[i] = a
		}
	}
	return strings.Join(q, " ")
}

// runCLI is Run without a default key file, so that the tests do not
// depend on this machine's /etc/butterfly/api.key.
func runCLI(args []string, stdout, stderr io.Writer) int { return run(args, stdout, stderr, "") }
