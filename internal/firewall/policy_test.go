package firewall

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/packet"
)

// refAllows is the naive reference: a loop over every rule.
func refAllows(ips []netip.Addr, groups []model.SG, members map[string][]netip.Addr,
	dir Direction, proto uint8, src, dst netip.Addr, sport, dport uint16) bool {
	hasOut := false
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Direction == model.Outbound {
				hasOut = true
			}
		}
	}
	if dir == FromVM && !hasOut {
		for _, ip := range ips {
			if ip == src {
				return true
			}
		}
		return proto == 17 && src == netip.IPv4Unspecified() && dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) &&
			sport == 68 && dport == 67
	}
	peer := src
	want := model.Inbound
	if dir == FromVM {
		peer, want = dst, model.Outbound
	}
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Direction != want || (r.Protocol != -1 && r.Protocol != int32(proto)) {
				continue
			}
			anyPort := r.Protocol == 132 && r.PortStart == 0 && r.PortEnd == 0 // SCTP rule without ports
			if hasPorts(r.Protocol) && !anyPort && (uint32(dport) < r.PortStart || uint32(dport) > r.PortEnd) {
				continue
			}
			if r.CIDR.IsValid() {
				if r.CIDR.Masked().Contains(peer) {
					return true
				}
				continue
			}
			for _, m := range members[r.SG] {
				if m == peer {
					return true
				}
			}
		}
	}
	return false
}

// randAddr picks from a small universe so that rules and packets meet.
func randAddr(rng *rand.Rand, v6 bool) netip.Addr {
	if v6 {
		b := netip.MustParseAddr("2001:db8::").As16()
		b[14] = byte(rng.IntN(4))
		b[15] = byte(rng.IntN(64))
		if rng.IntN(8) == 0 {
			b[0] = 0xfd
		}
		return netip.AddrFrom16(b)
	}
	b := [4]byte{10, 0, byte(rng.IntN(4)), byte(rng.IntN(64))}
	if rng.IntN(8) == 0 {
		b[0] = 192
	}
	return netip.AddrFrom4(b)
}

var testProtos = []int32{-1, 1, 6, 17, 58, 132, 47}

func randRule(rng *rand.Rand, sgs []string) model.Rule {
	r := model.Rule{Direction: model.RuleDirection(rng.IntN(2)), Protocol: testProtos[rng.IntN(len(testProtos))]}
	if hasPorts(r.Protocol) {
		a, b := uint32(rng.IntN(40)), uint32(rng.IntN(40))
		if rng.IntN(10) == 0 {
			a, b = 0, 65535
		}
		r.PortStart, r.PortEnd = min(a, b), max(a, b)
	}
	if rng.IntN(3) == 0 {
		r.SG = sgs[rng.IntN(len(sgs))]
		return r
	}
	v6 := rng.IntN(2) == 0
	a := randAddr(rng, v6)
	bits := rng.IntN(a.BitLen() + 1)
	if rng.IntN(4) == 0 {
		bits = a.BitLen() - rng.IntN(8)
	}
	r.CIDR = netip.PrefixFrom(a, bits) // host bits kept, as the model does
	return r
}

