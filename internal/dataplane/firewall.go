package dataplane

import (
	"fmt"
	"slices"

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
// policy is rebuilt); the policy of a vNIC is recompiled when one of its
// groups appears, disappears or has its rules changed. On error nothing
// changes. The lists of sgs are kept: the caller must not modify them
// (the model never writes a list it stored).
func (e *Engine) SetSecurityGroups(sgs []model.SG) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	next := make(map[string]model.SG, len(sgs))
	for _, g := range sgs {
		next[g.ID] = g
	}
	changed := map[string]bool{}
	for id, g := range next {
		if old, ok := e.sgs[id]; !ok || !sameList(old.Rules, g.Rules) {
			changed[id] = true
		}
	}
	for id := range e.sgs {
		if _, ok := next[id]; !ok {
			changed[id] = true
		}
	}
	prev := e.sgs
	e.sgs = next
	created := e.createMemberSets(changed)
	pols := map[*nicEntry]*firewall.Policy{}
	for _, ent := range e.nics {
		if !slices.ContainsFunc(ent.nic.SecurityGroups, func(id string) bool { return changed[id] }) {
			continue
		}
		p, err := e.compile(ent.nic)
		if err != nil {
			e.sgs = prev
			for _, id := range created {
				delete(e.members, id)
			}
			return err
		}
		pols[ent] = p
	}
	for id, g := range next {
		old, ok := prev[id]
		if ms := e.members[id]; ms == nil {
			e.members[id] = firewall.NewMemberSet(g.Members)
		} else if !ok || !sameList(old.Members, g.Members) {
			ms.Set(g.Members)
		}
	}
	for id := range prev {
		if _, ok := next[id]; !ok {
			if ms := e.members[id]; ms != nil && ms.Len() > 0 {
				ms.Set(nil)
			}
		}
	}
	for ent, p := range pols {
		ent.pol = p
	}
	e.pruneMembers()
	if len(pols) > 0 {
		// New flows follow the new policies once this returns.
		e.quiesce(e.publishLocked())
	}
	return nil
}

// createMemberSets creates the (empty) member sets that the rules of the
// changed groups refer to and that do not exist yet, so that compile
// creates none; it returns their ids, for SetSecurityGroups to remove
// them if it fails. e.mu must be held.
func (e *Engine) createMemberSets(changed map[string]bool) []string {
	var created []string
	for id := range changed {
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

// pruneMembers forgets the member sets of ids that are neither a group
// nor referenced by a rule: after the recompilations of SetSecurityGroups
// no policy uses them. e.mu must be held.
func (e *Engine) pruneMembers() {
	for id := range e.members {
		if _, ok := e.sgs[id]; ok {
			continue
		}
		used := false
		for _, g := range e.sgs {
			if slices.ContainsFunc(g.Rules, func(r model.Rule) bool { return r.SG == id }) {
				used = true
				break
			}
		}
		if !used {
			delete(e.members, id)
		}
	}
}

// compile builds the firewall policy of n from the current groups. The
// member sets of the groups its rules refer to are created if needed
// (empty), so that members added later take effect without a rebuild.
// e.mu must be held.
func (e *Engine) compile(n model.NIC) (*firewall.Policy, error) {
	var groups []model.SG
	for _, id := range n.SecurityGroups {
		g, ok := e.sgs[id]
		if !ok {
			continue
		}
		groups = append(groups, g)
		for _, r := range g.Rules {
			if r.SG != "" && e.members[r.SG] == nil {
				e.members[r.SG] = firewall.NewMemberSet(e.sgs[r.SG].Members)
			}
		}
	}
	e.fwGen++
	p, err := firewall.Compile(firewall.CompileInput{Generation: e.fwGen, IPs: n.IPs, Groups: groups, Members: e.members})
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
	if v := nic.ct.Decide(frame, firewall.ToVM, nic.pol, w.mono); !v.Allowed() {
		nic.fw.drop(w.id, firewallDrop(v))
		return false
	}
	nic.fw.add(w.id, 1, 0)
	return true
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
		if nic := s.nics[slot]; nic != nil && nic.pol != nil {
			nic.ct.Check(nic.pol, w.mono, fwCheckBudget)
		}
	}
}
