package state

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
)

// openT opens a Store at path and fails the test on any error.
func openT(t *testing.T, path string, opts Options) (*Store, model.State) {
	t.Helper()
	s, st, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s, st
}

func saveT(t *testing.T, s *Store, st model.State) {
	t.Helper()
	if err := s.Save(st); err != nil {
		t.Fatalf("Save: %v", err)
	}
}

// sorted returns st with vNICs and groups sorted by id (the order Open
// and load return).
func sorted(st model.State) model.State {
	st.NICs = slices.Clone(st.NICs)
	st.SGs = slices.Clone(st.SGs)
	slices.SortFunc(st.NICs, func(a, b model.NIC) int { return cmp.Compare(a.ID, b.ID) })
	slices.SortFunc(st.SGs, func(a, b model.SG) int { return cmp.Compare(a.ID, b.ID) })
	return st
}

func assertState(t *testing.T, what string, got, want model.State) {
	t.Helper()
	if want = sorted(want); !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

// journalLen is the length of the records in path's journal: the file
// without the zeros preallocated after them (a record never ends with a
// zero byte: its payload is a JSON object).
func journalLen(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(journalPath(path))
	if err != nil {
		t.Fatal(err)
	}
	return int64(len(bytes.TrimRight(b, "\x00")))
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// withRule returns st with one more rule in group g (copied, st is not
// modified).
func withRule(st model.State, g int, port uint32) model.State {
	st.SGs = slices.Clone(st.SGs)
	sg := model.SG.Clone(st.SGs[g])
	sg.Rules = append(sg.Rules, newRule(port))
	st.SGs[g] = sg
	return st
}

// newRule is a TCP rule for port.
func newRule(port uint32) model.Rule {
	return model.Rule{Direction: model.Inbound, Protocol: 6, PortStart: port, PortEnd: port,
		CIDR: netip.MustParsePrefix("10.0.0.0/8")}
}

// big is a state of nics vNICs and sgs groups of rules rules each.
func big(nics, sgs, rules int) model.State {
	st := sample(nics)
	st.SGs = nil
	for g := range sgs {
		sg := model.SG{ID: fmt.Sprintf("sg-%03d", g), Members: []netip.Addr{netip.MustParseAddr("10.1.0.1")}}
		for r := range rules {
			sg.Rules = append(sg.Rules, model.Rule{Direction: model.Inbound, Protocol: 17, PortStart: uint32(r), PortEnd: uint32(r),
				CIDR: netip.MustParsePrefix("192.168.0.0/16")})
		}
		st.SGs = append(st.SGs, sg)
	}
	return st
}

func TestStoreRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "state.json")
	s, st := openT(t, path, Options{})
	assertState(t, "fresh Open", st, empty())
	steps := []model.State{sample(3), sample(5), withRule(sample(5), 0, 80), sample(2), empty()}
	for i, want := range steps {
		saveT(t, s, want)
		got, err := load(path)
		if err != nil {
			t.Fatal(err)
		}
		assertState(t, fmt.Sprintf("load after step %d", i), got, want)
	}
	saveT(t, s, sample(4))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(sample(1)); err == nil {
		t.Error("Save after Close succeeded")
	}
	s2, got := openT(t, path, Options{})
	assertState(t, "reopen", got, sample(4))
	if info := s2.Info(); info.Replayed != len(steps)+1 || info.TornBytes != 0 || info.SnapshotSeq != 0 {
		t.Errorf("Info = %+v, want %d records replayed", info, len(steps)+1)
	}
	for _, p := range []string{journalPath(path)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", p, fi.Mode().Perm())
		}
	}
	// The returned state is the caller's: modifying it changes nothing.
	got.NICs[0].IPs[0] = netip.MustParseAddr("1.2.3.4")
	before := journalLen(t, path)
	saveT(t, s2, sample(4))
	if after := journalLen(t, path); after != before {
		t.Errorf("Save of the opened state wrote %d bytes", after-before)
	}
}

