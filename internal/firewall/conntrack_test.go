package firewall

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/packet"
)

const (
	vm4   = "10.0.0.1"
	peer4 = "10.0.0.2"
	vm6   = "2001:db8::1"
	peer6 = "2001:db8::2"
)

const (
	syn    = packet.TCPFlagSYN
	synack = packet.TCPFlagSYN | packet.TCPFlagACK
	ack    = packet.TCPFlagACK
	finack = packet.TCPFlagFIN | packet.TCPFlagACK
	rst    = packet.TCPFlagRST
)

// step is one packet of a scenario and its expected verdict.
type step struct {
	at   int64 // seconds since the start
	dir  Direction
	p    pk
	want Verdict
}

// runSteps runs a scenario; before each packet, Explain must predict
// Decide's verdict and change nothing.
func runSteps(t *testing.T, ct *Conntrack, pol *Policy, steps []step) {
	t.Helper()
	for i, s := range steps {
		frame := s.p.build()
		x := explainReadOnly(t, ct, frame, s.dir, pol, s.at*sec)
		got := ct.Decide(frame, s.dir, pol, s.at*sec)
		if got != s.want {
			t.Fatalf("step %d (t=%ds %v %+v): got %v, want %v", i, s.at, s.dir, s.p, got, s.want)
		}
		if x.Verdict != got {
			t.Fatalf("step %d (t=%ds %v %+v): Explain said %v (%+v), Decide %v", i, s.at, s.dir, s.p, x.Verdict, x, got)
		}
	}
}

// explainReadOnly calls Explain and fails if it changed the table.
func explainReadOnly(t testing.TB, ct *Conntrack, frame []byte, dir Direction, pol *Policy, now int64) Explanation {
	t.Helper()
	slots, count, cursor, check := slices.Clone(ct.slots), ct.count, ct.cursor, ct.checkCursor
	x := ct.Explain(frame, dir, pol, now)
	if !slices.Equal(slots, ct.slots) || count != ct.count || cursor != ct.cursor || check != ct.checkCursor {
		t.Fatalf("Explain changed the table")
	}
	return x
}

// defaultPolicy has no rule: default egress only.
func defaultPolicy(t *testing.T) *Policy {
	return mustCompile(t, CompileInput{Generation: 1, IPs: addrs(vm4, vm6)})
}

func openInbound(t *testing.T, gen uint64, proto int32, lo, hi uint32) *Policy {
	return mustCompile(t, CompileInput{Generation: gen, IPs: addrs(vm4, vm6), Groups: []model.SG{{ID: "sg", Rules: []model.Rule{
		cidrRule(model.Inbound, proto, lo, hi, "0.0.0.0/0"), cidrRule(model.Inbound, proto, lo, hi, "::/0")}}}})
}

func tcpOut(src, dst string, flags uint8) pk {
	return pk{src: src, dst: dst, proto: packet.ProtoTCP, sport: 40000, dport: 80, flags: flags}
}

func tcpIn(src, dst string, flags uint8) pk {
	return pk{src: src, dst: dst, proto: packet.ProtoTCP, sport: 80, dport: 40000, flags: flags}
}

func TestTCPLifecycle(t *testing.T) {
	for _, fam := range []struct{ vm, peer string }{{vm4, peer4}, {vm6, peer6}} {
		t.Run(fam.vm, func(t *testing.T) {
			ct := NewConntrack(16)
			pol := defaultPolicy(t)
			vm, peer := fam.vm, fam.peer
			runSteps(t, ct, pol, []step{
				{0, ToVM, tcpIn(peer, vm, syn), DropNoRule},            // nobody may open towards the VM
				{0, ToVM, tcpIn(peer, vm, ack), DropInvalid},           // mid-stream segment, no flow
				{0, FromVM, tcpOut(vm, peer, ack), DropInvalid},        // only a SYN opens
				{0, FromVM, tcpOut(vm, peer, syn), Accept},             // default egress
				{1, FromVM, tcpOut(vm, peer, syn), Accept},             // retransmission
				{1, FromVM, tcpOut(vm, peer, ack), DropInvalid},        // ACK before SYN-ACK
				{2, ToVM, tcpIn(peer, vm, synack), Accept},             // reply without a rule
				{2, FromVM, tcpOut(vm, peer, ack), Accept},             // established
				{3, ToVM, tcpOut(peer, vm, syn), DropNoRule},           // other flow (ports swapped)
				{4, FromVM, tcpIn(peer, vm, ack), DropInvalid},         // the peer's tuple coming from the VM: spoofed
				{4 + 5*86400 - 10, ToVM, tcpIn(peer, vm, ack), Accept}, // ESTABLISHED lasts 5 days
				{4 + 5*86400 - 5, FromVM, tcpOut(vm, peer, finack), Accept},
				{4 + 5*86400 - 4, ToVM, tcpIn(peer, vm, ack), Accept},
				{4 + 5*86400 - 3, ToVM, tcpIn(peer, vm, finack), Accept},
				{4 + 5*86400 - 2, FromVM, tcpOut(vm, peer, ack), Accept},
			})
			var k key
			canonical(&flowKey{fam: famOf(vm), proto: 6, src: addrOf(netip.MustParseAddr(vm)),
				dst: addrOf(netip.MustParseAddr(peer)), sport: 40000, dport: 80}, &k)
			i, _ := ct.find(&k, ct.hash(&k))
			if i < 0 || ct.slots[i].state != TCPTimeWait {
				t.Fatalf("after the close handshake: slot %d state %v, want TIME_WAIT", i, ct.slots[i].state)
			}
			end := int64(4 + 5*86400 - 2)
			runSteps(t, ct, pol, []step{
				{end + 119, ToVM, tcpIn(peer, vm, ack), Accept},               // TIME_WAIT 120 s
				{end + 119 + 121, ToVM, tcpIn(peer, vm, ack), DropInvalid},    // expired
				{end + 300, FromVM, tcpOut(vm, peer, syn), Accept},            // new connection
				{end + 300 + 121, ToVM, tcpIn(peer, vm, synack), DropInvalid}, // SYN_SENT 120 s
			})
		})
	}
}

