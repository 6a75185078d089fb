package cluster

import (
	"fmt"
	"slices"
	"sort"

	"github.com/butterfly-go/butterfly/internal/model"
)

// OpKind is what an Op does to the store.
type OpKind int

// Operations, in the order Diff emits them.
const (
	OpAddSG OpKind = iota + 1
	OpDelNIC
	OpAddNIC    // add, or replace an existing vNIC
	OpUpdateNIC // change a vNIC in place (IPs, groups, anti-spoofing, trace)
	OpDelSG
)

// Op is one store operation of a plan.
type Op struct {
	Kind   OpKind
	ID     string
	NIC    model.NIC
	Update model.NICUpdate
	SG     model.SG
}

// Diff returns the operations that make cur (the store's state) hold
// want's vNICs and security groups: groups first (so vNICs find their
// rules), then vNICs, then removed groups. Objects whose ids are held
// (their record is invalid) are left as they are. defaultTrace is the
// store's Options.DefaultTracePath (want's vNICs come without the local
// default). A vNIC that differs only in what nic_update changes is
// updated in place, not re-created (its port and flows stay).
//
// For a group whose removals are deferred now (deferRemovals(id) true),
// rules and members that want drops are kept and a deleted group stays:
// additions apply at once, removals wait; deferred lists those groups.
// A replay that re-creates a group empty and then re-adds its rules
// within the deferral thus changes nothing.
func Diff(cur model.State, wantNICs map[string]model.NIC, wantSGs map[string]model.SG,
	heldNICs, heldSGs map[string]bool, defaultTrace func(string) string,
	deferRemovals func(id string) bool) (ops []Op, deferred []string) {
	curSGs := make(map[string]model.SG, len(cur.SGs))
	for _, sg := range cur.SGs {
		curSGs[sg.ID] = sg
	}
	for _, id := range sortedIDs(wantSGs) {
		if heldSGs[id] {
			continue
		}
		w := wantSGs[id]
		c, ok := curSGs[id]
		if ok && deferRemovals != nil && deferRemovals(id) {
			if m := union(c, w); !m.Equal(w) {
				deferred = append(deferred, id)
				w = m
			}
		}
		if !ok || !c.Equal(w) {
			ops = append(ops, Op{Kind: OpAddSG, ID: id, SG: w})
		}
	}
	curNICs := make(map[string]model.NIC, len(cur.NICs))
	for _, n := range cur.NICs {
		curNICs[n.ID] = n
		if _, ok := wantNICs[n.ID]; !ok && !heldNICs[n.ID] {
			ops = append(ops, Op{Kind: OpDelNIC, ID: n.ID})
		}
	}
	for _, id := range sortedIDs(wantNICs) {
		if heldNICs[id] {
			continue
		}
		w := wantNICs[id]
		if w.TracePath == "" && defaultTrace != nil {
			w.TracePath = defaultTrace(id)
		}
		c, ok := curNICs[id]
		if !ok {
			ops = append(ops, Op{Kind: OpAddNIC, ID: id, NIC: w})
			continue
		}
		c.Path = ""
		if c.Equal(w) {
			continue
		}
		if u, ok := inPlace(c, w); ok {
			ops = append(ops, Op{Kind: OpUpdateNIC, ID: id, Update: u})
		} else {
			ops = append(ops, Op{Kind: OpAddNIC, ID: id, NIC: w})
		}
	}
	for _, sg := range cur.SGs {
		if _, ok := wantSGs[sg.ID]; !ok && !heldSGs[sg.ID] {
			if deferRemovals != nil && deferRemovals(sg.ID) {
				deferred = append(deferred, sg.ID)
				continue
			}
			ops = append(ops, Op{Kind: OpDelSG, ID: sg.ID})
		}
	}
	return ops, deferred
}

// union returns w with the rules and members of c it lacks, normalized
// as the model stores groups (c and w are).
func union(c, w model.SG) model.SG {
	m := w.Clone()
	for _, r := range c.Rules {
		if !slices.Contains(m.Rules, r) {
			m.Rules = append(m.Rules, r)
		}
	}
	for _, a := range c.Members {
		if !slices.Contains(m.Members, a) {
			m.Members = append(m.Members, a)
		}
	}
	if n, err := CheckSG(m); err == nil {
		return n
	}
	return w
}

// inPlace returns the nic_update that turns c into w, if only fields
// nic_update changes differ.
func inPlace(c, w model.NIC) (model.NICUpdate, bool) {
	if w.TracePath == "" && c.TracePath != "" {
		return model.NICUpdate{}, false
	}
	t := c
	t.IPs, t.SecurityGroups = w.IPs, w.SecurityGroups
	t.IPAntiSpoof, t.PacketTrace, t.TracePath = w.IPAntiSpoof, w.PacketTrace, w.TracePath
	if !t.Equal(w) {
		return model.NICUpdate{}, false
	}
	u := model.NICUpdate{ID: w.ID, IPs: []string{""}, SecurityGroups: []string{""},
		IPAntiSpoof: &w.IPAntiSpoof, PacketTrace: &w.PacketTrace}
	if len(w.IPs) > 0 {
		u.IPs = nil
		for _, a := range w.IPs {
			u.IPs = append(u.IPs, model.IPString(a))
		}
	}
	if len(w.SecurityGroups) > 0 {
		u.SecurityGroups = slices.Clone(w.SecurityGroups)
	}
	if w.TracePath != "" {
		p := w.TracePath
		u.TracePath = &p
	}
	return u, true
}

// Apply runs ops on s in order. An operation the store refuses leaves
// that object as it was; the errors are returned by object id ("nic X" /
// "sg X").
func Apply(s *model.Store, ops []Op) map[string]error {
	errs := map[string]error{}
	for _, op := range ops {
		var err error
		what := "nic " + op.ID
		switch op.Kind {
		case OpAddSG:
			what = "sg " + op.ID
			err = s.AddSG(op.SG)
		case OpDelSG:
			what = "sg " + op.ID
			err = s.DeleteSG(op.ID)
		case OpAddNIC:
			_, err = s.AddNIC(op.NIC)
		case OpUpdateNIC:
			err = s.UpdateNIC(op.Update)
		case OpDelNIC:
			err = s.DeleteNIC(op.ID)
		default:
			err = fmt.Errorf("unknown operation %d", op.Kind)
		}
		if err != nil {
			errs[what] = err
		}
	}
	return errs
}

func sortedIDs[V any](m map[string]V) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}
