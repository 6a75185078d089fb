package model

import (
	"net/netip"
	"slices"
	"strconv"
	"testing"
)

// TestInsertDeleteAt: the copies a group's lists are changed through hold
// the right elements and leave the list they came from (which published
// versions of the group still hold) untouched.
func TestInsertDeleteAt(t *testing.T) {
	for _, tc := range []struct {
		in      []int
		i       int
		ins     []int // in with 9 inserted at i
		deleted []int // in without element i
	}{
		{[]int{1}, 0, []int{9, 1}, nil},
		{[]int{1, 2, 3}, 0, []int{9, 1, 2, 3}, []int{2, 3}},
		{[]int{1, 2, 3}, 1, []int{1, 9, 2, 3}, []int{1, 3}},
		{[]int{1, 2, 3}, 2, []int{1, 2, 9, 3}, []int{1, 2}},
	} {
		orig := slices.Clone(tc.in)
		if got := insertAt(tc.in, tc.i, 9); !slices.Equal(got, tc.ins) {
			t.Errorf("insertAt(%v, %d, 9) = %v, want %v", tc.in, tc.i, got, tc.ins)
		}
		if got := deleteAt(tc.in, tc.i); !slices.Equal(got, tc.deleted) || (got == nil) != (tc.deleted == nil) {
			t.Errorf("deleteAt(%v, %d) = %#v, want %#v", tc.in, tc.i, got, tc.deleted)
		}
		if !slices.Equal(tc.in, orig) {
			t.Errorf("the list changed: %v, was %v", tc.in, orig)
		}
	}
	if got := insertAt([]int(nil), 0, 9); !slices.Equal(got, []int{9}) {
		t.Errorf("insertAt(nil, 0, 9) = %v, want [9]", got)
	}
}

// TestFindRule: in a normalized list, findRule finds each rule where it is
// and gives an absent rule the index that keeps the list in order, without
// allocating (it runs for every rule added or removed).
func TestFindRule(t *testing.T) {
	var all []Rule
	for i := range 300 {
		r := Rule{Direction: RuleDirection(i % 2), Protocol: 6, PortStart: uint32(i), PortEnd: uint32(i),
			CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16)}
		switch i % 3 {
		case 1:
			r.CIDR, r.SG = netip.Prefix{}, "sg-with-a-rather-long-name-"+strconv.Itoa(i)
		case 2:
			r.CIDR = netip.MustParsePrefix("::10.0.0." + strconv.Itoa(i%250+1) + "/128")
		}
		all = append(all, r)
	}
	in := normalizeRules(all[:200])
	for i, r := range in {
		if at, found := findRule(in, r); !found || at != i {
			t.Errorf("rule %s at %d: findRule = %d, %v", r.Key(), i, at, found)
		}
	}
	for _, r := range all[200:] {
		at, found := findRule(in, r)
		if found {
			t.Fatalf("absent rule %s found at %d", r.Key(), at)
		}
		if got := insertAt(in, at, r); !slices.Equal(got, normalizeRules(got)) {
			t.Fatalf("absent rule %s: inserting it at %d breaks the order", r.Key(), at)
		}
	}
	if n := testing.AllocsPerRun(100, func() { findRule(in, all[250]) }); n != 0 {
		t.Errorf("findRule allocates %v times per call, want 0", n)
	}
}
