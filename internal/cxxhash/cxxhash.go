// Package cxxhash reproduces libstdc++'s std::hash<std::string> on 64-bit
// targets (std::_Hash_bytes with seed 0xc70f6907), so that values computed by
// the original C++ Butterfly (rule identities, the CLI's rule hashes) can be
// computed identically in Go.
package cxxhash

import "encoding/binary"

// Seed is the seed libstdc++ passes to _Hash_bytes for std::hash<std::string>.
const Seed uint64 = 0xc70f6907

// mul is the 64-bit multiplier of the MurmurHash64A family.
const mul uint64 = 0xc6a4a7935bd1e995

// String returns std::hash<std::string>{}(s) as computed by libstdc++ on a
// little-endian 64-bit target.
func String(s string) uint64 {
	return Bytes([]byte(s), Seed)
}

// Bytes returns std::_Hash_bytes(b, len(b), seed) as computed by libstdc++ on
// a little-endian 64-bit target.
//
// The algorithm is MurmurHash64A with two differences in libstdc++: the
// trailing 1-7 bytes are folded in as one little-endian integer followed by
// a full multiplication, and the final mixing is shift_mix(h)*mul then
// shift_mix again.
func Bytes(b []byte, seed uint64) uint64 {
	h := seed ^ (uint64(len(b)) * mul)
	for len(b) >= 8 {
		d := shiftMix(binary.LittleEndian.Uint64(b)*mul) * mul
		h ^= d
		h *= mul
		b = b[8:]
	}
	if len(b) > 0 {
		var d uint64
		for i := len(b) - 1; i >= 0; i-- {
			d = d<<8 | uint64(b[i])
		}
		h ^= d
		h *= mul
	}
	h = shiftMix(h) * mul
	return shiftMix(h)
}

func shiftMix(v uint64) uint64 {
	return v ^ (v >> 47)
}
