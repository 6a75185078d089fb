package dataplane

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/butterfly-go/butterfly/internal/firewall"
	"github.com/butterfly-go/butterfly/internal/model"
)

// fwCheckEvery and fwCheckBudget pace the workers' connection-tracking
// maintenance (expiry and flows cut by a policy change): every
// fwCheckEvery nanoseconds, up to fwCheckBudget slots per vNIC.
const (
	fwCheckEvery  = int64(10e6)
	fwCheckBudget = 512
)

// SetSecurityGroups replaces the security groups the vNICs' firewalls are
// built from. Member changes update the groups' shared member sets (no
// policy is rebuilt). A group list whose groups appear, disappear or have
// their rules changed is compiled once, and the vNICs with that list get a
// new policy sharing the result. On error nothing changes. The lists of
// sgs are kept: the caller must not modify them (the model never writes a
// list it stored).
//
// Its cost follows the change: sgs is compared with the previous list in
// one merge walk (the model passes them sorted by id and shares the lists
// of unchanged groups), and only the vNICs of changed groups are visited.
func (e *Engine) SetSecurityGroups(sgs []model.SG) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	sgs = sortedGroups(sgs)
	prev := e.sgList
	if prev == nil && len(e.sgs) > 0 { // after UpdateSecurityGroup
		prev = make([]model.SG, 0, len(e.sgs))
		for _, g := range e.sgs {
			prev = append(prev, g)
		}
		slices.SortFunc(prev, func(a, b model.SG) int { return strings.Compare(a.ID, b.ID) })
	}
	var diffs []sgDiff
	for i, j := 0, 0; i < len(prev) || j < len(sgs); {
		switch {
		case j == len(sgs) || i < len(prev) && prev[i].ID < sgs[j].ID:
			diffs = append(diffs, sgDiff{prev[i].ID, nil})
			i++
		case i == len(prev) || sgs[j].ID < prev[i].ID:
			diffs = append(diffs, sgDiff{sgs[j].ID, &sgs[j]})
			j++
		default:
			if !sameList(prev[i].Rules, sgs[j].Rules) || !sameList(prev[i].Members, sgs[j].Members) {
				diffs = append(diffs, sgDiff{sgs[j].ID, &sgs[j]})
			}
			i++
			j++
		}
	}
	if err := e.applyGroups(diffs); err != nil {
		return err
	}
	e.sgList = sgs
	return nil
}

// UpdateSecurityGroup replaces security group id by sg, adds it, or
// removes it when sg is nil; the other groups stay as the last call of
// SetSecurityGroups or UpdateSecurityGroup left them. It is
// SetSecurityGroups for a change of one group, at a cost independent of
// the number of groups (model.SGUpdater). sg's lists are kept, read-only.
func (e *Engine) UpdateSecurityGroup(id string, sg *model.SG) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	old, had := e.sgs[id]
	switch {
	case sg == nil && !had:
		return nil
	case sg != nil && had && sameList(old.Rules, sg.Rules) && sameList(old.Members, sg.Members):
		return nil
	case sg != nil && sg.ID != id:
		return fmt.Errorf("dataplane: security group %q given as %q", sg.ID, id)
	}
	if err := e.applyGroups([]sgDiff{{id, sg}}); err != nil {
		return err
	}
	e.sgList = nil // SetSecurityGroups sorts e.sgs again if it comes
	return nil
}

// sgDiff is a change of one group: its new value, nil if removed.
type sgDiff struct {
	id string
	sg *model.SG
}

