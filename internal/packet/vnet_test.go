package packet_test

import (
	"bytes"
	"testing"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// TestVNetHdrEncode checks the little-endian layout of struct
// virtio_net_hdr that Encode writes, that it leaves the bytes after the
// header alone, and that Decode reads it back.
func TestVNetHdrEncode(t *testing.T) {
	tests := []struct {
		name string
		h    packet.VNetHdr
		want []byte
	}{
		{"plain frame", packet.VNetHdr{}, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{
			"every field",
			packet.VNetHdr{Flags: 0x01, GSOType: 0x81, HdrLen: 0x0302, GSOSize: 0x0504, CsumStart: 0x0706, CsumOffset: 0x0908},
			[]byte{0x01, 0x81, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09},
		},
		{
			"high bits",
			packet.VNetHdr{Flags: 0xff, GSOType: 0xfe, HdrLen: 0xfdfc, GSOSize: 0xfbfa, CsumStart: 0xf9f8, CsumOffset: 0xf7f6},
			[]byte{0xff, 0xfe, 0xfc, 0xfd, 0xfa, 0xfb, 0xf8, 0xf9, 0xf6, 0xf7},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const guard = 0xa5
			b := bytes.Repeat([]byte{guard}, 16)
			tt.h.Encode(b)
			if !bytes.Equal(b[:packet.VNetHdrLen], tt.want) {
				t.Errorf("Encode wrote %x, want %x", b[:packet.VNetHdrLen], tt.want)
			}
			if !bytes.Equal(b[packet.VNetHdrLen:], bytes.Repeat([]byte{guard}, 16-packet.VNetHdrLen)) {
				t.Errorf("Encode wrote past the header: %x", b)
			}
			var got packet.VNetHdr
			got.Decode(b)
			if got != tt.h {
				t.Errorf("Decode read %+v, want %+v", got, tt.h)
			}
		})
	}
}
