package firewall

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"sync/atomic"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// Verdict is the outcome of Decide: accepted or dropped, and why.
type Verdict uint8

// Verdicts. Accept* values pass the packet; the others drop it.
const (
	// Accept is a packet of a tracked flow or a new flow the policy allows.
	Accept Verdict = iota
	// AcceptStateless is a packet passed without tracking: non-IP, IPv6
	// neighbour discovery/MLD, an ICMP error or a fragment of an accepted
	// packet.
	AcceptStateless
	// DropNoRule is a new flow no rule allows.
	DropNoRule
	// DropInvalid is a malformed packet or one that does not fit the
	// flow's state (e.g. a TCP segment without SYN and no tracked flow).
	DropInvalid
	// DropTableFull is a new flow refused because the table is full.
	DropTableFull
	// DropCut is a packet of a tracked flow that the current policy no
	// longer allows; the flow is removed.
	DropCut
	// DropFragment is a non-first fragment without an accepted first one.
	DropFragment
	numVerdicts
)

// String names the verdict (the drop reason for drops).
func (v Verdict) String() string {
	switch v {
	case Accept:
		return "accept"
	case AcceptStateless:
		return "accept_stateless"
	case DropNoRule:
		return "no_rule"
	case DropInvalid:
		return "invalid"
	case DropTableFull:
		return "table_full"
	case DropCut:
		return "cut"
	case DropFragment:
		return "fragment"
	}
	return "unknown"
}

// Allowed reports whether the packet passes.
func (v Verdict) Allowed() bool { return v <= AcceptStateless }

// Timeouts, as Linux nf_conntrack's defaults.
const (
	sec               = int64(1e9)
	TimeoutSynSent    = 120 * sec
	TimeoutSynRecv    = 60 * sec
	TimeoutEstablish  = 5 * 24 * 3600 * sec
	TimeoutFinWait    = 120 * sec
	TimeoutCloseWait  = 60 * sec
	TimeoutLastAck    = 30 * sec
	TimeoutTimeWait   = 120 * sec
	TimeoutClose      = 10 * sec
	TimeoutUDP        = 30 * sec
	TimeoutUDPAssured = 180 * sec
	TimeoutICMP       = 30 * sec
	TimeoutOther      = 600 * sec
	TimeoutFragment   = 30 * sec
)

// TCPState is a tracked TCP connection's state.
type TCPState uint8

// Entry states: TCP states, then the other kinds.
const (
	stEmpty TCPState = iota
	TCPSynSent
	TCPSynRecv
	TCPEstablished
	TCPFinWait
	TCPCloseWait
	TCPLastAck
	TCPTimeWait
	TCPClose
	stUDP
	stICMP
	stOther
	stFrag
)

// tcpTimeout is the lifetime of an entry in state s.
func tcpTimeout(s TCPState) int64 {
	switch s {
	case TCPSynSent:
		return TimeoutSynSent
	case TCPSynRecv:
		return TimeoutSynRecv
	case TCPEstablished:
		return TimeoutEstablish
	case TCPFinWait:
		return TimeoutFinWait
	case TCPCloseWait:
		return TimeoutCloseWait
	case TCPLastAck:
		return TimeoutLastAck
	case TCPTimeWait:
		return TimeoutTimeWait
	}
	return TimeoutClose
}

// key is a canonical flow key: (a, pa) <= (b, pb).
type key struct {
	a, b   addr
	pa, pb uint16
	proto  uint8
	kind   uint8 // family | direction<<1 (fragments only) | kindFrag
}

const kindFrag = 0x80

// Entry flags.
const (
	flOrigIsA      = 1 << iota // the originator is endpoint a
	flOrigFrom                 // the first packet was FromVM
	flReplied                  // a packet from the responder was seen
	flFinOrig                  // the originator sent FIN
	flFinReply                 // the responder sent FIN
	flFirstFinOrig             // the first FIN came from the originator
	flLiberal                  // TCP windows are learnt, not enforced
)

type entry struct {
	k       key
	expires int64
	gen     uint64
	hash    uint32
	state   TCPState
	flags   uint8
	// win is the TCP window state of the originator (0) and the
	// responder (1).
	win [2]tcpWin
}