// TestStoreNoWriteWhenUnchanged: the same state, in another order, with
// other slices, or with MAC (not persisted) set, writes nothing.
func TestStoreNoWriteWhenUnchanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	s, _ := openT(t, path, Options{})
	base := big(20, 3, 5)
	saveT(t, s, base)
	size := journalLen(t, path)
	reordered := base
	reordered.NICs = slices.Clone(base.NICs)
	slices.Reverse(reordered.NICs)
	withMAC := base
	withMAC.NICs = slices.Clone(base.NICs)
	for i := range withMAC.NICs {
		withMAC.NICs[i] = model.NIC.Clone(withMAC.NICs[i])
		withMAC.NICs[i].MAC = [6]byte{0x52, 0x54, 0, 0, 0, byte(i)}
	}
	for name, st := range map[string]model.State{"same": base, "reordered": reordered, "with MAC": withMAC, "copy": sorted(base)} {
		saveT(t, s, st)
		if got := journalLen(t, path); got != size {
			t.Errorf("%s: journal grew from %d to %d", name, size, got)
		}
	}
	// One changed rule writes one group, not the others.
	saveT(t, s, withRule(base, 1, 4242))
	grown := journalLen(t, path) - size
	data, _ := os.ReadFile(journalPath(path))
	last := data[size:]
	if !bytes.Contains(last, []byte(`"sg-001"`)) || bytes.Contains(last, []byte(`"sg-000"`)) || bytes.Contains(last, []byte(`"nic-`)) {
		t.Errorf("record for one rule holds more than its group (%d bytes): %s", grown, last)
	}
}

// TestOldSnapshot: a file written by the previous format (and by Save)
// opens, and changes go to the journal on top of it.
func TestOldSnapshot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	old := []byte(`{"version":1,"nics":[{"id":"b","mac":"52:54:00:00:00:02","vni":2,"type":1},{"id":"a","mac":"52:54:00:00:00:01","vni":1,"type":1}],"sgs":[]}`)
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	s, st := openT(t, path, Options{})
	if len(st.NICs) != 2 || st.NICs[0].ID != "a" || st.NICs[1].ID != "b" {
		t.Fatalf("Open of an old file = %+v", st)
	}
	st.NICs = st.NICs[:1]
	saveT(t, s, st)
	s.Close()
	_, got := openT(t, path, Options{})
	assertState(t, "reopen", got, st)
	if b, _ := os.ReadFile(path); !bytes.Equal(b, old) {
		t.Error("snapshot rewritten without compaction")
	}
}

// lastRecord returns the offset of the journal's last record.
func lastRecord(t *testing.T, journal []byte) int64 {
	t.Helper()
	var off, last int64 = 0, -1
	for off < int64(len(journal)) {
		n := int64(len(journal[off:]))
		if n < headerSize {
			t.Fatal("journal ends with a partial header")
		}
		last = off
		off += headerSize + int64(uint32(journal[off])|uint32(journal[off+1])<<8|uint32(journal[off+2])<<16|uint32(journal[off+3])<<24)
	}
	if last < 0 {
		t.Fatal("empty journal")
	}
	return last
}

