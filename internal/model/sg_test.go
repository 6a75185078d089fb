package model_test

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/model/modeltest"
)

func cidr(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestRuleKey(t *testing.T) {
	tests := []struct {
		r    model.Rule
		want string
	}{
		{model.Rule{Protocol: 6, PortStart: 22, PortEnd: 22, CIDR: cidr("10.0.0.0/24")}, "0-6-22-22-10.0.0.0/24-"},
		{model.Rule{Protocol: 17, PortStart: 8000, PortEnd: 8000, SG: "sg-1"}, "0-17-8000-8000-/0-sg-1"},
		{model.Rule{Direction: model.Outbound, Protocol: -1, CIDR: cidr("::/0")}, "1--1-0-0-::/0-"},
		// Host bits kept, IPv6 written as inet_ntop does.
		{model.Rule{Protocol: -1, PortEnd: 1024, CIDR: netip.PrefixFrom(netip.MustParseAddr("2001:0db8:0000:85a3:0000:0000:ac1f:8001"), 8)},
			"0--1-0-1024-2001:db8:0:85a3::ac1f:8001/8-"},
		{model.Rule{Protocol: 1, CIDR: cidr("10.0.0.1/32")}, "0-1-0-0-10.0.0.1/32-"},
	}
	for _, tc := range tests {
		if got := tc.r.Key(); got != tc.want {
			t.Errorf("Key(%+v) = %q, want %q", tc.r, got, tc.want)
		}
	}
}

func TestRuleValidation(t *testing.T) {
	tests := []struct {
		name   string
		r      model.Rule
		detail string
	}{
		{"direction", model.Rule{Direction: 2, Protocol: -1, SG: "x"}, "unknown direction 2"},
		{"protocol -2", model.Rule{Protocol: -2, SG: "x"}, "protocol -2 is not in [-1, 255]"},
		{"protocol 256", model.Rule{Protocol: 256, SG: "x"}, "protocol 256"},
		{"tcp port above 65535", model.Rule{Protocol: 6, PortStart: 1, PortEnd: 65536, SG: "x"}, "port range 1-65536: port above 65535"},
		{"udp start above 65535", model.Rule{Protocol: 17, PortStart: 70000, PortEnd: 70000, SG: "x"}, "port range 70000-70000: port above 65535"},
		{"start after end", model.Rule{Protocol: 6, PortStart: 23, PortEnd: 22, SG: "x"}, "port range 23-22: start after end"},
		{"cidr and sg", model.Rule{Protocol: -1, CIDR: cidr("10.0.0.0/8"), SG: "x"}, "cidr and security_group are mutually exclusive"},
		{"neither cidr nor sg", model.Rule{Protocol: -1}, "a rule needs a cidr or a security_group"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, dp := newStore(t)
			if err := s.AddSG(model.SG{ID: "sg-1", Rules: []model.Rule{{Protocol: 1, SG: "sg-1"}}}); err != nil {
				t.Fatal(err)
			}
			unchanged(t, s, dp, func() {
				err := s.AddRule("sg-1", tc.r)
				wantErr(t, err, model.CodeInvalid, "Bad Security Group rule format: "+tc.detail)
				err = s.AddRule("sg-new", tc.r)
				wantErr(t, err, model.CodeInvalid, "Bad Security Group rule format: "+tc.detail)
				err = s.DeleteRule("sg-1", tc.r)
				wantErr(t, err, model.CodeInvalid, "Bad Security Group rule format: "+tc.detail)
				err = s.AddSG(model.SG{ID: "sg-1", Rules: []model.Rule{{Protocol: 1, SG: "y"}, tc.r}})
				wantErr(t, err, model.CodeInvalid, "Bad Security Group format: rule 2: "+tc.detail)
			})
		})
	}
	// Ports of other protocols are not checked (as in the original) but
	// are part of the identity.
	s, _ := newStore(t)
	for _, r := range []model.Rule{
		{Protocol: 1, PortStart: 70000, PortEnd: 1, SG: "x"},
		{Protocol: 1, SG: "x"},
		{Protocol: 6, PortStart: 0, PortEnd: 65535, SG: "x"},
		{Protocol: 255, CIDR: cidr("::/128")},
	} {
		if err := s.AddRule("sg-1", r); err != nil {
			t.Errorf("%+v: %v", r, err)
		}
	}
	if rules, _ := s.Rules("sg-1"); len(rules) != 4 {
		t.Errorf("got %d rules, want 4", len(rules))
	}
}

