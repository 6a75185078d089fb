package vhostuser

// Drops are the frames a port dropped itself, by reason. The In drops
// never reached ReadBatch (they are part of Stats.InDropped); the Out
// drops are the frames WriteBatch refused (its dropped result, and part
// of Stats.OutDropped).
type Drops struct {
	// InMalformed: the guest transmitted a frame shorter than the virtio
	// header or larger than a packet.Buf.
	InMalformed uint64
	// InTooBig: the guest transmitted a non-TSO frame longer than its MTU
	// (VIRTIO_NET_F_MTU negotiated) plus the Ethernet header.
	InTooBig uint64
	// OutTooBig: a non-TSO frame longer than the guest MTU, or larger
	// than one receive chain when the guest has no MRG_RXBUF.
	OutTooBig uint64
	// OutOffload: a TSO frame for a guest without GUEST_TSO4/6, or a
	// partial checksum that could not be completed for a guest without
	// GUEST_CSUM.
	OutOffload uint64
	// Broken counts rings stopped because the guest corrupted them.
	Broken uint64
}

// Drops returns the port's drops by reason.
func (p *Port) Drops() Drops {
	d := &p.drops
	return Drops{
		InMalformed: d.inMalformed.Load(), InTooBig: d.inTooBig.Load(),
		OutTooBig: d.outTooBig.Load(), OutOffload: d.outOffload.Load(),
		Broken: p.broken.Load(),
	}
}
