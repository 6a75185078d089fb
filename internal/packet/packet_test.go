package packet_test

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/packet/packettest"
)

var (
	macA = packettest.MustMAC("52:54:00:00:00:0a")
	macB = packettest.MustMAC("52:54:00:00:00:0b")
	ip4A = netip.MustParseAddr("10.0.0.1")
	ip4B = netip.MustParseAddr("10.0.0.2")
	ip6A = netip.MustParseAddr("2001:db8::1")
	ip6B = netip.MustParseAddr("2001:db8::2")
	f4   = packettest.Flow{SrcMAC: macA, DstMAC: macB, Src: ip4A, Dst: ip4B, SrcPort: 40000, DstPort: 80}
	f6   = packettest.Flow{SrcMAC: macA, DstMAC: macB, Src: ip6A, Dst: ip6B, SrcPort: 40000, DstPort: 443}
)

// naiveChecksum is RFC 1071 taken literally: 16-bit big-endian words.
func naiveChecksum(b []byte, initial uint16) uint16 {
	s := uint32(initial)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

func TestChecksumMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 3000)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	// Every length up to 300 (0 to 4 blocks of 64 bytes and every tail),
	// then random ones up to 2900, at odd and even offsets.
	lens := make([]int, 0, 340)
	for n := 0; n < 300; n++ {
		lens = append(lens, n)
	}
	for range 40 {
		lens = append(lens, 300+r.IntN(2600))
	}
	for _, n := range lens {
		for _, off := range []int{0, 1, 3, 7} {
			init := uint16(r.Uint32())
			b := buf[off : off+n]
			if got, want := packet.Checksum(b, init), naiveChecksum(b, init); got != want {
				t.Fatalf("len %d off %d init %#x: got %#x want %#x", n, off, init, got, want)
			}
		}
	}
	allFF := bytes.Repeat([]byte{0xff}, 1501)
	if got, want := packet.Checksum(allFF, 0xffff), naiveChecksum(allFF, 0xffff); got != want {
		t.Fatalf("all ones: got %#x want %#x", got, want)
	}
	// RFC 1071 section 3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
	if got := packet.Checksum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0); got != 0xddf2 {
		t.Fatalf("RFC 1071 example: got %#x want 0xddf2", got)
	}
}

func TestEthernetAndARP(t *testing.T) {
	fr := packettest.ARP(t, layers.EthernetTypeARP, macA, packet.BroadcastMAC, packet.ARPOpRequest, macA, ip4A, packet.MAC{}, ip4B)
	e := packet.Ethernet(fr)
	if !e.IsValid() || e.Src() != macA || e.Dst() != packet.BroadcastMAC || e.Type() != packet.EtherTypeARP {
		t.Fatalf("ethernet: src %v dst %v type %#x", e.Src(), e.Dst(), e.Type())
	}
	a := packet.ARP(e.Payload())
	if !a.IsValid() || !a.IsEthernetIPv4() || a.Op() != packet.ARPOpRequest || a.SenderMAC() != macA ||
		a.SenderIP() != ip4A || a.TargetIP() != ip4B || a.TargetMAC() != (packet.MAC{}) {
		t.Fatalf("arp accessors: op %d sha %v spa %v tpa %v", a.Op(), a.SenderMAC(), a.SenderIP(), a.TargetIP())
	}
	// Encode must produce what gopacket produced.
	enc := make([]byte, packet.ARPLen)
	packet.ARP(enc).Encode(packet.ARPOpRequest, macA, ip4A, packet.MAC{}, ip4B)
	if !bytes.Equal(enc, a[:packet.ARPLen]) {
		t.Fatalf("ARP.Encode = %x, gopacket %x", enc, a[:packet.ARPLen])
	}
	e.SetSrc(macB)
	e.SetDst(macA)
	e.SetType(packet.EtherTypeRARP)
	p := packettest.Decode(fr)
	eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if !bytes.Equal(eth.SrcMAC, macB[:]) || !bytes.Equal(eth.DstMAC, macA[:]) || eth.EthernetType != layers.EthernetType(packet.EtherTypeRARP) {
		t.Fatalf("setters: gopacket sees %v %v %v", eth.SrcMAC, eth.DstMAC, eth.EthernetType)
	}
}

