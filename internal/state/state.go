// Package state stores the daemon's desired state (model.State) in a JSON
// file, so that a restarted butterflyd gets its vNICs and security groups
// back.
//
// Save replaces the file atomically: it writes a temporary file in the
// same directory, syncs it, renames it over the old one and syncs the
// directory, so a crash at any moment leaves either the old or the new
// state, never a mix. Load treats a missing file as an empty state and
// moves a file it cannot parse aside instead of failing the daemon.
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

// CorruptError reports a state file that could not be parsed. The file was
// moved to MovedTo (empty if moving it failed too) and Load returned an
// empty state.
type CorruptError struct {
	Path    string
	MovedTo string
	Err     error
}

// Error describes the problem and where the file went.
func (e *CorruptError) Error() string {
	if e.MovedTo == "" {
		return fmt.Sprintf("state file %s is corrupt (%v) and could not be moved aside", e.Path, e.Err)
	}
	return fmt.Sprintf("state file %s is corrupt (%v); moved to %s, starting with an empty state", e.Path, e.Err, e.MovedTo)
}

// Unwrap returns the parse error.
func (e *CorruptError) Unwrap() error { return e.Err }

// tempPrefix is the name prefix of Save's temporary files for path.
func tempPrefix(path string) string { return "." + filepath.Base(path) + ".tmp-" }

// Save writes s to path atomically. The directory is created (mode 0700)
// if needed; the file has mode 0600.
func Save(path string, s model.State) error {
	data, err := json.MarshalIndent(s, "", "\t")
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
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	committed = true
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
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

// Load reads the state saved at path. A missing file gives an empty state
// and no error. A file that is not a complete JSON state (empty, truncated,
// garbage) is renamed to "<path>.corrupt-<unix seconds>" and Load returns
// an empty state with a *CorruptError. Temporary files left by a Save that
// was interrupted are removed. Other errors (unreadable file, a version
// newer than this program's) are returned with an empty state and leave
// the file in place.
func Load(path string) (model.State, error) {
	removeStaleTemps(path)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return empty(), nil
	}
	if err != nil {
		return empty(), fmt.Errorf("load state: %w", err)
	}
	s, perr := decode(data)
	if perr == nil {
		if s.Version > model.StateVersion {
			// Written by a newer butterflyd: neither usable nor corrupt.
			// Leave it alone so that nothing overwrites it.
			return empty(), fmt.Errorf("load state: %s has version %d, this butterflyd understands up to %d", path, s.Version, model.StateVersion)
		}
		return s, nil
	}
	cerr := &CorruptError{Path: path, Err: perr}
	dst := path + ".corrupt-" + strconv.FormatInt(time.Now().Unix(), 10)
	if _, err := os.Lstat(dst); err == nil {
		// Two corrupt files within one second: do not overwrite the first.
		dst += "-" + strconv.FormatInt(time.Now().UnixNano(), 10)
	}
	if err := os.Rename(path, dst); err != nil {
		cerr.Err = errors.Join(perr, fmt.Errorf("move aside: %w", err))
	} else {
		cerr.MovedTo = dst
		if err := syncDir(filepath.Dir(path)); err != nil {
			cerr.Err = errors.Join(perr, err)
		}
	}
	return empty(), cerr
}

func empty() model.State {
	return model.State{Version: model.StateVersion, NICs: []model.NIC{}, SGs: []model.SG{}}
}

// decode parses exactly one JSON object.
func decode(data []byte) (model.State, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return model.State{}, errors.New("empty file")
	}
	var s model.State
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&s); err != nil {
		return model.State{}, fmt.Errorf("invalid JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return model.State{}, errors.New("trailing data after the state object")
	}
	if s.Version == 0 {
		return model.State{}, errors.New("no version field")
	}
	if s.NICs == nil {
		s.NICs = []model.NIC{}
	}
	if s.SGs == nil {
		s.SGs = []model.SG{}
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
