package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/butterfly-go/butterfly/internal/dataplane"
	"github.com/butterfly-go/butterfly/internal/model"
)

var layout = Layout{Prefix: "/butterfly/"}

func TestParseKey(t *testing.T) {
	tests := []struct {
		key  string
		want Key
		err  bool
	}{
		{key: "/butterfly/nodes/h1", want: Key{Kind: KindNode, Node: "h1"}},
		{key: "/butterfly/alive/h1", want: Key{Kind: KindAlive, Node: "h1"}},
		{key: "/butterfly/nics/h1/vm1", want: Key{Kind: KindNIC, Node: "h1", ID: "vm1"}},
		{key: "/butterfly/sgs/web", want: Key{Kind: KindSG, ID: "web"}},
		{key: "/other/sgs/web", err: true},
		{key: "/butterfly/sgs/", err: true},
		{key: "/butterfly/sgs/a/b", err: true},
		{key: "/butterfly/nics/h1", err: true},
		{key: "/butterfly/nics/h1/vm1/x", err: true},
		{key: "/butterfly/nics//vm1", err: true},
		{key: "/butterfly/nodes/", err: true},
		{key: "/butterfly/vnis/1", err: true},
	}
	for _, tt := range tests {
		got, err := layout.Parse(tt.key)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v, error %v", tt.key, got, err, tt.want, tt.err)
		}
	}
	if k := layout.NIC("h", "v"); k != "/butterfly/nics/h/v" {
		t.Errorf("NIC key %q", k)
	}
}

