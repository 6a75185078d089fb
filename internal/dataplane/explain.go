package dataplane

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/butterfly-go/butterfly/internal/antispoof"
	"github.com/butterfly-go/butterfly/internal/firewall"
	"github.com/butterfly-go/butterfly/internal/l2"
	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/packet"
)

var _ model.Explainer = (*Engine)(nil)

// Explain tells what the workers would do now with frame if vNIC from
// sent it, one decision per step, as rxNIC and what follows it take them:
// anti-spoofing, the egress firewall, the VNI's switch, then for each
// destination the ingress firewall of a local vNIC or the underlay. It
// uses the published snapshot and the same checks, read-only: the
// switch's Peek (nothing learnt), the firewall's Explain run by the
// worker that owns each connection table (nothing tracked). Frames are
// never sent. Drops name the reason nic counters would count.
func (e *Engine) Explain(from string, frame []byte) (model.Explanation, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ent, ok := e.nics[from]
	if !ok {
		return model.Explanation{}, fmt.Errorf("dataplane: vNIC %q does not exist", from)
	}
	s := e.snap.Load()
	var nic *nicConf
	if s != nil {
		nic = s.nics.of(ent.p)
	}
	if nic == nil {
		return model.Explanation{}, fmt.Errorf("dataplane: vNIC %q is not published yet", from)
	}
	x := &explainer{e: e, s: s}
	x.explain(nic, frame)
	return x.out, x.err
}

// explainer accumulates the steps of one explanation.
type explainer struct {
	e   *Engine
	s   *snapshot
	out model.Explanation
	err error
	// lastFw is the reason of the last firewall drop.
	lastFw dropReason
}

func (x *explainer) step(format string, args ...any) {
	x.out.Steps = append(x.out.Steps, fmt.Sprintf(format, args...))
}

func (x *explainer) drop(r dropReason) { x.out.Verdict = "drop " + dropName(r) }

func (x *explainer) now() int64 { return int64(time.Since(x.e.start)) }

func (x *explainer) explain(nic *nicConf, frame []byte) {
	x.step("frame from vNIC %s: %s", nic.id, packet.Describe(frame))
	if nic.bypass {
		x.step("anti-spoofing: bypassed (filtering off)")
	} else if r := nic.spoof.Check(frame); r != antispoof.OK {
		x.step("anti-spoofing: drop (%s), counted on vNIC %s", r, nic.id)
		x.drop(spoofDrop(r))
		return
	} else {
		what := "source MAC"
		if nic.spoof.IPAntiSpoof() {
			what = "source MAC, IP, ARP and NDP"
		}
		x.step("anti-spoofing: pass (%s checked)", what)
	}
	if !x.firewall(nic, frame, firewall.FromVM) {
		return
	}
	v := nic.vni
	cfg := v.l2.Config()
	now := x.now()
	d := v.l2.Peek(cfg, frame, uint32(nic.slot), now)
	dstMAC := packet.Ethernet(frame).Dst()
	switch d.Action {
	case l2.Drop:
		x.step("switch (VNI %d): drop (%s), counted on vNIC %s", v.vni, d.Reason, nic.id)
		x.drop(switchDrop(d.Reason))
		return
	case l2.Forward:
		if d.Port != underPort {
			x.step("switch (VNI %d): %v was learnt on local vNIC %s: forward", v.vni, dstMAC, x.portName(d.Port))
			x.finish([]outcome{x.local(nic, v, d.Port, frame)})
			return
		}
		if vtep, ok := v.fdb.Lookup(dstMAC, now); ok {
			x.step("switch (VNI %d): %v is behind remote VTEP %v: forward", v.vni, dstMAC, vtep)
			x.finish([]outcome{x.remote(nic, v.vni, frame, vtep.String())})
			return
		}
		x.step("switch (VNI %d): %v was learnt from the underlay but its VTEP aged out: flood", v.vni, dstMAC)
	case l2.Flood:
		why := "unknown destination"
		if dstMAC.IsMulticast() {
			why = "broadcast or multicast destination"
		}
		if v.neigh != nil {
			if target, mac, ok := neighborQuery(v, frame); ok {
				x.step("switch (VNI %d): asks for %v, which the cluster's records give to %v: answered to vNIC %s, not flooded (suppression)",
					v.vni, target, mac, nic.id)
				x.out.Verdict = "answered by the switch"
				return
			}
		}
		x.step("switch (VNI %d): %s %v: flood", v.vni, why, dstMAC)
	}
	if dst, ok := v.macs[dstMAC]; ok {
		x.step("cluster: %v is a vNIC of the node at VTEP %v: sent there alone", dstMAC, dst.Addr())
		x.finish([]outcome{x.remote(nic, v.vni, frame, dst.Addr().String())})
		return
	}
	var outs []outcome
	for _, p := range cfg.AppendFlood(nil, uint32(nic.slot)) {
		if p == underPort {
			var dsts []string
			for _, a := range v.flood {
				dsts = append(dsts, a.Addr().String())
			}
			outs = append(outs, x.remote(nic, v.vni, frame, strings.Join(dsts, ",")))
			continue
		}
		outs = append(outs, x.local(nic, v, p, frame))
	}
	if len(outs) == 0 {
		x.step("flood: no other port in VNI %d: the frame is freed (not counted)", v.vni)
		x.out.Verdict = "drop " + engineDropName(dropNoRoute)
		return
	}
	x.finish(outs)
}

