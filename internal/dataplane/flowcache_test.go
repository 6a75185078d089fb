package dataplane

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/butterfly-go/butterfly/internal/firewall"
	"github.com/butterfly-go/butterfly/internal/model"
)

// diffNIC is a vNIC of the differential test; ids change when it is
// deleted and added again (its MAC moves to another slot). A remote one
// is a VM on another host: its frames come from the underlay.
type diffNIC struct {
	base   model.NIC
	id     string
	gen    int
	up     bool
	remote bool
	v4     string
	v6     string
}

// diffFlow is a flow between two vNICs of the differential test, with
// the TCP sequence numbers of both sides.
type diffFlow struct {
	cli, srv     int
	proto        int // 6, 17, 1 (ICMP echo)
	v6           bool
	sport, dport uint16
	stage        int // TCP: 0 SYN, 1 SYN-ACK, 2 ACK, 3 data, 4 closed
	cseq, sseq   uint32
}

// diffRig is one engine of the differential test.
type diffRig struct {
	h     *harness
	ports map[string]*fakePort
}

// TestFlowCacheDifferential replays the same randomized traffic and
// configuration changes through two engines, one with the flow cache and
// one without, and requires the same frames delivered to every port
// (bytes and order), the same counters of every element, the same drop
// records and the same connection-tracking state.
func TestFlowCacheDifferential(t *testing.T) {
	for _, tc := range []struct {
		seed    uint64
		workers int
		steady  bool
	}{{1, 1, false}, {2, 1, false}, {3, 2, false}, {4, 1, false}, {5, 2, false}, {6, 1, false}, {7, 1, true}, {8, 2, true}} {
		t.Run(fmt.Sprintf("seed=%d/workers=%d/steady=%v", tc.seed, tc.workers, tc.steady), func(t *testing.T) {
			hits := runDifferential(t, tc.seed, tc.workers, tc.steady, 600)
			if hits == 0 {
				t.Fatal("the flow cache never hit: the test exercises nothing")
			}
		})
	}
}

// diffGroups returns the security groups of the differential test:
// "open" (everything), "web" (TCP 80 and ICMP from 10.0.0.0/24 and
// fd00::/64, UDP 53 from members of "friends", plus extra rules) and
// "friends" with members.
func diffGroups(webTCP bool, extra int, members []netip.Addr) []model.SG {
	web := model.SG{ID: "web"}
	if webTCP {
		web.Rules = append(web.Rules,
			model.Rule{Direction: model.Inbound, Protocol: 6, PortStart: 80, PortEnd: 80, CIDR: netip.MustParsePrefix("10.0.0.0/24")},
			model.Rule{Direction: model.Inbound, Protocol: 6, PortStart: 80, PortEnd: 80, CIDR: netip.MustParsePrefix("fd00::/64")})
	}
	web.Rules = append(web.Rules,
		model.Rule{Direction: model.Inbound, Protocol: 1, CIDR: netip.MustParsePrefix("10.0.0.0/24")},
		model.Rule{Direction: model.Inbound, Protocol: 58, CIDR: netip.MustParsePrefix("::/0")},
		udpRule(model.Inbound, 53, "", "friends"))
	for i := range extra {
		web.Rules = append(web.Rules, udpRule(model.Inbound, uint32(5000+i), "10.0.0.0/24", ""))
	}
	return []model.SG{openSG(), web, {ID: "friends", Members: members}}
}

