package dataplane

import (
	"fmt"
	"maps"
	"net/netip"

	"github.com/butterfly-go/butterfly/internal/l2"
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
	if len(e.cfg.HeadEnd) == 0 {
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
