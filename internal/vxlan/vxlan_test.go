package vxlan_test

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/packet/packettest"
	"github.com/butterfly-go/butterfly/internal/vxlan"
)

var (
	macA = packettest.MustMAC("52:54:00:00:00:0a")
	macB = packettest.MustMAC("52:54:00:00:00:0b")
	flow = packettest.Flow{SrcMAC: macA, DstMAC: macB, Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: 1, DstPort: 2}
)

func inner(t testing.TB) []byte { return packettest.UDP(t, flow, []byte("inner payload")) }

func TestEncapDecapRoundTrip(t *testing.T) {
	in := inner(t)
	for _, vni := range []uint32{0, 1, 42, 1337, vxlan.MaxVNI} {
		b := packettest.Load(in)
		if !vxlan.Encap(b, vni) {
			t.Fatal("Encap failed")
		}
		if b.Len() != len(in)+8 {
			t.Fatalf("length %d", b.Len())
		}
		// gopacket reads the header we wrote.
		var g layers.VXLAN
		if err := g.DecodeFromBytes(b.Bytes(), gopacket.NilDecodeFeedback); err != nil {
			t.Fatal(err)
		}
		if !g.ValidIDFlag || g.VNI != vni || g.GBPExtension || !bytes.Equal(g.Payload, in) {
			t.Fatalf("gopacket: %+v", g)
		}
		got, r := vxlan.Decap(b, func(v uint32) bool { return v == vni })
		if r != vxlan.DropNone || got != vni || !bytes.Equal(b.Bytes(), in) {
			t.Fatalf("Decap = %d %v", got, r)
		}
	}
}

func TestEncapNoHeadroom(t *testing.T) {
	b := packettest.Load(inner(t))
	b.Prepend(packet.Headroom - 4)
	before := append([]byte(nil), b.Bytes()...)
	if vxlan.Encap(b, 1) || !bytes.Equal(b.Bytes(), before) {
		t.Fatal("Encap without headroom succeeded or changed the frame")
	}
	if encapFull(b, 1, &vxlan.Outer{Src: netip.MustParseAddrPort("192.0.2.1:1"), Dst: netip.MustParseAddrPort("192.0.2.2:2")}) {
		t.Fatal("encapFull without headroom succeeded")
	}
}

func TestDecapRejects(t *testing.T) {
	valid := func() []byte {
		b := make([]byte, 8, 100)
		vxlan.Header(b).Encode(42)
		return append(b, inner(t)...)
	}
	mut := func(f func([]byte) []byte) []byte { return f(valid()) }
	tests := []struct {
		name string
		data []byte
		want vxlan.DropReason
	}{
		{"short", []byte{8, 0, 0, 0, 0, 0}, vxlan.DropShort},
		{"I flag clear", mut(func(b []byte) []byte { b[0] = 0; return b }), vxlan.DropBadFlags},
		{"GBP flag", mut(func(b []byte) []byte { b[0] |= 0x80; return b }), vxlan.DropBadFlags},
		{"reserved byte 1", mut(func(b []byte) []byte { b[1] = 1; return b }), vxlan.DropBadFlags},
		{"reserved byte 3", mut(func(b []byte) []byte { b[3] = 1; return b }), vxlan.DropBadFlags},
		{"reserved last byte", mut(func(b []byte) []byte { b[7] = 1; return b }), vxlan.DropBadFlags},
		{"unknown VNI", mut(func(b []byte) []byte { vxlan.Header(b).Encode(43); return b }), vxlan.DropUnknownVNI},
		{"short inner", mut(func(b []byte) []byte { return b[:8+13] }), vxlan.DropShortInner},
		{"ok", valid(), vxlan.DropNone},
	}
	for _, tt := range tests {
		b := packettest.Load(tt.data)
		_, r := vxlan.Decap(b, func(v uint32) bool { return v == 42 })
		if r != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, r, tt.want)
		}
		if r != vxlan.DropNone && !bytes.Equal(b.Bytes(), tt.data) {
			t.Errorf("%s: rejected buffer modified", tt.name)
		}
	}
	if vxlan.DropUnknownVNI.String() != "unknown_vni" {
		t.Fatal("String")
	}
}