// runDifferential runs the differential test for rounds rounds. A steady
// run changes no configuration and sends no stray frames: two flows
// between a and c, seconds apart, for longer than MACs live, so that only
// the refreshes of the MAC table keep them from ageing.
func runDifferential(t *testing.T, seed uint64, workers int, steady bool, rounds int) (hits uint64) {
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	rigs := [2]*diffRig{}
	for i := range rigs {
		h := newHarnessClock(t, Config{Workers: workers, NoFlowCache: i == 1}, true, false, now)
		rigs[i] = &diffRig{h: h, ports: map[string]*fakePort{}}
	}
	nics := []*diffNIC{
		{base: nicOf("a", mac(1), 5, "10.0.0.1", "fd00::1"), v4: "10.0.0.1", v6: "fd00::1"},
		{base: nicOf("b", mac(2), 5, "10.0.0.2", "fd00::2"), v4: "10.0.0.2", v6: "fd00::2"},
		{base: nicOf("c", mac(3), 5, "10.0.0.3", "fd00::3"), v4: "10.0.0.3", v6: "fd00::3"},
		{base: bypassed(nicOf("d", mac(4), 5, "10.0.0.4", "fd00::4")), v4: "10.0.0.4", v6: "fd00::4"},
		{base: nicOf("r", mac(9), 5), id: "remote", up: true, remote: true, v4: "10.0.0.9", v6: "fd00::9"},
	}
	nics[0].base.IPAntiSpoof = true
	nics[1].base.SecurityGroups = []string{"web"}
	nics[2].base.SecurityGroups = []string{"web", "open"}
	webTCP, extra := true, 0
	members := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.3")}
	setGroups := func() {
		for _, r := range rigs {
			if err := r.h.e.SetSecurityGroups(diffGroups(webTCP, extra, members)); err != nil {
				t.Fatal(err)
			}
		}
	}
	setGroups()
	addNIC := func(n *diffNIC) {
		n.gen++
		n.id = fmt.Sprintf("%s%d", n.base.ID, n.gen)
		m := n.base
		m.ID = n.id
		for _, r := range rigs {
			r.ports[n.id] = r.h.add(t, m)
		}
		n.up = true
	}
	delNIC := func(n *diffNIC) {
		for _, r := range rigs {
			if err := r.h.e.DeleteNIC(n.id); err != nil {
				t.Fatal(err)
			}
			delete(r.ports, n.id)
		}
		n.up = false
	}
	for _, n := range nics {
		if !n.remote {
			addNIC(n)
		}
	}
	local := nics[:len(nics)-1]

	var flows []*diffFlow
	newFlow := func() *diffFlow {
		cli := rng.IntN(len(nics))
		srv := (cli + 1 + rng.IntN(len(nics)-1)) % len(nics)
		f := &diffFlow{cli: cli, srv: srv, v6: rng.IntN(3) == 0,
			sport: uint16(1024 + rng.IntN(50000)), cseq: rng.Uint32(), sseq: rng.Uint32()}
		switch r := rng.IntN(10); {
		case r < 5:
			f.proto, f.dport = 6, []uint16{80, 80, 22}[rng.IntN(3)]
		case r < 8:
			f.proto, f.dport = 17, []uint16{53, 5000, 5001, 9999}[rng.IntN(4)]
		default:
			f.proto, f.dport = 1, 0
		}
		flows = append(flows, f)
		return f
	}
	// Hot flows between vNICs whose groups let them open, which carry
	// most of the traffic (so the cache holds entries when the MAC table
	// ages, moves or is refreshed), then random ones.
	flows = append(flows,
		&diffFlow{cli: 0, srv: 2, proto: 6, sport: 40000, dport: 80, cseq: 1000, sseq: 5000},
		&diffFlow{cli: 2, srv: 0, proto: 6, v6: true, sport: 40001, dport: 80, cseq: 7000, sseq: 9000},
		&diffFlow{cli: 0, srv: 2, proto: 17, sport: 40002, dport: 5000},
		&diffFlow{cli: 3, srv: 1, proto: 1, sport: 7},
		&diffFlow{cli: 3, srv: 0, proto: 6, sport: 40003, dport: 22, cseq: 1, sseq: 2},
		&diffFlow{cli: 0, srv: 4, proto: 17, sport: 40004, dport: 5000},
		&diffFlow{cli: 2, srv: 4, proto: 6, sport: 40005, dport: 443, cseq: 11, sseq: 12})
	for range 6 {
		newFlow()
	}

	for round := range rounds {
		// Configuration changes and time.
		r := rng.IntN(200)
		if steady {
			r = 200
		}
		switch {
		case r < 3:
			webTCP = !webTCP // cuts or allows the TCP flows to web
			setGroups()
		case r < 5:
			extra++ // a rule added
			setGroups()
		case r < 8:
			if len(members) > 1 { // member changes: no new snapshot
				members = members[:1]
			} else {
				members = append(members, netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("fd00::3"))
			}
			setGroups()
		case r < 9:
			n := local[rng.IntN(len(local))] // deleted and added again: its MAC moves
			if n.up {
				delNIC(n)
			}
			addNIC(n)
		case r < 10:
			if n := local[rng.IntN(len(local))]; n.up {
				delNIC(n)
			}
		case r < 13:
			// a's IPv6 address removed or restored (anti-spoofing on).
			if n := nics[0]; n.up {
				if len(n.base.IPs) == 2 {
					n.base.IPs = n.base.IPs[:1]
				} else {
					n.base.IPs = append(n.base.IPs, netip.MustParseAddr(n.v6))
				}
				m := n.base
				m.ID = n.id
				for _, r := range rigs {
					if err := r.h.e.UpdateNIC(m); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		for _, n := range local {
			if !n.up && !steady && rng.IntN(4) == 0 {
				addNIC(n)
			}
		}
		switch r := rng.IntN(100); {
		case steady:
			clock = clock.Add(time.Duration(1+rng.IntN(5)) * time.Second)
		case r < 2:
			clock = clock.Add(31 * time.Second) // UDP and ICMP flows expire
		case r < 4:
			clock = clock.Add(301 * time.Second) // MACs age out
		case r < 8:
			clock = clock.Add(1100 * time.Millisecond) // MAC refresh
		default:
			clock = clock.Add(time.Duration(rng.IntN(3000)) * time.Microsecond)
		}
		if !steady && rng.IntN(20) == 0 {
			newFlow()
		}
		// Frames, in runs from one vNIC: the engines see them in the
		// order they were made (a TCP endpoint acknowledges only what
		// its peer sent before).
		var run []frame
		runFrom := ""
		flush := func() {
			for _, r := range rigs {
				switch {
				case len(run) == 0:
				case runFrom == "remote":
					r.h.under.inject(run...)
				default:
					r.ports[runFrom].inject(run...)
				}
				r.h.step()
			}
			run = run[:0]
		}
		for range 1 + rng.IntN(12) {
			from, data := diffFrame(t, rng, nics, flows, steady)
			if !from.up {
				continue
			}
			if from.id != runFrom && len(run) > 0 {
				flush()
			}
			runFrom = from.id
			f := frame{data: data}
			if from.remote {
				// Mostly from one VTEP; sometimes the VM moved to another.
				vtep := remote
				if rng.IntN(20) == 0 {
					vtep = netip.MustParseAddr("192.0.2.3")
				}
				f = frame{data: vxlanFrame(5, data), peer: netip.AddrPortFrom(vtep, 4789)}
			}
			run = append(run, f)
		}
		flush()
		compareOutputs(t, round, rigs, nics)
		if t.Failed() {
			return 0
		}
	}
	compareState(t, rigs, nics)
	var misses uint64
	for _, w := range rigs[0].h.e.workers {
		hits += w.fc.hitsPub.Load()
		misses += w.fc.missesPub.Load()
	}
	t.Logf("flow cache: %d hits, %d misses", hits, misses)
	return hits
}

// diffFrame returns a frame of one of flows (or a stray one) and the
// vNIC that sends it.
func diffFrame(t *testing.T, rng *rand.Rand, nics []*diffNIC, flows []*diffFlow, steady bool) (*diffNIC, []byte) {
	f := flows[rng.IntN(len(flows))]
	if rng.IntN(3) != 0 {
		f = flows[rng.IntN(7)]
	}
	if steady {
		f = flows[[]int{0, 2, 5}[rng.IntN(3)]]
	}
	cli, srv := nics[f.cli], nics[f.srv]
	fromCli := rng.IntN(2) == 0
	if f.proto == 6 && f.stage < 3 {
		fromCli = f.stage != 1
	}
	from, to := cli, srv
	if !fromCli {
		from, to = srv, cli
	}
	dstMAC, srcMAC := to.base.MAC, from.base.MAC
	sip, dip := from.v4, to.v4
	if f.v6 {
		sip, dip = from.v6, to.v6
	}
	variant := rng.IntN(40)
	if steady {
		variant = -1
	}
	switch variant {
	case 5, 6:
		if from.base.Bypass {
			// A MAC of another vNIC from a vNIC without anti-spoofing:
			// the MAC moves in the switch's table.
			srcMAC = nics[rng.IntN(len(nics))].base.MAC
		}
	case 0:
		dstMAC = mac(0x77) // unknown: flooded
	case 1:
		srcMAC = mac(0x66) // spoofed MAC
	case 2:
		if f.v6 {
			sip = "fd00::99"
		} else {
			sip = "10.0.0.99" // spoofed address
		}
	case 3:
		return from, arp(t, from.base.MAC, from.v4, to.v4)
	case 4:
		dstMAC = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	}
	e := eth(dstMAC, srcMAC, layers.EthernetTypeIPv4)
	var ip gopacket.SerializableLayer
	proto := layers.IPProtocol(f.proto)
	if f.v6 {
		e.EthernetType = layers.EthernetTypeIPv6
		if f.proto == 1 {
			proto = layers.IPProtocolICMPv6
		}
		ip = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: net.ParseIP(sip), DstIP: net.ParseIP(dip)}
	} else {
		ip = &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: net.ParseIP(sip).To4(), DstIP: net.ParseIP(dip).To4()}
	}
	payload := gopacket.Payload(make([]byte, rng.IntN(200)))
	sport, dport := f.sport, f.dport
	if !fromCli {
		sport, dport = dport, sport
	}
	switch f.proto {
	case 17:
		return from, build(t, e, ip, &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}, payload)
	case 1:
		if f.v6 {
			typ := uint8(layers.ICMPv6TypeEchoRequest)
			if !fromCli {
				typ = layers.ICMPv6TypeEchoReply
			}
			ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, 0)}
			ic.SetNetworkLayerForChecksum(ip.(*layers.IPv6))
			return from, build(t, e, ip, ic,
				&layers.ICMPv6Echo{Identifier: f.sport, SeqNumber: uint16(rng.IntN(100))}, payload)
		}
		typ := uint8(layers.ICMPv4TypeEchoRequest)
		if !fromCli {
			typ = layers.ICMPv4TypeEchoReply
		}
		return from, build(t, e, ip, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, 0), Id: f.sport, Seq: uint16(rng.IntN(100))}, payload)
	}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Window: 65535}
	switch f.stage {
	case 0:
		tcp.SYN, tcp.Seq = true, f.cseq
		payload = nil
		f.stage, f.cseq = 1, f.cseq+1
	case 1:
		tcp.SYN, tcp.ACK, tcp.Seq, tcp.Ack = true, true, f.sseq, f.cseq
		payload = nil
		f.stage, f.sseq = 2, f.sseq+1
	case 2:
		tcp.ACK, tcp.Seq, tcp.Ack = true, f.cseq, f.sseq
		payload = nil
		f.stage = 3
	default:
		seq, ack := &f.cseq, f.sseq
		if !fromCli {
			seq, ack = &f.sseq, f.cseq
		}
		tcp.ACK, tcp.PSH, tcp.Seq, tcp.Ack = true, true, *seq, ack
		r := rng.IntN(60)
		if steady {
			r = -1
		}
		switch {
		case r == 0:
			tcp.FIN = true
			*seq++
		case r == 1:
			tcp.RST, tcp.PSH = true, false
			payload = nil
			f.stage = 4
		case r == 2:
			tcp.Seq += 1 << 30 // out of window
		case r == 3:
			// a new connection on the same ports
			f.stage, f.cseq, f.sseq = 0, rng.Uint32(), rng.Uint32()
		}
		*seq += uint32(len(payload))
		if f.stage == 4 && rng.IntN(3) == 0 {
			f.stage, f.cseq, f.sseq = 0, rng.Uint32(), rng.Uint32()
		}
	}
	return from, build(t, e, ip, tcp, payload)
}

