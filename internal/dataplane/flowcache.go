package dataplane

import (
	"encoding/binary"
	"sync/atomic"

	"github.com/butterfly-go/butterfly/internal/firewall"
	"github.com/butterfly-go/butterfly/internal/l2"
	"github.com/butterfly-go/butterfly/internal/packet"
)

// The flow cache is a worker's exact-match cache of the decisions taken
// for the frames a local vNIC sends to another local vNIC or through the
// underlay (the idea of OVS's EMC). Its key is the ingress port and every header field those
// decisions read: both MACs, the EtherType, both IP addresses, the
// protocol and the ports (for ICMP echo, the identifier and the type).
// Its entry holds the whole decision: the output port (a vNIC, or the
// underlay: the VTEP is then looked up in the VNI's FDB per frame, as on
// the full path), the anti-spoofing verdict (pass: drops are never
// cached), the MAC table entries the switch used (l2.Hint) and
// references to the sender's and the receiver's connection-tracking
// entries (firewall.Ref).
//
// A hit skips the parses of anti-spoofing and connection tracking, both
// connection-table lookups and the MAC table walks, but does everything
// per frame that the full path does and that can be observed: TCP state
// and window tracking and timers on both entries (firewall.Conntrack.Hit
// runs the full path's code on them), the refresh of the source MAC's
// entry, the counters of every element, traces and drop records.
//
// Correctness never depends on the cache: an entry is used only if the
// snapshot it was made under is still the worker's (any configuration or
// policy change publishes a new one), the VNI's port set is the same, no
// entry of the MAC table changed and the destination's is still live,
// and neither connection table moved or removed an entry since
// (firewall.Conntrack.Usable). Member-set changes of security groups do
// not publish a snapshot: Conntrack.Hit checks the policy generation per
// frame as the full path does. Anything else takes the full path, which
// records what a later frame of the flow may reuse.
//
// A vNIC that bypasses filtering has no anti-spoofing and no connection
// table, so the switch's decision for its frames depends only on their
// MACs, EtherType and port, unless the receiver filters them on this
// worker. For such a vNIC, the cache also remembers which entry its last
// hit used (fcMemo): a frame with the same MACs and EtherType reuses that
// entry, whatever its addresses, protocol and ports, without the parse
// and the hash, after the same checks as any hit (snapshot, port set,
// MAC table) and provided the receiver still does not filter it here.
//
// Otherwise only frames that local vNICs send and that are plain unicast TCP
// (without SYN, FIN or RST), UDP or ICMP echo over IPv4 or IPv6,
// unfragmented, are looked up, and only those the switch forwards (to a
// vNIC or the underlay) are cached; the rest (broadcast, flooding, ARP,
// neighbour discovery, fragments, frames from the underlay) always takes
// the full path.

// fcSize is the number of entries of a worker's flow cache (a power of
// two; 136 bytes an entry, 136 KiB a worker).
const fcSize = 1024

// fcKey is a frame's flow-cache key (see fcKeyOf).
type fcKey [7]uint64

// fcEntry is one cached decision.
type fcEntry struct {
	key fcKey
	// gen is the snapshot generation the entry was made under (0: empty).
	gen uint64
	cfg *l2.Config
	// out is the slot of the destination vNIC, or underPort: the VTEP
	// is then looked up in the VNI's FDB per frame, as on the full path.
	out  uint32
	hint l2.Hint
	// egress and ingress name the sender's and the receiver's entries;
	// ingress is unset when the receiver bypasses filtering or belongs
	// to another worker (which filters it on its own, uncached).
	egress, ingress firewall.Ref
	// neg, when not 0, makes the entry negative: the full path did not
	// yield a decision to cache for this key (a drop, a flood), so the
	// next neg frames with the key take the full path without recording
	// what it does; the one after tries again.
	neg uint8
	// negL2: the negative entry holds only while the MAC table does
	// not change (the switch decided: a flood may become a forward).
	negL2 bool
}

// fcMemoSize is the number of ingress ports whose last entry a worker's
// cache remembers (a power of two; ports share slots modulo it).
const fcMemoSize = 64

// fcRetry is how many frames of a key that yielded nothing to cache take
// the full path before one tries to record its decision again: it bounds
// the recording's cost on flows that are never cached (dropped or
// flooded frames) and the wait of a flow that became cacheable without a
// change the entry checks (a group member added).
const fcRetry = 64

