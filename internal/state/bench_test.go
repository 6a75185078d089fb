package state

import (
	"path/filepath"
	"testing"
)

// BenchmarkSave1000 measures one full rewrite (Save) of a state with 1000
// vNICs.
func BenchmarkSave1000(b *testing.B) {
	path := filepath.Join(b.TempDir(), "state.json")
	s := sample(1000)
	for b.Loop() {
		if err := Save(path, s); err != nil {
			b.Fatal(err)
		}
	}
}

// The BenchmarkSave pair persists 1,000 vNICs and 100 security groups of
// 100 rules, one rule added per save: as butterflyd did before the
// journal (full rewrite) and as it does now (Store).

func BenchmarkSaveFullRewrite(b *testing.B) {
	path := filepath.Join(b.TempDir(), "state.json")
	st := big(1000, 100, 100)
	i := 0
	for b.Loop() {
		st = withRule(st, i%100, uint32(1000+i))
		i++
		if err := Save(path, st); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSave(b *testing.B) {
	path := filepath.Join(b.TempDir(), "state.json")
	s, _, err := Open(path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	st := big(1000, 100, 100)
	if err := s.Save(st); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		st = withRule(st, i%100, uint32(1000+i))
		i++
		if err := s.Save(st); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDiff measures the comparison Save makes before it writes: 1,000
// vNICs and 100 security groups of 100 rules, one rule added.
func BenchmarkDiff(b *testing.B) {
	path := filepath.Join(b.TempDir(), "state.json")
	s, _, err := Open(path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	st := big(1000, 100, 100)
	if err := s.Save(st); err != nil {
		b.Fatal(err)
	}
	st = withRule(st, 50, 5000)
	b.ReportAllocs()
	for b.Loop() {
		if r := s.diff(st); len(r.SGs) != 1 || len(r.NICs) != 0 {
			b.Fatalf("diff: %d sgs, %d nics", len(r.SGs), len(r.NICs))
		}
	}
}