// TestTornTail cuts the last record at every byte offset: Open returns
// the state before it, cuts the journal back and keeps going.
func TestTornTail(t *testing.T) {
	src := filepath.Join(t.TempDir(), "state.json")
	s, _ := openT(t, src, Options{})
	states := []model.State{sample(2), withRule(sample(2), 0, 1), withRule(sample(3), 0, 2)}
	for _, st := range states {
		saveT(t, s, st)
	}
	s.Close()
	journal, err := os.ReadFile(journalPath(src))
	if err != nil {
		t.Fatal(err)
	}
	journal = bytes.TrimRight(journal, "\x00") // the preallocated space
	start := lastRecord(t, journal)
	prev, final := states[len(states)-2], states[len(states)-1]

	type tc struct {
		name    string
		journal []byte
		want    model.State
		torn    int64
	}
	var cases []tc
	for cut := start; cut < int64(len(journal)); cut++ {
		cases = append(cases, tc{fmt.Sprintf("cut at %d", cut), journal[:cut], prev, cut - start})
	}
	flipped := slices.Clone(journal)
	flipped[len(flipped)-2] ^= 0x40 // payload byte: bad checksum at the tail
	cases = append(cases,
		tc{"bad checksum in the last record", flipped, prev, int64(len(journal)) - start},
		// Preallocated space: nothing torn, nothing cut.
		tc{"zeros after the last record", append(slices.Clone(journal), make([]byte, 4096)...), final, 0},
		tc{"bad checksum in the last record, then zeros", append(slices.Clone(flipped), make([]byte, 4096)...), prev, int64(len(journal)) - start + 4096},
		tc{"complete", journal, final, 0},
	)
	for _, c := range cases {
		path := filepath.Join(t.TempDir(), "state.json")
		if err := os.WriteFile(journalPath(path), c.journal, 0o600); err != nil {
			t.Fatal(err)
		}
		// load reads without repairing.
		got, err := load(path)
		if err != nil {
			t.Fatalf("%s: load: %v", c.name, err)
		}
		assertState(t, c.name+": load", got, c.want)
		if !bytes.Equal(mustRead(t, journalPath(path)), c.journal) {
			t.Fatalf("%s: load changed the journal", c.name)
		}
		s, got := openT(t, path, Options{})
		assertState(t, c.name+": Open", got, c.want)
		if info := s.Info(); info.TornBytes != c.torn {
			t.Fatalf("%s: TornBytes = %d, want %d", c.name, info.TornBytes, c.torn)
		}
		if c.torn > 0 && fileSize(t, journalPath(path)) != int64(len(c.journal))-c.torn {
			t.Fatalf("%s: journal not cut back to its last complete record", c.name)
		}
		// New records follow the cut cleanly.
		next := withRule(c.want, 0, 99)
		saveT(t, s, next)
		s.Close()
		_, got = openT(t, path, Options{})
		assertState(t, c.name+": after a new change", got, next)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCorruptJournal: damage before the tail is not a crash artefact:
// both files are moved aside and the Store starts empty, still usable.
func TestCorruptJournal(t *testing.T) {
	src := filepath.Join(t.TempDir(), "state.json")
	s, _ := openT(t, src, Options{})
	saveT(t, s, sample(1))
	saveT(t, s, sample(2))
	saveT(t, s, sample(3))
	s.Close()
	journal := mustRead(t, journalPath(src))
	second := int64(-1)
	{
		n := int64(uint32(journal[0]) | uint32(journal[1])<<8 | uint32(journal[2])<<16 | uint32(journal[3])<<24)
		second = headerSize + n
	}
	n2 := int64(uint32(journal[second]) | uint32(journal[second+1])<<8 | uint32(journal[second+2])<<16 | uint32(journal[second+3])<<24)
	third := second + headerSize + n2

	flipFirst := slices.Clone(journal)
	flipFirst[headerSize+3] ^= 1
	badLen := slices.Clone(journal)
	badLen[3] = 0x7f // length > maxRecord
	gap := append(slices.Clone(journal[:second]), journal[third:]...)
	reorder := append(append(slices.Clone(journal[second:third]), journal[:second]...), journal[third:]...)
	badJSON := appendFrame(nil, []byte(`{"seq":1,"nics":"x"}`))
	badJSON = append(badJSON, journal[second:]...)

	for _, c := range []struct {
		name    string
		journal []byte
		snap    []byte
		want    string
	}{
		{"checksum of the first record", flipFirst, nil, "checksum mismatch"},
		{"length field", badLen, nil, "invalid length"},
		{"missing record", gap, nil, "records missing"},
		{"records out of order", reorder, nil, "sequence"},
		{"valid checksum, bad JSON", badJSON, nil, "record at offset 0"},
		{"bad snapshot", journal, []byte(`{"version":1,"nics":[`), "invalid JSON"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			if err := os.WriteFile(journalPath(path), c.journal, 0o600); err != nil {
				t.Fatal(err)
			}
			if c.snap != nil {
				if err := os.WriteFile(path, c.snap, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			s, st, err := Open(path, Options{})
			ce, ok := errors.AsType[*CorruptError](err)
			if !ok {
				t.Fatalf("Open error = %v, want *CorruptError", err)
			}
			defer s.Close()
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
			assertState(t, "state", st, empty())
			if !bytes.Equal(mustRead(t, ce.JournalMovedTo), c.journal) {
				t.Error("journal not moved aside intact")
			}
			if c.snap != nil && !bytes.Equal(mustRead(t, ce.MovedTo), c.snap) {
				t.Error("snapshot not moved aside intact")
			}
			if c.snap == nil && ce.MovedTo != "" {
				t.Errorf("MovedTo = %q with no snapshot", ce.MovedTo)
			}
			if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("snapshot still in place: %v", err)
			}
			saveT(t, s, sample(1))
			s.Close()
			_, got := openT(t, path, Options{})
			assertState(t, "after restart", got, sample(1))
		})
	}
}

// TestCompaction: past the threshold the journal is folded into the
// snapshot, which names the last record it includes.
func TestCompaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	s, _ := openT(t, path, Options{CompactMin: 4096})
	st := big(10, 2, 2)
	saveT(t, s, st)
	for i := 0; journalLen(t, path) > 0; i++ {
		if i > 1000 {
			t.Fatal("no compaction after 1000 changes")
		}
		st = withRule(st, i%2, uint32(1000+i))
		saveT(t, s, st)
	}
	snap, err := decode(mustRead(t, path))
	if err != nil {
		t.Fatal(err)
	}
	if snap.Seq != s.seq || snap.Seq < 2 {
		t.Errorf("snapshot journal_seq = %d, store at %d", snap.Seq, s.seq)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("snapshot mode %v", fi.Mode().Perm())
	}
	// Later changes go to the journal again, numbered after the snapshot.
	st = withRule(st, 0, 7)
	saveT(t, s, st)
	s.Close()
	s2, got := openT(t, path, Options{})
	assertState(t, "reopen", got, st)
	if info := s2.Info(); info.SnapshotSeq != snap.Seq || info.Replayed != 1 {
		t.Errorf("Info = %+v, want snapshot %d + 1 record", info, snap.Seq)
	}
}

// crash is the panic value of the crash hook.
type crash string

// saveCrashing runs save(s) and stops it at step, as kill -9 would. It
// reports whether the step was reached.
func saveCrashing(t *testing.T, s *Store, save func(*Store) error, step string) (reached bool) {
	t.Helper()
	s.hook = func(at string) {
		if at == step {
			panic(crash(at))
		}
	}
	defer func() {
		s.hook = nil
		if r := recover(); r != nil {
			if _, ok := r.(crash); !ok {
				panic(r)
			}
			reached = true
			// The process is dead: its descriptors go away (Save's
			// deferred unlock has run).
			s.Close()
		}
	}()
	if err := save(s); err != nil {
		t.Fatalf("save: %v", err)
	}
	return false
}

// savers save a state whose group g just changed: whole (Save) or as the
// change of that group (SaveChange).
var savers = []struct {
	name string
	save func(s *Store, st model.State, g int) error
}{
	{"Save", func(s *Store, st model.State, _ int) error { return s.Save(st) }},
	{"SaveChange", func(s *Store, st model.State, g int) error {
		return s.SaveChange(model.Change{SGs: []model.SG{st.SGs[g]}})
	}},
}

// TestCrashDuringSave stops a Save at each step of the append and of the
// compaction and checks that the files read back as the new state (every
// stop is after the record was synced, or it is the unsynced record that
// a process crash leaves in the page cache) and that the Store opened on
// them goes on correctly.
func TestCrashDuringSave(t *testing.T) {
	for _, sv := range savers {
		for _, step := range []string{stepJournalWrite, stepTempWritten, stepRenamed, stepDirSynced, stepTruncated} {
			t.Run(sv.name+"/"+step, func(t *testing.T) { testCrashDuringSave(t, step, sv.save) })
		}
	}
}

func testCrashDuringSave(t *testing.T, step string, save func(s *Store, st model.State, g int) error) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	s, _ := openT(t, path, Options{CompactMin: 2048})
	st := big(5, 2, 3)
	saveT(t, s, st)
	reached := false
	for i := 0; !reached; i++ {
		if i > 500 {
			t.Fatalf("step %s never reached", step)
		}
		st = withRule(st, i%2, uint32(100+i))
		reached = saveCrashing(t, s, func(s *Store) error { return save(s, st, i%2) }, step)
	}
	got, err := load(path)
	if err != nil {
		t.Fatal(err)
	}
	assertState(t, "load after the crash", got, st)
	s2, got := openT(t, path, Options{CompactMin: 2048})
	assertState(t, "Open after the crash", got, st)
	// Open removed the temporary snapshot a crash may leave.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tempPrefix(path)) {
			t.Errorf("temporary file %s left", e.Name())
		}
	}
	for i := range 60 {
		st = withRule(st, i%2, uint32(5000+i))
		if err := save(s2, st, i%2); err != nil {
			t.Fatal(err)
		}
	}
	s2.Close()
	_, got = openT(t, path, Options{})
	assertState(t, "after more changes and compactions", got, st)
}

