// Package vhosttest provides vhost-user front ends ("the VM") for tests
// and benchmarks: Start runs DPDK testpmd with a virtio_user port on a
// socket, and FrontEnd is a minimal in-process front end that brings a
// virtio-net device up on a server-mode socket and holds it until Close.
package vhosttest

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Testpmd is a running testpmd process in interactive mode.
type Testpmd struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	mu     sync.Mutex
	out    bytes.Buffer
	prefix string
}

// Options are testpmd settings beyond the socket and forwarding mode.
type Options struct {
	// MAC is the virtio_user port's MAC address ("" = random).
	MAC string
	// EthPeer is the destination MAC of txonly frames ("" = testpmd's
	// default 02:00:00:00:00:00).
	EthPeer string
	// Server makes the virtio_user port the socket's server (DPDK's
	// "server=1"), for a back end in client mode: testpmd creates the
	// socket, waits for the back end to connect before its prompt, and
	// accepts it again after a disconnect.
	Server bool
	// Packed makes the virtio_user port use packed virtqueues (DPDK's
	// "packed_vq=1"); the back end must offer VIRTIO_F_RING_PACKED.
	Packed bool
	// Queues is the number of queue pairs of the virtio_user port
	// (DPDK's "queues=N", testpmd's --rxq and --txq; 0 = 1). testpmd
	// enables them all through the control queue it emulates.
	Queues int
	// MultiFlow makes txonly vary the source IP address of its frames
	// (testpmd's --txonly-multi-flow), so they belong to many flows.
	MultiFlow bool
}

type lockedWriter struct{ tp *Testpmd }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.tp.mu.Lock()
	defer w.tp.mu.Unlock()
	return w.tp.out.Write(b)
}

// Need skips the test when not root and fails it when dpdk-testpmd is
// missing; it returns the binary's path.
func Need(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("testpmd tests need root")
	}
	bin, err := exec.LookPath("dpdk-testpmd")
	if err != nil {
		t.Fatalf("dpdk-testpmd not installed (scripts/setup.sh installs dpdk-dev): %v", err)
	}
	return bin
}

// Start runs testpmd interactively with a virtio_user port on sock and
// forwarding mode fwd, and waits for its prompt. The process is stopped
// (by its PID) and its runtime files removed when the test ends.
func Start(t testing.TB, sock, fwd string, opts Options) *Testpmd {
	t.Helper()
	bin := Need(t)
	// One runtime directory per socket, so several instances can run.
	prefix := fmt.Sprintf("vhutest%d-%08x", os.Getpid(), crc32.ChecksumIEEE([]byte(sock)))
	tp := &Testpmd{t: t, prefix: prefix}
	queues := max(opts.Queues, 1)
	vdev := fmt.Sprintf("virtio_user0,path=%s,queues=%d,queue_size=256", sock, queues)
	if opts.MAC != "" {
		vdev += ",mac=" + opts.MAC
	}
	if opts.Server {
		vdev += ",server=1"
	}
	if opts.Packed {
		vdev += ",packed_vq=1"
	}
	args := []string{"-o0", bin, "--no-pci", "--no-huge", "-m", "512", "--file-prefix=" + prefix,
		"--log-level=lib.eal:error", "--vdev", vdev,
		"--", "-i", "--total-num-mbufs=8192", "--nb-cores=1", "--port-topology=loop",
		"--forward-mode=" + fwd, fmt.Sprintf("--rxq=%d", queues), fmt.Sprintf("--txq=%d", queues)}
	if opts.EthPeer != "" {
		args = append(args, "--eth-peer=0,"+opts.EthPeer)
	}
	if opts.MultiFlow {
		args = append(args, "--txonly-multi-flow")
	}
	// stdbuf: testpmd's printf output would otherwise sit in a pipe
	// buffer while its prompt (written directly) arrives.
	tp.cmd = exec.Command("stdbuf", args...)
	var err error
	if tp.stdin, err = tp.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	tp.cmd.Stdout = lockedWriter{tp}
	tp.cmd.Stderr = lockedWriter{tp}
	if err := tp.cmd.Start(); err != nil {
		t.Fatalf("start testpmd: %v", err)
	}
	t.Cleanup(tp.Kill)
	tp.WaitFor("testpmd> ", 20*time.Second)
	return tp
}

// Pid returns testpmd's process id.
func (tp *Testpmd) Pid() int { return tp.cmd.Process.Pid }

// Output returns what testpmd printed since the last Command.
func (tp *Testpmd) Output() string {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.out.String()
}

// WaitFor polls testpmd's output for s with a deadline and fails the
// test when it does not appear.
func (tp *Testpmd) WaitFor(s string, d time.Duration) string {
	tp.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if o := tp.Output(); strings.Contains(o, s) {
			return o
		}
		time.Sleep(20 * time.Millisecond)
	}
	tp.t.Fatalf("testpmd: no %q within %v; output:\n%s", s, d, tp.Output())
	return ""
}

// Command sends a line and waits for the next prompt; it returns the
// output in between.
func (tp *Testpmd) Command(line string) string {
	tp.t.Helper()
	tp.mu.Lock()
	tp.out.Reset()
	tp.mu.Unlock()
	if _, err := io.WriteString(tp.stdin, line+"\n"); err != nil {
		tp.t.Fatalf("testpmd %q: %v", line, err)
	}
	return tp.WaitFor("testpmd> ", 10*time.Second)
}

// Kill ends testpmd (quit, then SIGKILL to its PID after 5 s) and
// removes its runtime files. It may be called more than once.
func (tp *Testpmd) Kill() {
	if tp.cmd.ProcessState == nil {
		io.WriteString(tp.stdin, "quit\n")
		done := make(chan struct{})
		go func() { tp.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			tp.cmd.Process.Kill()
			<-done
		}
	}
	os.RemoveAll(filepath.Join("/var/run/dpdk", tp.prefix))
}

var statRe = regexp.MustCompile(`(RX|TX)-packets: +(\d+)`)

// PortStats returns the RX and TX packet counts of testpmd's port 0.
func (tp *Testpmd) PortStats() (rx, tx uint64) {
	o := tp.Command("show port stats 0")
	for _, m := range statRe.FindAllStringSubmatch(o, -1) {
		v, _ := strconv.ParseUint(m[2], 10, 64)
		if m[1] == "RX" {
			rx = v
		} else {
			tx = v
		}
	}
	return rx, tx
}

// OpenFds counts this process's open file descriptors.
func OpenFds(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
