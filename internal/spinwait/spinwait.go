// Package spinwait waits for a condition that another thread makes true
// within microseconds, such as a busy packet worker reaching the end of
// its batch: it checks in a loop, yielding the CPU to other threads, then
// naps on the OS thread between checks. A Go timer of a few microseconds
// can take a millisecond or more to fire in a process with nothing else
// to do (the runtime waits for timers in epoll, whose timeouts are in
// milliseconds).
package spinwait

import (
	"time"

	"golang.org/x/sys/unix"
)

const (
	// spin is how long Until checks in a loop before it naps.
	spin = 200 * time.Microsecond
	// nap is the time Until sleeps between checks after spin.
	nap = 20 * time.Microsecond
)

// Until returns true as soon as done does; it returns false if the
// deadline passes first (a zero deadline: never).
func Until(done func() bool, deadline time.Time) bool {
	start := time.Now()
	for !done() {
		now := time.Now()
		switch {
		case now.Sub(start) < spin:
			// The thread waited for may be runnable on this very CPU
			// (a busy worker preempted by this one): sched_yield lets
			// it run, where runtime.Gosched would only run goroutines.
			unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
		case !deadline.IsZero() && now.After(deadline):
			return false
		default:
			unix.Nanosleep(&unix.Timespec{Nsec: int64(nap)}, nil)
		}
	}
	return true
}