// Conntrack is one vNIC's connection-tracking zone. See the package
// documentation for its rules and its concurrency contract.
type Conntrack struct {
	slots    []entry
	mask     uint32
	seed     uint64
	count    int
	capacity int
	// maxSlots is the size of the table at capacity (load <= 1/2).
	maxSlots int
	cursor   uint32
	// checkCursor is Check's position.
	checkCursor uint32
	limit       *Limit
	// evicted counts flows earlyDrop removed.
	evicted atomic.Uint64
}

// minSlots is the size of an empty zone's table (3 KB).
const minSlots = 32

// NewConntrack returns an empty zone holding at most capacity flows
// (minimum 1). Its table starts small (minSlots slots) and grows on
// demand, doubling when it is half full, up to 2 to 4 slots per flow of
// capacity; Check shrinks it again when it is mostly empty.
func NewConntrack(capacity int) *Conntrack {
	capacity = max(capacity, 1)
	n := 16
	for n < 2*capacity {
		n <<= 1
	}
	c := &Conntrack{seed: rand.Uint64() | 1, capacity: capacity, maxSlots: n}
	c.resize(min(minSlots, n))
	return c
}

// resize moves the entries into a new table of n slots (a power of two
// larger than the count). The entries keep their state; only their slots
// change.
func (c *Conntrack) resize(n int) {
	old := c.slots
	c.slots = make([]entry, n)
	c.mask = uint32(n - 1)
	for i := range old {
		e := &old[i]
		if e.state == stEmpty {
			continue
		}
		j := e.hash & c.mask
		for c.slots[j].state != stEmpty {
			j = (j + 1) & c.mask
		}
		c.slots[j] = *e
	}
}

// shrink makes a table less than 1/8 full smaller, down to minSlots,
// leaving it at most 1/4 full: it grows again only once its count has
// doubled, so it does not oscillate.
func (c *Conntrack) shrink() {
	n := len(c.slots)
	if n <= minSlots || c.count*8 >= n {
		return
	}
	for n/2 >= minSlots && c.count*4 <= n/2 {
		n >>= 1
	}
	c.resize(n)
}

// Limit bounds the total number of entries of several zones (e.g. all the
// vNICs of a host). It is safe for concurrent use; it costs an atomic
// operation per created or removed entry, none per packet of a tracked
// flow.
type Limit struct {
	max int64
	n   atomic.Int64
}

// NewLimit returns a limit of max entries in total.
func NewLimit(max int) *Limit { return &Limit{max: int64(max)} }

// Used returns the number of entries held under the limit.
func (l *Limit) Used() int { return int(l.n.Load()) }

func (l *Limit) take() bool {
	if l.n.Add(1) > l.max {
		l.n.Add(-1)
		return false
	}
	return true
}

// SetLimit makes the zone's entries count against l too; call it before
// the first Decide. A zone at l's limit drops new connections
// (DropTableFull) like a full table.
func (c *Conntrack) SetLimit(l *Limit) { c.limit = l }

// Release empties the zone and returns its entries to its Limit; call it
// when the vNIC is deleted.
func (c *Conntrack) Release() {
	if c.limit != nil {
		c.limit.n.Add(-int64(c.count))
	}
	c.slots = nil
	c.count = 0
	c.resize(min(minSlots, c.maxSlots))
}

// Len returns the number of entries (flows and fragment records), expired
// ones included until they are swept.
func (c *Conntrack) Len() int { return c.count }

// Capacity returns the maximum number of entries.
func (c *Conntrack) Capacity() int { return c.capacity }

// Evicted returns how many flows were evicted from a full table. Safe for
// concurrent use.
func (c *Conntrack) Evicted() uint64 { return c.evicted.Load() }

func mix(h, v uint64) uint64 {
	h ^= v
	h *= 0x9e3779b97f4a7c15
	return h ^ h>>29
}

func (c *Conntrack) hash(k *key) uint32 {
	h := c.seed
	h = mix(h, k.a.hi)
	h = mix(h, k.a.lo)
	h = mix(h, k.b.hi)
	h = mix(h, k.b.lo)
	h = mix(h, uint64(k.pa)<<32|uint64(k.pb)<<16|uint64(k.proto)<<8|uint64(k.kind))
	return uint32(h>>32) ^ uint32(h)
}

// find returns the slot of k, or -1 and the first free slot.
func (c *Conntrack) find(k *key, h uint32) (int, int) {
	i := h & c.mask
	for {
		e := &c.slots[i]
		if e.state == stEmpty {
			return -1, int(i)
		}
		if e.hash == h && e.k == *k {
			return int(i), -1
		}
		i = (i + 1) & c.mask
	}
}