func TestMulticastGroups(t *testing.T) {
	tests := []struct {
		vni  uint32
		v4   string
		v6   string
		mac4 string
		mac6 string
	}{
		{42, "230.0.0.42", "ff00::2a", "01:00:5e:00:00:2a", "33:33:00:00:00:2a"},
		{1337, "230.0.5.57", "ff00::539", "01:00:5e:00:05:39", "33:33:00:00:05:39"},
		{0xffffff, "230.255.255.255", "ff00::ff:ffff", "01:00:5e:7f:ff:ff", "33:33:00:ff:ff:ff"},
	}
	for _, tt := range tests {
		g4, g6 := vxlan.MulticastGroup(tt.vni, false), vxlan.MulticastGroup(tt.vni, true)
		if g4.String() != tt.v4 || g6.String() != tt.v6 || !g4.IsMulticast() || !g6.IsMulticast() {
			t.Errorf("vni %d: %v %v", tt.vni, g4, g6)
		}
		if m := vxlan.MulticastMAC(g4).String(); m != tt.mac4 {
			t.Errorf("vni %d: v4 MAC %s", tt.vni, m)
		}
		if m := vxlan.MulticastMAC(g6).String(); m != tt.mac6 {
			t.Errorf("vni %d: v6 MAC %s", tt.vni, m)
		}
	}
}

func TestInnerMTU(t *testing.T) {
	tests := []struct {
		mtu, want int
		v6        bool
	}{
		{1500, 1450, false},
		{1500, 1430, true},
		{1550, 1500, false},
		{9000, 8950, false},
		{9000, 8930, true},
	}
	for _, tt := range tests {
		if got := vxlan.InnerMTU(tt.mtu, tt.v6); got != tt.want {
			t.Errorf("InnerMTU(%d, v6=%v) = %d, want %d", tt.mtu, tt.v6, got, tt.want)
		}
	}
	// An inner IP packet of InnerMTU bytes makes an outer IP packet of
	// exactly the underlay MTU.
	for _, o := range []*vxlan.Outer{
		{Src: netip.MustParseAddrPort("192.0.2.1:4789"), Dst: netip.MustParseAddrPort("192.0.2.2:4789")},
		{Src: netip.MustParseAddrPort("[2001:db8::1]:4789"), Dst: netip.MustParseAddrPort("[2001:db8::2]:4789")},
	} {
		v6 := o.Dst.Addr().Is6()
		b := packettest.Load(packettest.UDP(t, flow, make([]byte, vxlan.InnerMTU(1500, v6)-packet.IPv4MinLen-packet.UDPLen)))
		if !encapFull(b, 1, o) {
			t.Fatal("encapFull failed")
		}
		if got := b.Len() - packet.EthernetLen; got != 1500 {
			t.Errorf("v6=%v: outer IP packet of %d bytes, want 1500", v6, got)
		}
	}
}

