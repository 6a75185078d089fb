package firewall

import "github.com/butterfly-go/butterfly/internal/packet"

// TCP sequence-window tracking, after Linux's tcp_in_window (without SACK
// blocks: the cumulative acknowledgement stands for them, which is never
// stricter). Each direction of a flow records the highest sequence number
// it sent (end), the highest one its peer allows it (maxend: the peer's
// acknowledgement plus window) and the largest window it advertised
// (maxwin). A segment, a RST included, is in window when
//
//	I   seq <= sender.maxend                  (not beyond what the peer allows)
//	II  end >= sender.end - receiver.maxwin   (not older than a window)
//	III ack <= receiver.end                   (acknowledges nothing unsent)
//	IV  ack >= receiver.end - max(sender.maxwin, 66000)
//
// Windows are scaled when both SYNs carry the window-scale option. A
// direction first seen without SYN (e.g. a RST refusing a connection) is
// initialized from that segment. Flows whose opening the zone did not
// see (imported from another host) are liberal, as Linux's picked-up
// connections: windows are learnt but never enforced, since their scale
// is unknown.

// tcpWin is one direction's window state.
type tcpWin struct {
	end    uint32
	maxend uint32
	maxwin uint32
	scale  uint8
	// scaleOK: this direction's SYN carried a window-scale option.
	scaleOK bool
}

// tcpSeg is what window tracking needs of a segment.
type tcpSeg struct {
	seq, ack uint32
	win      uint16
	dlen     uint32 // payload bytes
	wscale   int8   // window-scale option of a SYN, -1 if none
}

// maxAckWinConst is Linux's MAXACKWINCONST: how far behind an
// acknowledgement may lag at least.
const maxAckWinConst = 66000

// seqAfter reports whether sequence number a comes after b (RFC 1982).
func seqAfter(a, b uint32) bool { return int32(a-b) > 0 }

// seqBefore reports whether a comes before b.
func seqBefore(a, b uint32) bool { return int32(a-b) < 0 }

// parseSeg reads a segment's window-tracking fields; tcp is valid.
func parseSeg(tcp packet.TCP, flags uint8) tcpSeg {
	s := tcpSeg{seq: tcp.Seq(), ack: tcp.Ack(), win: tcp.Window(), dlen: uint32(len(tcp) - tcp.HeaderLen()), wscale: -1}
	if flags&packet.TCPFlagSYN != 0 {
		s.wscale = windowScale(tcp[packet.TCPMinLen:tcp.HeaderLen()])
	}
	return s
}

// windowScale returns the window-scale option in opts (at most 14), or
// -1 when there is none or the options are malformed.
func windowScale(opts []byte) int8 {
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0: // end of options
			return -1
		case 1: // no-operation
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			return -1
		}
		if opts[i] == 3 && opts[i+1] == 3 {
			return int8(min(opts[i+2], 14))
		}
		i += int(opts[i+1])
	}
	return -1
}

// segEnd is the sequence number after the segment (SYN and FIN count
// one).
func segEnd(s *tcpSeg, flags uint8) uint32 {
	end := s.seq + s.dlen
	if flags&packet.TCPFlagSYN != 0 {
		end++
	}
	if flags&packet.TCPFlagFIN != 0 {
		end++
	}
	return end
}

// initWin starts a direction's state from its SYN (or first segment).
func (w *tcpWin) init(s *tcpSeg, end uint32, syn bool) {
	w.end, w.maxend = end, end
	w.maxwin = max(uint32(s.win), 1)
	w.scale, w.scaleOK = 0, false
	if syn && s.wscale >= 0 {
		w.scale, w.scaleOK = uint8(s.wscale), true
	}
}

// tcpWindow checks segment s (TCP flags flags) of e's flow and updates
// the windows. It returns false for a segment out of window, leaving e
// unchanged; liberal entries accept every segment.
func tcpWindow(e *entry, fromOrig bool, s *tcpSeg, flags uint8) bool {
	d := 0
	if !fromOrig {
		d = 1
	}
	snd, rcv := &e.win[d], &e.win[1-d]
	syn := flags&packet.TCPFlagSYN != 0
	if !syn && snd.maxwin != 0 {
		// The common case: both sides known, no SYN.
		return inWindow(e, snd, rcv, s, flags, segEnd(s, flags), uint32(s.win)<<snd.scale)
	}
	hasAck := flags&packet.TCPFlagACK != 0
	end := segEnd(s, flags)
	win := uint32(s.win)
	if !syn {
		win <<= snd.scale
	}
	// Work on copies: an out-of-window segment changes nothing.
	sn, rc := *snd, *rcv
	switch {
	case sn.maxwin == 0 && syn:
		// The responder's SYN-ACK (or a simultaneous open).
		sn.init(s, end, true)
		if !sn.scaleOK || !rc.scaleOK {
			sn.scale, rc.scale = 0, 0
		}
		if !hasAck {
			*snd, *rcv = sn, rc
			return true
		}
	case sn.maxwin == 0:
		// First segment of this direction, without SYN.
		sn.end = end
		sn.maxwin = max(win, 1)
		sn.maxend = end + sn.maxwin
		if rc.maxwin == 0 {
			rc.end, rc.maxend = s.ack, s.ack
		}
	case !hasAck && fromOrig && e.state == TCPSynSent && seqAfter(end, sn.end),
		hasAck && !fromOrig && e.state == TCPSynRecv && seqAfter(end, sn.end):
		// SYN or SYN-ACK sent again with another initial sequence number.
		sn.init(s, end, true)
		if !hasAck {
			*snd = sn
			return true
		}
	}
	if !inWindow(e, &sn, &rc, s, flags, end, win) {
		return false
	}
	*snd, *rcv = sn, rc
	return true
}

// inWindow checks a segment ending at end and advertising window win
// (scaled) against the sender's and the receiver's state, and updates
// them when it passes (or e is liberal).
func inWindow(e *entry, sn, rc *tcpWin, s *tcpSeg, flags uint8, end, win uint32) bool {
	ack := s.ack
	if flags&packet.TCPFlagACK == 0 || flags&packet.TCPFlagRST != 0 && ack == 0 {
		ack = rc.end
	}
	maxAck := max(sn.maxwin, maxAckWinConst)
	in := !seqAfter(s.seq, sn.maxend) && // I
		!seqBefore(end, sn.end-rc.maxwin) && // II
		!seqAfter(ack, rc.end) && // III
		!seqBefore(ack, rc.end-maxAck) // IV
	if !in && e.flags&flLiberal == 0 {
		return false
	}
	sn.maxwin = max(sn.maxwin, win)
	if seqAfter(end, sn.end) {
		sn.end = end
	}
	if rc.maxwin != 0 && seqAfter(end, sn.maxend) {
		rc.maxwin += end - sn.maxend
	}
	if seqAfter(ack+win, rc.maxend-1) {
		rc.maxend = ack + win
		if win == 0 {
			rc.maxend++
		}
	}
	return true
}
