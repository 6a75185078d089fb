package cluster

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/butterfly-go/butterfly/internal/model"
)

// Imported says what Import did, by etcd key.
type Imported struct {
	// Written are the records created from the store.
	Written []string
	// Kept are the keys etcd already held: etcd's record stays (for a
	// group, the cluster's version of it wins; for a vNIC, what an
	// earlier import or a tool wrote).
	Kept []string
}

// Import writes the store's vNICs (as this node's) and security groups
// to etcd, each only where etcd holds no record of that key (created in
// a transaction that fails if the key exists, so nothing in etcd is
// overwritten). It is how a standalone node moves to cluster mode with
// its state: called after the state file was restored and before Run,
// the first read then finds the node's vNICs and removes none. It fails
// on the first etcd error (the caller should not start following etcd
// then: what was not imported would be removed).
func (a *Agent) Import(ctx context.Context) (Imported, error) {
	var res Imported
	st := a.cfg.Store.State()
	put := func(key string, value []byte) error {
		rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), a.cfg.Timeout)
		defer cancel()
		tr, err := a.cli.Txn(rctx).If(clientv3.Compare(clientv3.Version(key), "=", 0)).
			Then(clientv3.OpPut(key, string(value))).Commit()
		if err != nil {
			return fmt.Errorf("cluster import: writing %s: %w", key, errUnavailable(err))
		}
		if tr.Succeeded {
			res.Written = append(res.Written, key)
		} else {
			res.Kept = append(res.Kept, key)
		}
		return nil
	}
	for _, sg := range st.SGs {
		if err := put(a.layout.SG(sg.ID), EncodeSG(sg)); err != nil {
			return res, err
		}
	}
	for _, n := range st.NICs {
		if err := put(a.layout.NIC(a.cfg.Node, n.ID), EncodeNIC(importedNIC(n, a.cfg.StoreOptions))); err != nil {
			return res, err
		}
	}
	return res, nil
}

// importedNIC is n as a record holds it: without its local path, and
// without a trace path that is only this node's default.
func importedNIC(n model.NIC, opts model.Options) model.NIC {
	n.Path = ""
	n.Import = nil
	if opts.DefaultTracePath != nil && n.TracePath == opts.DefaultTracePath(n.ID) {
		n.TracePath = ""
	}
	return n
}
