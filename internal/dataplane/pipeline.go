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

// rxNIC reads one batch from a vNIC and pushes it through port-rx, trace,
// antispoof, firewall (FromVM) and the VNI's switch.
func (w *worker) rxNIC(s *snapshot, nic *nicConf) int {
	if nic.worker != w.id {
		return w.rxShare(s, nic)
	}
	if w.rxn == 0 {
		w.refillRx()
		if w.rxn == 0 {
			w.poolEmpty.Add(1)
			return 0
		}
	}
	n, err := nic.port.ReadBatch(w.rx[:w.rxn])
	if err != nil {
		nic.rx.drop(w.id, dropRxError)
		if n <= 0 {
			w.portFailed(nic.slot, nic.port.Fd(), nic.id, err)
			return 0
		}
	}
	if n <= 0 {
		return 0
	}
	if n > w.rxn {
		n = w.rxn
	}
	return w.forwardRead(s, nic, nic.port, n)
}

// forwardRead pushes the n frames just read from p, a port of nic, into
// w.rx through fromVM, sends them, and only then completes the read on p
// and counts the frames on port-rx and fromVM's elements: neither the
// guest's used ring nor the atomic adds are in the frames' way.
func (w *worker) forwardRead(s *snapshot, nic *nicConf, p port.Port, n int) int {
	c := w.fromVM(s, nic, w.rx[:n])
	w.take(n)
	w.flushAll()
	completeReads(p)
	nic.rx.add(w.id, uint64(n), c.bytes)
	w.countFromVM(nic, c)
	return n
}

// readCompleter is a port that gives the guest back the buffers of the
// frames ReadBatch took only when told, once they are forwarded
// (vhost-user: the used entries of its transmit rings; see
// vhostuser.Port.CompleteReads).
type readCompleter interface{ CompleteReads() }

// completeReads tells p, if it waits to be told, that the frames of its
// last ReadBatch are forwarded.
func completeReads(p port.Port) {
	if c, ok := p.(readCompleter); ok {
		c.CompleteReads()
	}
}

// vmCounts are what fromVM counts for its caller to add to the vNIC's
// elements (countFromVM), after the frames are sent.
type vmCounts struct {
	// bytes of the frames, for port-rx, which the caller counts.
	bytes uint64
	// passed anti-spoofing, passed the firewall (FromVM), forwarded by
	// the switch.
	passed, filtered, switched uint64
}

// countFromVM adds c to the anti-spoofing, firewall and switch elements of
// nic.
func (w *worker) countFromVM(nic *nicConf, c vmCounts) {
	if c.passed > 0 {
		nic.anti.add(w.id, c.passed, 0)
	}
	if c.filtered > 0 {
		nic.fw.add(w.id, c.filtered, 0)
	}
	if c.switched > 0 {
		nic.vni.sw.add(w.id, c.switched, 0)
	}
}

// fromVM pushes frames the vNIC sent through trace, antispoof, firewall
// (FromVM) and the VNI's switch and returns what its caller counts on
// those elements and on port-rx.
func (w *worker) fromVM(s *snapshot, nic *nicConf, bufs []*packet.Buf) vmCounts {
	var bytes, passed, spoofed, filtered uint64
	cfg := nic.vni.l2.Config()
	for _, b := range bufs {
		bytes += uint64(b.Len())
		b.InPort = uint32(nic.slot)
		if nic.tracer != nil {
			w.capture(nic.tracer, nic.trace, b.Bytes())
		}
		if w.fc != nil && fcCandidate(b.Bytes()) {
			switch w.fcForward(s, nic, cfg, b) {
			case fcSent:
				if !nic.bypass {
					passed++
				}
				if nic.pol != nil {
					filtered++
				}
				continue
			case fcFiltered:
				if !nic.bypass {
					passed++
				}
				spoofed++
				continue
			}
		}
		if !nic.bypass {
			if r := nic.spoof.Check(b.Bytes()); r != antispoof.OK {
				nic.anti.drop(w.id, spoofDrop(r))
				w.recordDrop(nic.nicPort, spoofDrop(r), b.Bytes())
				w.put(b)
				spoofed++
				continue
			}
			passed++
		}
		if nic.pol != nil {
			v := w.decideFromVM(nic, b.Bytes())
			if !v.Allowed() {
				nic.fw.drop(w.id, firewallDrop(v))
				w.recordDrop(nic.nicPort, firewallDrop(v), b.Bytes())
				w.put(b)
				spoofed++
				continue
			}
			filtered++
		}
		w.switchFromVM(s, nic, cfg, b)
		if w.fc != nil {
			w.fcCommit(s, nic)
		}
	}
	return vmCounts{bytes: bytes, passed: passed, filtered: filtered, switched: uint64(len(bufs)) - spoofed}
}

