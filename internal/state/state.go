// Package state stores the daemon's desired state (model.State) on disk,
// so that a restarted butterflyd gets its vNICs and security groups back.
//
// The state lives in two files: a JSON snapshot at the state path and an
// append-only journal at "<path>.journal". A Store (Open) appends one
// framed, checksummed record per change (the vNICs and security groups
// that changed, whole, and the ids deleted) and syncs it before Save or
// SaveChange returns, so a change costs a write of its own size instead
// of a rewrite of the whole state; SaveChange, given the change itself
// (model.Store.TakeChanges), also never looks at the rest of the state. When the journal grows past twice the snapshot (at
// least 1 MiB) the Store writes a new snapshot atomically (temporary
// file, fsync, rename, fsync of the directory) that names the last record
// it includes, then empties the journal; a crash at any step leaves files
// from which the same state is read back.
//
// A journal whose last record is incomplete (the process died while
// appending it; that change was never acknowledged) is cut back to its
// last complete record. Anything else that cannot be parsed moves both
// files aside and gives an empty state instead of failing the daemon.
package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/butterfly-go/butterfly/internal/model"
)

// CorruptError reports a snapshot or journal that could not be parsed.
// Both files were moved aside (MovedTo and JournalMovedTo, empty when that
// file did not exist or could not be moved) and the caller got an empty
// state.
type CorruptError struct {
	// Path is the file found corrupt (the snapshot or the journal).
	Path           string
	MovedTo        string
	JournalMovedTo string
	Err            error
}

// Error describes the problem and where the files went.
func (e *CorruptError) Error() string {
	if e.MovedTo == "" && e.JournalMovedTo == "" {
		return fmt.Sprintf("state file %s is corrupt (%v) and could not be moved aside", e.Path, e.Err)
	}
	var moved []string
	for _, m := range []string{e.MovedTo, e.JournalMovedTo} {
		if m != "" {
			moved = append(moved, m)
		}
	}
	return fmt.Sprintf("state file %s is corrupt (%v); moved to %s, starting with an empty state", e.Path, e.Err, strings.Join(moved, " and "))
}

// Unwrap returns the parse error.
func (e *CorruptError) Unwrap() error { return e.Err }

// tempPrefix is the name prefix of Save's temporary files for path.
func tempPrefix(path string) string { return "." + filepath.Base(path) + ".tmp-" }

// Save writes s to path atomically as a standalone snapshot (no journal).
// The directory is created (mode 0700) if needed; the file has mode 0600.
// It is meant for new files (copies, tests): it refuses to replace a state
// that has a non-empty journal, since that journal belongs to a Store.
func Save(path string, s model.State) error {
	if fi, err := os.Stat(journalPath(path)); err == nil && fi.Size() > 0 {
		return fmt.Errorf("save state: %s has a journal (%s): use a Store", path, journalPath(path))
	}
	return writeSnapshot(path, s, 0, nil)
}

// writeSnapshot writes s with journal sequence seq to path atomically:
// temporary file, fsync, rename, fsync of the directory. hook, if not nil,
// is called after each step (tests simulate crashes with it).
func writeSnapshot(path string, s model.State, seq uint64, hook func(step string)) error {
	data, err := json.MarshalIndent(snapshot{Version: snapshotVersion, Seq: seq, NICs: s.NICs, SGs: s.SGs}, "", "\t")
	if err != nil {
		return fmt.Errorf("save state: encode: %w", err)
	}
	data = append(data, '\n')
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	f, err := os.CreateTemp(dir, tempPrefix(path)+"*")
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	tmp := f.Name()
	committed := false
	defer func() {
		if !committed {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("save state: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("save state: sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save state: close %s: %w", tmp, err)
	}
	committed = true // a crash (the hook's panic) leaves the temporary file
	callHook(hook, stepTempWritten)
	committed = false
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	committed = true
	callHook(hook, stepRenamed)
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

// callHook calls hook (the crash tests' probe) if it is set.
func callHook(hook func(string), step string) {
	if hook != nil {
		hook(step)
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// moveAside renames the snapshot and the journal at path to
// "<name>.corrupt-<unix seconds>" and returns the *CorruptError that
// reports it.
func moveAside(path string, c *corruption) *CorruptError {
	cerr := &CorruptError{Path: c.file, Err: c.err}
	stamp := strconv.FormatInt(time.Now().Unix(), 10)
	for _, p := range []string{path, journalPath(path)} {
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		dst := p + ".corrupt-" + stamp
		if _, err := os.Lstat(dst); err == nil {
			// Two corrupt files within one second: do not overwrite the first.
			dst += "-" + strconv.FormatInt(time.Now().UnixNano(), 10)
		}
		if err := os.Rename(p, dst); err != nil {
			cerr.Err = errors.Join(cerr.Err, fmt.Errorf("move aside: %w", err))
			continue
		}
		if p == path {
			cerr.MovedTo = dst
		} else {
			cerr.JournalMovedTo = dst
		}
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		cerr.Err = errors.Join(cerr.Err, err)
	}
	return cerr
}

func empty() model.State {
	return model.State{Version: model.StateVersion, NICs: []model.NIC{}, SGs: []model.SG{}}
}

// snapshot is the snapshot file: model.State plus the sequence number of
// the last journal record it includes (absent in files written before the
// journal existed, which is 0: replay everything).
type snapshot struct {
	Version int         `json:"version"`
	Seq     uint64      `json:"journal_seq,omitempty"`
	NICs    []model.NIC `json:"nics"`
	SGs     []model.SG  `json:"sgs"`
}

// decode parses a snapshot: exactly one JSON object.
func decode(data []byte) (snapshot, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return snapshot{}, errors.New("empty file")
	}
	var s snapshot
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&s); err != nil {
		return snapshot{}, fmt.Errorf("invalid JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return snapshot{}, errors.New("trailing data after the state object")
	}
	if s.Version == 0 {
		return snapshot{}, errors.New("no version field")
	}
	return s, nil
}

// removeStaleTemps deletes temporary files of an interrupted Save.
func removeStaleTemps(path string) {
	dir := filepath.Dir(path)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	prefix := tempPrefix(path)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) && e.Type().IsRegular() {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// Lock takes an exclusive advisory lock (flock) on "<path>.lock", so that
// two daemons never share a state file. It fails at once if another
// process holds it. The lock is released by the returned function or when
// the process exits, however it exits.
func Lock(path string) (unlock func() error, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("lock state file: %w", err)
	}
	lp := path + ".lock"
	f, err := os.OpenFile(lp, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock state file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("state file %s is in use by another process (lock %s held)", path, lp)
		}
		return nil, fmt.Errorf("lock state file %s: %w", lp, err)
	}
	return f.Close, nil
}