func famOf(s string) int {
	if netip.MustParseAddr(s).Is4() {
		return fam4
	}
	return fam6
}

func TestTCPResetAndReopen(t *testing.T) {
	ct := NewConntrack(16)
	pol := openInbound(t, 1, 6, 22, 22)
	in := func(f uint8) pk { return pk{src: peer4, dst: vm4, proto: 6, sport: 5555, dport: 22, flags: f} }
	out := func(f uint8) pk { return pk{src: vm4, dst: peer4, proto: 6, sport: 22, dport: 5555, flags: f} }
	runSteps(t, ct, pol, []step{
		{0, ToVM, pk{src: peer4, dst: vm4, proto: 6, sport: 5555, dport: 23, flags: syn}, DropNoRule},
		{0, ToVM, in(syn), Accept},
		{0, FromVM, out(synack), Accept},
		{0, ToVM, in(ack), Accept},
		{1, FromVM, out(rst), Accept}, // CLOSE, 10 s
		{2, ToVM, in(ack), Accept},
		{13, ToVM, in(ack), DropInvalid},
		{14, ToVM, in(syn), Accept}, // reopened
	})
}

func TestUDPTimeouts(t *testing.T) {
	ct := NewConntrack(16)
	pol := defaultPolicy(t)
	out := pk{src: vm4, dst: peer4, proto: 17, sport: 5000, dport: 53}
	in := pk{src: peer4, dst: vm4, proto: 17, sport: 53, dport: 5000}
	runSteps(t, ct, pol, []step{
		{0, ToVM, in, DropNoRule},
		{0, FromVM, out, Accept},
		{29, ToVM, in, Accept}, // unreplied: 30 s; now assured: 180 s
		{29 + 179, FromVM, out, Accept},
		{29 + 179 + 179, ToVM, in, Accept},
		{29 + 179 + 179 + 181, ToVM, in, DropNoRule}, // expired
	})
	ct = NewConntrack(16)
	runSteps(t, ct, pol, []step{
		{0, FromVM, out, Accept},
		{31, ToVM, in, DropNoRule}, // unreplied flow expired after 30 s
	})
}

func TestICMPEcho(t *testing.T) {
	for _, c := range []struct {
		vm, peer         string
		proto, req, resp uint8
	}{{vm4, peer4, 1, packet.ICMPv4Echo, packet.ICMPv4EchoReply}, {vm6, peer6, 58, packet.ICMPv6EchoRequest, packet.ICMPv6EchoReply}} {
		ct := NewConntrack(16)
		pol := defaultPolicy(t)
		echo := func(src, dst string, typ uint8, id uint16) pk {
			return pk{src: src, dst: dst, proto: c.proto, sport: uint16(typ), dport: id}
		}
		runSteps(t, ct, pol, []step{
			{0, ToVM, echo(c.peer, c.vm, c.req, 7), DropNoRule},
			{0, FromVM, echo(c.vm, c.peer, c.req, 7), Accept},
			{1, ToVM, echo(c.peer, c.vm, c.resp, 7), Accept},
			{1, ToVM, echo(c.peer, c.vm, c.resp, 8), DropNoRule},  // another identifier
			{1, ToVM, echo(c.peer, c.vm, c.req, 7), DropNoRule},   // a request the other way: not a reply
			{32, ToVM, echo(c.peer, c.vm, c.resp, 7), DropNoRule}, // 30 s
		})
	}
}

func TestOtherProtocol(t *testing.T) {
	ct := NewConntrack(16)
	pol := defaultPolicy(t)
	runSteps(t, ct, pol, []step{
		{0, FromVM, pk{src: vm4, dst: peer4, proto: 47}, Accept},
		{599, ToVM, pk{src: peer4, dst: vm4, proto: 47}, Accept},
		{599, ToVM, pk{src: "10.0.0.3", dst: vm4, proto: 47}, DropNoRule},
		{599 + 601, ToVM, pk{src: peer4, dst: vm4, proto: 47}, DropNoRule},
	})
}

