package main

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// coreRoundTrip returns the mean time a cache line takes to go from CPU a
// to CPU b and back: two threads, one pinned to each, take turns writing
// a counter the other waits for. On this project's virtual machines the
// host places the two vCPUs where it likes and moves them: on cores that
// share a cache the round trip is about 110 to 160 ns, else about 450 ns.
// Every shared-memory ring (vhost-user, the endpoint's virtio_user) pays
// it per cache line exchanged, so the vhost section's rates follow it;
// the section records it with each case.
func coreRoundTrip(a, b int, rounds uint64) (time.Duration, error) {
	type line struct {
		v atomic.Uint64
		_ [56]byte // alone on its cache line
	}
	var x line
	pin := func(cpu int) error {
		runtime.LockOSThread()
		var s unix.CPUSet
		s.Set(cpu)
		if err := unix.SchedSetaffinity(0, &s); err != nil {
			return fmt.Errorf("pin to CPU %d: %w", cpu, err)
		}
		return nil
	}
	errc := make(chan error, 1)
	go func() {
		// The thread stays locked: it exits with the goroutine, pinned.
		if err := pin(b); err != nil {
			x.v.Store(^uint64(0))
			errc <- err
			return
		}
		for i := uint64(1); i <= rounds; i++ {
			for x.v.Load() != 2*i-1 {
				if x.v.Load() == ^uint64(0) {
					errc <- nil
					return
				}
			}
			x.v.Store(2 * i)
		}
		errc <- nil
	}()
	done := make(chan struct{})
	var took time.Duration
	var err error
	go func() {
		defer close(done)
		if err = pin(a); err != nil {
			x.v.Store(^uint64(0))
			return
		}
		start := time.Now()
		for i := uint64(1); i <= rounds; i++ {
			x.v.Store(2*i - 1)
			for v := x.v.Load(); v != 2*i; v = x.v.Load() {
				if v == ^uint64(0) {
					return
				}
			}
		}
		took = time.Since(start)
	}()
	<-done
	if errB := <-errc; err == nil {
		err = errB
	}
	if err != nil {
		return 0, err
	}
	return took / time.Duration(rounds), nil
}
