package cluster

import (
	"bytes"
	"net/netip"
	"slices"
	"sort"

	"github.com/butterfly-go/butterfly/internal/dataplane"
	"github.com/butterfly-go/butterfly/internal/model"
)

// View is the cluster as its records say: the valid records by kind, and
// the keys of invalid ones with the reason. It is pure: Put and Delete
// follow etcd's events (or a full read), and the daemon derives its
// desired state and its dataplane's remotes from it. Not safe for
// concurrent use.
type View struct {
	layout Layout
	// Nodes are the registered nodes, Alive those whose lease key exists.
	Nodes map[string]NodeInfo
	Alive map[string]NodeInfo
	// NICs are the vNICs by node, then id.
	NICs map[string]map[string]model.NIC
	SGs  map[string]model.SG
	// Invalid maps the key of each invalid record to why it is refused.
	Invalid map[string]string
	// ids maps every key present to its parse, so Delete finds it.
	keys map[string]Key
}

// NewView returns an empty view of the keys under l.
func NewView(l Layout) *View {
	return &View{
		layout:  l,
		Nodes:   map[string]NodeInfo{},
		Alive:   map[string]NodeInfo{},
		NICs:    map[string]map[string]model.NIC{},
		SGs:     map[string]model.SG{},
		Invalid: map[string]string{},
		keys:    map[string]Key{},
	}
}

// Put records the value of key. An invalid value removes the key's
// previous valid record from the view and marks the key invalid (see
// Held: the daemon then keeps what it had for that object). It returns
// the decoding error, nil for a valid record.
func (v *View) Put(key string, value []byte) error {
	v.Delete(key)
	r, err := Decode(v.layout, key, value)
	if err != nil {
		v.Invalid[key] = err.Error()
		if k, perr := v.layout.Parse(key); perr == nil {
			v.keys[key] = k
		}
		return err
	}
	v.keys[key] = r.Key
	switch r.Key.Kind {
	case KindNode:
		v.Nodes[r.Key.Node] = r.Node
	case KindAlive:
		v.Alive[r.Key.Node] = r.Node
	case KindNIC:
		m := v.NICs[r.Key.Node]
		if m == nil {
			m = map[string]model.NIC{}
			v.NICs[r.Key.Node] = m
		}
		m[r.Key.ID] = r.NIC
	case KindSG:
		v.SGs[r.Key.ID] = r.SG
	}
	return nil
}

// Delete forgets key.
func (v *View) Delete(key string) {
	delete(v.Invalid, key)
	k, ok := v.keys[key]
	if !ok {
		return
	}
	delete(v.keys, key)
	switch k.Kind {
	case KindNode:
		delete(v.Nodes, k.Node)
	case KindAlive:
		delete(v.Alive, k.Node)
	case KindNIC:
		if m := v.NICs[k.Node]; m != nil {
			delete(m, k.ID)
			if len(m) == 0 {
				delete(v.NICs, k.Node)
			}
		}
	case KindSG:
		delete(v.SGs, k.ID)
	}
}

// Held returns the ids of node's vNICs and of the security groups whose
// record is invalid: the daemon neither changes nor removes its own
// objects of these ids (an invalid record is never half-applied, and a
// typo does not remove a running VM's vNIC).
func (v *View) Held(node string) (nics, sgs map[string]bool) {
	nics, sgs = map[string]bool{}, map[string]bool{}
	for key := range v.Invalid {
		k, ok := v.keys[key]
		if !ok {
			continue
		}
		switch {
		case k.Kind == KindNIC && k.Node == node:
			nics[k.ID] = true
		case k.Kind == KindSG:
			sgs[k.ID] = true
		}
	}
	return nics, sgs
}

// Remotes returns what node's dataplane needs of the other nodes: the
// VTEPs of every registered node (accepted VXLAN sources) and, for each
// VNI, the VTEPs of the live nodes that have a vNIC in it (head-end
// replication) and the MACs of their vNICs in it, sorted; and the
// addresses of every node's vNICs by VNI (ARP and NS suppression). Nodes sharing
// node's VTEP are left out of the first three.
func (v *View) Remotes(node string) dataplane.Remotes {
	self := v.Nodes[node].VTEP
	r := dataplane.Remotes{Flood: map[uint32][]netip.Addr{}, MACs: map[uint32][]dataplane.RemoteMAC{},
		Neighbors: map[uint32][]dataplane.Neighbor{}}
	for _, name := range sortedIDs(v.NICs) {
		m := v.NICs[name]
		for _, id := range sortedIDs(m) {
			n := m[id]
			for _, ip := range n.IPs {
				r.Neighbors[n.VNI] = append(r.Neighbors[n.VNI], dataplane.Neighbor{IP: ip, MAC: n.MAC})
			}
		}
	}
	for name, n := range v.Nodes {
		if name == node || n.VTEP == self {
			continue
		}
		r.Sources = append(r.Sources, n.VTEP)
		if _, alive := v.Alive[name]; !alive {
			continue
		}
		for _, nic := range v.NICs[name] {
			if l := r.Flood[nic.VNI]; !slices.Contains(l, n.VTEP) {
				r.Flood[nic.VNI] = append(l, n.VTEP)
			}
			r.MACs[nic.VNI] = append(r.MACs[nic.VNI], dataplane.RemoteMAC{MAC: nic.MAC, VTEP: n.VTEP})
		}
	}
	r.Sources = sortAddrs(r.Sources)
	for vni, l := range r.Flood {
		r.Flood[vni] = sortAddrs(l)
	}
	for _, l := range r.MACs {
		slices.SortFunc(l, func(a, b dataplane.RemoteMAC) int {
			if c := bytes.Compare(a.MAC[:], b.MAC[:]); c != 0 {
				return c
			}
			return a.VTEP.Compare(b.VTEP)
		})
	}
	return r
}

func sortAddrs(l []netip.Addr) []netip.Addr {
	l = slices.Compact(slices.SortedFunc(slices.Values(l), netip.Addr.Compare))
	if len(l) == 0 {
		return nil
	}
	return l
}

// EqualRemotes reports whether a and b are the same remotes (as Remotes
// builds them: sorted lists).
func EqualRemotes(a, b dataplane.Remotes) bool {
	if !slices.Equal(a.Sources, b.Sources) || len(a.Flood) != len(b.Flood) || len(a.MACs) != len(b.MACs) {
		return false
	}
	for vni, l := range a.Flood {
		if m, ok := b.Flood[vni]; !ok || !slices.Equal(l, m) {
			return false
		}
	}
	for vni, l := range a.MACs {
		if m, ok := b.MACs[vni]; !ok || !slices.Equal(l, m) {
			return false
		}
	}
	if len(a.Neighbors) != len(b.Neighbors) {
		return false
	}
	for vni, l := range a.Neighbors {
		if m, ok := b.Neighbors[vni]; !ok || !slices.Equal(l, m) {
			return false
		}
	}
	return true
}

// InvalidList returns "key: reason" for every invalid record, sorted.
func (v *View) InvalidList() []string {
	out := make([]string, 0, len(v.Invalid))
	for k, r := range v.Invalid {
		out = append(out, k+": "+r)
	}
	sort.Strings(out)
	return out
}