func TestDefaultEgress(t *testing.T) {
	ct := NewConntrack(16)
	pol := defaultPolicy(t)
	runSteps(t, ct, pol, []step{
		{0, FromVM, pk{src: "10.0.0.9", dst: peer4, proto: 17, sport: 1, dport: 2}, DropNoRule}, // spoofed
		{0, FromVM, pk{src: "0.0.0.0", dst: "255.255.255.255", proto: 17, sport: 68, dport: 67}, Accept},
		{0, FromVM, pk{src: "0.0.0.0", dst: "255.255.255.255", proto: 17, sport: 68, dport: 68}, DropNoRule},
		{0, ToVM, pk{src: "10.0.0.254", dst: vm4, proto: 17, sport: 67, dport: 68}, DropNoRule}, // needs a rule
	})
	// With an OUTBOUND rule only the rules decide egress, by destination.
	out := mustCompile(t, CompileInput{Generation: 1, IPs: addrs(vm4), Groups: []model.SG{{ID: "sg", Rules: []model.Rule{
		cidrRule(model.Outbound, 6, 443, 443, "192.0.2.0/24")}}}})
	ct = NewConntrack(16)
	runSteps(t, ct, out, []step{
		{0, FromVM, pk{src: vm4, dst: peer4, proto: 6, sport: 1000, dport: 443, flags: syn}, DropNoRule},
		{0, FromVM, pk{src: vm4, dst: "192.0.2.7", proto: 6, sport: 1000, dport: 80, flags: syn}, DropNoRule},
		{0, FromVM, pk{src: vm4, dst: "192.0.2.7", proto: 6, sport: 1000, dport: 443, flags: syn}, Accept},
		{0, ToVM, pk{src: "192.0.2.7", dst: vm4, proto: 6, sport: 443, dport: 1000, flags: synack}, Accept},
	})
}

func TestNonIPAndMalformed(t *testing.T) {
	ct := NewConntrack(16)
	pol := defaultPolicy(t)
	arp := make([]byte, 42)
	packet.Ethernet(arp).SetType(0x0806)
	if v := ct.Decide(arp, ToVM, pol, 0); v != AcceptStateless {
		t.Errorf("ARP: %v", v)
	}
	if v := ct.Decide(arp[:10], ToVM, pol, 0); v != DropInvalid {
		t.Errorf("runt: %v", v)
	}
	f := tcpOut(vm4, peer4, syn).build()
	if v := ct.Decide(f[:len(f)-10], FromVM, pol, 0); v != DropInvalid {
		t.Errorf("truncated TCP: %v", v)
	}
}

func TestIPv6NeighbourDiscovery(t *testing.T) {
	ct := NewConntrack(16)
	pol := defaultPolicy(t)
	icmp6 := func(src, dst string, typ, hop uint8) pk {
		return pk{src: src, dst: dst, proto: 58, sport: uint16(typ), hop: hop, payload: make([]byte, 16)}
	}
	runSteps(t, ct, pol, []step{
		{0, FromVM, icmp6("fe80::1", "ff02::1:ff00:2", packet.ICMPv6NeighborSolicit, 255), AcceptStateless},
		{0, FromVM, icmp6("::", "ff02::1:ff00:1", packet.ICMPv6NeighborSolicit, 255), AcceptStateless}, // DAD
		{0, FromVM, icmp6("fe80::1", "ff02::2", packet.ICMPv6RouterSolicit, 255), AcceptStateless},
		{0, FromVM, icmp6("fe80::1", "ff02::16", packet.ICMPv6MLDv2Report, 1), AcceptStateless},
		{0, ToVM, icmp6("fe80::2", "fe80::1", packet.ICMPv6NeighborAdvert, 255), AcceptStateless},
		{0, ToVM, icmp6("fe80::2", "ff02::1", packet.ICMPv6RouterAdvert, 255), AcceptStateless},
		{0, ToVM, icmp6(peer6, vm6, packet.ICMPv6NeighborSolicit, 255), AcceptStateless},
		{0, ToVM, icmp6(peer6, vm6, packet.ICMPv6NeighborSolicit, 64), DropNoRule},     // not link-local scope
		{0, ToVM, icmp6(peer6, "ff02::1", packet.ICMPv6RouterAdvert, 255), DropNoRule}, // RA from a global address
		{0, FromVM, icmp6("2001:db8::99", "ff02::1", packet.ICMPv6NeighborAdvert, 255), DropNoRule},
		{0, FromVM, icmp6("fe80::1", "ff02::1", packet.ICMPv6RouterAdvert, 255), DropNoRule}, // VM is no router
	})
	if ct.Len() != 0 {
		t.Errorf("ND created %d entries", ct.Len())
	}
}

func TestTableFull(t *testing.T) {
	ct := NewConntrack(2)
	pol := defaultPolicy(t)
	udp := func(sport uint16) pk { return pk{src: vm4, dst: peer4, proto: 17, sport: sport, dport: 53} }
	runSteps(t, ct, pol, []step{
		{0, FromVM, udp(1), Accept},
		{0, FromVM, udp(2), Accept},
		{1, FromVM, udp(3), DropTableFull},
		{1, FromVM, udp(1), Accept}, // tracked flows are unaffected
		{1, ToVM, pk{src: peer4, dst: vm4, proto: 17, sport: 53, dport: 2}, Accept},
		{1, FromVM, udp(4), DropTableFull},
	})
	// Once flow 1 expires (30 s unreplied) a new flow fits; flow 2 (replied,
	// 180 s) stays.
	runSteps(t, ct, pol, []step{
		{40, FromVM, udp(5), Accept},
		{41, ToVM, pk{src: peer4, dst: vm4, proto: 17, sport: 53, dport: 2}, Accept},
		{41, FromVM, udp(6), DropTableFull},
	})
}

