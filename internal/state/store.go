package state

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/butterfly-go/butterfly/internal/model"
)

// Journal framing: every record is a header of 4 bytes payload length and
// 4 bytes CRC-32C of the payload (both little endian), then the payload, a
// JSON-encoded record.
const (
	headerSize = 8
	// maxRecord bounds the length field; a larger value is damage.
	maxRecord = 1 << 30
	// defaultCompactMin is the smallest journal that is compacted.
	defaultCompactMin = 1 << 20
)

// Steps of a compaction, for the crash tests' hook.
const (
	stepTempWritten  = "temp-written"  // temporary snapshot written and synced
	stepRenamed      = "renamed"       // snapshot renamed into place
	stepDirSynced    = "dir-synced"    // directory synced
	stepTruncated    = "truncated"     // journal truncated, not yet synced
	stepJournalWrite = "journal-write" // record written, not yet synced
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// journalPath is the journal of the state at path.
func journalPath(path string) string { return path + ".journal" }

// record is one journal entry: the objects that changed since the
// previous record (whole, or as patches for groups) and the ids removed.
type record struct {
	Seq     uint64      `json:"seq"`
	NICs    []model.NIC `json:"nics,omitempty"`
	SGs     []model.SG  `json:"sgs,omitempty"`
	DelNICs []string    `json:"del_nics,omitempty"`
	DelSGs  []string    `json:"del_sgs,omitempty"`
	// SGPatches are groups changed in place (see sgPatch), applied after
	// the rest; a group is in at most one of SGs, DelSGs and SGPatches.
	SGPatches []sgPatch `json:"sg_patches,omitempty"`
	// patched are the groups SGPatches give, whole (not written: the
	// Store keeps them instead of applying its own patches again).
	patched []model.SG
}

func (r *record) empty() bool {
	return len(r.NICs) == 0 && len(r.SGs) == 0 && len(r.DelNICs) == 0 && len(r.DelSGs) == 0 && len(r.SGPatches) == 0
}

// appendFrame appends the framed payload to dst.
func appendFrame(dst, payload []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(payload)))
	dst = binary.LittleEndian.AppendUint32(dst, crc32.Checksum(payload, castagnoli))
	return append(dst, payload...)
}

// corruption is a snapshot or journal that cannot be used.
type corruption struct {
	file string
	err  error
}

func (c *corruption) Error() string { return fmt.Sprintf("%s: %v", c.file, c.err) }

// loaded is what readStore found.
type loaded struct {
	nics map[string]model.NIC
	sgs  map[string]model.SG
	// snapSeq is the snapshot's journal_seq, seq the last record applied.
	snapSeq, seq uint64
	// snapVersion is the snapshot file's version (0: no snapshot).
	snapVersion int
	snapSize    int64
	// journalSize is the length of the valid journal prefix; tornBytes
	// follow it (an incomplete last record), or zeroTail bytes of zeros
	// (preallocated, never written).
	journalSize, tornBytes, zeroTail int64
	replayed                         int
}

// state returns the loaded state, vNICs and groups sorted by id (as
// model.Store.State does).
func (l *loaded) state() model.State {
	st := empty()
	for _, n := range l.nics {
		st.NICs = append(st.NICs, n)
	}
	for _, g := range l.sgs {
		st.SGs = append(st.SGs, g)
	}
	slices.SortFunc(st.NICs, func(a, b model.NIC) int { return cmp.Compare(a.ID, b.ID) })
	slices.SortFunc(st.SGs, func(a, b model.SG) int { return cmp.Compare(a.ID, b.ID) })
	return st
}

