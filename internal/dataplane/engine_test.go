package dataplane

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port"
)

func TestLocalSwitchingAndLearning(t *testing.T) {
	h := newHarness(t, Config{}, true)
	a := h.add(t, nicOf("a", mac(1), 10))
	b := h.add(t, nicOf("b", mac(2), 10))
	c := h.add(t, nicOf("c", mac(3), 10))

	// a -> b: b is unknown, so the frame floods to b, c and the group.
	f1 := udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 10, false)
	a.inject(frame{data: f1})
	h.step()
	if got := b.take(); len(got) != 1 || !bytes.Equal(got[0].data, f1) {
		t.Fatalf("b got %d frames, want the flooded frame", len(got))
	}
	if got := c.take(); len(got) != 1 {
		t.Fatalf("c got %d frames, want 1 (flood)", len(got))
	}
	if got := h.under.take(); len(got) != 1 || got[0].peer != netip.MustParseAddrPort("230.0.0.10:4789") {
		t.Fatalf("underlay got %v, want one datagram to the VNI group", got)
	}
	// b -> a: a was learned, so only a gets it.
	f2 := udp4(t, mac(1), mac(2), "10.0.0.2", "10.0.0.1", 10, false)
	b.inject(frame{data: f2})
	h.step()
	if got := a.take(); len(got) != 1 || !bytes.Equal(got[0].data, f2) {
		t.Fatalf("a got %d frames, want 1", len(got))
	}
	if n := len(c.take()) + len(h.under.take()); n != 0 {
		t.Fatalf("known unicast leaked to %d other ports", n)
	}
	// a -> b again: forwarded to b only, never to the underlay.
	a.inject(frame{data: f1})
	h.step()
	if len(b.take()) != 1 || len(c.take()) != 0 || len(h.under.take()) != 0 {
		t.Fatal("learned unicast not forwarded to b alone")
	}
}

func TestVNIIsolation(t *testing.T) {
	h := newHarness(t, Config{}, true)
	a := h.add(t, nicOf("a", mac(1), 10))
	b := h.add(t, nicOf("b", mac(2), 10))
	x := h.add(t, nicOf("x", mac(3), 20))
	bc := arp(t, mac(1), "10.0.0.1", "10.0.0.2")
	a.inject(frame{data: bc})
	a.inject(frame{data: udp4(t, mac(3), mac(1), "10.0.0.1", "10.0.0.3", 10, false)})
	h.step()
	if got := x.take(); len(got) != 0 {
		t.Fatalf("vNIC of VNI 20 got %d frames of VNI 10", len(got))
	}
	if got := b.take(); len(got) != 2 {
		t.Fatalf("b got %d frames, want 2 (broadcast + unknown unicast)", len(got))
	}
	for _, d := range h.under.take() {
		if vni := binary.BigEndian.Uint32(d.data[4:]) >> 8; vni != 10 {
			t.Fatalf("datagram VNI %d, want 10", vni)
		}
	}
	// From the network, VNI 20 only reaches x.
	h.under.inject(frame{data: vxlanFrame(20, arp(t, mac(9), "10.0.0.9", "10.0.0.3")), peer: netip.AddrPortFrom(remote, 4789)})
	h.step()
	if len(x.take()) != 1 || len(a.take()) != 0 || len(b.take()) != 0 {
		t.Fatal("VNI 20 broadcast from the network not delivered to x alone")
	}
}

func TestFloodHeadEnd(t *testing.T) {
	r2 := netip.MustParseAddr("192.0.2.3")
	h := newHarness(t, Config{HeadEnd: []netip.Addr{remote, r2}}, true)
	a := h.add(t, nicOf("a", mac(1), 7))
	if len(h.under.groups) != 0 {
		t.Fatalf("joined %v with head-end replication", h.under.groups)
	}
	a.inject(frame{data: arp(t, mac(1), "10.0.0.1", "10.0.0.2")})
	h.step()
	got := h.under.take()
	if len(got) != 2 || got[0].peer.Addr() != remote || got[1].peer.Addr() != r2 {
		t.Fatalf("head-end flood = %v, want one copy to each head-end", got)
	}
	if !bytes.Equal(got[0].data, got[1].data) {
		t.Fatal("head-end copies differ")
	}
}