func TestGenerationCut(t *testing.T) {
	ct := NewConntrack(16)
	ssh := openInbound(t, 1, 6, 22, 22)
	in := func(f uint8) pk { return pk{src: peer4, dst: vm4, proto: 6, sport: 5555, dport: 22, flags: f} }
	out := func(f uint8) pk { return pk{src: vm4, dst: peer4, proto: 6, sport: 22, dport: 5555, flags: f} }
	runSteps(t, ct, ssh, []step{{0, ToVM, in(syn), Accept}, {0, FromVM, out(synack), Accept}, {0, ToVM, in(ack), Accept}})
	// An unrelated change (one more rule) leaves the flow alone.
	more := mustCompile(t, CompileInput{Generation: 2, IPs: addrs(vm4), Groups: []model.SG{{ID: "sg", Rules: []model.Rule{
		cidrRule(model.Inbound, 6, 22, 22, "0.0.0.0/0"), cidrRule(model.Inbound, 17, 53, 53, "0.0.0.0/0")}}}})
	runSteps(t, ct, more, []step{{1, FromVM, out(ack), Accept}, {1, ToVM, in(ack), Accept}})
	// Removing the rule cuts the flow at its next packet, either way.
	none := openInbound(t, 3, 17, 53, 53)
	runSteps(t, ct, none, []step{{2, FromVM, out(ack), DropCut}, {2, ToVM, in(ack), DropInvalid}})
	if ct.Len() != 0 {
		t.Errorf("cut flow still tracked: %d entries", ct.Len())
	}

	// Member removal cuts flows admitted through the member.
	set := NewMemberSet(addrs(peer4))
	grp := mustCompile(t, CompileInput{Generation: 4, IPs: addrs(vm4), Members: map[string]*MemberSet{"peers": set},
		Groups: []model.SG{{ID: "sg", Rules: []model.Rule{{Direction: model.Inbound, Protocol: 6, PortStart: 22, PortEnd: 22, SG: "peers"}}}}})
	runSteps(t, ct, grp, []step{{3, ToVM, in(syn), Accept}, {3, FromVM, out(synack), Accept}})
	set.Set(addrs(peer4, "10.0.0.3")) // still a member
	runSteps(t, ct, grp, []step{{4, ToVM, in(ack), Accept}})
	set.Set(addrs("10.0.0.3"))
	runSteps(t, ct, grp, []step{{5, FromVM, out(ack), DropCut}, {5, ToVM, in(syn), DropNoRule}})
}

// icmpErr builds an ICMP error from src to dst quoting frame's IP packet.
func icmpErr(src, dst string, proto uint8, typ uint8, quoted []byte) pk {
	q := quoted[packet.EthernetLen:]
	return pk{src: src, dst: dst, proto: proto, sport: uint16(typ), payload: q}
}

func TestICMPErrors(t *testing.T) {
	for _, c := range []struct {
		vm, peer, router string
		proto, typ       uint8
	}{{vm4, peer4, "192.0.2.1", 1, packet.ICMPv4DstUnreachable}, {vm6, peer6, "2001:db8:ffff::1", 58, packet.ICMPv6PacketTooBig}} {
		ct := NewConntrack(16)
		pol := defaultPolicy(t)
		sent := pk{src: c.vm, dst: c.peer, proto: 17, sport: 4000, dport: 53, payload: make([]byte, 32)}
		other := pk{src: c.vm, dst: c.peer, proto: 17, sport: 4001, dport: 53}
		runSteps(t, ct, pol, []step{
			{0, ToVM, icmpErr(c.router, c.vm, c.proto, c.typ, sent.build()), DropNoRule}, // no flow yet
			{0, FromVM, sent, Accept},
			{1, ToVM, icmpErr(c.router, c.vm, c.proto, c.typ, sent.build()), AcceptStateless},
			{1, ToVM, icmpErr(c.peer, c.vm, c.proto, c.typ, sent.build()), AcceptStateless},
			{1, ToVM, icmpErr(c.router, c.vm, c.proto, c.typ, other.build()), DropNoRule}, // untracked flow
			{1, ToVM, icmpErr(c.router, c.vm, c.proto, c.typ, sent.build()[:packet.EthernetLen+10]), DropInvalid},
		})
		if ct.Len() != 1 {
			t.Errorf("%s: %d entries, want the UDP flow only", c.vm, ct.Len())
		}
	}
}

