package packet_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/packet/packettest"
)

// seedFrames are valid frames of every kind the parsers meet.
func seedFrames(t testing.TB) [][]byte {
	na := packettest.NDPBody(0x60, ip6A, packettest.NDPOpt{Type: packet.NDPOptTargetLinkAddr, MAC: macA})
	return [][]byte{
		packettest.TCP(t, f4, packettest.TCPSeg{Seq: 1, Flags: packet.TCPFlagSYN, Options: tsOpts}),
		packettest.TCP(t, f6, packettest.TCPSeg{Seq: 1, Flags: packet.TCPFlagACK, Payload: []byte("x")}),
		packettest.UDP(t, f4, []byte("hello")),
		packettest.UDP(t, f6, []byte("hello")),
		packettest.ICMPv4Echo(t, f4, 1, 2, []byte("abc")),
		packettest.ICMPv6(t, f6, packet.ICMPv6NeighborAdvert, 0, na),
		packettest.ARP(t, layers.EthernetTypeARP, macA, packet.BroadcastMAC, 1, macA, ip4A, packet.MAC{}, ip4B),
		ipv6WithExt(t, packet.ProtoHopByHop, ext(packet.ProtoUDP, 1), []byte{0, 1, 0, 2, 0, 8, 0, 0}),
	}
}

// TestWriteFuzzSeeds regenerates testdata/fuzz when BUTTERFLY_WRITE_SEEDS
// is set; the generated files are committed.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("BUTTERFLY_WRITE_SEEDS") == "" {
		t.Skip("set BUTTERFLY_WRITE_SEEDS=1 to regenerate testdata/fuzz")
	}
	frames := seedFrames(t)
	for _, name := range []string{"FuzzParse", "FuzzICMPErrors"} {
		for i, fr := range frames {
			writeSeed(t, name, i, fmt.Sprintf("[]byte(%q)", fr))
		}
	}
	for i, fr := range frames[:4] {
		writeSeed(t, "FuzzSegmentRaw", i, fmt.Sprintf("[]byte(%q)\nuint8(%d)\nuint16(%d)", fr, []uint8{1, 4, 5, 5}[i], 100))
	}
	writeSeed(t, "FuzzSegment", 0, "uint16(3000)\nuint16(1448)\nuint16(0)\nuint8(0x99)\nbool(false)\nbool(false)")
	writeSeed(t, "FuzzSegment", 1, "uint16(5000)\nuint16(1000)\nuint16(700)\nuint8(0x18)\nbool(true)\nbool(false)")
	writeSeed(t, "FuzzSegment", 2, "uint16(9000)\nuint16(1200)\nuint16(0)\nuint8(0)\nbool(true)\nbool(true)")
	writeSeed(t, "FuzzChecksum", 0, fmt.Sprintf("[]byte(%q)\nuint16(0)", pattern(77)))
}

func writeSeed(t testing.TB, fuzz string, i int, body string) {
	dir := filepath.Join("testdata", "fuzz", fuzz)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%02d", i)), []byte("go test fuzz v1\n"+body+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func FuzzChecksum(f *testing.F) {
	f.Add([]byte{1, 2, 3}, uint16(0xffff))
	f.Fuzz(func(t *testing.T, b []byte, init uint16) {
		if got, want := packet.Checksum(b, init), naiveChecksum(b, init); got != want {
			t.Fatalf("Checksum = %#x, naive %#x", got, want)
		}
	})
}

// FuzzParse checks Parse against gopacket: whatever Parse accepts as IP,
// gopacket must read with the same addresses, protocol and ports.
func FuzzParse(f *testing.F) {
	for _, fr := range seedFrames(f) {
		f.Add(fr)
	}
	f.Fuzz(func(t *testing.T, fr []byte) {
		var l packet.Layers
		if !packet.Parse(fr, &l) {
			return
		}
		if l.L3End > len(fr) || l.L4 > l.L3End {
			t.Fatalf("offsets out of range: %+v len %d", l, len(fr))
		}
		p := packettest.Decode(fr)
		switch {
		case l.IsIPv4():
			ip := packet.IPv4(fr[l.L3:])
			g, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if !ok {
				t.Fatalf("gopacket found no IPv4 in an accepted frame")
			}
			if !bytes.Equal(g.SrcIP.To4(), ip.SrcBytes()) || !bytes.Equal(g.DstIP.To4(), ip.DstBytes()) ||
				uint8(g.Protocol) != l.Proto || int(g.IHL)*4 != ip.HeaderLen() {
				t.Fatalf("IPv4 disagrees with gopacket")
			}
		case l.IsIPv6():
			if _, ok := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6); !ok {
				t.Fatalf("gopacket found no IPv6 in an accepted frame")
			}
		default:
			return
		}
		if l.L4 == 0 || l.Fragment || l.L4+4 > l.L3End || p.ErrorLayer() != nil {
			// gopacket leaves an empty layer behind a decode failure.
			return
		}
		sp, dp := binary.BigEndian.Uint16(fr[l.L4:]), binary.BigEndian.Uint16(fr[l.L4+2:])
		switch l.Proto {
		case packet.ProtoTCP:
			if g, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok && (uint16(g.SrcPort) != sp || uint16(g.DstPort) != dp) {
				t.Fatalf("TCP ports disagree with gopacket")
			}
		case packet.ProtoUDP:
			if g, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok && (uint16(g.SrcPort) != sp || uint16(g.DstPort) != dp) {
				t.Fatalf("UDP ports disagree with gopacket")
			}
		}
	})
}

