package firewall

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/packet"
)

// Benchmarks of the firewall's per-packet paths, on a zone tracking
// benchFlows flows and policies of 1 to 1,000 rules:
//
//   - hit: a packet of an established flow (one hash lookup, whatever the
//     number of rules);
//   - miss: a new flow no rule allows (the compiled classifier, then a drop);
//   - new connection: a TCP SYN allowed by the policy's last rule, which
//     creates an entry; every SYN is a new 5-tuple and time advances so
//     that entries expire and are collected, as in a steady stream of new
//     connections (reported as conns/s); likewise TCP connections in
//     progress picked up (pickup.go).
//
// TestBenchZeroAllocs runs the same operations and asserts that none
// allocates.

// benchFlows is the number of tracked flows of the hit and miss cases.
const benchFlows = 10000

// benchRules is the set of rule counts of the miss and new-connection
// cases.
var benchRules = []int{1, 100, 1000}

// randomRules returns n random INBOUND rules (CIDRs /16 to /32 in 10/8
// and port ranges) that never match 192.0.2.0/24.
func randomRules(n int) []model.Rule {
	rng := rand.New(rand.NewPCG(1, 2))
	var rules []model.Rule
	for range n {
		a := netip.AddrFrom4([4]byte{10, byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))})
		lo := uint32(rng.IntN(60000))
		rules = append(rules, model.Rule{Direction: model.Inbound, Protocol: []int32{6, 17, -1}[rng.IntN(3)],
			PortStart: lo, PortEnd: lo + uint32(rng.IntN(100)), CIDR: netip.PrefixFrom(a, 16+rng.IntN(17))})
	}
	return rules
}

// benchPolicy has n random INBOUND rules that never match 192.0.2.0/24.
func benchPolicy(tb testing.TB, n int) *Policy {
	return mustCompile(tb, CompileInput{Generation: 1, IPs: addrs(vm4), Groups: []model.SG{{ID: "sg", Rules: randomRules(n)}}})
}

// allowPolicy has n rules: n-1 random ones, then TCP port 22 from
// 192.0.2.0/24, the only one that matches the new connections.
func allowPolicy(tb testing.TB, n int) *Policy {
	rules := append(randomRules(n-1), cidrRule(model.Inbound, 6, 22, 22, "192.0.2.0/24"))
	return mustCompile(tb, CompileInput{Generation: 1, IPs: addrs(vm4), Groups: []model.SG{{ID: "sg", Rules: rules}}})
}

// fillFlows tracks n UDP flows opened by the VM.
func fillFlows(tb testing.TB, ct *Conntrack, pol *Policy, n int) {
	f := pk{src: vm4, dst: peer4, proto: 17, sport: 1, dport: 53}.build()
	ip := packet.IPv4(f[packet.EthernetLen:])
	for i := range n {
		binary.BigEndian.PutUint16(ip[20:], uint16(i))
		if v := ct.Decide(f, FromVM, pol, 0); v != Accept {
			tb.Fatalf("flow %d: %v", i, v)
		}
	}
}

// benchOp is one measured operation: op filters one packet and returns
// its verdict.
type benchOp struct {
	name string
	want Verdict
	op   func() Verdict
}

// hitOps are established-flow hits: a UDP reply and a TCP segment of an
// established connection, among benchFlows flows, 1,000 rules.
func hitOps(tb testing.TB) []benchOp {
	pol := benchPolicy(tb, 1000)
	ct := NewConntrack(2 * benchFlows)
	fillFlows(tb, ct, pol, benchFlows)
	reply := pk{src: peer4, dst: vm4, proto: 17, sport: 53, dport: 5000}.build()
	steps := []struct {
		dir Direction
		p   pk
	}{
		{FromVM, pk{src: vm4, dst: peer4, proto: 6, sport: 40000, dport: 80, flags: syn}},
		{ToVM, pk{src: peer4, dst: vm4, proto: 6, sport: 80, dport: 40000, flags: synack}},
		{FromVM, pk{src: vm4, dst: peer4, proto: 6, sport: 40000, dport: 80, flags: packet.TCPFlagACK}},
	}
	for _, s := range steps {
		if v := ct.Decide(s.p.build(), s.dir, pol, 0); v != Accept {
			tb.Fatalf("TCP handshake %+v: %v", s.p, v)
		}
	}
	data := pk{src: peer4, dst: vm4, proto: 6, sport: 80, dport: 40000, flags: packet.TCPFlagACK | packet.TCPFlagPSH}.build()
	// The same through a Ref, as the dataplane's flow cache does: no
	// parse of the addresses, no lookup.
	_, udpRef := ct.DecideRef(reply, ToVM, pol, sec)
	_, tcpRef := ct.DecideRef(data, ToVM, pol, sec)
	tcp := packet.TCP(data[packet.EthernetLen+packet.IPv4MinLen:])
	viaRef := func(r Ref, tcp packet.TCP, flags uint8) Verdict {
		if !ct.Usable(r, flags, sec) {
			return DropInvalid
		}
		return ct.Hit(r, tcp, ToVM, pol, sec)
	}
	return []benchOp{
		{"udp-reply", Accept, func() Verdict { return ct.Decide(reply, ToVM, pol, sec) }},
		{"tcp-established", Accept, func() Verdict { return ct.Decide(data, ToVM, pol, sec) }},
		{"udp-reply-ref", Accept, func() Verdict { return viaRef(udpRef, nil, 0) }},
		{"tcp-established-ref", Accept, func() Verdict { return viaRef(tcpRef, tcp, tcp.Flags()) }},
	}
}

