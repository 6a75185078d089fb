package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"testing"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// mtuInPing matches the MTU ping reports with an ICMP "fragmentation
// needed" / "packet too big" error or with its local "message too long".
var mtuInPing = regexp.MustCompile(`(?i)(?:frag needed and DF set \(mtu = (\d+)\)|message too long, mtu[=:] ?(\d+)|packet too big: mtu=(\d+))`)

// TestOversizedFrame: VMs with MTU 1500 over a 1500-byte underlay. A
// full-size packet with DF set cannot be encapsulated; the switch answers
// with an ICMP error (fragmentation needed / packet too big) carrying the
// MTU that fits, ping reports it, and packets of that size then pass.
func TestOversizedFrame(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		underlay labtest.Family
		tenant   labtest.Family
		overhead int // VXLAN over the underlay family: 50 (IPv4) or 70 (IPv6)
	}{
		{"ipv4-underlay/ipv4-vm", labtest.IPv4, labtest.IPv4, 50},
		{"ipv6-underlay/ipv4-vm", labtest.IPv6, labtest.IPv4, 70},
		{"ipv4-underlay/ipv6-vm", labtest.IPv4, labtest.IPv6, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t)
			h1, h2 := l.OpenHostPair(tc.underlay, labtest.DaemonOpts{})
			addr := func(n int) string {
				if tc.tenant == labtest.IPv6 {
					return fmt.Sprintf("2001:db8:42::%d/64", n)
				}
				return fmt.Sprintf("42.0.0.%d/24", n)
			}
			a := h1.AddVM(labtest.NICSpec{ID: "nic-1", MAC: labtest.MACFor(1), VNI: 42, Addrs: []string{addr(1)}, SGs: []string{"sg-open"}, MTU: 1500})
			b := h2.AddVM(labtest.NICSpec{ID: "nic-2", MAC: labtest.MACFor(2), VNI: 42, Addrs: []string{addr(2)}, SGs: []string{"sg-open"}, MTU: 1500})
			a.Reaches(t, b.IP(0))

			want := 1500 - tc.overhead
			hdr := 28 // IPv4 + ICMP
			if tc.tenant == labtest.IPv6 {
				hdr = 48
			}
			// 1500-byte IP packets, DF (IPv6 never fragments in the path).
			out, err := a.Exec("ping", "-n", "-c", "1", "-W", "2", "-M", "do", "-s", strconv.Itoa(1500-hdr), b.IP(0))
			if err == nil {
				t.Fatalf("a 1500-byte packet crossed a 1500-byte underlay after VXLAN encapsulation:\n%s", out)
			}
			m := mtuInPing.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("ping did not report an MTU error:\n%s", out)
			}
			got := m[1] + m[2] + m[3]
			if got != strconv.Itoa(want) {
				t.Errorf("reported MTU %s, want %d:\n%s", got, want, out)
			}
			// The kernel now knows the path MTU: a second try fails locally
			// with the same MTU, and a packet of exactly that size passes.
			out, _ = a.Exec("ping", "-n", "-c", "1", "-W", "2", "-M", "do", "-s", strconv.Itoa(1500-hdr), b.IP(0))
			if m := mtuInPing.FindStringSubmatch(out); m == nil || m[1]+m[2]+m[3] != strconv.Itoa(want) {
				t.Errorf("second oversized ping does not report mtu %d:\n%s", want, out)
			}
			if err := a.Reach(b.IP(0), "-M", "do", "-s", strconv.Itoa(want-hdr)); err != nil {
				t.Errorf("a packet of the path MTU (%d) does not pass: %v", want, err)
			}
		})
	}
}