// applyGroups applies changed groups (each id once) to e.sgs, the member
// sets and the policies of the vNICs of groups whose rules changed; on
// error nothing changes. e.mu must be held.
func (e *Engine) applyGroups(diffs []sgDiff) error {
	// undo restores e.sgs if compiling fails.
	type undo struct {
		id  string
		old model.SG
		had bool
	}
	var undos []undo
	var changed []string // groups added, removed or with other rules
	var ins *ruleInsert  // the change is one rule inserted in one group
	for _, d := range diffs {
		old, had := e.sgs[d.id]
		undos = append(undos, undo{d.id, old, had})
		if d.sg == nil {
			delete(e.sgs, d.id)
		} else {
			e.sgs[d.id] = *d.sg
		}
		if d.sg == nil || !had || !sameList(old.Rules, d.sg.Rules) {
			changed = append(changed, d.id)
			if had && d.sg != nil {
				if at := insertedAt(old.Rules, d.sg.Rules); at >= 0 {
					ins = &ruleInsert{id: d.id, at: at}
				}
			}
		}
	}
	if len(changed) != 1 || ins != nil && ins.id != changed[0] {
		ins = nil
	}
	created := e.createMemberSets(changed)
	// The rule sets of the lists with a changed group are compiled anew,
	// once per list, into fresh; e.fwRules is updated on success only.
	fresh := map[string]ruleSet{}
	type newPolicy struct {
		ent *nicEntry
		pol *firewall.Policy
	}
	var pols []newPolicy
	e.polMark++
	for _, id := range changed {
		for ent := range e.byGroup[id] {
			if ent.polMark == e.polMark {
				continue
			}
			ent.polMark = e.polMark
			p, err := e.compileIn(ent.nic, fresh, ins)
			if err != nil {
				for k := len(undos) - 1; k >= 0; k-- {
					if u := undos[k]; u.had {
						e.sgs[u.id] = u.old
					} else {
						delete(e.sgs, u.id)
					}
				}
				for _, id := range created {
					delete(e.members, id)
				}
				return err
			}
			pols = append(pols, newPolicy{ent, p})
		}
	}
	for _, id := range changed {
		for key := range e.listsOf[id] {
			e.dropRules(key)
		}
		if _, ok := e.sgs[id]; !ok {
			delete(e.listsOf, id)
		}
	}
	for key, r := range fresh {
		e.setRules(key, r)
	}
	for _, u := range undos {
		g, ok := e.sgs[u.id]
		if ms := e.members[u.id]; ms == nil {
			if ok {
				e.members[u.id] = firewall.NewMemberSet(g.Members)
			}
		} else if !ok {
			if ms.Len() > 0 {
				ms.Set(nil)
			}
		} else if !u.had || !sameList(u.old.Members, g.Members) {
			ms.Set(g.Members)
		}
	}
	for _, np := range pols {
		np.ent.pol = np.pol
		e.touch(np.ent)
	}
	if len(changed) > 0 {
		// Only a group removed, or one a removed rule referred to, can
		// leave a member set no one needs.
		orphans := e.orphan(changed...)
		for _, u := range undos {
			for _, r := range u.old.Rules {
				orphans = orphans || r.SG != "" && e.orphan(r.SG)
			}
		}
		if orphans {
			e.pruneMembers()
		}
	}
	if len(e.fwRules) > len(e.nics) {
		e.pruneRules()
	}
	if len(pols) > 0 {
		// New flows follow the new policies once this returns.
		e.quiesce(e.publishLocked())
	}
	return nil
}

// sortedGroups returns sgs sorted by id, each id once (the last one
// wins); sgs itself when it already is, as the model passes it.
func sortedGroups(sgs []model.SG) []model.SG {
	ok := true
	for i := 1; i < len(sgs); i++ {
		if sgs[i-1].ID >= sgs[i].ID {
			ok = false
			break
		}
	}
	if ok {
		return sgs
	}
	out := slices.Clone(sgs)
	slices.SortStableFunc(out, func(a, b model.SG) int { return strings.Compare(a.ID, b.ID) })
	// Keep the last of equal ids.
	k := 0
	for i := range out {
		if i+1 < len(out) && out[i+1].ID == out[i].ID {
			continue
		}
		out[k] = out[i]
		k++
	}
	return out[:k]
}

// createMemberSets creates the (empty) member sets that the rules of the
// changed groups refer to and that do not exist yet, so that compile
// creates none; it returns their ids, for SetSecurityGroups to remove
// them if it fails. e.mu must be held.
func (e *Engine) createMemberSets(changed []string) []string {
	var created []string
	for _, id := range changed {
		for _, r := range e.sgs[id].Rules {
			if r.SG != "" && e.members[r.SG] == nil {
				e.members[r.SG] = firewall.NewMemberSet(e.sgs[r.SG].Members)
				created = append(created, r.SG)
			}
		}
	}
	return created
}

// sameList reports whether a and b hold the same elements; the model
// shares the lists of unchanged groups, so the common case is the same
// array.
func sameList[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	return slices.Equal(a, b)
}

// orphan reports whether one of ids has a member set but no group.
func (e *Engine) orphan(ids ...string) bool {
	for _, id := range ids {
		if _, ok := e.members[id]; ok {
			if _, ok := e.sgs[id]; !ok {
				return true
			}
		}
	}
	return false
}

