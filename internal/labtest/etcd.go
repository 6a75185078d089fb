package labtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

// EtcdMember is one etcd server of a test cluster (Debian's etcd-server
// package): its process, in namespace NS ("" = the test's), listening on
// IP.
type EtcdMember struct {
	Name, NS, IP          string
	ClientPort, PeerPort  int
	dir, log, initCluster string
	tls                   *EtcdTLS
	t                     testing.TB
	proc                  *Process
}

// EtcdTLS are the PEM files of a member serving its clients over TLS and
// requiring client certificates signed by CA.
type EtcdTLS struct {
	CA, Cert, Key string
}

// ClientURL is the member's client URL.
func (m *EtcdMember) ClientURL() string {
	scheme := "http://"
	if m.tls != nil {
		scheme = "https://"
	}
	return scheme + net.JoinHostPort(m.IP, fmt.Sprint(m.ClientPort))
}

func (m *EtcdMember) peerURL() string {
	return "http://" + net.JoinHostPort(m.IP, fmt.Sprint(m.PeerPort))
}

// Etcd is a test etcd cluster.
type Etcd struct {
	Members []*EtcdMember
}

// Endpoints are the client URLs of every member.
func (e *Etcd) Endpoints() []string {
	var out []string
	for _, m := range e.Members {
		out = append(out, m.ClientURL())
	}
	return out
}

// EtcdSpec places one member: its namespace ("" = the test's), address
// and ports (0: a free port of the test's namespace), and TLS for its
// clients (nil: plain).
type EtcdSpec struct {
	NS, IP               string
	ClientPort, PeerPort int
	TLS                  *EtcdTLS
}

// StartEtcd starts a new etcd cluster of one member per spec, data in
// dir, and waits until it has a leader. Members are killed at cleanup.
// It skips the test when the etcd program is missing outside CI.
func StartEtcd(t testing.TB, dir string, specs ...EtcdSpec) *Etcd {
	t.Helper()
	if _, err := exec.LookPath("etcd"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("etcd not installed (scripts/setup.sh installs Debian's etcd-server)")
		}
		t.Skip("etcd not installed (Debian package etcd-server; scripts/setup.sh installs it)")
	}
	e := &Etcd{}
	var initial []string
	for i, s := range specs {
		m := &EtcdMember{Name: fmt.Sprintf("etcd%d", i), NS: s.NS, IP: s.IP, ClientPort: s.ClientPort, PeerPort: s.PeerPort, tls: s.TLS, t: t}
		if m.ClientPort == 0 {
			m.ClientPort = FreePort(t)
		}
		if m.PeerPort == 0 {
			m.PeerPort = FreePort(t)
		}
		m.dir = filepath.Join(dir, m.Name)
		m.log = filepath.Join(dir, m.Name+".log")
		e.Members = append(e.Members, m)
		initial = append(initial, m.Name+"="+m.peerURL())
	}
	for _, m := range e.Members {
		m.initCluster = strings.Join(initial, ",")
		if err := m.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			m.Kill()
			if t.Failed() {
				b, _ := os.ReadFile(m.log)
				t.Logf("%s log tail:\n%s", m.Name, tail(string(b), 30))
			}
		})
	}
	Eventually(t, SettleTimeout, "etcd cluster healthy", e.Healthy)
	return e
}

// FreePort returns a TCP port free now on the test's loopback.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start starts the member (again, on its data directory, after Kill).
func (m *EtcdMember) Start() error {
	if m.proc != nil && m.proc.Running() {
		return fmt.Errorf("%s is running", m.Name)
	}
	args := []string{"--name", m.Name, "--data-dir", m.dir,
		"--listen-client-urls", m.ClientURL(), "--advertise-client-urls", m.ClientURL(),
		"--listen-peer-urls", m.peerURL(), "--initial-advertise-peer-urls", m.peerURL(),
		"--initial-cluster", m.initCluster, "--initial-cluster-state", "new",
		"--initial-cluster-token", filepath.Base(filepath.Dir(m.dir)),
		"--heartbeat-interval", "100", "--election-timeout", "1000",
		"--logger", "zap", "--log-outputs", "stderr"}
	if m.tls != nil {
		args = append(args, "--cert-file", m.tls.Cert, "--key-file", m.tls.Key,
			"--trusted-ca-file", m.tls.CA, "--client-cert-auth")
	}
	prog := "etcd"
	if m.NS != "" {
		args = append([]string{"netns", "exec", m.NS, "etcd"}, args...)
		prog = "ip"
	}
	logf, err := os.OpenFile(m.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(prog, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Debian's etcd 3.4 needs this on arm64 only; harmless elsewhere.
	cmd.Env = append(os.Environ(), "ETCD_UNSUPPORTED_ARCH="+runtime.GOARCH)
	p, err := StartProcess(m.Name, cmd)
	if err != nil {
		return err
	}
	m.proc = p
	return nil
}

// Kill stops the member with SIGKILL (its data stays for Start).
func (m *EtcdMember) Kill() {
	if m.proc != nil && m.proc.Running() {
		m.proc.Stop(m.t, syscall.SIGKILL)
	}
}

// Healthy returns nil once every member answers and the cluster has a
// leader (etcdctl endpoint health).
func (e *Etcd) Healthy() error {
	_, err := e.Ctl("endpoint", "health")
	return err
}

// Ctl runs etcdctl (API v3) against every member, in the first member's
// namespace, and returns its output.
func (e *Etcd) Ctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), CmdTimeout)
	defer cancel()
	full := []string{"--endpoints", strings.Join(e.Endpoints(), ","), "--dial-timeout", "1s", "--command-timeout", "2s"}
	if tls := e.Members[0].tls; tls != nil {
		// The member's own certificate serves as a client's too
		// (etcdctl only checks that the CA signed it).
		full = append(full, "--cacert", tls.CA, "--cert", tls.Cert, "--key", tls.Key)
	}
	full = append(full, args...)
	prog := "etcdctl"
	if ns := e.Members[0].NS; ns != "" {
		full = append([]string{"netns", "exec", ns, "etcdctl"}, full...)
		prog = "ip"
	}
	cmd := exec.CommandContext(ctx, prog, full...)
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("etcdctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
