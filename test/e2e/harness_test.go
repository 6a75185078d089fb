package e2e

import (
	"os"
	"testing"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// newLab skips the test unless running as root and returns a fresh lab
// (package internal/labtest: hosts, VMs, daemons, links, cleanup) whose
// namespaces are named bfe<pid>x<n>-*.
func newLab(t *testing.T) *labtest.Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("end-to-end tests need root (network namespaces, TAP devices)")
	}
	if bin.Daemon == "" {
		t.Fatal("binaries were not built by TestMain")
	}
	return labtest.New(t, bin, "bfe")
}
