package packet

import "encoding/binary"

// VNetHdrLen is the size of struct virtio_net_hdr without num_buffers:
// the header a TAP exchanges with the kernel, and the first 10 bytes of
// the 12-byte header of virtio 1.0 and VIRTIO_NET_F_MRG_RXBUF.
const VNetHdrLen = 10

// Decode reads h from a little-endian virtio_net_hdr (the virtio 1.0
// layout, and the TAP default on little-endian hosts) in b[:VNetHdrLen].
func (h *VNetHdr) Decode(b []byte) {
	_ = b[VNetHdrLen-1]
	h.Flags = b[0]
	h.GSOType = b[1]
	h.HdrLen = binary.LittleEndian.Uint16(b[2:])
	h.GSOSize = binary.LittleEndian.Uint16(b[4:])
	h.CsumStart = binary.LittleEndian.Uint16(b[6:])
	h.CsumOffset = binary.LittleEndian.Uint16(b[8:])
}

// IsZero reports whether h is the header of a plain frame (no offload).
// It compares field by field: a whole-struct comparison loads the header
// with wide loads, which the CPU cannot forward from Decode's narrow
// stores, so each would wait for every store before it to reach the
// cache.
func (h *VNetHdr) IsZero() bool {
	return h.Flags == 0 && h.GSOType == 0 && h.HdrLen == 0 && h.GSOSize == 0 && h.CsumStart == 0 && h.CsumOffset == 0
}

// Encode writes h as a little-endian virtio_net_hdr into b[:VNetHdrLen],
// in two stores: where b is guest memory, each store waits in the CPU's
// store queue until the line is owned, so fewer stores stall less. The
// fields are read one by one (see IsZero).
func (h *VNetHdr) Encode(b []byte) {
	_ = b[VNetHdrLen-1]
	binary.LittleEndian.PutUint64(b, uint64(h.Flags)|uint64(h.GSOType)<<8|uint64(h.HdrLen)<<16|
		uint64(h.GSOSize)<<32|uint64(h.CsumStart)<<48)
	binary.LittleEndian.PutUint16(b[8:], h.CsumOffset)
}