// compareOutputs requires the same frames, in the same order, on every
// port of both rigs.
func compareOutputs(t *testing.T, round int, rigs [2]*diffRig, nics []*diffNIC) {
	t.Helper()
	check := func(what string, a, b []frame) {
		if len(a) != len(b) {
			t.Errorf("round %d: %s: %d frames with the flow cache, %d without", round, what, len(a), len(b))
			return
		}
		for i := range a {
			if !bytes.Equal(a[i].data, b[i].data) || a[i].peer != b[i].peer {
				t.Errorf("round %d: %s: frame %d differs", round, what, i)
				return
			}
		}
	}
	for _, n := range nics {
		if n.up && !n.remote {
			check(n.id, rigs[0].ports[n.id].take(), rigs[1].ports[n.id].take())
		}
	}
	check("underlay", rigs[0].h.under.take(), rigs[1].h.under.take())
}

// compareState requires the same counters of every element, the same
// drop records and the same tracked connections in both rigs.
func compareState(t *testing.T, rigs [2]*diffRig, nics []*diffNIC) {
	t.Helper()
	type elTotals struct {
		packets, bytes uint64
		drops          [numDrops]uint64
	}
	totals := func(el *element) elTotals {
		var x elTotals
		x.packets, x.bytes, x.drops = el.totals()
		return x
	}
	for _, n := range nics {
		if !n.up || n.remote {
			continue
		}
		var st [2][]elTotals
		var cts, drops [2]any
		for i, r := range rigs {
			e := r.h.e
			e.mu.Lock()
			p := e.nics[n.id].p
			e.mu.Unlock()
			for _, el := range []*element{p.rx, p.anti, p.fw, p.trace, p.tx} {
				st[i] = append(st[i], totals(el))
			}
			c, err := e.Counters(n.id)
			if err != nil {
				t.Fatal(err)
			}
			st[i] = append(st[i], elTotals{packets: c.RxPackets, bytes: c.TxPackets})
			d, err := e.Drops(n.id, 1000)
			if err != nil {
				t.Fatal(err)
			}
			drops[i] = d
			data, err := e.ExportNIC(n.id)
			if err != nil {
				t.Fatal(err)
			}
			recs, err := firewall.ParseExport(data)
			if err != nil {
				t.Fatal(err)
			}
			var ss []string
			for _, r := range recs {
				ss = append(ss, r.String())
			}
			slices.Sort(ss)
			cts[i] = ss
		}
		if !reflect.DeepEqual(st[0], st[1]) {
			t.Errorf("%s: element counters differ:\nwith cache    %+v\nwithout cache %+v", n.id, st[0], st[1])
		}
		if !reflect.DeepEqual(drops[0], drops[1]) {
			t.Errorf("%s: drop records differ:\nwith cache    %v\nwithout cache %v", n.id, drops[0], drops[1])
		}
		if !reflect.DeepEqual(cts[0], cts[1]) {
			t.Errorf("%s: tracked connections differ:\nwith cache    %v\nwithout cache %v", n.id, cts[0], cts[1])
		}
	}
	for _, vni := range []uint32{5} {
		var sw [2]elTotals
		for i, r := range rigs {
			e := r.h.e
			e.mu.Lock()
			sw[i] = totals(e.vnis[vni].sw)
			e.mu.Unlock()
		}
		if sw[0] != sw[1] {
			t.Errorf("VNI %d switch counters differ: with cache %+v, without %+v", vni, sw[0], sw[1])
		}
	}
	for _, name := range []string{"underlay-rx", "vxlan-decap", "vxlan-encap", "underlay-tx"} {
		var x [2]elTotals
		for i, r := range rigs {
			e := r.h.e
			el := map[string]*element{"underlay-rx": e.urx, "vxlan-decap": e.decap, "vxlan-encap": e.encap, "underlay-tx": e.utx}[name]
			x[i] = totals(el)
		}
		if x[0] != x[1] {
			t.Errorf("%s counters differ: with cache %+v, without %+v", name, x[0], x[1])
		}
	}
}

