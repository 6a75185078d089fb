package tap

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// nsPath creates a named namespace (deleted at cleanup) without keeping
// a handle to it and returns its path.
func nsPath(t *testing.T) (name, path string) {
	t.Helper()
	name = fmt.Sprintf("bftap%d-%d", os.Getpid(), seq.Add(1))
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return name, "/var/run/netns/" + name
}

func ipOut(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// readARP polls the port until it reads an ARP frame (the namespace
// resolving a neighbour) or the deadline passes.
func readARP(t *testing.T, p *Port) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	bs := bufs(8)
	for time.Now().Before(deadline) {
		n, err := p.ReadBatch(bs)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bs[:n] {
			f := b.Bytes()
			if len(f) >= 14 && f[12] == 0x08 && f[13] == 0x06 {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no ARP request read from the TAP in 5 s")
}

// TestOpenInNetns: a TAP opened with Options.Netns is created in that
// namespace with the MAC, up, persistent; a second Open after Close
// re-attaches to the same device with the namespace's addresses and
// routes untouched, and frames flow again; Remove deletes it.
func TestOpenInNetns(t *testing.T) {
	needRoot(t)
	ns, path := nsPath(t)
	mac := net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	opts := Options{Offload: true, Netns: path, MAC: mac}
	p, err := Open("eth0", opts)
	if err != nil {
		t.Fatal(err)
	}
	if p.Reattached() {
		t.Error("a new device reported as re-attached")
	}
	if _, err := exec.Command("ip", "link", "show", "eth0").CombinedOutput(); err == nil {
		// the test host may have an eth0 of its own: compare ifindex
		if strings.Contains(ipOut(t, "-o", "link", "show", "eth0"), mac.String()) {
			t.Error("the TAP is in the caller's namespace")
		}
	}
	link := ipOut(t, "-n", ns, "-d", "-o", "link", "show", "eth0")
	for _, want := range []string{mac.String(), ",UP", "tun type tap", "persist", fmt.Sprintf("%d: eth0", p.Ifindex())} {
		if !strings.Contains(link, want) {
			t.Errorf("link in %s lacks %q: %s", ns, want, link)
		}
	}
	run(t, "ip", "-n", ns, "addr", "add", "10.9.0.1/24", "dev", "eth0")
	run(t, "ip", "-n", ns, "route", "add", "10.10.0.0/16", "via", "10.9.0.254")
	ifindex := p.Ifindex()

	// The daemon goes away (Close, as at shutdown): the device stays.
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ipOut(t, "-n", ns, "-o", "addr", "show", "eth0"), "10.9.0.1/24") {
		t.Fatal("the address is gone after Close")
	}
	p2, err := Open("eth0", opts)
	if err != nil {
		t.Fatalf("re-attach: %v", err)
	}
	t.Cleanup(func() { p2.Remove() })
	if !p2.Reattached() || p2.Ifindex() != ifindex {
		t.Errorf("re-attach: reattached %t ifindex %d, want true %d", p2.Reattached(), p2.Ifindex(), ifindex)
	}
	if !strings.Contains(ipOut(t, "-n", ns, "-o", "addr", "show", "eth0"), "10.9.0.1/24") ||
		!strings.Contains(ipOut(t, "-n", ns, "route", "show"), "10.10.0.0/16 via 10.9.0.254") {
		t.Error("address or route lost across the re-attach")
	}
	// Frames flow: the namespace's ARP requests reach the new descriptor.
	go exec.Command("ip", "netns", "exec", ns, "ping", "-c", "3", "-i", "0.3", "-W", "1", "10.9.0.2").Run()
	readARP(t, p2)

	// A second descriptor cannot take the device while p2 holds it.
	if _, err := Open("eth0", opts); !errors.Is(err, ErrNameInUse) {
		t.Errorf("Open of a TAP in use: %v, want ErrNameInUse", err)
	}
	if err := p2.Remove(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "-n", ns, "link", "show", "eth0").CombinedOutput(); err == nil {
		t.Fatalf("eth0 still in %s after Remove: %s", ns, out)
	}
}

func TestOpenInNetnsErrors(t *testing.T) {
	needRoot(t)
	_, path := nsPath(t)
	tests := []struct {
		name, ifname, netns string
		want                string
		is                  error
	}{
		{"missing namespace", "eth0", "/var/run/netns/bf-no-such-ns", "no such file", nil},
		{"not a namespace", "eth0", "/proc/self/ns/uts", "is it a network namespace", nil},
		{"not a namespace file", "eth0", "/dev/null", "is it a network namespace", nil},
		{"name of a non-TAP", "lo", path, "a device interface", ErrNameInUse},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Open(tc.ifname, Options{Netns: tc.netns})
			if err == nil {
				p.Remove()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.netns) {
				t.Errorf("error %q does not name %s and %q", err, tc.netns, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
		})
	}
}

// TestOpenInNetnsDeleted: the port's descriptor holds the namespace (the
// kernel's TUN socket references it), so removing its name does not
// break the port; once the port is closed the namespace and its device
// are gone, and a later Open of the path fails with a clear error.
func TestOpenInNetnsDeleted(t *testing.T) {
	needRoot(t)
	ns, path := nsPath(t)
	p, err := Open("eth0", Options{Netns: path})
	if err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "netns", "del", ns)
	if _, err := p.ReadBatch(bufs(4)); err != nil {
		t.Errorf("read after the namespace's name was removed: %v", err)
	}
	b := packet.NewBuf()
	b.SetLen(60)
	if _, _, err := p.WriteBatch([]*packet.Buf{b}); err != nil {
		t.Errorf("write after the namespace's name was removed: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open("eth0", Options{Netns: path}); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("Open in a deleted namespace: %v, want a missing-file error", err)
	}
}

// TestInPlace: a TAP just opened in a namespace is in place; renamed or
// deleted behind the port's back, it is not.
func TestInPlace(t *testing.T) {
	needRoot(t)
	ns, path := nsPath(t)
	p, err := Open("eth0", Options{Netns: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Remove() })
	if !p.InPlace() {
		t.Fatal("a TAP just opened is not in place")
	}
	run(t, "ip", "-n", ns, "link", "set", "eth0", "down")
	run(t, "ip", "-n", ns, "link", "set", "eth0", "name", "eth9")
	if p.InPlace() {
		t.Error("a renamed TAP is in place")
	}
	run(t, "ip", "-n", ns, "link", "del", "eth9")
	if p.InPlace() {
		t.Error("a deleted TAP is in place")
	}
}
