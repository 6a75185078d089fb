package packet_test

import (
	"testing"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/packet/packettest"
)

func TestZeroAllocs(t *testing.T) {
	tcp4 := packettest.TCP(t, f4, packettest.TCPSeg{Seq: 1, Flags: packet.TCPFlagACK, Payload: pattern(1400)})
	udp6 := packettest.UDP(t, f6, pattern(1000))
	tso := tsoFrame(t, f4, pattern(65000), packet.TCPFlagACK, 1448)
	out := outBufs(64)
	dst := make([]byte, 2000)
	csum := packettest.Load(tcp4)
	csum.VNet = packet.VNetHdr{Flags: packet.VNetFlagNeedsCsum, CsumStart: 34, CsumOffset: 16}
	var l packet.Layers
	tests := []struct {
		name string
		fn   func()
	}{
		{"Parse", func() { packet.Parse(tcp4, &l); packet.Parse(udp6, &l) }},
		{"accessors", func() {
			ip := packet.IPv4(tcp4[14:])
			_ = ip.Src().Is4() && ip.Dst().Is4() && ip.IsValid()
			_, _, _, _ = packet.IPv6(udp6[14:]).L4()
			_ = packet.Ethernet(tcp4).Src().String
		}},
		{"Checksum", func() { packet.Checksum(tcp4, 0) }},
		{"FinishChecksum", func() {
			csum.VNet.Flags = packet.VNetFlagNeedsCsum
			_ = packet.FinishChecksum(csum)
		}},
		{"Segment", func() {
			if _, err := packet.Segment(tso, 0, out); err != nil {
				t.Fatal(err)
			}
		}},
		{"FragNeeded", func() { _, _ = packet.BuildICMPv4FragNeeded(dst, tcp4, 1400) }},
		{"PacketTooBig", func() { _, _ = packet.BuildICMPv6PacketTooBig(dst, udp6, 1280) }},
		{"FlowHash", func() { packet.FlowHash(tcp4); packet.FlowHash(udp6) }},
	}
	for _, tt := range tests {
		if a := testing.AllocsPerRun(50, tt.fn); a != 0 {
			t.Errorf("%s: %v allocs per run", tt.name, a)
		}
	}
}

func BenchmarkChecksum1500(b *testing.B) {
	buf := pattern(1500)
	b.SetBytes(1500)
	for b.Loop() {
		packet.Checksum(buf, 0)
	}
}

func BenchmarkParse(b *testing.B) {
	fr := packettest.TCP(b, f6, packettest.TCPSeg{Seq: 1, Payload: pattern(100)})
	var l packet.Layers
	for b.Loop() {
		packet.Parse(fr, &l)
	}
}

func BenchmarkSegment64KiB(b *testing.B) {
	for _, f := range []packettest.Flow{f4, f6} {
		name := "tcp4"
		if f.Src.Is6() {
			name = "tcp6"
		}
		b.Run(name, func(b *testing.B) {
			src := tsoFrame(b, f, pattern(65536-14-60-32), packet.TCPFlagACK, 1448)
			out := outBufs(64)
			b.SetBytes(int64(src.Len()))
			for b.Loop() {
				if _, err := packet.Segment(src, 0, out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkFlowHash(b *testing.B) {
	fr := packettest.TCP(b, f4, packettest.TCPSeg{Seq: 1})
	for b.Loop() {
		packet.FlowHash(fr)
	}
}
