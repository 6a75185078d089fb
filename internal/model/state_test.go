package model_test

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/model/modeltest"
)

// largeStore returns a Store of nics vNICs (two IPs and one security group
// each) and sgs security groups of rules rules each, as scripts/bench.sh
// api builds with BENCH_API_NICS=1000.
func largeStore(tb testing.TB, nics, sgs, rules int) *model.Store {
	tb.Helper()
	s := model.New(modeltest.NewDataplane(), model.Options{})
	for i := range nics {
		n := model.NIC{
			ID:             fmt.Sprintf("nic-%04d", i),
			MACText:        fmt.Sprintf("52:54:00:00:%02x:%02x", i>>8&0xff, i&0xff),
			VNI:            uint32(i % 10),
			IPs:            []netip.Addr{netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})},
			SecurityGroups: []string{fmt.Sprintf("sg-%03d", i%max(sgs, 1))},
		}
		if _, err := s.AddNIC(n); err != nil {
			tb.Fatal(err)
		}
	}
	for g := range sgs {
		sg := model.SG{ID: fmt.Sprintf("sg-%03d", g), Members: []netip.Addr{netip.AddrFrom4([4]byte{10, 2, 0, byte(g)})}}
		for r := range rules {
			sg.Rules = append(sg.Rules, model.Rule{Protocol: 6, PortStart: uint32(r + 1), PortEnd: uint32(r + 1),
				CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 3, byte(g), 0}), 24)})
		}
		if err := s.AddSG(sg); err != nil {
			tb.Fatal(err)
		}
	}
	return s
}

// BenchmarkStateLarge measures State on 1,000 vNICs and 100 security
// groups of 100 rules: the cost apiv0 pays after every persisted change.
func BenchmarkStateLarge(b *testing.B) {
	s := largeStore(b, 1000, 100, 100)
	b.ReportAllocs()
	for b.Loop() {
		st := s.State()
		if len(st.NICs) != 1000 || len(st.SGs) != 100 {
			b.Fatalf("state has %d nics, %d sgs", len(st.NICs), len(st.SGs))
		}
	}
}