// deleteAt empties slot i and shifts back the entries of its cluster.
func (c *Conntrack) deleteAt(i uint32) {
	c.count--
	if c.limit != nil {
		c.limit.n.Add(-1)
	}
	for {
		c.slots[i].state = stEmpty
		j := i
		for {
			j = (j + 1) & c.mask
			e := &c.slots[j]
			if e.state == stEmpty {
				return
			}
			home := e.hash & c.mask
			// Move e to i unless its home lies cyclically in (i, j].
			if i <= j {
				if home <= i || home > j {
					break
				}
			} else if home <= i && home > j {
				break
			}
		}
		c.slots[i] = c.slots[j]
		i = j
	}
}

// sweep examines n slots for expired entries.
func (c *Conntrack) sweep(now int64, n int) {
	if c.count == 0 {
		return
	}
	for ; n > 0; n-- {
		i := c.cursor & c.mask
		e := &c.slots[i]
		if e.state != stEmpty && e.expires <= now {
			c.deleteAt(i) // re-examine slot i: an entry may have moved in
			continue
		}
		c.cursor++
	}
}

// genCut marks a flow Check found no longer allowed: its next packet is
// dropped as DropCut and removes it. Policy generations never reach it.
const genCut = ^uint64(0)

// cutLinger bounds how long a flow marked by Check stays in the table.
const cutLinger = TimeoutClose

// earlyDropScan is the number of slots earlyDrop examines.
const earlyDropScan = 64

// evictable reports whether e is a flow a peer opened towards the VM that
// is not yet assured: a TCP connection short of ESTABLISHED, or another
// flow the VM never answered. Such flows are what a flood of new
// connections from outside leaves behind.
func (e *entry) evictable() bool {
	if e.gen == genCut {
		return true
	}
	if e.flags&flOrigFrom != 0 {
		return false
	}
	switch {
	case e.state == TCPSynSent || e.state == TCPSynRecv || e.state == TCPClose:
		return true
	case e.state >= stUDP && e.state <= stOther:
		return e.flags&flReplied == 0
	}
	return false
}

// earlyDrop makes room in a full table, like Linux's early drop: among
// the earlyDropScan slots from h's home, it removes the evictable entry
// closest to expiry. So a peer flooding the VM with connections it never
// completes cannot lock the VM out of new connections, while flows the
// VM opened itself and established flows are never evicted (a VM that
// floods the network only fills its own table). It reports whether an
// entry was removed.
func (c *Conntrack) earlyDrop(h uint32) bool {
	victim, found := uint32(0), false
	for n, i := 0, h&c.mask; n < earlyDropScan; n, i = n+1, (i+1)&c.mask {
		e := &c.slots[i]
		if e.state == stEmpty || !e.evictable() {
			continue
		}
		if !found || e.expires < c.slots[victim].expires {
			victim, found = i, true
		}
	}
	if found {
		c.deleteAt(victim)
		c.evicted.Add(1)
	}
	return found
}

// insert adds k at free slot free; false when the table is full.
func (c *Conntrack) insert(k *key, h uint32, free int, now int64) (*entry, bool) {
	if c.count >= c.capacity || c.limit != nil && c.limit.n.Load() >= c.limit.max {
		// Reclaim expired entries first.
		c.sweep(now, 64)
		if c.count >= c.capacity || c.limit != nil && c.limit.n.Load() >= c.limit.max {
			// Then make room at the expense of a peer's half-open flow.
			if !c.earlyDrop(h) {
				return nil, false
			}
		}
		_, free = c.find(k, h) // the sweep may have moved entries
	}
	if (c.count+1)*2 > len(c.slots) && len(c.slots) < c.maxSlots {
		c.resize(2 * len(c.slots))
		_, free = c.find(k, h)
	}
	if c.limit != nil && !c.limit.take() {
		return nil, false
	}
	c.count++
	e := &c.slots[free]
	*e = entry{k: *k, hash: h}
	return e, true
}

// Decide decides on one Ethernet frame crossing the vNIC in direction dir
// under policy pol (not nil) at monotonic time now (ns). It does not
// allocate, except when a new flow makes the table grow (amortized:
// doubling). Expired entries are collected by Check (and by an insertion
// into a full table), not per packet: the collection walks the table in
// slot order, which on a table larger than the caches costs each packet
// misses of its own.
func (c *Conntrack) Decide(frame []byte, dir Direction, pol *Policy, now int64) Verdict {
	return c.filter(frame, dir, pol, now)
}

