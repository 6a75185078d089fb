package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// readmeLayout is the original README's example: six VMs in three virtual
// networks over two hosts, all in one IP subnet so that only the VNI keeps
// them apart. VNI 42 spans both hosts and has two VMs on h1; VNI 1337 spans
// both hosts; VNI 51 has a single VM.
type readmeVM struct {
	n    int
	host int // 1 or 2
	vni  uint32
}

func readmeLayout() []readmeVM {
	return []readmeVM{
		{1, 1, 42}, {2, 1, 42}, {3, 1, 1337},
		{4, 2, 42}, {5, 2, 51}, {6, 2, 1337},
	}
}

// buildREADME starts both daemons and creates the six VMs.
func buildREADME(t *testing.T, l *labtest.Lab, f labtest.Family, o labtest.DaemonOpts) []*labtest.VM {
	t.Helper()
	h1, h2 := l.OpenHostPair(f, o)
	hosts := []*labtest.Host{h1, h2}
	layout := readmeLayout()
	vms := make([]*labtest.VM, len(layout))
	for i, e := range layout {
		vms[i] = hosts[e.host-1].AddVM(labtest.NICSpec{
			ID:    fmt.Sprintf("nic-%d", e.n),
			MAC:   labtest.MACFor(e.n),
			VNI:   e.vni,
			Addrs: []string{fmt.Sprintf("42.0.0.%d/24", e.n), fmt.Sprintf("2001:db8:42::%d/64", e.n)},
			SGs:   []string{"sg-open"},
		})
	}
	return vms
}

