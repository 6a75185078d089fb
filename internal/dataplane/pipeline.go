package dataplane

import (
	"encoding/binary"
	"net/netip"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// rxNIC reads one batch from a vNIC and pushes it through port-rx, trace,
// antispoof and the VNI's switch.
func (w *worker) rxNIC(s *snapshot, nic *nicConf) int {
	if w.rxn == 0 {
		w.refillRx()
		if w.rxn == 0 {
			nic.rx.drop(w.id, dropNoBuffer)
			return 0
		}
	}
	n, err := nic.port.ReadBatch(w.rx[:w.rxn])
	if err != nil {
		nic.rx.drop(w.id, dropRxError)
	}
	if n <= 0 {
		return 0
	}
	if n > w.rxn {
		n = w.rxn
	}
	var bytes, passed uint64
	for i := 0; i < n; i++ {
		b := w.rx[i]
		bytes += uint64(b.Len())
		b.InPort = uint32(nic.slot)
		if nic.tracer != nil {
			w.capture(nic.tracer, nic.trace, b.Bytes())
		}
		if !nic.bypass {
			if r := checkSpoof(nic, b.Bytes()); r != 0 {
				nic.anti.drop(w.id, r)
				w.pool.Put(b)
				continue
			}
			passed++
		}
		w.switchFromVM(s, nic, b)
	}
	nic.rx.add(w.id, uint64(n), bytes)
	if passed > 0 {
		nic.anti.add(w.id, passed, 0)
	}
	nic.vni.sw.add(w.id, uint64(n), 0)
	w.take(n)
	w.flushAll()
	return n
}

// capture records frame in a trace, counting it on el.
func (w *worker) capture(t traceWriter, el *element, frame []byte) {
	if t.Capture(frame, w.now) {
		el.add(w.id, 1, uint64(len(frame)))
	} else {
		el.drop(w.id, dropCaptureFull)
	}
}

// isReserved reports IEEE 802.1D reserved destinations 01:80:c2:00:00:0x,
// which a bridge must not forward.
func isReserved(f []byte) bool {
	return f[0] == 0x01 && f[1] == 0x80 && f[2] == 0xc2 && f[3] == 0 && f[4] == 0 && f[5]&0xf0 == 0
}

// switchFromVM forwards a frame from a local vNIC within its VNI: to a
// local vNIC, to a remote VTEP, or flooded to both.
func (w *worker) switchFromVM(s *snapshot, nic *nicConf, b *packet.Buf) {
	f := b.Bytes()
	v := nic.vni
	if len(f) < packet.EthernetLen {
		w.dropFrom(nic, v.sw, dropMalformed, b)
		return
	}
	if isReserved(f) {
		w.dropFrom(nic, v.sw, dropReservedMAC, b)
		return
	}
	if nic.bypass && f[6]&1 == 0 {
		// A bypass vNIC may use other MACs: learn them.
		src := mac48(f[6:12])
		if _, ok := v.static[src]; !ok {
			v.fdb.learn(src, uint16(nic.slot+1))
		}
	}
	if f[0]&1 != 0 {
		w.flood(s, nic, v, b)
		return
	}
	dst := mac48(f[0:6])
	if slot, ok := v.static[dst]; ok {
		if slot == nic.slot {
			w.dropFrom(nic, v.sw, dropHairpin, b)
			return
		}
		w.toPort(s, slot, b)
		return
	}
	if val := v.fdb.lookup(dst); val != 0 {
		if val&remoteBit != 0 {
			if ap, ok := w.e.remotes.get(val &^ remoteBit); ok {
				w.encapsulate(s, nic, v, b, ap, nil)
				return
			}
		} else if slot := int(val - 1); slot < len(s.nics) && s.nics[slot] != nil && s.nics[slot].vni == v {
			if slot == nic.slot {
				w.dropFrom(nic, v.sw, dropHairpin, b)
				return
			}
			w.toPort(s, slot, b)
			return
		}
	}
	w.flood(s, nic, v, b)
}

// flood sends a frame from a local vNIC to every other local vNIC of the
// VNI and to the VNI's flood destinations on the underlay.
func (w *worker) flood(s *snapshot, nic *nicConf, v *vniConf, b *packet.Buf) {
	for _, slot := range v.local {
		if slot == nic.slot {
			continue
		}
		c := w.clone(b)
		if c == nil {
			w.dropFrom(nic, v.sw, dropNoBuffer, nil)
			continue
		}
		w.toPort(s, slot, c)
	}
	if len(v.flood) == 0 || s.under == nil {
		w.pool.Put(b)
		return
	}
	w.encapsulate(s, nic, v, b, netip.AddrPort{}, v.flood)
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
		w.pool.Put(b)
	}
}

