package antispoof_test

import (
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/butterfly-go/butterfly/internal/antispoof"
	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/packet/packettest"
)

var (
	vmMAC    = packettest.MustMAC("52:54:00:12:34:56")
	otherMAC = packettest.MustMAC("52:54:00:65:43:21")
	peerMAC  = packettest.MustMAC("52:54:00:aa:aa:aa")
	vm4      = netip.MustParseAddr("10.0.0.5")
	vm4b     = netip.MustParseAddr("10.0.0.6")
	vm6      = netip.MustParseAddr("2001:db8::5")
	peer4    = netip.MustParseAddr("10.0.0.9")
	peer6    = netip.MustParseAddr("2001:db8::9")
	zero4    = netip.MustParseAddr("0.0.0.0")
	bcast4   = netip.MustParseAddr("255.255.255.255")
	vmLL     = antispoof.LinkLocalEUI64(vmMAC)
	solNode  = netip.MustParseAddr("ff02::1:ff00:5")
	allNodes = netip.MustParseAddr("ff02::1")
)

func flow(src, dst netip.Addr, sp, dp uint16) packettest.Flow {
	return packettest.Flow{SrcMAC: vmMAC, DstMAC: peerMAC, Src: src, Dst: dst, SrcPort: sp, DstPort: dp}
}

func TestLinkLocalEUI64(t *testing.T) {
	if got := antispoof.LinkLocalEUI64(vmMAC).String(); got != "fe80::5054:ff:fe12:3456" {
		t.Fatalf("LinkLocalEUI64 = %s", got)
	}
}

