package firewall

import (
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
)

// FuzzFilter feeds arbitrary frames, in both directions, to a zone with a
// small table, with or without a pickup window (bit 1 of dir): no panic,
// the table stays bounded, and a dropped frame leaves no entry.
func FuzzFilter(f *testing.F) {
	f.Add(tcpOut(vm4, peer4, syn).build(), uint8(1))
	f.Add(tcpIn(peer6, vm6, synack).build(), uint8(0))
	f.Add(pk{src: peer4, dst: vm4, proto: 17, sport: 1, dport: 53, mf: true, fragID: 3, payload: make([]byte, 16)}.build(), uint8(0))
	f.Add(pk{src: peer6, dst: vm6, proto: 17, fragOff: 8, fragID: 3, payload: make([]byte, 16)}.build(), uint8(0))
	f.Add(icmpErr("192.0.2.1", vm4, 1, 3, pk{src: vm4, dst: peer4, proto: 17, sport: 1, dport: 2}.build()).build(), uint8(0))
	f.Add(icmpErr("2001:db8::9", vm6, 58, 2, pk{src: vm6, dst: peer6, proto: 6, sport: 1, dport: 2}.build()).build(), uint8(0))
	f.Add(pk{src: "fe80::1", dst: "ff02::2", proto: 58, sport: 133, hop: 255}.build(), uint8(1))
	f.Add(tcpOut(vm4, peer4, ack).build(), uint8(3))
	f.Add(tcpIn(peer6, vm6, ack).build(), uint8(2))
	pol, err := Compile(CompileInput{Generation: 1, IPs: addrs(vm4, vm6), Groups: []model.SG{{ID: "sg", Rules: []model.Rule{
		cidrRule(model.Inbound, 17, 50, 60, "10.0.0.0/8"), cidrRule(model.Inbound, -1, 0, 0, "2001:db8::/64"),
		{Direction: model.Inbound, Protocol: 6, PortStart: 1, PortEnd: 1024, SG: "g"}}}},
		Members: map[string]*MemberSet{"g": NewMemberSet(addrs(peer4, peer6))}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, frame []byte, dir uint8) {
		ct := NewConntrack(4)
		if dir&2 != 0 {
			ct.SetPickup(2 * sec)
		}
		d := Direction(dir & 1)
		for i := range 3 { // repeat: hits, state changes
			before := ct.Len()
			v := ct.Decide(frame, d, pol, int64(i)*sec)
			if ct.Len() > ct.Capacity() {
				t.Fatalf("table holds %d > %d", ct.Len(), ct.Capacity())
			}
			if !v.Allowed() && ct.Len() > before {
				t.Fatalf("dropped frame (%v) created an entry", v)
			}
			d ^= 1
		}
	})
}