func TestMulticastJoinLeave(t *testing.T) {
	h := newHarness(t, Config{}, true)
	g := netip.MustParseAddr("230.0.5.57") // VNI 1337
	h.add(t, nicOf("a", mac(1), 1337))
	h.add(t, nicOf("b", mac(2), 1337))
	if !h.under.joined(g) {
		t.Fatal("group not joined with the first vNIC")
	}
	h.e.DeleteNIC("a")
	if !h.under.joined(g) {
		t.Fatal("group left while a vNIC remains")
	}
	h.e.DeleteNIC("b")
	if h.under.joined(g) {
		t.Fatal("group not left with the last vNIC")
	}
}

func TestFloodGroups(t *testing.T) {
	for _, tc := range []struct {
		vni  uint32
		v6   bool
		want string
	}{
		{42, false, "230.0.0.42"},
		{1337, false, "230.0.5.57"},
		{42, true, "ff05::2a"},
		{0xabcdef, true, "ff05::ab:cdef"},
	} {
		if got := floodGroup(tc.vni, tc.v6); got != netip.MustParseAddr(tc.want) {
			t.Errorf("floodGroup(%d, v6=%v) = %v, want %s", tc.vni, tc.v6, got, tc.want)
		}
	}
}

func TestEncapDecapAndRemoteLearning(t *testing.T) {
	h := newHarness(t, Config{}, true)
	a := h.add(t, nicOf("a", mac(1), 42))
	peer := netip.AddrPortFrom(remote, 4789)
	// The remote VM (mac 9) says hello; a learns it, the FDB learns its VTEP.
	in := udp4(t, mac(1), mac(9), "10.0.0.9", "10.0.0.1", 20, false)
	h.under.inject(frame{data: vxlanFrame(42, in), peer: peer})
	h.step()
	got := a.take()
	if len(got) != 1 || !bytes.Equal(got[0].data, in) {
		t.Fatalf("a got %v, want the decapsulated frame", got)
	}
	out := udp4(t, mac(9), mac(1), "10.0.0.1", "10.0.0.9", 20, false)
	a.inject(frame{data: out})
	h.step()
	d := h.under.take()
	if len(d) != 1 {
		t.Fatalf("underlay got %d datagrams, want 1", len(d))
	}
	if d[0].peer != peer {
		t.Fatalf("sent to %v, want the learned VTEP %v", d[0].peer, peer)
	}
	if !bytes.Equal(d[0].data, vxlanFrame(42, out)) {
		t.Fatalf("datagram % x, want VXLAN(42)+frame", d[0].data[:16])
	}
}

func TestDecapDrops(t *testing.T) {
	h := newHarness(t, Config{}, true)
	a := h.add(t, nicOf("a", mac(1), 42))
	peer := netip.AddrPortFrom(remote, 4789)
	inner := arp(t, mac(9), "10.0.0.9", "10.0.0.1")
	bad := vxlanFrame(42, inner)
	bad[0] = 0 // I flag clear
	h.under.inject(
		frame{data: bad, peer: peer},
		frame{data: vxlanFrame(43, inner), peer: peer},
		frame{data: []byte{8, 0, 0}, peer: peer},
		frame{data: vxlanFrame(42, inner[:10]), peer: peer},
		frame{data: vxlanFrame(42, inner), peer: peer},
	)
	h.step()
	if got := a.take(); len(got) != 1 {
		t.Fatalf("a got %d frames, want only the valid one", len(got))
	}
	_, _, drops := h.e.decap.totals()
	for _, r := range []string{"vxlan_bad_flags", "vxlan_unknown_vni", "vxlan_short", "vxlan_short_inner"} {
		if n := dropsNamed(drops, r); n != 1 {
			t.Errorf("decap drops %s = %d, want 1", r, n)
		}
	}
}