// flowCache is a worker's cache; only its worker uses it.
type flowCache struct {
	ents [fcSize]fcEntry
	// memo holds, per ingress port modulo fcMemoSize, the index of the
	// entry the port's last hit used, when that port bypasses filtering
	// and the entry's receiver does not filter on this worker (see the
	// comment at the top of this file). An index is only a guess: the
	// entry is checked as on any hit.
	memo [fcMemoSize]uint32
	// pend is the entry the full path is filling for the current frame.
	pend fcPending
	// hits and misses count frames looked up, per batch (plain adds);
	// flushCounts publishes them to the atomics the metrics read.
	hits, misses       uint64
	hitsPub, missesPub atomic.Uint64
}

// fcPending records, during the full path of a frame that missed, what
// its entry needs.
type fcPending struct {
	active  bool
	idx     uint32
	haveOut bool
	haveIn  bool
	// inDropped: the receiver's firewall dropped the frame.
	inDropped bool
	// haveHint: the switch decided (ent.hint is its hint).
	haveHint bool
	ent      fcEntry
}

// fcResult is the outcome of worker.fcForward.
type fcResult uint8

const (
	// fcMiss: nothing was done; the frame takes the full path.
	fcMiss fcResult = iota
	// fcSent: the frame went to its destination (or was dropped by the
	// receiver's firewall).
	fcSent
	// fcFiltered: the sender's firewall dropped the frame.
	fcFiltered
)

// fcCandidate reports whether frame may be looked up: unicast IPv4 or
// IPv6 (the rest never is; small enough to be inlined, so that ARP and
// broadcast frames cost no call).
func fcCandidate(frame []byte) bool {
	if len(frame) < packet.EthernetLen || frame[0]&1 != 0 {
		return false
	}
	et := binary.BigEndian.Uint16(frame[12:14])
	return et == packet.EtherTypeIPv4 || et == packet.EtherTypeIPv6
}

// fcKeyOf writes the flow-cache key of frame, received on port in, into
// k (zeroed) and its layers into l, and returns its TCP header (nil for
// other protocols); ok is false for a frame that is not looked up (see
// the comment at the top of this file).
func fcKeyOf(k *fcKey, frame []byte, in uint32, l *packet.Layers) (tcp packet.TCP, ok bool) {
	if !fcCandidate(frame) || !packet.Parse(frame, l) || l.Fragment || l.L4 == 0 {
		return nil, false
	}
	l4 := frame[l.L4:l.L3End]
	var ports uint64
	switch l.Proto {
	case packet.ProtoTCP:
		tcp = packet.TCP(l4)
		if !tcp.IsValid() || tcp.Flags()&(packet.TCPFlagSYN|packet.TCPFlagFIN|packet.TCPFlagRST) != 0 {
			return nil, false
		}
		ports = uint64(tcp.SrcPort())<<16 | uint64(tcp.DstPort())
	case packet.ProtoUDP:
		if len(l4) < packet.UDPLen {
			return nil, false
		}
		ports = uint64(binary.BigEndian.Uint32(l4))
	case packet.ProtoICMPv4:
		if !l.IsIPv4() || len(l4) < packet.ICMPHeaderLen || l4[0] != packet.ICMPv4Echo && l4[0] != packet.ICMPv4EchoReply {
			return nil, false
		}
		ports = uint64(binary.BigEndian.Uint16(l4[4:]))<<16 | uint64(l4[0])
	case packet.ProtoICMPv6:
		if !l.IsIPv6() || len(l4) < packet.ICMPHeaderLen || l4[0] != packet.ICMPv6EchoRequest && l4[0] != packet.ICMPv6EchoReply {
			return nil, false
		}
		ports = uint64(binary.BigEndian.Uint16(l4[4:]))<<16 | uint64(l4[0])
	default:
		return nil, false
	}
	k[0] = binary.BigEndian.Uint64(frame[0:8])  // destination MAC, 2 bytes of the source
	k[1] = binary.BigEndian.Uint64(frame[6:14]) // source MAC, EtherType
	k[2] = uint64(in)<<40 | uint64(l.Proto)<<32 | ports
	ip := frame[l.L3:]
	if l.IsIPv4() {
		k[3] = binary.BigEndian.Uint64(ip[12:20]) // source, destination
	} else {
		k[3] = binary.BigEndian.Uint64(ip[8:16])
		k[4] = binary.BigEndian.Uint64(ip[16:24])
		k[5] = binary.BigEndian.Uint64(ip[24:32])
		k[6] = binary.BigEndian.Uint64(ip[32:40])
	}
	return tcp, true
}

