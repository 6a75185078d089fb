package labtest

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// InNS runs f on a dedicated OS thread that has joined the network
// namespace ns, so that the sockets f creates live there. Sockets keep
// their namespace afterwards and may be used from any goroutine. The
// thread never switches back: it stays locked to the goroutine that ran f
// and exits with it, so neither the caller nor any other goroutine ever
// runs in ns, whatever f did to the thread.
func InNS(ns string, f func() error) error {
	target, err := os.Open("/var/run/netns/" + ns)
	if err != nil {
		return fmt.Errorf("netns %s: %w", ns, err)
	}
	defer target.Close()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		done <- f()
	}()
	return <-done
}