// TestFlowCacheHits checks that the frames of an established flow hit
// the cache (counted in the metrics), that misses stay bounded, that
// the hit path allocates nothing, and that an engine without the cache
// exports no such counters.
func TestFlowCacheHits(t *testing.T) {
	for _, off := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoFlowCache=%v", off), func(t *testing.T) {
			h := newHarness(t, Config{NoFlowCache: off}, true)
			a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
			b := h.add(t, nicOf("b", mac(2), 5, "10.0.0.2"))
			// b opens the flow; a's frames are its replies.
			b.inject(frame{data: udp4(t, mac(1), mac(2), "10.0.0.2", "10.0.0.1", 10, false)})
			h.step()
			if got := len(a.take()); got != 1 {
				t.Fatalf("a got %d frames, want 1", got)
			}
			reply := udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 64, false)
			for range 100 {
				a.inject(frame{data: reply})
				h.step()
			}
			if got := len(b.take()); got != 100 {
				t.Fatalf("b got %d frames, want 100", got)
			}
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(h.e.Collector())
			got, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			hits, okH := metricValue(t, got, "butterfly_worker_flow_cache_hits_total", map[string]string{"worker": "0"})
			misses, okM := metricValue(t, got, "butterfly_worker_flow_cache_misses_total", map[string]string{"worker": "0"})
			if off {
				if okH || okM {
					t.Fatalf("flow cache counters exported without the cache: hits %v, misses %v", hits, misses)
				}
				return
			}
			// b's first frame and a's first reply miss and are not
			// cached (each taught the MAC table its sender: a change),
			// a's second reply misses and is cached; every later reply
			// hits.
			if hits < 98 || misses > 3 {
				t.Fatalf("%v hits and %v misses for 101 frames, want >= 98 hits and <= 3 misses", hits, misses)
			}

			b.count = true
			a.replay = replayBatch(frame{data: reply}, batchSize)
			w := h.e.workers[0]
			w.iterate()
			before, sent := w.fc.hitsPub.Load(), b.written.Load()
			if allocs := testing.AllocsPerRun(50, func() { w.iterate() }); allocs != 0 {
				t.Errorf("%.1f allocations per batch of hits, want 0", allocs)
			}
			if got := w.fc.hitsPub.Load() - before; got != 51*batchSize {
				t.Errorf("%d hits over 51 batches, want %d", got, 51*batchSize)
			}
			if got := b.written.Load() - sent; got != 51*batchSize {
				t.Errorf("b got %d frames over 51 batches, want %d", got, 51*batchSize)
			}
		})
	}
}

