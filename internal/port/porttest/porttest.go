// Package porttest holds helpers for the root-only tests of the port
// packages: network namespaces a test creates, and running code inside
// them.
package porttest

import (
	"os/exec"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// NewNS creates the network namespace name and returns a handle on it.
// The handle is closed and the namespace deleted at the end of the test;
// a failure to create either ends the test.
func NewNS(t testing.TB, name string) netns.NsHandle {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// InNS runs fn on an OS thread switched into namespace h and returns its
// error. The thread stays locked and is discarded when fn returns, so no
// other goroutine ever runs in h.
func InNS(h netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}
