package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/butterfly-go/butterfly/internal/firewall"
	"github.com/butterfly-go/butterfly/internal/model"
)

// udpFlow is a UDP frame between the test vNICs a (mac 1, 10.0.0.1) and b
// (mac 2, 10.0.0.2) with the given ports; fromA picks the direction.
func udpFlow(t testing.TB, fromA bool, sport, dport uint16) frame {
	src, dst, sip, dip := mac(1), mac(2), "10.0.0.1", "10.0.0.2"
	if !fromA {
		src, dst, sip, dip = dst, src, dip, sip
	}
	return frame{data: build(t, eth(dst, src, layers.EthernetTypeIPv4),
		&layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.ParseIP(sip).To4(), DstIP: net.ParseIP(dip).To4()},
		&layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}, gopacket.Payload([]byte("hello")))}
}

func udpRule(dir model.RuleDirection, port uint32, cidr, sg string) model.Rule {
	r := model.Rule{Direction: dir, Protocol: 17, PortStart: port, PortEnd: port, SG: sg}
	if cidr != "" {
		r.CIDR = netip.MustParsePrefix(cidr)
	}
	return r
}

// fwStep is one step of a firewall scenario: optionally new security
// groups, then a frame sent by a or b, and whether it must arrive.
type fwStep struct {
	what   string
	sgs    []model.SG // non-nil: SetSecurityGroups first
	fromA  bool
	sport  uint16
	dport  uint16
	passes bool
}