func dropsNamed(d [numDrops]uint64, name string) uint64 {
	for r, v := range d {
		if dropName(dropReason(r)) == name {
			return v
		}
	}
	return 0
}

func TestAntispoof(t *testing.T) {
	tests := []struct {
		name   string
		nic    func(*model.NIC)
		frame  func(t *testing.T) []byte
		pass   bool
		reason string
	}{
		{"own MAC", nil, func(t *testing.T) []byte { return udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 5, false) }, true, ""},
		{"spoofed MAC", nil, func(t *testing.T) []byte { return udp4(t, mac(2), mac(7), "10.0.0.1", "10.0.0.2", 5, false) }, false, "antispoof_src_mac"},
		{"spoofed MAC, bypass", func(n *model.NIC) { n.Bypass = true }, func(t *testing.T) []byte { return udp4(t, mac(2), mac(7), "10.0.0.1", "10.0.0.2", 5, false) }, true, ""},
		{"RARP", nil, func(t *testing.T) []byte {
			f := arp(t, mac(1), "10.0.0.1", "10.0.0.2")
			f[12], f[13] = 0x80, 0x35
			return f
		}, false, "antispoof_rarp"},
		{"ARP wrong IP, ip_anti_spoof", func(n *model.NIC) { n.IPAntiSpoof = true }, func(t *testing.T) []byte { return arp(t, mac(1), "10.0.0.66", "10.0.0.2") }, false, "antispoof_arp_sender_ip"},
		{"ARP own IP, ip_anti_spoof", func(n *model.NIC) { n.IPAntiSpoof = true }, func(t *testing.T) []byte { return arp(t, mac(1), "10.0.0.1", "10.0.0.2") }, true, ""},
		{"ARP wrong IP, no ip_anti_spoof", nil, func(t *testing.T) []byte { return arp(t, mac(1), "10.0.0.66", "10.0.0.2") }, true, ""},
		{"ARP wrong IP, bypass", func(n *model.NIC) { n.IPAntiSpoof, n.Bypass = true, true }, func(t *testing.T) []byte { return arp(t, mac(1), "10.0.0.66", "10.0.0.2") }, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{}, true)
			n := nicOf("a", mac(1), 1, "10.0.0.1")
			if tc.nic != nil {
				tc.nic(&n)
			}
			a := h.add(t, n)
			b := h.add(t, nicOf("b", mac(2), 1, "10.0.0.2"))
			a.inject(frame{data: tc.frame(t)})
			h.step()
			got := len(b.take())
			if tc.pass && got != 1 {
				t.Fatalf("b got %d frames, want 1", got)
			}
			if !tc.pass && got != 0 {
				t.Fatalf("b got %d frames, want 0", got)
			}
			c, err := h.e.Counters("a")
			if err != nil {
				t.Fatal(err)
			}
			if c.RxPackets != 1 {
				t.Errorf("RxPackets = %d, want 1", c.RxPackets)
			}
			if !tc.pass && c.Drops[tc.reason] != 1 {
				t.Errorf("drops = %v, want %s: 1", c.Drops, tc.reason)
			}
		})
	}
}

func TestUpdateNICAntispoofLive(t *testing.T) {
	h := newHarness(t, Config{}, true)
	a := h.add(t, nicOf("a", mac(1), 1, "10.0.0.1"))
	b := h.add(t, nicOf("b", mac(2), 1))
	send := func() int {
		a.inject(frame{data: arp(t, mac(1), "10.0.0.5", "10.0.0.2")})
		h.step()
		return len(b.take())
	}
	if send() != 1 {
		t.Fatal("ARP dropped without ip_anti_spoof")
	}
	n := nicOf("a", mac(1), 1, "10.0.0.1")
	n.IPAntiSpoof = true
	if err := h.e.UpdateNIC(n); err != nil {
		t.Fatal(err)
	}
	if send() != 0 {
		t.Fatal("ARP from a foreign IP passed with ip_anti_spoof on")
	}
	n.IPs = append(n.IPs, netip.MustParseAddr("10.0.0.5"))
	if err := h.e.UpdateNIC(n); err != nil {
		t.Fatal(err)
	}
	if send() != 1 {
		t.Fatal("ARP dropped after its IP was added")
	}
}