const (
	nicJSON = `{"id":"vm1","mac":"52:54:00:00:00:01","vni":42,"ip":["10.0.0.1"],"security_group":["web"],"type":"TAP"}`
	sgJSON  = `{"id":"web","member":["10.0.0.2"],"rule":[{"direction":"INBOUND","protocol":6,"port_start":80,"port_end":80,"cidr":{"address":"0.0.0.0","mask_size":0}}]}`
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name, key, value string
		wantErr          string // substring; "" = valid
		check            func(Record) bool
	}{
		{"node", "/butterfly/nodes/h1", `{"name":"h1","vtep":"10.1.0.1","version":"x"}`, "",
			func(r Record) bool { return r.Node.VTEP == netip.MustParseAddr("10.1.0.1") && r.Node.Version == "x" }},
		{"alive, camelCase names", "/butterfly/alive/h1", `{"name":"h1","vtep":"fd00::1"}`, "",
			func(r Record) bool { return r.Node.VTEP.Is6() }},
		{"node name differs", "/butterfly/nodes/h1", `{"name":"h2","vtep":"10.1.0.1"}`, "differs", nil},
		{"node vtep multicast", "/butterfly/nodes/h1", `{"name":"h1","vtep":"230.0.0.1"}`, "not a unicast", nil},
		{"nic", "/butterfly/nics/h1/vm1", nicJSON, "",
			func(r Record) bool {
				return r.NIC.ID == "vm1" && r.NIC.VNI == 42 && r.NIC.Type == model.NICTap && len(r.NIC.IPs) == 1 && r.NIC.MAC[5] == 1
			}},
		{"nic camelCase", "/butterfly/nics/h1/vm1", `{"id":"vm1","mac":"52:54:00:00:00:01","vni":42,"securityGroup":["a"],"type":1}`, "",
			func(r Record) bool { return r.NIC.SecurityGroups[0] == "a" }},
		{"nic id differs", "/butterfly/nics/h1/vm2", nicJSON, "differs", nil},
		{"nic bad mac", "/butterfly/nics/h1/vm1", `{"id":"vm1","mac":"zz","vni":1}`, "mac", nil},
		{"nic vni too large", "/butterfly/nics/h1/vm1", `{"id":"vm1","mac":"52:54:00:00:00:01","vni":16777216}`, "vni", nil},
		{"nic missing required mac", "/butterfly/nics/h1/vm1", `{"id":"vm1","vni":1}`, "mac", nil},
		{"nic fw_import", "/butterfly/nics/h1/vm1", `{"id":"vm1","mac":"52:54:00:00:00:01","vni":1,"fw_import":{"data":"AA=="}}`, "fw_import", nil},
		{"nic unknown field", "/butterfly/nics/h1/vm1", `{"id":"vm1","mac":"52:54:00:00:00:01","vni":1,"color":"red"}`, "unknown field", nil},
		{"not json", "/butterfly/sgs/web", `{`, "not a Sg message", nil},
		{"sg", "/butterfly/sgs/web", sgJSON, "",
			func(r Record) bool {
				return len(r.SG.Rules) == 1 && r.SG.Rules[0].PortStart == 80 && len(r.SG.Members) == 1
			}},
		{"sg bad rule", "/butterfly/sgs/web", `{"id":"web","rule":[{"direction":"INBOUND","protocol":6,"port_start":90,"port_end":80,"security_group":"x"}]}`, "rule", nil},
		{"sg bad member", "/butterfly/sgs/web", `{"id":"web","member":["nope"]}`, "member", nil},
		{"unknown key", "/butterfly/other/x", `{}`, "is not <prefix>", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Decode(layout, tt.key, []byte(tt.value))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Decode error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(r) {
				t.Errorf("Decode = %+v", r)
			}
		})
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	r, err := Decode(layout, "/butterfly/nics/h1/vm1", []byte(nicJSON))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := Decode(layout, "/butterfly/nics/h1/vm1", EncodeNIC(r.NIC))
	if err != nil || !r2.NIC.Equal(r.NIC) {
		t.Fatalf("NIC round trip: %+v, %v; want %+v", r2.NIC, err, r.NIC)
	}
	if !strings.Contains(string(EncodeNIC(r.NIC)), `"security_group":["web"]`) {
		t.Errorf("NIC record not in proto field names: %s", EncodeNIC(r.NIC))
	}
	s, err := Decode(layout, "/butterfly/sgs/web", []byte(sgJSON))
	if err != nil {
		t.Fatal(err)
	}
	s2, err := Decode(layout, "/butterfly/sgs/web", EncodeSG(s.SG))
	if err != nil || !s2.SG.Equal(s.SG) {
		t.Fatalf("SG round trip: %+v, %v", s2.SG, err)
	}
	n := NodeInfo{Name: "h1", VTEP: netip.MustParseAddr("10.0.0.1"), Version: "v"}
	if r, err := Decode(layout, "/butterfly/nodes/h1", EncodeNode(n)); err != nil || r.Node != n {
		t.Fatalf("node round trip: %+v, %v", r.Node, err)
	}
}

func nodeJSON(name, vtep string) []byte {
	return EncodeNode(NodeInfo{Name: name, VTEP: netip.MustParseAddr(vtep)})
}

func nicRec(id string, vni uint32, last byte) []byte {
	n := model.NIC{ID: id, MACText: "52:54:00:00:00:0" + string('0'+last), VNI: vni, Type: model.NICTap}
	return EncodeNIC(n)
}

