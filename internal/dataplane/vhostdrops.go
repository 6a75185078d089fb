package dataplane

import (
	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port"
	"github.com/butterfly-go/butterfly/internal/port/vhostuser"
)

// portDropper is a port that drops frames itself and counts them by
// reason: a vhost-user port drops malformed or oversize frames from its
// guest before ReadBatch returns, and refuses in WriteBatch the frames it
// cannot express to the guest (TSO without GUEST_TSO, larger than the
// guest MTU or than a receive chain).
type portDropper interface {
	Drops() vhostuser.Drops
}

// txRefuser is a port that counts the frames its WriteBatch refused (a
// TAP port: frames the kernel rejects; the UDP underlay: datagrams
// without a valid peer, or that the kernel rejects).
type txRefuser interface {
	TxRefused() uint64
}

// Names of a port's own drops in NICCounters.Drops ("tx" is towards the
// VM, as for the engine's tx_full).
const (
	dropVhostRxMalformed = "vhost_rx_malformed"
	dropVhostRxTooBig    = "vhost_rx_too_big"
	dropVhostTxTooBig    = "vhost_tx_too_big"
	dropVhostTxOffload   = "vhost_tx_offload"
	dropVhostRingBroken  = "vhost_ring_broken" // rings stopped, not frames
	dropTapTxRefused     = "tap_tx_refused"
)

// dropUDPTxRefused names the datagrams the underlay sockets refused in the
// drops of the underlay-tx element.
const dropUDPTxRefused = "udp_tx_refused"

// addPortDrops adds the port's own drops to c.Drops, which must not be
// nil. WriteBatch returns the frames a port refused apart from those it
// sent, so the TX counters never included them.
func addPortDrops(c *model.NICCounters, p port.Port) {
	if d, ok := p.(*detachedPort); ok {
		if v := d.refused.Load(); v != 0 {
			c.Drops[dropNetnsGone] = v
		}
	}
	if r, ok := p.(txRefuser); ok {
		if v := r.TxRefused(); v != 0 {
			c.Drops[dropTapTxRefused] = v
		}
	}
	pd, ok := p.(portDropper)
	if !ok {
		return
	}
	d := pd.Drops()
	for _, x := range [...]struct {
		name string
		v    uint64
	}{
		{dropVhostRxMalformed, d.InMalformed},
		{dropVhostRxTooBig, d.InTooBig},
		{dropVhostTxTooBig, d.OutTooBig},
		{dropVhostTxOffload, d.OutOffload},
		{dropVhostRingBroken, d.Broken},
	} {
		if x.v != 0 {
			c.Drops[x.name] = x.v
		}
	}
}

// mtuPort is a port that knows its guest's MTU (0: unknown).
type mtuPort interface {
	MTU() int
}

// guestSegPayload returns the TCP/UDP payload per segment that keeps the
// segments of TSO frame b within the MTU of the guest behind p, or 0 (the
// frame's own GSOSize) when p has no MTU or b cannot be parsed.
func guestSegPayload(p port.Port, b *packet.Buf) int {
	mp, ok := p.(mtuPort)
	if !ok {
		return 0
	}
	mtu := mp.MTU()
	if mtu <= 0 {
		return 0
	}
	hdr, err := packet.GSOHeaderLen(b)
	if err != nil {
		return 0
	}
	n := mtu + packet.EthernetLen - hdr
	if n <= 0 {
		return 0
	}
	return n
}
