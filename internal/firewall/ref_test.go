package firewall

import (
	"reflect"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/packet"
)

// refStep is one packet of TestRefMatchesDecide at time at (seconds),
// under policy pol (an index into the test's policies).
type refStep struct {
	at  int64
	dir Direction
	p   pk
	pol int
}

// TestRefMatchesDecide runs the same packets through two zones: one
// with Decide, the other with Hit whenever the Ref of the packet's flow
// and direction is Usable (DecideRef otherwise, which refreshes the
// Ref). Verdicts and the tracked flows must be the same.
func TestRefMatchesDecide(t *testing.T) {
	in := func(f uint8) pk { return pk{src: peer4, dst: vm4, proto: 6, sport: 5555, dport: 22, flags: f} }
	out := func(f uint8) pk { return pk{src: vm4, dst: peer4, proto: 6, sport: 22, dport: 5555, flags: f} }
	udpOut := pk{src: vm6, dst: peer6, proto: packet.ProtoUDP, sport: 1000, dport: 53}
	udpIn := pk{src: peer6, dst: vm6, proto: packet.ProtoUDP, sport: 53, dport: 1000}
	echo := pk{src: peer4, dst: vm4, proto: packet.ProtoICMPv4, sport: packet.ICMPv4Echo, dport: 9}
	reply := pk{src: vm4, dst: peer4, proto: packet.ProtoICMPv4, sport: packet.ICMPv4EchoReply, dport: 9}
	tests := []struct {
		name  string
		steps []refStep
	}{
		{"tcp lifecycle", []refStep{
			{0, ToVM, in(syn), 0}, {0, FromVM, out(synack), 0}, {0, ToVM, in(ack), 0},
			{1, ToVM, in(ack), 0}, {1, FromVM, out(ack), 0}, {2, ToVM, in(ack), 0},
			{3, FromVM, out(finack), 0}, {3, ToVM, in(ack), 0}, {4, ToVM, in(finack), 0}, {4, FromVM, out(ack), 0},
			{5, ToVM, in(ack), 0}, {200, ToVM, in(ack), 0}, {200, ToVM, in(syn), 0}, {200, FromVM, out(synack), 0},
		}},
		{"tcp reset and reopen", []refStep{
			{0, ToVM, in(syn), 0}, {0, FromVM, out(synack), 0}, {0, ToVM, in(ack), 0}, {1, ToVM, in(ack), 0},
			{1, FromVM, out(rst), 0}, {2, ToVM, in(ack), 0}, {13, ToVM, in(ack), 0}, {14, ToVM, in(syn), 0},
		}},
		{"policy cuts the flow", []refStep{
			{0, ToVM, in(syn), 0}, {0, FromVM, out(synack), 0}, {0, ToVM, in(ack), 0}, {1, ToVM, in(ack), 0},
			{1, FromVM, out(ack), 1}, {2, ToVM, in(ack), 1}, {2, ToVM, in(ack), 0},
		}},
		{"udp and icmp expire", []refStep{
			{0, FromVM, udpOut, 0}, {1, FromVM, udpOut, 0}, {1, ToVM, udpIn, 0}, {100, ToVM, udpIn, 0}, {400, ToVM, udpIn, 0},
			{400, FromVM, udpOut, 0}, {401, FromVM, udpOut, 0},
			{0, ToVM, echo, 2}, {0, FromVM, reply, 2}, {1, FromVM, reply, 2}, {40, FromVM, reply, 2}, {41, ToVM, echo, 2},
		}},
	}
	ssh := openInbound(t, 1, 6, 22, 22)
	none := openInbound(t, 2, 17, 53, 53)
	icmp := mustCompile(t, CompileInput{Generation: 3, IPs: addrs(vm4, vm6), Groups: []model.SG{{ID: "sg", Rules: []model.Rule{
		cidrRule(model.Inbound, 1, 0, 0, "0.0.0.0/0")}}}})
	pols := []*Policy{ssh, none, icmp}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			full, cached := NewConntrack(16), NewConntrack(16)
			refs := map[string]Ref{}
			hits := 0
			for i, s := range tc.steps {
				now := s.at * sec
				f := s.p.build()
				want := full.Decide(f, s.dir, pols[s.pol], now)
				var l packet.Layers
				if !packet.Parse(f, &l) {
					t.Fatalf("step %d: frame does not parse", i)
				}
				var tcp packet.TCP
				var flags uint8
				if l.Proto == packet.ProtoTCP {
					tcp = packet.TCP(f[l.L4:l.L3End])
					flags = tcp.Flags()
				}
				k := string(f[packet.EthernetLen:]) // addresses, ports, flags: distinct per flow and direction
				k = k[:len(k)-len(f[l.L4:])] + string(f[l.L4:l.L4+4]) + string([]byte{byte(s.dir)})
				var got Verdict
				if r, ok := refs[k]; ok && cached.Usable(r, flags, now) {
					got = cached.Hit(r, tcp, s.dir, pols[s.pol], now)
					hits++
				} else {
					got, refs[k] = cached.DecideRef(f, s.dir, pols[s.pol], now)
				}
				if got != want {
					t.Fatalf("step %d (%+v): verdict %v with refs, %v with Decide", i, s, got, want)
				}
				if !reflect.DeepEqual(flowsOf(full, now), flowsOf(cached, now)) {
					t.Fatalf("step %d: tracked flows differ:\nDecide %+v\nrefs   %+v", i, flowsOf(full, now), flowsOf(cached, now))
				}
			}
			if hits == 0 {
				t.Fatal("no packet went through Hit")
			}
		})
	}
}