func TestViewRemotes(t *testing.T) {
	v := NewView(layout)
	put := func(k string, val []byte) {
		t.Helper()
		if err := v.Put(k, val); err != nil {
			t.Fatalf("Put %s: %v", k, err)
		}
	}
	for i, n := range []string{"a", "b", "c"} {
		vtep := "10.0.0." + string(rune('1'+i))
		put(layout.Node(n), nodeJSON(n, vtep))
		put(layout.Alive(n), nodeJSON(n, vtep))
	}
	put(layout.NIC("a", "a1"), nicRec("a1", 7, 1))
	put(layout.NIC("b", "b1"), nicRec("b1", 7, 2))
	put(layout.NIC("b", "b2"), nicRec("b2", 8, 3))
	put(layout.NIC("c", "c1"), nicRec("c1", 8, 4))
	a1, b1 := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	mac := func(last byte) [6]byte { return [6]byte{0x52, 0x54, 0, 0, 0, last} }
	want := dataplane.Remotes{Sources: []netip.Addr{a1, b1}, Flood: map[uint32][]netip.Addr{7: {a1}, 8: {a1, b1}},
		MACs: map[uint32][]dataplane.RemoteMAC{7: {{MAC: mac(2), VTEP: a1}}, 8: {{MAC: mac(3), VTEP: a1}, {MAC: mac(4), VTEP: b1}}}}
	if got := v.Remotes("a"); !EqualRemotes(got, want) {
		t.Fatalf("Remotes(a) = %+v, want %+v", got, want)
	}
	// ARP suppression knows every node's vNIC addresses, a's own too.
	put(layout.NIC("c", "c2"), EncodeNIC(model.NIC{ID: "c2", MACText: "52:54:00:00:00:05", VNI: 7, Type: model.NICTap,
		IPs: []netip.Addr{netip.MustParseAddr("10.9.0.5"), netip.MustParseAddr("fd00::5")}}))
	put(layout.NIC("a", "a2"), EncodeNIC(model.NIC{ID: "a2", MACText: "52:54:00:00:00:06", VNI: 7, Type: model.NICTap,
		IPs: []netip.Addr{netip.MustParseAddr("10.9.0.6")}}))
	wantN := []dataplane.Neighbor{{IP: netip.MustParseAddr("10.9.0.6"), MAC: mac(6)}, {IP: netip.MustParseAddr("10.9.0.5"), MAC: mac(5)},
		{IP: netip.MustParseAddr("fd00::5"), MAC: mac(5)}}
	if got := v.Remotes("a").Neighbors; len(got) != 1 || !slices.Equal(got[7], wantN) {
		t.Fatalf("Neighbors = %+v, want VNI 7: %+v", got, wantN)
	}
	v.Delete(layout.NIC("c", "c2"))
	v.Delete(layout.NIC("a", "a2"))
	want.Neighbors = map[uint32][]dataplane.Neighbor{}
	// b's lease expires: it leaves every flood list, stays a source.
	v.Delete(layout.Alive("b"))
	want = dataplane.Remotes{Sources: []netip.Addr{a1, b1}, Flood: map[uint32][]netip.Addr{8: {b1}},
		MACs: map[uint32][]dataplane.RemoteMAC{8: {{MAC: mac(4), VTEP: b1}}}}
	if got := v.Remotes("a"); !slices.Equal(got.Sources, want.Sources) || len(got.Flood) != 1 || len(got.MACs) != 1 {
		t.Fatalf("Remotes(a) after b's lease = %+v, want %+v", got, want)
	}
	// An invalid record replaces c1: c leaves VNI 8, the key is reported.
	if err := v.Put(layout.NIC("c", "c1"), []byte(`{"id":"c1"}`)); err == nil {
		t.Fatal("invalid record accepted")
	}
	if l := v.InvalidList(); len(l) != 1 || !strings.HasPrefix(l[0], layout.NIC("c", "c1")+": ") {
		t.Fatalf("InvalidList = %q", l)
	}
	if got := v.Remotes("a"); len(got.Flood) != 0 {
		t.Fatalf("flood after the invalid record = %v", got.Flood)
	}
	nics, _ := v.Held("c")
	if !nics["c1"] {
		t.Fatalf("Held(c) = %v, want c1", nics)
	}
	v.Delete(layout.NIC("c", "c1"))
	if len(v.Invalid) != 0 {
		t.Fatalf("Invalid after delete = %v", v.Invalid)
	}
}

// recDP is a dataplane that records the calls a store makes.
type recDP struct {
	nopDataplane
	calls []string
}

func (d *recDP) AddNIC(n model.NIC) (string, error) {
	d.calls = append(d.calls, "add "+n.ID)
	return "tap-" + n.ID, nil
}
func (d *recDP) UpdateNIC(n model.NIC) error { d.calls = append(d.calls, "update "+n.ID); return nil }
func (d *recDP) DeleteNIC(id string) error   { d.calls = append(d.calls, "del "+id); return nil }
func (d *recDP) SetSecurityGroups(sgs []model.SG) error {
	d.calls = append(d.calls, "sgs")
	return nil
}

