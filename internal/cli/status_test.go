package cli

import (
	"strings"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
)

// TestStatusNICIssues: status prints a line per vNIC the daemon reports
// as unable to carry traffic, before the graph; none when there is none.
func TestStatusNICIssues(t *testing.T) {
	ts := startServer(t, serverOpts{})
	if got := ts.mustRun(t, "status"); strings.Contains(got, "nic ") {
		t.Errorf("status without issues:\n%s", got)
	}
	ts.dp.SetIssues([]model.NICIssue{{ID: "pod-3", Reason: "network namespace /run/netns/x is gone"}})
	got := ts.mustRun(t, "status")
	line := "nic pod-3: network namespace /run/netns/x is gone\n"
	if i, g := strings.Index(got, line), strings.Index(got, "dot graph:"); i < 0 || i > g {
		t.Errorf("status with an issue: want %q before the graph:\n%s", line, got)
	}
}
