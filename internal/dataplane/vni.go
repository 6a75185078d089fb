package dataplane

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/butterfly-go/butterfly/internal/l2"
	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/vxlan"
)

// attachVNI returns the VNI's long-lived state, creating it (and joining
// its multicast group) for its first vNIC.
func (e *Engine) attachVNI(vni uint32) (*vniLong, error) {
	if v, ok := e.vnis[vni]; ok {
		return v, nil
	}
	v := &vniLong{
		vni: vni,
		sw:  newElement("switch", fmt.Sprintf("switch-%d", vni), e.cfg.Workers),
		l2:  l2.New(vni, l2.Options{}),
		fdb: vxlan.NewFDB(fdbSize, fdbMaxAge),
	}
	if len(e.cfg.HeadEnd) == 0 && !e.cfg.Cluster {
		g := floodGroup(vni, e.cfg.VTEP.Is6())
		if err := e.under.JoinGroup(g); err != nil {
			return nil, fmt.Errorf("dataplane: VNI %d: join %v: %w", vni, g, err)
		}
		v.group = g
	}
	e.vnis[vni] = v
	c := &vniConf{vniLong: v}
	if v.group.IsValid() {
		c.flood = []netip.AddrPort{netip.AddrPortFrom(v.group, vxlan.Port)}
	}
	for _, h := range e.cfg.HeadEnd {
		c.flood = append(c.flood, netip.AddrPortFrom(h, vxlan.Port))
	}
	if e.cfg.Cluster {
		c.flood = e.remoteFlood[vni]
		c.macs = e.remoteMACs[vni]
		c.neigh = e.neighbors[vni]
	}
	confs := maps.Clone(e.vniConfs)
	confs[vni] = c
	e.vniConfs = confs
	return v, nil
}

// floodGroup returns the VNI's multicast group (vxlan.MulticastGroup). The
// original's IPv6 groups are ff00::<vni>, scope 0, which Linux drops on
// receive (RFC 4291 2.7 reserves scope 0): such a group gets scope 5,
// site-local (ff05::<vni>).
func floodGroup(vni uint32, v6 bool) netip.Addr {
	g := vxlan.MulticastGroup(vni, v6)
	if b := g.As16(); g.Is6() && b[1]&0x0f == 0 {
		b[1] |= 0x05
		g = netip.AddrFrom16(b)
	}
	return g
}

// detachVNI forgets the VNI (and leaves its group); it has no vNIC left.
func (e *Engine) detachVNI(v *vniLong) {
	delete(e.vnis, v.vni)
	confs := maps.Clone(e.vniConfs)
	delete(confs, v.vni)
	e.vniConfs = confs
	if v.group.IsValid() {
		if err := e.under.LeaveGroup(v.group); err != nil {
			e.log.Warn("leaving multicast group", "vni", v.vni, "group", v.group, "err", err)
		}
	}
}

// Remotes is what cluster mode tells the engine about the other nodes.
type Remotes struct {
	// Sources are the VTEPs VXLAN datagrams are accepted from; those of
	// any other address are dropped and counted (vxlan_unknown_source).
	Sources []netip.Addr
	// Flood lists, per VNI, the VTEPs its broadcast, multicast and
	// unknown unicast frames are replicated to (head-end replication).
	Flood map[uint32][]netip.Addr
	// MACs lists, per VNI, the MACs of the other nodes' vNICs with their
	// node's VTEP: a frame to one of them that the switch has not learnt
	// goes to that VTEP alone instead of being flooded.
	MACs map[uint32][]RemoteMAC
	// Neighbors lists, per VNI, the addresses of the cluster's vNICs
	// (every node's) with their MAC: an ARP request or IPv6 neighbour
	// solicitation from a local vNIC for one of them is answered here
	// instead of being flooded (suppression). Addresses claimed by two
	// MACs are left out.
	Neighbors map[uint32][]Neighbor
}

// Neighbor is an address of a vNIC and its MAC.
type Neighbor struct {
	IP  netip.Addr
	MAC [6]byte
}