func TestFragments(t *testing.T) {
	for _, c := range []struct{ vm, peer string }{{vm4, peer4}, {vm6, peer6}} {
		ct := NewConntrack(16)
		pol := openInbound(t, 1, 17, 9000, 9000)
		first := pk{src: c.peer, dst: c.vm, proto: 17, sport: 1234, dport: 9000, mf: true, fragID: 77, payload: make([]byte, 1000)}
		mid := pk{src: c.peer, dst: c.vm, proto: 17, fragOff: 1008, mf: true, fragID: 77, payload: make([]byte, 1000)}
		last := pk{src: c.peer, dst: c.vm, proto: 17, fragOff: 2008, fragID: 77, payload: make([]byte, 100)}
		otherID := last
		otherID.fragID = 78
		denied := first
		denied.dport, denied.fragID = 9001, 79
		deniedRest := last
		deniedRest.fragID = 79
		runSteps(t, ct, pol, []step{
			{0, ToVM, mid, DropFragment}, // before the first fragment
			{0, ToVM, first, Accept},
			{0, ToVM, mid, AcceptStateless},
			{0, ToVM, last, AcceptStateless},
			{0, ToVM, otherID, DropFragment},
			{0, ToVM, denied, DropNoRule},
			{0, ToVM, deniedRest, DropFragment},
			{31, ToVM, last, DropFragment}, // the record expired
		})
	}
}

// TestSweep checks that expired entries are collected by later calls,
// and that every live entry survives the backward-shift deletions.
// TestCheckCollectsExpired: Check removes expired entries and keeps the
// others.
func TestCheckCollectsExpired(t *testing.T) {
	ct := NewConntrack(300)
	pol := defaultPolicy(t)
	for i := range 300 {
		p := pk{src: vm4, dst: peer4, proto: 17, sport: uint16(i), dport: 53}
		if v := ct.Decide(p.build(), FromVM, pol, int64(i%2)*20*sec); v != Accept {
			t.Fatalf("flow %d: %v", i, v)
		}
	}
	// At t=40 s the even flows (created at 0) have expired, the odd ones
	// (created at 20 s) live until 50 s.
	// A deletion re-examines its slot, so allow two passes.
	ct.Check(pol, 40*sec, 2*len(ct.slots))
	if ct.Len() != 150 {
		t.Fatalf("after Check: %d entries, want 150", ct.Len())
	}
	for i := 1; i < 300; i += 2 {
		p := pk{src: peer4, dst: vm4, proto: 17, sport: 53, dport: uint16(i)}
		if v := ct.Decide(p.build(), ToVM, pol, 41*sec); v != Accept {
			t.Fatalf("live flow %d lost: %v", i, v)
		}
	}
}

func TestFilterAllocs(t *testing.T) {
	ct := NewConntrack(1024)
	pol := openInbound(t, 1, 6, 0, 65535)
	syn1 := tcpOut(vm4, peer4, syn).build()
	reply := tcpIn(peer4, vm4, synack).build()
	miss := pk{src: "10.9.9.9", dst: vm4, proto: 17, sport: 1, dport: 2}.build()
	ct.Decide(syn1, FromVM, pol, 0)
	for name, f := range map[string]func(){
		"hit":  func() { ct.Decide(reply, ToVM, pol, sec) },
		"miss": func() { ct.Decide(miss, ToVM, pol, sec) },
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocs per packet", name, n)
		}
	}
}

func TestCheckAndFlows(t *testing.T) {
	ct := NewConntrack(64)
	ssh := mustCompile(t, CompileInput{Generation: 1, IPs: addrs(vm4), Groups: []model.SG{{ID: "sg", Rules: []model.Rule{
		cidrRule(model.Inbound, 6, 22, 22, "0.0.0.0/0"), cidrRule(model.Inbound, 17, 53, 53, "0.0.0.0/0")}}}})
	in := pk{src: peer4, dst: vm4, proto: 6, sport: 5555, dport: 22, flags: syn}
	dns := pk{src: peer4, dst: vm4, proto: 17, sport: 5555, dport: 53}
	out := pk{src: vm4, dst: peer4, proto: 17, sport: 7000, dport: 123}
	runSteps(t, ct, ssh, []step{{0, ToVM, in, Accept}, {0, ToVM, dns, Accept}, {0, FromVM, out, Accept},
		{0, ToVM, pk{src: peer4, dst: vm4, proto: 6, sport: 22, dport: 5555, flags: synack}, DropInvalid}})

	var got []Flow
	ct.Flows(sec, func(f Flow) bool { got = append(got, f); return true })
	if len(got) != 3 {
		t.Fatalf("Flows: %+v", got)
	}
	for _, f := range got {
		if f.Proto == 6 && (f.Dir != ToVM || f.Src != netip.MustParseAddr(peer4) || f.SrcPort != 5555 || f.DstPort != 22 || f.State != TCPSynSent) {
			t.Errorf("TCP flow reported as %+v", f)
		}
	}

	// The new policy drops the UDP 53 rule: Check cuts that flow only (the
	// egress flow follows the default egress, still allowed).
	sshOnly := openInbound(t, 2, 6, 22, 22)
	if n := ct.Check(sshOnly, sec, len(ct.slots)); n != 1 {
		t.Fatalf("Check cut %d flows, want 1", n)
	}
	// The cut flow stays, marked, until its next packet; Flows and
	// Export leave it out.
	got = got[:0]
	ct.Flows(sec, func(f Flow) bool { got = append(got, f); return true })
	if ct.Len() != 3 || len(got) != 2 {
		t.Fatalf("%d entries, %d flows listed after the cut; want 3 and 2", ct.Len(), len(got))
	}
	if recs, err := ParseExport(ct.Export(sec)); err != nil || len(recs) != 2 {
		t.Fatalf("export after the cut: %d records, %v; want 2", len(recs), err)
	}
	runSteps(t, ct, sshOnly, []step{
		{2, ToVM, pk{src: peer4, dst: vm4, proto: 6, sport: 5555, dport: 22, flags: syn}, Accept},
		{2, ToVM, pk{src: peer4, dst: vm4, proto: 17, sport: 123, dport: 7000}, Accept},
		{2, ToVM, dns, DropCut},
		{2, ToVM, dns, DropNoRule},
	})
	if ct.Len() != 2 {
		t.Fatalf("%d entries left, want 2", ct.Len())
	}
	// A cut flow stays cut even when the policy allows it again, and
	// lingers at most cutLinger.
	udpOnly := openInbound(t, 3, 17, 53, 53)
	if n := ct.Check(udpOnly, 3*sec, len(ct.slots)); n != 1 {
		t.Fatalf("Check cut %d flows, want 1 (the TCP 22 flow)", n)
	}
	runSteps(t, ct, ssh, []step{
		{3, ToVM, pk{src: peer4, dst: vm4, proto: 6, sport: 5555, dport: 22, flags: ack}, DropCut},
		{3, ToVM, pk{src: peer4, dst: vm4, proto: 6, sport: 5555, dport: 22, flags: ack}, DropInvalid},
		{3, ToVM, pk{src: peer4, dst: vm4, proto: 17, sport: 9, dport: 53}, Accept},
	})
	n := ct.Len()
	if cut := ct.Check(sshOnly, 4*sec, len(ct.slots)); cut != 1 {
		t.Fatalf("Check cut %d flows, want 1 (the UDP 53 flow)", cut)
	}
	ct.Check(sshOnly, 4*sec+cutLinger, len(ct.slots))
	if ct.Len() != n-1 {
		t.Fatalf("%d entries %v after the cut, want %d", ct.Len(), cutLinger, n-1)
	}
	// Check also collects expired entries.
	ct.Check(sshOnly, 1000*sec, 2*len(ct.slots))
	if ct.Len() != 0 {
		t.Errorf("%d entries after expiry", ct.Len())
	}
}

