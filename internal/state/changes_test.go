package state

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
)

// persistedModel returns a model Store of nics vNICs (benchNIC) whose
// state a state Store at path has saved whole, its changes taken.
func persistedModel(t testing.TB, path string, nics int) (*model.Store, *Store) {
	t.Helper()
	m := model.New(nopDataplane{}, model.Options{})
	for i := range nics {
		if _, err := m.AddNIC(benchNIC(i)); err != nil {
			t.Fatal(err)
		}
	}
	ps, _, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ps.Close() })
	if err := ps.Save(m.State()); err != nil {
		t.Fatal(err)
	}
	// Start from a version 2 snapshot, as a Store does once it wrote a
	// group patch: the journal then takes records alone.
	ps.mu.Lock()
	err = ps.compact(ps.seq)
	ps.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	m.TakeChanges()
	return m, ps
}

// saveChangeT persists m's changes to s.
func saveChangeT(t *testing.T, s *Store, m *model.Store) {
	t.Helper()
	if err := s.SaveChange(m.TakeChanges()); err != nil {
		t.Fatalf("SaveChange: %v", err)
	}
}

// unparsed returns st without the fields the files do not keep (the
// parsed MAC).
func unparsed(st model.State) model.State {
	st.NICs = append([]model.NIC{}, st.NICs...)
	for i := range st.NICs {
		st.NICs[i].MAC = [6]byte{}
	}
	return st
}

// TestSaveChangeWritesTheChangeOnly: what a persisted mutation writes (one
// journal record, of the same bytes) and the objects it hands over do not
// depend on the number of vNICs that exist: 10 or 10,000.
func TestSaveChangeWritesTheChangeOnly(t *testing.T) {
	newNIC := benchNIC(99999)
	steps := []struct {
		name   string
		change func(m *model.Store) error
	}{
		{"nic_add", func(m *model.Store) error { _, err := m.AddNIC(newNIC); return err }},
		{"sg_rule_add", func(m *model.Store) error { return m.AddRule("sg-7", newRule(80)) }},
		{"sg_member_add", func(m *model.Store) error { return m.AddMember("sg-7", "10.7.7.7") }},
		{"nic_update", func(m *model.Store) error {
			return m.UpdateNIC(model.NICUpdate{ID: newNIC.ID, IPs: []string{"10.8.8.8"}})
		}},
		{"nic_del", func(m *model.Store) error { return m.DeleteNIC(newNIC.ID) }},
		{"sg_del", func(m *model.Store) error { return m.DeleteSG("sg-7") }},
	}
	type cost struct {
		objects int
		bytes   int64
		records uint64
	}
	costs := map[int][]cost{}
	for _, nics := range []int{10, 10000} {
		path := filepath.Join(t.TempDir(), "state.json")
		m, ps := persistedModel(t, path, nics)
		for _, st := range steps {
			if err := st.change(m); err != nil {
				t.Fatal(err)
			}
			c := m.TakeChanges()
			size, seq := journalLen(t, path), ps.seq
			if err := ps.SaveChange(c); err != nil {
				t.Fatal(err)
			}
			costs[nics] = append(costs[nics], cost{
				objects: len(c.NICs) + len(c.SGs) + len(c.DelNICs) + len(c.DelSGs),
				bytes:   journalLen(t, path) - size,
				records: ps.seq - seq,
			})
		}
		ps.Close()
		_, got := openT(t, path, Options{})
		assertState(t, fmt.Sprintf("%d vNICs reopened", nics), got, unparsed(m.State()))
	}
	for i, st := range steps {
		small, large := costs[10][i], costs[10000][i]
		if small.objects != 1 || small.records != 1 || small.bytes <= 0 {
			t.Errorf("%s with 10 vNICs: %+v, want one object in one record", st.name, small)
		}
		if large != small {
			t.Errorf("%s: with 10,000 vNICs %+v, with 10 %+v", st.name, large, small)
		}
	}
}

// TestSaveChangeMatchesModel applies random changes to a model Store and
// persists each with SaveChange: the files always read back as the
// model's state, across compactions and reopenings.
func TestSaveChangeMatchesModel(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			path := filepath.Join(t.TempDir(), "state.json")
			opts := Options{CompactMin: int64(1 + rng.IntN(8192))}
			m := model.New(nopDataplane{}, model.Options{})
			s, _ := openT(t, path, opts)
			for i := range 400 {
				randomChange(t, rng, m)
				saveChangeT(t, s, m)
				want := unparsed(m.State())
				got, err := load(path)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("change %d: files hold\n%+v\nthe model\n%+v", i, got, want)
				}
				if rng.IntN(25) == 0 {
					s.Close()
					s, got = openT(t, path, opts)
					if !reflect.DeepEqual(got, want) {
						t.Fatalf("change %d: reopened state differs", i)
					}
				}
			}
		})
	}
}

