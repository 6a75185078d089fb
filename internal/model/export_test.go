package model_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/model/modeltest"
)

// TestNICImportIsNotKept: NIC.Import reaches the dataplane's AddNIC and
// nowhere else: not the stored vNIC, its details, the state or a later
// update.
func TestNICImportIsNotKept(t *testing.T) {
	s, dp := newStore(t)
	n := baseNIC()
	n.Import = []byte("exported state")
	if _, err := s.AddNIC(n); err != nil {
		t.Fatal(err)
	}
	calls := dp.Calls()
	if last := calls[len(calls)-1]; last.Op != modeltest.OpAddNIC || !bytes.Equal(last.NIC.Import, n.Import) {
		t.Fatalf("dataplane call %+v, want AddNIC with the import", last)
	}
	d, err := s.NICDetails(n.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d[0].Import != nil {
		t.Errorf("details report the import: %q", d[0].Import)
	}
	st := s.State()
	if st.NICs[0].Import != nil {
		t.Errorf("state holds the import")
	}
	js, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(js, []byte("exported")) || bytes.Contains(js, []byte("ZXhwb3J0")) {
		t.Errorf("persisted state holds the import: %s", js)
	}
	on := true
	if err := s.UpdateNIC(model.NICUpdate{ID: n.ID, IPAntiSpoof: &on}); err != nil {
		t.Fatal(err)
	}
	calls = dp.Calls()
	if last := calls[len(calls)-1]; last.Op != modeltest.OpUpdateNIC || last.NIC.Import != nil {
		t.Errorf("update passed the import again: %+v", last)
	}
}

func TestNICExport(t *testing.T) {
	s, dp := newStore(t)
	n := baseNIC()
	if _, err := s.AddNIC(n); err != nil {
		t.Fatal(err)
	}
	dp.SetExport(n.ID, []byte{1, 2, 3})
	got, err := s.NICExport(n.ID)
	if err != nil || !bytes.Equal(got, []byte{1, 2, 3}) {
		t.Fatalf("NICExport = %v, %v", got, err)
	}
	_, err = s.NICExport("nope")
	wantErr(t, err, model.CodeNotFound, "NIC does not exist with id nope")
	dp.FailOnce(modeltest.OpExportNIC, n.ID, errors.New("worker stuck"))
	_, err = s.NICExport(n.ID)
	wantErr(t, err, model.CodeDataplane, "NIC export failed")
}