func TestRulesOrderAndIdempotence(t *testing.T) {
	// The rules of the original's test_sg_rule_00, whose golden output
	// lists them in this order (libstdc++ hash order).
	sg42 := model.Rule{Protocol: 6, PortStart: 0, PortEnd: 65535, SG: "sg-42"}
	any6 := model.Rule{Protocol: -1, PortStart: 0, PortEnd: 1024,
		CIDR: netip.PrefixFrom(netip.MustParseAddr("2001:0db8:0000:85a3:0000:0000:ac1f:8001"), 8)}
	udp := model.Rule{Protocol: 17, PortStart: 0, PortEnd: 65535, CIDR: cidr("1.2.3.0/24")}
	some := model.Rule{Protocol: 6, PortStart: 1000, PortEnd: 65535, SG: "some-sg"}
	want := []model.Rule{sg42, any6, udp, some}

	for _, order := range [][]model.Rule{{udp, sg42, any6, some}, {some, any6, udp, sg42}} {
		s, dp := newStore(t)
		if err := s.AddSG(model.SG{ID: "sg-1", Rules: order[:2]}); err != nil {
			t.Fatal(err)
		}
		for _, r := range order[2:] {
			if err := s.AddRule("sg-1", r); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.Rules("sg-1")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("order\n got %+v\nwant %+v", got, want)
		}
		for i := 1; i < len(got); i++ {
			if got[i-1].Hash() >= got[i].Hash() {
				t.Errorf("rules not in hash order at %d", i)
			}
		}
		// Adding an existing rule changes nothing, even written differently.
		dup := any6
		dup.CIDR = netip.PrefixFrom(netip.MustParseAddr("2001:db8:0:85a3::ac1f:8001"), 8)
		unchanged(t, s, dp, func() {
			if err := s.AddRule("sg-1", dup); err != nil {
				t.Fatal(err)
			}
		})
		// Host bits matter: 1.2.3.1/24 is another rule than 1.2.3.0/24.
		other := udp
		other.CIDR = cidr("1.2.3.1/24")
		if err := s.DeleteRule("sg-1", other); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Rules("sg-1"); len(got) != 4 {
			t.Errorf("deleting a different rule removed one")
		}
		for range 2 {
			if err := s.DeleteRule("sg-1", some); err != nil {
				t.Fatal(err)
			}
		}
		if got, _ := s.Rules("sg-1"); !reflect.DeepEqual(got, want[:3]) {
			t.Errorf("after delete: %+v", got)
		}
	}
}

func TestRuleAddCreatesSG(t *testing.T) {
	s, dp := newStore(t)
	r := model.Rule{Protocol: -1, CIDR: cidr("0.0.0.0/0")}
	// Deleting on an unknown SG succeeds and creates nothing.
	unchanged(t, s, dp, func() {
		if err := s.DeleteRule("sg-1", r); err != nil {
			t.Fatal(err)
		}
	})
	if _, err := s.Rules("sg-1"); err == nil {
		t.Fatal("Rules of unknown SG succeeded")
	} else {
		wantErr(t, err, model.CodeNotFound, "Security Group not found")
	}
	if err := s.AddRule("sg-1", r); err != nil {
		t.Fatal(err)
	}
	if l := s.SGList(); !slices.Equal(l, []string{"sg-1"}) {
		t.Errorf("list %q", l)
	}
	if err := s.DeleteRule("sg-1", r); err != nil {
		t.Fatal(err)
	}
	got, err := s.Rules("sg-1")
	if err != nil || len(got) != 0 {
		t.Errorf("rules after delete: %+v %v (the SG stays, empty)", got, err)
	}
	wantErr(t, s.AddRule("", r), model.CodeInvalid, "Bad Security Group rule format: sg_id is empty")
}