// TestFlowCacheMemo checks the memo of a vNIC that bypasses filtering:
// once one of its frames hit, frames with the same MACs that the cache
// does not look up by their flow (TCP SYNs) hit too, if the receiver
// does not filter them, and never if it does: its firewall still decides
// each of them.
func TestFlowCacheMemo(t *testing.T) {
	for _, tc := range []struct {
		name     string
		filtered bool
	}{{"receiver bypasses", false}, {"receiver filters", true}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{}, true)
			web := model.SG{ID: "web", Rules: []model.Rule{
				udpRule(model.Inbound, 2000, "10.0.0.0/24", ""),
				{Direction: model.Inbound, Protocol: 6, PortStart: 80, PortEnd: 80, CIDR: netip.MustParsePrefix("10.0.0.0/24")},
			}}
			if err := h.e.SetSecurityGroups([]model.SG{openSG(), web}); err != nil {
				t.Fatal(err)
			}
			a := h.add(t, bypassed(nicOf("a", mac(1), 5, "10.0.0.1")))
			bn := bypassed(nicOf("b", mac(2), 5, "10.0.0.2"))
			if tc.filtered {
				bn = nicOf("b", mac(2), 5, "10.0.0.2")
				bn.SecurityGroups = []string{"web"}
			}
			b := h.add(t, bn)
			// b's broadcast teaches the switch its MAC.
			b.inject(frame{data: arp(t, mac(2), "10.0.0.2", "10.0.0.1")})
			h.step()
			a.take()
			fc := h.e.workers[0].fc
			for range 100 {
				a.inject(frame{data: udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", 64, false)})
				h.step()
			}
			if got := len(b.take()); got != 100 {
				t.Fatalf("b got %d UDP frames, want 100", got)
			}
			before := fc.hitsPub.Load()
			if before < 95 {
				t.Fatalf("%d hits for 100 UDP frames, want >= 95", before)
			}
			// SYNs to ports 80 (allowed by web) and 81 (not), each of
			// a new connection.
			for i := range 100 {
				syn := build(t, eth(mac(2), mac(1), layers.EthernetTypeIPv4),
					&layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP,
						SrcIP: net.ParseIP("10.0.0.1").To4(), DstIP: net.ParseIP("10.0.0.2").To4()},
					&layers.TCP{SrcPort: layers.TCPPort(3000 + i), DstPort: layers.TCPPort(80 + i%2), SYN: true, Seq: 1, Window: 65535})
				a.inject(frame{data: syn})
				h.step()
			}
			wantFrames, wantHits := 100, uint64(100)
			if tc.filtered {
				wantFrames, wantHits = 50, 0
			}
			if got := len(b.take()); got != wantFrames {
				t.Errorf("b got %d SYNs, want %d", got, wantFrames)
			}
			if got := fc.hitsPub.Load() - before; got != wantHits {
				t.Errorf("%d hits for 100 SYNs, want %d", got, wantHits)
			}
		})
	}
}
