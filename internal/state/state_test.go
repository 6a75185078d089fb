package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
)

// sample is a state of n vNICs (sorted by id, as load returns them) and
// one security group.
func sample(n int) model.State {
	s := model.State{Version: model.StateVersion, NICs: []model.NIC{}, SGs: []model.SG{}}
	for i := range n {
		s.NICs = append(s.NICs, model.NIC{
			ID:             fmt.Sprintf("nic-%04d", i),
			MACText:        fmt.Sprintf("52:54:00:00:00:%02x", i),
			VNI:            uint32(1000 + i),
			IPs:            []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")},
			SecurityGroups: []string{"sg-1"},
			IPAntiSpoof:    true,
			Type:           model.NICTap,
			PacketTrace:    i%2 == 0,
			TracePath:      "/tmp/t.pcap",
			Path:           fmt.Sprintf("nic-%04d", i),
		})
	}
	s.SGs = append(s.SGs, model.SG{
		ID:      "sg-1",
		Members: []netip.Addr{netip.MustParseAddr("10.0.0.2")},
		Rules: []model.Rule{
			{Direction: model.Inbound, Protocol: 6, PortStart: 22, PortEnd: 22, CIDR: netip.MustParsePrefix("0.0.0.0/0")},
			{Direction: model.Inbound, Protocol: -1, SG: "sg-1"},
		},
	})
	return s
}

func TestLoadMissing(t *testing.T) {
	s, err := load(filepath.Join(t.TempDir(), "state.json"))
	if err != nil {
		t.Fatalf("load(missing) error: %v", err)
	}
	if len(s.NICs) != 0 || len(s.SGs) != 0 || s.Version != model.StateVersion {
		t.Errorf("load(missing) = %+v, want empty", s)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 50} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			// A directory that does not exist yet is created.
			path := filepath.Join(t.TempDir(), "sub", "state.json")
			want := sample(n)
			if err := Save(path, want); err != nil {
				t.Fatal(err)
			}
			got, err := load(path)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("mode %v, want 0600", st.Mode().Perm())
			}
			assertOnly(t, filepath.Dir(path), "state.json")
		})
	}
}

// assertOnly checks that dir holds exactly the named files.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if !reflect.DeepEqual(got, names) {
		t.Errorf("directory holds %q, want %q", got, names)
	}
}

func TestSaveReplaces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	for _, n := range []int{3, 1, 0, 2} {
		if err := Save(path, sample(n)); err != nil {
			t.Fatal(err)
		}
		got, err := load(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.NICs) != n {
			t.Errorf("after Save of %d nics load has %d", n, len(got.NICs))
		}
	}
	assertOnly(t, filepath.Dir(path), "state.json")
}

// TestSaveFailureKeepsOld makes the rename fail (the target is a
// non-empty directory) and checks that no temporary file is left.
func TestSaveFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if err := os.MkdirAll(filepath.Join(path, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Save(path, sample(1)); err == nil {
		t.Fatal("Save over a directory succeeded")
	}
	assertOnly(t, dir, "state.json")
}

// TestConcurrentReaders checks that a reader never sees a partial file
// while Save replaces it again and again.
func TestConcurrentReaders(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := Save(path, sample(1)); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	var readErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			data, err := os.ReadFile(path)
			if err == nil {
				_, err = decode(data)
			}
			if err != nil {
				readErr = err
				return
			}
		}
	}()
	for i := range 200 {
		if err := Save(path, sample(1+i%40)); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
	if readErr != nil {
		t.Fatalf("a reader saw a partial state: %v", readErr)
	}
}

func TestCorrupt(t *testing.T) {
	valid, err := json.Marshal(sample(3))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"whitespace", []byte("  \n")},
		{"truncated 1 byte", valid[:1]},
		{"truncated half", valid[:len(valid)/2]},
		{"truncated last byte", valid[:len(valid)-1]},
		{"garbage", []byte("\x00\x01binary")},
		{"wrong type", []byte(`{"version":1,"nics":"x"}`)},
		{"trailing data", append(append([]byte{}, valid...), []byte(`{"version":1}`)...)},
		{"no version", []byte(`{"nics":[],"sgs":[]}`)},
		{"array", []byte(`[]`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "state.json")
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := load(path)
			var ce *CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("load error = %v, want *CorruptError", err)
			}
			if len(s.NICs) != 0 || len(s.SGs) != 0 {
				t.Errorf("corrupt load returned %+v, want empty", s)
			}
			if !strings.HasPrefix(ce.MovedTo, path+".corrupt-") {
				t.Fatalf("MovedTo = %q", ce.MovedTo)
			}
			if !strings.Contains(err.Error(), ce.MovedTo) {
				t.Errorf("error %q does not say where the file went", err)
			}
			moved, err := os.ReadFile(ce.MovedTo)
			if err != nil {
				t.Fatalf("moved file: %v", err)
			}
			if string(moved) != string(tt.data) {
				t.Errorf("moved file content changed")
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("corrupt file still at %s: %v", path, err)
			}
			// The next start finds no file and an empty state; a second
			// corrupt file does not overwrite the first one.
			if _, err := load(path); err != nil {
				t.Errorf("load after move: %v", err)
			}
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := load(path); !errors.As(err, &ce) {
				t.Fatalf("second load error = %v", err)
			}
			if got, _ := filepath.Glob(path + ".corrupt-*"); len(got) != 2 {
				t.Errorf("corrupt copies %q, want 2", got)
			}
		})
	}
}

func TestNewerVersionLeftAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	data := fmt.Sprintf(`{"version":%d,"nics":[],"sgs":[]}`, snapshotVersion+1)
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := load(path)
	var ce *CorruptError
	if err == nil || errors.As(err, &ce) {
		t.Fatalf("load error = %v, want a non-corrupt error", err)
	}
	if b, _ := os.ReadFile(path); string(b) != data {
		t.Errorf("file changed")
	}
}

func TestStaleTempsRemoved(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if err := Save(path, sample(2)); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, ".state.json.tmp-123")
	other := filepath.Join(dir, "other.json")
	for _, p := range []string{stale, other} {
		if err := os.WriteFile(p, []byte("{"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, err := load(path)
	if err != nil || len(s.NICs) != 2 {
		t.Fatalf("load = %d nics, %v", len(s.NICs), err)
	}
	assertOnly(t, dir, "other.json", "state.json")
}

func TestUnreadable(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	// A directory in place of the file: reading fails, not a parse error.
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := load(path)
	var ce *CorruptError
	if err == nil || errors.As(err, &ce) {
		t.Fatalf("load error = %v, want a plain I/O error", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("load moved an unreadable path: %v", err)
	}
}

func TestLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "state.json")
	unlock, err := Lock(path)
	if err != nil {
		t.Fatal(err)
	}
	// flock locks belong to the open file description: a second open in
	// this process conflicts just as another process would.
	if _, err := Lock(path); err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("second Lock error = %v, want in use", err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	unlock2, err := Lock(path)
	if err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	if err := unlock2(); err != nil {
		t.Fatal(err)
	}
}
