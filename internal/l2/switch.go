// Package l2 is the per-VNI learning switch of the dataplane: a MAC table
// with aging shared lock-free by the workers, and the forwarding decision
// for a frame (forward to one port, flood, or drop), with hints that let
// a caller reuse a forwarding decision while the table does not change.
package l2

import (
	"slices"
	"sync/atomic"
	"time"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// Config is the immutable set of ports of a VNI. Workers read it through
// Switch.Config; the control plane replaces it with Switch.SetPorts.
type Config struct {
	// VNI is the VXLAN network identifier.
	VNI   uint32
	ports []uint32
}

// Ports returns the ports, sorted. The slice is shared: do not modify it.
func (c *Config) Ports() []uint32 { return c.ports }

// Has reports whether port p belongs to the VNI.
func (c *Config) Has(p uint32) bool {
	if len(c.ports) <= 16 {
		for _, q := range c.ports {
			if q == p {
				return true
			}
		}
		return false
	}
	_, ok := slices.BinarySearch(c.ports, p)
	return ok
}

// AppendFlood appends to dst the ports a frame from port in is flooded
// to (every port but in) and returns the extended slice; it does not
// allocate when dst has room.
func (c *Config) AppendFlood(dst []uint32, in uint32) []uint32 {
	for _, p := range c.ports {
		if p != in {
			dst = append(dst, p)
		}
	}
	return dst
}

// Action is what to do with a frame.
type Action uint8

// Actions.
const (
	// Drop the frame; Decision.Reason says why.
	Drop Action = iota
	// Forward the frame to Decision.Port.
	Forward
	// Flood the frame to every port of the VNI but its ingress port
	// (Config.AppendFlood).
	Flood
)

// Reason is why a frame is dropped.
type Reason uint8

// Drop reasons.
const (
	ReasonNone Reason = iota
	// ReasonRunt: shorter than an Ethernet header.
	ReasonRunt
	// ReasonReserved: destination in 01:80:c2:00:00:00-0f.
	ReasonReserved
	// ReasonHairpin: the destination was learned on the ingress port.
	ReasonHairpin
	// ReasonNotMember: the ingress port is not in the VNI.
	ReasonNotMember
	// ReasonBadSource: multicast source MAC.
	ReasonBadSource
	// NumReasons is one more than the largest Reason, for sizing counter arrays.
	NumReasons
)

var reasonNames = [NumReasons]string{"none", "runt", "ieee_reserved_dst", "hairpin", "not_member", "multicast_src"}

// String returns a short name usable as a counter label.
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Decision is the switch's verdict for one frame.
type Decision struct {
	Action Action
	Reason Reason
	// Port is the destination of Forward.
	Port uint32
}

// Options tune a Switch.
type Options struct {
	// TableSize is the number of MAC table slots (default 256, 10 KiB;
	// size it to the MACs expected in the VNI, local and remote).
	TableSize int
	// MaxAge is how long a learned MAC stays valid without traffic
	// (default 300 s, as IEEE 802.1D).
	MaxAge time.Duration
}

// Switch is the learning switch of one VNI. Any number of workers may
// call DecideOne concurrently (the MAC table is lock-free, see Table);
// the control plane calls SetPorts.
type Switch struct {
	vni   uint32
	cfg   atomic.Pointer[Config]
	table *Table
}

// New returns a switch for vni with no ports.
func New(vni uint32, o Options) *Switch {
	if o.TableSize <= 0 {
		o.TableSize = 256
	}
	if o.MaxAge == 0 {
		o.MaxAge = 300 * time.Second
	}
	s := &Switch{vni: vni, table: NewTable(o.TableSize, o.MaxAge)}
	s.cfg.Store(&Config{VNI: vni})
	return s
}

// VNI returns the switch's VNI.
func (s *Switch) VNI() uint32 { return s.vni }

// Config returns the current port set.
func (s *Switch) Config() *Config { return s.cfg.Load() }

// Table returns the MAC table (for inspection and tests).
func (s *Switch) Table() *Table { return s.table }

// SetPorts replaces the port set and forgets the MACs learned on ports
// that left it. Control plane only; calls must not run concurrently.
func (s *Switch) SetPorts(ports []uint32) {
	c := &Config{VNI: s.vni, ports: slices.Clone(ports)}
	slices.Sort(c.ports)
	c.ports = slices.Compact(c.ports)
	old := s.cfg.Swap(c)
	for _, p := range old.ports {
		if !c.Has(p) {
			s.forget(p)
		}
	}
}

func (s *Switch) forget(p uint32) {
	s.table.RemoveIf(func(_ packet.MAC, v0, _ uint64, _ uint8) bool { return v0 == uint64(p) })
}

// DecideOne learns the source MAC of frame (received on port in) and
// returns its forwarding decision, made with c (the Config the caller
// loaded once for its batch, so that a concurrent port change cannot
// split a batch: flood with c.AppendFlood). now is a monotonic time in
// nanoseconds. Nothing is allocated.
func (s *Switch) DecideOne(c *Config, frame []byte, in uint32, now int64) Decision {
	return s.decide(c, frame, in, now, true)
}

// Peek is DecideOne without learning: the decision the switch would take
// for frame now, the MAC table unchanged (butterfly explain).
func (s *Switch) Peek(c *Config, frame []byte, in uint32, now int64) Decision {
	return s.decide(c, frame, in, now, false)
}

func (s *Switch) decide(c *Config, frame []byte, in uint32, now int64, learn bool) Decision {
	if len(frame) < packet.EthernetLen {
		return Decision{Action: Drop, Reason: ReasonRunt}
	}
	if !c.Has(in) {
		return Decision{Action: Drop, Reason: ReasonNotMember}
	}
	e := packet.Ethernet(frame)
	src := e.Src()
	if src.IsMulticast() {
		return Decision{Action: Drop, Reason: ReasonBadSource}
	}
	if learn && !src.IsZero() {
		s.table.Learn(src, uint64(in), 0, 0, now)
	}
	dst := e.Dst()
	if dst.IsMulticast() {
		if dst.IsIEEEReserved() {
			return Decision{Action: Drop, Reason: ReasonReserved}
		}
		return Decision{Action: Flood}
	}
	v0, _, _, ok := s.table.Lookup(dst, now)
	if !learn && dst == src && !src.IsZero() {
		v0, ok = uint64(in), true // what learning src would have made it
	}
	if !ok || !c.Has(uint32(v0)) {
		return Decision{Action: Flood}
	}
	if uint32(v0) == in {
		return Decision{Action: Drop, Reason: ReasonHairpin}
	}
	return Decision{Action: Forward, Port: uint32(v0)}
}

// Hint records the MAC table entries a Forward decision read, so that
// later frames of the same source and destination MACs on the same
// ingress port can skip the table walks while the table does not change
// (Usable, Touch). The zero Hint is unusable.
type Hint struct {
	ver      uint64
	src, dst int32
	ok       bool
}

// Valid reports whether h was made for a Forward decision (it may be
// stale: see Usable).
func (h Hint) Valid() bool { return h.ok }

// DecideHint is DecideOne, and also returns a Hint: a Valid one for a
// Forward decision made while the table did not change; for other
// decisions one that only Unchanged accepts.
func (s *Switch) DecideHint(c *Config, frame []byte, in uint32, now int64) (Decision, Hint) {
	t := s.table
	ver := t.ver.Load()
	d := s.decide(c, frame, in, now, true)
	if d.Action != Forward {
		return d, Hint{ver: ver}
	}
	e := packet.Ethernet(frame)
	src := e.Src()
	if src.IsZero() {
		return d, Hint{}
	}
	si, di := t.slotOf(src, uint64(in), now, true), t.slotOf(e.Dst(), uint64(d.Port), now, false)
	if si < 0 || di < 0 || t.ver.Load() != ver {
		return d, Hint{}
	}
	return d, Hint{ver: ver, src: int32(si), dst: int32(di), ok: true}
}

// Unchanged reports whether no entry of the MAC table changed since h
// was made (a decision that was not Forward may then still be the same,
// unless entries aged).
func (s *Switch) Unchanged(h Hint) bool { return s.table.ver.Load() == h.ver }

// Usable reports whether DecideOne, at now, for a frame with the source
// and destination MACs and ingress port of the frame h was returned for,
// under the same Config, would still decide the same Forward: no entry of
// the table changed since and the destination's entry is still live. It
// changes nothing.
func (s *Switch) Usable(h Hint, now int64) bool {
	t := s.table
	return h.ok && t.ver.Load() == h.ver && t.live(t.slots[h.dst].seen.Load(), now)
}

// Touch does the learning DecideOne does for a frame from src on port in
// whose Hint h is Usable: it refreshes src's entry when DecideOne would
// (so that MACs age as without hints).
func (s *Switch) Touch(h Hint, src packet.MAC, in uint32, now int64) {
	t := s.table
	if now-t.slots[h.src].seen.Load() < t.refresh {
		return
	}
	t.Learn(src, uint64(in), 0, 0, now)
}
