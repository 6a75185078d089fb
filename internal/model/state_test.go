package model_test

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/model/modeltest"
)

// largeStore returns a Store of nics vNICs (two IPs and one security group
// each) and sgs security groups of rules rules each, as scripts/bench.sh
// api builds with BENCH_API_NICS=1000.
func largeStore(tb testing.TB, nics, sgs, rules int) *model.Store {
	tb.Helper()
	s := model.New(modeltest.NewDataplane(), model.Options{})
	for i := range nics {
		n := model.NIC{
			ID:             fmt.Sprintf("nic-%04d", i),
			MACText:        fmt.Sprintf("52:54:00:00:%02x:%02x", i>>8&0xff, i&0xff),
			VNI:            uint32(i % 10),
			IPs:            []netip.Addr{netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})},
			SecurityGroups: []string{fmt.Sprintf("sg-%03d", i%max(sgs, 1))},
		}
		if _, err := s.AddNIC(n); err != nil {
			tb.Fatal(err)
		}
	}
	for g := range sgs {
		sg := model.SG{ID: fmt.Sprintf("sg-%03d", g), Members: []netip.Addr{netip.AddrFrom4([4]byte{10, 2, 0, byte(g)})}}
		for r := range rules {
			sg.Rules = append(sg.Rules, model.Rule{Protocol: 6, PortStart: uint32(r + 1), PortEnd: uint32(r + 1),
				CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 3, byte(g), 0}), 24)})
		}
		if err := s.AddSG(sg); err != nil {
			tb.Fatal(err)
		}
	}
	return s
}

// BenchmarkStateLarge measures State on 1,000 vNICs and 100 security
// groups of 100 rules (butterflyd takes it once, after a restore; each
// request persists its change only, see TakeChanges).
func BenchmarkStateLarge(b *testing.B) {
	s := largeStore(b, 1000, 100, 100)
	b.ReportAllocs()
	for b.Loop() {
		st := s.State()
		if len(st.NICs) != 1000 || len(st.SGs) != 100 {
			b.Fatalf("state has %d nics, %d sgs", len(st.NICs), len(st.SGs))
		}
	}
}

// deepCopy returns st with lists of its own.
func deepCopy(st model.State) model.State {
	st.NICs = slices.Clone(st.NICs)
	for i := range st.NICs {
		st.NICs[i].IPs = slices.Clone(st.NICs[i].IPs)
		st.NICs[i].SecurityGroups = slices.Clone(st.NICs[i].SecurityGroups)
	}
	st.SGs = slices.Clone(st.SGs)
	for i := range st.SGs {
		st.SGs[i].Members = slices.Clone(st.SGs[i].Members)
		st.SGs[i].Rules = slices.Clone(st.SGs[i].Rules)
	}
	return st
}

// isolationStore returns a Store with a vNIC and a security group with
// three members (the list then has spare capacity) and two rules.
func isolationStore(t *testing.T) *model.Store {
	t.Helper()
	s, _ := newStore(t)
	n := baseNIC()
	n.IPs = ips(t, "10.0.0.1", "10.0.0.2")
	n.SecurityGroups = []string{"sg-1", "sg-2"}
	if _, err := s.AddNIC(n); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
		if err := s.AddMember("sg-1", m); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []model.Rule{ruleTCP(22), ruleTCP(80)} {
		if err := s.AddRule("sg-1", r); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func ruleTCP(port uint32) model.Rule {
	return model.Rule{Protocol: 6, PortStart: port, PortEnd: port, CIDR: netip.MustParsePrefix("10.0.0.0/24")}
}

// TestStateIsolatedFromLaterChanges checks that a State taken before a
// change does not see it, whatever the change.
func TestStateIsolatedFromLaterChanges(t *testing.T) {
	tests := []struct {
		name   string
		change func(s *model.Store) error
	}{
		{"add rule", func(s *model.Store) error { return s.AddRule("sg-1", ruleTCP(443)) }},
		{"delete rule", func(s *model.Store) error { return s.DeleteRule("sg-1", ruleTCP(22)) }},
		{"add member", func(s *model.Store) error { return s.AddMember("sg-1", "10.0.0.4") }},
		{"delete member", func(s *model.Store) error { return s.DeleteMember("sg-1", "10.0.0.1") }},
		{"replace sg", func(s *model.Store) error { return s.AddSG(model.SG{ID: "sg-1"}) }},
		{"delete sg", func(s *model.Store) error { return s.DeleteSG("sg-1") }},
		{"update nic", func(s *model.Store) error {
			return s.UpdateNIC(model.NICUpdate{ID: "nic-1", IPs: []string{"10.0.0.9"}, SecurityGroups: []string{"sg-9"}})
		}},
		{"replace nic", func(s *model.Store) error {
			n := baseNIC()
			n.VNI = 7
			_, err := s.AddNIC(n)
			return err
		}},
		{"delete nic", func(s *model.Store) error { return s.DeleteNIC("nic-1") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := isolationStore(t)
			taken := s.State()
			want := deepCopy(taken)
			gen := s.Generation()
			if err := tt.change(s); err != nil {
				t.Fatal(err)
			}
			if s.Generation() == gen {
				t.Fatal("the change changed nothing")
			}
			if !reflect.DeepEqual(taken, want) {
				t.Errorf("taken state changed:\n got %+v\nwant %+v", taken, want)
			}
			if reflect.DeepEqual(s.State(), want) {
				t.Error("the new state equals the old one")
			}
		})
	}
}

// TestStateChangesDoNotReachStore checks that changing a taken State
// (fields, whole lists, appends to its lists) changes neither the Store nor
// another State taken at the same time.
func TestStateChangesDoNotReachStore(t *testing.T) {
	s := isolationStore(t)
	a, b := s.State(), s.State()
	want := deepCopy(a)
	extra := netip.MustParseAddr("192.0.2.1")
	a.NICs[0].VNI = 99
	a.NICs[0].IPs = append(a.NICs[0].IPs, extra)
	a.NICs[0].SecurityGroups = append(a.NICs[0].SecurityGroups, "sg-a")
	a.SGs[0].Members = append(a.SGs[0].Members, extra)
	a.SGs[0].Rules = append(a.SGs[0].Rules, ruleTCP(1))
	a.SGs = append(a.SGs, model.SG{ID: "sg-a"})
	b.SGs[0].Members = append(b.SGs[0].Members, netip.MustParseAddr("192.0.2.2"))
	b.NICs[0].IPs = append(b.NICs[0].IPs, netip.MustParseAddr("192.0.2.2"))
	b.SGs[0].ID = "sg-b"

	if got := s.State(); !reflect.DeepEqual(got, want) {
		t.Errorf("store changed:\n got %+v\nwant %+v", got, want)
	}
	if got := a.SGs[0].Members[len(a.SGs[0].Members)-1]; got != extra {
		t.Errorf("a's appended member is %v, want %v (b's append overwrote it)", got, extra)
	}
	if got := a.NICs[0].IPs[len(a.NICs[0].IPs)-1]; got != extra {
		t.Errorf("a's appended ip is %v, want %v (b's append overwrote it)", got, extra)
	}
}
