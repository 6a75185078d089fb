package cli

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model/modeltest"
)

// ctRecord is one record of a hand-made export.
type ctRecord struct {
	proto, kind, state, flags uint8
	src, dst                  string
	sport, dport              uint16
	ms                        uint32
}

// handExport writes an export byte by byte from the format's
// documentation (firewall/export.go), independently of the encoder.
func handExport(recs ...ctRecord) []byte {
	b := []byte("BFCT")
	b = binary.BigEndian.AppendUint16(b, 1)
	b = binary.BigEndian.AppendUint16(b, 48)
	b = binary.BigEndian.AppendUint32(b, uint32(len(recs)))
	b = binary.BigEndian.AppendUint32(b, 0)
	for _, r := range recs {
		src, dst := netip.MustParseAddr(r.src), netip.MustParseAddr(r.dst)
		fam := byte(6)
		if src.Is4() {
			fam = 4
		}
		b = append(b, fam, r.proto, r.kind, r.state, r.flags, 0, 0, 0)
		for _, a := range []netip.Addr{src, dst} {
			var f [16]byte
			copy(f[:], a.AsSlice())
			b = append(b, f[:]...)
		}
		b = binary.BigEndian.AppendUint16(b, r.sport)
		b = binary.BigEndian.AppendUint16(b, r.dport)
		b = binary.BigEndian.AppendUint32(b, r.ms)
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
}

var ctExample = handExport(
	ctRecord{proto: 6, kind: 1, state: 3, flags: 0x03, src: "10.0.0.1", dst: "10.0.0.20", sport: 40000, dport: 443, ms: 432_000_000},
	ctRecord{proto: 17, kind: 2, flags: 0x00, src: "10.0.0.9", dst: "10.0.0.1", sport: 5353, dport: 53, ms: 29_500},
	ctRecord{proto: 6, kind: 1, state: 1, flags: 0x01, src: "10.0.0.1", dst: "10.0.0.3", sport: 40001, dport: 22, ms: 60_000},
	ctRecord{proto: 58, kind: 3, flags: 0x03, src: "2001:db8::1", dst: "2001:db8::2", sport: 7, dport: 7, ms: 1_000},
)

func TestNICConntrack(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.mustRun(t, "nic", "add", "--id", "n1", "--mac", "52:54:00:00:00:01", "--vni", "1")
	ts.dp.SetExport("n1", ctExample)
	// Sorted by protocol number, then originator and responder.
	want := `tcp 10.0.0.1:40000 -> 10.0.0.20:443 ESTABLISHED from_vm expires-in 120h0m0s
tcp 10.0.0.1:40001 -> 10.0.0.3:22 SYN_SENT from_vm expires-in 1m0s
udp 10.0.0.9:5353 -> 10.0.0.1:53 UNREPLIED to_vm expires-in 29.5s
icmpv6 2001:db8::1 id 7 -> 2001:db8::2 id 7 REPLIED from_vm expires-in 1s
`
	if got := ts.mustRun(t, "nic", "conntrack", "n1"); got != want {
		t.Errorf("nic conntrack:\n%s\nwant:\n%s", got, want)
	}
	var js []conntrackJSON
	if err := json.Unmarshal([]byte(ts.mustRun(t, "nic", "conntrack", "n1", "--json")), &js); err != nil {
		t.Fatal(err)
	}
	if len(js) != 4 || js[0] != (conntrackJSON{Protocol: 6, Src: "10.0.0.1", SrcPort: 40000, Dst: "10.0.0.20", DstPort: 443,
		State: "ESTABLISHED", Direction: "from_vm", Replied: true, ExpiresMS: 432_000_000}) {
		t.Errorf("nic conntrack --json: %+v", js)
	}

	for _, c := range []struct {
		name, nic, stderr string
		data              []byte
	}{
		{"unknown vNIC", "nope", "NIC does not exist with id nope", nil},
		{"empty data", "n1", "exported no connection-tracking data", []byte{}},
		{"corrupt data", "n1", "checksum", append(bytes.Clone(ctExample[:len(ctExample)-1]), 0)},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.data != nil {
				ts.dp.SetExport("n1", c.data)
			}
			r := ts.run("nic", "conntrack", c.nic)
			if r.code != 1 || !strings.Contains(r.stderr, c.stderr) || r.stdout != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want 1 and %q", r.code, r.stdout, r.stderr, c.stderr)
			}
		})
	}
}

func TestNICExportAndImport(t *testing.T) {
	ts := startServer(t, serverOpts{})
	dir := t.TempDir()
	add := []string{"nic", "add", "--id", "n2", "--mac", "52:54:00:00:00:02", "--vni", "1", "--type", "TAP"}
	ts.mustRun(t, "nic", "add", "--id", "n1", "--mac", "52:54:00:00:00:01", "--vni", "1")
	ts.dp.SetExport("n1", ctExample)

	out := ts.mustRun(t, "nic", "export", "n1")
	if dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out)); err != nil || !bytes.Equal(dec, ctExample) {
		t.Fatalf("nic export printed %q (%v)", out, err)
	}
	raw, b64 := filepath.Join(dir, "n1.ct"), filepath.Join(dir, "n1.b64")
	if out := ts.mustRun(t, "nic", "export", "n1", "--output", raw); out != "" {
		t.Errorf("nic export --output printed %q", out)
	}
	if got, err := os.ReadFile(raw); err != nil || !bytes.Equal(got, ctExample) {
		t.Fatalf("export file: %x, %v", got, err)
	}
	if err := os.WriteFile(b64, []byte(ts.mustRun(t, "nic", "export", "n1")), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{raw, b64} {
		ts.mustRun(t, append(add, "--fw-import", f)...)
		calls := ts.dp.Calls()
		if last := calls[len(calls)-1]; last.Op != modeltest.OpAddNIC || !bytes.Equal(last.NIC.Import, ctExample) {
			t.Errorf("--fw-import %s: dataplane got %+v", filepath.Base(f), last)
		}
	}

	bad := filepath.Join(dir, "bad.ct")
	if err := os.WriteFile(bad, append(bytes.Clone(ctExample[:len(ctExample)-1]), 0), 0o600); err != nil {
		t.Fatal(err)
	}
	text := filepath.Join(dir, "text")
	if err := os.WriteFile(text, []byte("not an export\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ file, stderr string }{
		{bad, "checksum"},
		{text, "neither export data nor its base64 text"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		before := len(ts.dp.Calls())
		r := ts.run(append(add, "--fw-import", c.file)...)
		if r.code != 1 || !strings.Contains(r.stderr, "--fw-import") || !strings.Contains(r.stderr, c.stderr) {
			t.Errorf("--fw-import %s: exit %d, stderr %q; want 1 and %q", filepath.Base(c.file), r.code, r.stderr, c.stderr)
		}
		if n := len(ts.dp.Calls()); n != before {
			t.Errorf("--fw-import %s: a request was sent", filepath.Base(c.file))
		}
	}
	if r := ts.run("nic", "export", "n1", "--output", ""); r.code != 1 {
		t.Errorf("empty --output accepted")
	}
	if r := ts.run("nic", "export", "n1", "--output", filepath.Join(dir, "no", "such", "dir")); r.code != 1 || !strings.Contains(r.stderr, "no such file") {
		t.Errorf("unwritable --output: exit %d, stderr %q", r.code, r.stderr)
	}
}