// TestREADMEExample: ping (IPv4 and IPv6 tenant traffic) works between VMs
// of one VNI, on one host and across hosts, and never across VNIs; over IPv4
// and IPv6 underlays, with multicast and head-end flooding.
func TestREADMEExample(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		underlay labtest.Family
		headEnd  bool
	}{
		{"ipv4-multicast", labtest.IPv4, false},
		{"ipv4-headend", labtest.IPv4, true},
		{"ipv6-multicast", labtest.IPv6, false},
		{"ipv6-headend", labtest.IPv6, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t)
			vms := buildREADME(t, l, tc.underlay, labtest.DaemonOpts{HeadEnd: tc.headEnd})
			layout := readmeLayout()
			var same, other []func() error
			for i, a := range vms {
				for j, b := range vms {
					if i == j {
						continue
					}
					for k := range b.Spec.Addrs {
						if layout[i].vni == layout[j].vni {
							same = append(same, func() error { return a.Reach(b.IP(k)) })
						} else {
							other = append(other, func() error { return a.BlockedFrom(b.IP(k)) })
						}
					}
				}
			}
			if len(same) != 16 || len(other) != 44 {
				t.Fatalf("layout gives %d reachable and %d isolated checks, want 16 and 44", len(same), len(other))
			}
			// Reachability first: it proves the VMs are up, so that the
			// isolation checks below cannot pass because of a dead network.
			if err := labtest.Parallel(same...); err != nil {
				t.Fatal(err)
			}
			if err := labtest.Parallel(other...); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// readmeBlock is a ```sh block of the README and the heading above it.
type readmeBlock struct {
	heading string
	lines   []string
}

// readmeShellBlocks returns the README's ```sh blocks.
func readmeShellBlocks(t *testing.T, path string) []readmeBlock {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []readmeBlock
	var heading string
	var cur *readmeBlock
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case cur != nil && strings.HasPrefix(line, "```"):
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.lines = append(cur.lines, line)
		case strings.HasPrefix(line, "```sh"):
			cur = &readmeBlock{heading: heading}
		case strings.HasPrefix(line, "#"):
			heading = strings.TrimSpace(strings.TrimLeft(line, "#"))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return blocks
}

// readmeMountpoints are the daemon's default directories; the test hides
// them behind empty tmpfs mounts.
var readmeMountpoints = []string{"/run/butterfly", "/var/lib/butterfly", "/etc/butterfly"}

// TestREADMERunningTheDaemon runs the README's "Running the daemon" blocks
// as written, from the repository, as on a fresh machine: in a network
// namespace of its own (only loopback, up) and a mount namespace where the
// daemon's default directories (/run/butterfly, /var/lib/butterfly,
// /etc/butterfly) are empty tmpfs, so that nothing reaches the host's. The
// daemon, which the README runs in the foreground, runs in the background
// and the second block ("in another terminal") once its API answers. Every
// other shell block of the README must be listed here with the reason it
// is not run.
func TestREADMERunningTheDaemon(t *testing.T) {
	l := newLab(t) // skips without root
	_, file, _, _ := runtime.Caller(0)
	root, err := filepath.Abs(filepath.Join(filepath.Dir(file), "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	notRun := map[string]string{
		"Quick start (Debian 12, as root)":     "demo.sh and test.sh (the whole suite, which includes this test) are run by hand and by CI",
		"Containers: TAP vNICs in a namespace": "needs a running daemon and a global namespace name; TestNetnsNIC runs the same steps in the lab's namespaces",
		"Cluster mode":                         "needs an etcd cluster and several hosts; TestCluster starts daemons with the same options in the lab, TestClusterImportIPv6 with --cluster-import",
	}
	var run []readmeBlock
	for _, b := range readmeShellBlocks(t, filepath.Join(root, "README.md")) {
		switch {
		case b.heading == "Running the daemon":
			run = append(run, b)
		case notRun[b.heading] != "":
		default:
			t.Errorf("README shell block under %q is not run by a test:\n%s", b.heading, strings.Join(b.lines, "\n"))
		}
	}
	if len(run) != 2 {
		t.Fatalf("README has %d shell blocks under \"Running the daemon\", want 2 (the daemon, then the CLI)", len(run))
	}

	_, err = os.Stat("/etc/butterfly/api.key")
	hostKey := err == nil
	for _, d := range readmeMountpoints {
		if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(d, 0o700); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Remove(d) })
		}
	}
	ns := l.Prefix + "rd"
	labtest.Must(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _, _ = labtest.Run("ip", "netns", "del", ns) })
	labtest.Must(t, "ip", "-n", ns, "link", "set", "lo", "up")

	logf := filepath.Join(l.Dir, "butterflyd.log")
	var sb strings.Builder
	sb.WriteString("set -e\n")
	for _, d := range readmeMountpoints {
		fmt.Fprintf(&sb, "mount -t tmpfs -o mode=0755 tmpfs %s\n", d)
	}
	fmt.Fprintf(&sb, "cd %q\n", root)
	daemon := false
	for _, line := range run[0].lines {
		if strings.HasPrefix(line, "bin/butterflyd ") {
			fmt.Fprintf(&sb, "%s >%q 2>&1 &\npid=$!\n", line, logf)
			daemon = true
			continue
		}
		sb.WriteString(line + "\n")
	}
	if !daemon {
		t.Fatalf("the first block does not start bin/butterflyd:\n%s", strings.Join(run[0].lines, "\n"))
	}
	// Wait (with a deadline) until the API answers with the key the
	// daemon created, as a second terminal would.
	fmt.Fprintf(&sb, `i=0
until bin/butterfly -t 1000 status >/dev/null 2>%[1]q.cli; do
	kill -0 $pid 2>/dev/null || { echo "butterflyd exited:"; cat %[1]q; exit 1; }
	i=$((i+1)); [ $i -lt 150 ] || { echo "butterflyd API not up after 150 tries (last CLI error: $(cat %[1]q.cli)):"; cat %[1]q; exit 1; }
	sleep 0.1
done
echo "== second block"
`, logf)
	for _, line := range run[1].lines {
		sb.WriteString(line + "\n")
	}
	sb.WriteString("kill -TERM $pid\nwait $pid\necho \"== daemon exited with $?\"\n")

	goDir := "/usr/local/go/bin"
	if p, err := exec.LookPath("go"); err == nil {
		goDir = filepath.Dir(p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private", "sh", "-c", sb.String())
	cmd.Env = append(os.Environ(), "PATH="+goDir+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("README blocks failed: %v\nscript:\n%s\noutput:\n%s", err, sb.String(), out)
	}
	text := string(out)
	for _, want := range []string{"vm1\n", "== daemon exited with 0"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	t.Logf("README blocks:\n%s", text)
	if _, err := os.Stat("/etc/butterfly/api.key"); err == nil && !hostKey {
		t.Error("the host's /etc/butterfly/api.key appeared: the blocks wrote outside their mount namespace")
	}
}
