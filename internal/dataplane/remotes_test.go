package dataplane

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// TestHeadEndDropsUnknownSources: with --vxlan-peers, datagrams from an
// address that is not a peer never reach a vNIC and are counted.
func TestHeadEndDropsUnknownSources(t *testing.T) {
	h := newHarness(t, Config{HeadEnd: []netip.Addr{remote}}, true)
	a := h.add(t, nicOf("a", mac(1), 42))
	inner := arp(t, mac(9), "10.0.0.9", "10.0.0.1")
	stranger := netip.AddrPortFrom(netip.MustParseAddr("198.51.100.7"), 4789)
	h.under.inject(frame{data: vxlanFrame(42, inner), peer: stranger},
		frame{data: vxlanFrame(42, inner), peer: netip.AddrPortFrom(remote, 4789)})
	h.step()
	if got := a.take(); len(got) != 1 {
		t.Fatalf("a got %d frames, want the peer's only", len(got))
	}
	_, _, drops := h.e.decap.totals()
	if n := dropsNamed(drops, "vxlan_unknown_source"); n != 1 {
		t.Errorf("vxlan_unknown_source = %d, want 1", n)
	}
}

// TestMulticastAcceptsAnySource: without head-end or cluster mode (a
// multicast underlay) every source is accepted, as before.
func TestMulticastAcceptsAnySource(t *testing.T) {
	h := newHarness(t, Config{}, true)
	a := h.add(t, nicOf("a", mac(1), 42))
	h.under.inject(frame{data: vxlanFrame(42, arp(t, mac(9), "10.0.0.9", "10.0.0.1")),
		peer: netip.AddrPortFrom(netip.MustParseAddr("198.51.100.7"), 4789)})
	h.step()
	if got := a.take(); len(got) != 1 {
		t.Fatalf("a got %d frames, want 1", len(got))
	}
}