// readStore reads the snapshot and replays the journal. It changes no
// file. Damage is returned as a *corruption.
func readStore(path string) (*loaded, error) {
	ld := &loaded{nics: map[string]model.NIC{}, sgs: map[string]model.SG{}}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("load state: %w", err)
	default:
		snap, err := decode(data)
		if err != nil {
			return nil, &corruption{file: path, err: err}
		}
		if snap.Version > snapshotVersion {
			// Written by a newer butterflyd: neither usable nor corrupt.
			// Leave it alone so that nothing overwrites it.
			return nil, fmt.Errorf("load state: %s has version %d, this butterflyd understands up to %d", path, snap.Version, snapshotVersion)
		}
		ld.snapVersion = snap.Version
		for _, n := range snap.NICs {
			ld.nics[n.ID] = n
		}
		for _, g := range snap.SGs {
			ld.sgs[g.ID] = g
		}
		ld.snapSeq, ld.seq, ld.snapSize = snap.Seq, snap.Seq, int64(len(data))
	}
	jp := journalPath(path)
	jdata, err := os.ReadFile(jp)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return ld, nil
	case err != nil:
		return nil, fmt.Errorf("load state: %w", err)
	}
	if err := ld.replay(jdata); err != nil {
		return nil, &corruption{file: jp, err: err}
	}
	return ld, nil
}

// replay applies the journal's records newer than the snapshot. It stops
// at an incomplete last record (recorded in tornBytes).
func (ld *loaded) replay(data []byte) error {
	var off int64
	size := int64(len(data))
	var last uint64 // last sequence seen, applied or not
	for off < size {
		rest := data[off:]
		if len(rest) < headerSize {
			ld.tornBytes = int64(len(rest))
			break
		}
		n := int64(binary.LittleEndian.Uint32(rest))
		sum := binary.LittleEndian.Uint32(rest[4:])
		if n == 0 || n > maxRecord {
			if allZero(rest) {
				// The journal's preallocated space (see Store.append).
				ld.zeroTail = int64(len(rest))
				break
			}
			return fmt.Errorf("record at offset %d: invalid length %d", off, n)
		}
		end := headerSize + n
		if end > int64(len(rest)) {
			ld.tornBytes = int64(len(rest))
			break
		}
		payload := rest[headerSize:end]
		if crc32.Checksum(payload, castagnoli) != sum {
			if end == int64(len(rest)) || allZero(rest[end:]) {
				ld.tornBytes = int64(len(rest))
				break
			}
			return fmt.Errorf("record at offset %d: checksum mismatch", off)
		}
		var r record
		if err := json.Unmarshal(payload, &r); err != nil {
			return fmt.Errorf("record at offset %d: %w", off, err)
		}
		if r.Seq <= last {
			return fmt.Errorf("record at offset %d: sequence %d after %d", off, r.Seq, last)
		}
		last = r.Seq
		if r.Seq > ld.seq {
			if r.Seq != ld.seq+1 {
				return fmt.Errorf("record at offset %d: sequence %d, want %d (records missing)", off, r.Seq, ld.seq+1)
			}
			if err := r.applyTo(ld.nics, ld.sgs); err != nil {
				return fmt.Errorf("record at offset %d: %w", off, err)
			}
			ld.seq = r.Seq
			ld.replayed++
		}
		off += end
	}
	ld.journalSize = off
	return nil
}

// applyTo applies the change r records to the maps of vNICs and security
// groups: deletions first, then additions and replacements, then group
// patches. It fails, leaving the maps partly changed, if a patch does not
// fit the group it names (damage: the Store writes patches only against
// what it holds).
func (r *record) applyTo(nics map[string]model.NIC, sgs map[string]model.SG) error {
	for _, id := range r.DelNICs {
		delete(nics, id)
	}
	for _, id := range r.DelSGs {
		delete(sgs, id)
	}
	for _, n := range r.NICs {
		nics[n.ID] = n
	}
	for _, g := range r.SGs {
		sgs[g.ID] = g
	}
	for i := range r.SGPatches {
		p := &r.SGPatches[i]
		g, ok := sgs[p.ID]
		if !ok {
			return fmt.Errorf("patch of group %q, which does not exist", p.ID)
		}
		ng, err := p.apply(g)
		if err != nil {
			return err
		}
		sgs[p.ID] = ng
	}
	return nil
}

