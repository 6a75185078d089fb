package vhosttest

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port/vhostuser"
)

// eventually polls cond every 10 ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
	}
}

// TestFrontEndBringsPortUp: Dial returns with the port's rings running
// (a frame written to the port lands in a posted receive buffer), Close
// is seen by the port and releases every fd on both sides, and the port
// serves the next front end.
func TestFrontEndBringsPortUp(t *testing.T) {
	p, err := vhostuser.Listen(filepath.Join(t.TempDir(), "vh.sock"), vhostuser.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	fds0 := OpenFds(t)
	for round := 1; round <= 2; round++ {
		f, err := Dial(p.Path())
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if !p.Ready() {
			f.Close()
			t.Fatalf("round %d: port not ready when Dial returned", round)
		}
		if got := p.Stats().Connections; got != uint64(round) {
			t.Errorf("round %d: port counted %d connections", round, got)
		}
		b := packet.NewBuf()
		b.SetLen(60)
		if sent, dropped, err := p.WriteBatch([]*packet.Buf{b}); sent != 1 || err != nil {
			t.Errorf("round %d: WriteBatch sent %d, dropped %d, err %v", round, sent, dropped, err)
		}
		// The used ring of ring 0: idx, then (id, len) entries; len
		// counts the 12-byte virtio-net header of a VERSION_1 device.
		used := f.mem[usedOff:]
		if idx, id, n := binary.LittleEndian.Uint16(used[2:]), binary.LittleEndian.Uint32(used[4:]), binary.LittleEndian.Uint32(used[8:]); idx != 1 || id != 0 || n != 72 {
			t.Errorf("round %d: receive ring used idx %d, first entry id %d len %d; want 1, 0, 72", round, idx, id, n)
		}
		if err := f.Close(); err != nil {
			t.Fatalf("round %d: Close: %v", round, err)
		}
		eventually(t, 5*time.Second, "port sees the disconnect", func() bool { return !p.Ready() })
		eventually(t, 5*time.Second, "fds back to the count before Dial", func() bool { return OpenFds(t) == fds0 })
	}
}

// TestDialErrors: Dial fails with an error, and in bounded time, when
// nothing serves the path or the back end does not complete the setup.
func TestDialErrors(t *testing.T) {
	dir := t.TempDir()
	// serve accepts connections on a socket at name and hands each to
	// handle (closed when handle returns) until the test ends, which
	// waits for the handlers (each returns once Dial hung up).
	serve := func(t *testing.T, name string, handle func(c net.Conn)) string {
		path := filepath.Join(dir, name)
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		t.Cleanup(func() { ln.Close(); wg.Wait() })
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				wg.Go(func() {
					defer c.Close()
					handle(c)
				})
			}
		})
		return path
	}
	tests := []struct {
		name    string
		path    func(t *testing.T) string
		wantErr string
	}{
		{"nothing at the path", func(*testing.T) string { return filepath.Join(dir, "none.sock") }, "no such file"},
		{"socket without a listener", func(t *testing.T) string {
			path := filepath.Join(dir, "stale.sock")
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			ln.SetUnlinkOnClose(false)
			ln.Close()
			return path
		}, "connection refused"},
		{"back end that never answers", func(t *testing.T) string {
			return serve(t, "silent.sock", func(c net.Conn) { io.Copy(io.Discard, c) })
		}, "timeout"},
		{"back end that hangs up", func(t *testing.T) string {
			return serve(t, "hangup.sock", func(c net.Conn) { c.Close() })
		}, "closed the connection"},
		{"back end without VERSION_1", func(t *testing.T) string {
			return serve(t, "old.sock", func(c net.Conn) {
				h := make([]byte, hdrLen)
				if _, err := io.ReadFull(c, h); err != nil {
					return
				}
				r := binary.LittleEndian.AppendUint32(nil, reqGetFeatures)
				r = binary.LittleEndian.AppendUint32(r, hdrVersion|hdrReply)
				r = binary.LittleEndian.AppendUint32(r, 8)
				c.Write(binary.LittleEndian.AppendUint64(r, 1<<featProtocolFeatures))
				io.Copy(io.Discard, c)
			})
		}, "without VERSION_1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.path(t)
			start := time.Now()
			f, err := dial(path, 200*time.Millisecond)
			if err == nil {
				f.Close()
				t.Fatal("Dial succeeded")
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "vhost-user front end") {
				t.Errorf("error %q, want it to mention %q", err, tt.wantErr)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Dial took %v to fail", d)
			}
		})
	}
}
