package vhostuser

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// inode returns the inode of the file at path, or 0 if there is none.
func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		if os.IsNotExist(err) {
			return 0
		}
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// otherListener listens on path as another process would (QEMU in
// client mode on its side, or a second daemon); closing it leaves path.
func otherListener(t *testing.T, path string) *net.UnixListener {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	t.Cleanup(func() { ln.Close() })
	return ln
}

// accepts reports whether a connection to path is accepted by ln.
func accepts(t *testing.T, path string, ln *net.UnixListener) bool {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return false
	}
	defer c.Close()
	ln.SetDeadline(time.Now().Add(time.Second))
	a, err := ln.Accept()
	if err != nil {
		return false
	}
	a.Close()
	return true
}

// TestListenExistingPath: Listen replaces a stale socket nobody listens
// on, but refuses, naming the path and leaving it alone, a socket that
// something listens on or a file that is not a socket.
func TestListenExistingPath(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, path string) *net.UnixListener // the listener still on path, if any
		wantErr string                                            // "" = Listen succeeds
	}{
		{"stale socket", func(t *testing.T, path string) *net.UnixListener {
			otherListener(t, path).Close()
			return nil
		}, ""},
		{"live socket", func(t *testing.T, path string) *net.UnixListener {
			return otherListener(t, path)
		}, "listens on it"},
		{"regular file", func(t *testing.T, path string) *net.UnixListener {
			if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			return nil
		}, "bind"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "vhu.sock")
			other := tc.prepare(t, path)
			before := inode(t, path)
			p, err := Listen(path, Options{})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Listen over a %s: %v", tc.name, err)
				}
				defer p.Close()
				c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
				if err != nil {
					t.Fatalf("the port's socket refuses connections: %v", err)
				}
				c.Close()
				return
			}
			if err == nil {
				p.Close()
				t.Fatalf("Listen over a %s succeeded", tc.name)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q does not name %s and say %q", err, path, tc.wantErr)
			}
			if got := inode(t, path); got != before {
				t.Fatalf("the %s at %s was replaced (inode %d -> %d)", tc.name, path, before, got)
			}
			if other != nil && !accepts(t, path, other) {
				t.Fatal("the other listener no longer gets connections")
			}
		})
	}
}

// TestCloseKeepsOthersSocket: a port whose path was taken over by
// another socket (a second daemon, after the first one's socket was
// removed) leaves that socket alone when it closes.
func TestCloseKeepsOthersSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vhu.sock")
	p, err := Listen(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	other := otherListener(t, path)
	ino := inode(t, path)
	p.Close()
	if got := inode(t, path); got != ino {
		t.Fatalf("closing the port removed the socket it no longer owned (inode %d -> %d)", ino, got)
	}
	if !accepts(t, path, other) {
		t.Fatal("the other listener no longer gets connections")
	}
}