// TestFirewall runs scenarios between vNIC a (all-open group) and vNIC b
// (group "g" unless bypass) and checks which frames reach the other side
// and the drop counters.
func TestFirewall(t *testing.T) {
	open := openSG()
	g := func(rules ...model.Rule) model.SG { return model.SG{ID: "g", Rules: rules} }
	members := func(ips ...string) model.SG {
		sg := model.SG{ID: "m"}
		for _, ip := range ips {
			sg.Members = append(sg.Members, netip.MustParseAddr(ip))
		}
		return sg
	}
	tests := []struct {
		name   string
		bypass bool
		sgs    []model.SG
		steps  []fwStep
		drops  map[string]uint64 // b's drops at the end
	}{
		{name: "no rule drops, default egress passes", sgs: []model.SG{open}, steps: []fwStep{
			{what: "a->b new flow", fromA: true, sport: 1000, dport: 2000},
			{what: "b->a from its own IP", sport: 3000, dport: 4000, passes: true},
			{what: "a->b reply of b's flow", fromA: true, sport: 4000, dport: 3000, passes: true},
			{what: "a->b other port", fromA: true, sport: 4000, dport: 3001},
		}, drops: map[string]uint64{"firewall_no_rule": 2}},
		{name: "all-open group passes", sgs: []model.SG{open, {ID: "g", Rules: open.Rules}}, steps: []fwStep{
			{what: "a->b", fromA: true, sport: 1000, dport: 2000, passes: true},
			{what: "b->a", sport: 5, dport: 6, passes: true},
		}},
		{name: "port rule, rule removed cuts the flow", sgs: []model.SG{open, g(udpRule(model.Inbound, 2000, "10.0.0.0/24", ""))}, steps: []fwStep{
			{what: "a->b allowed port", fromA: true, sport: 1000, dport: 2000, passes: true},
			{what: "a->b other port", fromA: true, sport: 1000, dport: 2001},
			{what: "b->a reply", sport: 2000, dport: 1000, passes: true},
			{what: "rule removed: tracked flow cut", sgs: []model.SG{open, g()}, fromA: true, sport: 1000, dport: 2000},
			{what: "rule back", sgs: []model.SG{open, g(udpRule(model.Inbound, 2000, "10.0.0.1/32", ""))}, fromA: true, sport: 1000, dport: 2000, passes: true},
		}, drops: map[string]uint64{"firewall_no_rule": 1, "firewall_cut": 1}},
		{name: "rules inserted in place (one group changed by one rule)", sgs: []model.SG{open, g(udpRule(model.Inbound, 2000, "10.0.0.0/24", ""), udpRule(model.Inbound, 3000, "10.0.0.0/24", ""))}, steps: []fwStep{
			{what: "a->b port not allowed yet", fromA: true, sport: 1000, dport: 2500},
			{what: "rule inserted between", sgs: []model.SG{open, g(udpRule(model.Inbound, 2000, "10.0.0.0/24", ""), udpRule(model.Inbound, 2500, "10.0.0.1/32", ""), udpRule(model.Inbound, 3000, "10.0.0.0/24", ""))}, fromA: true, sport: 1000, dport: 2500, passes: true},
			{what: "a->b the first rule still", fromA: true, sport: 1001, dport: 2000, passes: true},
			{what: "a->b a port range not allowed yet", fromA: true, sport: 1001, dport: 1500},
			{what: "range inserted first", sgs: []model.SG{open, g(model.Rule{Direction: model.Inbound, Protocol: 17, PortStart: 1400, PortEnd: 1600, CIDR: netip.MustParsePrefix("10.0.0.0/30")}, udpRule(model.Inbound, 2000, "10.0.0.0/24", ""), udpRule(model.Inbound, 2500, "10.0.0.1/32", ""), udpRule(model.Inbound, 3000, "10.0.0.0/24", ""))}, fromA: true, sport: 1001, dport: 1500, passes: true},
			{what: "a->b just past the range", fromA: true, sport: 1002, dport: 1601},
		}, drops: map[string]uint64{"firewall_no_rule": 3}},
		{name: "member add and remove toggle", sgs: []model.SG{open, g(udpRule(model.Inbound, 2000, "", "m")), members()}, steps: []fwStep{
			{what: "no member", fromA: true, sport: 1000, dport: 2000},
			{what: "a added", sgs: []model.SG{open, g(udpRule(model.Inbound, 2000, "", "m")), members("10.0.0.1")}, fromA: true, sport: 1000, dport: 2000, passes: true},
			{what: "a removed: flow cut", sgs: []model.SG{open, g(udpRule(model.Inbound, 2000, "", "m")), members("10.0.0.3")}, fromA: true, sport: 1000, dport: 2000},
			{what: "group deleted", sgs: []model.SG{open, g(udpRule(model.Inbound, 2000, "", "m"))}, fromA: true, sport: 1000, dport: 2000},
		}, drops: map[string]uint64{"firewall_no_rule": 2, "firewall_cut": 1}},
		{name: "outbound rule replaces default egress", sgs: []model.SG{open, g(udpRule(model.Outbound, 53, "10.0.0.0/24", ""))}, steps: []fwStep{
			{what: "b->a allowed port", sport: 1000, dport: 53, passes: true},
			{what: "b->a other port", sport: 1000, dport: 54},
		}, drops: map[string]uint64{"firewall_no_rule": 1}},
		{name: "bypass", bypass: true, steps: []fwStep{
			{what: "a->b", fromA: true, sport: 1000, dport: 2000, passes: true},
			{what: "b->a", sport: 1, dport: 2, passes: true},
		}},
	}
	for _, tc := range tests {
		for _, each := range []bool{false, true} {
			name := tc.name
			if each {
				name += " (UpdateSecurityGroup)"
			}
			t.Run(name, func(t *testing.T) {
				h := newHarness(t, Config{}, true)
				var cur []model.SG
				apply := func(sgs []model.SG) {
					t.Helper()
					if err := setGroups(h.e, each, cur, sgs); err != nil {
						t.Fatal(err)
					}
					cur = sgs
				}
				if tc.sgs != nil {
					apply(tc.sgs)
				}
				runFirewallSteps(t, h, tc.bypass, tc.steps, tc.drops, apply)
			})
		}
	}
}

// setGroups moves e from groups prev to next: in one SetSecurityGroups,
// or with each one UpdateSecurityGroup per changed group (updateEach).
func setGroups(e *Engine, each bool, prev, next []model.SG) error {
	if each {
		return updateEach(e, prev, next)
	}
	return e.SetSecurityGroups(next)
}

// updateEach applies the groups of next that differ from prev, then
// removes those next lacks, one UpdateSecurityGroup each.
func updateEach(e *Engine, prev, next []model.SG) error {
	old := map[string]model.SG{}
	for _, g := range prev {
		old[g.ID] = g
	}
	for _, g := range next {
		if o, ok := old[g.ID]; !ok || !reflect.DeepEqual(o, g) {
			if err := e.UpdateSecurityGroup(g.ID, &g); err != nil {
				return err
			}
		}
		delete(old, g.ID)
	}
	for id := range old {
		if err := e.UpdateSecurityGroup(id, nil); err != nil {
			return err
		}
	}
	return nil
}