func TestClassifierDifferential(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 4242))
	sgNames := []string{"g0", "g1", "g2", "missing"}
	cases, allowed := 0, 0
	for iter := range 300 {
		members := map[string][]netip.Addr{}
		sets := map[string]*MemberSet{}
		for _, g := range sgNames[:3] {
			var ms []netip.Addr
			for range rng.IntN(6) {
				ms = append(ms, randAddr(rng, rng.IntN(2) == 0))
			}
			members[g] = ms
			sets[g] = NewMemberSet(ms)
		}
		nrules := []int{0, 1, 3, 10, 40, 150}[iter%6]
		var groups []model.SG
		for gi := range 1 + rng.IntN(3) {
			g := model.SG{ID: fmt.Sprint("sg", gi)}
			for range nrules {
				g.Rules = append(g.Rules, randRule(rng, sgNames))
			}
			groups = append(groups, g)
		}
		ips := []netip.Addr{randAddr(rng, false), randAddr(rng, true)}
		pol := mustCompile(t, CompileInput{Generation: 1, IPs: ips, Groups: groups, Members: sets})
		check := func(phase string) {
			for range 60 {
				v6 := rng.IntN(2) == 0
				src, dst := randAddr(rng, v6), randAddr(rng, v6)
				dir := Direction(rng.IntN(2))
				if rng.IntN(4) == 0 {
					if dir == FromVM {
						src = ips[rng.IntN(2)]
					}
					if src.Is4() != dst.Is4() {
						dst = randAddr(rng, src.Is6())
					}
				}
				proto := uint8(testProtos[1+rng.IntN(len(testProtos)-1)])
				if rng.IntN(10) == 0 {
					proto = uint8(rng.IntN(256))
				}
				sport, dport := uint16(rng.IntN(45)), uint16(rng.IntN(45))
				if !hasPorts(int32(proto)) {
					sport, dport = 0, 0
				}
				if rng.IntN(50) == 0 {
					src, dst, proto, sport, dport = netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255"), 17, 68, 67
				}
				got := pol.Allows(dir, proto, src, dst, sport, dport)
				want := refAllows(ips, groups, members, dir, proto, src, dst, sport, dport)
				if got != want {
					t.Fatalf("%s iter %d: %v proto %d %v:%d -> %v:%d: compiled %v, reference %v\nrules %+v\nmembers %v",
						phase, iter, dir, proto, src, sport, dst, dport, got, want, groups, members)
				}
				// The frame path (parsing, ports, family) must agree: a
				// first packet is accepted exactly when the policy allows it.
				p := pk{src: src.String(), dst: dst.String(), proto: proto, sport: sport, dport: dport, flags: syn}
				switch {
				case proto == 1 && src.Is4():
					p.sport = packet.ICMPv4Echo
				case proto == 58 && src.Is6():
					p.sport = packet.ICMPv6EchoRequest
				}
				wantV := DropNoRule
				if want {
					wantV = Accept
				}
				if src.Is6() && packet.IsIPv6ExtHeader(proto) {
					wantV = DropInvalid // no such header in the frame: malformed
				}
				ct := NewConntrack(1)
				x := explainReadOnly(t, ct, p.build(), dir, pol, 0)
				if v := ct.Decide(p.build(), dir, pol, 0); v != wantV || x.Verdict != v {
					t.Fatalf("%s iter %d: Filter of %+v %v: %v, want %v, Explain %v", phase, iter, p, dir, v, wantV, x.Verdict)
				}
				// The rule Explain names allows the packet on its own.
				if x.Match.Kind == MatchRule {
					one := []model.SG{{ID: x.Match.Rule.Group, Rules: []model.Rule{x.Match.Rule.Rule}}}
					if !refAllows(ips, one, members, dir, proto, src, dst, sport, dport) {
						t.Fatalf("%s iter %d: %+v %v: Explain names rule %+v, which does not allow it", phase, iter, p, dir, x.Match.Rule)
					}
				}
				if x.Evaluated && (x.Match.Kind != MatchNone) != want {
					t.Fatalf("%s iter %d: %+v %v: Explain's match %+v, reference allows %v", phase, iter, p, dir, x.Match, want)
				}
				cases++
				if want {
					allowed++
				}
			}
		}
		check("initial")
		// A member change updates the shared set only.
		g := sgNames[rng.IntN(3)]
		ms := []netip.Addr{randAddr(rng, false), randAddr(rng, true)}
		referenced := false
		for _, sg := range groups {
			for _, r := range sg.Rules {
				referenced = referenced || r.SG == g
			}
		}
		before := pol.Generation()
		sets[g].Set(ms)
		members[g] = ms
		if referenced && pol.Generation() == before {
			t.Fatal("member change did not change the policy generation")
		}
		check("after member change")
	}
	if cases < 10000 {
		t.Fatalf("only %d cases", cases)
	}
	// Both outcomes must be well represented for the test to mean much.
	if allowed < cases/10 || allowed > cases*9/10 {
		t.Fatalf("%d of %d cases allowed: unbalanced", allowed, cases)
	}
	t.Logf("%d cases, %d allowed", cases, allowed)
}

