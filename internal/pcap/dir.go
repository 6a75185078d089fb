package pcap

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Dir is the directory that trace files are confined to, so that an API
// client cannot make the daemon write anywhere else. Its zero value
// confines nothing: names are used as given.
type Dir struct {
	path string
}

// NewDir returns the Dir at path, which must be absolute.
func NewDir(path string) (Dir, error) {
	if !filepath.IsAbs(path) {
		return Dir{}, fmt.Errorf("pcap: trace directory %q is not an absolute path", path)
	}
	return Dir{path: filepath.Clean(path)}, nil
}

// Path returns the directory's path ("" for the zero Dir).
func (d Dir) Path() string { return d.path }

// FileName is the name of a default trace file, as the original named
// them in /tmp: butterfly-<pid>-<id>.pcap (id "main" for the underlay).
func FileName(pid int, id string) string {
	return "butterfly-" + strconv.Itoa(pid) + "-" + id + ".pcap"
}

// Resolve returns the file a trace name designates: a relative name is
// taken in the directory, an absolute one must be in it. Only files
// directly in the directory are accepted: a name with ".." or a
// subdirectory is refused, as is an empty one.
func (d Dir) Resolve(name string) (string, error) {
	if d.path == "" {
		return name, nil
	}
	if name == "" {
		return "", errors.New("empty trace file name")
	}
	refuse := func(why string) (string, error) {
		return "", fmt.Errorf("trace file %q refused: %s; trace files are confined to %s (a name, or a path directly in it)", name, why, d.path)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return refuse(`".." is not allowed`)
		}
	}
	p := name
	if !filepath.IsAbs(p) {
		p = filepath.Join(d.path, p)
	}
	p = filepath.Clean(p)
	if filepath.Dir(p) != d.path || p == d.path {
		return refuse("not a file directly in the trace directory")
	}
	return p, nil
}

// Prepare creates the directory (mode 0700, parents 0755) when it is
// missing, and checks that it is a directory, not a symbolic link, owned
// by this process's user and not writable by anyone else. The zero Dir
// needs nothing.
func (d Dir) Prepare() error {
	if d.path == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(d.path), 0o755); err != nil {
		return fmt.Errorf("pcap: trace directory: %w", err)
	}
	if err := os.Mkdir(d.path, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("pcap: trace directory: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(d.path, &st); err != nil {
		return fmt.Errorf("pcap: trace directory %s: %w", d.path, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("pcap: trace directory %s is not a directory (a symbolic link is not accepted)", d.path)
	case int(st.Uid) != os.Geteuid():
		return fmt.Errorf("pcap: trace directory %s is owned by uid %d, not by this process's user (%d)", d.path, st.Uid, os.Geteuid())
	case st.Mode&0o022 != 0:
		return fmt.Errorf("pcap: trace directory %s is writable by group or others (mode %#o): other users could plant files or links in it", d.path, st.Mode&0o7777)
	}
	return nil
}
