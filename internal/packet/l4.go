package packet

import "encoding/binary"

// TCP constants.
const (
	TCPMinLen  = 20
	TCPFlagFIN = 0x01
	TCPFlagSYN = 0x02
	TCPFlagRST = 0x04
	TCPFlagPSH = 0x08
	TCPFlagACK = 0x10
	TCPFlagURG = 0x20
	TCPFlagECE = 0x40
	TCPFlagCWR = 0x80
	// TCPCsumOffset is the offset of the checksum in the TCP header.
	TCPCsumOffset = 16
)

// TCP is a view of a TCP header and its payload. Accessors need
// len >= TCPMinLen; check with IsValid.
type TCP []byte

// IsValid reports whether the header, options included, fits in b.
func (t TCP) IsValid() bool {
	return len(t) >= TCPMinLen && t.HeaderLen() >= TCPMinLen && t.HeaderLen() <= len(t)
}

// SrcPort returns the source port.
func (t TCP) SrcPort() uint16 { return binary.BigEndian.Uint16(t[0:2]) }

// DstPort returns the destination port.
func (t TCP) DstPort() uint16 { return binary.BigEndian.Uint16(t[2:4]) }

// Seq returns the sequence number.
func (t TCP) Seq() uint32 { return binary.BigEndian.Uint32(t[4:8]) }

// Ack returns the acknowledgment number.
func (t TCP) Ack() uint32 { return binary.BigEndian.Uint32(t[8:12]) }

// HeaderLen returns the data offset in bytes.
func (t TCP) HeaderLen() int { return int(t[12]>>4) * 4 }

// Flags returns the flag byte (CWR..FIN).
func (t TCP) Flags() uint8 { return t[13] }

// Window returns the window field.
func (t TCP) Window() uint16 { return binary.BigEndian.Uint16(t[14:16]) }

// Checksum returns the checksum field.
func (t TCP) Checksum() uint16 { return binary.BigEndian.Uint16(t[16:18]) }

// Payload returns the bytes after the header.
func (t TCP) Payload() []byte { return t[t.HeaderLen():] }

// SetSrcPort sets the source port.
func (t TCP) SetSrcPort(v uint16) { binary.BigEndian.PutUint16(t[0:2], v) }

// SetDstPort sets the destination port.
func (t TCP) SetDstPort(v uint16) { binary.BigEndian.PutUint16(t[2:4], v) }

// SetSeq sets the sequence number.
func (t TCP) SetSeq(v uint32) { binary.BigEndian.PutUint32(t[4:8], v) }

// SetAck sets the acknowledgment number.
func (t TCP) SetAck(v uint32) { binary.BigEndian.PutUint32(t[8:12], v) }

// SetHeaderLen sets the data offset (n a multiple of 4, 20..60).
func (t TCP) SetHeaderLen(n int) { t[12] = byte(n/4) << 4 }

// SetFlags sets the flag byte.
func (t TCP) SetFlags(v uint8) { t[13] = v }

// SetWindow sets the window.
func (t TCP) SetWindow(v uint16) { binary.BigEndian.PutUint16(t[14:16], v) }

// SetChecksum sets the checksum field.
func (t TCP) SetChecksum(v uint16) { binary.BigEndian.PutUint16(t[16:18], v) }

// UDP constants.
const (
	UDPLen = 8
	// UDPCsumOffset is the offset of the checksum in the UDP header.
	UDPCsumOffset = 6
)

// UDP is a view of a UDP header and its payload. Accessors need
// len >= UDPLen; check with IsValid.
type UDP []byte

// IsValid reports whether the header is complete and Length is within
// [UDPLen, len(b)].
func (u UDP) IsValid() bool {
	return len(u) >= UDPLen && int(u.Length()) >= UDPLen && int(u.Length()) <= len(u)
}

// SrcPort returns the source port.
func (u UDP) SrcPort() uint16 { return binary.BigEndian.Uint16(u[0:2]) }

// DstPort returns the destination port.
func (u UDP) DstPort() uint16 { return binary.BigEndian.Uint16(u[2:4]) }

// Length returns the length field.
func (u UDP) Length() uint16 { return binary.BigEndian.Uint16(u[4:6]) }

// Checksum returns the checksum field.
func (u UDP) Checksum() uint16 { return binary.BigEndian.Uint16(u[6:8]) }

// Payload returns the bytes after the header.
func (u UDP) Payload() []byte { return u[UDPLen:] }

// SetSrcPort sets the source port.
func (u UDP) SetSrcPort(v uint16) { binary.BigEndian.PutUint16(u[0:2], v) }

// SetDstPort sets the destination port.
func (u UDP) SetDstPort(v uint16) { binary.BigEndian.PutUint16(u[2:4], v) }

// SetLength sets the length field.
func (u UDP) SetLength(v uint16) { binary.BigEndian.PutUint16(u[4:6], v) }

// SetChecksum sets the checksum field.
func (u UDP) SetChecksum(v uint16) { binary.BigEndian.PutUint16(u[6:8], v) }

// Encode writes the header.
func (u UDP) Encode(src, dst, length, csum uint16) {
	u.SetSrcPort(src)
	u.SetDstPort(dst)
	u.SetLength(length)
	u.SetChecksum(csum)
}