// runFirewallSteps adds vNICs a (all open) and b (group "g"), then runs
// steps (apply sets their groups) and checks b's drops at the end.
func runFirewallSteps(t *testing.T, h *harness, bypass bool, steps []fwStep, drops map[string]uint64, apply func([]model.SG)) {
	a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
	nb := nicOf("b", mac(2), 5, "10.0.0.2")
	nb.SecurityGroups, nb.Bypass = []string{"g"}, bypass
	b := h.add(t, nb)
	for _, st := range steps {
		if st.sgs != nil {
			apply(st.sgs)
		}
		src, dst, from := b, a, "b"
		if st.fromA {
			src, dst, from = a, b, "a"
		}
		f := udpFlow(t, st.fromA, st.sport, st.dport)
		// Explain predicts what the step does.
		x := explainStep(t, h, from, f.data, func() {
			src.inject(f)
			h.step()
		})
		got := len(dst.take())
		if got != map[bool]int{true: 1}[st.passes] {
			t.Fatalf("%s: %d frames arrived, want passes=%v", st.what, got, st.passes)
		}
		to := "vNIC " + map[bool]string{true: "b", false: "a"}[st.fromA]
		if reached := explainDelivers(x, to); reached != st.passes {
			t.Fatalf("%s: explain said %q: delivered to %s %v, want %v\n%s", st.what, x.Verdict, to, reached, st.passes, strings.Join(x.Steps, "\n"))
		}
	}
	c, err := h.e.Counters("b")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"firewall_no_rule", "firewall_cut", "firewall_invalid"} {
		if c.Drops[r] != drops[r] {
			t.Errorf("b drops %v, want %v", c.Drops, drops)
			break
		}
	}
}

// TestFirewallRecompile checks when policies are rebuilt: a member change
// only updates the shared set; a rule change in a vNIC's group, or a
// change of its IPs or groups, rebuilds its policy, and a change of an
// unrelated group does not.
func TestFirewallRecompile(t *testing.T) {
	h := newHarness(t, Config{}, true)
	rule := udpRule(model.Inbound, 2000, "", "m")
	if err := h.e.SetSecurityGroups([]model.SG{openSG(), {ID: "g", Rules: []model.Rule{rule}}}); err != nil {
		t.Fatal(err)
	}
	nb := nicOf("b", mac(2), 5, "10.0.0.2")
	nb.SecurityGroups = []string{"g"}
	h.add(t, nb)
	pol := func() any {
		h.e.mu.Lock()
		defer h.e.mu.Unlock()
		return h.e.nics["b"].pol
	}
	steps := []struct {
		what    string
		do      func() error
		rebuilt bool
	}{
		{"member of a referenced group", func() error {
			return h.e.SetSecurityGroups([]model.SG{openSG(), {ID: "g", Rules: []model.Rule{rule}}, {ID: "m", Members: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}})
		}, false},
		{"unrelated group", func() error {
			return h.e.SetSecurityGroups([]model.SG{{ID: "open"}, {ID: "g", Rules: []model.Rule{rule}}, {ID: "m", Members: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}})
		}, false},
		{"rule of its group", func() error {
			return h.e.SetSecurityGroups([]model.SG{{ID: "open"}, {ID: "g"}})
		}, true},
		{"its IPs", func() error {
			nb.IPs = []netip.Addr{netip.MustParseAddr("10.0.0.7")}
			return h.e.UpdateNIC(nb)
		}, true},
		{"anti-spoofing only", func() error {
			nb.IPAntiSpoof = true
			return h.e.UpdateNIC(nb)
		}, false},
	}
	for _, st := range steps {
		before := pol()
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.what, err)
		}
		if rebuilt := pol() != before; rebuilt != st.rebuilt {
			t.Errorf("%s: policy rebuilt %v, want %v", st.what, rebuilt, st.rebuilt)
		}
	}
	// "m" is neither a group nor referenced by a rule any more.
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	if _, ok := h.e.members["m"]; ok {
		t.Error("the member set of a group nothing refers to was kept")
	}
}