// tuple is a parsed packet's flow description.
type tuple struct {
	fk       flowKey
	seg      tcpSeg
	tcpFrag  bool // a TCP segment in fragments: its length is unknown
	tcpFlags uint8
	icmpType uint8
	isICMP   bool
}

func (c *Conntrack) filter(frame []byte, dir Direction, pol *Policy, now int64) Verdict {
	var l packet.Layers
	if !packet.Parse(frame, &l) {
		return DropInvalid
	}
	var t tuple
	t.fk.dir = dir
	var fragID uint32
	var fragProto uint8
	switch {
	case l.IsIPv4():
		ip := packet.IPv4(frame[l.L3:l.L3End])
		t.fk.fam = fam4
		t.fk.src, t.fk.dst = addrFromBytes(ip.SrcBytes()), addrFromBytes(ip.DstBytes())
		fragID, fragProto = uint32(ip.ID()), l.Proto
	case l.IsIPv6():
		ip := packet.IPv6(frame[l.L3:l.L3End])
		t.fk.fam = fam6
		t.fk.src, t.fk.dst = addrFromBytes(ip.SrcBytes()), addrFromBytes(ip.DstBytes())
		if l.Fragment {
			var ok bool
			if fragID, fragProto, ok = ipv6Frag(ip); !ok {
				return DropInvalid
			}
		}
	default:
		return AcceptStateless
	}
	if l.Fragment && l.L4 == 0 {
		fk := fragKey(&t.fk, fragID, fragProto)
		h := c.hash(&fk)
		if i, _ := c.find(&fk, h); i >= 0 && c.slots[i].expires > now {
			c.slots[i].expires = now + TimeoutFragment
			return AcceptStateless
		}
		return DropFragment
	}
	t.fk.proto = l.Proto
	l4 := frame[l.L4:l.L3End]
	switch l.Proto {
	case packet.ProtoTCP:
		tcp := packet.TCP(l4)
		if !tcp.IsValid() {
			return DropInvalid
		}
		t.fk.sport, t.fk.dport, t.fk.portsValid = tcp.SrcPort(), tcp.DstPort(), true
		t.tcpFlags = tcp.Flags()
		t.seg = parseSeg(tcp, t.tcpFlags)
		t.tcpFrag = l.Fragment
	case packet.ProtoUDP, packet.ProtoSCTP:
		if len(l4) < 8 {
			return DropInvalid
		}
		t.fk.sport = binary.BigEndian.Uint16(l4[0:2])
		t.fk.dport = binary.BigEndian.Uint16(l4[2:4])
		t.fk.portsValid = true
	case packet.ProtoICMPv4, packet.ProtoICMPv6:
		if l.Proto == packet.ProtoICMPv4 && t.fk.fam != fam4 || l.Proto == packet.ProtoICMPv6 && t.fk.fam != fam6 {
			break // tracked as an "other" protocol
		}
		ic := packet.ICMPv4(l4)
		if !ic.IsValid() {
			return DropInvalid
		}
		t.isICMP = true
		t.icmpType = ic.Type()
		isErr := ic.IsError()
		if t.fk.fam == fam6 {
			isErr = packet.ICMPv6(l4).IsError()
			if v, ok := ndVerdict(dir, frame[l.L3:], t.icmpType, &t.fk, pol); ok {
				return v
			}
		}
		if isErr {
			return c.icmpError(&t.fk, l4[packet.ICMPHeaderLen:], pol, now)
		}
		if isEcho(t.fk.fam, t.icmpType) {
			// Echo by identifier: both ports hold it, so request and
			// reply share the key.
			t.fk.sport, t.fk.dport = ic.Ident(), ic.Ident()
		}
	}
	v := c.track(&t, pol, now)
	if v == Accept && l.Fragment {
		c.recordFragment(&t.fk, fragID, fragProto, now)
	}
	return v
}

func isEcho(fam int, typ uint8) bool {
	if fam == fam4 {
		return typ == packet.ICMPv4Echo || typ == packet.ICMPv4EchoReply
	}
	return typ == packet.ICMPv6EchoRequest || typ == packet.ICMPv6EchoReply
}