// TestClusterRemotes: in cluster mode no group is joined, nothing is
// accepted or flooded before SetRemotes, then each VNI floods to its own
// list only, lists follow later calls, and sources outside the cluster
// are dropped and counted.
func TestClusterRemotes(t *testing.T) {
	r2 := netip.MustParseAddr("192.0.2.3")
	r3 := netip.MustParseAddr("192.0.2.4")
	h := newHarness(t, Config{Cluster: true}, true)
	a := h.add(t, nicOf("a", mac(1), 7))
	b := h.add(t, nicOf("b", mac(2), 8))
	if len(h.under.groups) != 0 {
		t.Fatalf("joined %v in cluster mode", h.under.groups)
	}
	bcast := func(p *fakePort, m byte) []netip.Addr {
		t.Helper()
		p.inject(frame{data: arp(t, mac(m), "10.0.0.1", "10.0.0.2")})
		h.step()
		var to []netip.Addr
		for _, f := range h.under.take() {
			to = append(to, f.peer.Addr())
		}
		return to
	}
	if got := bcast(a, 1); len(got) != 0 {
		t.Fatalf("flooded to %v before SetRemotes", got)
	}
	inner := arp(t, mac(9), "10.0.0.9", "10.0.0.1")
	h.under.inject(frame{data: vxlanFrame(7, inner), peer: netip.AddrPortFrom(remote, 4789)})
	h.step()
	if got := a.take(); len(got) != 0 {
		t.Fatal("accepted a datagram before SetRemotes")
	}

	if err := h.e.SetRemotes(Remotes{
		Sources: []netip.Addr{remote, r2, r3},
		Flood:   map[uint32][]netip.Addr{7: {remote, r2}, 8: {r3}, 9: {r2}},
	}); err != nil {
		t.Fatal(err)
	}
	if got := bcast(a, 1); len(got) != 2 || got[0] != remote || got[1] != r2 {
		t.Fatalf("VNI 7 flooded to %v, want [%v %v]", got, remote, r2)
	}
	if got := bcast(b, 2); len(got) != 1 || got[0] != r3 {
		t.Fatalf("VNI 8 flooded to %v, want [%v]", got, r3)
	}
	// A VNI that appears later takes its list from the last call.
	c := h.add(t, nicOf("c", mac(3), 9))
	if got := bcast(c, 3); len(got) != 1 || got[0] != r2 {
		t.Fatalf("VNI 9 flooded to %v, want [%v]", got, r2)
	}
	h.under.inject(frame{data: vxlanFrame(7, inner), peer: netip.AddrPortFrom(r2, 4789)},
		frame{data: vxlanFrame(7, inner), peer: netip.AddrPortFrom(netip.MustParseAddr("198.51.100.7"), 4789)})
	h.step()
	if got := a.take(); len(got) != 1 {
		t.Fatalf("a got %d frames, want the cluster node's only", len(got))
	}

	// r2 leaves: VNI 7 floods to remote alone, r2's datagrams are dropped.
	if err := h.e.SetRemotes(Remotes{Sources: []netip.Addr{remote, r3}, Flood: map[uint32][]netip.Addr{7: {remote}}}); err != nil {
		t.Fatal(err)
	}
	if got := bcast(a, 1); len(got) != 1 || got[0] != remote {
		t.Fatalf("VNI 7 flooded to %v after r2 left, want [%v]", got, remote)
	}
	if got := bcast(b, 2); len(got) != 0 {
		t.Fatalf("VNI 8 flooded to %v, want nowhere", got)
	}
	h.under.inject(frame{data: vxlanFrame(7, inner), peer: netip.AddrPortFrom(r2, 4789)})
	h.step()
	if got := a.take(); len(got) != 0 {
		t.Fatal("a datagram of a node that left was delivered")
	}
	_, _, drops := h.e.decap.totals()
	if n := dropsNamed(drops, "vxlan_unknown_source"); n != 3 {
		t.Errorf("vxlan_unknown_source = %d, want 3", n)
	}
	if err := h.e.SetRemotes(Remotes{Sources: []netip.Addr{netip.MustParseAddr("fd00::1")}}); err == nil {
		t.Error("SetRemotes accepted an IPv6 source with an IPv4 VTEP")
	}
}

func TestSetRemotesNeedsClusterMode(t *testing.T) {
	h := newHarness(t, Config{}, true)
	if err := h.e.SetRemotes(Remotes{}); err == nil {
		t.Fatal("SetRemotes succeeded outside cluster mode")
	}
	if _, err := newEngine(Config{VTEP: vtep4, Cluster: true, HeadEnd: []netip.Addr{remote}}, hooks{}); err == nil {
		t.Fatal("cluster mode with head-end VTEPs accepted")
	}
}

// TestClusterRemoteMACs: unicast to another node's vNIC MAC goes to that
// node alone, not to the VNI's flood list; other unknown MACs and
// broadcast still flood.
func TestClusterRemoteMACs(t *testing.T) {
	r2 := netip.MustParseAddr("192.0.2.3")
	h := newHarness(t, Config{Cluster: true}, true)
	a := h.add(t, nicOf("a", mac(1), 7))
	if err := h.e.SetRemotes(Remotes{
		Sources: []netip.Addr{remote, r2},
		Flood:   map[uint32][]netip.Addr{7: {remote, r2}},
		MACs:    map[uint32][]RemoteMAC{7: {{MAC: mac(9), VTEP: r2}}, 8: {{MAC: mac(8), VTEP: remote}}},
	}); err != nil {
		t.Fatal(err)
	}
	send := func(dst [6]byte) []netip.Addr {
		t.Helper()
		a.inject(frame{data: udp4(t, dst, mac(1), "10.0.0.1", "10.0.0.9", 20, false)})
		h.step()
		var to []netip.Addr
		for _, f := range h.under.take() {
			to = append(to, f.peer.Addr())
		}
		return to
	}
	if got := send(mac(9)); len(got) != 1 || got[0] != r2 {
		t.Fatalf("unicast to a remote vNIC's MAC went to %v, want [%v]", got, r2)
	}
	if got := send(mac(8)); len(got) != 2 {
		t.Fatalf("unicast to a MAC of another VNI went to %v, want the flood list", got)
	}
	if got := send([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}); len(got) != 2 {
		t.Fatalf("broadcast went to %v, want the flood list", got)
	}
}

