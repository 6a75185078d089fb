package dataplane

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/butterfly-go/butterfly/internal/model"
)

// TestTraceAfterFirewall checks that a vNIC's trace records the frames it
// is given, after its firewall: a frame its firewall drops is not in the
// trace, an allowed one is, whether it comes from a vNIC of the same
// worker, from a vNIC of another worker (handoff) or from the network.
func TestTraceAfterFirewall(t *testing.T) {
	tests := []struct {
		name    string
		workers int
		remote  bool // the frames come from the network, not from vNIC a
	}{
		{name: "local", workers: 1},
		{name: "local handoff", workers: 2},
		{name: "from the network", workers: 1, remote: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{Workers: tc.workers}, true)
			g := model.SG{ID: "g", Rules: []model.Rule{udpRule(model.Inbound, 2000, "10.0.0.0/24", "")}}
			if err := h.e.SetSecurityGroups([]model.SG{openSG(), g}); err != nil {
				t.Fatal(err)
			}
			a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
			nb := nicOf("b", mac(2), 5, "10.0.0.2")
			nb.SecurityGroups, nb.PacketTrace, nb.TracePath = []string{"g"}, true, "/b.pcap"
			b := h.add(t, nb)
			if tc.workers > 1 && h.e.nics["a"].p.worker == h.e.nics["b"].p.worker {
				t.Fatal("a and b are owned by the same worker: the handoff path is not tested")
			}
			send := func(dport uint16) []byte {
				var f []byte
				if tc.remote {
					// from mac 9 (10.0.0.9) behind a remote VTEP
					f = build(t, eth(mac(2), mac(9), layers.EthernetTypeIPv4),
						&layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.IPv4(10, 0, 0, 9).To4(), DstIP: net.IPv4(10, 0, 0, 2).To4()},
						&layers.UDP{SrcPort: 1000, DstPort: layers.UDPPort(dport)}, gopacket.Payload([]byte("hello")))
					h.under.inject(frame{data: vxlanFrame(5, f), peer: netip.AddrPortFrom(remote, 4789)})
				} else {
					f = udpFlow(t, true, 1000, dport).data
					a.inject(frame{data: f})
				}
				h.step()
				return f
			}
			dropped := send(2001)
			allowed := send(2000)
			got := b.take()
			if len(got) != 1 || !bytes.Equal(got[0].data, allowed) {
				t.Fatalf("b received %d frames, want only the allowed one", len(got))
			}
			tr := h.traces["/b.pcap"]
			tr.mu.Lock()
			frames := tr.frames
			tr.mu.Unlock()
			for _, f := range frames {
				if bytes.Equal(f, dropped) {
					t.Error("the frame b's firewall dropped is in b's trace")
				}
			}
			if len(frames) != 1 || !bytes.Equal(frames[0], allowed) {
				t.Errorf("b's trace has %d frames, want exactly the allowed frame", len(frames))
			}
			c, err := h.e.Counters("b")
			if err != nil {
				t.Fatal(err)
			}
			if c.Drops["firewall_no_rule"] != 1 {
				t.Errorf("b drops %v, want firewall_no_rule 1", c.Drops)
			}
		})
	}
}