// apply is applyTo for a record the Store made from its own state: the
// patched groups are taken whole (diffSG checked that the patches give
// them).
func (r *record) apply(nics map[string]model.NIC, sgs map[string]model.SG) {
	whole := *r
	whole.SGs = append(slices.Clip(r.SGs), r.patched...)
	whole.SGPatches = nil
	whole.applyTo(nics, sgs) // no patch: cannot fail
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Options configure a Store.
type Options struct {
	// CompactMin is the journal size below which the journal is never
	// compacted (0 = 1 MiB). Above it, the journal is compacted when it is
	// larger than twice the snapshot.
	CompactMin int64
	// Logger receives warnings (torn record dropped, compaction failed).
	// Nil discards them.
	Logger *slog.Logger
}

// OpenInfo describes what Open found.
type OpenInfo struct {
	// SnapshotSeq is the last journal sequence the snapshot included.
	SnapshotSeq uint64
	// Replayed is the number of journal records applied over it.
	Replayed int
	// TornBytes is the size of an incomplete last journal record that
	// was cut off (a change the process died writing, never
	// acknowledged); 0 if none.
	TornBytes int64
}

// Store persists successive states as a snapshot plus a journal of
// changes. Its methods are safe for concurrent use. Only one Store may
// have a path open; use Lock to ensure it across processes.
type Store struct {
	mu   sync.Mutex
	path string
	log  *slog.Logger
	min  int64
	j    *os.File // nil once closed
	// jsize is the journal's length, snapSize the snapshot's. jalloc is
	// the journal file's size: past jsize it holds zeros, written ahead so
	// that appending a record does not change the file's size (its sync
	// then writes data only, not the inode through the file system's
	// journal).
	jsize, snapSize, jalloc int64
	// seq is the sequence number of the last record written (or of the
	// snapshot).
	seq uint64
	// snapVersion is the version of the snapshot file (0: none): group
	// patches are journaled only after a version 2 snapshot.
	snapVersion int
	// nics and sgs are the state last saved (Save, SaveChange): the
	// state the files hold unless broken is set. The Store owns the maps;
	// the objects' lists are shared with the callers (read-only).
	nics map[string]model.NIC
	sgs  map[string]model.SG
	// broken is set when a save failed: the files lack the last changes
	// (and the journal may end with garbage), so the next save writes a
	// snapshot instead of a record.
	broken error
	info   OpenInfo
	// hook, if set, is called at each step of a write; the crash tests
	// panic in it to stop there.
	hook func(step string)
}

// Open loads the state stored at path (snapshot and journal) and
// returns a Store that persists later states there. An incomplete last
// journal record is cut off (see Info). If the files are corrupt they are
// moved aside and Open returns a usable Store, an empty state and a
// *CorruptError. Other errors (unreadable files, a newer version) return a
// nil Store and leave the files alone. The directory is created (0700) if
// needed; files are created with mode 0600.
func Open(path string, opts Options) (*Store, model.State, error) {
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	st := &Store{path: path, log: lg, min: opts.CompactMin}
	if st.min <= 0 {
		st.min = defaultCompactMin
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, empty(), fmt.Errorf("open state: %w", err)
	}
	removeStaleTemps(path)
	ld, err := readStore(path)
	var cerr *CorruptError
	if c, bad := errors.AsType[*corruption](err); bad {
		cerr = moveAside(path, c)
		ld = &loaded{nics: map[string]model.NIC{}, sgs: map[string]model.SG{}}
	} else if err != nil {
		return nil, empty(), err
	}
	j, err := os.OpenFile(journalPath(path), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, empty(), fmt.Errorf("open state journal: %w", err)
	}
	fail := func(err error) (*Store, model.State, error) {
		j.Close()
		return nil, empty(), fmt.Errorf("open state journal: %w", err)
	}
	if ld.tornBytes > 0 {
		if err := j.Truncate(ld.journalSize); err != nil {
			return fail(err)
		}
		if err := j.Sync(); err != nil {
			return fail(err)
		}
		lg.Warn("state journal: dropped an incomplete last record (the process stopped while writing an unacknowledged change)",
			"journal", journalPath(path), "offset", ld.journalSize, "bytes", ld.tornBytes)
	}
	// The journal may have just been created: make its name durable.
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fail(err)
	}
	st.j = j
	st.jsize, st.snapSize, st.seq = ld.journalSize, ld.snapSize, ld.seq
	st.jalloc = ld.journalSize
	if ld.tornBytes == 0 {
		st.jalloc += ld.zeroTail
	}
	st.nics, st.sgs = ld.nics, ld.sgs
	st.info = OpenInfo{SnapshotSeq: ld.snapSeq, Replayed: ld.replayed, TornBytes: ld.tornBytes}
	state := ld.state()
	// The returned state must not share memory with the Store's copy.
	for i := range state.NICs {
		state.NICs[i] = state.NICs[i].Clone()
	}
	for i := range state.SGs {
		state.SGs[i] = state.SGs[i].Clone()
	}
	st.snapVersion = ld.snapVersion
	if cerr != nil {
		return st, state, cerr
	}
	return st, state, nil
}