// missOp is a TCP SYN no rule of a policy of n rules allows, among
// benchFlows tracked flows.
func missOp(tb testing.TB, n int) benchOp {
	pol := benchPolicy(tb, n)
	ct := NewConntrack(2 * benchFlows)
	fillFlows(tb, ct, pol, benchFlows)
	miss := pk{src: "192.0.2.9", dst: vm4, proto: 6, sport: 1234, dport: 22, flags: syn}.build()
	return benchOp{fmt.Sprint("rules=", n), DropNoRule, func() Verdict { return ct.Decide(miss, ToVM, pol, sec) }}
}

// checkPerPacket is the number of slots the new-connection streams pass
// to Check per packet, as the engine's workers collect expired entries.
const checkPerPacket = 4

// newConnLife is the number of new connections during which an entry
// lives: the clock advances by TimeoutSynSent/newConnLife per SYN. With a
// capacity of benchFlows entries, the table is in a steady state of
// about newConnLife live entries plus expired ones waiting to be swept.
const newConnLife = 4000

// newConnOp opens a new inbound TCP connection per call (a SYN from
// 192.0.2.x:port to port 22, every 5-tuple different from the previous
// 16 million), allowed by the last of n rules.
func newConnOp(tb testing.TB, n int) (benchOp, *Conntrack) {
	pol := allowPolicy(tb, n)
	ct := NewConntrack(benchFlows)
	f := pk{src: "192.0.2.0", dst: vm4, proto: 6, sport: 1, dport: 22, flags: syn}.build()
	ip := packet.IPv4(f[packet.EthernetLen:])
	var i uint32
	var now int64
	return benchOp{fmt.Sprint("rules=", n), Accept, func() Verdict {
		i++
		binary.BigEndian.PutUint16(ip[20:], uint16(i))
		ip[15] = byte(i >> 16) // source 192.0.2.x
		now += TimeoutSynSent / newConnLife
		v := ct.Decide(f, ToVM, pol, now)
		ct.Check(pol, now, checkPerPacket)
		return v
	}}, ct
}

// newPickupOp picks up a TCP connection in progress per call (a plain
// ACK from 192.0.2.x:port to port 22, every 5-tuple different from the
// previous 16 million), allowed by the last of n rules, in a zone whose
// pickup window never ends.
func newPickupOp(tb testing.TB, n int) (benchOp, *Conntrack) {
	pol := allowPolicy(tb, n)
	ct := NewConntrack(benchFlows)
	ct.SetPickup(1 << 62)
	f := pk{src: "192.0.2.0", dst: vm4, proto: 6, sport: 1, dport: 22, flags: packet.TCPFlagACK}.build()
	ip := packet.IPv4(f[packet.EthernetLen:])
	var i uint32
	var now int64
	return benchOp{fmt.Sprint("tcp-pickup/rules=", n), Accept, func() Verdict {
		i++
		binary.BigEndian.PutUint16(ip[20:], uint16(i))
		ip[15] = byte(i >> 16) // source 192.0.2.x
		now += TimeoutPickup / newConnLife
		v := ct.Decide(f, ToVM, pol, now)
		ct.Check(pol, now, checkPerPacket)
		return v
	}}, ct
}