// pruneMembers forgets the member sets of ids that are neither a group
// nor referenced by a rule: after the recompilations of SetSecurityGroups
// no policy uses them. e.mu must be held.
func (e *Engine) pruneMembers() {
	referenced := map[string]bool{}
	for _, g := range e.sgs {
		for _, r := range g.Rules {
			if r.SG != "" {
				referenced[r.SG] = true
			}
		}
	}
	for id := range e.members {
		if _, ok := e.sgs[id]; !ok && !referenced[id] {
			delete(e.members, id)
		}
	}
}

// indexGroups moves ent in byGroup from the groups of list old to those
// of list cur. e.mu must be held.
func (e *Engine) indexGroups(ent *nicEntry, old, cur []string) {
	for _, id := range old {
		if set := e.byGroup[id]; set != nil {
			delete(set, ent)
			if len(set) == 0 {
				delete(e.byGroup, id)
			}
		}
	}
	for _, id := range cur {
		set := e.byGroup[id]
		if set == nil {
			set = map[*nicEntry]struct{}{}
			e.byGroup[id] = set
		}
		set[ent] = struct{}{}
	}
}

// ruleSet is a group list's compiled rules, shared by the policies of the
// vNICs with that list.
type ruleSet struct {
	groups []string
	rules  *firewall.RuleSet
}

// pruneRules forgets the rule sets no vNIC's policy uses. e.mu must be
// held.
func (e *Engine) pruneRules() {
	used := make(map[*firewall.RuleSet]bool, len(e.nics))
	for _, ent := range e.nics {
		used[ent.pol.RuleSet()] = true
	}
	for key, r := range e.fwRules {
		if !used[r.rules] {
			e.dropRules(key)
		}
	}
}

// setRules records the compiled rule set of list key. e.mu must be held.
func (e *Engine) setRules(key string, r ruleSet) {
	if e.fwRules == nil {
		e.fwRules = map[string]ruleSet{}
		e.listsOf = map[string]map[string]struct{}{}
	}
	e.dropRules(key)
	e.fwRules[key] = r
	for _, id := range r.groups {
		keys := e.listsOf[id]
		if keys == nil {
			keys = map[string]struct{}{}
			e.listsOf[id] = keys
		}
		keys[key] = struct{}{}
	}
}

// dropRules forgets the compiled rule set of list key, if any. e.mu must
// be held.
func (e *Engine) dropRules(key string) {
	r, ok := e.fwRules[key]
	if !ok {
		return
	}
	delete(e.fwRules, key)
	for _, id := range r.groups {
		// An empty set stays while its group exists: the group's next
		// list reuses it (applyGroups drops those of removed groups).
		delete(e.listsOf[id], key)
	}
}

// compile builds the firewall policy of n from the current groups, on
// the compiled rules of its group list, which are shared with the other
// vNICs with the same list (compiled on first use). The member sets of
// the groups the rules refer to are created if needed (empty), so that
// members added later take effect without a rebuild. e.mu must be held.
func (e *Engine) compile(n model.NIC) (*firewall.Policy, error) {
	if len(e.fwRules) > len(e.nics)+8 {
		e.pruneRules()
	}
	return e.compileIn(n, nil, nil)
}

// ruleInsert says that the only change of a SetSecurityGroups is one rule
// inserted at index at of group id's rules: the rule sets of the lists
// with that group are then updated in place (firewall.RuleSet.WithRule)
// rather than compiled again.
type ruleInsert struct {
	id string
	at int
}

// insertedAt returns the index of the one rule b has more than a, -1 if
// b is not a with one rule inserted.
func insertedAt(a, b []model.Rule) int {
	if len(b) != len(a)+1 {
		return -1
	}
	i := 0
	for i < len(a) && a[i] == b[i] {
		i++
	}
	if !slices.Equal(a[i:], b[i+1:]) {
		return -1
	}
	return i
}

