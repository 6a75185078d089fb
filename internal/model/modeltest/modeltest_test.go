package modeltest

import (
	"errors"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
)

func TestDataplane(t *testing.T) {
	d := NewDataplane()
	d.SetSocketDir("/run/bf")
	tests := []struct {
		n    model.NIC
		path string
	}{
		{model.NIC{ID: "v", Type: model.NICVhostUser}, "/run/bf/qemu-vhost-v"},
		{model.NIC{ID: "t", Type: model.NICTap}, "t"},
		{model.NIC{ID: "b", Type: model.NICBench}, ""},
	}
	for _, tc := range tests {
		p, err := d.AddNIC(tc.n)
		if err != nil || p != tc.path {
			t.Errorf("AddNIC(%s) = %q, %v; want %q", tc.n.ID, p, err, tc.path)
		}
	}
	if _, err := d.AddNIC(tests[0].n); err == nil {
		t.Error("adding an existing id succeeded")
	}
	if err := d.UpdateNIC(model.NIC{ID: "x"}); err == nil {
		t.Error("updating an unknown id succeeded")
	}
	d.SetStats("v", model.NICStats{In: 1, Out: 2})
	if s, err := d.Stats("v"); err != nil || s.In != 1 || s.Out != 2 {
		t.Errorf("Stats = %+v, %v", s, err)
	}
	boom := errors.New("boom")
	d.FailOnce(OpDeleteNIC, "v", boom)
	if err := d.DeleteNIC("v"); !errors.Is(err, boom) {
		t.Errorf("first delete: %v", err)
	}
	if err := d.DeleteNIC("v"); err != nil {
		t.Errorf("second delete: %v", err)
	}
	d.FailOn(OpStats, "", boom)
	for range 2 {
		if _, err := d.Stats("t"); !errors.Is(err, boom) {
			t.Errorf("Stats: %v", err)
		}
	}
	d.FailOn(OpStats, "", nil)
	if _, err := d.Stats("t"); err != nil {
		t.Errorf("Stats after clearing: %v", err)
	}
	if got := len(d.Calls()); got != 11 {
		t.Errorf("%d calls recorded, want 11", got)
	}
	if ids := d.NICIDs(); len(ids) != 2 || ids[0] != "b" || ids[1] != "t" {
		t.Errorf("NICIDs = %q", ids)
	}
}