func TestTooBigICMP(t *testing.T) {
	tests := []struct {
		name  string
		frame func(t *testing.T) []byte
		check func(t *testing.T, p gopacket.Packet)
	}{
		{"IPv4 DF", func(t *testing.T) []byte { return udp4(t, mac(9), mac(1), "10.0.0.1", "10.0.0.9", 1472, true) },
			func(t *testing.T, p gopacket.Packet) {
				ic, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
				if !ok {
					t.Fatalf("not ICMPv4: %v", p)
				}
				if ic.TypeCode != layers.CreateICMPv4TypeCode(3, 4) {
					t.Fatalf("type/code %v, want 3/4", ic.TypeCode)
				}
				if mtu := ic.Seq; mtu != 1450 {
					t.Fatalf("next-hop MTU %d, want 1450", mtu)
				}
			}},
		{"IPv6", func(t *testing.T) []byte { return udp6(t, mac(9), mac(1), "fd00::1", "fd00::9", 1452) },
			func(t *testing.T, p gopacket.Packet) {
				ic, ok := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
				if !ok {
					t.Fatalf("not ICMPv6: %v", p)
				}
				if ic.TypeCode.Type() != 2 {
					t.Fatalf("type %d, want 2", ic.TypeCode.Type())
				}
				if mtu := binary.BigEndian.Uint32(ic.Payload[0:4]); mtu != 1450 {
					t.Fatalf("MTU %d, want 1450", mtu)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{UnderlayMTU: 1500}, true)
			a := h.add(t, nicOf("a", mac(1), 5))
			// Let the switch know that mac 9 is remote.
			h.under.inject(frame{data: vxlanFrame(5, arp(t, mac(9), "10.0.0.9", "10.0.0.1")), peer: netip.AddrPortFrom(remote, 4789)})
			h.step()
			a.take()
			a.inject(frame{data: tc.frame(t)})
			// A frame that just fits passes.
			a.inject(frame{data: udp4(t, mac(9), mac(1), "10.0.0.1", "10.0.0.9", 1450-28, true)})
			h.step()
			got := a.take()
			if len(got) != 1 {
				t.Fatalf("sender got %d frames, want one ICMP error", len(got))
			}
			p := gopacket.NewPacket(got[0].data, layers.LayerTypeEthernet, gopacket.Default)
			tc.check(t, p)
			if e, m := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet), mac(1); !bytes.Equal(e.DstMAC, m[:]) {
				t.Fatalf("ICMP to %v, want the sender", e.DstMAC)
			}
			if d := h.under.take(); len(d) != 1 || len(d[0].data) != 8+1464 {
				t.Fatalf("underlay got %d datagrams, want only the one that fits", len(d))
			}
			if c, _ := h.e.Counters("a"); c.Drops["too_big"] != 1 {
				t.Fatalf("drops %v, want too_big 1", c.Drops)
			}
		})
	}
}

// tsoFrame builds a TCP/IPv4 super-frame with payload bytes, as a TAP
// with TSO hands it over: partial checksum (pseudo-header sum in the
// TCP checksum field) and a GSO size.
func tsoFrame(t testing.TB, dst, src [6]byte, payload, mss int) frame {
	data := make([]byte, payload)
	for i := range data {
		data[i] = byte(i)
	}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment,
		SrcIP: []byte{10, 0, 0, 1}, DstIP: []byte{10, 0, 0, 9}}
	tcp := &layers.TCP{SrcPort: 5201, DstPort: 40000, Seq: 1000, Ack: 1, ACK: true, PSH: true, Window: 500}
	f := build(t, eth(dst, src, layers.EthernetTypeIPv4), ip, tcp, gopacket.Payload(data))
	l4 := 14 + 20
	ps := packet.PseudoHeaderChecksum(packet.ProtoTCP, f[26:30], f[30:34], uint32(len(f)-l4))
	binary.BigEndian.PutUint16(f[l4+16:], ps)
	return frame{data: f, vnet: packet.VNetHdr{
		Flags: packet.VNetFlagNeedsCsum, GSOType: packet.GSOTCPv4, HdrLen: 54, GSOSize: uint16(mss),
		CsumStart: uint16(l4), CsumOffset: 16,
	}}
}

