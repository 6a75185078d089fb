package cluster

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/butterfly-go/butterfly/internal/model"
)

// The API's mutations in cluster mode. Each reads the object's record,
// runs the request on a scratch model.Store holding it (the API's own
// validation and idempotent semantics), and writes the result with a
// compare-and-swap on the record's revision (retried on a conflict). A
// request that changes nothing writes nothing: a replayed sg_add or
// sg_rule_add with the content etcd holds bumps no revision anywhere.
// The reply waits until this node applied the revision, so that the
// next request on this node sees the change; if this node's store
// refuses a record it wrote (a TAP that cannot be created), the record is
// put back as it was and the error returned.

// maxConflicts bounds the compare-and-swap retries of one mutation.
const maxConflicts = 8

// AddNIC creates or replaces a vNIC of this node (nic_add) and returns
// the path this node's dataplane reports.
//
// n.Import (fw_import, live migration) is not part of the record: it is
// kept here until this node applies the record, and given to that vNIC
// creation only.
func (a *Agent) AddNIC(n model.NIC) (string, error) {
	if _, err := CheckNIC(n, model.Options{}); err != nil {
		return "", err
	}
	if len(n.Import) > 0 {
		a.mu.Lock()
		a.imports[n.ID] = n.Import
		a.mu.Unlock()
		defer func() {
			a.mu.Lock()
			delete(a.imports, n.ID)
			a.mu.Unlock()
		}()
	}
	key := a.layout.NIC(a.cfg.Node, n.ID)
	if err := a.mutate(key, func(s *model.Store) error { _, err := s.AddNIC(n); return err }); err != nil {
		return "", err
	}
	got, err := a.cfg.Store.NICDetails(n.ID)
	if err != nil {
		return "", fmt.Errorf("cluster: nic %q committed but not on this node: %w", n.ID, err)
	}
	return got[0].Path, nil
}

// UpdateNIC changes a vNIC of this node (nic_update).
func (a *Agent) UpdateNIC(u model.NICUpdate) error {
	return a.mutate(a.layout.NIC(a.cfg.Node, u.ID), func(s *model.Store) error { return s.UpdateNIC(u) })
}

// DeleteNIC removes a vNIC of this node (nic_del).
func (a *Agent) DeleteNIC(id string) error {
	return a.mutate(a.layout.NIC(a.cfg.Node, id), func(s *model.Store) error { return s.DeleteNIC(id) })
}

// AddSG creates or replaces a security group of the cluster (sg_add).
func (a *Agent) AddSG(sg model.SG) error {
	if _, err := CheckSG(sg); err != nil {
		return err
	}
	return a.mutate(a.layout.SG(sg.ID), func(s *model.Store) error { return s.AddSG(sg) })
}

// DeleteSG removes a security group of the cluster (sg_del).
func (a *Agent) DeleteSG(id string) error {
	return a.mutate(a.layout.SG(id), func(s *model.Store) error { return s.DeleteSG(id) })
}

// AddRule adds a rule to a group of the cluster (sg_rule_add).
func (a *Agent) AddRule(sgID string, r model.Rule) error {
	return a.mutate(a.layout.SG(sgID), func(s *model.Store) error { return s.AddRule(sgID, r) })
}

// DeleteRule removes a rule from a group of the cluster (sg_rule_del).
func (a *Agent) DeleteRule(sgID string, r model.Rule) error {
	return a.mutate(a.layout.SG(sgID), func(s *model.Store) error { return s.DeleteRule(sgID, r) })
}

// AddMember adds a member to a group of the cluster (sg_member_add).
func (a *Agent) AddMember(sgID, ip string) error {
	return a.mutate(a.layout.SG(sgID), func(s *model.Store) error { return s.AddMember(sgID, ip) })
}

// DeleteMember removes a member from a group of the cluster
// (sg_member_del).
func (a *Agent) DeleteMember(sgID, ip string) error {
	return a.mutate(a.layout.SG(sgID), func(s *model.Store) error { return s.DeleteMember(sgID, ip) })
}

// mutate runs op on the record of key (see above).
func (a *Agent) mutate(key string, op func(*model.Store) error) error {
	k, err := a.layout.Parse(key)
	if err != nil {
		// An id the layout cannot hold (empty, with '/'): the model
		// refuses it, or it names nothing (deletions succeed).
		return op(model.New(nopDataplane{}, model.Options{}))
	}
	// Without a leader the contacted member fails at once ("no
	// leader") instead of waiting for the timeout.
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(context.Background()), a.cfg.Timeout)
	defer cancel()
	for range maxConflicts {
		resp, err := a.cli.Get(ctx, key)
		if err != nil {
			return errUnavailable(err)
		}
		var old []byte
		var modRev int64
		s := model.New(nopDataplane{}, model.Options{})
		if len(resp.Kvs) > 0 {
			old, modRev = resp.Kvs[0].Value, resp.Kvs[0].ModRevision
			// An invalid record is replaced by the request's result,
			// as if absent.
			if r, err := Decode(a.layout, key, old); err == nil {
				switch k.Kind {
				case KindNIC:
					_, err = s.AddNIC(r.NIC)
				case KindSG:
					err = s.AddSG(r.SG)
				}
				if err != nil {
					return fmt.Errorf("cluster: record %s: %w", key, err)
				}
			}
		}
		if err := op(s); err != nil {
			return err
		}
		next, exists := recordOf(s, k)
		if (old == nil && !exists) || (exists && string(next) == string(old)) {
			// Nothing to write; still make sure this node applied the
			// record read (not the store's revision: keys outside the
			// prefix, which the watch does not see, move it too).
			return a.waitApplied(ctx, modRev)
		}
		cmp := clientv3.Compare(clientv3.ModRevision(key), "=", modRev)
		put := clientv3.OpDelete(key)
		if exists {
			put = clientv3.OpPut(key, string(next))
		}
		tr, err := a.cli.Txn(ctx).If(cmp).Then(put).Commit()
		if err != nil {
			return errUnavailable(err)
		}
		if !tr.Succeeded {
			continue // written meanwhile: start again from the new record
		}
		rev := tr.Header.Revision
		if err := a.waitApplied(ctx, rev); err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		if err := a.refused(k); err != nil {
			a.undo(key, rev, old)
			return err
		}
		return nil
	}
	return fmt.Errorf("cluster: %s kept changing: %d conflicting writes, giving up", key, maxConflicts)
}

// recordOf returns the value of k's object in s, and whether it exists.
func recordOf(s *model.Store, k Key) ([]byte, bool) {
	switch k.Kind {
	case KindNIC:
		if l, err := s.NICDetails(k.ID); err == nil {
			return EncodeNIC(l[0]), true
		}
	case KindSG:
		if l, err := s.SGDetails(k.ID); err == nil {
			return EncodeSG(l[0]), true
		}
	}
	return nil, false
}

// refused returns the error of this node's store for k's object, if it
// refused it at the last apply.
func (a *Agent) refused(k Key) error {
	what := "sg " + k.ID
	if k.Kind == KindNIC {
		what = "nic " + k.ID
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.applyErrs[what]
}

// undo puts key back to old (deletes it when old is nil) if it is still
// at revision rev.
func (a *Agent) undo(key string, rev int64, old []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Timeout)
	defer cancel()
	op := clientv3.OpDelete(key)
	if old != nil {
		op = clientv3.OpPut(key, string(old))
	}
	_, err := a.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(op).Commit()
	if err != nil {
		a.log.Error("cluster: could not put back a record this node refused", "key", key, "err", err)
	}
}
