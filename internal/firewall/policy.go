package firewall

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/butterfly-go/butterfly/internal/model"
)

// Direction is the way a packet crosses the vNIC.
type Direction uint8

// Directions.
const (
	// ToVM is a packet arriving at the vNIC (INBOUND rules apply).
	ToVM Direction = 0
	// FromVM is a packet sent by the VM (OUTBOUND rules apply).
	FromVM Direction = 1
)

// String names the direction.
func (d Direction) String() string {
	if d == ToVM {
		return "to_vm"
	}
	return "from_vm"
}

// addr is an address as two big-endian halves; IPv4 uses lo only.
type addr struct{ hi, lo uint64 }

func (a addr) less(b addr) bool { return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo) }

func (a addr) inc() (addr, bool) {
	lo := a.lo + 1
	hi := a.hi
	if lo == 0 {
		hi++
		if hi == 0 {
			return addr{}, false
		}
	}
	return addr{hi, lo}, true
}

func (a addr) netip(fam int) netip.Addr {
	if fam == fam4 {
		return netip.AddrFrom4([4]byte{byte(a.lo >> 24), byte(a.lo >> 16), byte(a.lo >> 8), byte(a.lo)})
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], a.hi)
	binary.BigEndian.PutUint64(b[8:], a.lo)
	return netip.AddrFrom16(b)
}

