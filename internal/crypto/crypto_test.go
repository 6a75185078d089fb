package crypto

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type vector struct {
	key, iv, plain, field []byte
}

// loadVectors parses testdata/vectors.txt, a copy of the vectors produced
// by the original implementation (shared/reference/crypto-vectors.txt).
func loadVectors(t *testing.T) (vs []vector, keyFile string) {
	t.Helper()
	f, err := os.Open("testdata/vectors.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "# key file content") {
			keyFile = strings.TrimSpace(line[strings.LastIndex(line, ":")+1:])
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		var v vector
		for _, kv := range strings.Fields(line) {
			name, val, ok := strings.Cut(kv, "=")
			if !ok {
				t.Fatalf("bad vector token %q", kv)
			}
			b, err := hex.DecodeString(val)
			if err != nil {
				t.Fatalf("bad hex in %q: %v", kv, err)
			}
			switch name {
			case "key":
				v.key = b
			case "iv":
				v.iv = b
			case "plain":
				v.plain = b
			case "field":
				v.field = b
			default:
				t.Fatalf("unknown vector field %q", name)
			}
		}
		vs = append(vs, v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(vs) == 0 || keyFile == "" {
		t.Fatal("no vectors or no key file line found")
	}
	return vs, keyFile
}

func TestVectors(t *testing.T) {
	vs, _ := loadVectors(t)
	for i, v := range vs {
		got, err := sealIV(v.key, v.iv, v.plain)
		if err != nil {
			t.Fatalf("vector %d: seal: %v", i, err)
		}
		if !bytes.Equal(got, v.field) {
			t.Errorf("vector %d: seal\n got %x\nwant %x", i, got, v.field)
		}
		plain, err := Open(v.key, v.field)
		if err != nil {
			t.Fatalf("vector %d: open: %v", i, err)
		}
		if !bytes.Equal(plain, v.plain) {
			t.Errorf("vector %d: open got %x, want %x", i, plain, v.plain)
		}
	}
}

// TestVectorsAreInvertedCBC documents the quirk: standard CBC decryption of
// an original field does not give back the SHA-512 prefix.
func TestVectorsAreInvertedCBC(t *testing.T) {
	vs, _ := loadVectors(t)
	v := vs[0]
	block, err := aes.NewCipher(v.key)
	if err != nil {
		t.Fatal(err)
	}
	std := make([]byte, len(v.field)-16)
	cipher.NewCBCDecrypter(block, v.iv).CryptBlocks(std, v.field[16:])
	fixed, err := Open(v.key, v.field)
	if err != nil {
		t.Fatal(err)
	}
	inv := make([]byte, len(v.field)-16)
	cipher.NewCBCEncrypter(block, v.iv).CryptBlocks(inv, v.field[16:])
	if bytes.Equal(std[:64], inv[:64]) {
		t.Fatal("standard CBC decryption recovered the hash: vectors are not inverted CBC")
	}
	if len(fixed) != len(v.plain) {
		t.Fatalf("open: %d bytes, want %d", len(fixed), len(v.plain))
	}
}

func TestLoadKeyFile(t *testing.T) {
	_, keyText := loadVectors(t)
	want, _ := hex.DecodeString("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	dir := t.TempDir()
	tests := []struct {
		name    string
		content string
		wantErr error // nil = success
		anyErr  bool
	}{
		{name: "no newline", content: keyText},
		{name: "trailing newline", content: keyText + "\n"},
		{name: "crlf and spaces", content: "  " + keyText[:20] + "\r\n" + keyText[20:] + "\r\n"},
		{name: "16 bytes", content: base64.StdEncoding.EncodeToString(want[:16]), wantErr: ErrKeySize},
		{name: "33 bytes", content: base64.StdEncoding.EncodeToString(append(want, 1)), wantErr: ErrKeySize},
		{name: "empty", content: "", wantErr: ErrKeySize},
		{name: "not base64", content: "!!!!" + keyText[4:], anyErr: true},
		{name: "truncated base64", content: keyText[:len(keyText)-2], anyErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_"))
			if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := LoadKeyFile(p)
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
			case tt.anyErr:
				if err == nil {
					t.Fatalf("got key %x, want an error", got)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("key %x, want %x", got, want)
				}
			}
		})
	}
	if _, err := LoadKeyFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: err = %v, want ErrNotExist", err)
	}
}

