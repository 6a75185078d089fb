package cxxhash

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Vectors printed by a program built with g++ 12 (libstdc++) on x86_64:
// printf("%016zx", std::hash<std::string>{}(s)).
func TestStringVectors(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
	}{
		{"", 0x553e93901e462a6e},
		{"a", 0x454ddee488c1ed6b},
		{"ab", 0x4c4da6cd289c737b},
		{"abcdefg", 0xdeee6830a3af82af},  // tail only
		{"abcdefgh", 0x783db3e38db898bb}, // one full block
		{"abcdefghi", 0xb4ec9257851c8aaf},
		{"0-6-22-22-10.0.0.0/24-", 0x74386f27c2f617db},
		{"0-17-8000-8000-/0-sg-1", 0x06cb923411d56077},
	}
	for _, tc := range tests {
		if got := String(tc.in); got != tc.want {
			t.Errorf("String(%q) = %016x, want %016x", tc.in, got, tc.want)
		}
	}
}

// TestAgainstLibstdcxx compiles a small C++ program and compares its
// std::hash<std::string> with String for inputs of every length 0..70 and
// every byte value, including bytes >= 0x80 (signed char in the original).
func TestAgainstLibstdcxx(t *testing.T) {
	gxx, err := exec.LookPath("g++")
	if err != nil {
		t.Skip("g++ not installed")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "h.cc")
	prog := `#include <cstdio>
#include <functional>
#include <iostream>
#include <string>
int main() {
  std::string hex;
  while (std::cin >> hex) {
    std::string s;
    if (hex != "-")
      for (size_t i = 0; i + 1 < hex.size(); i += 2)
        s.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    std::printf("%016zx\n", std::hash<std::string>{}(s));
  }
}
`
	if err := os.WriteFile(src, []byte(prog), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "h")
	if out, err := exec.Command(gxx, "-O1", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("g++: %v\n%s", err, out)
	}

	rng := rand.New(rand.NewPCG(1, 2))
	var inputs []string
	for n := 0; n <= 70; n++ {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		inputs = append(inputs, string(b))
	}
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	inputs = append(inputs, string(all), "1-1-0-0-::/0-", "0-6-22-22-2001:db8::1/64-")

	var stdin strings.Builder
	for _, s := range inputs {
		if s == "" {
			stdin.WriteString("-\n")
			continue
		}
		fmt.Fprintf(&stdin, "%x\n", s)
	}
	cmd := exec.Command(bin)
	cmd.Stdin = strings.NewReader(stdin.String())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	i := 0
	for sc.Scan() {
		if i >= len(inputs) {
			t.Fatalf("too many output lines")
		}
		want, err := strconv.ParseUint(sc.Text(), 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		if got := String(inputs[i]); got != want {
			t.Errorf("len %d %x: String = %016x, libstdc++ = %016x", len(inputs[i]), inputs[i], got, want)
		}
		i++
	}
	if i != len(inputs) {
		t.Fatalf("got %d lines, want %d", i, len(inputs))
	}
}

func BenchmarkString(b *testing.B) {
	s := "0-6-22-22-10.0.0.0/24-"
	for b.Loop() {
		String(s)
	}
}