// decideFromVM runs nic's firewall (FromVM) on frame, recording the
// connection-tracking entry for the flow cache's pending entry.
func (w *worker) decideFromVM(nic *nicConf, frame []byte) firewall.Verdict {
	if w.fc == nil || !w.fc.pend.active {
		return nic.ct.Decide(frame, firewall.FromVM, nic.pol, w.mono)
	}
	v, r := nic.ct.DecideRef(frame, firewall.FromVM, nic.pol, w.mono)
	w.fc.pend.ent.egress = r
	return v
}

// capture records frame in a trace, counting it on el.
func (w *worker) capture(t traceWriter, el *element, frame []byte) {
	if t.Capture(frame, w.now) {
		el.add(w.id, 1, uint64(len(frame)))
	} else {
		el.drop(w.id, dropCaptureFull)
	}
}

// switchFromVM forwards a frame from a local vNIC within its VNI, as the
// VNI's learning switch decides: to a local vNIC, to the remote VTEP
// behind the destination, or flooded to both.
func (w *worker) switchFromVM(s *snapshot, nic *nicConf, cfg *l2.Config, b *packet.Buf) {
	v := nic.vni
	var d l2.Decision
	if w.fc != nil && w.fc.pend.active {
		var h l2.Hint
		d, h = v.l2.DecideHint(cfg, b.Bytes(), b.InPort, w.mono)
		w.fc.pend.ent.hint, w.fc.pend.haveHint = h, true
		if d.Action == l2.Forward {
			w.fcRecordOut(s, v, d.Port)
		}
	} else {
		d = v.l2.DecideOne(cfg, b.Bytes(), b.InPort, w.mono)
	}
	switch d.Action {
	case l2.Forward:
		if d.Port != underPort {
			w.toLocal(s, nic, v, d.Port, b)
			return
		}
		w.toRemote(s, nic, v, cfg, b)
		return
	case l2.Flood:
		if v.neigh != nil && w.answerNeighbor(s, nic, v, b) {
			return
		}
	default:
		w.dropFrom(nic, v.sw, switchDrop(d.Reason), b)
		return
	}
	w.floodFromVM(s, nic, v, cfg, b)
}

// toRemote sends b, a frame from the local vNIC nic that the switch
// forwards to the underlay, to the VTEP the FDB gives for its
// destination, or floods it if the FDB aged out before the switch.
func (w *worker) toRemote(s *snapshot, nic *nicConf, v *vniConf, cfg *l2.Config, b *packet.Buf) {
	if vtep, ok := v.fdb.Lookup(packet.Ethernet(b.Bytes()).Dst(), w.mono); ok {
		w.encapsulate(s, nic, v, b, netip.AddrPortFrom(vtep, vxlan.Port), nil)
		return
	}
	w.floodFromVM(s, nic, v, cfg, b)
}

// floodFromVM floods b, a frame from the local vNIC nic that the switch
// did not forward: in cluster mode to the node of its destination MAC if
// that is another node's vNIC, else to every port of the VNI but nic's.
func (w *worker) floodFromVM(s *snapshot, nic *nicConf, v *vniConf, cfg *l2.Config, b *packet.Buf) {
	if v.macs != nil {
		// Cluster mode: a unicast MAC of another node's vNIC goes to
		// that node alone.
		if dst, ok := v.macs[packet.Ethernet(b.Bytes()).Dst()]; ok {
			w.encapsulate(s, nic, v, b, dst, nil)
			return
		}
	}
	if !w.flood(s, nic, v, cfg, b) {
		w.put(b)
	}
}

