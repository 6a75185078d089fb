package dataplane

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/butterfly-go/butterfly/internal/firewall"
	"github.com/butterfly-go/butterfly/internal/model"
)

// TestConntrackPickup: within Config.ConntrackPickup of the engine's
// start, a vNIC added without saved connections picks up a TCP connection
// in progress its rules would let open (a mid-stream segment to its open
// port passes); one added with saved connections (an import), or outside
// the window or after EndPickup, drops it as invalid.
func TestConntrackPickup(t *testing.T) {
	empty := firewall.NewConntrack(1).Export(0)
	for _, c := range []struct {
		name   string
		window time.Duration
		imp    []byte
		end    bool // EndPickup before the vNICs are added
		passes bool
	}{
		{"in the window", time.Hour, nil, false, true},
		{"with saved connections", time.Hour, empty, false, false},
		{"no window", 0, nil, false, false},
		{"window over", time.Nanosecond, nil, false, false},
		{"window ended by EndPickup", time.Hour, nil, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, Config{ConntrackPickup: c.window}, true)
			ssh := model.SG{ID: "ssh", Rules: []model.Rule{{Direction: model.Inbound, Protocol: 6, PortStart: 22, PortEnd: 22,
				CIDR: netip.MustParsePrefix("10.0.0.0/24")}}}
			if err := h.e.SetSecurityGroups([]model.SG{ssh}); err != nil {
				t.Fatal(err)
			}
			if c.end {
				h.e.EndPickup()
			}
			a := h.add(t, bypassed(nicOf("a", mac(1), 5, "10.0.0.1")))
			nb := nicOf("b", mac(2), 5, "10.0.0.2")
			nb.SecurityGroups, nb.Import = []string{"ssh"}, c.imp
			b := h.add(t, nb)
			a.inject(frame{data: build(t, eth(mac(2), mac(1), layers.EthernetTypeIPv4),
				&layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: net.IPv4(10, 0, 0, 1).To4(), DstIP: net.IPv4(10, 0, 0, 2).To4()},
				&layers.TCP{SrcPort: 40000, DstPort: 22, Seq: 1000, Ack: 5000, ACK: true, PSH: true, Window: 512},
				gopacket.Payload([]byte("mid-stream")))})
			h.step()
			if got := len(b.take()); got != map[bool]int{true: 1}[c.passes] {
				t.Fatalf("%d segments reached b", got)
			}
			cnt, err := h.e.Counters("b")
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]uint64{false: 1}[c.passes]; cnt.Drops["firewall_invalid"] != want {
				t.Errorf("b drops %v, want firewall_invalid %d", cnt.Drops, want)
			}
			if want := map[bool]uint64{true: 1}[c.passes]; cnt.Drops["firewall_picked_up"] != want {
				t.Errorf("b counters %v, want firewall_picked_up %d", cnt.Drops, want)
			}
		})
	}
}