func TestAddSG(t *testing.T) {
	s, dp := newStore(t)
	sg := model.SG{
		ID:      "sg-1",
		Members: ips(t, "1.2.3.4", "2001:db8::1", "1.2.3.4", "2001:0db8::0001"),
		Rules: []model.Rule{
			{Protocol: 6, PortStart: 22, PortEnd: 22, CIDR: cidr("10.0.0.0/8")},
			{Protocol: 6, PortStart: 22, PortEnd: 22, CIDR: cidr("10.0.0.0/8")},
		},
	}
	if err := s.AddSG(sg); err != nil {
		t.Fatal(err)
	}
	got, err := s.SGDetails("sg-1")
	if err != nil {
		t.Fatal(err)
	}
	want := model.SG{ID: "sg-1", Members: ips(t, "1.2.3.4", "2001:db8::1"), Rules: sg.Rules[:1]}
	if !reflect.DeepEqual(got, []model.SG{want}) {
		t.Errorf("\n got %+v\nwant %+v", got, want)
	}
	// Same content again: nothing changes.
	unchanged(t, s, dp, func() {
		if err := s.AddSG(sg); err != nil {
			t.Fatal(err)
		}
	})
	// sg_add replaces members and rules.
	if err := s.AddSG(model.SG{ID: "sg-1"}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.SGDetails("sg-1")
	if len(got[0].Members) != 0 || len(got[0].Rules) != 0 {
		t.Errorf("not replaced: %+v", got)
	}
	// Invalid ones change nothing.
	for _, bad := range []struct {
		sg     model.SG
		detail string
	}{
		{model.SG{ID: ""}, "id is empty"},
		{model.SG{ID: "a/b"}, "contains '/'"},
		{model.SG{ID: "sg-1", Members: []netip.Addr{{}}}, "member"},
		{model.SG{ID: "sg-1", Rules: []model.Rule{{Protocol: 6}}}, "rule 1: a rule needs a cidr"},
	} {
		unchanged(t, s, dp, func() {
			err := s.AddSG(bad.sg)
			wantErr(t, err, model.CodeInvalid, "Bad Security Group format: ")
			if err != nil && !strings.Contains(err.Error(), bad.detail) {
				t.Errorf("error %q lacks %q", err, bad.detail)
			}
		})
	}
}

func TestSGListDetailsDelete(t *testing.T) {
	s, dp := newStore(t)
	for _, id := range []string{"sg-b", "sg-a", "sg-c"} {
		if err := s.AddSG(model.SG{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if l := s.SGList(); !slices.Equal(l, []string{"sg-a", "sg-b", "sg-c"}) {
		t.Errorf("list %q", l)
	}
	all, err := s.SGDetails("")
	if err != nil || len(all) != 3 || all[0].ID != "sg-a" || all[2].ID != "sg-c" {
		t.Errorf("details all: %+v %v", all, err)
	}
	_, err = s.SGDetails("nope")
	wantErr(t, err, model.CodeNotFound, "Sg not found")

	n := baseNIC()
	n.SecurityGroups = []string{"sg-b"}
	if _, err := s.AddNIC(n); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.DeleteSG("sg-b"); err != nil {
			t.Fatal(err)
		}
	}
	unchanged(t, s, dp, func() {
		if err := s.DeleteSG("never"); err != nil {
			t.Fatal(err)
		}
	})
	if l := s.SGList(); !slices.Equal(l, []string{"sg-a", "sg-c"}) {
		t.Errorf("list %q", l)
	}
	// NICs keep the id of a deleted SG.
	d, _ := s.NICDetails("nic-1")
	if !slices.Equal(d[0].SecurityGroups, []string{"sg-b"}) {
		t.Errorf("nic sgs %q", d[0].SecurityGroups)
	}
}

func TestMembers(t *testing.T) {
	s, dp := newStore(t)
	// Delete on a missing SG succeeds and does not create it.
	unchanged(t, s, dp, func() {
		if err := s.DeleteMember("sg-1", "2001:0db8:0000:85a3::0000:ac1f:8002"); err != nil {
			t.Fatal(err)
		}
	})
	if len(s.SGList()) != 0 {
		t.Fatal("member delete created the SG")
	}
	_, err := s.Members("sg-1")
	wantErr(t, err, model.CodeNotFound, "Security Group not found")

	for _, m := range []string{"1.2.3.4", "1.2.3.5", "2001:0db8:0000:85a3:0000:0000:ac1f:8001", "2001:0db8:0000:85a3:0000:0000:ac1f:8002"} {
		if err := s.AddMember("sg-1", m); err != nil {
			t.Fatal(err)
		}
	}
	// Duplicates, whatever the spelling, are ignored.
	unchanged(t, s, dp, func() {
		if err := s.AddMember("sg-1", "2001:db8:0:85a3::ac1f:8001"); err != nil {
			t.Fatal(err)
		}
	})
	got, _ := s.Members("sg-1")
	want := []string{"1.2.3.4", "1.2.3.5", "2001:db8:0:85a3::ac1f:8001", "2001:db8:0:85a3::ac1f:8002"}
	if !slices.Equal(got, want) {
		t.Errorf("members %q, want %q", got, want)
	}
	// Delete matches any spelling (test_sg_member_00).
	if err := s.DeleteMember("sg-1", "2001:0db8:0000:85a3::0000:ac1f:8001"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMember("sg-1", "2001:0db8::85a3:0000:0000:ac1f:8002"); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Members("sg-1")
	if !slices.Equal(got, want[:2]) {
		t.Errorf("after delete %q", got)
	}
	for _, bad := range []string{"", "1.2.3", "1.2.3.4/32", "fe80::1%eth0", "::g"} {
		unchanged(t, s, dp, func() {
			wantErr(t, s.AddMember("sg-1", bad), model.CodeInvalid, "Bad IP format: ")
			wantErr(t, s.AddMember("sg-new", bad), model.CodeInvalid, "Bad IP format: ")
			wantErr(t, s.DeleteMember("sg-1", bad), model.CodeInvalid, "Bad IP format: ")
		})
	}
}

func TestParseAndFormat(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"2001:0db8:0000:85a3:0000:0000:ac1f:8001", "2001:db8:0:85a3::ac1f:8001"},
		{"::1.2.3.4", "::1.2.3.4"}, // IPv4-compatible, as glibc writes it
		{"::0.0.1.2", "::102"},
		{"::ffff:0:1", "::ffff:0.0.0.1"},
		{"1:0:0:1:0:0:0:1", "1:0:0:1::1"},
		{"1:0:1:0:1:0:1:0", "1:0:1:0:1:0:1:0"},
		{"::", "::"},
		{"::1", "::1"},
		{"010.1.1.1", ""}, // inet_pton rejects leading zeros
		{"1.2.3.4", "1.2.3.4"},
	} {
		a, err := model.ParseIP(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParseIP(%q) accepted", tc.in)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseIP(%q): %v", tc.in, err)
			continue
		}
		if got := model.IPString(a); got != tc.want {
			t.Errorf("IPString(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if _, err := model.ParseCIDR("10.0.0.0", 33); err == nil {
		t.Error("ParseCIDR /33 accepted")
	}
	if _, err := model.ParseCIDR("::", 129); err == nil {
		t.Error("ParseCIDR ::/129 accepted")
	}
	if p, err := model.ParseCIDR("::", 128); err != nil || p.Bits() != 128 {
		t.Errorf("ParseCIDR ::/128: %v %v", p, err)
	}
	if p, err := model.ParseCIDR("10.1.2.3", 8); err != nil || model.CIDRString(p) != "10.1.2.3/8" {
		t.Errorf("ParseCIDR keeps host bits: %v %v", p, err)
	}
	if m, err := model.ParseMAC("aB:cD:eF:01:23:45"); err != nil || m != [6]byte{0xab, 0xcd, 0xef, 1, 0x23, 0x45} {
		t.Errorf("ParseMAC: %x %v", m, err)
	}
}

// TestSGChangesReachDataplane checks that every change of groups, rules or
// members gives the dataplane the whole new set of groups, that a
// no-op does not call it, and that a dataplane failure changes nothing.
func TestSGChangesReachDataplane(t *testing.T) {
	rule := model.Rule{Protocol: 6, PortStart: 22, PortEnd: 22, CIDR: cidr("10.0.0.0/8")}
	tests := []struct {
		name string
		op   func(s *model.Store) error
		want []model.SG // nil: no dataplane call expected
	}{
		{"add sg", func(s *model.Store) error { return s.AddSG(model.SG{ID: "a"}) },
			[]model.SG{{ID: "a"}, {ID: "b", Members: ips(t, "10.0.0.1")}}},
		{"replace sg", func(s *model.Store) error { return s.AddSG(model.SG{ID: "b", Rules: []model.Rule{rule}}) },
			[]model.SG{{ID: "b", Rules: []model.Rule{rule}}}},
		{"same sg", func(s *model.Store) error { return s.AddSG(model.SG{ID: "b", Members: ips(t, "10.0.0.1")}) }, nil},
		{"delete sg", func(s *model.Store) error { return s.DeleteSG("b") }, []model.SG{}},
		{"delete unknown sg", func(s *model.Store) error { return s.DeleteSG("zz") }, nil},
		{"add rule new sg", func(s *model.Store) error { return s.AddRule("0", rule) },
			[]model.SG{{ID: "0", Rules: []model.Rule{rule}}, {ID: "b", Members: ips(t, "10.0.0.1")}}},
		{"delete rule", func(s *model.Store) error { return s.DeleteRule("b", rule) }, nil},
		{"add member", func(s *model.Store) error { return s.AddMember("b", "10.0.0.2") },
			[]model.SG{{ID: "b", Members: ips(t, "10.0.0.1", "10.0.0.2")}}},
		{"same member", func(s *model.Store) error { return s.AddMember("b", "10.0.0.1") }, nil},
		{"delete member", func(s *model.Store) error { return s.DeleteMember("b", "10.0.0.1") },
			[]model.SG{{ID: "b"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, dp := newStore(t)
			if err := s.AddSG(model.SG{ID: "b", Members: ips(t, "10.0.0.1")}); err != nil {
				t.Fatal(err)
			}
			if tc.want != nil {
				// A failing dataplane leaves everything as it was.
				dp.FailOnce(modeltest.OpSetSecurityGroups, "", errors.New("boom"))
				unchangedState(t, s, dp, false, func() {
					wantErr(t, tc.op(s), model.CodeDataplane, "Security Group")
				})
			}
			dp.ResetCalls()
			if err := tc.op(s); err != nil {
				t.Fatal(err)
			}
			calls := dp.Calls()
			if tc.want == nil {
				if len(calls) != 0 {
					t.Fatalf("calls %+v, want none", calls)
				}
				return
			}
			if len(calls) != 1 || calls[0].Op != modeltest.OpSetSecurityGroups {
				t.Fatalf("calls %+v, want one SetSecurityGroups", calls)
			}
			if got := dp.SecurityGroups(); !reflect.DeepEqual(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Errorf("dataplane groups %+v, want %+v", got, tc.want)
			}
			st := s.State()
			if !reflect.DeepEqual(st.SGs, dp.SecurityGroups()) && !(len(st.SGs) == 0 && len(tc.want) == 0) {
				t.Errorf("model groups %+v differ from the dataplane's %+v", st.SGs, dp.SecurityGroups())
			}
		})
	}
}

// TestRestoreSetsGroupsFirst: Restore gives the dataplane the restored
// groups after removing the old vNICs and before creating the new ones, so
// that their firewalls are built from the right groups.
func TestRestoreSetsGroupsFirst(t *testing.T) {
	s, dp := newStore(t)
	if _, err := s.AddNIC(model.NIC{ID: "old", MACText: "42:42:42:42:42:40"}); err != nil {
		t.Fatal(err)
	}
	dp.ResetCalls()
	sg := model.SG{ID: "sg-1", Members: ips(t, "10.0.0.1")}
	if err := s.Restore(model.State{Version: model.StateVersion, NICs: []model.NIC{baseNIC()}, SGs: []model.SG{sg}}); err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, c := range dp.Calls() {
		ops = append(ops, c.Op)
	}
	want := []string{modeltest.OpDeleteNIC, modeltest.OpSetSecurityGroups, modeltest.OpAddNIC}
	if !slices.Equal(ops, want) {
		t.Errorf("calls %v, want %v", ops, want)
	}
	if got := dp.SecurityGroups(); !reflect.DeepEqual(got, []model.SG{sg}) {
		t.Errorf("dataplane groups %+v, want %+v", got, []model.SG{sg})
	}
	// A dataplane refusing the groups is reported; the rest is restored.
	dp.FailOnce(modeltest.OpSetSecurityGroups, "", errors.New("boom"))
	if err := s.Restore(model.State{Version: model.StateVersion, NICs: []model.NIC{baseNIC()}, SGs: []model.SG{sg}}); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("Restore with a failing dataplane: %v", err)
	}
	if l := s.NICList(); !slices.Equal(l, []string{"nic-1"}) {
		t.Errorf("nics %q", l)
	}
}

// TestRuleAddKeepsOrder: rules added one by one (each placed by binary
// search), duplicates among them, give the same list as adding them all
// at once, and each one can be deleted again.
func TestRuleAddKeepsOrder(t *testing.T) {
	var rules []model.Rule
	for i := range 300 {
		r := model.Rule{Protocol: 6, PortStart: uint32(i % 150), PortEnd: 1000,
			CIDR: cidr(fmt.Sprintf("10.%d.0.0/16", i%150))}
		rules = append(rules, r)
	}
	one, _ := newStore(t)
	for _, r := range rules {
		if err := one.AddRule("g", r); err != nil {
			t.Fatal(err)
		}
	}
	all, _ := newStore(t)
	if err := all.AddSG(model.SG{ID: "g", Rules: rules}); err != nil {
		t.Fatal(err)
	}
	a, _ := one.Rules("g")
	b, _ := all.Rules("g")
	if len(a) != 150 || !reflect.DeepEqual(a, b) {
		t.Fatalf("%d rules added one by one, %d at once, or a different order", len(a), len(b))
	}
	for _, r := range rules {
		if err := one.DeleteRule("g", r); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := one.Rules("g"); len(got) != 0 {
		t.Fatalf("%d rules left after deleting them all", len(got))
	}
}

// updaterDP is a dataplane that takes one group at a time.
type updaterDP struct {
	*modeltest.Dataplane
	updates []string // "id" or "-id" (removed), in call order
	fail    error
}

func (d *updaterDP) UpdateSecurityGroup(id string, sg *model.SG) error {
	if d.fail != nil {
		return d.fail
	}
	if sg == nil {
		d.updates = append(d.updates, "-"+id)
	} else {
		d.updates = append(d.updates, fmt.Sprintf("%s:%d rules,%d members", sg.ID, len(sg.Rules), len(sg.Members)))
	}
	return nil
}

// TestSGUpdater: with a dataplane that is an SGUpdater, each change of a
// group reaches it alone (never the whole list), a refused change leaves
// the Store as it was, and Restore still gives the whole list.
func TestSGUpdater(t *testing.T) {
	dp := &updaterDP{Dataplane: modeltest.NewDataplane()}
	s := model.New(dp, model.Options{})
	rule := model.Rule{Protocol: 6, PortStart: 22, PortEnd: 22, CIDR: cidr("10.0.0.0/8")}
	steps := []struct {
		op   func() error
		want string
	}{
		{func() error { return s.AddSG(model.SG{ID: "a"}) }, "a:0 rules,0 members"},
		{func() error { return s.AddRule("a", rule) }, "a:1 rules,0 members"},
		{func() error { return s.AddRule("a", rule) }, ""}, // already there
		{func() error { return s.AddMember("b", "10.0.0.1") }, "b:0 rules,1 members"},
		{func() error { return s.DeleteRule("a", rule) }, "a:0 rules,0 members"},
		{func() error { return s.DeleteSG("b") }, "-b"},
	}
	for i, st := range steps {
		dp.updates = nil
		if err := st.op(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := strings.Join(dp.updates, " "); got != st.want {
			t.Errorf("step %d: updates %q, want %q", i, got, st.want)
		}
	}
	for _, c := range dp.Calls() {
		if c.Op == modeltest.OpSetSecurityGroups {
			t.Fatalf("SetSecurityGroups called with %v", c.SGs)
		}
	}
	dp.fail = errors.New("boom")
	wantErr(t, s.AddRule("a", rule), model.CodeDataplane, "Security Group")
	if r, err := s.Rules("a"); err != nil || len(r) != 0 {
		t.Fatalf("after a refused rule: rules %v, %v, want none", r, err)
	}
	dp.fail = nil
	if err := s.Restore(model.State{Version: model.StateVersion, SGs: []model.SG{{ID: "z"}}}); err != nil {
		t.Fatal(err)
	}
	if got := dp.SecurityGroups(); len(got) != 1 || got[0].ID != "z" {
		t.Fatalf("Restore gave the dataplane %v, want [z]", got)
	}
}