// TestClusterARPSuppression: an ARP request for a known vNIC address is
// answered to the asking vNIC and never crosses the underlay; unknown
// addresses, gratuitous ARP and addresses claimed by two MACs flood.
func TestClusterARPSuppression(t *testing.T) {
	h := newHarness(t, Config{Cluster: true}, true)
	a := h.add(t, nicOf("a", mac(1), 7))
	if err := h.e.SetRemotes(Remotes{
		Sources: []netip.Addr{remote},
		Flood:   map[uint32][]netip.Addr{7: {remote}},
		Neighbors: map[uint32][]Neighbor{7: {
			{IP: netip.MustParseAddr("10.0.0.9"), MAC: mac(9)},
			{IP: netip.MustParseAddr("10.0.0.7"), MAC: mac(7)},
			{IP: netip.MustParseAddr("10.0.0.7"), MAC: mac(8)},
		}},
	}); err != nil {
		t.Fatal(err)
	}
	a.inject(frame{data: arp(t, mac(1), "10.0.0.1", "10.0.0.9")})
	h.step()
	if got := h.under.take(); len(got) != 0 {
		t.Fatalf("a suppressed ARP request crossed the underlay: %d datagrams", len(got))
	}
	got := a.take()
	if len(got) != 1 {
		t.Fatalf("a got %d frames, want the ARP reply", len(got))
	}
	e := packet.Ethernet(got[0].data)
	r := packet.ARP(e.Payload())
	if e.Dst() != packet.MAC(mac(1)) || e.Src() != packet.MAC(mac(9)) || e.Type() != packet.EtherTypeARP ||
		r.Op() != packet.ARPOpReply || r.SenderMAC() != packet.MAC(mac(9)) || r.SenderIP() != netip.MustParseAddr("10.0.0.9") ||
		r.TargetMAC() != packet.MAC(mac(1)) || r.TargetIP() != netip.MustParseAddr("10.0.0.1") {
		t.Fatalf("reply % x", got[0].data)
	}
	for _, tc := range []struct{ name, sip, tip string }{
		{"unknown", "10.0.0.1", "10.0.0.3"},
		{"gratuitous", "10.0.0.9", "10.0.0.9"},
		{"conflict", "10.0.0.1", "10.0.0.7"},
	} {
		a.inject(frame{data: arp(t, mac(1), tc.sip, tc.tip)})
		h.step()
		if got := h.under.take(); len(got) != 1 {
			t.Errorf("%s ARP: %d datagrams, want the flood", tc.name, len(got))
		}
		if got := a.take(); len(got) != 0 {
			t.Errorf("%s ARP answered", tc.name)
		}
	}
}

// nsFrame builds a neighbour solicitation from mac/sip for tip, to its
// solicited-node multicast group, with the source link-layer option.
func nsFrame(t testing.TB, src [6]byte, sip, tip string) []byte {
	target := netip.MustParseAddr(tip).As16()
	group := netip.AddrFrom16([16]byte{0xff, 0x02, 10: 0, 11: 1, 12: 0xff, 13: target[13], 14: target[14], 15: target[15]})
	ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolICMPv6, HopLimit: 255,
		SrcIP: net.ParseIP(sip), DstIP: group.AsSlice()}
	ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborSolicitation, 0)}
	ic.SetNetworkLayerForChecksum(ip)
	ns := &layers.ICMPv6NeighborSolicitation{TargetAddress: target[:],
		Options: layers.ICMPv6Options{{Type: layers.ICMPv6OptSourceAddress, Data: src[:]}}}
	dst := [6]byte{0x33, 0x33, 0xff, target[13], target[14], target[15]}
	return build(t, eth(dst, src, layers.EthernetTypeIPv6), ip, ic, ns)
}

