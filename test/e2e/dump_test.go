package e2e

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestDumpReplay follows the original's test 60 across processes: a
// configuration dumped with "butterfly dump", replayed with "butterfly
// request" into a fresh daemon (no state), dumps to the same bytes.
func TestDumpReplay(t *testing.T) {
	l := newLab(t)
	h := l.singleHost(ipv4)
	h.start(daemonOpts{})
	h.openSG("sg-a")
	h.mustCLI("sg", "rule", "add", "sg-b", "--ip-proto", "tcp", "--port", "22", "--cidr", "10.0.0.0/8")
	h.mustCLI("sg", "rule", "add", "sg-b", "--ip-proto", "udp", "--port-start", "8000", "--port-end", "9000", "--sg-members", "sg-a")
	h.mustCLI("sg", "member", "add", "sg-a", "42.0.0.1")
	h.mustCLI("sg", "member", "add", "sg-a", "2001:db8::1")
	specs := []nicSpec{
		{id: "nic-1", mac: macFor(1), vni: 1, addrs: []string{"42.0.0.1/24", "2001:db8::1/64"}, sgs: []string{"sg-a", "sg-b"}},
		{id: "nic-2", mac: macFor(2), vni: 2, addrs: []string{"42.0.0.2/24"}, antispoof: true, sgs: []string{"sg-b"}},
		{id: "nic-3", mac: macFor(3), vni: 3, addrs: []string{"42.0.0.3/24"}, bypass: true},
		{id: "nic-4", mac: macFor(4), vni: 1, addrs: []string{"42.0.0.4/24"}, trace: filepath.Join(l.dir, "nic-4.pcap")},
	}
	for _, s := range specs {
		h.mustCLI(s.nicAddArgs()...)
	}
	first := h.mustCLI("dump")
	dumpFile := filepath.Join(l.dir, "dump.txt")
	if err := os.WriteFile(dumpFile, []byte(first), 0o644); err != nil {
		t.Fatal(err)
	}

	h.stop(syscall.SIGTERM)
	for _, f := range []string{h.state, h.state + ".journal"} {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	h.start(daemonOpts{})
	if out := h.mustCLI("nic", "list"); out != "" {
		t.Fatalf("fresh daemon already has vNICs: %q", out)
	}
	h.mustCLI("request", dumpFile)
	if second := h.mustCLI("dump"); second != first {
		t.Errorf("dump after replay differs:\nbefore:\n%s\nafter:\n%s", first, second)
	}
}