// compileIn is compile with the rule sets of fresh, where the rule sets
// it compiles go (nil: those of e.fwRules). With ins, a list missing
// from fresh whose previous rule set is still in e.fwRules gets that one
// with the inserted rule when it can. e.mu must be held.
func (e *Engine) compileIn(n model.NIC, fresh map[string]ruleSet, ins *ruleInsert) (*firewall.Policy, error) {
	var ids []string
	var kb strings.Builder
	for _, id := range n.SecurityGroups {
		if _, ok := e.sgs[id]; ok {
			ids = append(ids, id)
			// Length-prefixed: no two lists share a key.
			kb.WriteString(strconv.Itoa(len(id)))
			kb.WriteByte(':')
			kb.WriteString(id)
		}
	}
	key := kb.String()
	var r ruleSet
	var ok bool
	if fresh != nil {
		r, ok = fresh[key]
	} else {
		r, ok = e.fwRules[key]
	}
	if !ok {
		groups := make([]model.SG, len(ids))
		for i, id := range ids {
			groups[i] = e.sgs[id]
			for _, rule := range groups[i].Rules {
				if rule.SG != "" && e.members[rule.SG] == nil {
					e.members[rule.SG] = firewall.NewMemberSet(e.sgs[rule.SG].Members)
				}
			}
		}
		var rs *firewall.RuleSet
		if old, had := e.fwRules[key]; had && ins != nil {
			if gi := slices.Index(ids, ins.id); gi >= 0 {
				rs, _ = old.rules.WithRule(groups, gi, ins.at)
			}
		}
		if rs == nil {
			var err error
			if rs, err = firewall.CompileRuleSet(groups, e.members); err != nil {
				return nil, fmt.Errorf("dataplane: vNIC %s: %w", n.ID, err)
			}
		}
		r = ruleSet{groups: ids, rules: rs}
		if fresh != nil {
			fresh[key] = r
		} else {
			e.setRules(key, r)
		}
	}
	e.fwGen++
	p, err := firewall.NewPolicy(e.fwGen, n.IPs, r.rules)
	if err != nil {
		return nil, fmt.Errorf("dataplane: vNIC %s: %w", n.ID, err)
	}
	return p, nil
}

// filterToVM passes a frame about to be queued for vNIC nic through its
// firewall (ToVM); it reports whether the frame passes. It runs on the
// worker that owns nic's port, which owns its connection tracking.
func (w *worker) filterToVM(nic *nicConf, frame []byte) bool {
	if nic.pol == nil {
		return true
	}
	var v firewall.Verdict
	if w.fc != nil && w.fc.pend.active {
		var r firewall.Ref
		v, r = nic.ct.DecideRef(frame, firewall.ToVM, nic.pol, w.mono)
		w.fcRecordIn(nic, v, r)
	} else {
		v = nic.ct.Decide(frame, firewall.ToVM, nic.pol, w.mono)
	}
	if !v.Allowed() {
		w.fwDrop(nic, v, frame)
		return false
	}
	w.fwPassed(nic)
	return true
}

// fwDrop counts and records frame, which nic's firewall dropped with
// verdict v.
func (w *worker) fwDrop(nic *nicConf, v firewall.Verdict, frame []byte) {
	nic.fw.drop(w.id, firewallDrop(v))
	w.recordDrop(nic.nicPort, firewallDrop(v), frame)
}

// fwPassed counts a frame nic's firewall (ToVM) passed.
func (w *worker) fwPassed(nic *nicConf) {
	// Counted per run of frames to one vNIC and added once per batch
	// (flushCounts): an atomic add per frame would wait, each time, for
	// every store before it (the frames just written into guest memory)
	// to reach the cache.
	if w.fwRun != nic.fw {
		w.flushFwRun()
		w.fwRun = nic.fw
	}
	w.fwRunN++
}

// flushFwRun adds the frames of the current run of filterToVM to their
// element.
func (w *worker) flushFwRun() {
	if w.fwRunN > 0 {
		w.fwRun.add(w.id, w.fwRunN, 0)
		w.fwRunN = 0
	}
}

// checkFirewalls does a bounded step of connection-tracking maintenance
// on the vNICs this worker owns: expired entries and flows their current
// policy no longer allows are removed. It first serves the control
// plane's request on those tables, if any (an export).
func (w *worker) checkFirewalls(s *snapshot) {
	w.serveCTRequest()
	if w.mono-w.fwChecked < fwCheckEvery {
		return
	}
	w.fwChecked = w.mono
	for _, slot := range s.polls[w.id] {
		// Only the tables of the vNICs this worker owns: it may also
		// read queues of others' (rxShare).
		if nic := s.nics.at(slot); nic != nil && nic.pol != nil && nic.worker == w.id {
			nic.ct.Check(nic.pol, w.mono, fwCheckBudget)
		}
	}
}