// randomChange makes one API-like change to m (some change nothing).
func randomChange(t *testing.T, rng *rand.Rand, m *model.Store) {
	t.Helper()
	id := rng.IntN(8)
	addr := fmt.Sprintf("10.0.%d.%d", rng.IntN(4), rng.IntN(250))
	var err error
	switch rng.IntN(9) {
	case 0, 1:
		n := benchNIC(id)
		n.VNI = uint32(rng.IntN(3))
		_, err = m.AddNIC(n)
	case 2:
		err = m.DeleteNIC(fmt.Sprintf("bench-%d", id))
	case 3:
		err = m.UpdateNIC(model.NICUpdate{ID: fmt.Sprintf("bench-%d", rng.IntN(8)), IPs: []string{addr}})
		if err != nil {
			err = nil // unknown vNIC
		}
	case 4:
		err = m.AddRule(fmt.Sprintf("sg-%d", id), newRule(uint32(rng.IntN(5))))
	case 5:
		err = m.DeleteRule(fmt.Sprintf("sg-%d", id), newRule(uint32(rng.IntN(5))))
	case 6:
		err = m.AddMember(fmt.Sprintf("sg-%d", id), addr)
	case 7:
		err = m.AddSG(model.SG{ID: fmt.Sprintf("sg-%d", id), Members: []netip.Addr{netip.MustParseAddr(addr)}})
	case 8:
		err = m.DeleteSG(fmt.Sprintf("sg-%d", id))
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestSaveChangeUnchanged: a change that leaves the saved objects as they
// are (an identical replacement, removal of unknown ids) writes nothing.
func TestSaveChangeUnchanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	m, ps := persistedModel(t, path, 3)
	size := journalLen(t, path)
	if _, err := m.AddNIC(benchNIC(1)); err != nil { // the same vNIC again
		t.Fatal(err)
	}
	c := m.TakeChanges()
	if len(c.NICs) != 1 {
		t.Fatalf("change %+v, want the replaced vNIC", c)
	}
	c.DelNICs, c.DelSGs = []string{"unknown"}, []string{"unknown"}
	if err := ps.SaveChange(c); err != nil {
		t.Fatal(err)
	}
	if got := journalLen(t, path); got != size {
		t.Errorf("journal grew from %d to %d bytes", size, got)
	}
}

// TestFailedSaveChangeRecovers: a change that cannot be written is
// reported, and is not lost: once the journal is writable again the next
// SaveChange writes a snapshot holding it and the new change.
func TestFailedSaveChangeRecovers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	m, ps := persistedModel(t, path, 3)
	rw := ps.j
	ro, err := os.Open(journalPath(path))
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	ps.j = ro
	if err := m.AddRule("sg-1", newRule(22)); err != nil {
		t.Fatal(err)
	}
	if err := ps.SaveChange(m.TakeChanges()); err == nil {
		t.Fatal("SaveChange to a read-only journal succeeded")
	}
	ps.j = rw
	if err := m.DeleteNIC("bench-0"); err != nil {
		t.Fatal(err)
	}
	saveChangeT(t, ps, m)
	if ps.broken != nil {
		t.Fatalf("still broken: %v", ps.broken)
	}
	ps.Close()
	_, got := openT(t, path, Options{})
	assertState(t, "reopened", got, unparsed(m.State()))
}

// TestSaveOrderAndDuplicates: Save takes the vNICs and groups in any
// order; of equal ids the last one wins; ids left out are removed.
func TestSaveOrderAndDuplicates(t *testing.T) {
	base := sample(4) // nic-0000 .. nic-0003, sg-1
	v2 := base.NICs[1].Clone()
	v2.VNI = 4242
	tests := []struct {
		name string
		nics []model.NIC
		want []model.NIC
	}{
		{"sorted", base.NICs, base.NICs},
		{"reversed", []model.NIC{base.NICs[3], base.NICs[2], base.NICs[1], base.NICs[0]}, base.NICs},
		{"duplicate, last wins", []model.NIC{base.NICs[0], v2, base.NICs[2], base.NICs[3], base.NICs[1]}, base.NICs},
		{"duplicate, changed last", []model.NIC{base.NICs[0], base.NICs[1], base.NICs[2], base.NICs[3], v2},
			[]model.NIC{base.NICs[0], v2, base.NICs[2], base.NICs[3]}},
		{"sorted, one left out", []model.NIC{base.NICs[0], base.NICs[2], base.NICs[3]},
			[]model.NIC{base.NICs[0], base.NICs[2], base.NICs[3]}},
		{"unsorted, one left out, duplicate", []model.NIC{base.NICs[3], v2, base.NICs[0], v2},
			[]model.NIC{base.NICs[0], v2, base.NICs[3]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			s, _ := openT(t, path, Options{})
			saveT(t, s, base)
			st := base
			st.NICs = tt.nics
			saveT(t, s, st)
			want := base
			want.NICs = tt.want
			got, err := load(path)
			if err != nil {
				t.Fatal(err)
			}
			assertState(t, "reload", got, want)
		})
	}
}
