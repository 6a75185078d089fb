package e2e

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// bin holds the programs under test; TestMain sets it before any test runs
// and never changes it after.
var bin labtest.Binaries

// defaultParallel is how many tests that call t.Parallel run at once
// unless -parallel says otherwise: they mostly wait (pings, timeouts,
// daemons starting), so more than GOMAXPROCS, the go test default.
const defaultParallel = "4"

func TestMain(m *testing.M) {
	flag.Parse()
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		if err := flag.Set("test.parallel", defaultParallel); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			os.Exit(1)
		}
	}
	if os.Geteuid() != 0 {
		// Every test calls newLab, which skips without root.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "butterfly-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: temp dir:", err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		b, err := labtest.Build(moduleRoot(), dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		bin = b
		return m.Run()
	}()
	os.Exit(code)
}

// moduleRoot is the repository's root directory (this file's ../..).
func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}
