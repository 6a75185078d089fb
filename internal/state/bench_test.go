package state

import (
	"path/filepath"
	"testing"
)

// BenchmarkSave1000 measures one persist of a state with 1000 vNICs (the
// daemon saves after every change).
func BenchmarkSave1000(b *testing.B) {
	path := filepath.Join(b.TempDir(), "state.json")
	s := sample(1000)
	for b.Loop() {
		if err := Save(path, s); err != nil {
			b.Fatal(err)
		}
	}
}