// TestFirewallTableFull: with room for two connections per vNIC, a's third
// new flow is dropped and counted on a, its tracked flows keep passing,
// and b, whose table has room, is unaffected.
func TestFirewallTableFull(t *testing.T) {
	h := newHarness(t, Config{ConntrackMax: 2}, true)
	a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
	b := h.add(t, nicOf("b", mac(2), 5, "10.0.0.2"))
	send := func(src, dst *fakePort, fromA bool, sport, dport uint16) int {
		f := udpFlow(t, fromA, sport, dport)
		from, to := "b", "vNIC a"
		if fromA {
			from, to = "a", "vNIC b"
		}
		x := explainStep(t, h, from, f.data, func() {
			src.inject(f)
			h.step()
		})
		n := len(dst.take())
		if explainDelivers(x, to) != (n == 1) {
			t.Fatalf("explain said %q, %d frames arrived", x.Verdict, n)
		}
		return n
	}
	// Each flow takes an entry in a's table (FromVM) and in b's (ToVM).
	if send(a, b, true, 1, 53) != 1 || send(a, b, true, 2, 53) != 1 {
		t.Fatal("the first two flows did not pass")
	}
	if send(a, b, true, 3, 53) != 0 {
		t.Fatal("a third flow passed a full table")
	}
	if send(a, b, true, 1, 53) != 1 {
		t.Fatal("a tracked flow was dropped by the full table")
	}
	ca, _ := h.e.Counters("a")
	if ca.Drops["firewall_table_full"] != 1 {
		t.Errorf("a drops %v, want firewall_table_full 1", ca.Drops)
	}
	// b's table is full too (the two flows of a): replies of the tracked
	// flows pass. b's first new flow takes the place of a's flow that b
	// never answered (early drop); the next one finds only the answered
	// flow and b's own, and is refused and counted on b.
	if send(b, a, false, 53, 1) != 1 {
		t.Error("reply of a tracked flow dropped")
	}
	send(b, a, false, 7, 8) // passes b, then meets a's full table
	cb, _ := h.e.Counters("b")
	ca, _ = h.e.Counters("a")
	if cb.Drops["firewall_table_full"] != 0 || cb.Drops["firewall_evicted"] != 1 || ca.Drops["firewall_table_full"] != 2 {
		t.Errorf("a new flow of b: b drops %v, a drops %v; want b evicting one flow, a refusing it as table_full",
			cb.Drops, ca.Drops)
	}
	if send(b, a, false, 9, 10) != 0 {
		t.Error("a new flow of b passed a table of answered and own flows")
	}
	if send(b, a, false, 53, 1) != 1 {
		t.Error("reply of an answered flow dropped after the eviction")
	}
	if cb, _ := h.e.Counters("b"); cb.Drops["firewall_table_full"] != 1 || cb.Drops["firewall_evicted"] != 1 {
		t.Errorf("b drops %v, want firewall_table_full 1 and firewall_evicted 1", cb.Drops)
	}
}

