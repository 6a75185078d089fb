package packet

import (
	"encoding/binary"
	"errors"
	"math/bits"
)

// Checksum returns the 16-bit one's complement sum of b added to initial,
// not complemented (RFC 1071). Store ^Checksum(...) in a header; a
// received header verifies when the sum over it is 0xffff. Bytes are
// summed eight at a time in host order and the result is byte-swapped
// back, which the one's complement sum allows.
func Checksum(b []byte, initial uint16) uint16 {
	sum := uint64(bits.ReverseBytes16(initial))
	var c uint64
	// Indexing (rather than reslicing b) keeps the loop free of
	// bounds checks and pointer arithmetic.
	n := len(b) &^ 63
	for i := 0; i < n; i += 64 {
		s := b[i : i+64 : i+64]
		sum, c = bits.Add64(sum, binary.LittleEndian.Uint64(s[0:8]), 0)
		sum, c = bits.Add64(sum, binary.LittleEndian.Uint64(s[8:16]), c)
		sum, c = bits.Add64(sum, binary.LittleEndian.Uint64(s[16:24]), c)
		sum, c = bits.Add64(sum, binary.LittleEndian.Uint64(s[24:32]), c)
		sum, c = bits.Add64(sum, binary.LittleEndian.Uint64(s[32:40]), c)
		sum, c = bits.Add64(sum, binary.LittleEndian.Uint64(s[40:48]), c)
		sum, c = bits.Add64(sum, binary.LittleEndian.Uint64(s[48:56]), c)
		sum, c = bits.Add64(sum, binary.LittleEndian.Uint64(s[56:64]), c)
		sum += c
	}
	b = b[n:]
	for len(b) >= 8 {
		sum, c = bits.Add64(sum, binary.LittleEndian.Uint64(b), 0)
		sum += c
		b = b[8:]
	}
	if len(b) >= 4 {
		sum, c = bits.Add64(sum, uint64(binary.LittleEndian.Uint32(b)), 0)
		sum += c
		b = b[4:]
	}
	if len(b) >= 2 {
		sum, c = bits.Add64(sum, uint64(binary.LittleEndian.Uint16(b)), 0)
		sum += c
		b = b[2:]
	}
	if len(b) == 1 {
		sum, c = bits.Add64(sum, uint64(b[0]), 0)
		sum += c
	}
	return bits.ReverseBytes16(fold64(sum))
}

func fold64(s uint64) uint16 {
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	return uint16(s)
}

// ChecksumCombine adds two one's complement sums.
func ChecksumCombine(a, b uint16) uint16 {
	s := uint32(a) + uint32(b)
	return uint16(s + s>>16)
}

// PseudoHeaderChecksum returns the sum (not complemented) of the IPv4 or
// IPv6 pseudo-header: src and dst are 4- or 16-byte addresses, length is
// the upper-layer length.
func PseudoHeaderChecksum(proto uint8, src, dst []byte, length uint32) uint16 {
	s := Checksum(src, 0)
	s = Checksum(dst, s)
	s = ChecksumCombine(s, uint16(proto))
	s = ChecksumCombine(s, uint16(length>>16))
	return ChecksumCombine(s, uint16(length))
}

// Errors of checksum completion.
var (
	ErrCsumRange = errors.New("packet: checksum start/offset outside the frame")
)

// CompleteChecksum finishes a partial checksum as a device does for
// VIRTIO_NET_HDR_F_NEEDS_CSUM: the 16 bits at start+offset hold the
// pseudo-header sum; the one's complement of the sum of frame[start:]
// is stored there. A result of zero is stored as 0xffff when the field is
// a UDP checksum (offset 6), where zero means "no checksum".
func CompleteChecksum(frame []byte, start, offset int) error {
	if start < 0 || offset < 0 || start+offset+2 > len(frame) {
		return ErrCsumRange
	}
	c := ^Checksum(frame[start:], 0)
	if c == 0 && offset == UDPCsumOffset {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(frame[start+offset:], c)
	return nil
}

// FinishChecksum completes b's partial checksum if b.VNet asks for it
// (VNetFlagNeedsCsum) and clears the flag. Frames without the flag are
// left alone. GSO frames must be segmented instead (Segment computes full
// checksums).
func FinishChecksum(b *Buf) error {
	if b.VNet.Flags&VNetFlagNeedsCsum == 0 {
		return nil
	}
	if err := CompleteChecksum(b.Bytes(), int(b.VNet.CsumStart), int(b.VNet.CsumOffset)); err != nil {
		return err
	}
	b.VNet.Flags &^= VNetFlagNeedsCsum
	b.VNet.CsumStart, b.VNet.CsumOffset = 0, 0
	return nil
}
