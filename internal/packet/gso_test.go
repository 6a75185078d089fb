package packet_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/packet/packettest"
)

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

var tsOpts = []layers.TCPOption{
	{OptionType: layers.TCPOptionKindNop},
	{OptionType: layers.TCPOptionKindNop},
	{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: []byte{0, 0, 0, 1, 0, 0, 0, 2}},
}

// tsoFrame builds a TSO super-frame as a guest hands it over: full
// headers, partial checksum, VNet GSO metadata.
func tsoFrame(t testing.TB, f packettest.Flow, payload []byte, flags uint8, gsoSize uint16) *packet.Buf {
	fr := packettest.TCP(t, f, packettest.TCPSeg{Seq: 0xfffff000, Ack: 77, Flags: flags, Window: 1000, Options: tsOpts, Payload: payload})
	b := packettest.Load(fr)
	typ := uint8(packet.GSOTCPv4)
	if f.Src.Is6() {
		typ = packet.GSOTCPv6
	}
	var l packet.Layers
	packet.Parse(fr, &l)
	b.VNet = packet.VNetHdr{Flags: packet.VNetFlagNeedsCsum, GSOType: typ, HdrLen: uint16(l.L4 + 32), GSOSize: gsoSize,
		CsumStart: uint16(l.L4), CsumOffset: packet.TCPCsumOffset}
	return b
}

func outBufs(n int) []*packet.Buf {
	out := make([]*packet.Buf, n)
	for i := range out {
		out[i] = packet.NewBuf()
	}
	return out
}

func TestSegmentTCP(t *testing.T) {
	tests := []struct {
		name       string
		flow       packettest.Flow
		payload    int
		gso        uint16
		maxPayload int
		flags      uint8
		wantSeg    int
	}{
		{"v4 64KiB", f4, 65536 - 14 - 20 - 32, 1448, 0, packet.TCPFlagACK | packet.TCPFlagPSH | packet.TCPFlagFIN | packet.TCPFlagCWR, 46},
		{"v6 64KiB", f6, 65536 - 14 - 40 - 32, 1428, 0, packet.TCPFlagACK | packet.TCPFlagPSH | packet.TCPFlagCWR, 46},
		{"v4 limited by MTU", f4, 20000, 8948, 1398, packet.TCPFlagACK | packet.TCPFlagPSH, 15},
		{"v4 exact multiple", f4, 1448 * 3, 1448, 0, packet.TCPFlagACK, 3},
		{"v6 single", f6, 100, 1428, 0, packet.TCPFlagACK | packet.TCPFlagPSH, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload := pattern(tt.payload)
			src := tsoFrame(t, tt.flow, payload, tt.flags, tt.gso)
			src.InPort = 3
			orig := append([]byte(nil), src.Bytes()...)
			cnt, err := packet.SegmentCount(src, tt.maxPayload)
			if err != nil || cnt != tt.wantSeg {
				t.Fatalf("SegmentCount = %d, %v; want %d", cnt, err, tt.wantSeg)
			}
			out := outBufs(cnt)
			n, err := packet.Segment(src, tt.maxPayload, out)
			if err != nil || n != tt.wantSeg {
				t.Fatalf("Segment = %d, %v; want %d", n, err, tt.wantSeg)
			}
			if !bytes.Equal(src.Bytes(), orig) {
				t.Fatal("source frame modified")
			}
			seg := int(tt.gso)
			if tt.maxPayload > 0 && tt.maxPayload < seg {
				seg = tt.maxPayload
			}
			var got []byte
			var id0 uint16
			for i := 0; i < n; i++ {
				b := out[i]
				if b.VNet != (packet.VNetHdr{}) || b.InPort != 3 {
					t.Fatalf("segment %d: VNet %+v InPort %d", i, b.VNet, b.InPort)
				}
				p := packettest.Decode(b.Bytes())
				packettest.VerifyChecksums(t, p)
				tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
				want := seg
				if i == n-1 {
					want = tt.payload - seg*(n-1)
				}
				if len(tcp.Payload) != want {
					t.Fatalf("segment %d: payload %d, want %d", i, len(tcp.Payload), want)
				}
				if tcp.Seq != 0xfffff000+uint32(i*seg) || tcp.Ack != 77 || len(tcp.Options) != 3 {
					t.Fatalf("segment %d: seq %#x ack %d options %d", i, tcp.Seq, tcp.Ack, len(tcp.Options))
				}
				last, first := i == n-1, i == 0
				if tcp.FIN != (last && tt.flags&packet.TCPFlagFIN != 0) || tcp.PSH != (last && tt.flags&packet.TCPFlagPSH != 0) ||
					tcp.CWR != (first && tt.flags&packet.TCPFlagCWR != 0) || !tcp.ACK {
					t.Fatalf("segment %d: FIN %v PSH %v CWR %v ACK %v", i, tcp.FIN, tcp.PSH, tcp.CWR, tcp.ACK)
				}
				if ip4, ok := p.NetworkLayer().(*layers.IPv4); ok {
					if int(ip4.Length) != len(b.Bytes())-14 {
						t.Fatalf("segment %d: IPv4 length %d, frame %d", i, ip4.Length, len(b.Bytes()))
					}
					if i == 0 {
						id0 = ip4.Id
					} else if ip4.Id != id0+uint16(i) {
						t.Fatalf("segment %d: IPv4 id %d, first %d", i, ip4.Id, id0)
					}
					if ip4.Flags != layers.IPv4DontFragment {
						t.Fatalf("segment %d: IPv4 flags %v", i, ip4.Flags)
					}
				} else {
					ip6 := p.NetworkLayer().(*layers.IPv6)
					if int(ip6.Length) != len(b.Bytes())-14-40 {
						t.Fatalf("segment %d: IPv6 length %d, frame %d", i, ip6.Length, len(b.Bytes()))
					}
				}
				if tt.maxPayload > 0 && len(b.Bytes())-14 > tt.maxPayload+20+32 {
					t.Fatalf("segment %d: %d bytes of IP exceed the limit", i, len(b.Bytes())-14)
				}
				got = append(got, tcp.Payload...)
			}
			if !bytes.Equal(got, payload) {
				t.Fatal("reassembled payload differs")
			}
		})
	}
}