// ndVerdict passes IPv6 neighbour discovery, router solicitation and MLD.
func ndVerdict(dir Direction, ip6 []byte, typ uint8, fk *flowKey, pol *Policy) (Verdict, bool) {
	hop := packet.IPv6(ip6).HopLimit()
	srcLL := fk.src.hi>>54 == 0xfe80>>6 // fe80::/10
	srcOK := srcLL || fk.src == (addr{}) || containsAddr(pol.ips[fam6], fk.src)
	switch typ {
	case packet.ICMPv6RouterSolicit:
		if dir == FromVM && hop == 255 && srcOK {
			return AcceptStateless, true
		}
	case packet.ICMPv6NeighborSolicit, packet.ICMPv6NeighborAdvert:
		if hop == 255 && (dir == ToVM || srcOK) {
			return AcceptStateless, true
		}
	case packet.ICMPv6RouterAdvert:
		if dir == ToVM && hop == 255 && srcLL {
			return AcceptStateless, true
		}
	case packet.ICMPv6MLDReport, packet.ICMPv6MLDDone, packet.ICMPv6MLDv2Report:
		if dir == FromVM && (srcLL || fk.src == (addr{})) {
			return AcceptStateless, true
		}
	}
	return 0, false
}

// canonical builds the canonical key of fk; origIsA tells whether fk's
// source is endpoint a.
func canonical(fk *flowKey) (key, bool) {
	k := key{proto: fk.proto, kind: uint8(fk.fam)}
	if fk.src.less(fk.dst) || (fk.src == fk.dst && fk.sport <= fk.dport) {
		k.a, k.pa, k.b, k.pb = fk.src, fk.sport, fk.dst, fk.dport
		return k, true
	}
	k.a, k.pa, k.b, k.pb = fk.dst, fk.dport, fk.src, fk.sport
	return k, false
}

func fragKey(fk *flowKey, id uint32, proto uint8) key {
	return key{a: fk.src, b: fk.dst, pa: uint16(id >> 16), pb: uint16(id), proto: proto, kind: uint8(fk.fam) | uint8(fk.dir)<<1 | kindFrag}
}

func (c *Conntrack) recordFragment(fk *flowKey, id uint32, proto uint8, now int64) {
	k := fragKey(fk, id, proto)
	h := c.hash(&k)
	i, free := c.find(&k, h)
	var e *entry
	if i >= 0 {
		e = &c.slots[i]
	} else {
		var ok bool
		if e, ok = c.insert(&k, h, free, now); !ok {
			return // following fragments will be dropped and counted
		}
		e.state = stFrag
	}
	e.expires = now + TimeoutFragment
}

// origKey rebuilds the first packet of e's flow.
func origKey(e *entry) flowKey {
	fk := flowKey{fam: int(e.k.kind & 1), proto: e.k.proto, portsValid: hasPorts(int32(e.k.proto))}
	if e.flags&flOrigFrom != 0 {
		fk.dir = FromVM
	}
	if e.flags&flOrigIsA != 0 {
		fk.src, fk.sport, fk.dst, fk.dport = e.k.a, e.k.pa, e.k.b, e.k.pb
	} else {
		fk.src, fk.sport, fk.dst, fk.dport = e.k.b, e.k.pb, e.k.a, e.k.pa
	}
	if !fk.portsValid {
		fk.sport, fk.dport = 0, 0
	}
	return fk
}

// classify evaluates pol for fk (ports ignored for port-less protocols).
func classify(pol *Policy, fk *flowKey) bool {
	if fk.portsValid {
		return pol.allows(fk)
	}
	k := *fk
	k.sport, k.dport = 0, 0
	return pol.allows(&k)
}

const tcpSynMask = packet.TCPFlagSYN | packet.TCPFlagACK | packet.TCPFlagRST | packet.TCPFlagFIN