func TestTSOSegmentedBeforeEncap(t *testing.T) {
	h := newHarness(t, Config{UnderlayMTU: 1500}, true)
	a := h.add(t, bypassed(nicOf("a", mac(1), 5)))
	h.under.inject(frame{data: vxlanFrame(5, arp(t, mac(9), "10.0.0.9", "10.0.0.1")), peer: netip.AddrPortFrom(remote, 4789)})
	h.step()
	a.take()
	a.inject(tsoFrame(t, mac(9), mac(1), 4000, 1398))
	h.step()
	d := h.under.take()
	if len(d) != 3 {
		t.Fatalf("underlay got %d datagrams, want 3 segments", len(d))
	}
	total := 0
	for i, x := range d {
		inner := x.data[8:]
		p := gopacket.NewPacket(inner, layers.LayerTypeEthernet, gopacket.Default)
		ip4, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if ip4 == nil || tcp == nil {
			t.Fatalf("segment %d does not parse: %v", i, p)
		}
		seg := inner[34:]
		ps := packet.PseudoHeaderChecksum(packet.ProtoTCP, inner[26:30], inner[30:34], uint32(len(seg)))
		if packet.Checksum(seg, ps) != 0xffff {
			t.Errorf("segment %d: bad TCP checksum", i)
		}
		if !packet.IPv4(inner[14:]).IsChecksumValid() {
			t.Errorf("segment %d: bad IPv4 checksum", i)
		}
		if tcp.Seq != uint32(1000+total) {
			t.Errorf("segment %d: seq %d, want %d", i, tcp.Seq, 1000+total)
		}
		total += len(tcp.Payload)
		if x.vnet != (packet.VNetHdr{}) {
			t.Errorf("segment %d keeps offload metadata %+v", i, x.vnet)
		}
	}
	if total != 4000 {
		t.Fatalf("segments carry %d bytes, want 4000", total)
	}
}

func TestTSOBetweenLocalVNICsUntouched(t *testing.T) {
	h := newHarness(t, Config{}, true)
	a := h.add(t, bypassed(nicOf("a", mac(1), 5)))
	b := h.add(t, bypassed(nicOf("b", mac(9), 5)))
	f := tsoFrame(t, mac(9), mac(1), 30000, 1448)
	a.inject(f)
	h.step()
	got := b.take()
	if len(got) != 1 {
		t.Fatalf("b got %d frames, want the super-frame", len(got))
	}
	if !bytes.Equal(got[0].data, f.data) || got[0].vnet != f.vnet {
		t.Fatalf("super-frame changed on the way: vnet %+v, want %+v", got[0].vnet, f.vnet)
	}
}

