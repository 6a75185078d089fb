package firewall

import (
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/packet"
)

// outboundOnly allows the VM to open TCP connections to port 443 only
// (and nobody to open one towards it).
func outboundOnly(t *testing.T) *Policy {
	return mustCompile(t, CompileInput{Generation: 1, IPs: addrs(vm4, vm6), Groups: []model.SG{{ID: "sg", Rules: []model.Rule{
		cidrRule(model.Outbound, 6, 443, 443, "0.0.0.0/0")}}}})
}

// TestPickup: within the pickup window, a plain ACK segment of a
// connection no entry knows is tracked from the middle when the policy
// would let its sender open the connection in its direction; nothing else
// is, and never outside the window. Explain predicts each verdict.
func TestPickup(t *testing.T) {
	const psh = packet.TCPFlagPSH
	inbound := func(t *testing.T) *Policy { return openInbound(t, 1, 6, 40000, 40000) }
	tests := []struct {
		name  string
		pol   func(*testing.T) *Policy
		until int64 // seconds; 0 = no pickup
		steps []step
	}{
		{"the VM's segment, default egress", defaultPolicy, 100, []step{
			{1, FromVM, tcpOut(vm4, peer4, ack), Accept},
			{1, ToVM, tcpIn(peer4, vm4, ack|psh), Accept}, // the reply: tracked
			{2, FromVM, tcpOut(vm4, peer4, finack), Accept},
			{2, ToVM, tcpIn(peer4, vm4, finack), Accept},
			{2, FromVM, tcpOut(vm4, peer4, ack), Accept},
		}},
		{"IPv6", defaultPolicy, 100, []step{
			{1, FromVM, tcpOut(vm6, peer6, ack), Accept},
			{1, ToVM, tcpIn(peer6, vm6, ack), Accept},
		}},
		{"the peer's segment, no inbound rule", defaultPolicy, 100, []step{
			{1, ToVM, tcpIn(peer4, vm4, ack), DropInvalid}, // a SYN would get no_rule
			{1, ToVM, tcpIn(peer4, vm4, syn), DropNoRule},
			{2, FromVM, tcpOut(vm4, peer4, ack), Accept}, // the VM's side may pick it up
			{2, ToVM, tcpIn(peer4, vm4, ack), Accept},
		}},
		{"the peer's segment, inbound rule", inbound, 100, []step{
			{1, ToVM, tcpIn(peer4, vm4, ack|psh), Accept},
			{1, FromVM, tcpOut(vm4, peer4, ack), Accept},
		}},
		{"the peer's segment, inbound rule for another port", func(t *testing.T) *Policy { return openInbound(t, 1, 6, 22, 22) }, 100, []step{
			{1, ToVM, tcpIn(peer4, vm4, ack), DropInvalid},
		}},
		{"the VM's segment, outbound rules do not allow it", outboundOnly, 100, []step{
			{1, FromVM, tcpOut(vm4, peer4, ack), DropInvalid},
			{1, ToVM, tcpIn(peer4, vm4, ack), DropInvalid},
		}},
		{"only plain ACKs", defaultPolicy, 100, []step{
			{1, FromVM, tcpOut(vm4, peer4, rst), DropInvalid},
			{1, FromVM, tcpOut(vm4, peer4, rst|ack), DropInvalid},
			{1, FromVM, tcpOut(vm4, peer4, finack), DropInvalid},
			{1, FromVM, tcpOut(vm4, peer4, packet.TCPFlagFIN), DropInvalid},
			{1, FromVM, tcpOut(vm4, peer4, synack), DropInvalid},
			{1, FromVM, tcpOut(vm4, peer4, psh), DropInvalid}, // no ACK
			{1, FromVM, tcpOut(vm4, peer4, 0), DropInvalid},
			{1, FromVM, tcpOut(vm4, peer4, ack|psh), Accept},
		}},
		{"last instant of the window", defaultPolicy, 100, []step{
			{99, FromVM, tcpOut(vm4, peer4, ack), Accept},
		}},
		{"window over", defaultPolicy, 100, []step{
			{100, FromVM, tcpOut(vm4, peer4, ack), DropInvalid},
		}},
		{"no window", defaultPolicy, 0, []step{
			{0, FromVM, tcpOut(vm4, peer4, ack), DropInvalid},
		}},
		{"a picked-up flow outlives the window", defaultPolicy, 10, []step{
			{9, FromVM, tcpOut(vm4, peer4, ack), Accept},
			{60, FromVM, tcpOut(vm4, peer4, ack), Accept}, // tracked, not picked up
			{61, FromVM, tcpOut(vm4, peer4, ack|packet.TCPFlagRST), Accept},
			{62, FromVM, tcpOut(vm4, peer4, ack), Accept}, // CLOSE lasts 10 s
			{73, FromVM, tcpOut(vm4, peer4, ack), DropInvalid},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct := NewConntrack(16)
			ct.SetPickup(tt.until * sec)
			runSteps(t, ct, tt.pol(t), tt.steps)
			// At most one connection per case: picked up at its first
			// accepted segment, if any segment was accepted.
			want := uint64(0)
			for _, s := range tt.steps {
				if s.want == Accept {
					want = 1
				}
			}
			if got := ct.PickedUp(); got != want {
				t.Errorf("PickedUp() = %d, want %d", got, want)
			}
		})
	}
}