// FuzzSegment builds well-formed super-frames of random shape with
// gopacket and checks every segment with gopacket.
func FuzzSegment(f *testing.F) {
	f.Add(uint16(3000), uint16(1448), uint16(0), uint8(0x99), false, false)
	f.Fuzz(func(t *testing.T, plen, gso, maxPayload uint16, flags uint8, v6, udp bool) {
		if gso == 0 || plen > 60000 {
			return
		}
		fl := f4
		if v6 {
			fl = f6
		}
		payload := pattern(int(plen))
		var src *packet.Buf
		if udp {
			src = packettest.Load(packettest.UDP(t, fl, payload))
			src.VNet = packet.VNetHdr{GSOType: packet.GSOUDPL4, GSOSize: gso}
		} else {
			src = tsoFrame(t, fl, payload, flags&^(packet.TCPFlagSYN|packet.TCPFlagRST), gso)
		}
		out := outBufs(int(plen)/max(int(min(gso, maxPayload-1)+1), 1) + 2)
		n, err := packet.Segment(src, int(maxPayload), out)
		if err != nil {
			if udp && err == packet.ErrSegTooBig && maxPayload > 0 && maxPayload < gso {
				return
			}
			if err == packet.ErrOutTooSmall {
				return
			}
			t.Fatalf("Segment: %v", err)
		}
		var got []byte
		for i := 0; i < n; i++ {
			p := packettest.Decode(out[i].Bytes())
			packettest.VerifyChecksums(t, p)
			if udp {
				got = append(got, p.Layer(layers.LayerTypeUDP).(*layers.UDP).Payload...)
			} else {
				got = append(got, p.Layer(layers.LayerTypeTCP).(*layers.TCP).Payload...)
			}
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("reassembled %d bytes differ from %d", len(got), len(payload))
		}
	})
}

// FuzzSegmentRaw feeds arbitrary frames and GSO metadata: Segment must
// fail cleanly or produce frames that parse.
func FuzzSegmentRaw(f *testing.F) {
	for _, fr := range seedFrames(f)[:4] {
		f.Add(fr, uint8(packet.GSOTCPv4), uint16(100))
	}
	out := outBufs(16)
	f.Fuzz(func(t *testing.T, fr []byte, typ uint8, gso uint16) {
		src := packettest.Load(fr)
		src.VNet = packet.VNetHdr{GSOType: typ, GSOSize: gso}
		n, err := packet.Segment(src, 0, out)
		if err != nil {
			return
		}
		for i := 0; i < n; i++ {
			var l packet.Layers
			if !packet.Parse(out[i].Bytes(), &l) || l.L3End != out[i].Len() {
				t.Fatalf("segment %d does not parse: %+v", i, l)
			}
		}
	})
}

// FuzzICMPErrors checks the builders on arbitrary frames: no panic, and
// every error built verifies with gopacket and quotes the original.
func FuzzICMPErrors(f *testing.F) {
	for _, fr := range seedFrames(f) {
		f.Add(fr)
	}
	dst := make([]byte, 2000)
	f.Fuzz(func(t *testing.T, fr []byte) {
		for _, v6 := range []bool{false, true} {
			var n int
			var err error
			hl := 14 + 20 + 8
			if v6 {
				n, err = packet.BuildICMPv6PacketTooBig(dst, fr, 1280)
				hl = 14 + 40 + 8
			} else {
				n, err = packet.BuildICMPv4FragNeeded(dst, fr, 576)
			}
			if err != nil {
				continue
			}
			packettest.VerifyChecksums(t, packettest.Decode(dst[:n]))
			if !bytes.Equal(dst[hl:n], fr[14:14+n-hl]) {
				t.Fatal("quote differs from the original")
			}
		}
	})
}
