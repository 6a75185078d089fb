package dataplane

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
)

// explainStep explains frame sent by vNIC from, then runs step (which
// sends it) and checks that the explanation's verdict is what happened:
// the drop reasons it names (of the frame, or of the flooded copies not
// delivered) must be exactly those whose counts grew. It returns the
// explanation.
func explainStep(t *testing.T, h *harness, from string, frame []byte, step func()) model.Explanation {
	t.Helper()
	drops := func() map[string]uint64 {
		all := map[string]uint64{}
		h.e.mu.Lock()
		ids := slices.Collect(maps.Keys(h.e.nics))
		h.e.mu.Unlock()
		for _, id := range ids {
			c, err := h.e.Counters(id)
			if err != nil {
				t.Fatal(err)
			}
			for r, n := range c.Drops {
				all[r] += n
			}
		}
		return all
	}
	before := drops()
	x, err := h.e.Explain(from, frame)
	if err != nil {
		t.Fatalf("Explain: %v", err)
	}
	if !maps.Equal(before, drops()) {
		t.Fatal("Explain changed a drop counter")
	}
	step()
	after := drops()
	var grew []string
	for r, n := range after {
		// firewall_evicted counts flows removed, not packets.
		if n > before[r] && r != "firewall_evicted" {
			grew = append(grew, r)
		}
	}
	slices.Sort(grew)
	trace := strings.Join(append(x.Steps, "verdict: "+x.Verdict), "\n")
	var lost []string
	switch {
	case strings.HasPrefix(x.Verdict, "deliver "):
		if _, drops, ok := strings.Cut(x.Verdict, "; drop "); ok {
			for _, d := range strings.Split(drops, ", ") {
				_, r, _ := strings.Cut(d, ": ")
				lost = append(lost, r)
			}
		}
	case strings.HasPrefix(x.Verdict, "drop "):
		lost = []string{strings.TrimPrefix(x.Verdict, "drop ")}
	default:
		t.Fatalf("explain's verdict %q is neither deliver nor drop", x.Verdict)
	}
	slices.Sort(lost)
	if lost = slices.Compact(lost); !slices.Equal(lost, grew) {
		t.Fatalf("explain said %q, but the drops that grew are %v\n%s", x.Verdict, grew, trace)
	}
	return x
}

// explainDelivers reports whether x's verdict delivers to dest ("vNIC b").
func explainDelivers(x model.Explanation, dest string) bool {
	to, ok := strings.CutPrefix(x.Verdict, "deliver ")
	if !ok {
		return false
	}
	to, _, _ = strings.Cut(to, "; drop ")
	return slices.Contains(strings.Split(to, ", "), dest)
}
