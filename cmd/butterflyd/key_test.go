package main

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/butterfly-go/butterfly/internal/crypto"
)

// TestAutoKey: a missing key file is created (0600, its directory 0700) in
// the original's format; later calls read it; daemons creating it at the
// same time all end up with the one key in the file.
func TestAutoKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "etc", "butterfly", "api.key")
	key, created, err := autoKey(path)
	if err != nil || !created || len(key) != 32 {
		t.Fatalf("autoKey = %d bytes, created %t, %v", len(key), created, err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v (mode %v), want 0600", err, st)
	}
	if st, err := os.Stat(filepath.Dir(path)); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("key directory: %v (mode %v), want 0700", err, st)
	}
	if loaded, err := crypto.LoadKeyFile(path); err != nil || !bytes.Equal(loaded, key) {
		t.Errorf("the file holds another key: %v", err)
	}
	again, created, err := autoKey(path)
	if err != nil || created || !bytes.Equal(again, key) {
		t.Errorf("second autoKey: created %t, same key %t, %v", created, bytes.Equal(again, key), err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("the key directory holds %d files, want the key only", len(ents))
	}

	race := filepath.Join(t.TempDir(), "api.key")
	const n = 8
	keys := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, _, err := autoKey(race)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		}()
	}
	wg.Wait()
	file, err := crypto.LoadKeyFile(race)
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		if !bytes.Equal(k, file) {
			t.Errorf("daemon %d uses another key than the file's", i)
		}
	}
}

// TestAutoKeyUnreadable: a key file that is not a key stops the daemon
// rather than being replaced.
func TestAutoKeyUnreadable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.key")
	if err := os.WriteFile(path, []byte("not base64!\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := autoKey(path); err == nil {
		t.Fatal("autoKey accepted a corrupt key file")
	}
	if b, _ := os.ReadFile(path); string(b) != "not base64!\n" {
		t.Errorf("the corrupt key file was changed: %q", b)
	}
}