func TestSharedLimit(t *testing.T) {
	lim := NewLimit(3)
	a, b := NewConntrack(16), NewConntrack(16)
	a.SetLimit(lim)
	b.SetLimit(lim)
	pol := defaultPolicy(t)
	udp := func(sport uint16) pk { return pk{src: vm4, dst: peer4, proto: 17, sport: sport, dport: 53} }
	runSteps(t, a, pol, []step{{0, FromVM, udp(1), Accept}, {0, FromVM, udp(2), Accept}})
	runSteps(t, b, pol, []step{{0, FromVM, udp(1), Accept}, {0, FromVM, udp(2), DropTableFull}})
	if lim.Used() != 3 {
		t.Fatalf("limit used %d", lim.Used())
	}
	// Expiry in a returns entries to the limit.
	runSteps(t, a, pol, []step{{31, FromVM, udp(3), Accept}}) // udp(1) expired on the sweep or lookup
	a.Check(pol, 31*sec, len(a.slots))
	if a.Len() != 1 || lim.Used() != 2 {
		t.Fatalf("a holds %d, limit used %d", a.Len(), lim.Used())
	}
	a.Release()
	if lim.Used() != 1 || a.Len() != 0 {
		t.Fatalf("after Release: limit used %d, a holds %d", lim.Used(), a.Len())
	}
	runSteps(t, b, pol, []step{{31, FromVM, udp(2), Accept}})
}

// TestTCPStates follows the state after each segment; o is a segment from
// the originator, r from the responder.
func TestTCPStates(t *testing.T) {
	type seg struct {
		fromOrig bool
		flags    uint8
		ok       bool
		want     TCPState
	}
	o := func(f uint8, want TCPState) seg { return seg{true, f, true, want} }
	r := func(f uint8, want TCPState) seg { return seg{false, f, true, want} }
	bad := func(fromOrig bool, f uint8, want TCPState) seg { return seg{fromOrig, f, false, want} }
	for _, c := range []struct {
		name string
		segs []seg
	}{
		{"originator closes first", []seg{r(synack, TCPSynRecv), o(ack, TCPEstablished), o(finack, TCPFinWait),
			r(ack, TCPCloseWait), r(finack, TCPLastAck), o(ack, TCPTimeWait)}},
		{"responder closes first", []seg{r(synack, TCPSynRecv), o(ack, TCPEstablished), r(finack, TCPFinWait),
			o(ack, TCPCloseWait), o(finack, TCPLastAck), r(ack, TCPTimeWait)}},
		{"simultaneous close", []seg{r(synack, TCPSynRecv), o(ack, TCPEstablished), o(finack, TCPFinWait),
			r(finack, TCPLastAck), r(ack, TCPLastAck), o(ack, TCPTimeWait)}},
		{"simultaneous open", []seg{r(syn, TCPSynRecv), o(synack, TCPSynRecv), o(ack, TCPEstablished)}},
		{"refused", []seg{r(rst|ack, TCPClose)}},
		{"originator reset in SYN_SENT is invalid", []seg{bad(true, rst, TCPSynSent)}},
		{"SYN+FIN is invalid", []seg{r(synack, TCPSynRecv), o(ack, TCPEstablished), bad(true, syn|packet.TCPFlagFIN, TCPEstablished)}},
		{"new SYN inside a connection is invalid", []seg{r(synack, TCPSynRecv), o(ack, TCPEstablished), bad(true, syn, TCPEstablished),
			r(synack, TCPEstablished)}},
		{"reset closes", []seg{r(synack, TCPSynRecv), o(ack, TCPEstablished), r(rst, TCPClose)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := &entry{state: TCPSynSent}
			for i, s := range c.segs {
				if ok := tcpStep(e, s.fromOrig, s.flags); ok != s.ok || e.state != s.want {
					t.Fatalf("segment %d (orig %v flags %#x): ok %v state %v, want %v %v", i, s.fromOrig, s.flags, ok, e.state, s.ok, s.want)
				}
			}
		})
	}
}

