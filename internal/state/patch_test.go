package state

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
)

// groupWith returns group id with rules on the given ports (in the
// model's order) and members.
func groupWith(t *testing.T, id string, ports []uint32, members ...string) model.SG {
	t.Helper()
	m := model.New(nopDataplane{}, model.Options{})
	for _, p := range ports {
		if err := m.AddRule(id, newRule(p)); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range members {
		if err := m.AddMember(id, a); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range m.State().SGs {
		if g.ID == id {
			return g
		}
	}
	return model.SG{ID: id}
}

func TestDiffSG(t *testing.T) {
	many := make([]uint32, 40)
	for i := range many {
		many[i] = uint32(1000 + i)
	}
	tests := []struct {
		name      string
		old, cur  model.SG
		patch     bool // a patch is recorded, not the whole group
		add, dels int  // rules and members gained and lost
	}{
		{"rule added", groupWith(t, "g", many), groupWith(t, "g", append(many[:40:40], 80)), true, 1, 0},
		{"rule removed", groupWith(t, "g", many), groupWith(t, "g", many[1:]), true, 0, 1},
		{"member added", groupWith(t, "g", many, "10.0.0.1"), groupWith(t, "g", many, "10.0.0.1", "10.0.0.2"), true, 1, 0},
		{"member removed", groupWith(t, "g", many, "10.0.0.1", "10.0.0.2"), groupWith(t, "g", many, "10.0.0.2"), true, 0, 1},
		{"members reordered", groupWith(t, "g", many, "10.0.0.1", "10.0.0.2"), groupWith(t, "g", many, "10.0.0.2", "10.0.0.1"), false, 0, 0},
		{"most of it changed", groupWith(t, "g", []uint32{1, 2}), groupWith(t, "g", []uint32{3, 4}), false, 0, 0},
		{"emptied", groupWith(t, "g", []uint32{1}), model.SG{ID: "g"}, false, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := diffSG(tt.old, tt.cur)
			if ok != tt.patch {
				t.Fatalf("diffSG recorded a patch: %v, want %v (%+v)", ok, tt.patch, p)
			}
			if !ok {
				return
			}
			if a, d := len(p.AddRules)+len(p.AddMembers), len(p.DelRules)+len(p.DelMembers); a != tt.add || d != tt.dels {
				t.Fatalf("patch gains %d and loses %d, want %d and %d", a, d, tt.add, tt.dels)
			}
			got, err := p.apply(tt.old)
			if err != nil || !got.Equal(tt.cur) {
				t.Fatalf("patch applied: %+v, %v; want %+v", got, err, tt.cur)
			}
			// A patch fits only the group it was made from.
			if _, err := p.apply(tt.cur); err == nil {
				t.Fatal("the patch applied twice")
			}
		})
	}
}

// TestSGPatchJournal: a rule added to a group of 100 rules costs the
// journal one rule, whatever the group's size; the first patch is
// preceded by a version 2 snapshot (older ones are read as well); the
// files read back as the model's state.
func TestSGPatchJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	// A version 1 snapshot, as an older butterflyd left it.
	if err := os.WriteFile(path, []byte(`{"version":1,"nics":[],"sgs":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	m := model.New(nopDataplane{}, model.Options{})
	ps, _ := openT(t, path, Options{})
	defer ps.Close()
	for p := range uint32(100) {
		if err := m.AddRule("sg-1", newRule(1000+p)); err != nil {
			t.Fatal(err)
		}
		saveChangeT(t, ps, m)
	}
	var snap struct{ Version int }
	if b, err := os.ReadFile(path); err != nil || json.Unmarshal(b, &snap) != nil || snap.Version != snapshotVersion {
		t.Fatalf("snapshot version %d (%v), want %d", snap.Version, err, snapshotVersion)
	}
	before := journalLen(t, path)
	if err := m.AddRule("sg-1", newRule(80)); err != nil {
		t.Fatal(err)
	}
	saveChangeT(t, ps, m)
	if grew := journalLen(t, path) - before; grew <= 0 || grew > 300 {
		t.Fatalf("adding a rule to a group of 100 grew the journal by %d bytes, want one rule's worth", grew)
	}
	if err := m.AddMember("sg-1", "10.1.2.3"); err != nil {
		t.Fatal(err)
	}
	saveChangeT(t, ps, m)
	if err := m.DeleteRule("sg-1", newRule(1050)); err != nil {
		t.Fatal(err)
	}
	saveChangeT(t, ps, m)
	ps.Close()
	_, got := openT(t, path, Options{})
	assertState(t, "reopened", got, unparsed(m.State()))
}

// TestSGPatchDamage: a journal whose patch does not fit the group it
// names is damage: the files are moved aside.
func TestSGPatchDamage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(path, []byte(`{"version":2,"nics":[],"sgs":[{"id":"sg-1"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := []record{{Seq: 1, SGPatches: []sgPatch{{ID: "sg-1", DelMembers: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}}}}
	var j []byte
	for _, r := range bad {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		j = appendFrame(j, b)
	}
	if err := os.WriteFile(journalPath(path), j, 0o600); err != nil {
		t.Fatal(err)
	}
	s, st, err := Open(path, Options{})
	if s != nil {
		defer s.Close()
	}
	var ce *CorruptError
	if !errors.As(err, &ce) || len(st.SGs) != 0 {
		t.Fatalf("Open: %v, groups %+v; want a CorruptError and an empty state", err, st.SGs)
	}
}

// TestJournalPreallocated: the journal grows by zeroed chunks, so that
// records land inside the file and their sync does not change its size;
// the zeros read back as no record.
func TestJournalPreallocated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	m := model.New(nopDataplane{}, model.Options{})
	ps, _ := openT(t, path, Options{})
	var sizes []int64
	for p := range uint32(50) {
		if err := m.AddRule("sg-1", newRule(1000+p)); err != nil {
			t.Fatal(err)
		}
		saveChangeT(t, ps, m)
		sizes = append(sizes, fileSize(t, journalPath(path)))
	}
	if sizes[0] != journalChunk || sizes[len(sizes)-1] != journalChunk {
		t.Fatalf("journal file sizes %v, want %d throughout", sizes, journalChunk)
	}
	if n := journalLen(t, path); n == 0 || n >= journalChunk {
		t.Fatalf("records take %d bytes of the journal", n)
	}
	ps.Close()
	s, got := openT(t, path, Options{})
	defer s.Close()
	if info := s.Info(); info.TornBytes != 0 {
		t.Fatalf("reopened: %d torn bytes reported for the preallocated space", info.TornBytes)
	}
	assertState(t, "reopened", got, unparsed(m.State()))
}
