// Package version holds the build identity of the Butterfly binaries.
//
// Commit and Date are filled in at link time, for example:
//
//	go build -ldflags "-X github.com/butterfly-go/butterfly/internal/version.Commit=$(git rev-parse HEAD) \
//	  -X github.com/butterfly-go/butterfly/internal/version.Date=$(date -u +%F)" ./cmd/...
package version

import (
	"fmt"

	"github.com/butterfly-go/butterfly/api/protocol"
)

// Version is the release of this implementation. The "-go" suffix tells it
// apart from the C++ original (0.13).
const Version = "0.13.0-go"

// Commit is the VCS revision the binary was built from; set with -ldflags -X.
// It is a variable only because the linker can set nothing else.
var Commit = "unknown"

// Date is the build date; set with -ldflags -X.
var Date = "unknown"

// String is the one-line version report printed by `butterflyd -V` and the
// CLI, in the original's format.
func String() string {
	return fmt.Sprintf("butterfly version: %q proto revision: %q commit: %q date: %q",
		Version, fmt.Sprint(protocol.Revision), Commit, Date)
}