// newEgressOp opens a new outbound UDP flow per call under the default
// egress (the policy has n INBOUND rules and no OUTBOUND rule).
func newEgressOp(tb testing.TB, n int) (benchOp, *Conntrack) {
	pol := benchPolicy(tb, n)
	ct := NewConntrack(benchFlows)
	f := pk{src: vm4, dst: "192.0.2.0", proto: 17, sport: 1, dport: 53}.build()
	ip := packet.IPv4(f[packet.EthernetLen:])
	var i uint32
	var now int64
	return benchOp{"udp-default-egress", Accept, func() Verdict {
		i++
		binary.BigEndian.PutUint16(ip[20:], uint16(i))
		ip[19] = byte(i >> 16) // destination 192.0.2.x
		now += TimeoutUDP / newConnLife
		v := ct.Decide(f, FromVM, pol, now)
		ct.Check(pol, now, checkPerPacket)
		return v
	}}, ct
}

// runOp runs op b.N times, failing on an unexpected verdict.
func runOp(b *testing.B, o benchOp) {
	if v := o.op(); v != o.want {
		b.Fatalf("%s: %v, want %v", o.name, v, o.want)
	}
	b.ReportAllocs()
	for b.Loop() {
		if v := o.op(); v != o.want {
			b.Fatalf("%s: %v, want %v", o.name, v, o.want)
		}
	}
}

// BenchmarkFilterHit: a packet of an established flow, 10,000 flows
// tracked, 1,000 rules (hits do not evaluate rules).
func BenchmarkFilterHit(b *testing.B) {
	for _, o := range hitOps(b) {
		b.Run(o.name, func(b *testing.B) { runOp(b, o) })
	}
}

// BenchmarkFilterMiss: a new flow no rule allows, 10,000 flows tracked.
func BenchmarkFilterMiss(b *testing.B) {
	for _, n := range benchRules {
		b.Run(fmt.Sprint("rules=", n), func(b *testing.B) { runOp(b, missOp(b, n)) })
	}
}

// BenchmarkNewConnection: new connections per second in a steady state
// (classification, insertion, expiry and collection of old entries).
func BenchmarkNewConnection(b *testing.B) {
	report := func(b *testing.B, o benchOp) {
		runOp(b, o)
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
	}
	for _, n := range benchRules {
		b.Run(fmt.Sprint("tcp-inbound/rules=", n), func(b *testing.B) {
			o, _ := newConnOp(b, n)
			report(b, o)
		})
	}
	b.Run("udp-default-egress", func(b *testing.B) {
		o, _ := newEgressOp(b, 100)
		report(b, o)
	})
	b.Run("tcp-pickup/rules=1000", func(b *testing.B) {
		o, _ := newPickupOp(b, 1000)
		report(b, o)
	})
}

func BenchmarkCompile1000(b *testing.B) {
	for b.Loop() {
		benchPolicy(b, 1000)
	}
}

// TestBenchZeroAllocs runs the benchmarks' operations: each returns the
// expected verdict and none allocates; the new-connection streams run long
// enough (several entry lifetimes) to wrap the table, and never find it
// full.
func TestBenchZeroAllocs(t *testing.T) {
	ops := hitOps(t)
	for _, n := range benchRules {
		o := missOp(t, n)
		o.name = "miss/" + o.name
		ops = append(ops, o)
	}
	var cts []*Conntrack
	for _, n := range benchRules {
		o, ct := newConnOp(t, n)
		o.name = "new-tcp/" + o.name
		ops = append(ops, o)
		cts = append(cts, ct)
	}
	o, ct := newEgressOp(t, 100)
	ops, cts = append(ops, o), append(cts, ct)
	o, ct = newPickupOp(t, 1000)
	ops, cts = append(ops, o), append(cts, ct)
	for _, o := range ops {
		bad := 0
		f := func() {
			if o.op() != o.want {
				bad++
			}
		}
		runs := 1000
		if o.want == Accept && o.name != "udp-reply" && o.name != "tcp-established" {
			runs = 5 * newConnLife // several lifetimes: entries expire and are collected
		}
		if n := testing.AllocsPerRun(runs, f); n != 0 {
			t.Errorf("%s: %v allocs per packet", o.name, n)
		}
		if bad != 0 {
			t.Errorf("%s: %d packets of %d without verdict %v", o.name, bad, runs+1, o.want)
		}
	}
	for _, ct := range cts {
		if ct.Len() > ct.Capacity() || ct.Len() < newConnLife/2 {
			t.Errorf("%d entries after the stream, want about %d live (capacity %d)", ct.Len(), newConnLife, ct.Capacity())
		}
	}
}
