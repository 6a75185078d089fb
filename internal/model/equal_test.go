package model_test

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
)

func sampleNIC() model.NIC {
	return model.NIC{
		ID: "nic-1", MACText: "52:54:00:00:00:01", MAC: [6]byte{0x52, 0x54, 0, 0, 0, 1}, VNI: 1000,
		IPs:            []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")},
		SecurityGroups: []string{"sg-1"}, IPAntiSpoof: true, Type: model.NICTap,
		PacketTrace: true, TracePath: "/tmp/t.pcap", Path: "nic-1", Import: []byte{1},
	}
}

// TestEqualCoversFields fails when model.NIC or model.SG gains a field
// that Equal does not compare: every field but MAC (derived from
// MACText) and Import (never kept) must make a difference.
func TestEqualCoversFields(t *testing.T) {
	base := sampleNIC()
	nt := reflect.TypeFor[model.NIC]()
	for i := range nt.NumField() {
		f := nt.Field(i)
		changed := base.Clone()
		v := reflect.ValueOf(&changed).Elem().Field(i)
		switch v.Kind() {
		case reflect.String:
			v.SetString(v.String() + "x")
		case reflect.Bool:
			v.SetBool(!v.Bool())
		case reflect.Uint32, reflect.Uint8, reflect.Uint16, reflect.Uint64:
			v.SetUint(v.Uint() + 1)
		case reflect.Int, reflect.Int32, reflect.Int64:
			v.SetInt(v.Int() + 1)
		case reflect.Slice:
			v.Set(reflect.MakeSlice(v.Type(), 0, 0))
		case reflect.Array:
			v.Index(0).SetUint(v.Index(0).Uint() + 1)
		default:
			t.Fatalf("field %s of kind %v: extend this test and NIC.Equal", f.Name, v.Kind())
		}
		if f.Name == "MAC" || f.Name == "Import" {
			if !base.Equal(changed) {
				t.Errorf("%s counts as a change", f.Name)
			}
			continue
		}
		if base.Equal(changed) {
			t.Errorf("NIC.Equal ignores field %s", f.Name)
		}
	}
	if n := reflect.TypeFor[model.SG]().NumField(); n != 3 {
		t.Errorf("model.SG has %d fields; SG.Equal compares 3", n)
	}
	g := model.SG{
		ID:      "sg-1",
		Members: []netip.Addr{netip.MustParseAddr("10.0.0.2")},
		Rules: []model.Rule{
			{Direction: model.Inbound, Protocol: 6, PortStart: 22, PortEnd: 22, CIDR: netip.MustParsePrefix("0.0.0.0/0")},
			{Direction: model.Inbound, Protocol: -1, SG: "sg-1"},
		},
	}
	for name, h := range map[string]func(*model.SG){
		"ID":      func(s *model.SG) { s.ID += "x" },
		"Members": func(s *model.SG) { s.Members = nil },
		"Rules":   func(s *model.SG) { s.Rules = s.Rules[:1] },
	} {
		c := g.Clone()
		h(&c)
		if g.Equal(c) {
			t.Errorf("SG.Equal ignores %s", name)
		}
	}
	if !g.Equal(g.Clone()) || !base.Equal(base.Clone()) {
		t.Error("a clone differs from its original")
	}
	// nil and empty lists are equal.
	e1, e2 := model.NIC{ID: "a"}, model.NIC{ID: "a", IPs: []netip.Addr{}}
	if !e1.Equal(e2) {
		t.Error("nil and empty address lists differ")
	}
}

// TestCloneSharesNothing: changing a clone's lists leaves the original alone.
func TestCloneSharesNothing(t *testing.T) {
	n := sampleNIC()
	c := n.Clone()
	c.IPs[0] = netip.MustParseAddr("10.9.9.9")
	c.SecurityGroups[0] = "other"
	c.Import[0] = 9
	if n.IPs[0] != netip.MustParseAddr("10.0.0.1") || n.SecurityGroups[0] != "sg-1" || n.Import[0] != 1 {
		t.Fatalf("NIC.Clone shares lists: %+v", n)
	}
	g := model.SG{ID: "g", Members: []netip.Addr{netip.MustParseAddr("10.0.0.2")}, Rules: []model.Rule{{Protocol: 6}}}
	h := g.Clone()
	h.Members[0] = netip.MustParseAddr("10.9.9.9")
	h.Rules[0].Protocol = 17
	if g.Members[0] != netip.MustParseAddr("10.0.0.2") || g.Rules[0].Protocol != 6 {
		t.Fatalf("SG.Clone shares lists: %+v", g)
	}
}
