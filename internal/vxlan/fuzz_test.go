package vxlan_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/butterfly-go/butterfly/internal/packet/packettest"
	"github.com/butterfly-go/butterfly/internal/vxlan"
)

func seeds(t testing.TB) (payloads, frames [][]byte) {
	in := inner(t)
	for _, vni := range []uint32{42, vxlan.MaxVNI} {
		b := packettest.Load(in)
		vxlan.Encap(b, vni)
		payloads = append(payloads, append([]byte(nil), b.Bytes()...))
	}
	payloads = append(payloads, []byte{0x08, 0, 0, 0, 0, 0, 42, 0}, []byte{0x88, 0, 0, 1, 0, 0, 42, 0})
	for _, o := range []*vxlan.Outer{
		{Src: netip.MustParseAddrPort("192.0.2.1:4789"), Dst: netip.MustParseAddrPort("192.0.2.2:4789")},
		{Src: netip.MustParseAddrPort("[2001:db8::1]:4789"), Dst: netip.MustParseAddrPort("[ff00::2a]:4789")},
	} {
		b := packettest.Load(in)
		encapFull(b, 42, o)
		frames = append(frames, append([]byte(nil), b.Bytes()...))
	}
	return payloads, frames
}

// TestWriteFuzzSeeds regenerates testdata/fuzz when BUTTERFLY_WRITE_SEEDS
// is set; the generated files are committed.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("BUTTERFLY_WRITE_SEEDS") == "" {
		t.Skip("set BUTTERFLY_WRITE_SEEDS=1 to regenerate testdata/fuzz")
	}
	payloads, frames := seeds(t)
	write := func(name string, all [][]byte) {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, b := range all {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%02d", i)), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("FuzzDecap", payloads)
	write("FuzzParseOuter", frames)
}

// FuzzDecap checks Decap against gopacket's VXLAN decoder.
func FuzzDecap(f *testing.F) {
	payloads, _ := seeds(f)
	for _, p := range payloads {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b := packettest.Load(data)
		vni, r := vxlan.Decap(b, nil)
		var g layers.VXLAN
		gerr := g.DecodeFromBytes(data, gopacket.NilDecodeFeedback)
		switch r {
		case vxlan.DropNone:
			if gerr != nil || !g.ValidIDFlag || g.VNI != vni || g.GBPExtension || !bytes.Equal(b.Bytes(), data[8:]) {
				t.Fatalf("accepted, gopacket says %v %+v", gerr, g)
			}
			if len(b.Bytes()) < 14 {
				t.Fatal("short inner frame accepted")
			}
		case vxlan.DropBadFlags:
			if gerr == nil && g.ValidIDFlag && !g.GBPExtension && data[1] == 0 && data[2] == 0 && data[3] == 0 && data[7] == 0 && data[0] == 0x08 {
				t.Fatal("valid header rejected")
			}
		}
		if r != vxlan.DropNone && !bytes.Equal(b.Bytes(), data) {
			t.Fatal("rejected buffer modified")
		}
	})
}

// FuzzParseOuter checks parseOuter, the tests' decoder of PutOuter's
// frames, against gopacket's UDP decoding.
func FuzzParseOuter(f *testing.F) {
	_, frames := seeds(f)
	for _, fr := range frames {
		f.Add(fr)
	}
	f.Fuzz(func(t *testing.T, fr []byte) {
		src, dst, payload, ok := parseOuter(fr)
		if !ok {
			return
		}
		p := packettest.Decode(fr)
		u, isUDP := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if !isUDP || uint16(u.SrcPort) != src.Port() || uint16(u.DstPort) != dst.Port() {
			t.Fatalf("gopacket disagrees: %v", p.Layers())
		}
		if !bytes.Equal(u.Payload, payload) {
			t.Fatalf("payload differs: %d vs %d bytes", len(u.Payload), len(payload))
		}
	})
}
