package dataplane

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// tcpSeg builds one TCP segment from the remote VM (mac 9) to a (mac 1).
func tcpSeg(t testing.TB, v6 bool, sport uint16, seq uint32, payload []byte, mod func(*layers.TCP)) []byte {
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: 5201, Seq: seq, Ack: 77, ACK: true, Window: 1000,
		Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: make([]byte, 8)}}}
	if mod != nil {
		mod(tcp)
	}
	if v6 {
		return build(t, eth(mac(1), mac(9), layers.EthernetTypeIPv6),
			&layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: net.ParseIP("fd00::9"), DstIP: net.ParseIP("fd00::1")},
			tcp, gopacket.Payload(payload))
	}
	return build(t, eth(mac(1), mac(9), layers.EthernetTypeIPv4),
		&layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment, SrcIP: []byte{10, 0, 0, 9}, DstIP: []byte{10, 0, 0, 1}},
		tcp, gopacket.Payload(payload))
}

func fromUnderlay(h *harness, vni uint32, frames ...[]byte) {
	for _, f := range frames {
		h.under.inject(frame{data: vxlanFrame(vni, f), peer: netip.AddrPortFrom(remote, 4789)})
	}
	h.step()
}

func pattern(n, start int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(start + i)
	}
	return p
}

func TestGROMergesSegments(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		name := "ipv4"
		if v6 {
			name = "ipv6"
		}
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, Config{}, true)
			a := h.add(t, bypassed(nicOf("a", mac(1), 5)))
			const mss, n = 1400, 10
			var segs [][]byte
			var all []byte
			for i := 0; i < n; i++ {
				size := mss
				if i == n-1 {
					size = 700
				}
				p := pattern(size, i*mss)
				all = append(all, p...)
				segs = append(segs, tcpSeg(t, v6, 40000, uint32(1000+i*mss), p, func(tc *layers.TCP) { tc.PSH = i == n-1 }))
			}
			fromUnderlay(h, 5, segs...)
			got := a.take()
			if len(got) != 1 {
				t.Fatalf("a got %d frames, want 1 merged frame", len(got))
			}
			m := got[0]
			wantType := uint8(packet.GSOTCPv4)
			if v6 {
				wantType = packet.GSOTCPv6
			}
			if m.vnet.GSOType != wantType || m.vnet.GSOSize != mss || m.vnet.Flags != packet.VNetFlagNeedsCsum {
				t.Fatalf("vnet %+v", m.vnet)
			}
			// The partial checksum completes into a valid one.
			full := append([]byte(nil), m.data...)
			if err := packet.CompleteChecksum(full, int(m.vnet.CsumStart), int(m.vnet.CsumOffset)); err != nil {
				t.Fatal(err)
			}
			l4 := int(m.vnet.CsumStart)
			src, dst := full[26:30], full[30:34]
			if v6 {
				src, dst = full[22:38], full[38:54]
			}
			ps := packet.PseudoHeaderChecksum(packet.ProtoTCP, src, dst, uint32(len(full)-l4))
			if packet.Checksum(full[l4:], ps) != 0xffff {
				t.Fatal("merged frame's partial checksum does not complete to a valid one")
			}
			if !v6 && !packet.IPv4(full[14:]).IsChecksumValid() {
				t.Fatal("merged frame's IPv4 header checksum is wrong")
			}
			// Segmenting the merged frame gives back the original segments.
			b := packet.NewBuf()
			b.SetLen(copy(b.Space(), m.data))
			b.VNet = m.vnet
			out := make([]*packet.Buf, 16)
			for i := range out {
				out[i] = packet.NewBuf()
			}
			k, err := packet.Segment(b, 0, out)
			if err != nil || k != n {
				t.Fatalf("Segment = %d, %v; want %d segments", k, err, n)
			}
			var again []byte
			for i := 0; i < k; i++ {
				p := gopacket.NewPacket(out[i].Bytes(), layers.LayerTypeEthernet, gopacket.Default)
				tc := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
				if tc.Seq != uint32(1000+i*mss) || tc.PSH != (i == n-1) {
					t.Errorf("segment %d: seq %d psh %v", i, tc.Seq, tc.PSH)
				}
				again = append(again, tc.Payload...)
			}
			if !bytes.Equal(again, all) {
				t.Fatal("payload changed by merging")
			}
		})
	}
}