func (c *Conntrack) track(t *tuple, pol *Policy, now int64) Verdict {
	k, srcIsA := canonical(&t.fk)
	h := c.hash(&k)
	i, free := c.find(&k, h)
	if i >= 0 {
		e := &c.slots[i]
		switch {
		case e.expires <= now:
			c.deleteAt(uint32(i))
		case t.fk.proto == packet.ProtoTCP && (e.state == TCPTimeWait || e.state == TCPClose) &&
			t.tcpFlags&tcpSynMask == packet.TCPFlagSYN:
			c.deleteAt(uint32(i)) // reopened: a new connection
		default:
			return c.hit(e, uint32(i), t, srcIsA, pol, now)
		}
		_, free = c.find(&k, h)
	}
	if t.fk.proto == packet.ProtoTCP && t.tcpFlags&tcpSynMask != packet.TCPFlagSYN {
		return DropInvalid
	}
	if !classify(pol, &t.fk) {
		return DropNoRule
	}
	e, ok := c.insert(&k, h, free, now)
	if !ok {
		return DropTableFull
	}
	e.gen = pol.Generation()
	if srcIsA {
		e.flags |= flOrigIsA
	}
	if t.fk.dir == FromVM {
		e.flags |= flOrigFrom
	}
	switch {
	case t.fk.proto == packet.ProtoTCP:
		e.state = TCPSynSent
		e.expires = now + TimeoutSynSent
		e.win[0].init(&t.seg, segEnd(&t.seg, t.tcpFlags), true)
		if t.tcpFrag {
			e.flags |= flLiberal
		}
	case t.fk.proto == packet.ProtoUDP:
		e.state = stUDP
		e.expires = now + TimeoutUDP
	case t.isICMP:
		e.state = stICMP
		e.expires = now + TimeoutICMP
	default:
		e.state = stOther
		e.expires = now + TimeoutOther
	}
	return Accept
}

func (c *Conntrack) hit(e *entry, i uint32, t *tuple, srcIsA bool, pol *Policy, now int64) Verdict {
	fromOrig := srcIsA == (e.flags&flOrigIsA != 0)
	origDir := ToVM
	if e.flags&flOrigFrom != 0 {
		origDir = FromVM
	}
	if fromOrig != (t.fk.dir == origDir) {
		// An originator's packet in the responder's direction (or the
		// reverse): spoofed or looped.
		if e.k.a != e.k.b {
			return DropInvalid
		}
	}
	if g := pol.Generation(); e.gen != g {
		ok := origKey(e)
		if e.gen == genCut || !classify(pol, &ok) {
			c.deleteAt(i)
			return DropCut
		}
		e.gen = g
	}
	if !fromOrig {
		e.flags |= flReplied
	}
	switch e.state {
	case stUDP:
		if e.flags&flReplied != 0 {
			e.expires = now + TimeoutUDPAssured
		} else {
			e.expires = now + TimeoutUDP
		}
	case stICMP:
		e.expires = now + TimeoutICMP
	case stOther:
		e.expires = now + TimeoutOther
	default:
		if t.tcpFrag {
			e.flags |= flLiberal
		}
		if !tcpWindow(e, fromOrig, &t.seg, t.tcpFlags) || !tcpStep(e, fromOrig, t.tcpFlags) {
			return DropInvalid
		}
		e.expires = now + tcpTimeout(e.state)
	}
	return Accept
}

// tcpStep advances e's TCP state for a segment with flags; false marks
// the segment invalid (state unchanged).
func tcpStep(e *entry, fromOrig bool, flags uint8) bool {
	syn := flags&packet.TCPFlagSYN != 0
	ack := flags&packet.TCPFlagACK != 0
	fin := flags&packet.TCPFlagFIN != 0
	if flags&packet.TCPFlagRST != 0 {
		if e.state == TCPSynSent && fromOrig {
			return false
		}
		e.state = TCPClose
		return true
	}
	if syn && fin {
		return false
	}
	switch e.state {
	case TCPSynSent:
		switch {
		case fromOrig && syn && !ack: // retransmission
		case !fromOrig && syn: // SYN-ACK, or simultaneous open
			e.state = TCPSynRecv
		default:
			return false
		}
		return true
	case TCPSynRecv:
		switch {
		case syn: // retransmissions
		case fromOrig && ack && !fin:
			e.state = TCPEstablished
		case fromOrig && fin:
			e.flags |= flFinOrig | flFirstFinOrig
			e.state = TCPFinWait
		default:
			return false
		}
		return true
	}
	if syn {
		// A SYN inside an established connection: only a retransmitted
		// SYN-ACK from the responder is tolerated.
		return !fromOrig && ack
	}
	if fin {
		if e.flags&(flFinOrig|flFinReply) == 0 && fromOrig {
			e.flags |= flFirstFinOrig
		}
		if fromOrig {
			e.flags |= flFinOrig
		} else {
			e.flags |= flFinReply
		}
	}
	firstOrig := e.flags&flFirstFinOrig != 0
	both := e.flags&flFinOrig != 0 && e.flags&flFinReply != 0
	switch e.state {
	case TCPEstablished:
		if fin {
			e.state = TCPFinWait
		}
	case TCPFinWait:
		switch {
		case both:
			e.state = TCPLastAck
		case ack && fromOrig != firstOrig:
			e.state = TCPCloseWait
		}
	case TCPCloseWait:
		if both {
			e.state = TCPLastAck
		}
	case TCPLastAck:
		// The last FIN came from the side that did not close first; its
		// ACK comes from the first closer.
		if ack && !fin && fromOrig == firstOrig {
			e.state = TCPTimeWait
		}
	}
	return true
}

