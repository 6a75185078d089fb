// Package cluster runs a daemon in cluster mode: the desired state of a
// fleet of butterflyd lives in etcd, and each daemon programs itself from
// it. It watches etcd and drives the local model.Store exactly as the API
// does (so validation and the dataplane path stay single), gives the
// dataplane the other nodes' VTEPs (per-VNI flood lists and accepted
// VXLAN sources), their vNICs' MACs and every vNIC's addresses (ARP and
// NS suppression), and turns the API's mutations into etcd transactions
// (compare-and-swap on the record, nothing written when nothing changes).
// Removals from a group are enforced after a hold-down, so that a replay
// that re-creates a group empty and then refills it changes nothing. A
// full read diffs the whole desired state; a watched change diffs only
// the objects whose keys it touched. Import writes a standalone node's
// state to etcd before it follows etcd (--cluster-import).
//
// The core is pure (keys.go, record.go, view.go, reconcile.go: decode,
// validate, diff); the etcd I/O is in agent.go, writer.go and import.go.
//
// # Key layout
//
// Under a prefix P (default /butterfly/), values are the protojson (proto
// field names) of the API's own messages, so that `etcdctl get` shows
// them readably:
//
//	P nodes/<node>        MessageV0.ClusterNode: name, vtep, version (written by the node at start)
//	P alive/<node>        the same, attached to the node's lease: present while the node lives
//	P nics/<node>/<id>    MessageV0.Nic: a vNIC of <node>
//	P sgs/<id>            MessageV0.Sg: a security group with its rules and members
//
// Any tool may write these keys. A record that does not decode, whose
// key and content disagree, or that the model refuses is reported (log,
// status, metric) and ignored as a whole.
package cluster

import (
	"fmt"
	"strings"
)

// Kind is what a key holds.
type Kind int

// Kinds of keys.
const (
	KindNode Kind = iota + 1
	KindAlive
	KindNIC
	KindSG
)

// Layout names the keys under a prefix.
type Layout struct {
	// Prefix starts and ends with '/'.
	Prefix string
}

// Node is the key of a node's registration.
func (l Layout) Node(name string) string { return l.Prefix + "nodes/" + name }

// Alive is the key attached to a node's lease.
func (l Layout) Alive(name string) string { return l.Prefix + "alive/" + name }

// NIC is the key of a vNIC of node.
func (l Layout) NIC(node, id string) string { return l.Prefix + "nics/" + node + "/" + id }

// SG is the key of a security group.
func (l Layout) SG(id string) string { return l.Prefix + "sgs/" + id }

// Key is a parsed key.
type Key struct {
	Kind Kind
	// Node is the node of a KindNode, KindAlive or KindNIC key.
	Node string
	// ID is the vNIC or security group id of KindNIC and KindSG keys.
	ID string
}

// Parse parses a key under the prefix; keys the layout does not define
// are an error (they are reported and ignored).
func (l Layout) Parse(key string) (Key, error) {
	rest, ok := strings.CutPrefix(key, l.Prefix)
	if !ok {
		return Key{}, fmt.Errorf("key %q is not under %q", key, l.Prefix)
	}
	kind, name, _ := strings.Cut(rest, "/")
	bad := func() (Key, error) {
		return Key{}, fmt.Errorf("key %q is not <prefix>nodes/<node>, alive/<node>, nics/<node>/<id> or sgs/<id>", key)
	}
	switch kind {
	case "nodes", "alive":
		if !validName(name) {
			return bad()
		}
		k := Key{Kind: KindNode, Node: name}
		if kind == "alive" {
			k.Kind = KindAlive
		}
		return k, nil
	case "nics":
		node, id, ok := strings.Cut(name, "/")
		if !ok || !validName(node) || !validName(id) {
			return bad()
		}
		return Key{Kind: KindNIC, Node: node, ID: id}, nil
	case "sgs":
		if !validName(name) {
			return bad()
		}
		return Key{Kind: KindSG, ID: name}, nil
	}
	return bad()
}

// validName reports whether s can be one path element of a key: not
// empty, without '/'. The model checks ids further.
func validName(s string) bool { return s != "" && !strings.Contains(s, "/") }