// outcome is the fate of one copy of the frame.
type outcome struct {
	where string // destination
	drop  dropReason
	// dropped: the copy is dropped for drop.
	dropped bool
}

// finish sets the verdict: deliver to the destinations that take a copy,
// followed by the copies dropped and why ("deliver vNIC b, vtep X; drop
// vNIC c: firewall_no_rule"), else the first copy's drop.
func (x *explainer) finish(outs []outcome) {
	var to, lost []string
	for _, o := range outs {
		if o.dropped {
			lost = append(lost, o.where+": "+dropName(o.drop))
		} else {
			to = append(to, o.where)
		}
	}
	if len(to) == 0 {
		x.drop(outs[0].drop)
		return
	}
	x.out.Verdict = "deliver " + strings.Join(to, ", ")
	if len(lost) > 0 {
		x.out.Verdict += "; drop " + strings.Join(lost, ", ")
	}
}

func (x *explainer) portName(p uint32) string {
	if nic := x.s.nics.at(int(p)); nic != nil {
		return nic.id
	}
	return fmt.Sprintf("(port %d)", p)
}

// local follows toLocal and enqueue: the port must be in the VNI, then
// the vNIC's ingress firewall decides.
func (x *explainer) local(src *nicConf, v *vniConf, p uint32, frame []byte) outcome {
	dst := x.s.nics.at(int(p))
	if dst == nil || dst.vni.vniLong != v.vniLong {
		x.step("to port %d: not in VNI %d any more: drop (no_route), counted on vNIC %s", p, v.vni, src.id)
		return outcome{where: fmt.Sprintf("port %d", p), drop: dropNoRoute, dropped: true}
	}
	if !x.firewall(dst, frame, firewall.ToVM) {
		return outcome{where: "vNIC " + dst.id, drop: x.lastFw, dropped: true}
	}
	return outcome{where: "vNIC " + dst.id}
}

// remote follows encapsulate for a frame without offloads: an underlay is
// needed and the frame must fit its MTU.
func (x *explainer) remote(src *nicConf, vni uint32, frame []byte, to string) outcome {
	s := x.s
	switch {
	case s.under == nil || to == "":
		x.step("to the underlay: no underlay: drop (no_underlay), counted on vNIC %s", src.id)
		return outcome{where: "vtep " + to, drop: dropNoUnderlay, dropped: true}
	case len(frame) > s.mtu:
		x.step("to the underlay: %d bytes exceed the %d the underlay takes: drop (too_big, the sender gets an ICMP error), counted on vNIC %s",
			len(frame), s.mtu, src.id)
		return outcome{where: "vtep " + to, drop: dropTooBig, dropped: true}
	}
	x.step("to the underlay: VXLAN VNI %d from %v to %s", vni, s.vtep, to)
	return outcome{where: "vtep " + to}
}