// TestPickupLifetime: a picked-up flow lives TimeoutPickup until its
// other direction is seen, then its state's timeout; its windows are
// learnt, not enforced.
func TestPickupLifetime(t *testing.T) {
	ct := NewConntrack(16)
	ct.SetPickup(100 * sec)
	pol := defaultPolicy(t)
	expires := func() (Flow, int) {
		var f Flow
		n := 0
		ct.Flows(0, func(g Flow) bool { f = g; n++; return true })
		return f, n
	}
	s := vmSeg(ack, 1000, 5000, 100, 10)
	if v := ct.Decide(s.frame(), FromVM, pol, 1*sec); v != Accept {
		t.Fatalf("picked up: %v", v)
	}
	if f, n := expires(); n != 1 || f.State != TCPEstablished || f.Dir != FromVM || f.Expires != 1*sec+TimeoutPickup {
		t.Fatalf("after pickup: %d flows, %+v; want 1 ESTABLISHED FromVM expiring at %d", n, f, 1*sec+TimeoutPickup)
	}
	if v := ct.Decide(vmSeg(ack, 1010, 5000, 100, 10).frame(), FromVM, pol, 2*sec); v != Accept {
		t.Fatalf("next segment: %v", v)
	}
	if f, _ := expires(); f.Expires != 2*sec+TimeoutPickup {
		t.Fatalf("unconfirmed flow expires at %d, want %d", f.Expires, 2*sec+TimeoutPickup)
	}
	// A reply far outside what a strict window check would accept.
	if v := ct.Decide(peerSeg(ack, 900000, 1020, 100, 0).frame(), ToVM, pol, 3*sec); v != Accept {
		t.Fatalf("reply: %v", v)
	}
	if f, _ := expires(); f.Expires != 3*sec+TimeoutEstablish {
		t.Fatalf("confirmed flow expires at %d, want %d", f.Expires, 3*sec+TimeoutEstablish)
	}
	if v := ct.Decide(vmSeg(ack, 1020, 900000, 100, 0).frame(), FromVM, pol, 4*sec); v != Accept {
		t.Fatalf("after the reply: %v", v)
	}
	if f, _ := expires(); f.Expires != 4*sec+TimeoutEstablish {
		t.Fatalf("confirmed flow expires at %d, want %d", f.Expires, 4*sec+TimeoutEstablish)
	}
}

// TestPickupPolicyChange: a picked-up flow is re-evaluated in its
// sender's direction when the policy changes, and cut when no longer
// allowed.
func TestPickupPolicyChange(t *testing.T) {
	ct := NewConntrack(16)
	ct.SetPickup(100 * sec)
	runSteps(t, ct, openInbound(t, 1, 6, 40000, 40000), []step{
		{1, ToVM, tcpIn(peer4, vm4, ack), Accept},
		{1, FromVM, tcpOut(vm4, peer4, ack), Accept},
	})
	runSteps(t, ct, mustCompile(t, CompileInput{Generation: 2, IPs: addrs(vm4)}), []step{
		{2, FromVM, tcpOut(vm4, peer4, ack), DropCut}, // the peer opened it: no inbound rule now
	})
}

// TestPickupEviction: a full table evicts a picked-up flow whose other
// direction was not seen for a new connection, never a confirmed one.
func TestPickupEviction(t *testing.T) {
	other := func(flags uint8) pk { p := tcpOut(vm4, peer4, flags); p.sport = 40001; return p }
	t.Run("unconfirmed", func(t *testing.T) {
		ct := NewConntrack(1)
		ct.SetPickup(100 * sec)
		runSteps(t, ct, defaultPolicy(t), []step{
			{1, FromVM, tcpOut(vm4, peer4, ack), Accept},
			{2, FromVM, other(syn), Accept},
			{2, FromVM, tcpOut(vm4, peer4, ack), DropTableFull}, // evicted; its pickup finds no room
		})
		if ct.Evicted() != 1 {
			t.Fatalf("evicted %d, want 1", ct.Evicted())
		}
	})
	t.Run("confirmed", func(t *testing.T) {
		ct := NewConntrack(1)
		ct.SetPickup(100 * sec)
		runSteps(t, ct, defaultPolicy(t), []step{
			{1, FromVM, tcpOut(vm4, peer4, ack), Accept},
			{1, ToVM, tcpIn(peer4, vm4, ack), Accept},
			{2, FromVM, other(syn), DropTableFull},
			{2, FromVM, tcpOut(vm4, peer4, ack), Accept},
		})
	})
}