func addrOf(a netip.Addr) addr {
	if a.Is4() {
		b := a.As4()
		return addr{0, uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return addr{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func addrFromBytes(b []byte) addr {
	if len(b) == 4 {
		return addr{0, uint64(binary.BigEndian.Uint32(b))}
	}
	return addr{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:16])}
}

// prefixRange returns the first and last address of p (host bits cleared).
func prefixRange(p netip.Prefix) (lo, hi addr) {
	a := addrOf(p.Masked().Addr())
	bitsTotal := 128
	if p.Addr().Is4() {
		bitsTotal = 32
	}
	host := bitsTotal - p.Bits()
	lo, hi = a, a
	switch {
	case host == 0:
	case host < 64:
		hi.lo |= 1<<host - 1
	case host == 64:
		hi.lo = ^uint64(0)
	default: // IPv6 only
		hi.lo = ^uint64(0)
		if host == 128 {
			hi.hi = ^uint64(0)
		} else {
			hi.hi |= 1<<(host-64) - 1
		}
	}
	return lo, hi
}

// family indexes tables: 0 IPv4, 1 IPv6.
const (
	fam4 = 0
	fam6 = 1
)

// MemberSet is the set of member addresses of one security group, shared
// by every policy whose rules refer to the group. Set replaces the members
// atomically: policies see the change at once and are not rebuilt. The zero
// value is an empty set.
type MemberSet struct {
	cur     atomic.Pointer[memberList]
	version atomic.Uint64
}

type memberList struct{ v4, v6 []addr }

// NewMemberSet returns a set holding members.
func NewMemberSet(members []netip.Addr) *MemberSet {
	s := &MemberSet{}
	s.Set(members)
	return s
}

// Set replaces the members. Each call bumps the set's version, which is
// part of the generation of every policy using it, so flows admitted
// through a removed member are re-evaluated at their next packet.
func (s *MemberSet) Set(members []netip.Addr) {
	l := &memberList{}
	for _, m := range members {
		m = m.Unmap()
		if m.Is4() {
			l.v4 = append(l.v4, addrOf(m))
		} else if m.Is6() {
			l.v6 = append(l.v6, addrOf(m))
		}
	}
	cmpAddr := func(a, b addr) int {
		if c := cmp.Compare(a.hi, b.hi); c != 0 {
			return c
		}
		return cmp.Compare(a.lo, b.lo)
	}
	slices.SortFunc(l.v4, cmpAddr)
	slices.SortFunc(l.v6, cmpAddr)
	l.v4 = slices.Compact(l.v4)
	l.v6 = slices.Compact(l.v6)
	s.cur.Store(l)
	s.version.Add(1)
}

// Len returns the number of members.
func (s *MemberSet) Len() int {
	l := s.cur.Load()
	if l == nil {
		return 0
	}
	return len(l.v4) + len(l.v6)
}

func (s *MemberSet) contains(fam int, a addr) bool {
	l := s.cur.Load()
	if l == nil {
		return false
	}
	v := l.v4
	if fam == fam6 {
		v = l.v6
	}
	i, j := 0, len(v)
	for i < j {
		h := int(uint(i+j) >> 1)
		if v[h].less(a) {
			i = h + 1
		} else {
			j = h
		}
	}
	return i < len(v) && v[i] == a
}

// RuleSet is the compiled classifier of a list of security groups: the
// union of their rules, with the shared member sets of the groups they
// refer to. It is immutable, safe for concurrent use and shared by the
// policies of every vNIC in the same groups; NewPolicy adds what is
// particular to one vNIC.
type RuleSet struct {
	tables      [2][2]table // [Direction][family]
	hasOutbound bool
	sets        []*MemberSet
	groups      []model.SG // compiled from (read-only), for Explain
}

// Policy is one vNIC's compiled, immutable policy: a shared RuleSet, the
// vNIC's addresses (default egress) and a generation. It is safe for
// concurrent use.
type Policy struct {
	gen   uint64
	rules *RuleSet
	ips   [2][]addr // sorted, per family
}

// Generation returns the effective generation: the policy's generation
// (low 32 bits of NewPolicy's gen) in the high 32 bits, and the sum of the
// versions of the member sets the policy uses in the low 32 bits. It
// changes whenever the vNIC gets a new policy (with a new gen) or one of
// its member sets changes, and two policies of different gens never share
// it.
func (p *Policy) Generation() uint64 {
	var v uint64
	for _, s := range p.rules.sets {
		v += s.version.Load()
	}
	return p.gen<<32 | v&0xffffffff
}

// RuleSet returns the policy's shared compiled rules.
func (p *Policy) RuleSet() *RuleSet { return p.rules }

// NewPolicy returns the policy of a vNIC with addresses ips (the sources
// of its default egress) under rs. gen identifies this policy version: the
// caller increases it for every new policy of the vNIC (only its low 32
// bits are used); tracked flows admitted under another generation are
// re-evaluated. It allocates the policy and its address lists only.
func NewPolicy(gen uint64, ips []netip.Addr, rs *RuleSet) (*Policy, error) {
	p := &Policy{gen: gen & 0xffffffff, rules: rs}
	for _, ip := range ips {
		ip = ip.Unmap()
		f := fam4
		if ip.Is6() {
			f = fam6
		} else if !ip.Is4() {
			return nil, fmt.Errorf("firewall: policy: invalid vNIC address")
		}
		p.ips[f] = append(p.ips[f], addrOf(ip))
	}
	for f := range 2 {
		slices.SortFunc(p.ips[f], func(a, b addr) int {
			if a.less(b) {
				return -1
			}
			if b.less(a) {
				return 1
			}
			return 0
		})
	}
	return p, nil
}

type table struct {
	w        int          // bitset words
	protoIdx *[256]uint16 // ports index by protocol; nil when w == 0, shared by the tables WithRule derives
	ports    []portTable
	cidrPts  []addr // starts of elementary intervals, cidrPts[0] = 0
	cidrBits []uint64
	members  []memberRef
	// refs are the rules the bits stand for, in bit order (Explain).
	refs []ruleIdx
}

type portTable struct {
	pts  []uint32 // starts of elementary intervals, pts[0] = 0
	bits []uint64
}

type memberRef struct {
	set  *MemberSet
	bits []uint64
}

// crule is a rule reduced to what the classifier needs.
type crule struct {
	proto   int32 // -1 any
	portLo  uint32
	portHi  uint32
	hasCIDR bool
	lo, hi  addr
	sg      string
}

func hasPorts(proto int32) bool { return proto == 6 || proto == 17 || proto == 132 }

// portsOf returns the destination port range rule r allows. Rules of
// protocols without ports allow every port, and so does an SCTP rule
// without ports (the wire protocol requires ports for TCP and UDP only;
// the original matched "ip proto 132" whatever the ports).
func portsOf(r model.Rule) (lo, hi uint32) {
	if !hasPorts(r.Protocol) || r.Protocol == 132 && r.PortStart == 0 && r.PortEnd == 0 {
		return 0, 65535
	}
	return r.PortStart, r.PortEnd
}

// CompileRuleSet compiles the union of the rules of groups. A rule that
// refers to a group uses members[group] (shared, so member changes need
// no recompilation); a group absent from members matches nothing. It fails
// on a rule the model would not accept (bad direction, protocol or port
// range, neither or both of CIDR and group). The RuleSet keeps groups (its
// Explain answers name their rules): the caller must not modify the slice
// or the groups' rule lists afterwards.
//
// Its cost is linear in the rules and the elementary intervals they cut,
// and its allocations are a fixed number per table (at most one port table
// per protocol used, one CIDR table and one per member set, for each
// direction and family), whatever the number of rules: the scratch space
// of the sweeps is shared by all the tables of one call. Rules that
// compile alike are not merged: a duplicate costs one bit and matches the
// same packets.
func CompileRuleSet(groups []model.SG, members map[string]*MemberSet) (*RuleSet, error) {
	rs := &RuleSet{groups: groups}
	// First pass: check, and count the rules of each table.
	var n [2][2]int
	for _, g := range groups {
		for _, r := range g.Rules {
			if err := checkRule(r); err != nil {
				return nil, fmt.Errorf("firewall: compile: group %q: %w", g.ID, err)
			}
			d := ToVM
			if r.Direction == model.Outbound {
				d = FromVM
				rs.hasOutbound = true
			}
			switch {
			case !r.CIDR.IsValid(): // a group rule applies to both families
				n[d][fam4]++
				n[d][fam6]++
			case r.CIDR.Addr().Unmap().Is4():
				n[d][fam4]++
			default:
				n[d][fam6]++
			}
		}
	}
	total := n[0][0] + n[0][1] + n[1][0] + n[1][1]
	all := make([]crule, 0, total)
	refs := make([]ruleIdx, 0, total)
	var rules [2][2][]crule
	var tref [2][2][]ruleIdx
	for d := range 2 {
		for f := range 2 {
			rules[d][f] = all[len(all) : len(all) : len(all)+n[d][f]]
			tref[d][f] = refs[len(refs) : len(refs) : len(refs)+n[d][f]]
			all = all[:len(all)+n[d][f]]
			refs = refs[:len(refs)+n[d][f]]
		}
	}
	for gi, g := range groups {
		for ri, r := range g.Rules {
			d := ToVM
			if r.Direction == model.Outbound {
				d = FromVM
			}
			ref := ruleIdx{int32(gi), int32(ri)}
			c := crule{proto: r.Protocol}
			c.portLo, c.portHi = portsOf(r)
			if r.CIDR.IsValid() {
				c.hasCIDR = true
				pf := netip.PrefixFrom(r.CIDR.Addr().Unmap(), r.CIDR.Bits())
				if r.CIDR.Addr().Is4In6() {
					pf = netip.PrefixFrom(r.CIDR.Addr().Unmap(), max(r.CIDR.Bits()-96, 0))
				}
				c.lo, c.hi = prefixRange(pf)
				f := fam4
				if pf.Addr().Is6() {
					f = fam6
				}
				rules[d][f] = append(rules[d][f], c)
				tref[d][f] = append(tref[d][f], ref)
				continue
			}
			c.sg = r.SG
			if s := members[r.SG]; s != nil && !slices.Contains(rs.sets, s) {
				rs.sets = append(rs.sets, s)
			}
			for f := range 2 {
				rules[d][f] = append(rules[d][f], c)
				tref[d][f] = append(tref[d][f], ref)
			}
		}
	}
	sc := newScratch(max(n[0][0], n[0][1], n[1][0], n[1][1]))
	for d := range 2 {
		for f := range 2 {
			rs.tables[d][f] = sc.buildTable(rules[d][f], f, members)
			rs.tables[d][f].refs = tref[d][f]
		}
	}
	return rs, nil
}

// ruleIdx locates a rule in a RuleSet's groups: Rules[r] of groups[g].
type ruleIdx struct{ g, r int32 }

// ref returns the rule i locates, for Explain.
func (rs *RuleSet) ref(i ruleIdx) RuleRef {
	g := &rs.groups[i.g]
	return RuleRef{Group: g.ID, Rule: g.Rules[i.r]}
}

func checkRule(r model.Rule) error {
	if r.Direction != model.Inbound && r.Direction != model.Outbound {
		return fmt.Errorf("rule: unknown direction %d", r.Direction)
	}
	if r.Protocol < -1 || r.Protocol > 255 {
		return fmt.Errorf("rule: protocol %d is not in [-1, 255]", r.Protocol)
	}
	if hasPorts(r.Protocol) && (r.PortStart > r.PortEnd || r.PortEnd > 65535) {
		return fmt.Errorf("rule: bad port range %d-%d", r.PortStart, r.PortEnd)
	}
	if r.CIDR.IsValid() == (r.SG != "") {
		return fmt.Errorf("rule: exactly one of cidr and security_group is needed")
	}
	return nil
}

func setBit(b []uint64, i int) { b[i>>6] |= 1 << (i & 63) }

// scratch is the working space of the sweeps of one compilation, reused
// from table to table; only what a table keeps is allocated for it.
type scratch struct {
	u32   []uint32
	spans []span
	ints  []int32
	cur   []uint64
}

// newScratch returns the scratch space for tables of up to n rules: n
// rules cut at most 2n+1 elementary intervals.
func newScratch(n int) *scratch {
	pts := 2*n + 1
	return &scratch{
		u32:   make([]uint32, 0, pts),
		spans: make([]span, 0, n),
		ints:  make([]int32, 4*(pts+2)+2*n),
		cur:   make([]uint64, (n+63)/64),
	}
}

func (sc *scratch) buildTable(rs []crule, fam int, members map[string]*MemberSet) table {
	t := table{w: (len(rs) + 63) / 64}
	if len(rs) == 0 {
		return t
	}
	w := t.w
	// Protocols: table 0 holds the any-protocol rules only; the others
	// follow in protocol order.
	var used [4]uint64
	nprotos := 0
	for _, r := range rs {
		if p := r.proto; p >= 0 && used[p>>6]&(1<<(p&63)) == 0 {
			used[p>>6] |= 1 << (p & 63)
			nprotos++
		}
	}
	t.protoIdx = new([256]uint16)
	t.ports = make([]portTable, 1, 1+nprotos)
	t.ports[0] = sc.buildPorts(rs, w, -1)
	for pr := range int32(256) {
		if used[pr>>6]&(1<<(pr&63)) != 0 {
			t.protoIdx[pr] = uint16(len(t.ports))
			t.ports = append(t.ports, sc.buildPorts(rs, w, pr))
		}
	}
	// CIDR elementary intervals.
	ncidr := 1
	for _, r := range rs {
		if r.hasCIDR {
			ncidr += 2
		}
	}
	pts := make([]addr, 1, ncidr)
	for _, r := range rs {
		if !r.hasCIDR {
			continue
		}
		pts = append(pts, r.lo)
		if n, ok := r.hi.inc(); ok && (fam == fam6 || n.lo <= 0xffffffff) {
			pts = append(pts, n)
		}
	}
	slices.SortFunc(pts, func(a, b addr) int {
		if a.less(b) {
			return -1
		}
		if b.less(a) {
			return 1
		}
		return 0
	})
	pts = slices.Clip(slices.Compact(pts))
	t.cidrPts = pts
	spans := sc.spans[:0]
	for ri, r := range rs {
		if !r.hasCIDR {
			continue
		}
		end := len(pts)
		if n, ok := r.hi.inc(); ok {
			if e := searchAddr(pts, n); pts[e] == n {
				end = e
			}
		}
		spans = append(spans, span{ri, searchAddr(pts, r.lo), end})
	}
	sc.spans = spans
	t.cidrBits = sc.sweepBits(len(pts), w, spans)
	// Group references.
	for ri, r := range rs {
		if r.hasCIDR {
			continue
		}
		s := members[r.sg]
		if s == nil {
			continue
		}
		k := slices.IndexFunc(t.members, func(m memberRef) bool { return m.set == s })
		if k < 0 {
			t.members = append(t.members, memberRef{set: s, bits: make([]uint64, w)})
			k = len(t.members) - 1
		}
		setBit(t.members[k].bits, ri)
	}
	return t
}

// buildPorts builds the port table of protocol proto (-1: any-protocol
// rules only).
func (sc *scratch) buildPorts(rs []crule, w int, proto int32) portTable {
	in := func(r crule) bool { return r.proto == -1 || r.proto == proto }
	pts := append(sc.u32[:0], 0)
	for _, r := range rs {
		if !in(r) {
			continue
		}
		lo, hi := r.portLo, r.portHi
		if r.proto == -1 {
			lo, hi = 0, 65535
		}
		pts = append(pts, lo)
		if hi < 65535 {
			pts = append(pts, hi+1)
		}
	}
	sc.u32 = pts
	slices.Sort(pts)
	pts = slices.Clone(slices.Compact(pts))
	spans := sc.spans[:0]
	for ri, r := range rs {
		if !in(r) {
			continue
		}
		lo, hi := r.portLo, r.portHi
		if r.proto == -1 {
			lo, hi = 0, 65535
		}
		end := len(pts)
		if hi < 65535 {
			end = searchU32(pts, hi+1)
		}
		spans = append(spans, span{ri, searchU32(pts, lo), end})
	}
	sc.spans = spans
	return portTable{pts: pts, bits: sc.sweepBits(len(pts), w, spans)}
}

// span says that rule covers the elementary intervals [first, end).
type span struct{ rule, first, end int }

// sweepBits returns the bitsets of n elementary intervals (w words each)
// with a sweep over the spans' boundaries: O(n*w + len(spans)). The
// spans starting and ending at each interval are bucketed in two flat
// arrays (counting sort), not in a slice per interval; all but the result
// lives in sc.
func (sc *scratch) sweepBits(n, w int, spans []span) []uint64 {
	// addAt[i]..addAt[i+1] index the rules starting at interval i in adds;
	// likewise for the rules ending there. fillA and fillD are the next
	// free places while the rules are bucketed.
	need := 4*(n+2) + 2*len(spans)
	if cap(sc.ints) < need {
		sc.ints = make([]int32, need)
	}
	ints := sc.ints[:need]
	clear(ints[:2*(n+2)])
	addAt, delAt := ints[:n+2], ints[n+2:2*(n+2)]
	fillA, fillD := ints[2*(n+2):3*(n+2)], ints[3*(n+2):4*(n+2)]
	adds, dels := ints[4*(n+2):4*(n+2)+len(spans)], ints[4*(n+2)+len(spans):]
	for _, s := range spans {
		addAt[s.first+1]++
		delAt[s.end+1]++
	}
	for i := 1; i < len(addAt); i++ {
		addAt[i] += addAt[i-1]
		delAt[i] += delAt[i-1]
	}
	copy(fillA, addAt)
	copy(fillD, delAt)
	for _, s := range spans {
		adds[fillA[s.first]] = int32(s.rule)
		fillA[s.first]++
		dels[fillD[s.end]] = int32(s.rule)
		fillD[s.end]++
	}
	bits := make([]uint64, n*w)
	if cap(sc.cur) < w {
		sc.cur = make([]uint64, w)
	}
	cur := sc.cur[:w]
	clear(cur)
	for i := range n {
		for _, r := range dels[delAt[i]:delAt[i+1]] {
			cur[r>>6] &^= 1 << (r & 63)
		}
		for _, r := range adds[addAt[i]:addAt[i+1]] {
			setBit(cur, int(r))
		}
		copy(bits[i*w:], cur)
	}
	return bits
}

func anyAnd(a, b []uint64) bool {
	b = b[:len(a)]
	for i := range a {
		if a[i]&b[i] != 0 {
			return true
		}
	}
	return false
}

// match reports whether a rule of table t allows a packet of protocol proto
// to port whose peer is a.
func (t *table) match(fam int, proto uint8, port uint16, a addr) bool {
	if t.w == 0 {
		return false
	}
	w := t.w
	pt := &t.ports[t.protoIdx[proto]]
	pi := searchU32(pt.pts, uint32(port))
	pbits := pt.bits[pi*w : (pi+1)*w]
	ci := searchAddr(t.cidrPts, a)
	if anyAnd(pbits, t.cidrBits[ci*w:(ci+1)*w]) {
		return true
	}
	for i := range t.members {
		m := &t.members[i]
		if anyAnd(pbits, m.bits) && m.set.contains(fam, a) {
			return true
		}
	}
	return false
}

// searchU32 returns the index of the last point <= v (pts[0] is 0).
func searchU32(pts []uint32, v uint32) int {
	i, j := 0, len(pts)
	for i < j {
		h := int(uint(i+j) >> 1)
		if pts[h] <= v {
			i = h + 1
		} else {
			j = h
		}
	}
	return i - 1
}

func searchAddr(pts []addr, v addr) int {
	i, j := 0, len(pts)
	for i < j {
		h := int(uint(i+j) >> 1)
		if !v.less(pts[h]) {
			i = h + 1
		} else {
			j = h
		}
	}
	return i - 1
}

func containsAddr(v []addr, a addr) bool {
	for _, x := range v { // a vNIC has a handful of addresses
		if x == a {
			return true
		}
	}
	return false
}

// flowKey describes the first packet of a flow for classification.
type flowKey struct {
	dir        Direction
	fam        int
	proto      uint8
	src, dst   addr
	sport      uint16
	dport      uint16
	portsValid bool
}

// allows evaluates the policy for the first packet of a flow.
func (p *Policy) allows(k *flowKey) bool {
	t := &p.rules.tables[k.dir][k.fam]
	if k.dir == ToVM {
		return t.match(k.fam, k.proto, k.dport, k.src)
	}
	if p.rules.hasOutbound {
		return t.match(k.fam, k.proto, k.dport, k.dst)
	}
	if containsAddr(p.ips[k.fam], k.src) {
		return true
	}
	// DHCPv4 DISCOVER/REQUEST.
	return k.fam == fam4 && k.proto == 17 && k.portsValid && k.src == (addr{}) &&
		k.dst == addr{0, 0xffffffff} && k.sport == 68 && k.dport == 67
}

// WithRule returns rs with one more rule, in place of compiling groups
// again: groups is the list rs was compiled from with rule ri of group gi
// inserted, the rest unchanged. The new rule takes the next number (Explain
// names the lowest-numbered rule that allows a flow). It costs a copy of
// the two tables the rule touches (its protocol's ports, the CIDRs) and of
// the rule references, with no sort and no sweep. ok is false when the
// rule cannot be added so (a rule of any protocol or on a group's members,
// a protocol new to the table, a table whose bitsets would need one more
// word, a rule the model would not accept): compile groups instead.
func (rs *RuleSet) WithRule(groups []model.SG, gi, ri int) (_ *RuleSet, ok bool) {
	if gi < 0 || gi >= len(groups) || ri < 0 || ri >= len(groups[gi].Rules) || len(groups) != len(rs.groups) {
		return nil, false
	}
	r := groups[gi].Rules[ri]
	if checkRule(r) != nil || !r.CIDR.IsValid() || r.Protocol < 0 {
		return nil, false
	}
	d := ToVM
	if r.Direction == model.Outbound {
		d = FromVM
	}
	pf := netip.PrefixFrom(r.CIDR.Addr().Unmap(), r.CIDR.Bits())
	if r.CIDR.Addr().Is4In6() {
		pf = netip.PrefixFrom(r.CIDR.Addr().Unmap(), max(r.CIDR.Bits()-96, 0))
	}
	f := fam4
	if pf.Addr().Is6() {
		f = fam6
	}
	t := &rs.tables[d][f]
	n := len(t.refs)
	if n%64 == 0 || t.protoIdx[r.Protocol] == 0 {
		return nil, false
	}
	pi := t.protoIdx[r.Protocol]
	nrs := &RuleSet{tables: rs.tables, hasOutbound: rs.hasOutbound || d == FromVM, sets: rs.sets, groups: groups}
	// The rules from ri on in group gi moved up by one.
	for d2 := range 2 {
		for f2 := range 2 {
			nrs.tables[d2][f2].refs = shiftRefs(nrs.tables[d2][f2].refs, int32(gi), int32(ri))
		}
	}
	nrs.tables[d][f].refs = append(slices.Clip(nrs.tables[d][f].refs), ruleIdx{int32(gi), int32(ri)})
	nt := &nrs.tables[d][f]
	w := nt.w
	nt.ports = slices.Clone(nt.ports)
	lo, hi := portsOf(r)
	nt.ports[pi] = nt.ports[pi].withRule(n, w, lo, hi)
	clo, chi := prefixRange(pf)
	nt.cidrPts, nt.cidrBits = withCIDRRule(nt.cidrPts, nt.cidrBits, n, w, f, clo, chi)
	return nrs, true
}

// shiftRefs returns refs with the references to rules ri and after of
// group gi moved up by one, copied only if one changes.
func shiftRefs(refs []ruleIdx, gi, ri int32) []ruleIdx {
	var out []ruleIdx
	for i, x := range refs {
		if x.g != gi || x.r < ri {
			continue
		}
		if out == nil {
			out = slices.Clone(refs)
		}
		out[i].r++
	}
	if out == nil {
		return refs
	}
	return out
}

// withRule returns pt with rule n (bitsets of w words) allowing ports lo
// to hi: the intervals its bounds split are duplicated, then its bit is
// set in those it covers. pt is not modified.
func (pt portTable) withRule(n, w int, lo, hi uint32) portTable {
	// Room for the two intervals the rule may split: one allocation each.
	pts := append(make([]uint32, 0, len(pt.pts)+2), pt.pts...)
	bits := append(make([]uint64, 0, len(pt.bits)+2*w), pt.bits...)
	split := func(x uint32) {
		k := searchU32(pts, x)
		if pts[k] == x {
			return
		}
		pts = slices.Insert(pts, k+1, x)
		bits = slices.Insert(bits, (k+1)*w, bits[k*w:(k+1)*w]...)
	}
	split(lo)
	end := len(pts)
	if hi < 65535 {
		split(hi + 1)
		end = searchU32(pts, hi+1)
	}
	for i := searchU32(pts, lo); i < end; i++ {
		setBit(bits[i*w:(i+1)*w], n)
	}
	return portTable{pts: pts, bits: bits}
}

// withCIDRRule is withRule for the CIDR intervals of family fam: rule n
// covers addresses lo to hi.
func withCIDRRule(pts0 []addr, bits0 []uint64, n, w, fam int, lo, hi addr) ([]addr, []uint64) {
	pts := append(make([]addr, 0, len(pts0)+2), pts0...)
	bits := append(make([]uint64, 0, len(bits0)+2*w), bits0...)
	split := func(x addr) {
		k := searchAddr(pts, x)
		if pts[k] == x {
			return
		}
		pts = slices.Insert(pts, k+1, x)
		bits = slices.Insert(bits, (k+1)*w, bits[k*w:(k+1)*w]...)
	}
	split(lo)
	end := len(pts)
	if next, ok := hi.inc(); ok && (fam == fam6 || next.lo <= 0xffffffff) {
		split(next)
		end = searchAddr(pts, next)
	}
	for i := searchAddr(pts, lo); i < end; i++ {
		setBit(bits[i*w:(i+1)*w], n)
	}
	return pts, bits
}