func TestCheck(t *testing.T) {
	arp := func(eth, sha packet.MAC, spa netip.Addr) []byte {
		return packettest.ARP(t, layers.EthernetTypeARP, eth, packet.BroadcastMAC, packet.ARPOpRequest, sha, spa, packet.MAC{}, peer4)
	}
	na := func(src, target netip.Addr, opts ...packettest.NDPOpt) []byte {
		return packettest.ICMPv6(t, flow(src, allNodes, 0, 0), packet.ICMPv6NeighborAdvert, 0, packettest.NDPBody(0x20, target, opts...))
	}
	tlla := func(m packet.MAC) packettest.NDPOpt {
		return packettest.NDPOpt{Type: packet.NDPOptTargetLinkAddr, MAC: m}
	}
	spoofedEth := packettest.UDP(t, flow(vm4, peer4, 1, 2), nil)
	packet.Ethernet(spoofedEth).SetSrc(otherMAC)
	rarp := packettest.ARP(t, layers.EthernetType(packet.EtherTypeRARP), vmMAC, packet.BroadcastMAC, packet.ARPOpRevRequest, vmMAC, zero4, vmMAC, zero4)
	badHrd := arp(vmMAC, vmMAC, vm4)
	badHrd[14+1] = 6 // hrd = 6 (IEEE 802)
	badPln := arp(vmMAC, vmMAC, vm4)
	badPln[14+5] = 16
	vlan := packettest.UDP(t, flow(vm4, peer4, 1, 2), nil)
	packet.Ethernet(vlan).SetType(packet.EtherTypeVLAN)
	badIPv4 := packettest.UDP(t, flow(vm4, peer4, 1, 2), nil)
	badIPv4[14] = 0x43
	truncNA := na(vmLL, vmLL)
	truncNA = truncNA[:len(truncNA)-8]
	packet.IPv6(truncNA[14:]).SetPayloadLen(packet.IPv6(truncNA[14:]).PayloadLen() - 8)
	badOpt := na(vmLL, vmLL, tlla(vmMAC))
	badOpt[len(badOpt)-7] = 0 // option length 0
	lldp := make([]byte, 60)
	packet.Ethernet(lldp).SetSrc(vmMAC)
	packet.Ethernet(lldp).SetType(0x88cc)
	mld2 := packettest.ICMPv6(t, flow(netip.IPv6Unspecified(), netip.MustParseAddr("ff02::16"), 0, 0), packet.ICMPv6MLDv2Report, 0, make([]byte, 4))
	echoFromUnspec := packettest.ICMPv6(t, flow(netip.IPv6Unspecified(), peer6, 0, 0), packet.ICMPv6EchoRequest, 0, make([]byte, 4))

	tests := []struct {
		name    string
		frame   []byte
		strict  antispoof.Reason // ip_anti_spoof on
		macOnly antispoof.Reason // ip_anti_spoof off
	}{
		{"runt", []byte{1, 2, 3}, antispoof.Runt, antispoof.Runt},
		{"good IPv4", packettest.UDP(t, flow(vm4, peer4, 1, 2), nil), antispoof.OK, antispoof.OK},
		{"second IPv4", packettest.TCP(t, flow(vm4b, peer4, 1, 2), packettest.TCPSeg{}), antispoof.OK, antispoof.OK},
		{"spoofed MAC", spoofedEth, antispoof.SrcMAC, antispoof.SrcMAC},
		{"RARP", rarp, antispoof.RARP, antispoof.RARP},
		{"spoofed IPv4 source", packettest.UDP(t, flow(peer4, vm4, 1, 2), nil), antispoof.IPv4Src, antispoof.OK},
		{"DHCP discover", packettest.UDP(t, packettest.Flow{SrcMAC: vmMAC, DstMAC: packet.BroadcastMAC, Src: zero4, Dst: bcast4, SrcPort: 68, DstPort: 67}, make([]byte, 300)), antispoof.OK, antispoof.OK},
		{"0.0.0.0 not DHCP ports", packettest.UDP(t, flow(zero4, bcast4, 68, 68), nil), antispoof.IPv4Src, antispoof.OK},
		{"0.0.0.0 not broadcast", packettest.UDP(t, flow(zero4, peer4, 68, 67), nil), antispoof.IPv4Src, antispoof.OK},
		{"malformed IPv4", badIPv4, antispoof.IPv4Malformed, antispoof.OK},
		{"ARP ok", arp(vmMAC, vmMAC, vm4), antispoof.OK, antispoof.OK},
		{"ARP probe 0.0.0.0", arp(vmMAC, vmMAC, zero4), antispoof.OK, antispoof.OK},
		{"ARP spoofed sender IP", arp(vmMAC, vmMAC, peer4), antispoof.ARPSenderIP, antispoof.OK},
		{"ARP spoofed sender MAC", arp(vmMAC, otherMAC, vm4), antispoof.ARPSenderMAC, antispoof.OK},
		{"ARP bad hrd", badHrd, antispoof.ARPMalformed, antispoof.OK},
		{"ARP bad pln", badPln, antispoof.ARPMalformed, antispoof.OK},
		{"ARP truncated", arp(vmMAC, vmMAC, vm4)[:14+20], antispoof.ARPMalformed, antispoof.OK},
		{"VLAN tagged", vlan, antispoof.VLAN, antispoof.OK},
		{"other EtherType", lldp, antispoof.OK, antispoof.OK},
		{"good IPv6", packettest.UDP(t, flow(vm6, peer6, 1, 2), nil), antispoof.OK, antispoof.OK},
		{"link-local IPv6", packettest.UDP(t, flow(netip.MustParseAddr("fe80::1234"), peer6, 1, 2), nil), antispoof.OK, antispoof.OK},
		{"spoofed IPv6", packettest.UDP(t, flow(peer6, vm6, 1, 2), nil), antispoof.IPv6Src, antispoof.OK},
		{"DAD NS from ::", packettest.ICMPv6(t, flow(netip.IPv6Unspecified(), solNode, 0, 0), packet.ICMPv6NeighborSolicit, 0, packettest.NDPBody(0, vm6)), antispoof.OK, antispoof.OK},
		{"MLDv2 report from ::", mld2, antispoof.OK, antispoof.OK},
		{"echo from ::", echoFromUnspec, antispoof.IPv6Src, antispoof.OK},
		{"UDP from ::", packettest.UDP(t, flow(netip.IPv6Unspecified(), peer6, 1, 2), nil), antispoof.IPv6Src, antispoof.OK},
		{"NA own global", na(vm6, vm6, tlla(vmMAC)), antispoof.OK, antispoof.OK},
		{"NA own link-local", na(vmLL, vmLL, tlla(vmMAC)), antispoof.OK, antispoof.OK},
		{"NA without TLLA", na(vmLL, vm6), antispoof.OK, antispoof.OK},
		{"NA foreign target", na(vmLL, peer6, tlla(vmMAC)), antispoof.NDPTarget, antispoof.OK},
		{"NA foreign link-local target", na(vmLL, netip.MustParseAddr("fe80::1"), tlla(vmMAC)), antispoof.NDPTarget, antispoof.OK},
		{"NA foreign TLLA", na(vmLL, vm6, tlla(otherMAC)), antispoof.NDPTargetLinkAddr, antispoof.OK},
		{"NA truncated", truncNA, antispoof.NDPMalformed, antispoof.OK},
		{"NA bad option", badOpt, antispoof.NDPMalformed, antispoof.OK},
		{"NA from spoofed source", na(peer6, vm6, tlla(vmMAC)), antispoof.IPv6Src, antispoof.OK},
	}
	ips := []netip.Addr{vm4, vm6, vm4b}
	strict := antispoof.NewConfig(vmMAC, ips, true)
	macOnly := antispoof.NewConfig(vmMAC, ips, false)
	for _, tt := range tests {
		if got := strict.Check(tt.frame); got != tt.strict {
			t.Errorf("%s (ip_anti_spoof): %v, want %v", tt.name, got, tt.strict)
		}
		if got := macOnly.Check(tt.frame); got != tt.macOnly {
			t.Errorf("%s (MAC only): %v, want %v", tt.name, got, tt.macOnly)
		}
	}
}

