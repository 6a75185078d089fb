package state

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
)

// nopDataplane accepts every call and does nothing, so that the
// benchmarks below measure the model and the persistence alone.
type nopDataplane struct{}

func (nopDataplane) AddNIC(n model.NIC) (string, error)         { return n.ID, nil }
func (nopDataplane) UpdateNIC(model.NIC) error                  { return nil }
func (nopDataplane) DeleteNIC(string) error                     { return nil }
func (nopDataplane) Stats(string) (model.NICStats, error)       { return model.NICStats{}, nil }
func (nopDataplane) Counters(string) (model.NICCounters, error) { return model.NICCounters{}, nil }
func (nopDataplane) ExportNIC(string) ([]byte, error)           { return nil, nil }
func (nopDataplane) DOT() string                                { return "" }
func (nopDataplane) SetSecurityGroups([]model.SG) error         { return nil }

// benchNIC is the i-th vNIC of the persistence benchmarks: one address,
// in group sg-(i%100).
func benchNIC(i int) model.NIC {
	k := i + 1
	return model.NIC{
		ID:             fmt.Sprintf("bench-%d", i),
		MACText:        fmt.Sprintf("52:54:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff),
		VNI:            uint32(1000 + i%100),
		IPs:            []netip.Addr{netip.AddrFrom4([4]byte{10, byte(k >> 16), byte(k >> 8), byte(k)})},
		SecurityGroups: []string{fmt.Sprintf("sg-%d", i%100)},
		Type:           model.NICTap,
	}
}

// BenchmarkPersistedMutation measures what a persisted API request costs
// the model and the state Store (the dataplane does nothing): one rule
// added to a group, or one vNIC added, then its change saved (as apiv0
// does with butterflyd's Persist), with 10 and 10,000 vNICs existing. The
// cost must not depend on the number of vNICs. Run it with TMPDIR on a
// tmpfs to leave out fdatasync.
func BenchmarkPersistedMutation(b *testing.B) {
	for _, nics := range []int{10, 10000} {
		b.Run(fmt.Sprintf("op=rule_add/nics=%d", nics), func(b *testing.B) {
			m, ps := persistedModel(b, filepath.Join(b.TempDir(), "state.json"), nics)
			i := 0
			for b.Loop() {
				r := model.Rule{Protocol: 6, PortStart: uint32(i%60000 + 1), PortEnd: uint32(i%60000 + 1),
					CIDR: netip.MustParsePrefix("10.0.0.0/8")}
				if err := m.AddRule(fmt.Sprintf("sg-%d", i%100), r); err != nil {
					b.Fatal(err)
				}
				if err := ps.SaveChange(m.TakeChanges()); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		b.Run(fmt.Sprintf("op=nic_add/nics=%d", nics), func(b *testing.B) {
			m, ps := persistedModel(b, filepath.Join(b.TempDir(), "state.json"), nics)
			i := nics
			for b.Loop() {
				if _, err := m.AddNIC(benchNIC(i)); err != nil {
					b.Fatal(err)
				}
				if err := ps.SaveChange(m.TakeChanges()); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