func TestSegmentUDP(t *testing.T) {
	for _, f := range []packettest.Flow{f4, f6} {
		payload := pattern(10000)
		fr := packettest.UDP(t, f, payload)
		src := packettest.Load(fr)
		var l packet.Layers
		packet.Parse(fr, &l)
		src.VNet = packet.VNetHdr{Flags: packet.VNetFlagNeedsCsum, GSOType: packet.GSOUDPL4, GSOSize: 1200, CsumStart: uint16(l.L4), CsumOffset: 6}
		out := outBufs(9)
		n, err := packet.Segment(src, 0, out)
		if err != nil || n != 9 {
			t.Fatalf("%v: Segment = %d, %v", f.Src, n, err)
		}
		var got []byte
		for i := 0; i < n; i++ {
			p := packettest.Decode(out[i].Bytes())
			packettest.VerifyChecksums(t, p)
			u := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
			if int(u.Length) != len(u.Payload)+8 || (i < n-1 && len(u.Payload) != 1200) {
				t.Fatalf("segment %d: UDP length %d payload %d", i, u.Length, len(u.Payload))
			}
			if u.Checksum == 0 {
				t.Fatalf("segment %d: zero UDP checksum", i)
			}
			got = append(got, u.Payload...)
		}
		if !bytes.Equal(got, payload) {
			t.Fatal("reassembled payload differs")
		}
		// USO datagram boundaries are the application's: a smaller
		// limit is an error, not a resegmentation.
		if _, err := packet.Segment(src, 1000, out); !errors.Is(err, packet.ErrSegTooBig) {
			t.Fatalf("USO with maxPayload < GSOSize: err %v", err)
		}
	}
}

