package model_test

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/model/modeltest"
)

// changeIDs is a Change reduced to its ids.
type changeIDs struct {
	nics, sgs, delNICs, delSGs []string
}

func idsOf(c model.Change) changeIDs {
	var got changeIDs
	for _, n := range c.NICs {
		got.nics = append(got.nics, n.ID)
	}
	for _, g := range c.SGs {
		got.sgs = append(got.sgs, g.ID)
	}
	got.delNICs, got.delSGs = c.DelNICs, c.DelSGs
	return got
}

// TestTakeChanges checks that TakeChanges reports exactly the objects each
// kind of change touched, as they are after it, and starts afresh.
func TestTakeChanges(t *testing.T) {
	nic2 := baseNIC()
	nic2.ID, nic2.MACText = "nic-2", "42:42:42:42:42:43"
	tests := []struct {
		name   string
		change func(t *testing.T, s *model.Store, dp *modeltest.Dataplane) error
		want   changeIDs
	}{
		{"add nic", func(_ *testing.T, s *model.Store, _ *modeltest.Dataplane) error {
			_, err := s.AddNIC(nic2)
			return err
		}, changeIDs{nics: []string{"nic-2"}}},
		{"replace nic", func(_ *testing.T, s *model.Store, _ *modeltest.Dataplane) error {
			n := baseNIC()
			n.VNI = 7
			_, err := s.AddNIC(n)
			return err
		}, changeIDs{nics: []string{"nic-1"}}},
		{"update nic", func(_ *testing.T, s *model.Store, _ *modeltest.Dataplane) error {
			return s.UpdateNIC(model.NICUpdate{ID: "nic-1", IPs: []string{"10.0.0.9"}})
		}, changeIDs{nics: []string{"nic-1"}}},
		{"update changing nothing", func(_ *testing.T, s *model.Store, _ *modeltest.Dataplane) error {
			return s.UpdateNIC(model.NICUpdate{ID: "nic-1", IPs: []string{"10.0.0.1", "10.0.0.2"}})
		}, changeIDs{}},
		{"delete nic", func(_ *testing.T, s *model.Store, _ *modeltest.Dataplane) error {
			return s.DeleteNIC("nic-1")
		}, changeIDs{delNICs: []string{"nic-1"}}},
		{"delete unknown nic and group", func(_ *testing.T, s *model.Store, _ *modeltest.Dataplane) error {
			return errors.Join(s.DeleteNIC("nope"), s.DeleteSG("nope"))
		}, changeIDs{}},
		{"add then delete nic", func(_ *testing.T, s *model.Store, _ *modeltest.Dataplane) error {
			_, err := s.AddNIC(nic2)
			return errors.Join(err, s.DeleteNIC("nic-2"))
		}, changeIDs{delNICs: []string{"nic-2"}}},
		{"delete then add nic", func(_ *testing.T, s *model.Store, _ *modeltest.Dataplane) error {
			if err := s.DeleteNIC("nic-1"); err != nil {
				return err
			}
			_, err := s.AddNIC(baseNIC())
			return err
		}, changeIDs{nics: []string{"nic-1"}}},
		{"failed replace loses the old nic", func(t *testing.T, s *model.Store, dp *modeltest.Dataplane) error {
			dp.FailOn(modeltest.OpAddNIC, "", errors.New("boom"))
			if _, err := s.AddNIC(baseNIC()); err == nil {
				t.Error("replace succeeded")
			}
			return nil
		}, changeIDs{delNICs: []string{"nic-1"}}},
		{"add rule", func(_ *testing.T, s *model.Store, _ *modeltest.Dataplane) error {
			return s.AddRule("sg-1", ruleTCP(443))
		}, changeIDs{sgs: []string{"sg-1"}}},
		{"add rule creating a group", func(_ *testing.T, s *model.Store, _ *modeltest.Dataplane) error {
			return s.AddRule("sg-3", ruleTCP(443))
		}, changeIDs{sgs: []string{"sg-3"}}},
		{"delete rule", func(_ *testing.T, s *model.Store, _ *modeltest.Dataplane) error {
			return s.DeleteRule("sg-1", ruleTCP(22))
		}, changeIDs{sgs: []string{"sg-1"}}},
		{"add and delete member", func(_ *testing.T, s *model.Store, _ *modeltest.Dataplane) error {
			return errors.Join(s.AddMember("sg-1", "10.0.0.4"), s.DeleteMember("sg-1", "10.0.0.1"))
		}, changeIDs{sgs: []string{"sg-1"}}},
		{"replace group", func(_ *testing.T, s *model.Store, _ *modeltest.Dataplane) error {
			return s.AddSG(model.SG{ID: "sg-1"})
		}, changeIDs{sgs: []string{"sg-1"}}},
		{"delete group", func(_ *testing.T, s *model.Store, _ *modeltest.Dataplane) error {
			return s.DeleteSG("sg-1")
		}, changeIDs{delSGs: []string{"sg-1"}}},
		{"several changes", func(_ *testing.T, s *model.Store, _ *modeltest.Dataplane) error {
			_, err := s.AddNIC(nic2)
			return errors.Join(err, s.AddRule("sg-3", ruleTCP(1)), s.AddRule("sg-1", ruleTCP(2)), s.DeleteNIC("nic-1"))
		}, changeIDs{nics: []string{"nic-2"}, sgs: []string{"sg-1", "sg-3"}, delNICs: []string{"nic-1"}}},
		{"restore", func(_ *testing.T, s *model.Store, _ *modeltest.Dataplane) error {
			return s.Restore(model.State{Version: model.StateVersion, NICs: []model.NIC{nic2}, SGs: []model.SG{{ID: "sg-3"}}})
		}, changeIDs{nics: []string{"nic-2"}, sgs: []string{"sg-3"}, delNICs: []string{"nic-1"}, delSGs: []string{"sg-1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dp := modeltest.NewDataplane()
			s := model.New(dp, model.Options{})
			n := baseNIC()
			n.IPs = ips(t, "10.0.0.1", "10.0.0.2")
			if _, err := s.AddNIC(n); err != nil {
				t.Fatal(err)
			}
			if err := errors.Join(s.AddMember("sg-1", "10.0.0.1"), s.AddRule("sg-1", ruleTCP(22))); err != nil {
				t.Fatal(err)
			}
			if got := idsOf(s.TakeChanges()); !reflect.DeepEqual(got, changeIDs{nics: []string{"nic-1"}, sgs: []string{"sg-1"}}) {
				t.Fatalf("changes of the setup: %+v", got)
			}
			if err := tt.change(t, s, dp); err != nil {
				t.Fatal(err)
			}
			c := s.TakeChanges()
			if got := idsOf(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("changes %+v, want %+v", got, tt.want)
			}
			for _, n := range c.NICs {
				if d, err := s.NICDetails(n.ID); err != nil || !reflect.DeepEqual(d[0], n) {
					t.Errorf("changed nic %+v, the store has %+v (%v)", n, d, err)
				}
			}
			for _, g := range c.SGs {
				if d, err := s.SGDetails(g.ID); err != nil || !reflect.DeepEqual(d[0], g) {
					t.Errorf("changed group %+v, the store has %+v (%v)", g, d, err)
				}
			}
			if again := idsOf(s.TakeChanges()); !reflect.DeepEqual(again, changeIDs{}) {
				t.Errorf("second TakeChanges: %+v, want nothing", again)
			}
		})
	}
}

// TestTakeChangesIndependentOfSize: what a change hands over (the objects
// a persistence layer then compares and writes) is the changed object
// only, whether the Store holds 10 or 10,000 vNICs.
func TestTakeChangesIndependentOfSize(t *testing.T) {
	for _, nics := range []int{10, 10000} {
		t.Run(fmt.Sprint(nics), func(t *testing.T) {
			s := largeStore(t, nics, 10, 10)
			s.TakeChanges()
			n := model.NIC{ID: "new", MACText: "52:54:00:ff:ff:ff", IPs: []netip.Addr{netip.MustParseAddr("10.9.9.9")},
				SecurityGroups: []string{"sg-001"}}
			steps := []struct {
				name   string
				change func() error
				want   changeIDs
			}{
				{"nic_add", func() error { _, err := s.AddNIC(n); return err }, changeIDs{nics: []string{"new"}}},
				{"sg_rule_add", func() error { return s.AddRule("sg-001", ruleTCP(4242)) }, changeIDs{sgs: []string{"sg-001"}}},
				{"sg_member_add", func() error { return s.AddMember("sg-002", "10.8.8.8") }, changeIDs{sgs: []string{"sg-002"}}},
				{"nic_del", func() error { return s.DeleteNIC("new") }, changeIDs{delNICs: []string{"new"}}},
			}
			for _, st := range steps {
				if err := st.change(); err != nil {
					t.Fatal(err)
				}
				if got := idsOf(s.TakeChanges()); !reflect.DeepEqual(got, st.want) {
					t.Errorf("%s: changes %+v, want %+v", st.name, got, st.want)
				}
			}
			if got := len(s.NICList()); got != nics {
				t.Errorf("%d vNICs left, want %d", got, nics)
			}
		})
	}
}

// BenchmarkTakeChanges measures a rule added or removed and the change
// taken with
// 10 and 10,000 vNICs (the dataplane does nothing): it must not grow with
// the vNICs.
func BenchmarkTakeChanges(b *testing.B) {
	for _, nics := range []int{10, 10000} {
		b.Run(fmt.Sprintf("nics=%d", nics), func(b *testing.B) {
			s := largeStore(b, nics, 10, 10)
			s.TakeChanges()
			b.ReportAllocs()
			add := true
			for b.Loop() {
				change := s.DeleteRule
				if add {
					change = s.AddRule
				}
				add = !add
				if err := change("sg-001", ruleTCP(4242)); err != nil {
					b.Fatal(err)
				}
				if c := s.TakeChanges(); len(c.SGs) != 1 {
					b.Fatalf("change of %d groups", len(c.SGs))
				}
			}
		})
	}
}

// BenchmarkAddRule measures a rule added or removed on one of 100 groups
// of 100 rules (the dataplane records the call and does nothing else):
// what the model itself costs per sg_rule_add of scripts/apibench.
func BenchmarkAddRule(b *testing.B) {
	dp := modeltest.NewDataplane()
	s := model.New(dp, model.Options{})
	for g := range 100 {
		sg := model.SG{ID: fmt.Sprintf("sg-%03d", g)}
		for r := range 100 {
			sg.Rules = append(sg.Rules, model.Rule{Protocol: 6, PortStart: uint32(r + 1), PortEnd: uint32(r + 1),
				CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 3, byte(g), 0}), 24)})
		}
		if err := s.AddSG(sg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	add := true
	i := 0
	for b.Loop() {
		change := s.DeleteRule
		if add {
			change = s.AddRule
		}
		add = !add
		if err := change("sg-042", ruleTCP(4242)); err != nil {
			b.Fatal(err)
		}
		if i++; i%1024 == 0 {
			dp.ResetCalls() // the recorded calls would grow with b.N
		}
	}
}