func TestCompileErrors(t *testing.T) {
	bad := []model.Rule{
		{Direction: 2, Protocol: 6, CIDR: netip.MustParsePrefix("10.0.0.0/8")},
		{Direction: 0, Protocol: 300, CIDR: netip.MustParsePrefix("10.0.0.0/8")},
		{Direction: 0, Protocol: 6, PortStart: 10, PortEnd: 5, CIDR: netip.MustParsePrefix("10.0.0.0/8")},
		{Direction: 0, Protocol: 17, PortStart: 1, PortEnd: 70000, CIDR: netip.MustParsePrefix("10.0.0.0/8")},
		{Direction: 0, Protocol: 6},
		{Direction: 0, Protocol: 6, CIDR: netip.MustParsePrefix("10.0.0.0/8"), SG: "x"},
	}
	for i, r := range bad {
		if _, err := Compile(CompileInput{Groups: []model.SG{{ID: "sg", Rules: []model.Rule{r}}}}); err == nil {
			t.Errorf("rule %d %+v: no error", i, r)
		}
	}
}

func TestZeroMaskIsPerFamily(t *testing.T) {
	pol := mustCompile(t, CompileInput{Groups: []model.SG{{ID: "sg", Rules: []model.Rule{
		cidrRule(model.Inbound, -1, 0, 0, "0.0.0.0/0")}}}})
	if !pol.Allows(ToVM, 6, netip.MustParseAddr("1.2.3.4"), netip.MustParseAddr("10.0.0.1"), 1, 2) {
		t.Error("0.0.0.0/0 does not allow IPv4")
	}
	if pol.Allows(ToVM, 6, netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"), 1, 2) {
		t.Error("0.0.0.0/0 allows IPv6")
	}
}

