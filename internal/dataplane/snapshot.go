package dataplane

import (
	"net/netip"

	"github.com/butterfly-go/butterfly/internal/antispoof"
	"github.com/butterfly-go/butterfly/internal/firewall"
	"github.com/butterfly-go/butterfly/internal/l2"
	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port"
	"github.com/butterfly-go/butterfly/internal/vxlan"
)

// snapshot is the configuration workers read. It is never modified after
// it is published; the control plane builds a new one for every change.
type snapshot struct {
	gen uint64
	// nics are the vNICs' entries by port slot; nil entries are free
	// slots.
	nics nicTable
	vnis map[uint32]*vniConf
	// polls lists, per worker, the slots whose port it reads.
	polls [][]int
	// under is the underlay (nil when none); worker 0 reads it.
	under underlay
	// txUnder are the sockets datagrams leave from: under first, then
	// the entropy sockets.
	txUnder   []underlay
	underFd   int
	utrace    traceWriter
	vtep      netip.Addr
	mtu       int // largest inner frame that fits the underlay
	mtuInner4 uint16
	mtuInner6 uint32
	// known reports whether a VNI exists (for vxlan.Decap).
	known func(vni uint32) bool
	// sources are the VTEPs datagrams are accepted from; nil accepts any
	// (multicast underlay).
	sources map[netip.Addr]struct{}
}

// nicChunk is the number of entries of a nicTable chunk.
const nicChunk = 16

// nicTable holds the snapshot's vNIC entries by port slot, in chunks that
// successive snapshots share: a snapshot copies the list of chunks and
// the chunks whose entries changed, so that publishing a change costs
// what changed rather than the number of vNICs.
type nicTable struct {
	chunks []*[nicChunk]*nicConf
	n      int // slots: len(chunks)*nicChunk >= n
}

// len returns the number of slots.
func (t *nicTable) len() int { return t.n }

// at returns the entry of slot, or nil for a free or out-of-range slot.
func (t *nicTable) at(slot int) *nicConf {
	if uint(slot) >= uint(t.n) {
		return nil
	}
	return t.chunks[slot/nicChunk][slot%nicChunk]
}

// of returns the entry of port p's slot if it is still p's (the vNIC may
// have left, and its slot be reused), else nil.
func (t *nicTable) of(p *nicPort) *nicConf {
	if c := t.at(p.slot); c != nil && c.nicPort == p {
		return c
	}
	return nil
}

// nicPort is the long-lived part of a vNIC: its port and counters.
type nicPort struct {
	id     string
	slot   int
	worker int
	port   port.Port
	path   string
	// gro: the port takes TSO frames, so TCP segments are merged.
	gro bool
	// tsoOK, when set, reports whether the port takes TSO frames now (a
	// vhost-user guest may lack GUEST_TSO); frames are segmented and not
	// merged when it says no. nil: the port takes them when gro is set.
	tsoOK func() bool
	rx    *element // port-rx: frames from the VM
	anti  *element // antispoof
	fw    *element // firewall, both directions
	// ct is the vNIC's connection tracking; only the worker that owns
	// the port uses it.
	ct    *firewall.Conntrack
	trace *element // trace
	tx    *element // port-tx: frames to the VM
	// drops logs the last frames dropped and counted on this vNIC.
	drops *dropLog
	// shares are the other workers that read some of the port's queue
	// pairs (vhost-user multiqueue, see addShares); worker is the home
	// worker, which reads the rest, writes every queue and owns ct.
	shares []share
}

// nicConf is one version of a vNIC's settings.
type nicConf struct {
	*nicPort
	mac    [6]byte
	vni    *vniConf
	bypass bool
	spoof  *antispoof.Config
	// pol is the firewall policy; nil when the vNIC bypasses filtering.
	pol    *firewall.Policy
	tracer traceWriter
}

// vniLong is the long-lived part of a VNI: its switch counters and MAC
// table survive configuration changes.
type vniLong struct {
	vni   uint32
	sw    *element
	l2    *l2.Switch
	fdb   *vxlan.FDB
	group netip.Addr // joined multicast group (invalid with head-end)
	// members are the slots of the VNI's vNICs (control plane only).
	members []uint32
}

// vniConf is a VNI's entry in the snapshots (its flood list is fixed for
// its lifetime).
type vniConf struct {
	*vniLong
	// flood are the underlay destinations of broadcast and unknown
	// unicast: the multicast group or the head-end list.
	flood []netip.AddrPort
	// macs are the other nodes' vNIC MACs with their VTEP (cluster
	// mode; nil otherwise): unicast to one of them is not flooded.
	macs map[packet.MAC]netip.AddrPort
	// neigh maps the addresses of the cluster's vNICs in the VNI to
	// their MAC (cluster mode; nil otherwise), for ARP and NS
	// suppression.
	neigh map[netip.Addr]packet.MAC
}