func TestPacketTrace(t *testing.T) {
	h := newHarness(t, Config{TraceUnderlay: "/under.pcap"}, true)
	n := nicOf("a", mac(1), 5)
	n.PacketTrace, n.TracePath = true, "/a.pcap"
	a := h.add(t, n)
	b := h.add(t, nicOf("b", mac(2), 5))
	out := udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 10, false)
	in := udp4(t, mac(1), mac(2), "10.0.0.2", "10.0.0.1", 10, false)
	a.inject(frame{data: out})
	b.inject(frame{data: in})
	h.step()
	tr := h.traces["/a.pcap"]
	if len(tr.frames) != 2 || !bytes.Equal(tr.frames[0], out) || !bytes.Equal(tr.frames[1], in) {
		t.Fatalf("trace of a has %d frames, want both directions", len(tr.frames))
	}
	// The underlay trace holds full outer frames of the flood.
	ut := h.traces["/under.pcap"]
	if len(ut.frames) != 1 {
		t.Fatalf("underlay trace has %d frames, want 1", len(ut.frames))
	}
	p := gopacket.NewPacket(ut.frames[0], layers.LayerTypeEthernet, gopacket.Default)
	vx, ok := p.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
	if !ok || vx.VNI != 5 {
		t.Fatalf("underlay trace frame is not VXLAN VNI 5: %v", p)
	}
	if ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4); !ip.SrcIP.Equal(vtep4.AsSlice()) || ip.DstIP.String() != "230.0.0.5" {
		t.Fatalf("outer IP %v -> %v", ip.SrcIP, ip.DstIP)
	}
	// Trace off: the writer is closed and nothing more is captured.
	n.PacketTrace = false
	if err := h.e.UpdateNIC(n); err != nil {
		t.Fatal(err)
	}
	if !tr.closed.Load() {
		t.Fatal("trace writer not closed when trace was turned off")
	}
	a.inject(frame{data: out})
	h.step()
	if tr.n.Load() != 2 {
		t.Fatal("frames captured after trace was turned off")
	}
	// On again with another path.
	n.PacketTrace, n.TracePath = true, "/a2.pcap"
	if err := h.e.UpdateNIC(n); err != nil {
		t.Fatal(err)
	}
	a.inject(frame{data: out})
	h.step()
	if h.traces["/a2.pcap"].n.Load() != 1 {
		t.Fatal("trace not resumed after being turned on")
	}
}

func TestCountersAndStats(t *testing.T) {
	h := newHarness(t, Config{}, true)
	a := h.add(t, nicOf("a", mac(1), 5))
	b := h.add(t, nicOf("b", mac(2), 5))
	f := udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 100, false)
	for i := 0; i < 3; i++ {
		a.inject(frame{data: f})
	}
	a.inject(frame{data: udp4(t, mac(2), mac(8), "10.0.0.1", "10.0.0.2", 100, false)}) // spoofed
	h.step()
	b.take()
	sa, err := h.e.Stats("a")
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := h.e.Stats("b")
	if sa.In != uint64(4*len(f)) || sa.Out != 0 {
		t.Errorf("a stats %+v, want In %d Out 0", sa, 4*len(f))
	}
	if sb.Out != uint64(3*len(f)) || sb.In != 0 {
		t.Errorf("b stats %+v, want In 0 Out %d", sb, 3*len(f))
	}
	ca, _ := h.e.Counters("a")
	cb, _ := h.e.Counters("b")
	if ca.RxPackets != 4 || cb.TxPackets != 3 || ca.Drops["antispoof_src_mac"] != 1 {
		t.Errorf("counters a %+v b %+v", ca, cb)
	}
	b.reject = true
	a.inject(frame{data: f})
	h.step()
	if cb, _ := h.e.Counters("b"); cb.Drops["tx_full"] != 1 || cb.TxPackets != 3 {
		t.Errorf("after a refused write: %+v, want tx_full 1", cb)
	}
	if _, err := h.e.Stats("nope"); err == nil {
		t.Error("Stats of an unknown vNIC succeeded")
	}
}