func TestFullEncoder(t *testing.T) {
	in := inner(t)
	tests := []struct {
		name     string
		src, dst netip.AddrPort
	}{
		{"ipv4 unicast", netip.MustParseAddrPort("192.0.2.1:4789"), netip.MustParseAddrPort("192.0.2.2:4789")},
		{"ipv4 multicast", netip.MustParseAddrPort("192.0.2.1:50000"), netip.AddrPortFrom(vxlan.MulticastGroup4(42), 4789)},
		{"ipv6 unicast", netip.MustParseAddrPort("[2001:db8::1]:4789"), netip.MustParseAddrPort("[2001:db8::2]:4789")},
		{"ipv6 multicast", netip.MustParseAddrPort("[2001:db8::1]:4789"), netip.AddrPortFrom(vxlan.MulticastGroup6(42), 4789)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := packettest.Load(in)
			o := &vxlan.Outer{SrcMAC: macA, Src: tt.src, Dst: tt.dst, ID: 7}
			if !tt.dst.Addr().IsMulticast() {
				o.DstMAC = macB
			}
			if !encapFull(b, 42, o) {
				t.Fatal("encapFull failed")
			}
			p := packettest.Decode(b.Bytes())
			packettest.VerifyChecksums(t, p)
			eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
			if !ok {
				t.Fatalf("no UDP: %v", p.Layers())
			}
			vx, ok := p.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
			if !ok || vx.VNI != 42 || !vx.ValidIDFlag {
				t.Fatalf("VXLAN layer %v", vx)
			}
			wantMAC := macB
			if tt.dst.Addr().IsMulticast() {
				wantMAC = vxlan.MulticastMAC(tt.dst.Addr())
			}
			if !bytes.Equal(eth.DstMAC, wantMAC[:]) || !bytes.Equal(eth.SrcMAC, macA[:]) {
				t.Fatalf("outer MACs %v -> %v", eth.SrcMAC, eth.DstMAC)
			}
			if uint16(u.DstPort) != tt.dst.Port() || uint16(u.SrcPort) != tt.src.Port() {
				t.Fatalf("ports %d -> %d", u.SrcPort, u.DstPort)
			}
			switch ip := p.NetworkLayer().(type) {
			case *layers.IPv4:
				if !ip.SrcIP.Equal(net.IP(tt.src.Addr().AsSlice())) || !ip.DstIP.Equal(net.IP(tt.dst.Addr().AsSlice())) || ip.Id != 7 || ip.TTL != 64 {
					t.Fatalf("outer IPv4 %+v", ip)
				}
			case *layers.IPv6:
				if !ip.SrcIP.Equal(net.IP(tt.src.Addr().AsSlice())) || !ip.DstIP.Equal(net.IP(tt.dst.Addr().AsSlice())) {
					t.Fatalf("outer IPv6 %+v", ip)
				}
				if u.Checksum == 0 {
					t.Fatal("IPv6 outer UDP checksum is zero")
				}
			}
			src, dst, payload, ok := parseOuter(b.Bytes())
			if !ok || src != tt.src || dst != tt.dst {
				t.Fatalf("parseOuter = %v %v %v", src, dst, ok)
			}
			pb := packettest.Load(payload)
			if vni, r := vxlan.Decap(pb, nil); r != vxlan.DropNone || vni != 42 || !bytes.Equal(pb.Bytes(), in) {
				t.Fatalf("decap of parsed payload: %d %v", vni, r)
			}
			// Corrupting the payload breaks the IPv6 checksum.
			if tt.dst.Addr().Is6() {
				b.Bytes()[len(b.Bytes())-1] ^= 0xff
				if _, _, _, ok := parseOuter(b.Bytes()); ok {
					t.Fatal("bad UDP checksum accepted")
				}
			}
		})
	}
	// Mixed families are refused and leave the buffer alone.
	b := packettest.Load(in)
	if encapFull(b, 1, &vxlan.Outer{Src: netip.MustParseAddrPort("192.0.2.1:1"), Dst: netip.MustParseAddrPort("[2001:db8::2]:4789")}) || !bytes.Equal(b.Bytes(), in) {
		t.Fatal("mixed families accepted")
	}
}

