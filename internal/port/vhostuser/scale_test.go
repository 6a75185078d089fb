package vhostuser

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port/vhostuser/vhosttest"
	"golang.org/x/sys/unix"
)

// osThreads returns this process's OS thread count (/proc/self/status).
func osThreads(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := bytes.CutPrefix(sc.Bytes(), []byte("Threads:")); ok {
			n, err := strconv.Atoi(string(bytes.TrimSpace(v)))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads line in /proc/self/status")
	return 0
}

// maxThreads samples the OS thread count every 10 ms for d and returns
// the largest: a goroutine that blocks a thread in a system call takes
// a little while to make the runtime start another one.
func maxThreads(t *testing.T, d time.Duration) int {
	t.Helper()
	m := osThreads(t)
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		m = max(m, osThreads(t))
	}
	return m
}

// TestIdlePortsCost: idle vhost-user ports, server and client mode, hold
// no OS thread and at most 3 fds each; connected ports among them (both
// modes) carry frames, and Close releases everything promptly.
func TestIdlePortsCost(t *testing.T) {
	const (
		idle      = 300 // per mode
		connected = 4   // per mode
		// threadSlack is what the runtime may add on its own (GC
		// workers, sysmon, a thread parked in a short system call).
		threadSlack = 16
	)
	dir := t.TempDir()
	quiet := Options{Logger: slog.New(slog.DiscardHandler)}
	threads0, fds0 := maxThreads(t, 100*time.Millisecond), vhosttest.OpenFds(t)
	var ports []*Port
	closeAll := func() {
		for _, p := range ports {
			p.Close()
		}
		ports = nil
	}
	defer closeAll()
	for i := range idle {
		s, err := Listen(filepath.Join(dir, fmt.Sprintf("s%d.sock", i)), quiet)
		if err != nil {
			t.Fatal(err)
		}
		c, err := Dial(filepath.Join(dir, fmt.Sprintf("c%d.sock", i)), quiet)
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, s, c)
	}
	threads1, fds1 := maxThreads(t, 500*time.Millisecond), vhosttest.OpenFds(t)
	t.Logf("%d idle ports (%d server, %d client): OS threads %d -> %d, fds %d -> %d (%.2f per port)",
		2*idle, idle, idle, threads0, threads1, fds0, fds1, float64(fds1-fds0)/float64(2*idle))

	// A few of them get a front end, which sets up the rings and sends
	// a frame: server-mode ports are dialed, client-mode ports dial a
	// listener of the test's.
	var fes []*frontEnd
	var live []*Port
	for i := range connected {
		p := ports[2*i]
		f := dialFrontEnd(t, p)
		fes, live = append(fes, f), append(live, p)
	}
	for i := range connected {
		sock := filepath.Join(dir, fmt.Sprintf("fe%d.sock", i))
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		p, err := Dial(sock, quiet)
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, p)
		ln.SetDeadline(time.Now().Add(5 * time.Second))
		c, err := ln.AcceptUnix()
		if err != nil {
			t.Fatal(err)
		}
		fes, live = append(fes, newFrontEnd(t, c)), append(live, p)
	}
	for i, f := range fes {
		f.setup()
		if !live[i].Ready() {
			t.Fatalf("front end %d: rings not running after setup", i)
		}
		f.g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(60, byte(i))...), 4096)
		unix.Write(f.kick[1], binary.LittleEndian.AppendUint64(nil, 1))
		if got := readFrames(live[i], 1, 5*time.Second); got != 1 {
			t.Fatalf("front end %d: port read %d frames, want 1", i, got)
		}
	}
	threads2 := maxThreads(t, 500*time.Millisecond)
	t.Logf("with %d front ends connected: OS threads %d", len(fes), threads2)

	if threads1-threads0 >= threadSlack || threads2-threads0 >= threadSlack {
		t.Errorf("OS threads grew from %d to %d (idle) and %d (connected), want less than %d more: ports must not hold threads",
			threads0, threads1, threads2, threadSlack)
	}
	if fds1-fds0 > 3*2*idle {
		t.Errorf("%d idle ports opened %d fds, want at most 3 each", 2*idle, fds1-fds0)
	}

	start := time.Now()
	closeAll()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("closing %d ports took %v", 2*idle+connected, d)
	}
	for i, f := range fes {
		f.c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := f.c.Read(make([]byte, 1)); err == nil {
			t.Errorf("front end %d: connection still open after Close", i)
		}
	}
	t.Logf("closed %d ports in %v", 2*idle+connected, time.Since(start).Round(time.Millisecond))
}