func TestMAC(t *testing.T) {
	tests := []struct {
		mac                            string
		multicast, broadcast, reserved bool
	}{
		{"52:54:00:12:34:56", false, false, false},
		{"ff:ff:ff:ff:ff:ff", true, true, false},
		{"01:00:5e:00:00:01", true, false, false},
		{"33:33:00:00:00:01", true, false, false},
		{"01:80:c2:00:00:00", true, false, true},
		{"01:80:c2:00:00:0e", true, false, true},
		{"01:80:c2:00:00:0f", true, false, true},
		{"01:80:c2:00:00:10", true, false, false},
	}
	for _, tt := range tests {
		m := packettest.MustMAC(tt.mac)
		if m.IsMulticast() != tt.multicast || m.IsBroadcast() != tt.broadcast || m.IsIEEEReserved() != tt.reserved {
			t.Errorf("%s: multicast %v broadcast %v reserved %v", tt.mac, m.IsMulticast(), m.IsBroadcast(), m.IsIEEEReserved())
		}
		if m.String() != tt.mac {
			t.Errorf("String() = %s, want %s", m.String(), tt.mac)
		}
		if packet.MACFromUint64(m.Uint64()) != m {
			t.Errorf("%s: Uint64 round trip failed", tt.mac)
		}
	}
}

