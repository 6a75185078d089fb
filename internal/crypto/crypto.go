// Package crypto implements the encrypted envelope of the Butterfly API: the
// bytes carried in Encrypted.aes256cbc_sha512.
//
// The field is a 16-byte IV followed by AES-256 blocks covering
// SHA-512(plaintext) || plaintext || PKCS#7 padding (1 to 16 bytes). For
// byte compatibility with the original implementation the CBC direction is
// inverted: the sender runs the block cipher's *decryption* in CBC chaining
// (Y_i = AES-Decrypt(X_i) XOR X_{i-1}) and the receiver recovers the
// plaintext with CBC *encryption* (X_i = AES-Encrypt(Y_i XOR X_{i-1})),
// where X_{-1} is the IV. Integrity relies on the embedded SHA-512, checked
// in constant time.
package crypto

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
)

// KeySize is the length in bytes of an API key (AES-256).
const KeySize = 32

const (
	ivSize   = aes.BlockSize
	hashSize = sha512.Size
	// minField is the shortest valid field: IV, hash and one padding block.
	minField = ivSize + hashSize + aes.BlockSize
)

var (
	// ErrKeySize is returned when a key is not exactly KeySize bytes long.
	ErrKeySize = errors.New("key must be 32 bytes")
	// ErrMalformed is returned by Open when the field has an impossible
	// length (too short or not a whole number of blocks).
	ErrMalformed = errors.New("malformed encrypted field")
	// ErrRejected is returned by Open when the padding or the SHA-512 of
	// the decrypted plaintext is wrong (wrong key or altered data).
	ErrRejected = errors.New("encrypted field rejected: bad padding or checksum")
)

// LoadKeyFile reads an API key file: the base64 encoding of exactly 32
// bytes. Whitespace (including a trailing newline, or line breaks inside
// the text) is ignored. The error never contains key material.
func LoadKeyFile(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading key file: %w", err)
	}
	key, err := ParseKey(raw)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return key, nil
}

// ParseKey decodes the content of a key file (base64 of 32 bytes, ASCII
// whitespace ignored).
func ParseKey(text []byte) ([]byte, error) {
	compact := bytes.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\n', '\r', '\v', '\f':
			return -1
		}
		return r
	}, text)
	key := make([]byte, base64.StdEncoding.DecodedLen(len(compact)))
	n, err := base64.StdEncoding.Decode(key, compact)
	if err != nil {
		return nil, fmt.Errorf("decoding base64 key: %w", err)
	}
	if n != KeySize {
		return nil, fmt.Errorf("decoded key is %d bytes: %w", n, ErrKeySize)
	}
	return key[:n], nil
}

func newBlock(key []byte) (cipher.Block, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("key is %d bytes: %w", len(key), ErrKeySize)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("creating AES cipher: %w", err)
	}
	return b, nil
}

// Seal encrypts plain with key and a fresh random IV and returns the
// complete aes256cbc_sha512 field (IV included).
func Seal(key, plain []byte) ([]byte, error) {
	var iv [ivSize]byte
	if _, err := rand.Read(iv[:]); err != nil {
		return nil, fmt.Errorf("generating IV: %w", err)
	}
	return sealIV(key, iv[:], plain)
}

// sealIV is Seal with a caller-chosen IV (test vectors).
func sealIV(key, iv, plain []byte) ([]byte, error) {
	block, err := newBlock(key)
	if err != nil {
		return nil, err
	}
	if len(iv) != ivSize {
		return nil, fmt.Errorf("IV is %d bytes, want %d", len(iv), ivSize)
	}
	pad := aes.BlockSize - len(plain)%aes.BlockSize // 1..16
	bodyLen := hashSize + len(plain) + pad
	field := make([]byte, ivSize+bodyLen)
	copy(field, iv)
	body := field[ivSize:]
	sum := sha512.Sum512(plain)
	copy(body, sum[:])
	copy(body[hashSize:], plain)
	for i := hashSize + len(plain); i < bodyLen; i++ {
		body[i] = byte(pad)
	}
	// Inverted direction on purpose: see the package documentation.
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(body, body)
	return field, nil
}

// Open checks and decrypts an aes256cbc_sha512 field produced by Seal (or by
// the original implementation) and returns the plaintext. It fails with
// ErrMalformed for an impossible length and ErrRejected for a bad padding
// or checksum; both are wrapped.
func Open(key, field []byte) ([]byte, error) {
	block, err := newBlock(key)
	if err != nil {
		return nil, err
	}
	if len(field) < minField || len(field)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("field of %d bytes (need >= %d, multiple of %d): %w",
			len(field), minField, aes.BlockSize, ErrMalformed)
	}
	iv := field[:ivSize]
	body := make([]byte, len(field)-ivSize)
	// Inverted direction on purpose: see the package documentation.
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(body, field[ivSize:])

	// Check padding and checksum without data-dependent branches until the
	// final verdict, so timing tells an attacker as little as possible.
	pad := int(body[len(body)-1])
	padOK := subtle.ConstantTimeLessOrEq(1, pad) & subtle.ConstantTimeLessOrEq(pad, aes.BlockSize)
	// Every padding byte must equal the pad length (PKCS#7). Look at the
	// whole last block; only bytes inside the pad count.
	last := body[len(body)-aes.BlockSize:]
	for i := range aes.BlockSize {
		inPad := subtle.ConstantTimeLessOrEq(aes.BlockSize-pad, i)
		same := subtle.ConstantTimeByteEq(last[i], byte(pad))
		padOK &= same | (inPad ^ 1)
	}
	// With a bad pad length, hash a fixed-length prefix instead so the
	// slice bounds stay valid; the verdict is false anyway.
	plainEnd := subtle.ConstantTimeSelect(padOK, len(body)-pad, len(body)-aes.BlockSize)
	plain := body[hashSize:plainEnd]
	sum := sha512.Sum512(plain)
	hashOK := subtle.ConstantTimeCompare(sum[:], body[:hashSize])
	if padOK&hashOK != 1 {
		return nil, ErrRejected
	}
	return plain, nil
}
