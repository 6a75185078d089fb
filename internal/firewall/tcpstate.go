package firewall

import (
	"github.com/butterfly-go/butterfly/internal/packet"
)

// TCPState is a tracked TCP connection's state.
type TCPState uint8

// Entry states: TCP states, then the other kinds.
const (
	stEmpty TCPState = iota
	TCPSynSent
	TCPSynRecv
	TCPEstablished
	TCPFinWait
	TCPCloseWait
	TCPLastAck
	TCPTimeWait
	TCPClose
	stUDP
	stICMP
	stOther
	stFrag
)

// tcpTimeout is the lifetime of an entry in state s.
func tcpTimeout(s TCPState) int64 {
	switch s {
	case TCPSynSent:
		return TimeoutSynSent
	case TCPSynRecv:
		return TimeoutSynRecv
	case TCPEstablished:
		return TimeoutEstablish
	case TCPFinWait:
		return TimeoutFinWait
	case TCPCloseWait:
		return TimeoutCloseWait
	case TCPLastAck:
		return TimeoutLastAck
	case TCPTimeWait:
		return TimeoutTimeWait
	}
	return TimeoutClose
}

// tcpStep advances e's TCP state for a segment with flags; false marks
// the segment invalid (state unchanged).
func tcpStep(e *entry, fromOrig bool, flags uint8) bool {
	syn := flags&packet.TCPFlagSYN != 0
	ack := flags&packet.TCPFlagACK != 0
	fin := flags&packet.TCPFlagFIN != 0
	if flags&packet.TCPFlagRST != 0 {
		if e.state == TCPSynSent && fromOrig {
			return false
		}
		e.state = TCPClose
		return true
	}
	if syn && fin {
		return false
	}
	switch e.state {
	case TCPSynSent:
		switch {
		case fromOrig && syn && !ack: // retransmission
		case !fromOrig && syn: // SYN-ACK, or simultaneous open
			e.state = TCPSynRecv
		default:
			return false
		}
		return true
	case TCPSynRecv:
		switch {
		case syn: // retransmissions
		case fromOrig && ack && !fin:
			e.state = TCPEstablished
		case fromOrig && fin:
			e.flags |= flFinOrig | flFirstFinOrig
			e.state = TCPFinWait
		default:
			return false
		}
		return true
	}
	if syn {
		// A SYN inside an established connection: only a retransmitted
		// SYN-ACK from the responder is tolerated.
		return !fromOrig && ack
	}
	if fin {
		if e.flags&(flFinOrig|flFinReply) == 0 && fromOrig {
			e.flags |= flFirstFinOrig
		}
		if fromOrig {
			e.flags |= flFinOrig
		} else {
			e.flags |= flFinReply
		}
	}
	firstOrig := e.flags&flFirstFinOrig != 0
	both := e.flags&flFinOrig != 0 && e.flags&flFinReply != 0
	switch e.state {
	case TCPEstablished:
		if fin {
			e.state = TCPFinWait
		}
	case TCPFinWait:
		switch {
		case both:
			e.state = TCPLastAck
		case ack && fromOrig != firstOrig:
			e.state = TCPCloseWait
		}
	case TCPCloseWait:
		if both {
			e.state = TCPLastAck
		}
	case TCPLastAck:
		// The last FIN came from the side that did not close first; its
		// ACK comes from the first closer.
		if ack && !fin && fromOrig == firstOrig {
			e.state = TCPTimeWait
		}
	}
	return true
}

// String names the state as Linux does.
func (s TCPState) String() string {
	switch s {
	case TCPSynSent:
		return "SYN_SENT"
	case TCPSynRecv:
		return "SYN_RECV"
	case TCPEstablished:
		return "ESTABLISHED"
	case TCPFinWait:
		return "FIN_WAIT"
	case TCPCloseWait:
		return "CLOSE_WAIT"
	case TCPLastAck:
		return "LAST_ACK"
	case TCPTimeWait:
		return "TIME_WAIT"
	case TCPClose:
		return "CLOSE"
	}
	return "NONE"
}