func TestIPv4TCPAccessors(t *testing.T) {
	opts := []layers.TCPOption{
		{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
		{OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: make([]byte, 8)},
	}
	fr := packettest.TCP(t, f4, packettest.TCPSeg{Seq: 1000, Ack: 2000, Flags: packet.TCPFlagSYN | packet.TCPFlagACK,
		Window: 512, Options: opts, Payload: []byte("hello")})
	p := packettest.Decode(fr)
	g4 := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	gt := p.Layer(layers.LayerTypeTCP).(*layers.TCP)

	var l packet.Layers
	if !packet.Parse(fr, &l) || !l.IsIPv4() || l.Proto != packet.ProtoTCP || l.L3 != 14 || l.L4 != 34 || l.L3End != len(fr) || l.Fragment {
		t.Fatalf("Parse = %+v", l)
	}
	ip := packet.IPv4(fr[l.L3:])
	if !ip.IsValid() || ip.HeaderLen() != 20 || ip.TotalLen() != g4.Length || ip.ID() != g4.Id || ip.TTL() != g4.TTL ||
		!ip.DontFragment() || ip.MoreFragments() || ip.IsFragment() || ip.Protocol() != uint8(g4.Protocol) ||
		ip.Checksum() != g4.Checksum || ip.Src() != ip4A || ip.Dst() != ip4B || !ip.IsChecksumValid() ||
		ip.CalculateChecksum() != g4.Checksum {
		t.Fatalf("IPv4 accessors disagree with gopacket %+v", g4)
	}
	tcp := packet.TCP(fr[l.L4:])
	if !tcp.IsValid() || tcp.SrcPort() != uint16(gt.SrcPort) || tcp.DstPort() != uint16(gt.DstPort) || tcp.Seq() != gt.Seq ||
		tcp.Ack() != gt.Ack || tcp.HeaderLen() != int(gt.DataOffset)*4 || tcp.Flags() != packet.TCPFlagSYN|packet.TCPFlagACK ||
		tcp.Window() != gt.Window || tcp.Checksum() != gt.Checksum || tcp.Urgent() != gt.Urgent || string(tcp.Payload()) != "hello" {
		t.Fatalf("TCP accessors disagree with gopacket %+v", gt)
	}
	// Edit in place and let gopacket read the result.
	ip.SetTTL(7)
	ip.SetTOS(0xb8)
	ip.SetID(99)
	ip.UpdateChecksum()
	tcp.SetSeq(42)
	tcp.SetAck(43)
	tcp.SetFlags(packet.TCPFlagFIN | packet.TCPFlagACK)
	tcp.SetSrcPort(1)
	tcp.SetDstPort(2)
	tcp.SetWindow(3)
	tcp.SetChecksum(0)
	ps := packet.PseudoHeaderChecksum(packet.ProtoTCP, ip.SrcBytes(), ip.DstBytes(), uint32(len(tcp)))
	tcp.SetChecksum(^packet.Checksum(tcp, ps))
	p = packettest.Decode(fr)
	packettest.VerifyChecksums(t, p)
	g4 = p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	gt = p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if g4.TTL != 7 || g4.TOS != 0xb8 || g4.Id != 99 || gt.Seq != 42 || gt.Ack != 43 || !gt.FIN || gt.SYN || gt.SrcPort != 1 || gt.DstPort != 2 || gt.Window != 3 {
		t.Fatalf("setters: gopacket sees %+v %+v", g4, gt)
	}
}

func TestIPv4Invalid(t *testing.T) {
	good := packettest.UDP(t, f4, []byte("x"))
	tests := []struct {
		name string
		mut  func(b []byte) []byte
	}{
		{"short", func(b []byte) []byte { return b[:14+19] }},
		{"version", func(b []byte) []byte { b[14] = 0x65; return b }},
		{"ihl<5", func(b []byte) []byte { b[14] = 0x44; return b }},
		{"ihl past end", func(b []byte) []byte { b[14] = 0x4f; return b[:14+40] }},
		{"totlen<ihl", func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:], 19); return b }},
		{"totlen past end", func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:], 200); return b }},
	}
	for _, tt := range tests {
		b := tt.mut(append([]byte(nil), good...))
		var l packet.Layers
		if packet.IPv4(b[14:]).IsValid() || packet.Parse(b, &l) {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}

func TestIPv6UDPAccessors(t *testing.T) {
	fr := packettest.UDP(t, f6, []byte("payload"))
	p := packettest.Decode(fr)
	g6 := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	gu := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	ip := packet.IPv6(fr[14:])
	if !ip.IsValid() || ip.PayloadLen() != g6.Length || ip.NextHeader() != uint8(g6.NextHeader) || ip.HopLimit() != g6.HopLimit ||
		ip.Src() != ip6A || ip.Dst() != ip6B || ip.TrafficClass() != g6.TrafficClass || ip.FlowLabel() != g6.FlowLabel {
		t.Fatalf("IPv6 accessors disagree with gopacket %+v", g6)
	}
	u := packet.UDP(fr[54:])
	if !u.IsValid() || u.SrcPort() != uint16(gu.SrcPort) || u.DstPort() != uint16(gu.DstPort) || u.Length() != gu.Length ||
		u.Checksum() != gu.Checksum || string(u.Payload()) != "payload" {
		t.Fatalf("UDP accessors disagree with gopacket %+v", gu)
	}
	var l packet.Layers
	if !packet.Parse(fr, &l) || !l.IsIPv6() || l.Proto != packet.ProtoUDP || l.L4 != 54 {
		t.Fatalf("Parse = %+v", l)
	}
	// Verify the UDP checksum with our pseudo-header.
	ps := packet.PseudoHeaderChecksum(packet.ProtoUDP, ip.SrcBytes(), ip.DstBytes(), uint32(u.Length()))
	if packet.Checksum(u, ps) != 0xffff {
		t.Fatal("UDP checksum does not verify with PseudoHeaderChecksum")
	}
	// Encode writes what gopacket reads.
	hdr := make([]byte, 40)
	packet.IPv6(hdr).Encode(0x2e, 0x12345, 8, packet.ProtoUDP, 3, ip6B, ip6A)
	var d layers.IPv6
	if err := d.DecodeFromBytes(append(hdr, make([]byte, 8)...), nil); err != nil {
		t.Fatal(err)
	}
	if d.TrafficClass != 0x2e || d.FlowLabel != 0x12345 || d.Length != 8 || d.HopLimit != 3 || !d.SrcIP.Equal(ip6B.AsSlice()) || !d.DstIP.Equal(ip6A.AsSlice()) {
		t.Fatalf("IPv6.Encode: gopacket reads %+v", d)
	}
}

// ext builds an IPv6 extension header of n 8-byte units with next header nh.
func ext(nh uint8, units int) []byte {
	b := make([]byte, units*8)
	b[0] = nh
	b[1] = byte(units - 1)
	if units > 0 {
		b[2], b[3] = 1, byte(units*8-4) // a PadN option filling the rest
	}
	return b
}

func ipv6WithExt(t testing.TB, first uint8, exts []byte, l4 []byte) []byte {
	t.Helper()
	fr := make([]byte, 14+40, 14+40+len(exts)+len(l4))
	e := packet.Ethernet(fr)
	e.SetSrc(macA)
	e.SetDst(macB)
	e.SetType(packet.EtherTypeIPv6)
	fr = append(fr, exts...)
	fr = append(fr, l4...)
	packet.IPv6(fr[14:]).Encode(0, 0, uint16(len(exts)+len(l4)), first, 64, ip6A, ip6B)
	return fr
}

func TestIPv6ExtensionHeaders(t *testing.T) {
	udp := make([]byte, 8)
	packet.UDP(udp).Encode(1, 2, 8, 0)
	frag := func(nh uint8, off uint16, more bool) []byte {
		b := make([]byte, 8)
		b[0] = nh
		v := off << 3
		if more {
			v |= 1
		}
		binary.BigEndian.PutUint16(b[2:], v)
		binary.BigEndian.PutUint32(b[4:], 0xabcd)
		return b
	}
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	tests := []struct {
		name        string
		first       uint8
		exts        []byte
		ok          bool
		proto       uint8
		off         int
		frag, hasL4 bool
	}{
		{"none", packet.ProtoUDP, nil, true, packet.ProtoUDP, 40, false, true},
		{"hop-by-hop", packet.ProtoHopByHop, ext(packet.ProtoUDP, 1), true, packet.ProtoUDP, 48, false, true},
		{"hbh+dst+routing", packet.ProtoHopByHop, cat(ext(packet.ProtoDstOpts, 1), ext(packet.ProtoRouting, 2), ext(packet.ProtoUDP, 1)), true, packet.ProtoUDP, 72, false, true},
		{"first fragment", packet.ProtoFragment, frag(packet.ProtoUDP, 0, true), true, packet.ProtoUDP, 48, true, true},
		{"later fragment", packet.ProtoFragment, frag(packet.ProtoUDP, 100, false), true, packet.ProtoFragment, 40, true, false},
		{"no next header", packet.ProtoNoNext, nil, true, packet.ProtoNoNext, 40, false, true},
		{"truncated ext", packet.ProtoHopByHop, ext(packet.ProtoUDP, 4)[:16], false, 0, 0, false, false},
		{"too many", packet.ProtoDstOpts, cat(ext(60, 1), ext(60, 1), ext(60, 1), ext(60, 1), ext(60, 1), ext(60, 1), ext(60, 1), ext(60, 1), ext(packet.ProtoUDP, 1)), false, 0, 0, false, false},
		{"max allowed", packet.ProtoDstOpts, cat(ext(60, 1), ext(60, 1), ext(60, 1), ext(60, 1), ext(60, 1), ext(60, 1), ext(60, 1), ext(packet.ProtoUDP, 1)), true, packet.ProtoUDP, 40 + 64, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fr := ipv6WithExt(t, tt.first, tt.exts, udp)
			proto, off, frag, ok := packet.IPv6(fr[14:]).L4()
			if ok != tt.ok || ok && (proto != tt.proto || off != tt.off || frag != tt.frag) {
				t.Fatalf("L4() = %d %d %v %v, want %d %d %v %v", proto, off, frag, ok, tt.proto, tt.off, tt.frag, tt.ok)
			}
			var l packet.Layers
			if packet.Parse(fr, &l) != tt.ok {
				t.Fatalf("Parse ok = %v", !tt.ok)
			}
			if tt.ok && (l.L4 != 0) != tt.hasL4 {
				t.Fatalf("Parse L4 = %d, want present %v", l.L4, tt.hasL4)
			}
			if !tt.ok || !tt.hasL4 || proto != packet.ProtoUDP || tt.frag { // gopacket stops at a fragment header
				return
			}
			// gopacket must find the UDP header at the same place.
			p := packettest.Decode(fr)
			gu, _ := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
			if gu == nil || gu.SrcPort != 1 || gu.DstPort != 2 {
				t.Fatalf("gopacket disagrees: layers %v", p.Layers())
			}
		})
	}
}

