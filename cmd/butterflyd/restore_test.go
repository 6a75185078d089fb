package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/state"
)

// nopEngine is a dataplane that accepts everything and does nothing, to
// measure what the daemon's restore costs apart from the engine.
type nopEngine struct{}

func (nopEngine) AddNIC(n model.NIC) (string, error)         { return n.ID, nil }
func (nopEngine) UpdateNIC(model.NIC) error                  { return nil }
func (nopEngine) DeleteNIC(string) error                     { return nil }
func (nopEngine) Stats(string) (model.NICStats, error)       { return model.NICStats{}, nil }
func (nopEngine) Counters(string) (model.NICCounters, error) { return model.NICCounters{}, nil }
func (nopEngine) ExportNIC(string) ([]byte, error)           { return nil, nil }
func (nopEngine) DOT() string                                { return "" }
func (nopEngine) SetSecurityGroups([]model.SG) error         { return nil }

// largeState is nics TAP vNICs in groups groups of rules rules each, as
// scripts/apibench creates them.
func largeState(nics, groups, rules int) model.State {
	st := model.State{Version: model.StateVersion}
	for i := range nics {
		k := i + 1
		st.NICs = append(st.NICs, model.NIC{
			ID:             fmt.Sprintf("bench-%d", i),
			MACText:        fmt.Sprintf("52:54:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff),
			VNI:            uint32(1000 + i%100),
			IPs:            []netip.Addr{netip.AddrFrom4([4]byte{10, byte(k >> 16), byte(k >> 8), byte(k)})},
			SecurityGroups: []string{fmt.Sprintf("sg-%d", i%groups)},
			Type:           model.NICTap,
			Path:           fmt.Sprintf("bench-%d", i),
		})
	}
	for g := range groups {
		sg := model.SG{ID: fmt.Sprintf("sg-%d", g)}
		for r := range rules {
			sg.Rules = append(sg.Rules, model.Rule{Protocol: 6, PortStart: uint32(1000 + r), PortEnd: uint32(1000 + r),
				CIDR: netip.MustParsePrefix("10.0.0.0/8")})
		}
		st.SGs = append(st.SGs, sg)
	}
	return st
}

// BenchmarkRestore measures the daemon's restore of 1,000 vNICs and 100
// groups of 100 rules without the engine (a dataplane that does nothing):
// open the state file, restore the model, save the restored state.
func BenchmarkRestore(b *testing.B) {
	cfg := testConfig(b)
	if err := state.Save(cfg.StateFile, largeState(1000, 100, 100)); err != nil {
		b.Fatal(err)
	}
	d := &daemon{cfg: cfg, log: slog.New(slog.DiscardHandler), pid: 1}
	for b.Loop() {
		store := model.New(nopEngine{}, model.Options{DefaultTracePath: d.defaultTracePath})
		ps, err := d.restore(store)
		if err != nil {
			b.Fatal(err)
		}
		if n := len(store.NICList()); n != 1000 {
			b.Fatalf("%d vNICs restored", n)
		}
		if err := ps.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRestoreSavesOnce: restoring a state whose every vNIC comes back
// changed (trace path defaulted, path given by the dataplane) writes one
// journal record in all, not one per vNIC, and the files then hold the
// restored state.
func TestRestoreSavesOnce(t *testing.T) {
	cfg := testConfig(t)
	cfg.PacketTrace = true
	saved := largeState(50, 5, 3)
	for i := range saved.NICs {
		saved.NICs[i].Path = ""
	}
	if err := state.Save(cfg.StateFile, saved); err != nil {
		t.Fatal(err)
	}
	d := &daemon{cfg: cfg, log: slog.New(slog.DiscardHandler), pid: 1}
	store := model.New(nopEngine{}, model.Options{DefaultTracePath: d.defaultTracePath})
	ps, err := d.restore(store)
	if err != nil {
		t.Fatal(err)
	}
	want := store.State()
	if len(want.NICs) != 50 || want.NICs[0].Path == "" || want.NICs[0].TracePath == "" {
		t.Fatalf("restored %d vNICs, first %+v", len(want.NICs), want.NICs[0])
	}
	if err := ps.Close(); err != nil {
		t.Fatal(err)
	}
	ps, got, err := state.Open(cfg.StateFile, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	if info := ps.Info(); info.Replayed != 1 {
		t.Errorf("restore wrote %d journal records, want 1", info.Replayed)
	}
	for i := range want.NICs {
		want.NICs[i].MAC = [6]byte{} // not persisted
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("files hold\n%+v\nrestored\n%+v", got, want)
	}
}