// TestFailedAppendRecovers makes the journal unwritable: Save fails and
// nothing is acknowledged; once it is writable again the next Save
// recovers by writing a snapshot.
func TestFailedAppendRecovers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	s, _ := openT(t, path, Options{})
	saveT(t, s, sample(1))
	rw := s.j
	ro, err := os.Open(journalPath(path))
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	s.j = ro // writes and truncation fail: the journal's end is unknown
	if err := s.Save(sample(2)); err == nil {
		t.Fatal("Save to a read-only journal succeeded")
	}
	if s.broken == nil {
		t.Fatal("store not marked broken after an append it could not undo")
	}
	// Simulate garbage left by the failed append.
	if _, err := rw.WriteAt([]byte("garbage that is not a record"), journalLen(t, path)); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(sample(3)); err == nil {
		t.Fatal("Save succeeded while the journal is still unwritable")
	}
	s.j = rw
	saveT(t, s, sample(4))
	if s.broken != nil {
		t.Fatalf("still broken: %v", s.broken)
	}
	if n := fileSize(t, journalPath(path)); n != 0 {
		t.Errorf("journal after recovery has %d bytes, want 0", n)
	}
	saveT(t, s, sample(5))
	s.Close()
	_, got := openT(t, path, Options{})
	assertState(t, "reopen", got, sample(5))
}