// flowsOf returns c's live flows, in a canonical order.
func flowsOf(c *Conntrack, now int64) map[Flow]bool {
	m := map[Flow]bool{}
	c.Flows(now, func(f Flow) bool { m[f] = true; return true })
	return m
}

// TestRefStale checks what makes a Ref unusable: an entry removed or
// moved (any of the zone), expiry, and a SYN on a closed connection.
func TestRefStale(t *testing.T) {
	pol := openInbound(t, 1, 17, 0, 65535)
	udp := func(sport uint16) []byte {
		return pk{src: peer4, dst: vm4, proto: packet.ProtoUDP, sport: sport, dport: 53}.build()
	}
	ct := NewConntrack(1024)
	_, r := ct.DecideRef(udp(1), ToVM, pol, 0)
	if !r.Valid() || !ct.Usable(r, 0, sec) {
		t.Fatal("fresh ref unusable")
	}
	if ct.Usable(r, 0, TimeoutUDP) {
		t.Error("ref usable once its entry expired")
	}
	if _, r2 := ct.DecideRef(udp(2), ToVM, pol, 0); !ct.Usable(r, 0, sec) || !ct.Usable(r2, 0, sec) {
		t.Error("a new entry made refs unusable")
	}
	// Another entry expires and Check removes it: entries may move.
	_, _ = ct.DecideRef(udp(3), ToVM, pol, 10*sec)
	ct.Check(pol, 10*sec+TimeoutUDP, 64)
	if ct.Usable(r, 0, 10*sec) {
		t.Error("ref usable after an entry was removed")
	}
	// Growth moves every entry.
	_, r = ct.DecideRef(udp(1), ToVM, pol, 40*sec)
	for i := range 40 {
		ct.DecideRef(udp(uint16(100+i)), ToVM, pol, 40*sec)
	}
	if ct.Usable(r, 0, 40*sec) {
		t.Error("ref usable after the table grew")
	}
	// A DropCut from Hit removes the entry.
	_, r = ct.DecideRef(udp(1), ToVM, pol, 41*sec)
	if v := ct.Hit(r, nil, ToVM, openInbound(t, 2, 6, 22, 22), 41*sec); v != DropCut {
		t.Fatalf("Hit under a policy without the flow: %v, want cut", v)
	}
	if ct.Usable(r, 0, 41*sec) {
		t.Error("ref usable after its flow was cut")
	}
	// A SYN on a closed connection reopens it: Decide's job.
	tcp := NewConntrack(16)
	ssh := openInbound(t, 1, 6, 22, 22)
	in := func(f uint8) []byte {
		return pk{src: peer4, dst: vm4, proto: 6, sport: 5555, dport: 22, flags: f}.build()
	}
	tcp.Decide(in(syn), ToVM, ssh, 0)
	tcp.Decide(pk{src: vm4, dst: peer4, proto: 6, sport: 22, dport: 5555, flags: synack}.build(), FromVM, ssh, 0)
	_, r = tcp.DecideRef(in(rst), ToVM, ssh, 0)
	if !tcp.Usable(r, ack, sec) || tcp.Usable(r, syn, sec) {
		t.Error("closed connection: ref must serve an ACK and not a SYN")
	}
}

// TestHitAllocs checks that Usable and Hit allocate nothing.
func TestHitAllocs(t *testing.T) {
	pol := openInbound(t, 1, 6, 22, 22)
	ct := NewConntrack(16)
	in := func(f uint8) []byte {
		return pk{src: peer4, dst: vm4, proto: 6, sport: 5555, dport: 22, flags: f}.build()
	}
	ct.Decide(in(syn), ToVM, pol, 0)
	ct.Decide(pk{src: vm4, dst: peer4, proto: 6, sport: 22, dport: 5555, flags: synack}.build(), FromVM, pol, 0)
	f := in(ack)
	_, r := ct.DecideRef(f, ToVM, pol, 0)
	tcp := packet.TCP(f[packet.EthernetLen+packet.IPv4MinLen:])
	if a := testing.AllocsPerRun(100, func() {
		if ct.Usable(r, ack, sec) {
			ct.Hit(r, tcp, ToVM, pol, sec)
		}
	}); a != 0 {
		t.Errorf("%.1f allocations per hit, want 0", a)
	}
}