// icmpError passes an ICMP error whose quoted packet belongs to a tracked
// flow (the quoted packet was sent by the error's destination). Other
// errors follow the policy, untracked.
func (c *Conntrack) icmpError(outer *flowKey, q []byte, pol *Policy, now int64) Verdict {
	var fk flowKey
	fk.fam = outer.fam
	var l4 []byte
	if outer.fam == fam4 {
		ip := packet.IPv4(q)
		if len(q) < packet.IPv4MinLen || q[0]>>4 != 4 || ip.HeaderLen() < packet.IPv4MinLen || ip.HeaderLen() > len(q) {
			return DropInvalid
		}
		if ip.FragOffset() != 0 {
			return c.untracked(outer, pol)
		}
		fk.src, fk.dst, fk.proto = addrFromBytes(ip.SrcBytes()), addrFromBytes(ip.DstBytes()), ip.Protocol()
		l4 = q[ip.HeaderLen():]
	} else {
		if len(q) < packet.IPv6Len || q[0]>>4 != 6 {
			return DropInvalid
		}
		ip := packet.IPv6(q)
		w := walkIPv6(q, len(q))
		if !w.ok || w.off > len(q) {
			return DropInvalid
		}
		if w.fragOff != 0 {
			return c.untracked(outer, pol)
		}
		fk.src, fk.dst, fk.proto = addrFromBytes(ip.SrcBytes()), addrFromBytes(ip.DstBytes()), w.proto
		l4 = q[w.off:]
	}
	if fk.src != outer.dst {
		return c.untracked(outer, pol)
	}
	switch fk.proto {
	case packet.ProtoTCP, packet.ProtoUDP, packet.ProtoSCTP:
		if len(l4) < 4 {
			return DropInvalid
		}
		fk.sport = binary.BigEndian.Uint16(l4[0:2])
		fk.dport = binary.BigEndian.Uint16(l4[2:4])
	case packet.ProtoICMPv4, packet.ProtoICMPv6:
		if len(l4) < packet.ICMPHeaderLen {
			return DropInvalid
		}
		if isEcho(fk.fam, l4[0]) {
			id := binary.BigEndian.Uint16(l4[4:6])
			fk.sport, fk.dport = id, id
		}
	}
	k, _ := canonical(&fk)
	h := c.hash(&k)
	if i, _ := c.find(&k, h); i >= 0 && c.slots[i].expires > now && c.slots[i].gen != genCut {
		return AcceptStateless
	}
	return c.untracked(outer, pol)
}

// untracked evaluates pol for a packet that creates no entry.
func (c *Conntrack) untracked(fk *flowKey, pol *Policy) Verdict {
	if classify(pol, fk) {
		return AcceptStateless
	}
	return DropNoRule
}

// ipv6Frag finds the fragment header of ip: the identification and the
// header that follows it.
func ipv6Frag(ip packet.IPv6) (id uint32, next uint8, ok bool) {
	w := walkIPv6(ip, packet.IPv6Len+int(ip.PayloadLen()))
	return w.fragID, w.fragNext, w.ok && w.frag
}

// ipv6Walk is the result of walkIPv6.
type ipv6Walk struct {
	proto    uint8 // the first header that is not an extension header
	off      int   // its offset
	frag     bool  // a fragment header was seen
	fragOff  int   // its fragment offset (bytes)
	fragID   uint32
	fragNext uint8
	ok       bool
}

