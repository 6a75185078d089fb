package state

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/butterfly-go/butterfly/internal/model"
)

// snapshotVersion is the version of the snapshot files this package
// writes. Version 2 announces that the journal after it may hold group
// patches (record.SGPatches), which a version 1 reader would skip without
// a word: a butterflyd that knows only version 1 refuses the files
// instead. Version 1 snapshots are read as well and rewritten as version
// 2 when a Store opens them.
const snapshotVersion = 2

// sgPatch records a change of one security group as what it gained and
// lost, so that a rule added to a group of n rules costs the journal one
// rule, not n. Applying it to the group the journal held before gives
// exactly the new group (it is written only then: see diffSG).
type sgPatch struct {
	ID         string       `json:"id"`
	AddRules   []model.Rule `json:"add_rules,omitempty"`
	DelRules   []model.Rule `json:"del_rules,omitempty"`
	AddMembers []netip.Addr `json:"add_members,omitempty"`
	DelMembers []netip.Addr `json:"del_members,omitempty"`
}

// diffSG returns the patch that turns old into cur, and whether it does
// so exactly (rules in the model's order, members in theirs); when it
// does not, or when the patch would not be smaller than the group, the
// caller records the whole group.
func diffSG(old, cur model.SG) (sgPatch, bool) {
	p := sgPatch{ID: cur.ID}
	p.AddRules, p.DelRules = setDiff(old.Rules, cur.Rules)
	p.AddMembers, p.DelMembers = setDiff(old.Members, cur.Members)
	n := len(p.AddRules) + len(p.DelRules) + len(p.AddMembers) + len(p.DelMembers)
	if n >= len(cur.Rules)+len(cur.Members) {
		return p, false
	}
	got, err := p.apply(old)
	return p, err == nil && got.Equal(cur)
}

// apply returns g patched: the lost rules and members removed, the
// gained ones added (rules where the model keeps them, members
// appended). It fails if g lacks a rule or member the patch removes, or
// already has one it adds: the patch was not made for g.
func (p *sgPatch) apply(g model.SG) (model.SG, error) {
	rules, err := patchList(g.Rules, nil, p.DelRules)
	if err != nil {
		return g, fmt.Errorf("group %q: rule %w", p.ID, err)
	}
	for _, r := range p.AddRules {
		if rules, err = insertRule(rules, r); err != nil {
			return g, fmt.Errorf("group %q: rule %w", p.ID, err)
		}
	}
	members, err := patchList(g.Members, p.AddMembers, p.DelMembers)
	if err != nil {
		return g, fmt.Errorf("group %q: member %w", p.ID, err)
	}
	return model.SG{ID: g.ID, Members: members, Rules: rules}, nil
}

// insertRule inserts r where the model keeps it: rules are ordered by
// Rule.Hash, then by Rule.Key (which is unique). It computes O(log n)
// keys.
func insertRule(rules []model.Rule, r model.Rule) ([]model.Rule, error) {
	k, h := r.Key(), r.Hash()
	i, found := slices.BinarySearchFunc(rules, r, func(x, _ model.Rule) int {
		return cmp.Or(cmp.Compare(x.Hash(), h), cmp.Compare(x.Key(), k))
	})
	if found {
		return nil, fmt.Errorf("%s added by the journal but already there", k)
	}
	return slices.Insert(rules, i, r), nil
}

// setDiff returns the elements of cur missing from old and those of old
// missing from cur (both lists hold unique elements).
func setDiff[T comparable](old, cur []T) (add, del []T) {
	in := make(map[T]struct{}, len(old))
	for _, v := range old {
		in[v] = struct{}{}
	}
	for _, v := range cur {
		if _, ok := in[v]; ok {
			delete(in, v)
		} else {
			add = append(add, v)
		}
	}
	for _, v := range old {
		if _, ok := in[v]; ok {
			del = append(del, v)
		}
	}
	return add, del
}

// patchList returns list without del and with add appended, in a new
// slice.
func patchList[T comparable](list, add, del []T) ([]T, error) {
	out := make([]T, 0, len(list)+len(add))
	gone := make(map[T]bool, len(del))
	for _, v := range del {
		gone[v] = true
	}
	for _, v := range list {
		if gone[v] {
			delete(gone, v)
			continue
		}
		out = append(out, v)
	}
	if len(gone) > 0 {
		return nil, fmt.Errorf("removed by the journal but not there: %v", del)
	}
	for _, v := range add {
		if slices.Contains(out, v) {
			return nil, fmt.Errorf("%v added by the journal but already there", v)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		out = nil
	}
	return out, nil
}
