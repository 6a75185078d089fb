package firewall

import (
	"encoding/binary"
	"runtime"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/packet"
)

// udpFlowFrame returns a UDP datagram of flow i between the VM (port i) and
// the peer (port 53), sent by the VM (out) or by the peer.
func udpFlowFrame(i int, out bool) []byte {
	p := pk{src: vm4, dst: peer4, proto: 17, sport: 1, dport: 53}
	if !out {
		p = pk{src: peer4, dst: vm4, proto: 17, sport: 53, dport: 1}
	}
	f := p.build()
	ip := packet.IPv4(f[packet.EthernetLen:])
	if out {
		binary.BigEndian.PutUint16(ip[20:], uint16(i))
	} else {
		binary.BigEndian.PutUint16(ip[22:], uint16(i))
	}
	return f
}

// TestIdleZoneIsSmall: what a vNIC's firewall holds of its own while
// idle, an empty zone of the default capacity (65,536 flows) and its
// policy over a group's shared RuleSet of 1,000 rules, stays far below 64
// KB.
func TestIdleZoneIsSmall(t *testing.T) {
	const budget = 64 << 10
	rs := mustCompileRules(t, []model.SG{{ID: "sg", Rules: randomRules(1000)}})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ct := NewConntrack(65536)
	pol, err := NewPolicy(1, addrs(vm4, vm6), rs)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	runtime.KeepAlive(ct)
	runtime.KeepAlive(pol)
	if n := after.TotalAlloc - before.TotalAlloc; n > budget {
		t.Errorf("an idle zone and its policy allocate %d bytes, want <= %d", n, budget)
	} else {
		t.Logf("an idle zone and its policy allocate %d bytes", n)
	}
}

// TestTableGrowsAndShrinks: a zone's table grows with its flows, keeps
// them all, shrinks back once most have expired, and still tracks the
// survivors.
func TestTableGrowsAndShrinks(t *testing.T) {
	const flows = 10000
	ct := NewConntrack(65536)
	pol := defaultPolicy(t)
	if len(ct.slots) != minSlots {
		t.Fatalf("empty zone: %d slots, want %d", len(ct.slots), minSlots)
	}
	// Flows 0..flows-1 open at 0 s and are answered at 10 s (assured:
	// live until 190 s); the first 50 are refreshed at 20 s (until 200 s).
	for i := range flows {
		if v := ct.Decide(udpFlowFrame(i, true), FromVM, pol, 0); v != Accept {
			t.Fatalf("flow %d: %v", i, v)
		}
	}
	if ct.Len() != flows || len(ct.slots) < 2*flows {
		t.Fatalf("after %d flows: %d entries in %d slots", flows, ct.Len(), len(ct.slots))
	}
	for i := range flows {
		if v := ct.Decide(udpFlowFrame(i, false), ToVM, pol, 10*sec); v != Accept {
			t.Fatalf("reply of flow %d after growth: %v", i, v)
		}
	}
	for i := range 50 {
		ct.Decide(udpFlowFrame(i, true), FromVM, pol, 20*sec)
	}
	for range 4 {
		ct.Check(pol, 195*sec, len(ct.slots))
	}
	if ct.Len() != 50 {
		t.Fatalf("after expiry: %d entries, want 50", ct.Len())
	}
	if len(ct.slots) > 4*64 {
		t.Errorf("after expiry: %d slots for %d entries, want the table shrunk", len(ct.slots), ct.Len())
	}
	for i := range 50 {
		if v := ct.Decide(udpFlowFrame(i, false), ToVM, pol, 196*sec); v != Accept {
			t.Errorf("reply of live flow %d after shrinking: %v", i, v)
		}
	}
	if v := ct.Decide(udpFlowFrame(60, false), ToVM, pol, 196*sec); v != DropNoRule {
		t.Errorf("reply of an expired flow: %v, want %v", v, DropNoRule)
	}
}

// TestTableGrowthKeepsLimits: growth does not change what capacity and a
// shared Limit allow.
func TestTableGrowthKeepsLimits(t *testing.T) {
	pol := defaultPolicy(t)
	for _, tc := range []struct {
		name     string
		capacity int
		limit    int
		want     int
	}{
		{"capacity", 100, 1000, 100},
		{"limit", 1000, 300, 300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ct := NewConntrack(tc.capacity)
			l := NewLimit(tc.limit)
			ct.SetLimit(l)
			accepted := 0
			for i := range 2 * tc.want {
				switch v := ct.Decide(udpFlowFrame(i, true), FromVM, pol, 0); v {
				case Accept:
					accepted++
				case DropTableFull:
				default:
					t.Fatalf("flow %d: %v", i, v)
				}
			}
			if accepted != tc.want || ct.Len() != tc.want || l.Used() != tc.want {
				t.Errorf("accepted %d, %d entries, limit used %d; want %d", accepted, ct.Len(), l.Used(), tc.want)
			}
			ct.Release()
			if l.Used() != 0 || len(ct.slots) != minSlots {
				t.Errorf("after Release: limit used %d, %d slots", l.Used(), len(ct.slots))
			}
		})
	}
}
