package packet_test

import (
	"net/netip"
	"testing"

	"github.com/butterfly-go/butterfly/internal/packet"
)

func TestDescribe(t *testing.T) {
	a, b := packet.MAC{2, 0, 0, 0, 0, 1}, packet.MAC{2, 0, 0, 0, 0, 2}
	eth := func(typ uint16, n int) []byte {
		f := make([]byte, packet.EthernetLen+n)
		e := packet.Ethernet(f)
		e.SetSrc(a)
		e.SetDst(b)
		e.SetType(typ)
		return f
	}
	ip4 := func(proto uint8, l4 []byte) []byte {
		f := eth(packet.EtherTypeIPv4, 20)
		packet.IPv4(f[14:]).Encode(0, uint16(20+len(l4)), 1, 0, 64, proto, netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"))
		return append(f, l4...)
	}
	tcp := make([]byte, 20)
	packet.TCP(tcp).SetSrcPort(1234)
	packet.TCP(tcp).SetDstPort(22)
	packet.TCP(tcp).SetHeaderLen(20)
	packet.TCP(tcp).SetFlags(packet.TCPFlagSYN | packet.TCPFlagACK)
	udp := make([]byte, 8)
	packet.UDP(udp).Encode(53, 5353, 8, 0)
	icmp := []byte{8, 0, 0, 0, 0, 7, 0, 1}
	arp := eth(packet.EtherTypeARP, packet.ARPLen)
	packet.ARP(arp[14:]).Encode(1, a, netip.MustParseAddr("10.0.0.1"), packet.MAC{}, netip.MustParseAddr("10.0.0.2"))
	v6 := eth(packet.EtherTypeIPv6, 40)
	packet.IPv6(v6[14:]).Encode(0, 0, 8, packet.ProtoUDP, 64, netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2"))
	v6 = append(v6, udp...)
	tests := []struct {
		frame []byte
		want  string
	}{
		{make([]byte, 5), "runt frame, 5 bytes"},
		{ip4(packet.ProtoTCP, tcp), "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 10.0.0.1 > 10.0.0.2 TCP 1234 > 22 [S.], 54 bytes"},
		{ip4(packet.ProtoUDP, udp), "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 10.0.0.1 > 10.0.0.2 UDP 53 > 5353, 42 bytes"},
		{ip4(packet.ProtoICMPv4, icmp), "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 10.0.0.1 > 10.0.0.2 ICMP type 8 code 0 id 7, 42 bytes"},
		{ip4(47, nil), "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 10.0.0.1 > 10.0.0.2 proto 47, 34 bytes"},
		{ip4(packet.ProtoTCP, tcp)[:40], "02:00:00:00:00:01 > 02:00:00:00:00:02 ethertype 0x0800 malformed, 40 bytes"},
		{v6, "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv6 fd00::1 > fd00::2 UDP 53 > 5353, 62 bytes"},
		{arp, "02:00:00:00:00:01 > 02:00:00:00:00:02 ARP request 10.0.0.1 (02:00:00:00:00:01) -> 10.0.0.2, 42 bytes"},
		{eth(0x88cc, 10), "02:00:00:00:00:01 > 02:00:00:00:00:02 ethertype 0x88cc, 24 bytes"},
	}
	for _, tt := range tests {
		if got := packet.Describe(tt.frame); got != tt.want {
			t.Errorf("Describe = %q, want %q", got, tt.want)
		}
	}
}

// TestDescribeHead: the first bytes of a long frame are decoded as the
// frame, with its real length.
func TestDescribeHead(t *testing.T) {
	f := make([]byte, 1514)
	e := packet.Ethernet(f)
	e.SetSrc(packet.MAC{2, 0, 0, 0, 0, 1})
	e.SetDst(packet.MAC{2, 0, 0, 0, 0, 2})
	e.SetType(packet.EtherTypeIPv6)
	packet.IPv6(f[14:]).Encode(0, 0, 1460, packet.ProtoTCP, 64, netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2"))
	tcp := packet.TCP(f[54:])
	tcp.SetSrcPort(5)
	tcp.SetDstPort(80)
	tcp.SetHeaderLen(20)
	tcp.SetFlags(packet.TCPFlagACK | packet.TCPFlagPSH)
	want := "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv6 fd00::1 > fd00::2 TCP 5 > 80 [P.], 1514 bytes"
	if got := packet.DescribeHead(f[:96], len(f)); got != want {
		t.Errorf("DescribeHead = %q, want %q", got, want)
	}
	if got := packet.DescribeHead(f, len(f)); got != want {
		t.Errorf("DescribeHead of the whole frame = %q, want %q", got, want)
	}
}
