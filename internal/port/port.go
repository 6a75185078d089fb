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
	// WriteBatch sends bufs[0:n] and returns how many were accepted; the
	// caller counts the others as dropped. It never blocks for long: a full
	// queue drops.
	WriteBatch(bufs []*packet.Buf) (n int, err error)
	// Fd returns a file descriptor that becomes readable when ReadBatch
	// would return frames, for sleeping in epoll when idle.
	Fd() int
	// Close releases the port.
	Close() error
}
