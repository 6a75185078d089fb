package e2e

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// TestDumpReplay follows the original's test 60 across processes: a
// configuration dumped with "butterfly dump", replayed with "butterfly
// request" into a fresh daemon (no state), dumps to the same bytes.
func TestDumpReplay(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	h := l.SingleHost(labtest.IPv4)
	h.Start(labtest.DaemonOpts{})
	h.OpenSG("sg-a")
	h.MustCLI("sg", "rule", "add", "sg-b", "--ip-proto", "tcp", "--port", "22", "--cidr", "10.0.0.0/8")
	h.MustCLI("sg", "rule", "add", "sg-b", "--ip-proto", "udp", "--port-start", "8000", "--port-end", "9000", "--sg-members", "sg-a")
	h.MustCLI("sg", "member", "add", "sg-a", "42.0.0.1")
	h.MustCLI("sg", "member", "add", "sg-a", "2001:db8::1")
	specs := []labtest.NICSpec{
		{ID: "nic-1", MAC: labtest.MACFor(1), VNI: 1, Addrs: []string{"42.0.0.1/24", "2001:db8::1/64"}, SGs: []string{"sg-a", "sg-b"}},
		{ID: "nic-2", MAC: labtest.MACFor(2), VNI: 2, Addrs: []string{"42.0.0.2/24"}, Antispoof: true, SGs: []string{"sg-b"}},
		{ID: "nic-3", MAC: labtest.MACFor(3), VNI: 3, Addrs: []string{"42.0.0.3/24"}, Bypass: true},
		{ID: "nic-4", MAC: labtest.MACFor(4), VNI: 1, Addrs: []string{"42.0.0.4/24"}, Trace: filepath.Join(l.Dir, "nic-4.pcap")},
	}
	for _, s := range specs {
		h.MustCLI(s.NICAddArgs()...)
	}
	first := h.MustCLI("dump")
	dumpFile := filepath.Join(l.Dir, "dump.txt")
	if err := os.WriteFile(dumpFile, []byte(first), 0o644); err != nil {
		t.Fatal(err)
	}

	h.Stop(syscall.SIGTERM)
	for _, f := range []string{h.State, h.State + ".journal"} {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	h.Start(labtest.DaemonOpts{})
	if out := h.MustCLI("nic", "list"); out != "" {
		t.Fatalf("fresh daemon already has vNICs: %q", out)
	}
	h.MustCLI("request", dumpFile)
	if second := h.MustCLI("dump"); second != first {
		t.Errorf("dump after replay differs:\nbefore:\n%s\nafter:\n%s", first, second)
	}
}