func TestNoIPv4(t *testing.T) {
	c := antispoof.NewConfig(vmMAC, []netip.Addr{vm6}, true)
	// With no IPv4 address only ARP probes and DHCP pass.
	if r := c.Check(packettest.ARP(t, layers.EthernetTypeARP, vmMAC, packet.BroadcastMAC, 1, vmMAC, vm4, packet.MAC{}, peer4)); r != antispoof.ARPSenderIP {
		t.Fatalf("ARP: %v", r)
	}
	if r := c.Check(packettest.UDP(t, flow(vm4, peer4, 1, 2), nil)); r != antispoof.IPv4Src {
		t.Fatalf("IPv4: %v", r)
	}
}

func TestConfigUpdate(t *testing.T) {
	frames := [][]byte{
		packettest.UDP(t, flow(vm4, peer4, 1, 2), nil),
		packettest.UDP(t, flow(vm4b, peer4, 1, 2), nil),
	}
	tests := []struct {
		name string
		ips  []netip.Addr
		want []antispoof.Reason
	}{
		{"one address", []netip.Addr{vm4}, []antispoof.Reason{antispoof.OK, antispoof.IPv4Src}},
		// nic_update adds the address (IPv4-mapped is taken as IPv4).
		{"address added", []netip.Addr{vm4, netip.MustParseAddr("::ffff:10.0.0.6")}, []antispoof.Reason{antispoof.OK, antispoof.OK}},
	}
	for _, tt := range tests {
		c := antispoof.NewConfig(vmMAC, tt.ips, true)
		for i, f := range frames {
			if got := c.Check(f); got != tt.want[i] {
				t.Errorf("%s: frame %d: %v, want %v", tt.name, i, got, tt.want[i])
			}
		}
		if !c.IPAntiSpoof() || c.MAC() != vmMAC {
			t.Fatal("Config accessors")
		}
	}
	if antispoof.NDPTarget.String() != "ndp_target" || antispoof.NumReasons.String() != "unknown" {
		t.Fatal("reason names")
	}
	for r := antispoof.Runt; r < antispoof.NumReasons; r++ {
		if r.String() == "unknown" || r.String() == "" {
			t.Errorf("reason %d has no name", r)
		}
	}
}

func TestZeroAllocs(t *testing.T) {
	c := antispoof.NewConfig(vmMAC, []netip.Addr{vm4, vm6}, true)
	na := packettest.ICMPv6(t, flow(vmLL, allNodes, 0, 0), packet.ICMPv6NeighborAdvert, 0,
		packettest.NDPBody(0x20, vm6, packettest.NDPOpt{Type: packet.NDPOptTargetLinkAddr, MAC: vmMAC}))
	frames := []*packet.Buf{
		packettest.Load(packettest.UDP(t, flow(vm4, peer4, 1, 2), nil)),
		packettest.Load(packettest.ARP(t, layers.EthernetTypeARP, vmMAC, packet.BroadcastMAC, 1, vmMAC, vm4, packet.MAC{}, peer4)),
		packettest.Load(na),
		packettest.Load(packettest.UDP(t, flow(peer6, vm6, 1, 2), nil)),
	}
	out := make([]antispoof.Reason, len(frames))
	if a := testing.AllocsPerRun(100, func() {
		for i, b := range frames {
			out[i] = c.Check(b.Bytes())
		}
	}); a != 0 {
		t.Fatalf("%v allocs", a)
	}
	if out[0] != antispoof.OK || out[1] != antispoof.OK || out[2] != antispoof.OK || out[3] != antispoof.IPv6Src {
		t.Fatalf("verdicts %v", out)
	}
}

func BenchmarkCheckIPv4(b *testing.B) {
	c := antispoof.NewConfig(vmMAC, []netip.Addr{vm4, vm4b, vm6}, true)
	fr := packettest.TCP(b, flow(vm4b, peer4, 1, 2), packettest.TCPSeg{})
	for b.Loop() {
		c.Check(fr)
	}
}