// walkIPv6 follows the extension headers of ip (which may be truncated to
// end, as in an ICMPv6 error's quote), at most packet.MaxIPv6ExtHeaders.
func walkIPv6(ip []byte, end int) ipv6Walk {
	w := ipv6Walk{proto: ip[6], off: packet.IPv6Len}
	end = min(end, len(ip))
	for range packet.MaxIPv6ExtHeaders + 1 {
		if !packet.IsIPv6ExtHeader(w.proto) {
			w.ok = true
			return w
		}
		if w.off+8 > end {
			return w
		}
		h := ip[w.off:]
		next := h[0]
		switch w.proto {
		case packet.ProtoFragment:
			w.frag = true
			w.fragOff = int(binary.BigEndian.Uint16(h[2:4]) &^ 7)
			w.fragID = binary.BigEndian.Uint32(h[4:8])
			w.fragNext = next
			w.off += 8
			if w.fragOff != 0 {
				w.proto = next
				w.ok = true // no upper-layer header follows
				return w
			}
		case packet.ProtoAH:
			w.off += (int(h[1]) + 2) * 4
		default:
			w.off += (int(h[1]) + 1) * 8
		}
		w.proto = next
	}
	return w
}

// Check examines up to budget slots, continuing where the previous call
// stopped: it removes expired entries and re-evaluates flows admitted under
// another generation than pol's, cutting those pol no longer allows. It
// returns the number of flows cut. Decide already cuts such a flow at its
// next packet; Check does it proactively after a policy change, in bounded
// steps, so that a cut flow stops at once even if the policy changes back.
// A flow Check cuts stays marked for at most cutLinger (10 s): its next
// packet is dropped as DropCut (not DropInvalid) and removes it, and a
// full table evicts it first. Same concurrency contract as Decide.
func (c *Conntrack) Check(pol *Policy, now int64, budget int) (cut int) {
	c.shrink()
	g := pol.Generation()
	for ; budget > 0 && c.count > 0; budget-- {
		i := c.checkCursor & c.mask
		e := &c.slots[i]
		switch {
		case e.state == stEmpty || e.state == stFrag && e.expires > now:
		case e.expires <= now:
			c.deleteAt(i)
			continue
		case e.gen != g && e.gen != genCut:
			ok := origKey(e)
			if !classify(pol, &ok) {
				// Keep the flow, marked, until its next packet so that
				// packet counts as cut, not as invalid; it lingers at
				// most cutLinger and is the first to be evicted.
				e.gen = genCut
				e.expires = min(e.expires, now+cutLinger)
				cut++
				break
			}
			e.gen = g
		}
		c.checkCursor++
	}
	return cut
}

// Flow is a tracked connection as reported to tools.
type Flow struct {
	// Dir is the direction of the flow's first packet.
	Dir              Direction
	Proto            uint8
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16 // the ICMP echo identifier for echo flows
	// State is the TCP state for TCP flows, 0 otherwise.
	State TCPState
	// Replied reports whether a packet of the responder was seen.
	Replied bool
	// Expires is the monotonic time (ns) of expiry.
	Expires int64
}

// Flows calls fn for each live tracked flow (fragment records excluded)
// until fn returns false. Same concurrency contract as Decide.
func (c *Conntrack) Flows(now int64, fn func(Flow) bool) {
	for i := range c.slots {
		e := &c.slots[i]
		if e.state == stEmpty || e.state == stFrag || e.expires <= now || e.gen == genCut {
			continue
		}
		fk := origKey(e)
		f := Flow{Dir: fk.dir, Proto: fk.proto, Src: fk.src.netip(fk.fam), Dst: fk.dst.netip(fk.fam),
			Replied: e.flags&flReplied != 0, Expires: e.expires}
		if e.flags&flOrigIsA != 0 {
			f.SrcPort, f.DstPort = e.k.pa, e.k.pb
		} else {
			f.SrcPort, f.DstPort = e.k.pb, e.k.pa
		}
		if e.state <= TCPClose {
			f.State = e.state
		}
		if !fn(f) {
			return
		}
	}
}

// String names the state as Linux does.
func (s TCPState) String() string {
	switch s {
	case TCPSynSent:
		return "SYN_SENT"
	case TCPSynRecv:
		return "SYN_RECV"
	case TCPEstablished:
		return "ESTABLISHED"
	case TCPFinWait:
		return "FIN_WAIT"
	case TCPCloseWait:
		return "CLOSE_WAIT"
	case TCPLastAck:
		return "LAST_ACK"
	case TCPTimeWait:
		return "TIME_WAIT"
	case TCPClose:
		return "CLOSE"
	}
	return "NONE"
}