func TestDOT(t *testing.T) {
	h := newHarness(t, Config{}, true)
	h.add(t, nicOf("a", mac(1), 5))
	n := nicOf("b", mac(2), 5)
	n.Bypass, n.PacketTrace, n.TracePath = true, true, "/b.pcap"
	h.add(t, n)
	c := nicOf("c", mac(3), 5)
	c.PacketTrace, c.TracePath = true, "/c.pcap"
	h.add(t, c)
	dot := h.e.DOT()
	for _, want := range []string{
		"strict graph G {", "rankdir=LR",
		`"port-rx:a" [ label="{ <west> | port-rx&#92;na |<east> }"];`,
		`"port-rx:a":east -- "antispoof:antispoof-a":west`,
		`"antispoof:antispoof-a":east -- "firewall:firewall-a":west`,
		`"firewall:firewall-a":east -- "switch:switch-5":west`,
		`"switch:switch-5":east -- "firewall:firewall-a":west`,
		`"firewall:firewall-a":east -- "port-tx:a":west`,
		`"switch:switch-5":east -- "trace:trace-b":west`,
		`"trace:trace-b":east -- "port-tx:b":west`,
		`"port-rx:b":east -- "trace:trace-b":west`,
		`"trace:trace-b":east -- "switch:switch-5":west`,
		// a filtering vNIC's trace: before antispoof from the VM, after
		// the firewall towards it
		`"port-rx:c":east -- "trace:trace-c":west`,
		`"trace:trace-c":east -- "antispoof:antispoof-c":west`,
		`"switch:switch-5":east -- "firewall:firewall-c":west`,
		`"firewall:firewall-c":east -- "trace:trace-c":west`,
		`"trace:trace-c":east -- "port-tx:c":west`,
		`"switch:switch-5":east -- "vxlan-encap:vtep4":west`,
		`"vxlan-encap:vtep4":east -- "underlay-tx:underlay":west`,
		`"underlay-rx:underlay":east -- "vxlan-decap:vtep4":west`,
		`"vxlan-decap:vtep4":east -- "switch:switch-5":west`,
	} {
		if !strings.Contains(dot, want) {
			t.Errorf("DOT lacks %q:\n%s", want, dot)
		}
	}
	if strings.Contains(dot, "antispoof-b") || strings.Contains(dot, "firewall-b") {
		t.Error("bypass vNIC shown with an antispoof or firewall element")
	}
	if strings.Contains(dot, `"switch:switch-5":east -- "trace:trace-c":west`) {
		t.Error("the trace of a filtering vNIC is shown before its firewall")
	}
}

func TestUnsupportedTypesAndDuplicates(t *testing.T) {
	h := newHarness(t, Config{}, true)
	for _, tc := range []struct {
		typ  model.NICType
		want string
	}{
		{model.NICBench, "BENCH vNICs are not supported"},
	} {
		n := nicOf("v", mac(1), 1)
		n.Type = tc.typ
		if _, err := h.e.AddNIC(n); err == nil || err.Error() != tc.want {
			t.Errorf("AddNIC(%v) = %v, want %q", tc.typ, err, tc.want)
		}
	}
	h.add(t, nicOf("a", mac(1), 1))
	if _, err := h.e.AddNIC(nicOf("a", mac(2), 1)); err == nil {
		t.Error("duplicate vNIC accepted")
	}
	if err := h.e.DeleteNIC("unknown"); err != nil {
		t.Errorf("DeleteNIC(unknown) = %v", err)
	}
	if err := h.e.UpdateNIC(nicOf("unknown", mac(1), 1)); err == nil {
		t.Error("UpdateNIC(unknown) succeeded")
	}
}

func TestTAPNames(t *testing.T) {
	h := newHarness(t, Config{}, true)
	for _, tc := range []struct{ id, want string }{
		{"nic1", "nic1"},
		{"a-very-long-vnic-identifier", "a-very-long-vni"},
		{"a-very-long-vnic-identifier-2", "a-very-long-v-1"},
		{"with/slash and space", "with-slash-and-"},
		{"", "vnic"},
	} {
		n := nicOf(tc.id, mac(1), 1)
		if tc.id == "" {
			n.ID = "x"
			got, err := h.e.tapName("")
			if err != nil || got != tc.want {
				t.Errorf("tapName(%q) = %q, %v; want %q", tc.id, got, err, tc.want)
			}
			continue
		}
		path, err := h.e.AddNIC(n)
		if err != nil || path != tc.want {
			t.Errorf("AddNIC(%q) path %q, %v; want %q", tc.id, path, err, tc.want)
		}
	}
}