// neighborQuery reports whether f, a frame from a local vNIC that the
// switch would flood, is a question the switch answers itself in cluster
// mode (suppression): an ARP request or an IPv6 neighbour solicitation
// for an address of a vNIC the cluster's records give in VNI v, with mac
// that vNIC's MAC. Gratuitous ARP, duplicate address detection (NS from
// ::), unknown addresses and questions about the asker's own MAC are not.
func neighborQuery(v *vniConf, f []byte) (target netip.Addr, mac packet.MAC, ok bool) {
	if len(f) < packet.EthernetLen+packet.ARPLen {
		return netip.Addr{}, packet.MAC{}, false
	}
	from := packet.Ethernet(f).Src()
	switch packet.Ethernet(f).Type() {
	case packet.EtherTypeARP:
		a := packet.ARP(f[packet.EthernetLen:])
		if !a.IsEthernetIPv4() || a.Op() != packet.ARPOpRequest || a.TargetIP() == a.SenderIP() {
			return netip.Addr{}, packet.MAC{}, false
		}
		target, from = a.TargetIP(), a.SenderMAC()
	case packet.EtherTypeIPv6:
		if len(f) < packet.EthernetLen+packet.IPv6Len+packet.NDPNSNALen {
			return netip.Addr{}, packet.MAC{}, false
		}
		ip := packet.IPv6(f[packet.EthernetLen:])
		// Next header (byte 6): ICMPv6 right after the fixed header.
		if ip[6] != packet.ProtoICMPv6 || ip.HopLimit() != 255 || ip.Src().IsUnspecified() {
			return netip.Addr{}, packet.MAC{}, false
		}
		ic := packet.ICMPv6(ip[packet.IPv6Len:])
		if !ic.IsNDPNSNA() || ic.Type() != packet.ICMPv6NeighborSolicit {
			return netip.Addr{}, packet.MAC{}, false
		}
		target = ic.NDPTarget()
	default:
		return netip.Addr{}, packet.MAC{}, false
	}
	mac, ok = v.neigh[target]
	if !ok || mac == from {
		return netip.Addr{}, packet.MAC{}, false
	}
	return target, mac, true
}

// answerNeighbor turns b, a question neighborQuery accepts, into the
// answer the vNIC asked about would give (ARP reply, or solicited
// neighbour advertisement), in place, and gives it back to nic: the
// question does not cross the underlay. It reports false, b untouched,
// for any other frame.
func (w *worker) answerNeighbor(s *snapshot, nic *nicConf, v *vniConf, b *packet.Buf) bool {
	f := b.Bytes()
	target, mac, ok := neighborQuery(v, f)
	if !ok {
		return false
	}
	e := packet.Ethernet(f)
	if target.Is4() {
		a := packet.ARP(f[packet.EthernetLen:])
		sha, sip := a.SenderMAC(), a.SenderIP()
		e.SetDst(sha)
		e.SetSrc(mac)
		a.Encode(packet.ARPOpReply, mac, target, sha, sip)
	} else {
		src := packet.IPv6(f[packet.EthernetLen:]).Src()
		n, err := packet.BuildNeighborAdvert(b.Space(), mac, e.Src(), target, src)
		if err != nil {
			return false
		}
		b.SetLen(n)
		b.VNet = packet.VNetHdr{}
	}
	w.toPort(s, nic.slot, b)
	return true
}

// flood sends b, a frame of VNI v received on port b.InPort (from the
// local vNIC nic, or from the underlay with nic nil), to every other port
// of cfg: local vNICs, and through underPort the VNI's flood destinations
// on the underlay. Every destination but the last gets a copy. It reports
// false, leaving b to the caller, when there is no other port.
func (w *worker) flood(s *snapshot, nic *nicConf, v *vniConf, cfg *l2.Config, b *packet.Buf) bool {
	w.fl = cfg.AppendFlood(w.fl[:0], b.InPort)
	if len(w.fl) == 0 {
		return false
	}
	last := len(w.fl) - 1
	for i, p := range w.fl {
		c := b
		if i < last {
			if c = w.clone(b); c == nil {
				w.dropFrom(nic, v.sw, dropNoBuffer, nil)
				continue
			}
		}
		if p == underPort {
			w.encapsulate(s, nic, v, c, netip.AddrPort{}, v.flood)
		} else {
			w.toLocal(s, nic, v, p, c)
		}
	}
	return true
}

// toLocal queues a frame for local port p of VNI v if the snapshot agrees
// that p is in v (the switch's port set may be newer).
func (w *worker) toLocal(s *snapshot, src *nicConf, v *vniConf, p uint32, b *packet.Buf) {
	if dst := s.nics.at(int(p)); dst == nil || dst.vni.vniLong != v.vniLong {
		w.dropFrom(src, v.sw, dropNoRoute, b)
		return
	}
	w.toPort(s, int(p), b)
}