// equal reports whether k and o are the same key (word by word: no call
// to the runtime's memequal).
func (k *fcKey) equal(o *fcKey) bool {
	return k[0] == o[0] && k[1] == o[1] && k[2] == o[2] && k[3] == o[3] && k[4] == o[4] && k[5] == o[5] && k[6] == o[6]
}

// index returns k's entry index.
func (k *fcKey) index() uint32 {
	h := k[0]*0x9e3779b97f4a7c15 ^ k[1]*0xbf58476d1ce4e5b9 ^ k[2]*0x94d049bb133111eb ^
		k[3]*0xd6e8feb86659fd93 ^ (k[4]^k[6])*0xa0761d6478bd642f ^ k[5]*0xe7037ed1a0b428db
	h ^= h >> 32
	return uint32(h^h>>16) & (fcSize - 1)
}

// fcForward looks frame b of nic (switch configuration cfg) up in the
// flow cache and, on a hit, forwards it as the full path would. On a
// miss of a frame that is looked up, it prepares the entry that the full
// path fills (fcRecord*) and fcCommit stores.
func (w *worker) fcForward(s *snapshot, nic *nicConf, cfg *l2.Config, b *packet.Buf) fcResult {
	fc := w.fc
	if fc.pend.active {
		// The previous frame's full path ended before fcCommit (a drop).
		fc.giveUp()
	}
	f := b.Bytes()
	var ent *fcEntry
	var tcp packet.TCP
	if nic.bypass {
		ent = w.fcMemoHit(s, nic, cfg, f, b.InPort)
	}
	if ent != nil {
		fc.hits++
	} else {
		var l packet.Layers
		var k fcKey
		var ok bool
		if tcp, ok = fcKeyOf(&k, f, b.InPort, &l); !ok {
			return fcMiss
		}
		i := k.index()
		ent = &fc.ents[i]
		if ent.neg > 0 && ent.gen == s.gen && ent.key.equal(&k) && (!ent.negL2 || nic.vni.l2.Unchanged(ent.hint)) {
			ent.neg--
			fc.misses++
			return fcMiss
		}
		if ent.gen != s.gen || !ent.key.equal(&k) || ent.cfg != cfg || !w.fcUsable(s, nic, ent, tcp) {
			fc.misses++
			fc.pend = fcPending{active: true, idx: i}
			fc.pend.ent = fcEntry{key: k, gen: s.gen, cfg: cfg}
			return fcMiss
		}
		fc.hits++
		if nic.pol != nil {
			if v := nic.ct.Hit(ent.egress, tcp, firewall.FromVM, nic.pol, w.mono); !v.Allowed() {
				nic.fw.drop(w.id, firewallDrop(v))
				w.recordDrop(nic.nicPort, firewallDrop(v), f)
				w.put(b)
				return fcFiltered
			}
		}
		if nic.bypass && !w.filtersHere(s, ent.out) {
			fc.memo[b.InPort&(fcMemoSize-1)] = i
		}
	}
	v := nic.vni
	v.l2.Touch(ent.hint, packet.Ethernet(f).Src(), b.InPort, w.mono)
	if ent.out == underPort {
		w.toRemote(s, nic, v, cfg, b)
		return fcSent
	}
	dst := s.nics.at(int(ent.out))
	if dst.worker != w.id {
		w.handoff(dst.worker, handoff{b: b, to: dst.nicPort})
		return fcSent
	}
	if dst.pol != nil {
		// Never on a memo hit (see fcMemoHit): tcp is the frame's.
		if v := dst.ct.Hit(ent.ingress, tcp, firewall.ToVM, dst.pol, w.mono); !v.Allowed() {
			w.fwDrop(dst, v, f)
			w.put(b)
			return fcSent
		}
		w.fwPassed(dst)
	}
	w.admit(s, int(ent.out), b)
	return fcSent
}

// filtersHere reports whether out, an entry's output, is a vNIC with a
// firewall that this worker owns: its connection table then decides per
// flow.
func (w *worker) filtersHere(s *snapshot, out uint32) bool {
	if out == underPort {
		return false
	}
	dst := s.nics.at(int(out))
	return dst.worker == w.id && dst.pol != nil
}