// firewall explains nic's firewall in direction dir and reports whether
// the frame passes; on a drop, x.lastFw is the reason and the verdict is
// set.
func (x *explainer) firewall(nic *nicConf, frame []byte, dir firewall.Direction) bool {
	name := map[firewall.Direction]string{firewall.FromVM: "egress", firewall.ToVM: "ingress"}[dir]
	if nic.pol == nil {
		x.step("firewall %s (vNIC %s): none (filtering bypassed)", name, nic.id)
		return true
	}
	var fx firewall.Explanation
	ct, pol := nic.ct, nic.pol
	if err := x.e.onOwner(nic.nicPort, func(now int64) { fx = ct.Explain(frame, dir, pol, now) }); err != nil {
		x.err = fmt.Errorf("dataplane: explain: vNIC %s: %w", nic.id, err)
		return false
	}
	line := fmt.Sprintf("firewall %s (vNIC %s): %s", name, nic.id, verdictText(fx.Verdict))
	if fx.Tracked {
		line += "; " + flowText(fx.Flow)
	}
	if fx.Note != "" {
		line += "; " + fx.Note
	}
	if fx.Evaluated {
		line += "; policy: " + matchText(fx.Match, dir)
	}
	if !fx.Verdict.Allowed() {
		line += ", counted on vNIC " + nic.id
		x.step("%s", line)
		x.lastFw = firewallDrop(fx.Verdict)
		x.drop(x.lastFw)
		return false
	}
	x.step("%s", line)
	return true
}

func verdictText(v firewall.Verdict) string {
	switch v {
	case firewall.Accept:
		return "accept"
	case firewall.AcceptStateless:
		return "accept (untracked)"
	}
	return "drop (firewall_" + v.String() + ")"
}

func flowText(f firewall.Flow) string {
	dir := "opened by the VM"
	if f.Dir == firewall.ToVM {
		dir = "opened towards the VM"
	}
	s := fmt.Sprintf("tracked flow %s %s -> %s, %s", protoName(f.Proto),
		netip.AddrPortFrom(f.Src, f.SrcPort), netip.AddrPortFrom(f.Dst, f.DstPort), dir)
	if f.State != 0 {
		s += ", " + f.State.String()
	}
	if f.Replied {
		s += ", replied"
	}
	return s
}

func matchText(m firewall.Match, dir firewall.Direction) string {
	switch m.Kind {
	case firewall.MatchRule:
		// As "sg rule list" prints it after the hash.
		r := m.Rule.Rule
		dir := map[model.RuleDirection]string{model.Inbound: "INBOUND", model.Outbound: "OUTBOUND"}[r.Direction]
		start, end, cidr, sg := "Ø", "Ø", "Ø", "Ø"
		if r.HasPorts() {
			start, end = fmt.Sprint(r.PortStart), fmt.Sprint(r.PortEnd)
		}
		if r.CIDR.IsValid() {
			cidr = model.CIDRString(r.CIDR)
		}
		if r.SG != "" {
			sg = r.SG
		}
		return fmt.Sprintf("rule of group %s: direction: %s - IP protocol: %d - port start: %s - port end: %s - cidr: %s - members of sg: %s",
			m.Rule.Group, dir, r.Protocol, start, end, cidr, sg)
	case firewall.MatchDefaultEgress:
		return "default egress (no OUTBOUND rule): the source is an address of the vNIC"
	case firewall.MatchDHCP:
		return "default egress (no OUTBOUND rule): DHCP client request"
	}
	if m.DefaultEgress {
		return "default egress (no OUTBOUND rule): the source is not an address of the vNIC"
	}
	if dir == firewall.ToVM {
		return "no INBOUND rule allows it"
	}
	return "no OUTBOUND rule allows it"
}

func protoName(p uint8) string {
	if n, ok := packet.ProtoName(p); ok {
		return n
	}
	return fmt.Sprint(p)
}