// clone copies a frame and its metadata into a new buffer.
func (w *worker) clone(b *packet.Buf) *packet.Buf {
	c := w.get()
	if c == nil {
		return nil
	}
	n := copy(c.Space(), b.Bytes())
	c.SetLen(n)
	c.VNet = b.VNet
	c.InPort = b.InPort
	c.Peer = b.Peer
	return c
}

// dropFrom counts a drop on element el and on the source vNIC's port-rx
// element, and frees b (if not nil).
func (w *worker) dropFrom(nic *nicConf, el *element, r dropReason, b *packet.Buf) {
	el.drop(w.id, r)
	if nic != nil && el != nic.rx {
		nic.rx.drop(w.id, r)
	}
	if b != nil {
		if nic != nil {
			w.recordDrop(nic.nicPort, r, b.Bytes())
		}
		w.put(b)
	}
}

// toPort queues a frame for a local vNIC (port-tx), handing it to the
// worker that owns the port if needed.
func (w *worker) toPort(s *snapshot, slot int, b *packet.Buf) {
	nic := s.nics.at(slot)
	if nic.worker != w.id {
		w.handoff(nic.worker, handoff{b: b, to: nic.nicPort})
		return
	}
	w.enqueue(s, slot, b)
}

// enqueue passes a frame through the firewall (ToVM) of a port this
// worker owns, traces it (the trace holds what the vNIC is given: frames
// the firewall dropped are not in it) and appends it to the port's queue.
func (w *worker) enqueue(s *snapshot, slot int, b *packet.Buf) {
	nic := s.nics.at(slot)
	if !w.filterToVM(nic, b.Bytes()) {
		w.put(b)
		return
	}
	w.admit(s, slot, b)
}

// admit traces a frame the firewall (ToVM) of a port this worker owns
// passed and appends it to the port's queue (segmented if the guest
// does not take TSO frames).
func (w *worker) admit(s *snapshot, slot int, b *packet.Buf) {
	nic := s.nics.at(slot)
	if nic.tracer != nil {
		w.capture(nic.tracer, nic.trace, b.Bytes())
	}
	if b.VNet.GSOType != packet.GSONone && nic.tsoOK != nil && !nic.tsoOK() {
		w.segmentToPort(s, slot, b)
		return
	}
	w.queue(s, slot, b)
}

// segmentToPort splits a TSO frame for a port whose guest does not take
// TSO frames and queues the segments, each within the guest's MTU when
// the port knows it.
func (w *worker) segmentToPort(s *snapshot, slot int, b *packet.Buf) {
	nic := s.nics.at(slot)
	segs, r := w.segment(b, guestSegPayload(nic.port, b))
	if r != dropNone {
		nic.tx.drop(w.id, r)
		return
	}
	for _, c := range segs {
		w.queue(s, slot, c)
	}
}

// segment cuts the TSO/USO super-frame b into segments of maxPayload
// bytes of payload (0: b's GSOSize) in buffers of the pool and frees b.
// It returns the segments (w.segs, valid until the next call), or none
// and why it failed (the buffers it took are then freed).
func (w *worker) segment(b *packet.Buf, maxPayload int) ([]*packet.Buf, dropReason) {
	cnt, err := packet.SegmentCount(b, maxPayload)
	if err != nil || cnt > cap(w.segs) {
		w.put(b)
		return nil, dropSegmentation
	}
	w.segs = w.segs[:0]
	for i := 0; i < cnt; i++ {
		c := w.get()
		if c == nil {
			w.putAll(w.segs)
			w.put(b)
			return nil, dropNoBuffer
		}
		w.segs = append(w.segs, c)
	}
	n, err := packet.Segment(b, maxPayload, w.segs)
	w.put(b)
	if err != nil {
		w.putAll(w.segs)
		return nil, dropSegmentation
	}
	for _, c := range w.segs[n:] {
		w.put(c)
	}
	return w.segs[:n], dropNone
}

// queue appends a frame to a port's transmit queue, writing the queue
// when it is full.
func (w *worker) queue(s *snapshot, slot int, b *packet.Buf) {
	q := w.txq[slot]
	if len(q) == 0 {
		w.dirty = append(w.dirty, slot)
	}
	q = append(q, b)
	w.txq[slot] = q
	if len(q) >= batchSize {
		w.flushPort(s, slot)
	}
}

