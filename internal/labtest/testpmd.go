package labtest

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Testpmd is an interactive dpdk-testpmd this lab started: commands go to
// its standard input, its output to a log file.
type Testpmd struct {
	lab    *Lab
	proc   *Process
	stdin  io.WriteCloser
	Log    string // path of its output
	prefix string // DPDK runtime directory under /var/run/dpdk
}

// StartTestpmd runs "dpdk-testpmd --lcores LCORES --no-pci --no-huge -m
// 1024 ARGS..." with a DPDK file prefix of its own, output in logPath, and
// waits for its prompt. At cleanup it is told to quit, killed by PID after
// 5 s, and its runtime files are removed.
func (l *Lab) StartTestpmd(name, lcores, logPath string, args ...string) (*Testpmd, error) {
	bin, err := exec.LookPath("dpdk-testpmd")
	if err != nil {
		return nil, fmt.Errorf("dpdk-testpmd: %w", err)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("testpmd log: %w", err)
	}
	defer logf.Close()
	tp := &Testpmd{lab: l, Log: logPath, prefix: l.Prefix + "-" + name}
	all := append([]string{"-o0", bin, "--lcores", lcores, "--no-pci", "--no-huge", "-m", "1024",
		"--file-prefix=" + tp.prefix, "--log-level=lib.eal:error"}, args...)
	// stdbuf: testpmd's printf output would otherwise sit in a pipe buffer.
	cmd := exec.Command("stdbuf", all...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if tp.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("testpmd stdin: %w", err)
	}
	if tp.proc, err = StartProcess("testpmd "+name, cmd); err != nil {
		return nil, err
	}
	l.T.Cleanup(tp.Quit)
	if err := tp.WaitCount("testpmd> ", 1, 30*time.Second); err != nil {
		return nil, err
	}
	return tp, nil
}

// PID is the process id of testpmd.
func (tp *Testpmd) PID() int { return tp.proc.Cmd.Process.Pid }

// Command sends one line to testpmd's prompt.
func (tp *Testpmd) Command(line string) error {
	if !tp.proc.Running() {
		return fmt.Errorf("%s exited", tp.proc.What)
	}
	_, err := io.WriteString(tp.stdin, line+"\n")
	return err
}

// Output is everything testpmd printed so far.
func (tp *Testpmd) Output() string {
	b, _ := os.ReadFile(tp.Log)
	return string(b)
}

// WaitCount waits until testpmd's output holds s at least n times.
func (tp *Testpmd) WaitCount(s string, n int, timeout time.Duration) error {
	return Poll(timeout, func() error {
		if c := strings.Count(tp.Output(), s); c < n {
			if !tp.proc.Running() {
				return fmt.Errorf("%s exited (see %s)", tp.proc.What, tp.Log)
			}
			return fmt.Errorf("%s: %q seen %d times, want %d (see %s)", tp.proc.What, s, c, n, tp.Log)
		}
		return nil
	})
}

// Quit asks testpmd to quit, kills it (by PID) after 5 s and removes its
// runtime directory. It is a no-op the second time.
func (tp *Testpmd) Quit() {
	if tp.proc.Running() {
		_ = tp.Command("quit")
		_ = Poll(5*time.Second, func() error {
			if tp.proc.Running() {
				return fmt.Errorf("running")
			}
			return nil
		})
		if tp.proc.Running() {
			tp.proc.Stop(tp.lab.T, syscall.SIGKILL)
		}
	}
	<-tp.proc.Exited
	tp.stdin.Close()
	os.RemoveAll("/var/run/dpdk/" + tp.prefix)
}