// fcMemoHit returns the entry that the last hit of in, a port of nic
// (which bypasses filtering), used, if frame f has its MACs, EtherType
// and port and the entry still holds for it; otherwise nil.
func (w *worker) fcMemoHit(s *snapshot, nic *nicConf, cfg *l2.Config, f []byte, in uint32) *fcEntry {
	ent := &w.fc.ents[w.fc.memo[in&(fcMemoSize-1)]&(fcSize-1)]
	if ent.key[0] != binary.BigEndian.Uint64(f[0:8]) || ent.key[1] != binary.BigEndian.Uint64(f[6:14]) ||
		uint32(ent.key[2]>>40) != in || ent.gen != s.gen || ent.neg != 0 || ent.cfg != cfg {
		return nil
	}
	if !nic.vni.l2.Usable(ent.hint, w.mono) || w.filtersHere(s, ent.out) {
		return nil
	}
	return ent
}

// fcUsable reports whether every part of ent still holds for a frame of
// nic with TCP header tcp (nil: not TCP); ent has the frame's key and
// the worker's snapshot s.
func (w *worker) fcUsable(s *snapshot, nic *nicConf, ent *fcEntry, tcp packet.TCP) bool {
	var flags uint8
	if tcp != nil {
		flags = tcp.Flags()
	}
	if nic.pol != nil && !nic.ct.Usable(ent.egress, flags, w.mono) {
		return false
	}
	if !nic.vni.l2.Usable(ent.hint, w.mono) {
		return false
	}
	if ent.out == underPort {
		return true
	}
	dst := s.nics.at(int(ent.out))
	return dst.worker != w.id || dst.pol == nil || dst.ct.Usable(ent.ingress, flags, w.mono)
}

// fcCommit stores the entry the full path filled for the frame just
// forwarded from nic, if it is complete.
func (w *worker) fcCommit(s *snapshot, nic *nicConf) {
	p := &w.fc.pend
	if !p.active {
		return
	}
	if !p.haveOut || p.inDropped {
		// Flooded, dropped as hairpin or no_route, or by the
		// receiver's firewall: nothing to cache for a while.
		w.fc.giveUp()
		return
	}
	p.active = false
	// A decision made while the MAC table changed (the frame taught
	// it its source), or a flow accepted without an entry to name (a
	// pickup): the next frame tries again.
	if !p.ent.hint.Valid() || nic.pol != nil && !p.ent.egress.Valid() {
		return
	}
	if p.ent.out != underPort {
		dst := s.nics.at(int(p.ent.out))
		if dst.worker == w.id && dst.pol != nil && (!p.haveIn || !p.ent.ingress.Valid()) {
			return
		}
		if dst.worker != w.id || dst.pol == nil {
			p.ent.ingress = firewall.Ref{}
		}
	}
	w.fc.ents[p.idx] = p.ent
}

// giveUp ends the pending entry, whose frame yielded nothing to cache,
// with a negative entry for its key.
func (fc *flowCache) giveUp() {
	p := &fc.pend
	p.active = false
	fc.ents[p.idx] = fcEntry{key: p.ent.key, gen: p.ent.gen, neg: fcRetry, negL2: p.haveHint, hint: p.ent.hint}
}

// fcRecordOut records the destination the switch chose: a local vNIC or
// the underlay.
func (w *worker) fcRecordOut(s *snapshot, v *vniConf, out uint32) {
	p := &w.fc.pend
	if out != underPort && (s.nics.at(int(out)) == nil || s.nics.at(int(out)).vni.vniLong != v.vniLong) {
		return // dropped as no_route: nothing to cache
	}
	p.haveOut, p.ent.out = true, out
}

// fcRecordIn records the receiver's connection-tracking entry, when
// filterToVM ran for the pending frame's destination.
func (w *worker) fcRecordIn(nic *nicConf, v firewall.Verdict, r firewall.Ref) {
	if p := &w.fc.pend; p.active && p.haveOut && !p.haveIn && uint32(nic.slot) == p.ent.out {
		p.haveIn, p.inDropped, p.ent.ingress = true, !v.Allowed(), r
	}
}

// publish adds the batch's hits and misses to the counters the
// metrics read.
func (fc *flowCache) publish() {
	if fc.hits > 0 {
		fc.hitsPub.Add(fc.hits)
		fc.hits = 0
	}
	if fc.misses > 0 {
		fc.missesPub.Add(fc.misses)
		fc.misses = 0
	}
}