// flushAll writes every non-empty transmit queue, then publishes the
// worker's batch counts.
func (w *worker) flushAll() {
	s := w.snap
	for len(w.dirty) > 0 {
		slot := w.dirty[len(w.dirty)-1]
		w.dirty = w.dirty[:len(w.dirty)-1]
		w.flushPort(s, slot)
	}
	w.flushUnderlay(s)
	w.flushCounts()
}

// flushCounts adds the counts the worker accumulates per frame (encap,
// the switch of the network side, the firewall towards vNICs) to their
// elements: one atomic add
// per batch instead of one per frame.
func (w *worker) flushCounts() {
	if w.encapPkts > 0 {
		w.e.encap.add(w.id, w.encapPkts, w.encapBytes)
		w.encapPkts, w.encapBytes = 0, 0
	}
	if w.swRunN > 0 {
		w.swRun.sw.add(w.id, w.swRunN, 0)
		w.swRunN = 0
	}
	w.swRun = nil
	w.flushFwRun()
	w.fwRun = nil
	if w.fc != nil {
		w.fc.publish()
	}
}

// flushPort writes a vNIC's queue and returns its buffers to the pool.
func (w *worker) flushPort(s *snapshot, slot int) {
	q := w.txq[slot]
	if len(q) == 0 {
		return
	}
	nic := s.nics.at(slot)
	if nic.gro && len(q) > 1 && (nic.tsoOK == nil || nic.tsoOK()) && groWorth(q) {
		q = w.coalesce(q)
	}
	w.txq[slot] = w.writeQueue(nic.port, nic.tx, q)
}

// writeQueue writes q to p in one batch and counts on el exactly the
// frames and bytes p sent, and the frames it did not take as tx_error
// (err) or tx_full; the frames p refused are counted by p itself (see
// addPortDrops). It returns every buffer to the pool and q emptied.
func (w *worker) writeQueue(p port.Port, el *element, q []*packet.Buf) []*packet.Buf {
	sent, dropped, err := p.WriteBatch(q)
	sent = min(max(sent, 0), len(q))
	dropped = min(max(dropped, 0), len(q)-sent)
	if sent > 0 {
		var bytes uint64
		for _, b := range q[:sent] {
			bytes += uint64(b.Len())
		}
		el.add(w.id, uint64(sent), bytes)
	}
	reason := dropTxFull
	if err != nil {
		reason = dropTxError
	}
	for range q[sent+dropped:] {
		el.drop(w.id, reason)
	}
	for i := range q {
		w.put(q[i])
		q[i] = nil
	}
	return q[:0]
}

// encapsulate sends a frame of VNI v to one underlay destination (dst)
// or to several (dsts). TSO frames are segmented and partial checksums
// completed first; frames that do not fit the underlay MTU are answered
// with an ICMP error to the sending vNIC.
func (w *worker) encapsulate(s *snapshot, nic *nicConf, v *vniConf, b *packet.Buf, dst netip.AddrPort, dsts []netip.AddrPort) {
	if s.under == nil || (dsts == nil && !dst.IsValid()) || (dsts != nil && len(dsts) == 0) {
		w.dropFrom(nic, w.e.encap, dropNoUnderlay, b)
		return
	}
	if b.VNet.GSOType != packet.GSONone {
		maxPayload, ok := w.segPayload(s, b)
		if !ok {
			w.tooBig(s, nic, b)
			return
		}
		segs, r := w.segment(b, maxPayload)
		if r != dropNone {
			w.dropFrom(nic, w.e.encap, r, nil)
			return
		}
		for _, c := range segs {
			w.encapOne(s, nic, v, c, dst, dsts)
		}
		return
	}
	if err := packet.FinishChecksum(b); err != nil {
		w.dropFrom(nic, w.e.encap, dropMalformed, b)
		return
	}
	if b.Len() > s.mtu {
		w.tooBig(s, nic, b)
		return
	}
	w.encapOne(s, nic, v, b, dst, dsts)
}

// putAll returns every buffer of bs to the pool.
func (w *worker) putAll(bs []*packet.Buf) {
	for _, b := range bs {
		w.put(b)
	}
}

// segPayload returns the payload per segment of a TSO frame, and false
// when its segments would not fit the underlay.
func (w *worker) segPayload(s *snapshot, b *packet.Buf) (int, bool) {
	hdr, err := packet.GSOHeaderLen(b)
	if err != nil {
		return 0, true // Segment reports the error
	}
	if hdr+int(b.VNet.GSOSize) > s.mtu {
		return 0, false
	}
	return int(b.VNet.GSOSize), true
}