// TestStoreMatchesFullRewrite applies random operation sequences and
// checks after each Save that the journal reads back exactly what a full
// rewrite (Save) of the same state reads back, across reopenings and
// compactions.
func TestStoreMatchesFullRewrite(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 42))
			dir := t.TempDir()
			path := filepath.Join(dir, "state.json")
			ref := filepath.Join(dir, "reference.json")
			opts := Options{CompactMin: int64(1 + rng.IntN(8192))}
			s, _ := openT(t, path, opts)
			nics := map[string]model.NIC{}
			sgs := map[string]model.SG{}
			for i := range 300 {
				randomOp(rng, nics, sgs)
				st := empty()
				for _, n := range nics {
					st.NICs = append(st.NICs, n)
				}
				for _, g := range sgs {
					st.SGs = append(st.SGs, g)
				}
				if rng.IntN(2) == 0 {
					st = sorted(st)
				}
				saveT(t, s, st)
				if err := Save(ref, st); err != nil {
					t.Fatal(err)
				}
				want, err := load(ref)
				if err != nil {
					t.Fatal(err)
				}
				got, err := load(path)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("op %d: journal state\n%+v\nfull rewrite\n%+v", i, got, want)
				}
				if rng.IntN(20) == 0 {
					s.Close()
					s, got = openT(t, path, opts)
					if !reflect.DeepEqual(got, want) {
						t.Fatalf("op %d: reopened state differs", i)
					}
				}
			}
		})
	}
}

