package model_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/model/modeltest"
)

// TestAddNICReplayKeepsAttached: replaying the same nic_add of a vNIC in
// a network namespace that the dataplane has attached in place changes
// nothing (no dataplane call: the container keeps its interface and
// connections); any other nic_add of an existing id replaces it, as in
// the original.
func TestAddNICReplayKeepsAttached(t *testing.T) {
	netnsNIC := func() model.NIC {
		n := baseNIC()
		n.Type, n.Netns, n.IfName = model.NICTap, "/var/run/netns/pod", "eth0"
		return n
	}
	tests := []struct {
		name     string
		first    model.NIC
		attached bool
		replay   func(n model.NIC) model.NIC
		keep     bool
	}{
		{"same, attached (trace off, the default trace path changed)", netnsNIC(), true, func(n model.NIC) model.NIC { return n }, true},
		{"same, detached or device gone", netnsNIC(), false, func(n model.NIC) model.NIC { return n }, false},
		{"another VNI", netnsNIC(), true, func(n model.NIC) model.NIC { n.VNI++; return n }, false},
		{"another interface name", netnsNIC(), true, func(n model.NIC) model.NIC { n.IfName = "eth1"; return n }, false},
		{"with an import", netnsNIC(), true, func(n model.NIC) model.NIC { n.Import = []byte{1}; return n }, false},
		{"traced", func() model.NIC { n := netnsNIC(); n.PacketTrace = true; return n }(), true,
			func(n model.NIC) model.NIC { return n }, false}, // the default trace path changed
		{"not in a namespace", func() model.NIC { n := baseNIC(); n.Type = model.NICTap; return n }(), true,
			func(n model.NIC) model.NIC { return n }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dp := modeltest.NewDataplane()
			pid := 0 // the default trace path names the daemon's pid, as after a restart
			s := model.New(dp, model.Options{DefaultTracePath: func(id string) string {
				pid++
				return fmt.Sprintf("/tmp/butterfly-%d-%s.pcap", pid, id)
			}})
			path, err := s.AddNIC(tc.first)
			if err != nil {
				t.Fatal(err)
			}
			dp.SetAttached(tc.first.ID, tc.attached)
			dp.ResetCalls()
			s.TakeChanges()
			got, err := s.AddNIC(tc.replay(tc.first))
			if err != nil {
				t.Fatal(err)
			}
			var ops []string
			for _, c := range dp.Calls() {
				ops = append(ops, c.Op)
			}
			want := []string{modeltest.OpDeleteNIC, modeltest.OpAddNIC}
			if tc.keep {
				want = nil
			}
			if !slices.Equal(ops, want) || got != path {
				t.Errorf("replay: calls %v, path %q; want %v, %q", ops, got, want, path)
			}
			if ch := s.TakeChanges(); tc.keep && len(ch.NICs) != 0 {
				t.Errorf("a kept vNIC was journaled as changed: %+v", ch)
			}
		})
	}
}
