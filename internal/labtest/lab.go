// Package labtest builds throw-away networks for Butterfly's end-to-end tests
// and benchmarks: "hosts" (network namespaces running one butterflyd each,
// joined by a veth underlay), "VMs" (namespaces holding the TAP vNICs the
// daemons create, moved there and renamed eth0), and the processes and
// files around them.
//
// A Lab works on behalf of a testing.TB: failures go to its Fatal, and
// everything the lab creates is removed by the TB's Cleanup: namespaces
// deleted, daemons and other processes it started stopped by PID, its
// scratch directory removed. Namespace names are "<prefix><pid>x<n>-*",
// unique per process and per lab, so labs can run in parallel. The
// benchmark program (scripts/bench) drives a Lab through a TB of its own.
package labtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Deadlines used when polling for a condition.
const (
	SettleTimeout = 15 * time.Second // something that must become true
	CmdTimeout    = 30 * time.Second // any single command
)

// Binaries are the programs under test.
type Binaries struct {
	Daemon string // butterflyd
	CLI    string // butterfly
}

// Build compiles butterflyd and butterfly from the module at root into dir.
func Build(root, dir string) (Binaries, error) {
	b := Binaries{Daemon: filepath.Join(dir, "butterflyd"), CLI: filepath.Join(dir, "butterfly")}
	for _, p := range []struct{ out, pkg string }{{b.Daemon, "./cmd/butterflyd"}, {b.CLI, "./cmd/butterfly"}} {
		if err := GoBuild(root, p.out, p.pkg); err != nil {
			return Binaries{}, err
		}
	}
	return b, nil
}

// GoBuild builds pkg (relative to the module root) into out.
func GoBuild(root, out, pkg string) error {
	goBin := "go"
	if _, err := exec.LookPath("go"); err != nil {
		goBin = "/usr/local/go/bin/go" // the documented install location
	}
	cmd := exec.Command(goBin, "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// labSeq numbers labs within this process so that namespace names stay
// unique when labs run in parallel.
var labSeq atomic.Int64

// Lab is one test's (or benchmark case's) world: a name prefix for its
// namespaces, a scratch directory, and the binaries its hosts run.
type Lab struct {
	T      testing.TB
	Prefix string // unique: "<prefix><pid>x<seq>"
	Dir    string // scratch directory, removed at cleanup
	Bin    Binaries
}

// New returns a fresh lab whose namespaces are named prefix<pid>x<n>-*.
// Its scratch directory is short: ipc:// endpoints are unix sockets (108
// bytes max).
func New(t testing.TB, bin Binaries, prefix string) *Lab {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return &Lab{T: t, Prefix: fmt.Sprintf("%s%dx%d", prefix, os.Getpid(), labSeq.Add(1)), Dir: dir, Bin: bin}
}

// Run runs a command with a deadline and returns its combined output.
func Run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), CmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Must runs a command and fails t if it fails.
func Must(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := Run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Poll calls f every 50 ms until it returns nil or the timeout passes,
// then returns f's last error.
func Poll(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Eventually fails t unless f returns nil before the timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	if err := Poll(timeout, f); err != nil {
		t.Fatalf("%s: still failing after %v: %v", what, timeout, err)
	}
}

// NetNS creates a namespace named prefix-suffix with loopback up, deleted
// at cleanup.
func (l *Lab) NetNS(suffix string) string {
	l.T.Helper()
	name := l.Prefix + "-" + suffix
	Must(l.T, "ip", "netns", "add", name)
	l.T.Cleanup(func() {
		if out, err := Run("ip", "netns", "del", name); err != nil {
			l.T.Logf("cleanup: %v %s", err, out)
		}
	})
	Must(l.T, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// Veth joins namespace nsA (interface nameA) and nsB (nameB) with a veth
// pair of the given MTU (0: the kernel's default). The pair goes with the
// namespaces.
func (l *Lab) Veth(nsA, nameA, nsB, nameB string, mtu int) {
	l.T.Helper()
	args := []string{"-n", nsA, "link", "add", nameA}
	if mtu > 0 {
		args = append(args, "mtu", fmt.Sprint(mtu))
	}
	args = append(args, "type", "veth", "peer", "name", nameB, "netns", nsB)
	if mtu > 0 {
		args = append(args, "mtu", fmt.Sprint(mtu))
	}
	Must(l.T, "ip", args...)
}

// Process is a program a lab started; Stop signals it by its PID.
type Process struct {
	What   string
	Cmd    *exec.Cmd
	Exited chan struct{} // closed once the process has exited
}

// StartProcess starts cmd and returns it as a Process. It does not stop
// it at cleanup: the caller decides when (see Stop).
func StartProcess(what string, cmd *exec.Cmd) (*Process, error) {
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", what, err)
	}
	p := &Process{What: what, Cmd: cmd, Exited: make(chan struct{})}
	go func() { cmd.Wait(); close(p.Exited) }()
	return p, nil
}

// PID is the process id.
func (p *Process) PID() int { return p.Cmd.Process.Pid }

// Running reports whether the process has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.Exited:
		return false
	default:
		return true
	}
}

// Stop sends sig to the process and waits until it exits; after 10 s it
// reports an error to t and kills it.
func (p *Process) Stop(t testing.TB, sig syscall.Signal) {
	StopProcess(t, p.What, p.Cmd, p.Exited, sig)
}

// StopProcess sends sig to the process cmd started and waits until
// exited is closed; after 10 s it reports an error and kills it.
func StopProcess(t testing.TB, what string, cmd *exec.Cmd, exited <-chan struct{}, sig syscall.Signal) {
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Errorf("%s (pid %d) ignored %v for 10 s; killing it", what, cmd.Process.Pid, sig)
		_ = cmd.Process.Kill()
		<-exited
	}
}

// LastLine is the last non-empty line of s, trimmed.
func LastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// MACFor builds a locally administered unicast MAC from a small number.
func MACFor(n int) string {
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", (n>>16)&0xff, (n>>8)&0xff, n&0xff)
}

// Parallel runs fs concurrently and returns their errors joined.
func Parallel(fs ...func() error) error {
	errs := make([]error, len(fs))
	var wg sync.WaitGroup
	for i, f := range fs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