func testKey(b byte) []byte {
	k := make([]byte, KeySize)
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

func TestRoundTrip(t *testing.T) {
	key := testKey(7)
	for _, n := range []int{0, 1, 15, 16, 17, 31, 32, 33, 40, 1000, 1 << 20} {
		plain := bytes.Repeat([]byte{0xa5, 0x3c, 0x00}, n/3+1)[:n]
		field, err := Seal(key, plain)
		if err != nil {
			t.Fatalf("len %d: seal: %v", n, err)
		}
		wantLen := 16 + 64 + (n/16+1)*16
		if len(field) != wantLen {
			t.Errorf("len %d: field %d bytes, want %d", n, len(field), wantLen)
		}
		got, err := Open(key, field)
		if err != nil {
			t.Fatalf("len %d: open: %v", n, err)
		}
		if !bytes.Equal(got, plain) {
			t.Fatalf("len %d: round trip mismatch", n)
		}
	}
	// Two seals of the same plaintext use different IVs.
	a, _ := Seal(key, []byte("same"))
	b, _ := Seal(key, []byte("same"))
	if bytes.Equal(a[:16], b[:16]) || bytes.Equal(a, b) {
		t.Fatal("two seals share an IV")
	}
}

// reseal builds a field whose decrypted body is exactly body (hash and
// padding chosen by the test), to exercise the padding checks.
func reseal(t *testing.T, key, body []byte) []byte {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	iv := bytes.Repeat([]byte{9}, 16)
	out := append(append([]byte(nil), iv...), body...)
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(out[16:], out[16:])
	return out
}

func TestOpenRejects(t *testing.T) {
	key := testKey(1)
	plain := []byte("0123456789abcdef0123456789") // 26 bytes: pad 6
	good, err := Seal(key, plain)
	if err != nil {
		t.Fatal(err)
	}
	// Decrypted body of the good field, to forge paddings.
	block, _ := aes.NewCipher(key)
	body := make([]byte, len(good)-16)
	cipher.NewCBCEncrypter(block, good[:16]).CryptBlocks(body, good[16:])

	withLast := func(f func(b []byte)) []byte {
		b := append([]byte(nil), body...)
		f(b)
		return reseal(t, key, b)
	}
	flip := func(i int) []byte {
		b := append([]byte(nil), good...)
		b[i] ^= 0x01
		return b
	}
	tests := []struct {
		name  string
		key   []byte
		field []byte
		want  error
	}{
		{"empty", key, nil, ErrMalformed},
		{"one block short", key, good[:len(good)-16], ErrRejected}, // 96 bytes: valid length, wrong content
		{"below minimum", key, good[:80], ErrMalformed},
		{"not block multiple", key, good[:len(good)-1], ErrMalformed},
		{"extra byte", key, append(append([]byte(nil), good...), 0), ErrMalformed},
		{"flipped IV bit", key, flip(0), ErrRejected},
		{"flipped hash bit", key, flip(20), ErrRejected},
		{"flipped last bit", key, flip(len(good) - 1), ErrRejected},
		{"wrong key", testKey(2), good, ErrRejected},
		{"pad 0", key, withLast(func(b []byte) { b[len(b)-1] = 0 }), ErrRejected},
		{"pad 17", key, withLast(func(b []byte) { b[len(b)-1] = 17 }), ErrRejected},
		{"pad 255", key, withLast(func(b []byte) { b[len(b)-1] = 255 }), ErrRejected},
		{"pad bytes differ", key, withLast(func(b []byte) { b[len(b)-3] = 5 }), ErrRejected},
		{"short key", key[:16], good, ErrKeySize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Open(tt.key, tt.field)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Open = %x, %v; want error %v", got, err, tt.want)
			}
		})
	}
	// The forged body with its original padding still opens: the forging
	// helper itself is sound.
	if got, err := Open(key, reseal(t, key, body)); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("reseal of the genuine body: %x, %v", got, err)
	}
}

func TestSealBadKey(t *testing.T) {
	if _, err := Seal(make([]byte, 31), []byte("x")); !errors.Is(err, ErrKeySize) {
		t.Fatalf("err = %v, want ErrKeySize", err)
	}
}

func BenchmarkOpen1K(b *testing.B) {
	key := testKey(3)
	field, _ := Seal(key, make([]byte, 1024))
	b.SetBytes(1024)
	for b.Loop() {
		if _, err := Open(key, field); err != nil {
			b.Fatal(err)
		}
	}
}
