package dataplane

import (
	"bytes"
	"encoding/binary"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// Software GRO for vNICs with offloads: consecutive TCP segments of one
// flow queued for a TAP (typically decapsulated from the underlay, where
// the remote side had to segment them) are merged into one TSO
// super-frame with a vnet header, so that the TAP write and the VM's
// network stack handle one 64 KiB frame instead of forty 1500-byte ones.
// The merge rules follow Linux's tcp_gro_receive: same addresses, ports,
// ACK number, window, header length and options; contiguous sequence
// numbers; equal-sized segments, a shorter one or PSH ending the frame;
// no SYN, FIN, RST, URG, ECE or CWR; IPv4 without options or
// fragmentation, with the same TOS, TTL and DF; IPv6 without extension
// headers, with the same traffic class, flow label and hop limit. Every
// segment's TCP checksum is verified before it is merged, as the merged
// frame carries a partial checksum the VM will not check.

const (
	groMaxFlows = 8
	// groMaxLen bounds the IP packet of a merged frame.
	groMaxLen = 65535
)

// groHead is a frame that later segments of its flow may be appended to.
type groHead struct {
	b        *packet.Buf
	v6       bool
	l3, l4   int // offsets of the IP and TCP headers
	hdrLen   int // Ethernet, IP and TCP headers
	gsoSize  int
	nextSeq  uint32
	segments int
	// addrSum is the flow's pseudo-header sum without the length
	// (addresses and protocol), shared by all its segments.
	addrSum uint16
}

// groSegment is a parsed candidate segment.
type groSegment struct {
	v6      bool
	l3, l4  int
	hdrLen  int
	payload int
	seq     uint32
	flags   uint8
}

// groCandidate is groParse's fast rejection: whether b is a plain frame
// long enough for a TCP segment with data, whose IP header says TCP.
func groCandidate(b *packet.Buf) bool {
	if !b.VNet.IsZero() {
		return false
	}
	f := b.Bytes()
	switch {
	case len(f) < 54:
		return false
	case f[12] == 0x08 && f[13] == 0x00:
		return f[23] == packet.ProtoTCP
	case f[12] == 0x86 && f[13] == 0xdd:
		return f[20] == packet.ProtoTCP
	}
	return false
}

// groWorth reports whether coalescing q can merge anything: whether two
// of its frames at least are candidates (see groCandidate).
func groWorth(q []*packet.Buf) bool {
	n := 0
	for _, b := range q {
		if groCandidate(b) {
			if n++; n == 2 {
				return true
			}
		}
	}
	return false
}

// groParse returns the layout of a plain (no vnet metadata) TCP segment
// that may be merged, and whether it is one.
func groParse(b *packet.Buf) (groSegment, bool) {
	var g groSegment
	if !groCandidate(b) {
		return g, false
	}
	f := b.Bytes()
	var l packet.Layers
	if !packet.Parse(f, &l) || l.Proto != packet.ProtoTCP || l.L4 == 0 || l.Fragment || l.L3End != len(f) {
		return g, false
	}
	switch {
	case l.IsIPv4():
		if l.L4-l.L3 != 20 {
			return g, false // IP options
		}
	case l.IsIPv6():
		g.v6 = true
		if l.L4-l.L3 != 40 {
			return g, false // extension headers
		}
	default:
		return g, false
	}
	if len(f) < l.L4+20 {
		return g, false
	}
	t := packet.TCP(f[l.L4:])
	th := t.HeaderLen()
	if th < 20 || l.L4+th > len(f) {
		return g, false
	}
	g.l3, g.l4, g.hdrLen = l.L3, l.L4, l.L4+th
	g.payload = len(f) - g.hdrLen
	g.seq, g.flags = t.Seq(), t.Flags()
	return g, true
}

// groAddrSum returns the sum of the addresses and protocol of segment
// f's pseudo-header: PseudoHeaderChecksum without the length.
func groAddrSum(f []byte, g *groSegment) uint16 {
	var src, dst []byte
	if g.v6 {
		src, dst = f[g.l3+8:g.l3+24], f[g.l3+24:g.l3+40]
	} else {
		src, dst = f[g.l3+12:g.l3+16], f[g.l3+16:g.l3+20]
	}
	return packet.Checksum(dst, packet.Checksum(src, packet.ProtoTCP))
}

// groChecksumOK verifies a segment's TCP checksum; addrSum is
// groAddrSum of the segment (or of any segment of its flow).
func groChecksumOK(f []byte, g *groSegment, addrSum uint16) bool {
	seg := f[g.l4:]
	n := uint32(len(seg))
	ps := packet.ChecksumCombine(packet.ChecksumCombine(addrSum, uint16(n>>16)), uint16(n))
	return packet.Checksum(seg, ps) == 0xffff
}

// groSameFlow reports whether segment f (layout g) belongs to head h's
// flow: same IP addresses and TCP ports.
func groSameFlow(h *groHead, f []byte, g *groSegment) bool {
	if h.v6 != g.v6 {
		return false
	}
	hf := h.b.Bytes()
	if g.v6 {
		if !bytes.Equal(hf[h.l3+8:h.l3+40], f[g.l3+8:g.l3+40]) {
			return false
		}
	} else if !bytes.Equal(hf[h.l3+12:h.l3+20], f[g.l3+12:g.l3+20]) {
		return false
	}
	return bytes.Equal(hf[h.l4:h.l4+4], f[g.l4:g.l4+4])
}

const groBadFlags = packet.TCPFlagSYN | packet.TCPFlagFIN | packet.TCPFlagRST |
	packet.TCPFlagURG | packet.TCPFlagECE | packet.TCPFlagCWR

// groCanAppend reports whether segment f may be appended to head h.
func groCanAppend(h *groHead, f []byte, g *groSegment) bool {
	hf := h.b.Bytes()
	if g.payload == 0 || g.payload > h.gsoSize || g.seq != h.nextSeq || g.flags&groBadFlags != 0 ||
		g.hdrLen-g.l4 != h.hdrLen-h.l4 || h.b.Len()-h.l3+g.payload > groMaxLen ||
		h.b.Len()+g.payload > len(h.b.Space()) {
		return false
	}
	if !bytes.Equal(hf[:14], f[:14]) {
		return false // MACs and EtherType
	}
	if g.v6 {
		// Version, traffic class, flow label; next header, hop limit.
		if !bytes.Equal(hf[h.l3:h.l3+4], f[g.l3:g.l3+4]) || !bytes.Equal(hf[h.l3+6:h.l3+8], f[g.l3+6:g.l3+8]) {
			return false
		}
	} else {
		// TOS; DF and fragment bits; TTL and protocol.
		if hf[h.l3+1] != f[g.l3+1] || hf[h.l3+6] != f[g.l3+6] || hf[h.l3+8] != f[g.l3+8] {
			return false
		}
	}
	// ACK number, header length, flags but PSH, window, options.
	ht, gt := hf[h.l4:h.hdrLen], f[g.l4:g.hdrLen]
	if !bytes.Equal(ht[8:13], gt[8:13]) || ht[13]&^packet.TCPFlagPSH != gt[13]&^packet.TCPFlagPSH ||
		!bytes.Equal(ht[14:16], gt[14:16]) || !bytes.Equal(ht[20:], gt[20:]) {
		return false
	}
	return groChecksumOK(f, g, h.addrSum)
}

// coalesce merges the mergeable TCP segments of q in place and returns
// the shortened queue; merged buffers are released.
func (w *worker) coalesce(q []*packet.Buf) []*packet.Buf {
	heads := w.groHeads[:0]
	out := q[:0]
	for i, b := range q {
		q[i] = nil
		f := b.Bytes()
		g, ok := groParse(b)
		if !ok {
			out = append(out, b)
			continue
		}
		hi := -1
		for j := range heads {
			if groSameFlow(&heads[j], f, &g) {
				hi = j
				break
			}
		}
		if hi >= 0 {
			h := &heads[hi]
			if groCanAppend(h, f, &g) {
				n := h.b.Len()
				copy(h.b.Space()[n:], f[g.hdrLen:])
				h.b.SetLen(n + g.payload)
				h.nextSeq += uint32(g.payload)
				h.segments++
				if g.flags&packet.TCPFlagPSH != 0 {
					hf := h.b.Bytes()
					hf[h.l4+13] |= packet.TCPFlagPSH
				}
				if g.payload < h.gsoSize || g.flags&packet.TCPFlagPSH != 0 {
					groFinish(h)
					heads = append(heads[:hi], heads[hi+1:]...)
				}
				w.put(b)
				continue
			}
			// The flow goes on with a frame that cannot be appended:
			// close its head so that nothing overtakes that frame.
			groFinish(h)
			heads = append(heads[:hi], heads[hi+1:]...)
		}
		out = append(out, b)
		if g.payload == 0 || g.flags&(groBadFlags|packet.TCPFlagPSH) != 0 {
			continue
		}
		addrSum := groAddrSum(f, &g)
		if !groChecksumOK(f, &g, addrSum) {
			continue
		}
		if len(heads) == groMaxFlows {
			groFinish(&heads[0])
			heads = append(heads[:0], heads[1:]...)
		}
		heads = append(heads, groHead{
			b: b, v6: g.v6, l3: g.l3, l4: g.l4, hdrLen: g.hdrLen,
			gsoSize: g.payload, nextSeq: g.seq + uint32(g.payload), segments: 1, addrSum: addrSum,
		})
	}
	for j := range heads {
		groFinish(&heads[j])
	}
	w.groHeads = heads[:0]
	return out
}

// groFinish turns a head that absorbed segments into a TSO frame: IP
// length (and IPv4 header checksum), the pseudo-header sum in the TCP
// checksum field and the vnet header.
func groFinish(h *groHead) {
	if h.segments < 2 {
		return
	}
	f := h.b.Bytes()
	var src, dst []byte
	if h.v6 {
		binary.BigEndian.PutUint16(f[h.l3+4:], uint16(len(f)-h.l3-40))
		src, dst = f[h.l3+8:h.l3+24], f[h.l3+24:h.l3+40]
		h.b.VNet.GSOType = packet.GSOTCPv6
	} else {
		ip := packet.IPv4(f[h.l3:])
		ip.SetTotalLen(uint16(len(f) - h.l3))
		ip.UpdateChecksum()
		src, dst = f[h.l3+12:h.l3+16], f[h.l3+16:h.l3+20]
		h.b.VNet.GSOType = packet.GSOTCPv4
	}
	ps := packet.PseudoHeaderChecksum(packet.ProtoTCP, src, dst, uint32(len(f)-h.l4))
	binary.BigEndian.PutUint16(f[h.l4+16:], ps)
	h.b.VNet.Flags = packet.VNetFlagNeedsCsum
	h.b.VNet.HdrLen = uint16(h.hdrLen)
	h.b.VNet.GSOSize = uint16(h.gsoSize)
	h.b.VNet.CsumStart = uint16(h.l4)
	h.b.VNet.CsumOffset = 16
}