// TestFirewallCheckCutsFlows: after a rule is removed, the workers' periodic
// Check cuts the flows it admitted without waiting for their next packet,
// which is then counted as cut.
// (A small table: Check visits a bounded number of slots per round.)
func TestFirewallCheckCutsFlows(t *testing.T) {
	h := newHarness(t, Config{ConntrackMax: 64}, true)
	rule := udpRule(model.Inbound, 2000, "10.0.0.0/24", "")
	if err := h.e.SetSecurityGroups([]model.SG{openSG(), {ID: "g", Rules: []model.Rule{rule}}}); err != nil {
		t.Fatal(err)
	}
	a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
	nb := nicOf("b", mac(2), 5, "10.0.0.2")
	nb.SecurityGroups = []string{"g"}
	b := h.add(t, nb)
	a.inject(udpFlow(t, true, 1000, 2000))
	h.step()
	if len(b.take()) != 1 {
		t.Fatal("allowed flow did not pass")
	}
	ct := h.e.nics["b"].p.ct
	if ct.Len() != 1 {
		t.Fatalf("b tracks %d entries, want 1", ct.Len())
	}
	if err := h.e.SetSecurityGroups([]model.SG{openSG(), {ID: "g"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "Check to cut the flow", func() bool {
		h.step()
		recs, err := firewall.ParseExport(ct.Export(0)) // live flows only
		return err == nil && len(recs) == 0
	})
	// The flow's next packet is dropped as cut and the entry goes.
	f := udpFlow(t, true, 1000, 2000)
	x := explainStep(t, h, "a", f.data, func() {
		a.inject(f)
		h.step()
	})
	if explainDelivers(x, "vNIC b") {
		t.Errorf("explain said %q for a cut flow", x.Verdict)
	}
	if n := len(b.take()); n != 0 || ct.Len() != 0 {
		t.Fatalf("after the cut: %d frames passed, %d entries left", n, ct.Len())
	}
	if c, _ := h.e.Counters("b"); c.Drops["firewall_cut"] != 1 {
		t.Errorf("b drops %v, want firewall_cut 1", c.Drops)
	}
}

// TestFirewallMetrics: firewall passes and drops show in the metrics, per
// element and per vNIC.
func TestFirewallMetrics(t *testing.T) {
	h := newHarness(t, Config{}, true)
	a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
	nb := nicOf("b", mac(2), 5, "10.0.0.2")
	nb.SecurityGroups = nil
	b := h.add(t, nb)
	a.inject(udpFlow(t, true, 1, 2), udpFlow(t, true, 3, 4))
	h.step()
	if n := len(b.take()); n != 0 {
		t.Fatalf("b got %d frames without any rule", n)
	}
	checkMetrics(t, h.e, []metricWant{
		{"butterfly_element_packets_total", map[string]string{"type": "firewall", "name": "firewall-a"}, 2},
		{"butterfly_element_drops_total", map[string]string{"type": "firewall", "name": "firewall-b", "reason": "firewall_no_rule"}, 2},
		{"butterfly_nic_drops_total", map[string]string{"nic": "b", "reason": "firewall_no_rule"}, 2},
	})
}

// TestSetSecurityGroupsFailureKeepsNothing: a change the firewall refuses
// (a rule of a used group fails to compile) changes nothing: not the
// groups, not the vNICs' policies, and no member set of a group the
// refused rules referred to is left behind.
func TestSetSecurityGroupsFailureKeepsNothing(t *testing.T) {
	h := newHarness(t, Config{}, true)
	good := []model.SG{openSG(), {ID: "g", Rules: []model.Rule{udpRule(model.Inbound, 2000, "10.0.0.0/8", "")}}}
	if err := h.e.SetSecurityGroups(good); err != nil {
		t.Fatal(err)
	}
	nb := nicOf("b", mac(2), 5, "10.0.0.2")
	nb.SecurityGroups = []string{"g"}
	h.add(t, nb)
	snapshot := func() (*firewall.Policy, []string) {
		h.e.mu.Lock()
		defer h.e.mu.Unlock()
		var ids []string
		for id := range h.e.members {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		return h.e.nics["b"].pol, ids
	}
	pol, members := snapshot()
	bad := model.Rule{Direction: model.Inbound, Protocol: 300}
	err := h.e.SetSecurityGroups([]model.SG{openSG(), {ID: "g", Rules: []model.Rule{udpRule(model.Inbound, 2000, "", "newref"), bad}}})
	if err == nil {
		t.Fatal("SetSecurityGroups accepted a rule of protocol 300")
	}
	pol2, members2 := snapshot()
	if pol2 != pol {
		t.Error("the vNIC's policy changed although SetSecurityGroups failed")
	}
	if !slices.Equal(members2, members) {
		t.Errorf("member sets %v after the failed change, want %v", members2, members)
	}
	h.e.mu.Lock()
	rules := h.e.sgs["g"].Rules
	h.e.mu.Unlock()
	if !slices.Equal(rules, good[1].Rules) {
		t.Errorf("group g has rules %v after the failed change, want %v", rules, good[1].Rules)
	}
}

// TestFirewallSharesRuleSets: the vNICs with the same group list share one
// compiled rule set, before and after a rule change (compiled once for
// all of them); a vNIC with another list has its own; each vNIC keeps its
// own policy (addresses, generation).
func TestFirewallSharesRuleSets(t *testing.T) {
	h := newHarness(t, Config{}, true)
	g := model.SG{ID: "g", Rules: []model.Rule{udpRule(model.Inbound, 2000, "10.0.0.0/8", "")}}
	other := model.SG{ID: "h", Rules: []model.Rule{udpRule(model.Inbound, 3000, "10.0.0.0/8", "")}}
	if err := h.e.SetSecurityGroups([]model.SG{openSG(), g, other}); err != nil {
		t.Fatal(err)
	}
	lists := map[string][]string{"a": {"g"}, "b": {"g"}, "c": {"g"}, "d": {"g", "h"}}
	for i, id := range []string{"a", "b", "c", "d"} {
		n := nicOf(id, mac(byte(i+1)), 5, fmt.Sprintf("10.0.0.%d", i+1))
		n.SecurityGroups = lists[id]
		h.add(t, n)
	}
	check := func(when string) {
		t.Helper()
		h.e.mu.Lock()
		defer h.e.mu.Unlock()
		pa, pb, pc, pd := h.e.nics["a"].pol, h.e.nics["b"].pol, h.e.nics["c"].pol, h.e.nics["d"].pol
		if pa.RuleSet() != pb.RuleSet() || pa.RuleSet() != pc.RuleSet() {
			t.Errorf("%s: vNICs in the same groups do not share their rule set", when)
		}
		if pd.RuleSet() == pa.RuleSet() {
			t.Errorf("%s: a vNIC in other groups shares their rule set", when)
		}
		if pa == pb || pa.Generation() == pb.Generation() {
			t.Errorf("%s: two vNICs share a policy or its generation", when)
		}
		if len(h.e.fwRules) != 2 { // g, g+h
			t.Errorf("%s: %d compiled rule sets, want 2", when, len(h.e.fwRules))
		}
	}
	check("after nic add")
	g.Rules = append(slices.Clone(g.Rules), udpRule(model.Inbound, 2001, "10.0.0.0/8", ""))
	if err := h.e.SetSecurityGroups([]model.SG{openSG(), g, other}); err != nil {
		t.Fatal(err)
	}
	check("after a rule change")
}

// TestFirewallUnusedListForgotten: the compiled rules of a group list no
// vNIC uses any more are kept for a while; a change of one of its groups
// meanwhile must not leave them to a vNIC that takes that list again.
func TestFirewallUnusedListForgotten(t *testing.T) {
	for _, each := range []bool{false, true} {
		t.Run(map[bool]string{false: "SetSecurityGroups", true: "UpdateSecurityGroup"}[each], func(t *testing.T) {
			h := newHarness(t, Config{}, true)
			g := model.SG{ID: "g", Rules: []model.Rule{udpRule(model.Inbound, 2000, "10.0.0.0/8", "")}}
			k := model.SG{ID: "k", Rules: []model.Rule{udpRule(model.Inbound, 3000, "10.0.0.0/8", "")}}
			cur := []model.SG{openSG(), g, k}
			if err := h.e.SetSecurityGroups(cur); err != nil {
				t.Fatal(err)
			}
			a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
			for i := range 3 { // more vNICs than lists: unused lists are kept
				h.add(t, nicOf(fmt.Sprintf("o%d", i), mac(byte(10+i)), 5, fmt.Sprintf("10.0.0.%d", 10+i)))
			}
			nb := nicOf("b", mac(2), 5, "10.0.0.2")
			nb.SecurityGroups = []string{"g", "k"}
			h.add(t, nb)
			if err := h.e.DeleteNIC("b"); err != nil {
				t.Fatal(err)
			}
			k.Rules = append(slices.Clone(k.Rules), udpRule(model.Inbound, 3001, "10.0.0.0/8", ""))
			next := []model.SG{openSG(), g, k}
			if err := setGroups(h.e, each, cur, next); err != nil {
				t.Fatal(err)
			}
			b := h.add(t, nb)
			a.inject(udpFlow(t, true, 1000, 3001))
			h.step()
			if got := len(b.take()); got != 1 {
				t.Fatalf("a->b to the port of the rule added while no vNIC used b's groups: %d frames arrived, want 1", got)
			}
		})
	}
}

// TestFirewallRuleSetKeys: group lists that would read the same once
// joined (["a", "b"] and ["a\x00b"]) get different rule sets.
func TestFirewallRuleSetKeys(t *testing.T) {
	h := newHarness(t, Config{}, true)
	sgs := []model.SG{openSG(),
		{ID: "a", Rules: []model.Rule{udpRule(model.Inbound, 1, "10.0.0.0/8", "")}},
		{ID: "b", Rules: []model.Rule{udpRule(model.Inbound, 2, "10.0.0.0/8", "")}},
		{ID: "a\x00b", Rules: []model.Rule{udpRule(model.Inbound, 3, "10.0.0.0/8", "")}},
	}
	if err := h.e.SetSecurityGroups(sgs); err != nil {
		t.Fatal(err)
	}
	x := nicOf("x", mac(1), 5, "10.0.0.1")
	x.SecurityGroups = []string{"a", "b"}
	y := nicOf("y", mac(2), 5, "10.0.0.2")
	y.SecurityGroups = []string{"a\x00b"}
	h.add(t, x)
	h.add(t, y)
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	if h.e.nics["x"].pol.RuleSet() == h.e.nics["y"].pol.RuleSet() {
		t.Error(`groups ["a", "b"] and ["a\x00b"] share a rule set`)
	}
}