// Info reports what Open found.
func (s *Store) Info() OpenInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.info
}

// Close closes the journal. Later Saves fail.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.j == nil {
		return nil
	}
	err := s.j.Close()
	s.j = nil
	if err != nil {
		return fmt.Errorf("close state journal: %w", err)
	}
	return nil
}

// Save makes st durable before it returns: it appends a record of what
// differs from the last saved state (changed vNICs and security groups,
// compared by id, and deleted ids) to the journal and syncs it. Nothing
// changed: nothing is written. Equal ids in st: the last one wins. Save
// compares the whole state (O(vNICs + groups)); SaveChange costs only
// what changed.
//
// The Store keeps st's lists (NIC.IPs, NIC.SecurityGroups, SG.Members,
// SG.Rules) without copying them: the caller must not write into them
// afterwards, as model.Store.State guarantees for the lists it returns.
// Replacing a field, a list or the whole st is fine. A list that is the
// one saved for the same id (same array and length) is unchanged without
// comparing its elements, which makes saving a large state after a small
// change cheap.
func (s *Store) Save(st model.State) error {
	if st.Version != model.StateVersion && st.Version != 0 {
		return fmt.Errorf("save state: version %d, want %d", st.Version, model.StateVersion)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.j == nil {
		return errors.New("save state: store closed")
	}
	if s.broken != nil {
		s.nics, s.sgs = maps(st)
		return s.recover()
	}
	return s.commit(s.diff(st))
}

// SaveChange makes the state last saved with c applied durable before it
// returns, as Save does for a whole state: c's removals and the objects
// of c that differ from the saved ones (compared one by one) go into one
// journal record, synced; nothing else is read or written, so the cost is
// that of the change, not of the state (compaction aside, which rewrites
// the snapshot once the journal has grown past twice its size). Nothing
// changed: nothing is written. c comes from model.Store.TakeChanges: ids
// unique within each list, an id in at most one of NICs and DelNICs (SGs
// and DelSGs); removing an unknown id is not an error. The Store keeps
// c's lists, which the caller must not write into afterwards (as Save).
//
// If SaveChange fails the change is not durable, but the Store keeps it:
// the next Save or SaveChange writes a snapshot holding it and the new
// change, so that a caller taking every change once loses none.
func (s *Store) SaveChange(c model.Change) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.j == nil {
		return errors.New("save state: store closed")
	}
	r := s.changeRecord(c)
	if s.broken != nil {
		r.apply(s.nics, s.sgs)
		return s.recover()
	}
	return s.commit(r)
}

// recover writes the Store's state as a snapshot whose sequence covers
// whatever a failed write left in the journal, so that the files hold the
// Store's state again. s.mu must be held and s.broken set.
func (s *Store) recover() error {
	if err := s.compact(s.seq + 1); err != nil {
		return fmt.Errorf("save state (recovering from %v): %w", s.broken, err)
	}
	s.log.Info("state journal recovered by writing a snapshot", "path", s.path)
	s.broken = nil
	return nil
}