// toPort queues a frame for a local vNIC (port-tx), tracing it.
func (w *worker) toPort(s *snapshot, slot int, b *packet.Buf) {
	nic := s.nics[slot]
	if nic.tracer != nil {
		w.capture(nic.tracer, nic.trace, b.Bytes())
	}
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

// flushAll writes every non-empty transmit queue.
func (w *worker) flushAll() {
	s := w.snap
	for len(w.dirty) > 0 {
		slot := w.dirty[len(w.dirty)-1]
		w.dirty = w.dirty[:len(w.dirty)-1]
		w.flushPort(s, slot)
	}
	if len(w.utx) > 0 {
		w.flushUnderlay(s)
	}
}

// flushPort writes a vNIC's queue and returns its buffers to the pool.
func (w *worker) flushPort(s *snapshot, slot int) {
	q := w.txq[slot]
	if len(q) == 0 {
		return
	}
	nic := s.nics[slot]
	n, err := nic.port.WriteBatch(q)
	if n < 0 {
		n = 0
	}
	if n > len(q) {
		n = len(q)
	}
	var bytes uint64
	for i := 0; i < n; i++ {
		bytes += uint64(q[i].Len())
	}
	if n > 0 {
		nic.tx.add(w.id, uint64(n), bytes)
	}
	for i := n; i < len(q); i++ {
		if err != nil {
			nic.tx.drop(w.id, dropTxError)
		} else {
			nic.tx.drop(w.id, dropTxFull)
		}
	}
	for i := range q {
		w.pool.Put(q[i])
		q[i] = nil
	}
	w.txq[slot] = q[:0]
}

// encapsulate sends a frame of VNI v to one underlay destination (dst)
// or to several (dsts). TSO frames are segmented and partial checksums
// completed first; frames that do not fit the underlay MTU are answered
// with an ICMP error to the sending vNIC.
func (w *worker) encapsulate(s *snapshot, nic *nicConf, v *vniConf, b *packet.Buf, dst netip.AddrPort, dsts []netip.AddrPort) {
	if s.under == nil {
		w.dropFrom(nic, w.e.encap, dropNoUnderlay, b)
		return
	}
	if b.VNet.GSOType != packet.GSONone {
		maxPayload, ok := w.segPayload(s, b)
		if !ok {
			w.tooBig(s, nic, b)
			return
		}
		w.segs = w.segs[:0]
		cnt, err := packet.SegmentCount(b, maxPayload)
		if err != nil || cnt > cap(w.segs) {
			w.dropFrom(nic, w.e.encap, dropSegmentation, b)
			return
		}
		for i := 0; i < cnt; i++ {
			c := w.get()
			if c == nil {
				break
			}
			w.segs = append(w.segs, c)
		}
		if len(w.segs) < cnt {
			w.putAll(w.segs)
			w.dropFrom(nic, w.e.encap, dropNoBuffer, b)
			return
		}
		n, err := packet.Segment(b, maxPayload, w.segs)
		if err != nil {
			w.putAll(w.segs)
			w.dropFrom(nic, w.e.encap, dropSegmentation, b)
			return
		}
		w.pool.Put(b)
		for i := n; i < len(w.segs); i++ {
			w.pool.Put(w.segs[i])
		}
		for i := 0; i < n; i++ {
			w.encapOne(s, nic, v, w.segs[i], dst, dsts)
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

func (w *worker) putAll(bs []*packet.Buf) {
	for _, b := range bs {
		w.pool.Put(b)
	}
}

// segPayload returns the payload per segment of a TSO frame, and false
// when its segments would not fit the underlay.
func (w *worker) segPayload(s *snapshot, b *packet.Buf) (int, bool) {
	var l packet.Layers
	f := b.Bytes()
	if !packet.Parse(f, &l) || l.L4 == 0 {
		return 0, true // Segment reports the error
	}
	hdr := l.L4
	switch l.Proto {
	case packet.ProtoTCP:
		if len(f) < l.L4+13 {
			return 0, true
		}
		hdr += int(f[l.L4+12]>>4) * 4
	case packet.ProtoUDP:
		hdr += 8
	}
	if hdr+int(b.VNet.GSOSize) > s.mtu {
		return 0, false
	}
	return int(b.VNet.GSOSize), true
}

// encapOne prepends the VXLAN header and queues the datagram for each
// destination.
func (w *worker) encapOne(s *snapshot, nic *nicConf, v *vniConf, b *packet.Buf, dst netip.AddrPort, dsts []netip.AddrPort) {
	h := b.Prepend(vxlanHdrLen)
	if h == nil {
		w.dropFrom(nic, w.e.encap, dropMalformed, b)
		return
	}
	copy(h, v.hdr[:])
	b.VNet = packet.VNetHdr{}
	w.e.encap.add(w.id, 1, uint64(b.Len()))
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
		w.pool.Put(r)
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
	w.utx = append(w.utx, b)
	if len(w.utx) >= batchSize {
		w.flushUnderlay(s)
	}
}

// flushUnderlay writes the underlay queue.
func (w *worker) flushUnderlay(s *snapshot) {
	q := w.utx
	n, err := s.under.WriteBatch(q)
	if n < 0 {
		n = 0
	}
	if n > len(q) {
		n = len(q)
	}
	var bytes uint64
	for i := 0; i < n; i++ {
		bytes += uint64(q[i].Len())
	}
	if n > 0 {
		w.e.utx.add(w.id, uint64(n), bytes)
	}
	for i := n; i < len(q); i++ {
		if err != nil {
			w.e.utx.drop(w.id, dropTxError)
		} else {
			w.e.utx.drop(w.id, dropTxFull)
		}
	}
	for i := range q {
		w.pool.Put(q[i])
		q[i] = nil
	}
	w.utx = q[:0]
}

// rxUnderlay reads one batch of VXLAN datagrams and pushes it through
// underlay-rx, vxlan-decap and the switches.
func (w *worker) rxUnderlay(s *snapshot) int {
	if w.rxn == 0 {
		w.refillRx()
		if w.rxn == 0 {
			w.e.urx.drop(w.id, dropNoBuffer)
			return 0
		}
	}
	n, err := s.under.ReadBatch(w.rx[:w.rxn])
	if err != nil {
		w.e.urx.drop(w.id, dropRxError)
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
		if r != 0 {
			w.e.decap.drop(w.id, r)
			w.pool.Put(b)
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

// decapOne checks and strips the VXLAN header and learns the inner
// source MAC.
func (w *worker) decapOne(s *snapshot, b *packet.Buf) (*vniConf, dropReason) {
	p := b.Bytes()
	if len(p) < vxlanHdrLen+packet.EthernetLen {
		return nil, dropMalformed
	}
	if p[0] != 0x08 || p[1] != 0 || p[2] != 0 || p[3] != 0 {
		return nil, dropBadVXLAN
	}
	vni := uint32(p[4])<<16 | uint32(p[5])<<8 | uint32(p[6])
	v := s.vnis[vni]
	if v == nil {
		return nil, dropUnknownVNI
	}
	b.TrimFront(vxlanHdrLen)
	b.VNet = packet.VNetHdr{}
	f := b.Bytes()
	if f[6]&1 == 0 {
		src := mac48(f[6:12])
		if _, local := v.static[src]; !local {
			if idx, ok := w.e.remotes.intern(b.Peer.Addr().Unmap()); ok {
				v.fdb.learn(src, remoteBit|idx)
			}
		}
	}
	return v, 0
}

// switchFromNet delivers a decapsulated frame to the VNI's local vNICs.
func (w *worker) switchFromNet(s *snapshot, v *vniConf, b *packet.Buf) {
	f := b.Bytes()
	v.sw.add(w.id, 1, 0)
	if isReserved(f) {
		w.dropFrom(nil, v.sw, dropReservedMAC, b)
		return
	}
	if f[0]&1 == 0 {
		dst := mac48(f[0:6])
		if slot, ok := v.static[dst]; ok {
			w.toPort(s, slot, b)
			return
		}
		if val := v.fdb.lookup(dst); val != 0 {
			if val&remoteBit != 0 {
				w.dropFrom(nil, v.sw, dropNoRoute, b)
				return
			}
			if slot := int(val - 1); slot < len(s.nics) && s.nics[slot] != nil && s.nics[slot].vni == v {
				w.toPort(s, slot, b)
				return
			}
		}
	}
	if len(v.local) == 0 {
		w.dropFrom(nil, v.sw, dropNoRoute, b)
		return
	}
	for i, slot := range v.local {
		c := b
		if i < len(v.local)-1 {
			c = w.clone(b)
			if c == nil {
				w.dropFrom(nil, v.sw, dropNoBuffer, nil)
				continue
			}
		}
		w.toPort(s, slot, c)
	}
}

// captureOuter records a VXLAN datagram in the underlay trace as the
// full outer frame (Ethernet, IP, UDP) the kernel sends or received.
func (w *worker) captureOuter(s *snapshot, b *packet.Buf, rx bool) {
	payload := b.Bytes()
	local := netip.AddrPortFrom(s.vtep, vxlanPort)
	src, dst := local, b.Peer
	if rx {
		src, dst = b.Peer, local
	}
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	f := w.scratch
	ip := 14
	var l4 int
	udpLen := 8 + len(payload)
	if sa.Is4() && da.Is4() {
		if 20+udpLen > 65535 {
			return
		}
		binary.BigEndian.PutUint16(f[12:], 0x0800)
		w.ipID++
		packet.IPv4(f[ip:]).Encode(0, uint16(20+udpLen), w.ipID, 0, 64, packet.ProtoUDP, sa, da)
		l4 = ip + 20
	} else {
		if udpLen > 65535 {
			return
		}
		binary.BigEndian.PutUint16(f[12:], 0x86dd)
		h := f[ip : ip+40]
		binary.BigEndian.PutUint32(h[0:], 6<<28)
		binary.BigEndian.PutUint16(h[4:], uint16(udpLen))
		h[6], h[7] = packet.ProtoUDP, 255
		s16, d16 := sa.As16(), da.As16()
		copy(h[8:24], s16[:])
		copy(h[24:40], d16[:])
		l4 = ip + 40
	}
	// Placeholder MACs: the kernel owns the underlay's link layer.
	copy(f[0:12], []byte{0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1}[:12])
	if rx {
		copy(f[0:12], []byte{0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2}[:12])
	}
	u := f[l4 : l4+8]
	binary.BigEndian.PutUint16(u[0:], src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(udpLen))
	binary.BigEndian.PutUint16(u[6:], 0)
	n := copy(f[l4+8:], payload)
	w.capture(s.utrace, w.e.utraceEl, f[:l4+8+n])
}