func TestSCTPRuleWithoutPorts(t *testing.T) {
	any4 := "0.0.0.0/0"
	tests := []struct {
		name  string
		rule  model.Rule
		port  uint16
		proto uint8
		want  bool
	}{
		{"SCTP without ports, any port", cidrRule(model.Inbound, 132, 0, 0, any4), 5000, 132, true},
		{"SCTP without ports, port 0", cidrRule(model.Inbound, 132, 0, 0, any4), 0, 132, true},
		{"SCTP range, inside", cidrRule(model.Inbound, 132, 6000, 6001, any4), 6001, 132, true},
		{"SCTP range, outside", cidrRule(model.Inbound, 132, 6000, 6001, any4), 5000, 132, false},
		{"TCP 0-0 is port 0 only", cidrRule(model.Inbound, 6, 0, 0, any4), 5000, 6, false},
		{"UDP 0-0 is port 0 only", cidrRule(model.Inbound, 17, 0, 0, any4), 0, 17, true},
		{"SCTP rule, UDP packet", cidrRule(model.Inbound, 132, 0, 0, any4), 5000, 17, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pol := mustCompile(t, CompileInput{Generation: 1, IPs: addrs("10.0.0.1"),
				Groups: []model.SG{{ID: "g", Rules: []model.Rule{tc.rule}}}})
			got := pol.Allows(ToVM, tc.proto, netip.MustParseAddr("10.9.9.9"), netip.MustParseAddr("10.0.0.1"), 1234, tc.port)
			if got != tc.want {
				t.Errorf("Allows = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestCompileAllocsIndependentOfRules: compiling a group allocates a fixed
// number of times whatever its number of rules (the tables it keeps; the
// scratch space of the sweeps is shared), so that a rule change costs
// memory in proportion to what the compiled rules hold, not in growing
// slices and maps.
func TestCompileAllocsIndependentOfRules(t *testing.T) {
	rules := func(n int) []model.Rule {
		rs := make([]model.Rule, n)
		for i := range rs {
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
			proto := []int32{6, 17}[i%2]
			rs[i] = model.Rule{Direction: model.Inbound, Protocol: proto, PortStart: uint32(1000 + i), PortEnd: uint32(1000 + i), CIDR: p}
		}
		return rs
	}
	var want float64
	for _, n := range []int{10, 100, 1000, 3000} {
		groups := []model.SG{{ID: "g", Rules: rules(n)}}
		got := testing.AllocsPerRun(20, func() {
			if _, err := CompileRuleSet(groups, nil); err != nil {
				t.Fatal(err)
			}
		})
		if want == 0 {
			want = got
		}
		t.Logf("%d rules: %v allocations", n, got)
		if got != want {
			t.Errorf("%d rules: %v allocations, want %v as with 10 rules", n, got, want)
		}
	}
}

// TestCompileDuplicateRules: a rule present in two groups of a list, or
// twice in the same form in one group (ports of a protocol without ports),
// allows what it allows once, and Explain names its first occurrence.
func TestCompileDuplicateRules(t *testing.T) {
	icmp := func(port uint32) model.Rule {
		return model.Rule{Direction: model.Inbound, Protocol: 1, PortStart: port, PortEnd: port, CIDR: netip.MustParsePrefix("192.0.2.0/24")}
	}
	tcp := cidrRule(model.Inbound, 6, 22, 22, "198.51.100.0/24")
	groups := []model.SG{
		{ID: "a", Rules: []model.Rule{icmp(1), icmp(2), tcp}},
		{ID: "b", Rules: []model.Rule{tcp, icmp(3)}},
	}
	p := mustCompile(t, CompileInput{Generation: 1, IPs: addrs(vm4), Groups: groups})
	tests := []struct {
		proto uint8
		src   string
		dport uint16
		want  bool
		rule  RuleRef
	}{
		{1, "192.0.2.7", 0, true, RuleRef{Group: "a", Rule: icmp(1)}},
		{6, "198.51.100.9", 22, true, RuleRef{Group: "a", Rule: tcp}},
		{6, "198.51.100.9", 23, false, RuleRef{}},
		{1, "203.0.113.1", 0, false, RuleRef{}},
	}
	for _, tt := range tests {
		src := netip.MustParseAddr(tt.src)
		if got := p.Allows(ToVM, tt.proto, src, netip.MustParseAddr(vm4), 1234, tt.dport); got != tt.want {
			t.Errorf("proto %d from %s to port %d: allowed %v, want %v", tt.proto, tt.src, tt.dport, got, tt.want)
		}
		k := flowKey{dir: ToVM, fam: fam4, proto: tt.proto, src: addrOf(src), dst: addrOf(netip.MustParseAddr(vm4)), sport: 1234, dport: tt.dport, portsValid: tt.proto == 6}
		ok, m := p.explain(&k)
		if ok != tt.want || ok && m.Rule != tt.rule {
			t.Errorf("proto %d from %s to port %d: explain %v %+v, want %v %+v", tt.proto, tt.src, tt.dport, ok, m.Rule, tt.want, tt.rule)
		}
	}
}

// TestWithRuleDifferential adds random rules one at a time to groups of
// random rules, in place (WithRule) when it can, by compiling again when
// it cannot, and checks at every step that the policy decides as the
// reference loop over the rules, that Explain names a rule that allows
// the packet and that the rule set matches a fresh compilation.
func TestWithRuleDifferential(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 77))
	sgNames := []string{"g0", "g1"}
	members := map[string][]netip.Addr{"g0": {randAddr(rng, false), randAddr(rng, true)}, "g1": nil}
	sets := map[string]*MemberSet{"g0": NewMemberSet(members["g0"]), "g1": NewMemberSet(nil)}
	inPlace, again := 0, 0
	for iter := range 40 {
		var groups []model.SG
		for gi := range 1 + rng.IntN(3) {
			g := model.SG{ID: fmt.Sprint("sg", gi)}
			for range rng.IntN(30) {
				g.Rules = append(g.Rules, randRule(rng, sgNames))
			}
			groups = append(groups, g)
		}
		rs, err := CompileRuleSet(groups, sets)
		if err != nil {
			t.Fatal(err)
		}
		ips := []netip.Addr{randAddr(rng, false), randAddr(rng, true)}
		for step := range 40 {
			// Insert a rule (mostly CIDR rules of protocols already used).
			next := slices.Clone(groups)
			gi := rng.IntN(len(next))
			r := randRule(rng, sgNames)
			if rng.IntN(4) != 0 && len(next[gi].Rules) > 0 {
				old := next[gi].Rules[rng.IntN(len(next[gi].Rules))]
				if old.Protocol >= 0 {
					r.Protocol, r.Direction = old.Protocol, old.Direction
					if !hasPorts(r.Protocol) {
						r.PortStart, r.PortEnd = 0, 0
					}
				}
				if r.SG != "" {
					r.SG, r.CIDR = "", netip.PrefixFrom(randAddr(rng, rng.IntN(2) == 0), 24+rng.IntN(9))
					if r.CIDR.Addr().Is6() {
						r.CIDR = netip.PrefixFrom(r.CIDR.Addr(), 100+rng.IntN(29))
					}
				}
			}
			ri := rng.IntN(len(next[gi].Rules) + 1)
			next[gi].Rules = slices.Insert(slices.Clone(next[gi].Rules), ri, r)
			if nrs, ok := rs.WithRule(next, gi, ri); ok {
				rs = nrs
				inPlace++
			} else {
				if rs, err = CompileRuleSet(next, sets); err != nil {
					t.Fatal(err)
				}
				again++
			}
			groups = next
			pol, err := NewPolicy(1, ips, rs)
			if err != nil {
				t.Fatal(err)
			}
			fresh, err := CompileRuleSet(groups, sets)
			if err != nil {
				t.Fatal(err)
			}
			freshPol, _ := NewPolicy(1, ips, fresh)
			for range 40 {
				v6 := rng.IntN(2) == 0
				src, dst := randAddr(rng, v6), randAddr(rng, v6)
				dir := Direction(rng.IntN(2))
				proto := uint8(testProtos[1+rng.IntN(len(testProtos)-1)])
				sport, dport := uint16(rng.IntN(45)), uint16(rng.IntN(45))
				if !hasPorts(int32(proto)) {
					sport, dport = 0, 0
				}
				want := refAllows(ips, groups, members, dir, proto, src, dst, sport, dport)
				if got := pol.Allows(dir, proto, src, dst, sport, dport); got != want {
					t.Fatalf("iter %d step %d: %v proto %d %v -> %v:%d: %v, reference %v\nrules %+v", iter, step, dir, proto, src, dst, dport, got, want, groups)
				}
				if got := freshPol.Allows(dir, proto, src, dst, sport, dport); got != want {
					t.Fatalf("iter %d step %d: fresh compilation says %v, reference %v", iter, step, got, want)
				}
				k := flowKey{dir: dir, fam: fam4, proto: proto, src: addrOf(src), dst: addrOf(dst), sport: sport, dport: dport, portsValid: hasPorts(int32(proto))}
				if v6 {
					k.fam = fam6
				}
				ok, m := pol.explain(&k)
				if ok != want {
					t.Fatalf("iter %d step %d: explain says %v, reference %v", iter, step, ok, want)
				}
				if m.Kind == MatchRule {
					one := []model.SG{{ID: m.Rule.Group, Rules: []model.Rule{m.Rule.Rule}}}
					if !refAllows(ips, one, members, dir, proto, src, dst, sport, dport) || !slices.ContainsFunc(groups, func(g model.SG) bool {
						return g.ID == m.Rule.Group && slices.Contains(g.Rules, m.Rule.Rule)
					}) {
						t.Fatalf("iter %d step %d: explain names %+v, which is not a rule of the groups allowing the packet", iter, step, m.Rule)
					}
				}
			}
		}
	}
	t.Logf("%d rules added in place, %d by compiling again", inPlace, again)
	if inPlace < again {
		t.Errorf("only %d of %d rules added in place", inPlace, inPlace+again)
	}
}

// TestWithRuleBytes: adding a rule in place copies the tables the rule
// touches and the rule references, not the rule set's fixed parts (the
// protocol index of each table, 2 KB in all, is shared): on a rule set
// of two rules the copy stays under 1 KB.
func TestWithRuleBytes(t *testing.T) {
	tcp := func(port uint32) model.Rule {
		return model.Rule{Direction: model.Inbound, Protocol: 6, PortStart: port, PortEnd: port,
			CIDR: netip.MustParsePrefix("10.1.0.0/16")}
	}
	groups := []model.SG{{ID: "g", Rules: []model.Rule{tcp(22), tcp(80)}}}
	rs, err := CompileRuleSet(groups, nil)
	if err != nil {
		t.Fatal(err)
	}
	next := []model.SG{{ID: "g", Rules: []model.Rule{tcp(22), tcp(80), tcp(443)}}}
	if _, ok := rs.WithRule(next, 0, 2); !ok {
		t.Fatal("WithRule refused a TCP rule on a table with TCP rules")
	}
	const runs = 100
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		rs.WithRule(next, 0, 2)
	}
	runtime.ReadMemStats(&after)
	if got := (after.TotalAlloc - before.TotalAlloc) / runs; got > 1024 {
		t.Errorf("WithRule on a 2-rule set allocates %d bytes, want <= 1024", got)
	}
}
