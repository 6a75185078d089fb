package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// binaries are the programs under test, built once by TestMain.
type binaries struct {
	daemon string // butterflyd
	cli    string // butterfly
}

// bin is set by TestMain before any test runs and never changed after.
var bin binaries

func TestMain(m *testing.M) {
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
		for _, p := range []struct{ out, pkg string }{
			{filepath.Join(dir, "butterflyd"), "./cmd/butterflyd"},
			{filepath.Join(dir, "butterfly"), "./cmd/butterfly"},
		} {
			if err := goBuild(p.out, p.pkg); err != nil {
				fmt.Fprintln(os.Stderr, "e2e:", err)
				return 1
			}
		}
		bin = binaries{daemon: filepath.Join(dir, "butterflyd"), cli: filepath.Join(dir, "butterfly")}
		return m.Run()
	}()
	os.Exit(code)
}

// goBuild builds pkg (relative to the module root) into out.
func goBuild(out, pkg string) error {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	goBin := "go"
	if _, err := exec.LookPath("go"); err != nil {
		goBin = "/usr/local/go/bin/go" // the documented install location
	}
	cmd := exec.Command(goBin, "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}