// commit appends r (its sequence set here) to the journal, syncs it and
// applies it to the Store's state, then compacts if the journal has grown
// enough. If r cannot be made durable the Store applies it all the same
// and marks itself broken: the files then lag behind its state, and the
// next save writes a snapshot. s.mu must be held.
func (s *Store) commit(r record) error {
	if r.empty() {
		return nil
	}
	if len(r.SGPatches) > 0 && s.snapVersion < snapshotVersion {
		// The first group patch: write a snapshot (version 2) holding
		// the change instead, so that a butterflyd that reads only
		// version 1 refuses the files rather than skip patches.
		r.apply(s.nics, s.sgs)
		if err := s.compact(s.seq + 1); err != nil {
			s.broken = err
			return fmt.Errorf("save state: %w", err)
		}
		return nil
	}
	r.Seq = s.seq + 1
	fail := func(err error) error {
		r.apply(s.nics, s.sgs)
		s.broken = err
		return fmt.Errorf("save state: %w", err)
	}
	payload, err := json.Marshal(&r)
	if err != nil {
		return fail(fmt.Errorf("encode: %w", err))
	}
	if len(payload) > maxRecord {
		return fail(fmt.Errorf("change of %d bytes is too large", len(payload)))
	}
	frame := appendFrame(make([]byte, 0, headerSize+len(payload)), payload)
	if err := s.append(frame); err != nil {
		// Undo a partial or unsynced append so that the snapshot the
		// next save writes follows a clean end (its sequence covers
		// this record in any case).
		if terr := s.truncate(s.jsize); terr != nil {
			err = errors.Join(err, terr)
		}
		return fail(err)
	}
	s.jsize += int64(len(frame))
	s.seq = r.Seq
	r.apply(s.nics, s.sgs)
	if s.jsize > max(s.min, 2*s.snapSize) {
		// The change is durable already; a failed compaction only
		// leaves a longer journal (retried at the next change).
		if err := s.compact(s.seq); err != nil {
			s.log.Error("state journal compaction failed", "path", s.path, "err", err)
		}
	}
	return nil
}

// journalChunk is how much zeroed space the journal grows by.
const journalChunk = 1 << 20

// append writes frame at the journal's end and syncs it, first extending
// the file with zeros when it has no room left.
func (s *Store) append(frame []byte) error {
	if end := s.jsize + int64(len(frame)); end > s.jalloc {
		size := (end + journalChunk - 1) / journalChunk * journalChunk
		zeros := make([]byte, 64<<10)
		for off := s.jalloc; off < size; off += int64(len(zeros)) {
			if _, err := s.j.WriteAt(zeros[:min(int64(len(zeros)), size-off)], off); err != nil {
				return fmt.Errorf("extend journal: %w", err)
			}
		}
		s.jalloc = size
	}
	if _, err := s.j.WriteAt(frame, s.jsize); err != nil {
		return fmt.Errorf("append to journal: %w", err)
	}
	callHook(s.hook, stepJournalWrite)
	if err := unix.Fdatasync(int(s.j.Fd())); err != nil {
		return fmt.Errorf("sync journal: %w", err)
	}
	return nil
}

// truncate cuts the journal to size and syncs it.
func (s *Store) truncate(size int64) error {
	s.jalloc = size // or less: the next append extends it again
	if err := s.j.Truncate(size); err != nil {
		return fmt.Errorf("truncate journal: %w", err)
	}
	callHook(s.hook, stepTruncated)
	if err := unix.Fdatasync(int(s.j.Fd())); err != nil {
		return fmt.Errorf("sync journal: %w", err)
	}
	return nil
}

// compact writes the Store's state as a snapshot that includes the
// journal up to seq, then empties the journal. At each step the files
// read back as the same state: before the rename the old snapshot and the
// whole journal; after it the new snapshot, which makes replay skip every
// record up to seq.
func (s *Store) compact(seq uint64) error {
	st := (&loaded{nics: s.nics, sgs: s.sgs}).state()
	if err := writeSnapshot(s.path, st, seq, s.hook); err != nil {
		return err
	}
	s.seq, s.snapVersion = seq, snapshotVersion
	if fi, err := os.Stat(s.path); err == nil {
		s.snapSize = fi.Size()
	}
	callHook(s.hook, stepDirSynced)
	if err := s.truncate(0); err != nil {
		// The journal's length is unknown now: recover at the next Save.
		s.broken = err
		return err
	}
	s.jsize = 0
	return nil
}