// encapOne prepends the VXLAN header and queues the datagram for each
// destination.
func (w *worker) encapOne(s *snapshot, nic *nicConf, v *vniConf, b *packet.Buf, dst netip.AddrPort, dsts []netip.AddrPort) {
	if !vxlan.Encap(b, v.vni) {
		w.dropFrom(nic, w.e.encap, dropMalformed, b)
		return
	}
	b.VNet = packet.VNetHdr{}
	w.encapPkts++
	w.encapBytes += uint64(b.Len())
	if dsts == nil {
		b.Peer = dst
		w.toUnderlay(s, b)
		return
	}
	for i, d := range dsts {
		c := b
		if i < len(dsts)-1 {
			c = w.clone(b)
			if c == nil {
				w.dropFrom(nic, w.e.encap, dropNoBuffer, nil)
				continue
			}
		}
		c.Peer = d
		w.toUnderlay(s, c)
	}
}

// tooBig drops a frame that does not fit the underlay and answers its
// sender with ICMP "fragmentation needed" (IPv4 with DF) or "packet too
// big" (IPv6).
func (w *worker) tooBig(s *snapshot, nic *nicConf, b *packet.Buf) {
	f := b.Bytes()
	defer w.dropFrom(nic, w.e.encap, dropTooBig, b)
	var l packet.Layers
	if !packet.Parse(f, &l) {
		return
	}
	var n int
	var err error
	switch {
	case l.IsIPv4():
		if !packet.IPv4(f[l.L3:]).DontFragment() {
			// Without DF the inner packet may be fragmented: the
			// VM's IP layer would do that if it knew the MTU;
			// we drop it and let the ICMP-less path count it.
			return
		}
		r := w.get()
		if r == nil {
			return
		}
		n, err = packet.BuildICMPv4FragNeeded(r.Space(), f, s.mtuInner4)
		w.icmpBack(s, nic, r, n, err)
	case l.IsIPv6():
		r := w.get()
		if r == nil {
			return
		}
		n, err = packet.BuildICMPv6PacketTooBig(r.Space(), f, s.mtuInner6)
		w.icmpBack(s, nic, r, n, err)
	}
}

func (w *worker) icmpBack(s *snapshot, nic *nicConf, r *packet.Buf, n int, err error) {
	if err != nil || n <= 0 {
		w.put(r)
		return
	}
	r.SetLen(n)
	w.toPort(s, nic.slot, r)
}

// toUnderlay queues a VXLAN datagram (b.Peer set) for the underlay.
func (w *worker) toUnderlay(s *snapshot, b *packet.Buf) {
	if s.utrace != nil {
		w.captureOuter(s, b, false)
	}
	if w.id != 0 {
		w.handoff(0, handoff{b: b})
		return
	}
	w.queueUnderlay(s, b)
}

// queueUnderlay queues a datagram on one of the underlay sockets, chosen
// by the hash of the inner flow so that each flow keeps one UDP source
// port and different flows spread over several (ECMP entropy).
func (w *worker) queueUnderlay(s *snapshot, b *packet.Buf) {
	i := 0
	if k := len(s.txUnder); k > 1 {
		if p := b.Bytes(); len(p) > vxlan.HeaderLen {
			i = int(packet.FlowHash(p[vxlan.HeaderLen:]) % uint32(k))
		}
	}
	w.utx[i] = append(w.utx[i], b)
	if len(w.utx[i]) >= batchSize {
		w.flushUnderlayQ(s, i)
	}
}

// flushUnderlay writes the underlay queues.
func (w *worker) flushUnderlay(s *snapshot) {
	for i := range w.utx {
		if len(w.utx[i]) > 0 {
			w.flushUnderlayQ(s, i)
		}
	}
}

// flushUnderlayQ writes the queue of underlay socket i.
func (w *worker) flushUnderlayQ(s *snapshot, i int) {
	w.utx[i] = w.writeQueue(s.txUnder[i], w.e.utx, w.utx[i])
}