// RemoteMAC is a vNIC MAC behind a remote VTEP.
type RemoteMAC struct {
	MAC  [6]byte
	VTEP netip.Addr
}

// SetRemotes replaces the accepted sources and the flood lists (cluster
// mode only: Config.Cluster). The VNIs whose list changed get a new
// snapshot entry; it returns once every worker uses the new lists.
func (e *Engine) SetRemotes(r Remotes) error {
	if !e.cfg.Cluster {
		return fmt.Errorf("dataplane: remotes are for cluster mode")
	}
	for _, a := range r.Sources {
		if !a.IsValid() || a.Unmap().Is4() != e.cfg.VTEP.Is4() {
			return fmt.Errorf("dataplane: remote VTEP %v: not an address of the VTEP's family", a)
		}
	}
	flood := make(map[uint32][]netip.AddrPort, len(r.Flood))
	for vni, l := range r.Flood {
		for _, a := range l {
			if !a.IsValid() || a.Unmap().Is4() != e.cfg.VTEP.Is4() {
				return fmt.Errorf("dataplane: VNI %d: flood VTEP %v: not an address of the VTEP's family", vni, a)
			}
			flood[vni] = append(flood[vni], netip.AddrPortFrom(a.Unmap(), vxlan.Port))
		}
	}
	macs := make(map[uint32]map[packet.MAC]netip.AddrPort, len(r.MACs))
	for vni, l := range r.MACs {
		m := make(map[packet.MAC]netip.AddrPort, len(l))
		for _, rm := range l {
			if !rm.VTEP.IsValid() || rm.VTEP.Unmap().Is4() != e.cfg.VTEP.Is4() {
				return fmt.Errorf("dataplane: VNI %d: MAC %v: VTEP %v not of the VTEP's family", vni, packet.MAC(rm.MAC), rm.VTEP)
			}
			if mac := packet.MAC(rm.MAC); !mac.IsMulticast() && !mac.IsZero() {
				m[mac] = netip.AddrPortFrom(rm.VTEP.Unmap(), vxlan.Port)
			}
		}
		if len(m) > 0 {
			macs[vni] = m
		}
	}
	neigh := make(map[uint32]map[netip.Addr]packet.MAC, len(r.Neighbors))
	for vni, l := range r.Neighbors {
		m := make(map[netip.Addr]packet.MAC, len(l))
		bad := map[netip.Addr]bool{}
		for _, n := range l {
			ip := n.IP.Unmap()
			if !ip.IsValid() || ip.Zone() != "" {
				continue
			}
			if old, ok := m[ip]; ok && old != packet.MAC(n.MAC) {
				bad[ip] = true
			}
			m[ip] = packet.MAC(n.MAC)
		}
		for ip := range bad {
			delete(m, ip)
		}
		if len(m) > 0 {
			neigh[vni] = m
		}
	}
	src := make(map[netip.Addr]struct{}, len(r.Sources))
	for _, a := range r.Sources {
		src[a.Unmap()] = struct{}{}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return fmt.Errorf("dataplane: closed")
	}
	e.sources = src
	e.remoteFlood = flood
	e.remoteMACs = macs
	e.neighbors = neigh
	var changed []uint32
	for vni, c := range e.vniConfs {
		if !slices.Equal(c.flood, flood[vni]) || !maps.Equal(c.macs, macs[vni]) || !maps.Equal(c.neigh, neigh[vni]) {
			changed = append(changed, vni)
		}
	}
	if len(changed) > 0 {
		confs := maps.Clone(e.vniConfs)
		for _, vni := range changed {
			v := confs[vni].vniLong
			confs[vni] = &vniConf{vniLong: v, flood: flood[vni], macs: macs[vni], neigh: neigh[vni]}
			// The vNICs' entries point at their VNI's: build them anew.
			for _, slot := range v.members {
				if ent := e.slots[slot]; ent != nil {
					e.touch(ent)
				}
			}
		}
		e.vniConfs = confs
	}
	e.quiesce(e.publishLocked())
	return nil
}