// TestEntropySockets: flows spread over the underlay send sockets, and
// every frame of a flow leaves from the same socket (one UDP source port).
func TestEntropySockets(t *testing.T) {
	var socks []*fakePort
	h := &harness{under: &fakePort{}, ports: map[string]*fakePort{}, traces: map[string]*fakeTrace{}}
	e, err := newEngine(Config{VTEP: vtep4, UnderlayMTU: 1500, PoolSize: 256, Logger: quietLogger()}, hooks{
		manual:       true,
		openUnderlay: func(*Config) (underlay, error) { return h.under, nil },
		openEntropy: func(*Config) (underlay, error) {
			p := &fakePort{}
			socks = append(socks, p)
			return p, nil
		},
		openTAP: func(name string, offload bool) (port.Port, string, error) {
			p := &fakePort{}
			h.ports[name] = p
			return p, name, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	h.e = e
	if err := e.SetSecurityGroups([]model.SG{openSG()}); err != nil {
		t.Fatal(err)
	}
	socks = append([]*fakePort{h.under}, socks...)
	if len(socks) != 1+entropySockets {
		t.Fatalf("%d send sockets, want %d", len(socks), 1+entropySockets)
	}
	a := h.add(t, nicOf("a", mac(1), 5))
	learnRemote(t, h, 5)
	flow := func(port uint16) []byte {
		return build(t, eth(mac(9), mac(1), layers.EthernetTypeIPv4),
			&layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: []byte{10, 0, 0, 1}, DstIP: []byte{10, 0, 0, 9}},
			&layers.UDP{SrcPort: layers.UDPPort(port), DstPort: 53}, gopacket.Payload([]byte("x")))
	}
	for round := 0; round < 3; round++ {
		for p := uint16(1000); p < 1032; p++ {
			a.inject(frame{data: flow(p)})
		}
		h.step()
	}
	seen := map[string]int{}
	used := 0
	for i, s := range socks {
		out := s.take()
		if len(out) > 0 {
			used++
		}
		for _, f := range out {
			key := string(f.data)
			if prev, ok := seen[key]; ok && prev != i {
				t.Fatalf("a flow left from sockets %d and %d", prev, i)
			}
			seen[key] = i
		}
	}
	if len(seen) != 32 {
		t.Fatalf("%d distinct flows sent, want 32", len(seen))
	}
	if used < 3 {
		t.Fatalf("32 flows used %d of %d sockets", used, len(socks))
	}
}

// TestCloseTogether: Close closes the vNICs' ports together, not one
// after the other (the kernel takes about 15 ms to remove a TAP device,
// mostly waiting; 1,000 took 19 s in a row): each port's Close here
// returns only once every port is in its Close, and every port ends
// closed.
func TestCloseTogether(t *testing.T) {
	const nics = 8
	h := newHarness(t, Config{}, true)
	var (
		mu      sync.Mutex
		in      int
		all     = make(chan struct{})
		waitFor = time.After(5 * time.Second)
		timeout = make(chan struct{})
		late    sync.Once
	)
	var ports []*fakePort
	for i := range nics {
		p := h.add(t, nicOf(fmt.Sprintf("n%d", i), [6]byte{0x02, 0, 0, 0, 0, byte(i + 1)}, 7, fmt.Sprintf("10.7.0.%d", i+1)))
		p.closing = func() {
			mu.Lock()
			if in++; in == nics {
				close(all)
			}
			mu.Unlock()
			select {
			case <-all:
			case <-timeout:
			case <-waitFor:
				late.Do(func() { close(timeout) })
			}
		}
		ports = append(ports, p)
	}
	if err := h.e.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-timeout:
		t.Fatalf("Close closed the ports one at a time: a port waited 5 s in its Close for the %d others", nics-1)
	default:
	}
	for i, p := range ports {
		if !p.closed.Load() {
			t.Errorf("port %d not closed", i)
		}
	}
}
