package packet

import "errors"

// Errors of Segment.
var (
	ErrNotGSO         = errors.New("packet: frame is not a GSO frame")
	ErrUnsupportedGSO = errors.New("packet: unsupported GSO type")
	ErrBadGSO         = errors.New("packet: malformed GSO frame")
	ErrSegTooBig      = errors.New("packet: UDP GSO segment larger than allowed")
	ErrOutTooSmall    = errors.New("packet: not enough output buffers")
)

// gsoInfo describes a super-frame being segmented.
type gsoInfo struct {
	v6      bool
	udp     bool
	l3, l4  int // offsets of the IP and L4 headers
	hdrLen  int // all headers, Ethernet to L4 included
	seg     int // payload bytes per segment
	payload int // total payload bytes
	end     int // end of the IP packet in the frame
}

func gsoParse(src *Buf, maxPayload int) (gsoInfo, error) {
	var g gsoInfo
	typ := src.VNet.GSOType &^ GSOECN
	switch typ {
	case GSONone:
		return g, ErrNotGSO
	case GSOTCPv4, GSOTCPv6:
	case GSOUDPL4:
		g.udp = true
	default:
		return g, ErrUnsupportedGSO
	}
	frame := src.Bytes()
	var l Layers
	if !Parse(frame, &l) || l.L4 == 0 {
		return g, ErrBadGSO
	}
	g.end = l.L3End
	switch {
	case typ == GSOTCPv4 && !l.IsIPv4(), typ == GSOTCPv6 && !l.IsIPv6(),
		!l.IsIPv4() && !l.IsIPv6(), l.Fragment:
		return g, ErrBadGSO
	}
	g.v6 = l.IsIPv6()
	g.l3, g.l4 = l.L3, l.L4
	frame = frame[:g.end]
	if g.udp {
		if l.Proto != ProtoUDP || len(frame) < g.l4+UDPLen {
			return g, ErrBadGSO
		}
		g.hdrLen = g.l4 + UDPLen
	} else {
		if l.Proto != ProtoTCP || len(frame) < g.l4+TCPMinLen {
			return g, ErrBadGSO
		}
		t := TCP(frame[g.l4:])
		if !t.IsValid() {
			return g, ErrBadGSO
		}
		g.hdrLen = g.l4 + t.HeaderLen()
	}
	g.payload = len(frame) - g.hdrLen
	g.seg = int(src.VNet.GSOSize)
	if g.seg <= 0 {
		return g, ErrBadGSO
	}
	if maxPayload > 0 && maxPayload < g.seg {
		if g.udp {
			return g, ErrSegTooBig
		}
		g.seg = maxPayload
	}
	return g, nil
}

// GSOHeaderLen returns the length of the headers every segment of GSO
// frame src repeats (Ethernet to its TCP or UDP header included), or the
// error Segment would return.
func GSOHeaderLen(src *Buf) (int, error) {
	g, err := gsoParse(src, 0)
	return g.hdrLen, err
}

// SegmentCount returns how many segments Segment will produce for src
// with the same maxPayload, or 0 with the error Segment would return.
func SegmentCount(src *Buf, maxPayload int) (int, error) {
	g, err := gsoParse(src, maxPayload)
	if err != nil {
		return 0, err
	}
	return g.count(), nil
}

func (g *gsoInfo) count() int {
	if g.payload == 0 {
		return 1
	}
	return (g.payload + g.seg - 1) / g.seg
}

// Segment splits the TSO/USO super-frame src (src.VNet.GSOType GSOTCPv4,
// GSOTCPv6 or GSOUDPL4, ECN bit allowed) into frames written to out[0:n],
// which the caller takes from its pool. Each segment carries at most
// min(src.VNet.GSOSize, maxPayload) payload bytes (maxPayload <= 0 means
// GSOSize); UDP datagrams keep exactly GSOSize and ErrSegTooBig is
// returned when that exceeds maxPayload. Every segment gets the headers
// of src with: IPv4 total length, ID incremented per segment and header
// checksum; IPv6 payload length; TCP sequence number advanced, FIN and PSH
// only on the last segment and CWR only on the first; UDP length; and a
// full L4 checksum. The segments' VNet is zero (no offload), and InPort
// and Peer are copied from src. src is not modified. Nothing is
// allocated.
func Segment(src *Buf, maxPayload int, out []*Buf) (int, error) {
	g, err := gsoParse(src, maxPayload)
	if err != nil {
		return 0, err
	}
	n := g.count()
	if len(out) < n {
		return 0, ErrOutTooSmall
	}
	frame := src.Bytes()[:g.end]
	hdr := frame[:g.hdrLen]
	data := frame[g.hdrLen:]
	var id uint16
	var seq uint32
	var flags uint8
	if !g.v6 {
		id = IPv4(frame[g.l3:]).ID()
	}
	if !g.udp {
		t := TCP(frame[g.l4:])
		seq, flags = t.Seq(), t.Flags()
	}
	// The pseudo-header's addresses and protocol are the same for every
	// segment: sum them once; only the length is added per segment.
	proto := uint16(ProtoTCP)
	if g.udp {
		proto = ProtoUDP
	}
	var addrSum uint16
	if g.v6 {
		ip := IPv6(frame[g.l3:])
		addrSum = Checksum(ip.DstBytes(), Checksum(ip.SrcBytes(), proto))
	} else {
		ip := IPv4(frame[g.l3:])
		addrSum = Checksum(ip.DstBytes(), Checksum(ip.SrcBytes(), proto))
	}
	for i := 0; i < n; i++ {
		chunk := data
		if len(chunk) > g.seg {
			chunk = chunk[:g.seg]
		}
		data = data[len(chunk):]
		d := out[i]
		space := d.Space()
		total := g.hdrLen + len(chunk)
		if len(space) < total {
			return 0, ErrOutTooSmall
		}
		copy(space, hdr)
		copy(space[g.hdrLen:], chunk)
		d.SetLen(total)
		d.VNet = VNetHdr{}
		d.InPort, d.Peer = src.InPort, src.Peer
		f := d.Bytes()
		l4len := total - g.l4
		if g.v6 {
			IPv6(f[g.l3:]).SetPayloadLen(uint16(total - g.l3 - IPv6Len))
		} else {
			ip := IPv4(f[g.l3:])
			ip.SetTotalLen(uint16(total - g.l3))
			ip.SetID(id + uint16(i))
			ip.UpdateChecksum()
		}
		ps := ChecksumCombine(ChecksumCombine(addrSum, uint16(l4len>>16)), uint16(l4len))
		if g.udp {
			u := UDP(f[g.l4:])
			u.SetLength(uint16(l4len))
			u.SetChecksum(0)
			c := ^Checksum(f[g.l4:], ps)
			if c == 0 {
				c = 0xffff
			}
			u.SetChecksum(c)
		} else {
			t := TCP(f[g.l4:])
			t.SetSeq(seq + uint32(i*g.seg))
			fl := flags
			if i != n-1 {
				fl &^= TCPFlagFIN | TCPFlagPSH
			}
			if i != 0 {
				fl &^= TCPFlagCWR
			}
			t.SetFlags(fl)
			t.SetChecksum(0)
			t.SetChecksum(^Checksum(f[g.l4:], ps))
		}
	}
	return n, nil
}
