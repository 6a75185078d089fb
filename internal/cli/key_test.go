package cli

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDefaultKeyFile: without -k the CLI encrypts with the default key
// file when it can read it; a daemon with a key refuses a client that
// cannot, with a hint; -k none sends in clear and -k FILE overrides the
// default.
func TestDefaultKeyFile(t *testing.T) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "api.key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other.key")
	if err := os.WriteFile(other, []byte(base64.StdEncoding.EncodeToString(make([]byte, 32))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keyed := startServer(t, serverOpts{key: key})
	open := startServer(t, serverOpts{})
	tests := []struct {
		name       string
		ts         *testServer
		defaultKey string
		flags      []string
		wantCode   int
		wantErr    string
	}{
		{"default key file used", keyed, keyFile, nil, 0, ""},
		{"no default key file", keyed, filepath.Join(dir, "missing"), nil, 1, "requires its API key"},
		{"-k none", keyed, keyFile, []string{"-k", "none"}, 1, "requires its API key"},
		{"-k overrides the default", keyed, keyFile, []string{"-k", other}, 1, "encrypted message error: REJECTED"},
		{"default key on a daemon without one", open, keyFile, nil, 1, "or -k none if it has none"},
		{"-k none on a daemon without a key", open, keyFile, []string{"-k", "none"}, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"sg", "list", "-e", tc.ts.endpoint, "-t", "5000"}, tc.flags...)
			var out, errb bytes.Buffer
			code := run(args, &out, &errb, tc.defaultKey)
			if code != tc.wantCode || !strings.Contains(errb.String(), tc.wantErr) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errb.String(), tc.wantCode, tc.wantErr)
			}
		})
	}
}