func TestFDB(t *testing.T) {
	fdb := vxlan.NewFDB(256, 10*time.Second)
	v4 := netip.MustParseAddr("192.0.2.7")
	v6 := netip.MustParseAddr("2001:db8::7")
	mapped := netip.MustParseAddr("::ffff:192.0.2.7")
	now := int64(time.Hour)
	fdb.Learn(macA, v4, now)
	fdb.Learn(macB, v6, now)
	fdb.Learn(packet.BroadcastMAC, v4, now) // never learned
	if a, ok := fdb.Lookup(macA, now); !ok || a != v4 || !a.Is4() {
		t.Fatalf("Lookup(A) = %v %v", a, ok)
	}
	if a, ok := fdb.Lookup(macB, now); !ok || a != v6 {
		t.Fatalf("Lookup(B) = %v %v", a, ok)
	}
	if _, ok := fdb.Lookup(packet.BroadcastMAC, now); ok {
		t.Fatal("broadcast learned")
	}
	// An IPv4-mapped address stays distinct from the IPv4 one.
	fdb.Learn(macA, mapped, now)
	if a, _ := fdb.Lookup(macA, now); a != mapped {
		t.Fatalf("mapped address came back as %v", a)
	}
	fdb.Learn(macA, v4, now)
	// Learning from decapsulated frames uses the peer address.
	b := packettest.Load(inner(t))
	b.Peer = netip.AddrPortFrom(v6, 4789)
	c := packettest.MustMAC("52:54:00:00:00:0c")
	packet.Ethernet(b.Bytes()).SetSrc(c)
	fdb.LearnFrames([]*packet.Buf{b}, now)
	if a, ok := fdb.Lookup(c, now); !ok || a != v6 {
		t.Fatalf("LearnFrames: %v %v", a, ok)
	}
	if fdb.Len(now) != 3 {
		t.Fatalf("Len = %d", fdb.Len(now))
	}
	if n := fdb.RemoveVTEP(v6); n != 2 {
		t.Fatalf("RemoveVTEP removed %d", n)
	}
	seen := 0
	fdb.Range(now, func(m packet.MAC, a netip.Addr) bool { seen++; return m == macA && a == v4 })
	if seen != 1 {
		t.Fatalf("Range saw %d", seen)
	}
	if _, ok := fdb.Lookup(macA, now+11*int64(time.Second)); ok {
		t.Fatal("entry did not age out")
	}
	if !fdb.Remove(macA) {
		t.Fatal("Remove")
	}
	fdb.Flush()
	if fdb.Len(now) != 0 {
		t.Fatal("Flush")
	}
}

func TestZeroAllocs(t *testing.T) {
	in := inner(t)
	b := packettest.Load(in)
	fdb := vxlan.NewFDB(256, time.Minute)
	vtep := netip.MustParseAddr("2001:db8::9")
	known := func(v uint32) bool { return v == 5 }
	full := packettest.Load(in)
	o := &vxlan.Outer{Src: netip.MustParseAddrPort("[2001:db8::1]:4789"), Dst: netip.MustParseAddrPort("[2001:db8::2]:4789")}
	var now int64
	tests := []struct {
		name string
		fn   func()
	}{
		{"encap+decap", func() {
			vxlan.Encap(b, 5)
			if _, r := vxlan.Decap(b, known); r != vxlan.DropNone {
				t.Fatal(r)
			}
		}},
		{"fdb", func() {
			now++
			fdb.Learn(macA, vtep, now)
			fdb.LearnFrames([]*packet.Buf{b}, now)
			fdb.Lookup(macA, now)
		}},
		{"full encoder", func() {
			encapFull(full, 5, o)
			parseOuter(full.Bytes())
			full.TrimFront(vxlan.OuterLen(true) + vxlan.HeaderLen)
		}},
		{"groups", func() { _ = vxlan.MulticastGroup(5, true) }},
	}
	for _, tt := range tests {
		if a := testing.AllocsPerRun(100, tt.fn); a != 0 {
			t.Errorf("%s: %v allocs", tt.name, a)
		}
	}
}

func BenchmarkEncapDecap(b *testing.B) {
	in := packettest.UDP(b, flow, make([]byte, 1400))
	bufs := make([]*packet.Buf, 64)
	for i := range bufs {
		bufs[i] = packettest.Load(in)
	}
	known := func(v uint32) bool { return v == 42 }
	for b.Loop() {
		for _, p := range bufs {
			vxlan.Encap(p, 42)
		}
		for _, p := range bufs {
			vxlan.Decap(p, known)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/frame")
}

func BenchmarkFDBLookup(b *testing.B) {
	fdb := vxlan.NewFDB(4096, time.Minute)
	for i := 0; i < 1000; i++ {
		fdb.Learn(packet.MAC{2, 0, 0, 0, byte(i >> 8), byte(i)}, netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 1)
	}
	i := 0
	for b.Loop() {
		i++
		fdb.Lookup(packet.MAC{2, 0, 0, 0, byte(i >> 8 & 3), byte(i)}, 2)
	}
}