// TestIPv6ExtHeadersFragmentAndQuote: ExtHeaders reports the fragment
// header's fields, stops after a non-first fragment's header, and walks a
// packet cut short (an ICMPv6 error's quote) up to the given end only.
func TestIPv6ExtHeadersFragmentAndQuote(t *testing.T) {
	udp := make([]byte, 8)
	packet.UDP(udp).Encode(1, 2, 8, 0)
	frag := func(off uint16) []byte {
		b := []byte{packet.ProtoUDP, 0, 0, 0, 0, 0xab, 0xcd, 0xef}
		binary.BigEndian.PutUint16(b[2:], off<<3|1)
		return b
	}
	hbhFrag := func(off uint16) []byte { return append(ext(packet.ProtoFragment, 1), frag(off)...) }
	tests := []struct {
		name string
		exts []byte
		cut  int // bytes of the IPv6 packet kept (0: all)
		want packet.IPv6Ext
	}{
		{"first fragment", hbhFrag(0), 0, packet.IPv6Ext{Proto: packet.ProtoUDP, Off: 56, Frag: true, FragHdr: 48, FragID: 0xabcdef, FragNext: packet.ProtoUDP, OK: true}},
		{"later fragment", hbhFrag(100), 0, packet.IPv6Ext{Proto: packet.ProtoUDP, Off: 56, Frag: true, FragHdr: 48, FragOff: 800, FragID: 0xabcdef, FragNext: packet.ProtoUDP, OK: true}},
		{"quote up to the upper layer", hbhFrag(0), 56, packet.IPv6Ext{Proto: packet.ProtoUDP, Off: 56, Frag: true, FragHdr: 48, FragID: 0xabcdef, FragNext: packet.ProtoUDP, OK: true}},
		{"quote cut in an extension header", hbhFrag(0), 52, packet.IPv6Ext{Proto: packet.ProtoFragment, Off: 48}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ip := packet.IPv6(ipv6WithExt(t, packet.ProtoHopByHop, tt.exts, udp)[14:])
			end := len(ip)
			if tt.cut != 0 {
				ip, end = ip[:tt.cut], tt.cut+100 // end past the data is clamped
			}
			if got := ip.ExtHeaders(end); got != tt.want {
				t.Errorf("ExtHeaders = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestICMPv6NDPOptions(t *testing.T) {
	tgt := netip.MustParseAddr("fe80::5054:ff:fe00:a")
	body := packettest.NDPBody(0x60, tgt, packettest.NDPOpt{Type: packet.NDPOptTargetLinkAddr, MAC: macA})
	fr := packettest.ICMPv6(t, packettest.Flow{SrcMAC: macA, DstMAC: macB, Src: tgt, Dst: ip6B}, packet.ICMPv6NeighborAdvert, 0, body)
	p := packettest.Decode(fr)
	packettest.VerifyChecksums(t, p)
	na, ok := p.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement)
	if !ok {
		t.Fatalf("gopacket: no NA in %v", p.Layers())
	}
	var l packet.Layers
	if !packet.Parse(fr, &l) || l.Proto != packet.ProtoICMPv6 {
		t.Fatalf("Parse = %+v", l)
	}
	ic := packet.ICMPv6(fr[l.L4:l.L3End])
	if !ic.IsNDPNSNA() || ic.Type() != packet.ICMPv6NeighborAdvert || ic.NAFlags() != na.Flags || ic.NDPTarget() != tgt ||
		!bytes.Equal(na.TargetAddress, tgt.AsSlice()) {
		t.Fatalf("NA accessors: flags %#x target %v", ic.NAFlags(), ic.NDPTarget())
	}
	mac, found, valid := ic.NDPLinkAddr(packet.NDPOptTargetLinkAddr)
	if !found || !valid || mac != macA || !bytes.Equal(na.Options[0].Data, macA[:]) {
		t.Fatalf("TLLA = %v %v %v, gopacket %v", mac, found, valid, na.Options)
	}
	if _, found, valid := ic.NDPLinkAddr(packet.NDPOptSourceLinkAddr); found || !valid {
		t.Fatalf("SLLA found %v valid %v", found, valid)
	}
	// A zero-length option is malformed (RFC 4861 4.6).
	ic[packet.NDPNSNALen+1] = 0
	if _, _, valid := ic.NDPLinkAddr(packet.NDPOptTargetLinkAddr); valid {
		t.Fatal("zero-length option accepted")
	}
	// An option running past the end is malformed.
	ic[packet.NDPNSNALen+1] = 2
	if _, _, valid := ic.NDPOption(packet.NDPOptTargetLinkAddr); valid {
		t.Fatal("overlong option accepted")
	}
}

func TestICMPv4Accessors(t *testing.T) {
	fr := packettest.ICMPv4Echo(t, f4, 0x0bb0, 7, []byte("ping"))
	p := packettest.Decode(fr)
	g := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	ic := packet.ICMPv4(fr[34 : 14+20+8+4]) // without the Ethernet padding
	if !ic.IsValid() || ic.Type() != packet.ICMPv4Echo || ic.Code() != 0 || ic.Ident() != g.Id || ic.Seq() != g.Seq ||
		ic.Checksum() != g.Checksum || ic.IsError() || string(ic.Payload()) != "ping" {
		t.Fatalf("ICMPv4 accessors disagree with gopacket %+v", g)
	}
	if packet.Checksum(ic, 0) != 0xffff {
		t.Fatal("ICMPv4 checksum does not verify")
	}
}

func TestCompleteChecksum(t *testing.T) {
	for _, f := range []packettest.Flow{f4, f6} {
		for _, proto := range []uint8{packet.ProtoTCP, packet.ProtoUDP} {
			var fr []byte
			var off int
			if proto == packet.ProtoTCP {
				fr = packettest.TCP(t, f, packettest.TCPSeg{Seq: 1, Flags: packet.TCPFlagACK, Payload: bytes.Repeat([]byte{0xa5}, 1001)})
				off = packet.TCPCsumOffset
			} else {
				fr = packettest.UDP(t, f, bytes.Repeat([]byte{0x5a}, 999))
				off = packet.UDPCsumOffset
			}
			var l packet.Layers
			packet.Parse(fr, &l)
			want := binary.BigEndian.Uint16(fr[l.L4+off:])
			// What a guest with checksum offload hands over: the
			// pseudo-header sum in the checksum field.
			var src, dst []byte
			if l.IsIPv4() {
				src, dst = packet.IPv4(fr[l.L3:]).SrcBytes(), packet.IPv4(fr[l.L3:]).DstBytes()
			} else {
				src, dst = packet.IPv6(fr[l.L3:]).SrcBytes(), packet.IPv6(fr[l.L3:]).DstBytes()
			}
			binary.BigEndian.PutUint16(fr[l.L4+off:], packet.PseudoHeaderChecksum(proto, src, dst, uint32(l.L3End-l.L4)))
			b := packettest.Load(fr)
			b.VNet = packet.VNetHdr{Flags: packet.VNetFlagNeedsCsum, CsumStart: uint16(l.L4), CsumOffset: uint16(off)}
			if err := packet.FinishChecksum(b); err != nil {
				t.Fatal(err)
			}
			if got := binary.BigEndian.Uint16(b.Bytes()[l.L4+off:]); got != want {
				t.Fatalf("%v proto %d: completed checksum %#x, want %#x", f.Src, proto, got, want)
			}
			if b.VNet.Flags&packet.VNetFlagNeedsCsum != 0 {
				t.Fatal("NEEDS_CSUM still set")
			}
			packettest.VerifyChecksums(t, packettest.Decode(b.Bytes()))
		}
	}
	if err := packet.CompleteChecksum(make([]byte, 10), 8, 6); err == nil {
		t.Fatal("out of range accepted")
	}
}