// diff returns the record that turns the saved state into st (Seq unset).
// Upserted objects share st's lists.
func (s *Store) diff(st model.State) record {
	var r record
	r.NICs, r.DelNICs = changes(s.nics, st.NICs, func(n model.NIC) string { return n.ID }, model.NIC.Equal)
	r.SGs, r.DelSGs = changes(s.sgs, st.SGs, func(g model.SG) string { return g.ID }, model.SG.Equal)
	return r
}

// changeRecord returns the record of c's effect on the saved state (Seq
// unset): removals of known ids, and the objects that are new or differ
// from the saved ones. Upserted objects share c's lists.
func (s *Store) changeRecord(c model.Change) record {
	var r record
	r.DelNICs = known(s.nics, c.DelNICs)
	r.DelSGs = known(s.sgs, c.DelSGs)
	r.NICs = changed(s.nics, c.NICs, r.DelNICs, func(n model.NIC) string { return n.ID }, model.NIC.Equal)
	sgs := changed(s.sgs, c.SGs, r.DelSGs, func(g model.SG) string { return g.ID }, model.SG.Equal)
	for _, g := range sgs {
		if old, ok := s.sgs[g.ID]; ok && !slices.Contains(r.DelSGs, g.ID) {
			if p, ok := diffSG(old, g); ok {
				r.SGPatches = append(r.SGPatches, p)
				r.patched = append(r.patched, g)
				continue
			}
		}
		r.SGs = append(r.SGs, g)
	}
	return r
}

// known returns the ids of ids that saved holds.
func known[T any](saved map[string]T, ids []string) []string {
	var out []string
	for _, id := range ids {
		if _, ok := saved[id]; ok {
			out = append(out, id)
		}
	}
	return out
}

// changed returns the objects of up that saved does not hold or holds
// with another value; an object whose id is in del (removed by the same
// record, before the upserts) is always kept.
func changed[T any](saved map[string]T, up []T, del []string, key func(T) string, equal func(a, b T) bool) []T {
	var out []T
	for _, v := range up {
		id := key(v)
		if old, ok := saved[id]; ok && equal(old, v) && !slices.Contains(del, id) {
			continue
		}
		out = append(out, v)
	}
	return out
}

// changes returns the objects of cur that are not in saved or differ from
// it (of equal ids, the last one), and the ids of saved that are not in
// cur, sorted. It costs O(len(cur) + len(saved)) map look-ups, plus the
// comparison of the objects whose lists are not the saved ones.
func changes[T any](saved map[string]T, cur []T, key func(T) string, equal func(a, b T) bool) (up []T, del []string) {
	// Ids strictly increasing (as model.Store.State gives them): no
	// duplicates. Otherwise last holds the index of each id's last copy.
	var last map[string]int
	strict := true
	for i := 1; i < len(cur) && strict; i++ {
		strict = key(cur[i-1]) < key(cur[i])
	}
	if !strict {
		last = make(map[string]int, len(cur))
		for i, v := range cur {
			last[key(v)] = i
		}
	}
	known := 0
	for i, v := range cur {
		id := key(v)
		if last != nil && last[id] != i {
			continue // a later duplicate wins
		}
		old, ok := saved[id]
		if ok {
			known++
			if equal(old, v) {
				continue
			}
		}
		up = append(up, v)
	}
	if known == len(saved) {
		return up, nil // every saved id is still there
	}
	for id := range saved {
		present := false
		if last != nil {
			_, present = last[id]
		} else {
			_, present = slices.BinarySearchFunc(cur, id, func(v T, id string) int { return cmp.Compare(key(v), id) })
		}
		if !present {
			del = append(del, id)
		}
	}
	slices.Sort(del)
	return up, del
}

// maps returns owned copies of st's objects by id.
func maps(st model.State) (map[string]model.NIC, map[string]model.SG) {
	nics := make(map[string]model.NIC, len(st.NICs))
	for _, n := range st.NICs {
		nics[n.ID] = n.Clone()
	}
	sgs := make(map[string]model.SG, len(st.SGs))
	for _, g := range st.SGs {
		sgs[g.ID] = g.Clone()
	}
	return nics, sgs
}
