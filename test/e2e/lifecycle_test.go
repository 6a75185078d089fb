package e2e

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// vnicSpec is a plain vNIC n in VNI 42 with address 42.0.0.n, all open.
func vnicSpec(n int) nicSpec {
	return nicSpec{id: fmt.Sprintf("nic-%d", n), mac: macFor(n), vni: 42,
		addrs: []string{fmt.Sprintf("42.0.0.%d/24", n)}, sgs: []string{"sg-open"}}
}

// nicList returns the ids the daemon lists.
func (h *host) nicList(t *testing.T) []string {
	t.Helper()
	return strings.Fields(h.mustCLI("nic", "list"))
}

// waitUnplugged waits until the VM's eth0 (the TAP) is gone.
func (v *vm) waitUnplugged(t *testing.T) {
	t.Helper()
	eventually(t, settleTimeout, v.spec.id+": TAP removed", func() error {
		if _, err := runCmd("ip", "-n", v.ns, "link", "show", "eth0"); err == nil {
			return fmt.Errorf("eth0 still present in %s", v.ns)
		}
		return nil
	})
}

// TestNICDeleteReadd: deleting a vNIC removes its TAP and cuts it off;
// re-adding it (on the same host, or on the other host as after a
// migration) restores traffic with local and remote peers.
func TestNICDeleteReadd(t *testing.T) {
	l := newLab(t)
	h1, h2 := l.openHostPair(ipv4, daemonOpts{})
	local, moving, remote := h1.addVM(vnicSpec(1)), h1.addVM(vnicSpec(2)), h2.addVM(vnicSpec(3))
	check := func(t *testing.T) {
		t.Helper()
		if err := parallel(
			func() error { return local.reach(moving.ip(0)) },
			func() error { return remote.reach(moving.ip(0)) },
			func() error { return moving.reach(local.ip(0)) },
			func() error { return moving.reach(remote.ip(0)) },
		); err != nil {
			t.Fatal(err)
		}
	}
	check(t)

	for round, to := range []*host{h1, h1, h2, h1} {
		from := moving.host
		// No subtests: the lab's helpers fail the test that built the lab.
		t.Logf("round %d: %s deleted on %s, re-added on %s", round, moving.spec.id, from.name, to.name)
		from.mustCLI("nic", "del", moving.spec.id)
		moving.waitUnplugged(t)
		if slices.Contains(from.nicList(t), moving.spec.id) {
			t.Fatalf("%s still listed after nic del", moving.spec.id)
		}
		if err := parallel(
			func() error { return local.blockedFrom(moving.ip(0)) },
			func() error { return remote.blockedFrom(moving.ip(0)) },
		); err != nil {
			t.Fatal(err)
		}
		moving.host = to
		moving.create()
		check(t)
	}
}

// TestDaemonRestart: after a stop (clean, or SIGKILL) and a start with the
// same state file, the daemon has the same vNICs and security groups, and
// once the recreated TAPs are plugged again traffic flows, locally and
// across hosts.
func TestDaemonRestart(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			l := newLab(t)
			h1, h2 := l.openHostPair(ipv4, daemonOpts{})
			a, b, c := h1.addVM(vnicSpec(1)), h1.addVM(vnicSpec(2)), h2.addVM(vnicSpec(3))
			a.reaches(t, b.ip(0))
			a.reaches(t, c.ip(0))
			before := h1.mustCLI("nic", "details", a.spec.id)
			rules := h1.mustCLI("sg", "rule", "list", "sg-open")

			h1.stop(sig)
			a.waitUnplugged(t)
			b.waitUnplugged(t)
			if err := c.blockedFrom(a.ip(0)); err != nil {
				t.Fatal(err)
			}
			h1.start(daemonOpts{})
			if got := h1.nicList(t); !slices.Equal(got, []string{"nic-1", "nic-2"}) {
				t.Fatalf("nic list after restart = %v, want [nic-1 nic-2]", got)
			}
			if after := h1.mustCLI("nic", "details", a.spec.id); after != before {
				t.Errorf("nic details changed across restart:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if after := h1.mustCLI("sg", "rule", "list", "sg-open"); after != rules {
				t.Errorf("sg rules changed across restart:\nbefore:\n%s\nafter:\n%s", rules, after)
			}
			a.plug()
			b.plug()
			start := time.Now()
			if err := parallel(
				func() error { return a.reach(b.ip(0)) },
				func() error { return b.reach(a.ip(0)) },
				func() error { return a.reach(c.ip(0)) },
				func() error { return c.reach(b.ip(0)) },
			); err != nil {
				t.Fatal(err)
			}
			t.Logf("traffic back %v after re-plugging", time.Since(start).Round(time.Millisecond))
		})
	}
}
