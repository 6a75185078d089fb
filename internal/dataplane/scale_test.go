package dataplane

import (
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
)

// Control path at scale: the memory held by filtered vNICs and what a rule
// change costs when many vNICs use the group.

// scaleRules returns n distinct INBOUND TCP rules (one port each, CIDRs
// in 10/8), as an operator's group of n rules.
func scaleRules(n int) []model.Rule {
	rs := make([]model.Rule, n)
	for i := range rs {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
		rs[i] = model.Rule{Direction: model.Inbound, Protocol: 6, PortStart: uint32(1000 + i), PortEnd: uint32(1000 + i), CIDR: p}
	}
	return rs
}

// addScaleNICs adds m TAP vNICs in group sg (ids s0, s1...).
func addScaleNICs(t testing.TB, h *harness, m int, sg string) {
	t.Helper()
	for i := range m {
		n := nicOf(fmt.Sprintf("s%d", i), [6]byte{0x02, 1, 0, 0, byte(i >> 8), byte(i)}, 5,
			netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)}).String())
		n.SecurityGroups = []string{sg}
		h.add(t, n)
	}
}

// liveHeap returns the bytes of live heap objects after a collection.
func liveHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestFirewallMemoryScale applies n rule changes to a group of r rules used
// by m vNICs (no traffic): the live heap stays below a bound proportional
// to r + m (a shared compiled policy, connection tables that start small),
// not to r x m, nor to the number of changes; deleting every vNIC and
// group brings it back near where it started.
func TestFirewallMemoryScale(t *testing.T) {
	const (
		r = 1000
		m = 200
		n = 50
		// perNIC and perRule bound what one idle filtered vNIC (port,
		// elements, connection table, policy) and one compiled rule
		// hold.
		perNIC  = 64 << 10
		perRule = 4 << 10
		slack   = 4 << 20
	)
	h := newHarness(t, Config{}, true)
	base := liveHeap()
	rules := scaleRules(r + n)
	sgs := func(k int) []model.SG {
		return []model.SG{openSG(), {ID: "g", Rules: rules[:k]}}
	}
	if err := h.e.SetSecurityGroups(sgs(r)); err != nil {
		t.Fatal(err)
	}
	addScaleNICs(t, h, m, "g")
	for k := r + 1; k <= r+n; k++ {
		if err := h.e.SetSecurityGroups(sgs(k)); err != nil {
			t.Fatal(err)
		}
	}
	used := int64(liveHeap()) - int64(base)
	bound := int64(perNIC*m + perRule*(r+n) + slack)
	t.Logf("%d vNICs, %d rules, %d changes: live heap +%d KB (%d KB per vNIC), bound %d KB", m, r+n, n, used>>10, used/m>>10, bound>>10)
	if used > bound {
		t.Errorf("live heap grew by %d KB with %d vNICs and %d rules, want <= %d KB", used>>10, m, r+n, bound>>10)
	}
	for i := range m {
		if err := h.e.DeleteNIC(fmt.Sprintf("s%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.e.SetSecurityGroups([]model.SG{openSG()}); err != nil {
		t.Fatal(err)
	}
	left := int64(liveHeap()) - int64(base)
	t.Logf("after deleting everything: live heap %+d KB", left>>10)
	if left > slack {
		t.Errorf("live heap %+d KB after deleting every vNIC and group, want <= %d KB", left>>10, slack>>10)
	}
}

// BenchmarkSGRuleAdd measures a rule change (a rule added, then removed,
// alternately) on a group of r rules used by m vNICs, without traffic
// (manual engine: the wait for the workers is not measured). heap-MB is
// the live heap after the benchmark (with the engine and its vNICs).
func BenchmarkSGRuleAdd(b *testing.B) {
	for _, tc := range []struct{ m, r int }{{10, 100}, {1000, 100}, {1000, 1000}} {
		b.Run(fmt.Sprintf("vnics=%d/rules=%d", tc.m, tc.r), func(b *testing.B) {
			h := newHarness(b, Config{}, true)
			rules := scaleRules(tc.r + 1)
			a := []model.SG{openSG(), {ID: "g", Rules: rules[:tc.r]}}
			c := []model.SG{openSG(), {ID: "g", Rules: slices.Clone(rules)}}
			if err := h.e.SetSecurityGroups(a); err != nil {
				b.Fatal(err)
			}
			addScaleNICs(b, h, tc.m, "g")
			b.ResetTimer()
			for i := range b.N {
				sgs := a
				if i%2 == 0 {
					sgs = c
				}
				if err := h.e.SetSecurityGroups(sgs); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(liveHeap())/(1<<20), "heap-MB")
		})
	}
}

// TestSGRuleChangeAllocs: a rule change on a group used by 10 vNICs
// allocates as much whatever the number of other groups and the size of
// the group (the change is found by a merge walk of the sorted lists, the
// compilation allocates a fixed number of tables).
func TestSGRuleChangeAllocs(t *testing.T) {
	var want float64
	for _, tc := range []struct{ groups, rules int }{{0, 10}, {0, 1000}, {300, 10}, {300, 1000}} {
		h := newHarness(t, Config{}, true)
		others := []model.SG{openSG()}
		for i := range tc.groups {
			others = append(others, model.SG{ID: fmt.Sprintf("other-%04d", i), Rules: scaleRules(3)})
		}
		rules := scaleRules(tc.rules + 1)
		a := append(slices.Clone(others), model.SG{ID: "g", Rules: rules[:tc.rules]})
		c := append(slices.Clone(others), model.SG{ID: "g", Rules: rules})
		for _, l := range [][]model.SG{a, c} {
			slices.SortFunc(l, func(x, y model.SG) int { return strings.Compare(x.ID, y.ID) })
		}
		if err := h.e.SetSecurityGroups(a); err != nil {
			t.Fatal(err)
		}
		addScaleNICs(t, h, 10, "g")
		i := 0
		got := testing.AllocsPerRun(20, func() {
			sgs := a
			if i%2 == 0 {
				sgs = c
			}
			i++
			if err := h.e.SetSecurityGroups(sgs); err != nil {
				t.Fatal(err)
			}
		})
		t.Logf("%d other groups, %d rules: %v allocations per change", tc.groups, tc.rules, got)
		if want == 0 {
			want = got
		}
		if got != want {
			t.Errorf("%d other groups, %d rules: %v allocations per change, want %v as with no other group and 10 rules", tc.groups, tc.rules, got, want)
		}
	}
}

// TestSGRuleChangeBytes: the memory a rule change on a group used by 10
// vNICs allocates does not grow with the number of other vNICs (the
// snapshot shares the entries of the vNICs the change does not touch).
func TestSGRuleChangeBytes(t *testing.T) {
	const changes = 50
	var base float64
	for _, others := range []int{0, 3000} {
		h := newHarness(t, Config{}, true)
		rules := scaleRules(101)
		a := []model.SG{openSG(), {ID: "g", Rules: rules[:100]}}
		c := []model.SG{openSG(), {ID: "g", Rules: rules}}
		if err := h.e.SetSecurityGroups(a); err != nil {
			t.Fatal(err)
		}
		for i := range others {
			h.add(t, nicOf(fmt.Sprintf("o%d", i), [6]byte{0x02, 2, 0, 0, byte(i >> 8), byte(i)}, 6,
				netip.AddrFrom4([4]byte{10, 201, byte(i >> 8), byte(i)}).String()))
		}
		addScaleNICs(t, h, 10, "g")
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for i := range changes {
			sgs := a
			if i%2 == 0 {
				sgs = c
			}
			if err := h.e.SetSecurityGroups(sgs); err != nil {
				t.Fatal(err)
			}
		}
		runtime.ReadMemStats(&after)
		got := float64(after.TotalAlloc-before.TotalAlloc) / changes
		t.Logf("%d other vNICs: %.0f bytes allocated per change", others, got)
		if others == 0 {
			base = got
		} else if got > base+2048 {
			t.Errorf("%d other vNICs: %.0f bytes allocated per rule change, want <= %.0f (as with none, + 2 KB)", others, got, base+2048)
		}
	}
}

// TestSGChangeFailsWhole: a group list that does not compile (a rule the
// model would refuse) changes nothing, neither the groups nor the vNICs'
// policies, and the next valid change applies as if it had not happened.
func TestSGChangeFailsWhole(t *testing.T) {
	h := newHarness(t, Config{}, true)
	rules := scaleRules(3)
	good := []model.SG{{ID: "g", Rules: rules[:2]}, openSG(), {ID: "z", Members: []netip.Addr{netip.MustParseAddr("10.9.9.9")}}}
	if err := h.e.SetSecurityGroups(good); err != nil {
		t.Fatal(err)
	}
	addScaleNICs(t, h, 3, "g")
	pol := h.e.nics["s0"].pol
	bad := []model.SG{
		{ID: "a", Rules: rules[2:]}, // a new group,
		{ID: "g", Rules: append(slices.Clone(rules[:2]), model.Rule{Direction: model.Inbound, Protocol: 300, CIDR: rules[0].CIDR})},
		openSG(), // "z" removed
	}
	if err := h.e.SetSecurityGroups(bad); err == nil {
		t.Fatal("a rule of protocol 300 was accepted")
	}
	if got := h.e.nics["s0"].pol; got != pol {
		t.Error("the failed change gave s0 a new policy")
	}
	if len(h.e.sgs) != 3 || len(h.e.sgs["g"].Rules) != 2 || len(h.e.sgs["z"].Members) != 1 || h.e.sgs["a"].ID != "" {
		t.Errorf("groups after the failed change: %v, want those before", h.e.sgs)
	}
	next := []model.SG{{ID: "g", Rules: rules}, openSG(), {ID: "z", Members: []netip.Addr{netip.MustParseAddr("10.9.9.9")}}}
	if err := h.e.SetSecurityGroups(next); err != nil {
		t.Fatal(err)
	}
	if got := h.e.nics["s0"].pol; got == pol || got.RuleSet() != h.e.nics["s2"].pol.RuleSet() {
		t.Error("the valid change did not give the vNICs of g one new shared rule set")
	}
	if len(h.e.sgs["g"].Rules) != 3 {
		t.Errorf("group g has %d rules, want 3", len(h.e.sgs["g"].Rules))
	}
}

// TestUpdateSecurityGroupThenSet: groups changed one at a time
// (UpdateSecurityGroup) and then with a whole list (SetSecurityGroups)
// end as the list says; a change that does not compile changes nothing.
func TestUpdateSecurityGroupThenSet(t *testing.T) {
	h := newHarness(t, Config{}, true)
	rules := scaleRules(3)
	if err := h.e.SetSecurityGroups([]model.SG{{ID: "g", Rules: rules[:1]}}); err != nil {
		t.Fatal(err)
	}
	addScaleNICs(t, h, 2, "g")
	ids := func() []string {
		var l []string
		for id := range h.e.sgs {
			l = append(l, id)
		}
		slices.Sort(l)
		return l
	}
	steps := []struct {
		what string
		do   func() error
		want []string // group ids after
		ok   bool
	}{
		{"add h", func() error { return h.e.UpdateSecurityGroup("h", &model.SG{ID: "h", Rules: rules[1:2]}) }, []string{"g", "h"}, true},
		{"rule inserted in g", func() error { return h.e.UpdateSecurityGroup("g", &model.SG{ID: "g", Rules: rules[:2]}) }, []string{"g", "h"}, true},
		{"bad rule in g", func() error {
			return h.e.UpdateSecurityGroup("g", &model.SG{ID: "g", Rules: []model.Rule{{Protocol: 300, CIDR: rules[0].CIDR}}})
		}, []string{"g", "h"}, false},
		{"wrong id", func() error { return h.e.UpdateSecurityGroup("g", &model.SG{ID: "x"}) }, []string{"g", "h"}, false},
		{"list without h", func() error { return h.e.SetSecurityGroups([]model.SG{{ID: "g", Rules: rules[:2]}}) }, []string{"g"}, true},
		{"remove g", func() error { return h.e.UpdateSecurityGroup("g", nil) }, nil, true},
		{"list with both", func() error {
			return h.e.SetSecurityGroups([]model.SG{{ID: "g", Rules: rules}, {ID: "h"}})
		}, []string{"g", "h"}, true},
	}
	for _, st := range steps {
		if err := st.do(); (err == nil) != st.ok {
			t.Fatalf("%s: error %v, want success %v", st.what, err, st.ok)
		}
		if got := ids(); !slices.Equal(got, st.want) {
			t.Fatalf("%s: groups %v, want %v", st.what, got, st.want)
		}
	}
	if n := len(h.e.sgs["g"].Rules); n != 3 {
		t.Errorf("g has %d rules, want 3", n)
	}
	if p0, p1 := h.e.nics["s0"].pol, h.e.nics["s1"].pol; p0.RuleSet() != p1.RuleSet() {
		t.Error("the vNICs of g do not share one rule set")
	}
}

// BenchmarkSGRuleAddBusyWorker measures a rule change on a group used by
// 10 vNICs while the worker is busy forwarding (a port has frames at
// every poll): the change returns once the worker has moved to it, at
// its next batch.
func BenchmarkSGRuleAddBusyWorker(b *testing.B) {
	h := newHarnessFds(b, Config{Workers: 1}, false, true)
	rules := scaleRules(11)
	a, c := model.SG{ID: "g", Rules: rules[:10]}, model.SG{ID: "g", Rules: rules}
	groupOf(b, h, a, 10)
	keepBusy(b, h)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		sg := &a
		if i%2 == 0 {
			sg = &c
		}
		if err := h.e.UpdateSecurityGroup("g", sg); err != nil {
			b.Fatal(err)
		}
	}
}

// groupOf sets the harness's groups to the open one and sg, and adds m
// vNICs in sg.
func groupOf(t testing.TB, h *harness, sg model.SG, m int) {
	t.Helper()
	if err := h.e.SetSecurityGroups([]model.SG{openSG(), sg}); err != nil {
		t.Fatal(err)
	}
	addScaleNICs(t, h, m, sg.ID)
}

// keepBusy adds vNIC src, which has frames for vNIC dst at every poll,
// and returns once the worker forwards them.
func keepBusy(t testing.TB, h *harness) {
	t.Helper()
	f := frame{data: udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 64, false)}
	h.replays = map[string][]frame{"src": replayBatch(f, 8)}
	dst := h.add(t, nicOf("dst", mac(2), 5, "10.0.0.2"))
	dst.count = true                              // before any frame goes to it
	h.add(t, nicOf("src", mac(1), 5, "10.0.0.1")) // polled at once, then at every batch
	waitFor(t, "frames forwarded", func() bool { return dst.written.Load() > 1000 })
}