func TestGROKeepsWhatMustNotMerge(t *testing.T) {
	p := pattern(1000, 0)
	tests := []struct {
		name   string
		frames func(t *testing.T) [][]byte
		want   int // frames delivered
	}{
		{"two interleaved flows", func(t *testing.T) [][]byte {
			return [][]byte{
				tcpSeg(t, false, 1, 0, p, nil), tcpSeg(t, false, 2, 0, p, nil),
				tcpSeg(t, false, 1, 1000, p, nil), tcpSeg(t, false, 2, 1000, p, nil),
			}
		}, 2},
		{"sequence gap", func(t *testing.T) [][]byte {
			return [][]byte{tcpSeg(t, false, 1, 0, p, nil), tcpSeg(t, false, 1, 5000, p, nil)}
		}, 2},
		{"FIN is not merged", func(t *testing.T) [][]byte {
			return [][]byte{tcpSeg(t, false, 1, 0, p, nil), tcpSeg(t, false, 1, 1000, p, func(tc *layers.TCP) { tc.FIN = true })}
		}, 2},
		{"bad checksum", func(t *testing.T) [][]byte {
			bad := tcpSeg(t, false, 1, 1000, p, nil)
			bad[len(bad)-1] ^= 0xff
			return [][]byte{tcpSeg(t, false, 1, 0, p, nil), bad}
		}, 2},
		{"bad checksum on the first segment", func(t *testing.T) [][]byte {
			bad := tcpSeg(t, false, 1, 0, p, nil)
			bad[len(bad)-1] ^= 0xff
			return [][]byte{bad, tcpSeg(t, false, 1, 1000, p, nil)}
		}, 2},
		{"bad checksum IPv6", func(t *testing.T) [][]byte {
			bad := tcpSeg(t, true, 1, 1000, p, nil)
			bad[len(bad)-2] ^= 0x01
			return [][]byte{tcpSeg(t, true, 1, 0, p, nil), bad}
		}, 2},
		{"different ACK", func(t *testing.T) [][]byte {
			return [][]byte{tcpSeg(t, false, 1, 0, p, nil), tcpSeg(t, false, 1, 1000, p, func(tc *layers.TCP) { tc.Ack = 78 })}
		}, 2},
		{"larger segment after a smaller", func(t *testing.T) [][]byte {
			return [][]byte{tcpSeg(t, false, 1, 0, p[:500], nil), tcpSeg(t, false, 1, 500, p, nil)}
		}, 2},
		{"pure ACKs", func(t *testing.T) [][]byte {
			return [][]byte{tcpSeg(t, false, 1, 0, nil, nil), tcpSeg(t, false, 1, 0, nil, nil)}
		}, 2},
		{"three segments", func(t *testing.T) [][]byte {
			return [][]byte{tcpSeg(t, false, 1, 0, p, nil), tcpSeg(t, false, 1, 1000, p, nil), tcpSeg(t, false, 1, 2000, p, nil)}
		}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{}, true)
			a := h.add(t, bypassed(nicOf("a", mac(1), 5)))
			frames := tc.frames(t)
			fromUnderlay(h, 5, frames...)
			got := a.take()
			if len(got) != tc.want {
				t.Fatalf("a got %d frames, want %d", len(got), tc.want)
			}
			if tc.want == len(frames) {
				for i := range got {
					if !bytes.Equal(got[i].data, frames[i]) || got[i].vnet != (packet.VNetHdr{}) {
						t.Fatalf("frame %d changed", i)
					}
				}
			}
		})
	}
}

func TestGROOffWithoutOffload(t *testing.T) {
	h := newHarness(t, Config{NoOffload: true}, true)
	a := h.add(t, bypassed(nicOf("a", mac(1), 5)))
	p := pattern(1000, 0)
	fromUnderlay(h, 5, tcpSeg(t, false, 1, 0, p, nil), tcpSeg(t, false, 1, 1000, p, nil))
	if got := a.take(); len(got) != 2 {
		t.Fatalf("a got %d frames, want the 2 segments unmerged", len(got))
	}
}
