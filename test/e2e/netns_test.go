package e2e

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// nsInode returns the inode of the network namespace of the calling
// goroutine's thread (or of path when set).
func nsInode(path string) (uint64, error) {
	if path == "" {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		path = "/proc/thread-self/ns/net"
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return fi.Sys().(*syscall.Stat_t).Ino, nil
}

// dropSysAdmin removes CAP_SYS_ADMIN from the calling thread's effective
// capabilities (capabilities are per thread): the thread can no longer
// switch namespaces.
func dropSysAdmin() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	data[0].Effective &^= 1 << unix.CAP_SYS_ADMIN
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}

// TestInNS checks that f runs in the namespace and that the caller never
// does, even when f leaves its thread unable to switch back (here it
// drops CAP_SYS_ADMIN, so a setns back to the caller's namespace fails).
func TestInNS(t *testing.T) {
	l := newLab(t)
	ns := l.NetNS("inns")
	home, err := nsInode("")
	if err != nil {
		t.Fatal(err)
	}
	want, err := nsInode("/var/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		f    func() error
	}{
		{"plain", func() error { return nil }},
		{"thread cannot switch back", dropSysAdmin},
	}
	for _, tt := range tests {
		var in uint64
		err := labtest.InNS(ns, func() error {
			var err error
			if in, err = nsInode(""); err != nil {
				return err
			}
			return tt.f()
		})
		t.Logf("%s: inNS: %v", tt.name, err)
		if in != want {
			t.Errorf("%s: f ran in namespace %d, want %d (%s)", tt.name, in, want, ns)
		}
		if got, err := nsInode(""); err != nil || got != home {
			t.Fatalf("%s: the caller is in namespace %d (%v) after inNS, want its own (%d)", tt.name, got, err, home)
		}
	}
}
