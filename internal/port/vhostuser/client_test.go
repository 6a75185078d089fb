package vhostuser

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/port/vhostuser/vhosttest"
	"golang.org/x/sys/unix"
)

func dialTest(t *testing.T, sock string) *Port {
	t.Helper()
	p, err := Dial(sock, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// readFrames polls p until it has read want frames or d has passed, and
// returns how many it read.
func readFrames(p *Port, want int, d time.Duration) int {
	bufs := newBufs(64)
	got := 0
	deadline := time.Now().Add(d)
	for got < want && time.Now().Before(deadline) {
		for _, b := range bufs {
			b.Reset()
		}
		n, _ := p.ReadBatch(bufs)
		if n == 0 {
			time.Sleep(50 * time.Microsecond)
		}
		got += n
	}
	return got
}

func waitNotReady(t *testing.T, p *Port, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.Ready() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: rings still running", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestClientTestpmdServer: in client mode the port connects to a testpmd
// virtio_user port in server mode and receives its frames; a new port on
// the same socket (a restarted back end) is accepted by the same testpmd
// process and traffic resumes; a restarted testpmd is reconnected to by
// the port by itself. Closing a client port leaves testpmd's socket.
func TestClientTestpmdServer(t *testing.T) {
	vhosttest.Need(t)
	sock := filepath.Join(t.TempDir(), "vhu.sock")
	// The port dials before the socket exists: it must keep retrying.
	p1 := dialTest(t, sock)
	if !p1.Client() {
		t.Fatal("Dial made a server-mode port")
	}
	tp := vhosttest.Start(t, sock, "txonly", vhosttest.Options{Server: true})
	waitReady(t, p1)
	tp.Command("start")
	if got := readFrames(p1, 10000, 5*time.Second); got < 10000 {
		t.Fatalf("first back end: read %d frames, want 10000", got)
	}
	if s := p1.Stats(); s.Connections != 1 || s.Broken != 0 {
		t.Fatalf("first back end stats %+v", s)
	}
	p1.Close()
	if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("closing the client port touched testpmd's socket: %v", err)
	}

	// A restarted back end: same socket, same testpmd process.
	start := time.Now()
	p2 := dialTest(t, sock)
	waitReady(t, p2)
	if got := readFrames(p2, 10000, 5*time.Second); got < 10000 {
		t.Fatalf("back end restart: read %d frames, want 10000", got)
	}
	t.Logf("back end restart: traffic again after %v", time.Since(start).Round(time.Millisecond))
	if err := unix.Kill(tp.Pid(), 0); err != nil {
		t.Fatalf("testpmd (pid %d) did not survive the back end restart: %v", tp.Pid(), err)
	}

	// A restarted front end: testpmd quits (the rings stop) and a new
	// one on the same path is found by the same port.
	tp.Kill()
	waitNotReady(t, p2, "testpmd quit")
	start = time.Now()
	tp2 := vhosttest.Start(t, sock, "txonly", vhosttest.Options{Server: true})
	waitReady(t, p2)
	tp2.Command("start")
	if got := readFrames(p2, 10000, 5*time.Second); got < 10000 {
		t.Fatalf("front end restart: read %d frames, want 10000", got)
	}
	t.Logf("front end restart: traffic again after %v", time.Since(start).Round(time.Millisecond))
	if s := p2.Stats(); s.Connections != 2 || s.Broken != 0 {
		t.Fatalf("second back end stats %+v, want 2 connections", s)
	}
}

// TestClientRetry: a client port whose socket is missing keeps trying
// and connects within the backoff bound once it appears; a front end
// that accepts and hangs up at once (never starting a ring) is dialed at
// most about once a second, not in a tight loop.
func TestClientRetry(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "fe.sock")
	p, err := Dial(sock, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// After 1.5 s of failed dials the wait has reached its 1 s bound.
	time.Sleep(1500 * time.Millisecond)
	if s := p.Stats(); s.Connections != 0 {
		t.Fatalf("connected to a missing socket: %+v", s)
	}
	ln, _, err := listenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start := time.Now()
	accepts := 0
	var first time.Duration
	const window = 3 * time.Second
	for time.Since(start) < window {
		ln.SetDeadline(time.Now().Add(100 * time.Millisecond))
		c, err := ln.Accept()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if accepts == 0 {
			first = time.Since(start)
		}
		accepts++
		c.Close()
	}
	if accepts == 0 || first > dialRetryMax+300*time.Millisecond {
		t.Fatalf("first connection after %v (%d in %v), want within %v", first, accepts, window, dialRetryMax)
	}
	// One dial per second at most, plus the first: 4 in 3 s; without
	// backoff it would be 30 (every dialRetryMin).
	if accepts > 5 {
		t.Fatalf("%d dials in %v to a front end that hangs up at once", accepts, window)
	}
	t.Logf("first connection after %v; %d connections in %v", first.Round(time.Millisecond), accepts, window)
}

// TestClientCloseWhileWaiting: Close returns promptly whether the port
// is waiting between dials or in a session, and never removes the path.
func TestClientCloseWhileWaiting(t *testing.T) {
	for _, tc := range []struct {
		name   string
		listen bool
	}{{"waiting", false}, {"connected", true}} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "fe.sock")
			var ln *net.UnixListener
			if tc.listen {
				var err error
				if ln, _, err = listenUnix(sock); err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
			}
			p, err := Dial(sock, Options{})
			if err != nil {
				t.Fatal(err)
			}
			var conn *net.UnixConn
			if tc.listen {
				if conn, err = ln.AcceptUnix(); err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
			} else {
				time.Sleep(300 * time.Millisecond) // into the backoff
			}
			start := time.Now()
			p.Close()
			if d := time.Since(start); d > 200*time.Millisecond {
				t.Fatalf("Close took %v", d)
			}
			_, err = os.Stat(sock)
			if tc.listen && err != nil {
				t.Fatalf("Close removed the front end's socket: %v", err)
			}
			if !tc.listen && !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a socket appeared: %v", err)
			}
			if tc.listen {
				// The front end sees the hang-up.
				var b [1]byte
				conn.SetReadDeadline(time.Now().Add(time.Second))
				if n, err := conn.Read(b[:]); n != 0 || err != io.EOF {
					t.Fatalf("front end read after Close: %d, %v; want EOF", n, err)
				}
			}
		})
	}
}
