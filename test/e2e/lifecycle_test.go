package e2e

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// vnicSpec is a plain vNIC n in VNI 42 with address 42.0.0.n, all open.
func vnicSpec(n int) labtest.NICSpec {
	return labtest.NICSpec{ID: fmt.Sprintf("nic-%d", n), MAC: labtest.MACFor(n), VNI: 42,
		Addrs: []string{fmt.Sprintf("42.0.0.%d/24", n)}, SGs: []string{"sg-open"}}
}

// nicList returns the ids the daemon lists.
func nicList(h *labtest.Host, t *testing.T) []string {
	t.Helper()
	return strings.Fields(h.MustCLI("nic", "list"))
}

// waitUnplugged waits until the VM's eth0 (the TAP) is gone.
func waitUnplugged(v *labtest.VM, t *testing.T) {
	t.Helper()
	labtest.Eventually(t, labtest.SettleTimeout, v.Spec.ID+": TAP removed", func() error {
		if _, err := labtest.Run("ip", "-n", v.NS, "link", "show", "eth0"); err == nil {
			return fmt.Errorf("eth0 still present in %s", v.NS)
		}
		return nil
	})
}

// TestNICDeleteReadd: deleting a vNIC removes its TAP and cuts it off;
// re-adding it (on the same host, or on the other host as after a
// migration) restores traffic with local and remote peers.
func TestNICDeleteReadd(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	h1, h2 := l.OpenHostPair(labtest.IPv4, labtest.DaemonOpts{})
	local, moving, remote := h1.AddVM(vnicSpec(1)), h1.AddVM(vnicSpec(2)), h2.AddVM(vnicSpec(3))
	check := func(t *testing.T) {
		t.Helper()
		if err := labtest.Parallel(
			func() error { return local.Reach(moving.IP(0)) },
			func() error { return remote.Reach(moving.IP(0)) },
			func() error { return moving.Reach(local.IP(0)) },
			func() error { return moving.Reach(remote.IP(0)) },
		); err != nil {
			t.Fatal(err)
		}
	}
	check(t)

	for round, to := range []*labtest.Host{h1, h1, h2, h1} {
		from := moving.Host
		// No subtests: the lab's helpers fail the test that built the lab.
		t.Logf("round %d: %s deleted on %s, re-added on %s", round, moving.Spec.ID, from.Name, to.Name)
		from.MustCLI("nic", "del", moving.Spec.ID)
		waitUnplugged(moving, t)
		if slices.Contains(nicList(from, t), moving.Spec.ID) {
			t.Fatalf("%s still listed after nic del", moving.Spec.ID)
		}
		if err := labtest.Parallel(
			func() error { return local.BlockedFrom(moving.IP(0)) },
			func() error { return remote.BlockedFrom(moving.IP(0)) },
		); err != nil {
			t.Fatal(err)
		}
		moving.Host = to
		moving.Create()
		check(t)
	}
}

// TestDaemonRestart: after a stop (clean, or SIGKILL) and a start with the
// same state file, the daemon has the same vNICs and security groups, and
// once the recreated TAPs are plugged again traffic flows, locally and
// across hosts.
func TestDaemonRestart(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			l := newLab(t)
			h1, h2 := l.OpenHostPair(labtest.IPv4, labtest.DaemonOpts{})
			a, b, c := h1.AddVM(vnicSpec(1)), h1.AddVM(vnicSpec(2)), h2.AddVM(vnicSpec(3))
			a.Reaches(t, b.IP(0))
			a.Reaches(t, c.IP(0))
			before := h1.MustCLI("nic", "details", a.Spec.ID)
			rules := h1.MustCLI("sg", "rule", "list", "sg-open")

			h1.Stop(sig)
			waitUnplugged(a, t)
			waitUnplugged(b, t)
			if err := c.BlockedFrom(a.IP(0)); err != nil {
				t.Fatal(err)
			}
			h1.Start(labtest.DaemonOpts{})
			if got := nicList(h1, t); !slices.Equal(got, []string{"nic-1", "nic-2"}) {
				t.Fatalf("nic list after restart = %v, want [nic-1 nic-2]", got)
			}
			if after := h1.MustCLI("nic", "details", a.Spec.ID); after != before {
				t.Errorf("nic details changed across restart:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if after := h1.MustCLI("sg", "rule", "list", "sg-open"); after != rules {
				t.Errorf("sg rules changed across restart:\nbefore:\n%s\nafter:\n%s", rules, after)
			}
			a.Plug()
			b.Plug()
			start := time.Now()
			if err := labtest.Parallel(
				func() error { return a.Reach(b.IP(0)) },
				func() error { return b.Reach(a.IP(0)) },
				func() error { return a.Reach(c.IP(0)) },
				func() error { return c.Reach(b.IP(0)) },
			); err != nil {
				t.Fatal(err)
			}
			t.Logf("traffic back %v after re-plugging", time.Since(start).Round(time.Millisecond))
		})
	}
}
