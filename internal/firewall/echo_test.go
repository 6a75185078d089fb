package firewall

import (
	"testing"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// TestExplainEchoFlow: Explain describes a tracked echo flow with its
// identifier in both ports, as Flow documents (the table keys it
// (identifier, 0)).
func TestExplainEchoFlow(t *testing.T) {
	ct := NewConntrack(16)
	pol := defaultPolicy(t)
	if v := ct.Decide(pk{src: vm4, dst: peer4, proto: 1, sport: packet.ICMPv4Echo, dport: 9}.build(), FromVM, pol, 0); v != Accept {
		t.Fatalf("echo request: %v", v)
	}
	x := ct.Explain(pk{src: peer4, dst: vm4, proto: 1, sport: packet.ICMPv4EchoReply, dport: 9}.build(), ToVM, pol, sec)
	if x.Verdict != Accept || !x.Tracked || x.Flow.SrcPort != 9 || x.Flow.DstPort != 9 {
		t.Errorf("explain of the reply: %v tracked %t ports %d %d, want accept, tracked, 9 9", x.Verdict, x.Tracked, x.Flow.SrcPort, x.Flow.DstPort)
	}
}
