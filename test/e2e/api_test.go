package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// writeKey writes a fresh API key file (base64 of 32 random bytes).
func writeKey(t *testing.T, dir, name string) string {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestEncryptedAPI follows the original's test 46 across real processes: a
// daemon started with a key serves the CLI holding that key, refuses clear
// requests and requests sealed with another key, and keeps serving.
func TestEncryptedAPI(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	h := l.SingleHost(labtest.IPv4)
	key := writeKey(t, l.Dir, "api.key")
	other := writeKey(t, l.Dir, "other.key")
	h.CLIFlags = []string{"-k", key}
	h.Start(labtest.DaemonOpts{Extra: []string{"--key", key}})
	h.OpenSG("sg-open")
	for _, tc := range []struct {
		name  string
		flags []string
	}{
		{"clear", nil},
		{"wrong-key", []string{"-k", other}},
	} {
		h.CLIFlags = tc.flags
		out, err := h.CLI("sg", "list")
		if err == nil {
			t.Errorf("%s request accepted by a daemon with a key: %s", tc.name, out)
			continue
		}
		if !strings.Contains(err.Error(), "REJECTED") {
			t.Errorf("%s request failed, but not as rejected: %v", tc.name, err)
		}
	}
	h.CLIFlags = []string{"-k", key}
	if out := h.MustCLI("sg", "list"); strings.TrimSpace(out) != "sg-open" {
		t.Errorf("sg list with the right key after refused requests = %q, want sg-open", out)
	}
}
