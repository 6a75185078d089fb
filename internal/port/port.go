// Package port defines the batch-shaped packet endpoints the dataplane
// polls: vNIC ports (TAP, vhost-user) and the VXLAN underlay. The
// implementations live in the sub-packages.
package port

import "github.com/butterfly-go/butterfly/internal/packet"

// Port is a batch-shaped packet endpoint, in the manner of wireguard-go's
// tun.Device. A Port is driven by one worker goroutine at a time.
type Port interface {
	// ReadBatch fills bufs[0:n] with received frames without blocking and
	// returns n; n is 0 when nothing is ready. Each buffer is Reset by the
	// caller before the call.
	ReadBatch(bufs []*packet.Buf) (n int, err error)
	// WriteBatch sends bufs without blocking for long. On return
	// bufs[0:sent] are the frames sent, bufs[sent:sent+dropped] the
	// frames the port refused for a reason it counts itself (e.g.
	// vhost-user: too big for the guest, offload it cannot express),
	// bufs[sent+dropped:] the frames it did not take (queue full, or
	// err). The port may reorder the elements of bufs to make this true;
	// frames leave on the wire in their original order.
	WriteBatch(bufs []*packet.Buf) (sent, dropped int, err error)
	// Fd returns a file descriptor that becomes readable when ReadBatch
	// would return frames, for sleeping in epoll when idle.
	Fd() int
	// Close releases the port.
	Close() error
}

// MoveSent is the bookkeeping of a WriteBatch that handles bufs in their
// original order and has so far sent `sent` frames and refused `dropped`
// ones: it records that the next frame, bufs[sent+dropped], was sent by
// swapping it with the first refused one, and returns sent+1. A refused
// frame needs no move (dropped+1), so bufs keeps the order WriteBatch
// promises.
func MoveSent(bufs []*packet.Buf, sent, dropped int) int {
	k := sent + dropped
	bufs[sent], bufs[k] = bufs[k], bufs[sent]
	return sent + 1
}