func TestSegmentErrors(t *testing.T) {
	good := func() *packet.Buf { return tsoFrame(t, f4, pattern(5000), packet.TCPFlagACK, 1448) }
	tests := []struct {
		name string
		mut  func(b *packet.Buf)
		out  int
		want error
	}{
		{"not gso", func(b *packet.Buf) { b.VNet.GSOType = packet.GSONone }, 4, packet.ErrNotGSO},
		{"ufo", func(b *packet.Buf) { b.VNet.GSOType = packet.GSOUDP }, 4, packet.ErrUnsupportedGSO},
		{"v6 type on v4", func(b *packet.Buf) { b.VNet.GSOType = packet.GSOTCPv6 }, 4, packet.ErrBadGSO},
		{"udp type on tcp", func(b *packet.Buf) { b.VNet.GSOType = packet.GSOUDPL4 }, 4, packet.ErrBadGSO},
		{"zero gso size", func(b *packet.Buf) { b.VNet.GSOSize = 0 }, 4, packet.ErrBadGSO},
		{"truncated", func(b *packet.Buf) { b.SetLen(40) }, 4, packet.ErrBadGSO},
		{"bad tcp offset", func(b *packet.Buf) { b.Bytes()[34+12] = 0x10 }, 4, packet.ErrBadGSO},
		{"too few outputs", func(b *packet.Buf) {}, 3, packet.ErrOutTooSmall},
		{"ecn bit accepted", func(b *packet.Buf) { b.VNet.GSOType |= packet.GSOECN }, 4, nil},
	}
	for _, tt := range tests {
		b := good()
		tt.mut(b)
		_, err := packet.Segment(b, 0, outBufs(tt.out))
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: err %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestMaxPayloadForMTU(t *testing.T) {
	b := tsoFrame(t, f4, pattern(5000), packet.TCPFlagACK, 8948)
	n, err := packet.MaxPayloadForMTU(b, 1450)
	if err != nil || n != 1450-20-32 {
		t.Fatalf("MaxPayloadForMTU = %d, %v", n, err)
	}
	b6 := tsoFrame(t, f6, pattern(5000), packet.TCPFlagACK, 8948)
	if n, err := packet.MaxPayloadForMTU(b6, 1430); err != nil || n != 1430-40-32 {
		t.Fatalf("v6 MaxPayloadForMTU = %d, %v", n, err)
	}
}

func TestSegmentIPv6ExtensionHeaders(t *testing.T) {
	payload := pattern(4000)
	tcp := make([]byte, 20, 20+len(payload))
	th := packet.TCP(tcp)
	th.SetSrcPort(5)
	th.SetDstPort(6)
	th.SetSeq(100)
	th.SetHeaderLen(20)
	th.SetFlags(packet.TCPFlagACK | packet.TCPFlagPSH)
	tcp = append(tcp, payload...)
	fr := ipv6WithExt(t, packet.ProtoHopByHop, ext(packet.ProtoTCP, 1), tcp)
	src := packettest.Load(fr)
	src.VNet = packet.VNetHdr{GSOType: packet.GSOTCPv6, GSOSize: 1000}
	out := outBufs(4)
	n, err := packet.Segment(src, 0, out)
	if err != nil || n != 4 {
		t.Fatalf("Segment = %d, %v", n, err)
	}
	for i := 0; i < n; i++ {
		p := packettest.Decode(out[i].Bytes())
		packettest.VerifyChecksums(t, p)
		if p.Layer(layers.LayerTypeIPv6HopByHop) == nil {
			t.Fatalf("segment %d lost its hop-by-hop header", i)
		}
		g := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if g.Seq != 100+uint32(i*1000) || len(g.Payload) != 1000 || g.PSH != (i == n-1) {
			t.Fatalf("segment %d: seq %d len %d psh %v", i, g.Seq, len(g.Payload), g.PSH)
		}
		if ip := p.NetworkLayer().(*layers.IPv6); int(ip.Length) != 8+20+1000 {
			t.Fatalf("segment %d: payload length %d", i, ip.Length)
		}
	}
}