// TestConcurrentMemberChange runs Filter while another goroutine changes
// a member set (run with -race).
func TestConcurrentMemberChange(t *testing.T) {
	set := NewMemberSet(addrs(peer4))
	pol := mustCompile(t, CompileInput{Generation: 1, IPs: addrs(vm4), Members: map[string]*MemberSet{"g": set},
		Groups: []model.SG{{ID: "sg", Rules: []model.Rule{{Direction: model.Inbound, Protocol: 17, PortStart: 53, PortEnd: 53, SG: "g"}}}}})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			if i%2 == 0 {
				set.Set(addrs(peer4, "10.0.0.3"))
			} else {
				set.Set(addrs("10.0.0.3"))
			}
		}
	}()
	ct := NewConntrack(16)
	f := pk{src: peer4, dst: vm4, proto: 17, sport: 1000, dport: 53}.build()
	for i := range 2000 {
		if v := ct.Decide(f, ToVM, pol, int64(i)); v != Accept && v != DropNoRule && v != DropCut {
			t.Fatalf("verdict %v", v)
		}
	}
	<-done
	set.Set(addrs(peer4))
	if v := ct.Decide(f, ToVM, pol, 3000); v != Accept {
		t.Fatalf("member restored: %v", v)
	}
	set.Set(nil)
	if v := ct.Decide(f, ToVM, pol, 3001); v != DropCut {
		t.Fatalf("member removed: %v", v)
	}
}

func TestICMPErrorAboutEcho(t *testing.T) {
	ct := NewConntrack(16)
	pol := defaultPolicy(t)
	ping := pk{src: vm4, dst: peer4, proto: 1, sport: packet.ICMPv4Echo, dport: 9}
	other := ping
	other.dport = 10
	runSteps(t, ct, pol, []step{
		{0, FromVM, ping, Accept},
		{0, ToVM, icmpErr("192.0.2.1", vm4, 1, packet.ICMPv4TimeExceeded, ping.build()), AcceptStateless},
		{0, ToVM, icmpErr("192.0.2.1", vm4, 1, packet.ICMPv4TimeExceeded, other.build()), DropNoRule},
		// An error quoting a packet the VM did not send (source is not the
		// error's destination).
		{0, ToVM, icmpErr("192.0.2.1", vm4, 1, packet.ICMPv4DstUnreachable,
			pk{src: peer4, dst: vm4, proto: 1, sport: packet.ICMPv4Echo, dport: 9}.build()), DropNoRule},
	})
}

// TestICMPv6ErrorQuotingFragment: the quoted packet carries a fragment
// header (the VM sent a fragmented datagram that was too big).
func TestICMPv6ErrorQuotingFragment(t *testing.T) {
	ct := NewConntrack(16)
	pol := defaultPolicy(t)
	first := pk{src: vm6, dst: peer6, proto: 17, sport: 4000, dport: 9000, mf: true, fragID: 5, payload: make([]byte, 64)}
	rest := pk{src: vm6, dst: peer6, proto: 17, fragOff: 72, fragID: 5, payload: make([]byte, 64)}
	runSteps(t, ct, pol, []step{
		{0, FromVM, first, Accept},
		{0, ToVM, icmpErr("2001:db8:ffff::1", vm6, 58, packet.ICMPv6PacketTooBig, first.build()), AcceptStateless},
		// A quote of a non-first fragment has no ports: policy only.
		{0, ToVM, icmpErr("2001:db8:ffff::1", vm6, 58, packet.ICMPv6PacketTooBig, rest.build()), DropNoRule},
	})
}

