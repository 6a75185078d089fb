package packet_test

import (
	"bytes"
	"testing"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// TestVNetHdrEncode checks the little-endian layout of struct
// virtio_net_hdr that Encode and EncodeNumBuffers write, that they leave
// the bytes after the header alone, and that Decode reads it back.
func TestVNetHdrEncode(t *testing.T) {
	tests := []struct {
		name string
		h    packet.VNetHdr
		n    uint16
		want []byte // the 12-byte header with num_buffers n
	}{
		{"plain frame, one buffer", packet.VNetHdr{}, 1, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0}},
		{
			"every field, several buffers",
			packet.VNetHdr{Flags: 0x01, GSOType: 0x81, HdrLen: 0x0302, GSOSize: 0x0504, CsumStart: 0x0706, CsumOffset: 0x0908},
			0x0b0a,
			[]byte{0x01, 0x81, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b},
		},
		{
			"high bits",
			packet.VNetHdr{Flags: 0xff, GSOType: 0xfe, HdrLen: 0xfdfc, GSOSize: 0xfbfa, CsumStart: 0xf9f8, CsumOffset: 0xf7f6},
			0xf5f4,
			[]byte{0xff, 0xfe, 0xfc, 0xfd, 0xfa, 0xfb, 0xf8, 0xf9, 0xf6, 0xf7, 0xf4, 0xf5},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const guard = 0xa5
			b := bytes.Repeat([]byte{guard}, 16)
			tt.h.Encode(b)
			if !bytes.Equal(b[:packet.VNetHdrLen], tt.want[:packet.VNetHdrLen]) {
				t.Errorf("Encode wrote %x, want %x", b[:packet.VNetHdrLen], tt.want[:packet.VNetHdrLen])
			}
			if !bytes.Equal(b[packet.VNetHdrLen:], bytes.Repeat([]byte{guard}, 16-packet.VNetHdrLen)) {
				t.Errorf("Encode wrote past the header: %x", b)
			}
			b = bytes.Repeat([]byte{guard}, 16)
			tt.h.EncodeNumBuffers(b, tt.n)
			if !bytes.Equal(b[:12], tt.want) {
				t.Errorf("EncodeNumBuffers wrote %x, want %x", b[:12], tt.want)
			}
			if !bytes.Equal(b[12:], bytes.Repeat([]byte{guard}, 4)) {
				t.Errorf("EncodeNumBuffers wrote past the header: %x", b)
			}
			var got packet.VNetHdr
			got.Decode(b)
			if got != tt.h {
				t.Errorf("Decode read %+v, want %+v", got, tt.h)
			}
		})
	}
}