// randomOp changes one object of the state.
func randomOp(rng *rand.Rand, nics map[string]model.NIC, sgs map[string]model.SG) {
	addr := func() netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(rng.IntN(4)), byte(rng.IntN(250))}) }
	switch id := fmt.Sprint(rng.IntN(12)); rng.IntN(6) {
	case 0, 1: // add or replace a vNIC
		n := model.NIC{ID: "nic-" + id, MACText: fmt.Sprintf("52:54:00:00:00:%02x", rng.IntN(256)), VNI: uint32(rng.IntN(5)),
			Type: model.NICTap, IPAntiSpoof: rng.IntN(2) == 0, Path: "p" + id}
		for range rng.IntN(3) {
			n.IPs = append(n.IPs, addr())
		}
		if rng.IntN(2) == 0 {
			n.SecurityGroups = []string{"sg-" + id}
		}
		nics[n.ID] = n
	case 2:
		delete(nics, "nic-"+id)
	case 3: // add a rule or a member (creating the group)
		g := model.SG.Clone(sgs["sg-"+id])
		g.ID = "sg-" + id
		if rng.IntN(2) == 0 {
			g.Rules = append(g.Rules, model.Rule{Direction: model.Inbound, Protocol: 6, PortStart: uint32(rng.IntN(100)), PortEnd: 100,
				CIDR: netip.PrefixFrom(addr(), 24)})
		} else {
			g.Members = append(g.Members, addr())
		}
		sgs[g.ID] = g
	case 4: // remove a rule
		g, ok := sgs["sg-"+id]
		if ok && len(g.Rules) > 0 {
			g = model.SG.Clone(g)
			g.Rules = slices.Delete(g.Rules, 0, 1)
			if len(g.Rules) == 0 {
				g.Rules = nil
			}
			sgs[g.ID] = g
		}
	case 5:
		delete(sgs, "sg-"+id)
	}
}

// TestSaveRefusesJournal: Save must not put a standalone snapshot under
// a Store's journal (its records would be replayed on it).
func TestSaveRefusesJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	s, _ := openT(t, path, Options{})
	if err := Save(path, sample(1)); err != nil {
		t.Fatalf("Save next to an empty journal: %v", err)
	}
	saveT(t, s, sample(2))
	if err := Save(path, sample(3)); err == nil {
		t.Fatal("Save next to a non-empty journal succeeded")
	}
}

// TestStoreListReplaced: Save keeps the lists it saved and takes the same
// list (array and length) as unchanged; any other list is compared, so
// every replacement that changes the content is written, and one that
// does not is not.
func TestStoreListReplaced(t *testing.T) {
	other := netip.MustParseAddr("10.9.9.9")
	tests := []struct {
		name   string
		change func(st *model.State)
		writes bool
	}{
		{"same lists", func(st *model.State) {}, false},
		{"rules copied", func(st *model.State) { st.SGs[1].Rules = slices.Clone(st.SGs[1].Rules) }, false},
		{"rules prefix of the same array", func(st *model.State) { st.SGs[1].Rules = st.SGs[1].Rules[:2] }, true},
		{"rules suffix of the same array", func(st *model.State) { st.SGs[1].Rules = st.SGs[1].Rules[1:] }, true},
		{"rule replaced in a copy", func(st *model.State) {
			r := slices.Clone(st.SGs[1].Rules)
			r[0] = newRule(4242)
			st.SGs[1].Rules = r
		}, true},
		{"member replaced in a copy", func(st *model.State) { st.SGs[2].Members = []netip.Addr{other} }, true},
		{"ip replaced in a copy", func(st *model.State) {
			ips := slices.Clone(st.NICs[3].IPs)
			ips[0] = other
			st.NICs[3].IPs = ips
		}, true},
		{"security groups emptied", func(st *model.State) { st.NICs[0].SecurityGroups = nil }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			s, _ := openT(t, path, Options{})
			base := big(5, 3, 4)
			saveT(t, s, base)
			size := journalLen(t, path)
			st := base
			st.NICs, st.SGs = slices.Clone(base.NICs), slices.Clone(base.SGs)
			tt.change(&st)
			saveT(t, s, st)
			if grew := journalLen(t, path) > size; grew != tt.writes {
				t.Errorf("journal grew: %v, want %v", grew, tt.writes)
			}
			got, err := load(path)
			if err != nil {
				t.Fatal(err)
			}
			assertState(t, "reload", got, st)
		})
	}
}
