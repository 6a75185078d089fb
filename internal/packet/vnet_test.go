package packet

import (
	"bytes"
	"testing"
)

func TestVNetHdrEncodeDecode(t *testing.T) {
	h := VNetHdr{Flags: 1, GSOType: GSOTCPv6 | GSOECN, HdrLen: 0x1234, GSOSize: 1448, CsumStart: 54, CsumOffset: 16}
	var b [VNetHdrLen]byte
	h.Encode(b[:])
	want := []byte{1, 0x84, 0x34, 0x12, 0xa8, 0x05, 54, 0, 16, 0}
	if !bytes.Equal(b[:], want) {
		t.Fatalf("encoded % x, want % x", b, want)
	}
	var g VNetHdr
	g.Decode(b[:])
	if g != h {
		t.Fatalf("decoded %+v, want %+v", g, h)
	}
}

func TestVNetHdrIsZero(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    VNetHdr
		want bool
	}{
		{"plain", VNetHdr{}, true},
		{"flags", VNetHdr{Flags: VNetFlagNeedsCsum}, false},
		{"gso type", VNetHdr{GSOType: GSOTCPv4}, false},
		{"hdr len", VNetHdr{HdrLen: 54}, false},
		{"gso size", VNetHdr{GSOSize: 1448}, false},
		{"csum start", VNetHdr{CsumStart: 34}, false},
		{"csum offset", VNetHdr{CsumOffset: 16}, false},
	} {
		if got := tc.h.IsZero(); got != tc.want {
			t.Errorf("%s: IsZero() = %v, want %v", tc.name, got, tc.want)
		}
	}
}
