package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"testing"
)

// caseT is the testing.TB the lab harness reports to while the benchmark
// runs one case: Fatal ends the case (its goroutine), Cleanup functions
// run when the case ends, in reverse order, like a test's.
type caseT struct {
	// testing.TB is nil: it only supplies the interface's unexported
	// method; every method the lab and vhosttest call is defined below.
	testing.TB
	name string

	mu       sync.Mutex
	cleanups []func()
	failed   bool
}

// Helper does nothing: lines are not reported.
func (c *caseT) Helper() {}

// Name is the case's name.
func (c *caseT) Name() string { return c.name }

// Cleanup registers f to run when the case ends.
func (c *caseT) Cleanup(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cleanups = append(c.cleanups, f)
}

// Log prints to standard error, prefixed with the case's name.
func (c *caseT) Log(args ...any) {
	fmt.Fprintln(os.Stderr, append([]any{"bench: " + c.name + ":"}, args...)...)
}

// Logf prints to standard error, prefixed with the case's name.
func (c *caseT) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: %s: %s\n", c.name, fmt.Sprintf(format, args...))
}

// Error logs and marks the case failed.
func (c *caseT) Error(args ...any) { c.Log(args...); c.fail() }

// Errorf logs and marks the case failed.
func (c *caseT) Errorf(format string, args ...any) {
	c.Logf(format, args...)
	c.fail()
}

// Fatal logs, marks the case failed and ends it.
func (c *caseT) Fatal(args ...any) { c.Error(args...); runtime.Goexit() }

// Fatalf logs, marks the case failed and ends it.
func (c *caseT) Fatalf(format string, args ...any) {
	c.Errorf(format, args...)
	runtime.Goexit()
}

// FailNow marks the case failed and ends it.
func (c *caseT) FailNow() { c.fail(); runtime.Goexit() }

// Fail marks the case failed.
func (c *caseT) Fail() { c.fail() }

// Skip logs and ends the case, which counts as failed (its figures are missing).
func (c *caseT) Skip(args ...any) {
	c.Log(append([]any{"skipped:"}, args...)...)
	c.fail()
	runtime.Goexit()
}

// SkipNow is Skip without a message.
func (c *caseT) SkipNow() { c.Skip() }

// Skipf is Skip with a format.
func (c *caseT) Skipf(f string, args ...any) { c.Skip(fmt.Sprintf(f, args...)) }

func (c *caseT) fail() {
	c.mu.Lock()
	c.failed = true
	c.mu.Unlock()
}

// Failed reports whether the case failed.
func (c *caseT) Failed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed
}

// runCleanups runs (once) the cleanup functions registered so far, last first.
func (c *caseT) runCleanups() {
	c.mu.Lock()
	fs := c.cleanups
	c.cleanups = nil
	c.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// caseRunner runs one case at a time and knows which one runs, so that a
// signal can clean it up.
type caseRunner struct {
	mu      sync.Mutex
	current *caseT
}

func newCaseRunner() *caseRunner { return &caseRunner{} }

// run runs f as case name in a goroutine of its own, then its cleanups; it
// reports whether f returned without failing.
func (r *caseRunner) run(name string, f func(t *caseT)) bool {
	t := &caseT{name: name}
	r.mu.Lock()
	r.current = t
	r.mu.Unlock()
	done := make(chan bool)
	go func() {
		ok := false
		defer func() { done <- ok }()
		f(t)
		ok = true
	}()
	ok := <-done
	t.runCleanups()
	r.mu.Lock()
	r.current = nil
	r.mu.Unlock()
	return ok && !t.Failed()
}

// cleanupOnSignal makes sigs clean up the running case and exit with
// status 130; the returned function undoes it.
func (r *caseRunner) cleanupOnSignal(sigs ...os.Signal) func() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sigs...)
	stop := make(chan struct{})
	go func() {
		select {
		case <-ch:
			r.mu.Lock()
			t := r.current
			r.mu.Unlock()
			if t != nil {
				t.runCleanups()
			}
			os.Exit(130)
		case <-stop:
		}
	}()
	return func() { signal.Stop(ch); close(stop) }
}