// rxUnderlay reads one batch of VXLAN datagrams and pushes it through
// underlay-rx, vxlan-decap and the switches.
func (w *worker) rxUnderlay(s *snapshot) int {
	if w.rxn == 0 {
		w.refillRx()
		if w.rxn == 0 {
			w.poolEmpty.Add(1)
			return 0
		}
	}
	n, err := s.under.ReadBatch(w.rx[:w.rxn])
	if err != nil {
		w.e.urx.drop(w.id, dropRxError)
		if n <= 0 {
			w.portFailed(underSlot, s.underFd, "underlay", err)
			return 0
		}
	}
	if n <= 0 {
		return 0
	}
	if n > w.rxn {
		n = w.rxn
	}
	var bytes, decapped uint64
	for i := 0; i < n; i++ {
		b := w.rx[i]
		bytes += uint64(b.Len())
		if s.utrace != nil {
			w.captureOuter(s, b, true)
		}
		v, r := w.decapOne(s, b)
		if r != dropNone {
			w.e.decap.drop(w.id, r)
			w.put(b)
			continue
		}
		decapped++
		w.switchFromNet(s, v, b)
	}
	w.e.urx.add(w.id, uint64(n), bytes)
	w.e.decap.add(w.id, decapped, 0)
	w.take(n)
	w.flushAll()
	return n
}

// decapOne checks and strips the VXLAN header and learns the remote
// VTEP of the inner source MAC.
func (w *worker) decapOne(s *snapshot, b *packet.Buf) (*vniConf, dropReason) {
	if s.sources != nil && (b.Peer != w.srcOK || s.gen != w.srcGen) {
		if _, ok := s.sources[b.Peer.Addr().Unmap()]; !ok {
			return nil, decapDrop(vxlan.DropUnknownSource)
		}
		w.srcOK, w.srcGen = b.Peer, s.gen
	}
	vni, r := vxlan.Decap(b, s.known)
	if r != vxlan.DropNone {
		return nil, decapDrop(r)
	}
	v := s.vnis[vni]
	b.VNet = packet.VNetHdr{}
	b.InPort = underPort
	v.fdb.Learn(packet.Ethernet(b.Bytes()).Src(), b.Peer.Addr().Unmap(), w.mono)
	return v, dropNone
}

// switchFromNet delivers a decapsulated frame to the VNI's local vNICs as
// the switch decides (frames for remote MACs are hairpins and dropped).
func (w *worker) switchFromNet(s *snapshot, v *vniConf, b *packet.Buf) {
	if w.swRun != v.vniLong {
		w.flushCounts()
		w.swRun = v.vniLong
	}
	w.swRunN++
	cfg := v.l2.Config()
	d := v.l2.DecideOne(cfg, b.Bytes(), underPort, w.mono)
	switch d.Action {
	case l2.Forward:
		w.toLocal(s, nil, v, d.Port, b)
		return
	case l2.Flood:
	default:
		w.dropFrom(nil, v.sw, switchDrop(d.Reason), b)
		return
	}
	if !w.flood(s, nil, v, cfg, b) {
		w.dropFrom(nil, v.sw, dropNoRoute, b)
	}
}

// captureOuter records a VXLAN datagram in the underlay trace as the
// full outer frame (Ethernet, IP, UDP) that the kernel sends or received.
// The outer MACs are placeholders: the kernel owns the underlay's link
// layer.
func (w *worker) captureOuter(s *snapshot, b *packet.Buf, rx bool) {
	payload := b.Bytes()
	o := vxlan.Outer{
		SrcMAC: packet.MAC{0x02, 0, 0, 0, 0, 1},
		Src:    netip.AddrPortFrom(s.vtep, vxlan.Port),
		Dst:    netip.AddrPortFrom(b.Peer.Addr().Unmap(), b.Peer.Port()),
		TTL:    64,
	}
	if rx {
		o.Src, o.Dst = o.Dst, o.Src
		o.SrcMAC, o.DstMAC = packet.MAC{0x02, 0, 0, 0, 0, 2}, packet.MAC{0x02, 0, 0, 0, 0, 1}
	} else if !o.Dst.Addr().IsMulticast() {
		o.DstMAC = packet.MAC{0x02, 0, 0, 0, 0, 2}
	}
	w.ipID++
	o.ID = w.ipID
	hl := vxlan.OuterLen(s.vtep.Is6())
	if hl+len(payload) > len(w.scratch) {
		w.e.utraceEl.drop(w.id, dropCaptureFull)
		return
	}
	copy(w.scratch[hl:], payload)
	if vxlan.PutOuter(w.scratch, &o, len(payload)) == 0 {
		w.e.utraceEl.drop(w.id, dropMalformed)
		return
	}
	w.capture(s.utrace, w.e.utraceEl, w.scratch[:hl+len(payload)])
}