// TestClusterNSSuppression: a neighbour solicitation for a known vNIC
// address is answered with an NA to the asking vNIC, never crossing the
// underlay; DAD and unknown targets flood.
func TestClusterNSSuppression(t *testing.T) {
	h := newHarness(t, Config{Cluster: true}, true)
	a := h.add(t, nicOf("a", mac(1), 7))
	if err := h.e.SetRemotes(Remotes{
		Sources:   []netip.Addr{remote},
		Flood:     map[uint32][]netip.Addr{7: {remote}},
		Neighbors: map[uint32][]Neighbor{7: {{IP: netip.MustParseAddr("fd00::9"), MAC: mac(9)}}},
	}); err != nil {
		t.Fatal(err)
	}
	a.inject(frame{data: nsFrame(t, mac(1), "fd00::1", "fd00::9")})
	h.step()
	if got := h.under.take(); len(got) != 0 {
		t.Fatalf("a suppressed NS crossed the underlay: %d datagrams", len(got))
	}
	got := a.take()
	if len(got) != 1 {
		t.Fatalf("a got %d frames, want the NA", len(got))
	}
	p := gopacket.NewPacket(got[0].data, layers.LayerTypeEthernet, gopacket.Default)
	na, _ := p.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement)
	ip, _ := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	if na == nil || ip == nil || !na.TargetAddress.Equal(net.ParseIP("fd00::9")) || !ip.DstIP.Equal(net.ParseIP("fd00::1")) ||
		packet.Ethernet(got[0].data).Src() != packet.MAC(mac(9)) || packet.Ethernet(got[0].data).Dst() != packet.MAC(mac(1)) {
		t.Fatalf("reply: %v", p)
	}
	for _, tc := range []struct{ name, sip, tip string }{
		{"unknown", "fd00::1", "fd00::3"},
		{"duplicate address detection", "::", "fd00::9"},
	} {
		a.inject(frame{data: nsFrame(t, mac(1), tc.sip, tc.tip)})
		h.step()
		if got := h.under.take(); len(got) != 1 {
			t.Errorf("%s NS: %d datagrams, want the flood", tc.name, len(got))
		}
		if got := a.take(); len(got) != 0 {
			t.Errorf("%s NS answered", tc.name)
		}
	}
}

// TestExplainCluster: explain tells what cluster mode does: questions
// answered by the switch, unicast to another node's vNIC sent there
// alone, the rest flooded to the VNI's nodes.
func TestExplainCluster(t *testing.T) {
	h := clusterHarness(t)
	h.add(t, nicOf("a", mac(1), 5, "10.0.0.1", "fd00::1"))
	tests := []struct {
		name, verdict, step string
		frame               []byte
	}{
		{"arp", "answered by the switch", "asks for 10.0.0.9", arp(t, mac(1), "10.0.0.1", "10.0.0.9")},
		{"ns", "answered by the switch", "asks for fd00::9", nsFrame(t, mac(1), "fd00::1", "fd00::9")},
		{"remote mac", "deliver ", "sent there alone", udp4(t, mac(9), mac(1), "10.0.0.1", "10.0.0.9", 10, false)},
		{"unknown arp", "deliver ", "flood", arp(t, mac(1), "10.0.0.1", "10.0.0.3")},
	}
	for _, tt := range tests {
		x, err := h.e.Explain("a", tt.frame)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		all := strings.Join(x.Steps, "\n")
		if !strings.HasPrefix(x.Verdict, tt.verdict) || !strings.Contains(all, tt.step) {
			t.Errorf("%s: verdict %q, steps:\n%s", tt.name, x.Verdict, all)
		}
	}
}