func TestEarlyDrop(t *testing.T) {
	inSyn := func(sport uint16) pk {
		return pk{src: peer4, dst: vm4, proto: packet.ProtoTCP, sport: sport, dport: 80, flags: syn}
	}
	inPk := func(sport uint16, flags uint8) pk {
		return pk{src: peer4, dst: vm4, proto: packet.ProtoTCP, sport: sport, dport: 80, flags: flags}
	}
	outPk := func(dport uint16, flags uint8) pk {
		return pk{src: vm4, dst: peer4, proto: packet.ProtoTCP, sport: 80, dport: dport, flags: flags}
	}
	inUDP := func(sport uint16) pk { return pk{src: peer4, dst: vm4, proto: 17, sport: sport, dport: 80} }
	outUDP := func(sport uint16) pk { return pk{src: vm4, dst: peer4, proto: 17, sport: sport, dport: 53} }
	established := func(sport uint16) []step {
		return []step{{0, ToVM, inSyn(sport), Accept}, {0, FromVM, outPk(sport, synack), Accept}, {0, ToVM, inPk(sport, ack), Accept}}
	}
	cat := func(ss ...[]step) []step {
		var all []step
		for _, s := range ss {
			all = append(all, s...)
		}
		return all
	}
	tests := []struct {
		name    string
		proto   int32
		steps   []step
		evicted uint64
	}{
		{"half-open SYNs from a peer make room for the VM's own flow", packet.ProtoTCP, []step{
			{0, ToVM, inSyn(1), Accept}, {0, ToVM, inSyn(2), Accept}, {0, ToVM, inSyn(3), Accept},
			{1, FromVM, outUDP(9), Accept},
		}, 1},
		{"half-open SYNs from a peer make room for a new peer connection", packet.ProtoTCP, []step{
			{0, ToVM, inSyn(1), Accept}, {0, ToVM, inSyn(2), Accept}, {0, ToVM, inSyn(3), Accept},
			{1, ToVM, inSyn(4), Accept},
			{1, ToVM, inSyn(5), Accept},
		}, 2},
		{"an evicted SYN's handshake is then invalid", packet.ProtoTCP, []step{
			{0, ToVM, inSyn(1), Accept}, {1, ToVM, inSyn(2), Accept}, {2, ToVM, inSyn(3), Accept},
			{3, FromVM, outUDP(9), Accept}, // evicts SYN 1, the closest to expiry
			{3, FromVM, outPk(1, synack), DropInvalid},
			{3, FromVM, outPk(2, synack), Accept},
		}, 1},
		{"the VM's own flows are never evicted", packet.ProtoTCP, []step{
			{0, FromVM, outUDP(1), Accept}, {0, FromVM, outUDP(2), Accept}, {0, FromVM, outUDP(3), Accept},
			{1, ToVM, inSyn(1), DropTableFull},
			{1, FromVM, outUDP(4), DropTableFull},
		}, 0},
		{"established connections from peers are never evicted", packet.ProtoTCP, cat(
			established(1), established(2), established(3),
			[]step{{1, ToVM, inSyn(4), DropTableFull}, {1, ToVM, inPk(1, ack), Accept}},
		), 0},
		{"answered UDP flows from peers are never evicted", 17, []step{
			{0, ToVM, inUDP(1), Accept}, {0, FromVM, pk{src: vm4, dst: peer4, proto: 17, sport: 80, dport: 1}, Accept},
			{0, ToVM, inUDP(2), Accept}, {0, FromVM, pk{src: vm4, dst: peer4, proto: 17, sport: 80, dport: 2}, Accept},
			{0, ToVM, inUDP(3), Accept}, {0, FromVM, pk{src: vm4, dst: peer4, proto: 17, sport: 80, dport: 3}, Accept},
			{1, ToVM, inUDP(4), DropTableFull},
		}, 0},
		{"unanswered UDP flows from peers are evicted", 17, []step{
			{0, ToVM, inUDP(1), Accept}, {0, ToVM, inUDP(2), Accept}, {0, ToVM, inUDP(3), Accept},
			{1, ToVM, inUDP(4), Accept},
		}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ct := NewConntrack(3)
			runSteps(t, ct, openInbound(t, 1, tc.proto, 80, 80), tc.steps)
			if got := ct.Evicted(); got != tc.evicted {
				t.Errorf("evicted %d flows, want %d", got, tc.evicted)
			}
			if ct.Len() > ct.Capacity() {
				t.Errorf("table holds %d entries, capacity %d", ct.Len(), ct.Capacity())
			}
		})
	}
}

func TestEarlyDropSharedLimit(t *testing.T) {
	// A zone at a shared Limit evicts its own peers' half-open flows; it
	// never takes room from another zone.
	l := NewLimit(3)
	a, b := NewConntrack(10), NewConntrack(10)
	a.SetLimit(l)
	b.SetLimit(l)
	pol := openInbound(t, 1, packet.ProtoTCP, 80, 80)
	inSyn := func(sport uint16) pk {
		return pk{src: peer4, dst: vm4, proto: packet.ProtoTCP, sport: sport, dport: 80, flags: syn}
	}
	runSteps(t, a, pol, []step{{0, ToVM, inSyn(1), Accept}, {0, ToVM, inSyn(2), Accept}})
	runSteps(t, b, pol, []step{{0, FromVM, pk{src: vm4, dst: peer4, proto: 17, sport: 1, dport: 53}, Accept}})
	runSteps(t, b, pol, []step{{1, FromVM, pk{src: vm4, dst: peer4, proto: 17, sport: 2, dport: 53}, DropTableFull}})
	runSteps(t, a, pol, []step{{1, ToVM, inSyn(3), Accept}})
	if a.Evicted() != 1 || b.Evicted() != 0 || l.Used() != 3 {
		t.Fatalf("evicted a=%d b=%d, limit used %d; want 1, 0, 3", a.Evicted(), b.Evicted(), l.Used())
	}
}
