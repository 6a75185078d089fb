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

// benchPolicy has n random INBOUND rules (CIDRs /16 to /32 in 10/8 and
// port ranges) that never match 192.0.2.0/24.
func benchPolicy(b *testing.B, n int) *Policy {
	rng := rand.New(rand.NewPCG(1, 2))
	var rules []model.Rule
	for range n {
		a := netip.AddrFrom4([4]byte{10, byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))})
		lo := uint32(rng.IntN(60000))
		rules = append(rules, model.Rule{Direction: model.Inbound, Protocol: []int32{6, 17, -1}[rng.IntN(3)],
			PortStart: lo, PortEnd: lo + uint32(rng.IntN(100)), CIDR: netip.PrefixFrom(a, 16+rng.IntN(17))})
	}
	return mustCompile(b, CompileInput{Generation: 1, IPs: addrs(vm4), Groups: []model.SG{{ID: "sg", Rules: rules}}})
}

// fillFlows tracks n UDP flows opened by the VM.
func fillFlows(b *testing.B, ct *Conntrack, pol *Policy, n int) {
	f := pk{src: vm4, dst: peer4, proto: 17, sport: 1, dport: 53}.build()
	ip := packet.IPv4(f[packet.EthernetLen:])
	for i := range n {
		binary.BigEndian.PutUint16(ip[20:], uint16(i))
		if v := ct.Filter(f, FromVM, pol, 0); v != Accept {
			b.Fatalf("flow %d: %v", i, v)
		}
	}
}

func BenchmarkFilterHit(b *testing.B) {
	pol := benchPolicy(b, 1000)
	ct := NewConntrack(20000)
	fillFlows(b, ct, pol, 10000)
	reply := pk{src: peer4, dst: vm4, proto: 17, sport: 53, dport: 5000}.build()
	if v := ct.Filter(reply, ToVM, pol, 0); v != Accept {
		b.Fatal(v)
	}
	b.ReportAllocs()
	for b.Loop() {
		ct.Filter(reply, ToVM, pol, sec)
	}
}

func BenchmarkFilterMiss(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprint("rules=", n), func(b *testing.B) {
			pol := benchPolicy(b, n)
			ct := NewConntrack(20000)
			fillFlows(b, ct, pol, 10000)
			miss := pk{src: "192.0.2.9", dst: vm4, proto: 6, sport: 1234, dport: 22, flags: syn}.build()
			if v := ct.Filter(miss, ToVM, pol, 0); v != DropNoRule {
				b.Fatal(v)
			}
			b.ReportAllocs()
			for b.Loop() {
				ct.Filter(miss, ToVM, pol, sec)
			}
		})
	}
}

// BenchmarkNewConnection measures the creation of flows (classification
// and insertion) with 100 rules; flows expire and are recreated.
func BenchmarkNewConnection(b *testing.B) {
	pol := benchPolicy(b, 100)
	const flows = 1 << 16
	ct := NewConntrack(flows)
	f := pk{src: vm4, dst: peer4, proto: 17, sport: 1, dport: 53}.build()
	ip := packet.IPv4(f[packet.EthernetLen:])
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		binary.BigEndian.PutUint16(ip[20:], uint16(i))
		// Every pass over the ports comes 31 s later: the flows of the
		// previous pass have expired.
		if v := ct.Filter(f, FromVM, pol, int64(i/flows)*31*sec); v != Accept {
			b.Fatalf("packet %d: %v", i, v)
		}
		i++
	}
}

func BenchmarkCompile1000(b *testing.B) {
	for b.Loop() {
		benchPolicy(b, 1000)
	}
}

// BenchmarkFilterBatchHit filters batches of 32 replies of 32 different
// established flows (10,000 tracked); ns/op is per batch.
func BenchmarkFilterBatchHit(b *testing.B) {
	pol := benchPolicy(b, 1000)
	ct := NewConntrack(20000)
	fillFlows(b, ct, pol, 10000)
	frames := make([][]byte, 32)
	for i := range frames {
		frames[i] = pk{src: peer4, dst: vm4, proto: 17, sport: 53, dport: uint16(i * 300)}.build()
	}
	out := make([]Verdict, len(frames))
	ct.FilterBatch(frames, ToVM, pol, 0, out)
	for i, v := range out {
		if v != Accept {
			b.Fatalf("frame %d: %v", i, v)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		ct.FilterBatch(frames, ToVM, pol, sec, out)
	}
}