func TestDiffApply(t *testing.T) {
	dp := &recDP{}
	s := model.New(dp, model.Options{DefaultTracePath: func(id string) string { return "/t/" + id }})
	v := NewView(layout)
	sync := func() []string {
		t.Helper()
		dp.calls = nil
		held, heldSGs := v.Held("a")
		ops, _ := Diff(s.State(), v.NICs["a"], v.SGs, held, heldSGs, func(id string) string { return "/t/" + id }, nil)
		if errs := Apply(s, ops); len(errs) > 0 {
			t.Fatalf("Apply: %v", errs)
		}
		return dp.calls
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(v.Put(layout.SG("web"), []byte(sgJSON)))
	must(v.Put(layout.NIC("a", "vm1"), []byte(nicJSON)))
	must(v.Put(layout.NIC("b", "other"), nicRec("other", 42, 9)))
	if got := sync(); !reflect.DeepEqual(got, []string{"sgs", "add vm1"}) {
		t.Fatalf("first sync calls %v", got)
	}
	if got := sync(); len(got) != 0 {
		t.Fatalf("second sync (nothing changed) calls %v", got)
	}
	// Same content written again (a replay): nothing.
	must(v.Put(layout.SG("web"), []byte(sgJSON)))
	if got := sync(); len(got) != 0 {
		t.Fatalf("replayed record calls %v", got)
	}
	// New IPs: updated in place, not re-created.
	must(v.Put(layout.NIC("a", "vm1"), []byte(strings.Replace(nicJSON, `"ip":["10.0.0.1"]`, `"ip":["10.0.0.1","10.0.0.5"]`, 1))))
	if got := sync(); !reflect.DeepEqual(got, []string{"update vm1"}) {
		t.Fatalf("IP change calls %v", got)
	}
	// Another VNI: re-created.
	must(v.Put(layout.NIC("a", "vm1"), []byte(strings.Replace(nicJSON, `"vni":42`, `"vni":43`, 1))))
	if got := sync(); !reflect.DeepEqual(got, []string{"del vm1", "add vm1"}) {
		t.Fatalf("VNI change calls %v", got)
	}
	// An invalid record is held: the vNIC stays as it was.
	if err := v.Put(layout.NIC("a", "vm1"), []byte(`{"id":"vm1","mac":"bad","vni":1}`)); err == nil {
		t.Fatal("invalid record accepted")
	}
	if got := sync(); len(got) != 0 {
		t.Fatalf("invalid record calls %v", got)
	}
	if n, err := s.NICDetails("vm1"); err != nil || n[0].VNI != 43 {
		t.Fatalf("vm1 after an invalid record: %+v, %v", n, err)
	}
	v.Delete(layout.NIC("a", "vm1"))
	v.Delete(layout.SG("web"))
	if got := sync(); !reflect.DeepEqual(got, []string{"del vm1", "sgs"}) {
		t.Fatalf("deletion calls %v", got)
	}
	if st := s.State(); len(st.NICs)+len(st.SGs) != 0 {
		t.Fatalf("state after deletions: %+v", st)
	}
}

// TestDiffDefersRemovals: while a group's removals are deferred, rules,
// members and the group itself stay; additions apply; a replay that
// empties the group and re-adds its rules produces no operation.
func TestDiffDefersRemovals(t *testing.T) {
	r80, r443 := model.Rule{Protocol: 6, PortStart: 80, PortEnd: 80, SG: "x"}, model.Rule{Protocol: 6, PortStart: 443, PortEnd: 443, SG: "x"}
	m1 := netip.MustParseAddr("10.0.0.1")
	cur := model.State{SGs: []model.SG{mustSG(t, model.SG{ID: "web", Rules: []model.Rule{r80}, Members: []netip.Addr{m1}}), {ID: "old"}}}
	always := func(string) bool { return true }
	tests := []struct {
		name     string
		want     map[string]model.SG
		hold     func(string) bool
		ops      []Op
		deferred []string
	}{
		{name: "emptied, held", hold: always,
			want:     map[string]model.SG{"web": {ID: "web"}, "old": {ID: "old"}},
			deferred: []string{"web"}},
		{name: "rule added while emptied, held", hold: always,
			want:     map[string]model.SG{"web": mustSG(t, model.SG{ID: "web", Rules: []model.Rule{r443}}), "old": {ID: "old"}},
			ops:      []Op{{Kind: OpAddSG, ID: "web", SG: mustSG(t, model.SG{ID: "web", Rules: []model.Rule{r80, r443}, Members: []netip.Addr{m1}})}},
			deferred: []string{"web"}},
		{name: "replayed content, nothing", hold: always,
			want: map[string]model.SG{"web": cur.SGs[0], "old": {ID: "old"}}},
		{name: "group deleted, held", hold: always,
			want:     map[string]model.SG{"web": cur.SGs[0]},
			deferred: []string{"old"}},
		{name: "released", hold: func(string) bool { return false },
			want: map[string]model.SG{"web": {ID: "web"}},
			ops:  []Op{{Kind: OpAddSG, ID: "web", SG: model.SG{ID: "web"}}, {Kind: OpDelSG, ID: "old"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops, deferred := Diff(cur, nil, tt.want, nil, nil, nil, tt.hold)
			if len(ops) != len(tt.ops) || !reflect.DeepEqual(deferred, tt.deferred) {
				t.Fatalf("Diff = %+v, deferred %v; want %+v, %v", ops, deferred, tt.ops, tt.deferred)
			}
			for i := range ops {
				if ops[i].Kind != tt.ops[i].Kind || ops[i].ID != tt.ops[i].ID || !ops[i].SG.Equal(tt.ops[i].SG) {
					t.Errorf("op %d = %+v, want %+v", i, ops[i], tt.ops[i])
				}
			}
		})
	}
}

func mustSG(t *testing.T, sg model.SG) model.SG {
	t.Helper()
	n, err := CheckSG(sg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestTLSConfig(t *testing.T) {
	dir := t.TempDir()
	notPEM := dir + "/ca.pem"
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "plain", cfg: Config{}},
		{name: "missing CA", cfg: Config{CA: dir + "/none.pem"}, wantErr: "etcd-ca"},
		{name: "CA without certificate", cfg: Config{CA: notPEM}, wantErr: "no PEM certificate"},
		{name: "missing client certificate", cfg: Config{Cert: dir + "/c.pem", Key: dir + "/k.pem"}, wantErr: "etcd-cert/etcd-key"},
	}
	for _, tt := range tests {
		c, err := tlsConfig(tt.cfg)
		if tt.wantErr == "" {
			if err != nil || c != nil {
				t.Errorf("%s: %v, %v; want no TLS", tt.name, c, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.wantErr)
		}
	}
}

func TestErrUnavailable(t *testing.T) {
	tests := []struct {
		err         error
		unavailable bool
	}{
		{context.DeadlineExceeded, true},
		{fmt.Errorf("get: %w", context.Canceled), true},
		{status.Error(codes.Unavailable, "connection refused"), true},
		{status.Error(codes.Unknown, "context deadline exceeded"), true},
		{rpctypes.ErrGRPCNoLeader, true},
		{rpctypes.ErrGRPCTimeout, true},
		{rpctypes.ErrGRPCRequestTooLarge, false},
		{rpctypes.ErrGRPCPermissionDenied, false},
	}
	for _, tt := range tests {
		got := errUnavailable(tt.err).Error()
		if want := "cluster: etcd unavailable"; tt.unavailable != strings.HasPrefix(got, want) {
			t.Errorf("errUnavailable(%v) = %q", tt.err, got)
		}
	}
}
