package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// fuzzSeeds are (kind, value) pairs: kind picks the key.
func fuzzSeeds() []struct {
	kind  uint8
	value string
} {
	return []struct {
		kind  uint8
		value string
	}{
		{0, `{"name":"n","vtep":"10.0.0.1","version":"v"}`},
		{1, `{"name":"n","vtep":"fd00::1"}`},
		{2, nicJSON},
		{2, `{"id":"vm1","mac":"52:54:00:00:00:01","vni":1,"type":"VHOST_USER_SERVER","vhost_user_client":true}`},
		{2, `{"id":"vm1","mac":"52:54:00:00:00:01","vni":1,"type":"TAP","netns":"/var/run/netns/x","ifname":"eth0"}`},
		{3, sgJSON},
		{3, `{"id":"web","rule":[{"direction":"OUTBOUND","protocol":-1,"security_group":"web"}]}`},
		{3, `{`},
	}
}

// TestWriteFuzzSeeds regenerates testdata/fuzz when BUTTERFLY_WRITE_SEEDS
// is set; the generated files are committed.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("BUTTERFLY_WRITE_SEEDS") == "" {
		t.Skip("set BUTTERFLY_WRITE_SEEDS=1 to regenerate testdata/fuzz")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range fuzzSeeds() {
		body := fmt.Sprintf("go test fuzz v1\nbyte(%q)\n[]byte(%q)\n", s.kind, s.value)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%02d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzDecode checks that Decode never panics, and that a record it
// accepts encodes to a value it decodes to the same object (what the
// API's writer would store is stable).
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s.kind, []byte(s.value))
	}
	keys := []string{layout.Node("n"), layout.Alive("n"), layout.NIC("h", "vm1"), layout.SG("web")}
	f.Fuzz(func(t *testing.T, kind uint8, value []byte) {
		key := keys[int(kind)%len(keys)]
		r, err := Decode(layout, key, value)
		if err != nil {
			return
		}
		var again []byte
		switch r.Key.Kind {
		case KindNode, KindAlive:
			again = EncodeNode(r.Node)
		case KindNIC:
			again = EncodeNIC(r.NIC)
		case KindSG:
			again = EncodeSG(r.SG)
		}
		r2, err := Decode(layout, key, again)
		if err != nil {
			t.Fatalf("re-encoded record refused: %v\n%s", err, again)
		}
		switch r.Key.Kind {
		case KindNode, KindAlive:
			if r2.Node != r.Node {
				t.Fatalf("node %+v != %+v", r2.Node, r.Node)
			}
		case KindNIC:
			if !r2.NIC.Equal(r.NIC) {
				t.Fatalf("nic %+v != %+v", r2.NIC, r.NIC)
			}
		case KindSG:
			if !r2.SG.Equal(r.SG) {
				t.Fatalf("sg %+v != %+v", r2.SG, r.SG)
			}
		}
	})
}
