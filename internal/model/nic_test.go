package model_test

import (
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/model/modeltest"
)

func newStore(t *testing.T) (*model.Store, *modeltest.Dataplane) {
	t.Helper()
	dp := modeltest.NewDataplane()
	s := model.New(dp, model.Options{
		DefaultTracePath: func(id string) string { return "/tmp/butterfly-42-" + id + ".pcap" },
	})
	return s, dp
}

func ips(t *testing.T, ss ...string) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func baseNIC() model.NIC {
	return model.NIC{ID: "nic-1", MACText: "42:42:42:42:42:42", VNI: 321}
}

// wantErr checks that err is a *model.Error with code and a description
// starting with prefix.
func wantErr(t *testing.T, err error, code model.Code, prefix string) {
	t.Helper()
	var me *model.Error
	if !errors.As(err, &me) {
		t.Fatalf("error %v (%T) is not a *model.Error", err, err)
	}
	if me.Code != code {
		t.Errorf("error %q: code %d, want %d", me.Description(), me.Code, code)
	}
	if !strings.HasPrefix(me.Description(), prefix) {
		t.Errorf("error %q does not start with %q", me.Description(), prefix)
	}
}

// unchanged runs f and checks that it changed neither the state, nor the
// generation, nor called the dataplane (except reads).
func unchanged(t *testing.T, s *model.Store, dp *modeltest.Dataplane, f func()) {
	t.Helper()
	unchangedState(t, s, dp, true, f)
}

// unchangedState is unchanged; noCalls false allows dataplane calls (that
// failed).
func unchangedState(t *testing.T, s *model.Store, dp *modeltest.Dataplane, noCalls bool, f func()) {
	t.Helper()
	before, gen := s.State(), s.Generation()
	dp.ResetCalls()
	f()
	if after := s.State(); !reflect.DeepEqual(before, after) {
		t.Errorf("state changed:\nbefore %+v\nafter  %+v", before, after)
	}
	if s.Generation() != gen {
		t.Errorf("generation changed from %d to %d", gen, s.Generation())
	}
	for _, c := range dp.Calls() {
		if noCalls && c.Op != modeltest.OpStats && c.Op != modeltest.OpCounters {
			t.Errorf("unexpected dataplane call %s(%s)", c.Op, c.ID)
		}
	}
}

func TestAddNICValidation(t *testing.T) {
	longID := strings.Repeat("x", 256)
	tests := []struct {
		name   string
		mod    func(*model.NIC)
		detail string
	}{
		{"empty id", func(n *model.NIC) { n.ID = "" }, "id is empty"},
		{"slash in id", func(n *model.NIC) { n.ID = "../etc" }, "contains '/'"},
		{"dotdot id", func(n *model.NIC) { n.ID = ".." }, "not allowed"},
		{"control char in id", func(n *model.NIC) { n.ID = "a\nb" }, "control character"},
		{"long id", func(n *model.NIC) { n.ID = longID }, "longer than 255"},
		{"mac garbage", func(n *model.NIC) { n.MACText = "zz" }, `mac "zz" is not a MAC-48 address`},
		{"mac empty", func(n *model.NIC) { n.MACText = "" }, "is not a MAC-48"},
		{"mac short", func(n *model.NIC) { n.MACText = "42:42:42:42:42:4" }, "is not a MAC-48"},
		{"mac long", func(n *model.NIC) { n.MACText = "42:42:42:42:42:422" }, "is not a MAC-48"},
		{"mac dashes", func(n *model.NIC) { n.MACText = "42-42-42-42-42-42" }, "is not a MAC-48"},
		{"mac non-hex", func(n *model.NIC) { n.MACText = "42:42:42:42:42:4g" }, "is not a MAC-48"},
		{"mac spaces", func(n *model.NIC) { n.MACText = " 2:42:42:42:42:42" }, "is not a MAC-48"},
		{"vni 2^24", func(n *model.NIC) { n.VNI = 1 << 24 }, "vni 16777216 is larger than 16777215"},
		{"vni max uint32", func(n *model.NIC) { n.VNI = 1<<32 - 1 }, "larger than"},
		{"zero ip", func(n *model.NIC) { n.IPs = []netip.Addr{{}} }, "is not an IPv4 or IPv6"},
		{"ip with zone", func(n *model.NIC) { n.IPs = ips(t, "fe80::1%eth0") }, "is not an IPv4 or IPv6"},
		{"unknown type", func(n *model.NIC) { n.Type = 3 }, "unknown type 3"},
		{"bench without btype", func(n *model.NIC) {
			n.Type, n.IPs = model.NICBench, ips(t, "10.0.0.1")
		}, "needs a btype"},
		{"bench bad btype", func(n *model.NIC) {
			n.Type, n.IPs, n.BType = model.NICBench, ips(t, "10.0.0.1"), "ICMP_FOO"
		}, `btype "ICMP_FOO"`},
		{"bench without ip", func(n *model.NIC) {
			n.Type, n.BType = model.NICBench, "ICMP_RCV_LIKE"
		}, "needs an ip"},
		{"bench snd without dip", func(n *model.NIC) {
			n.Type, n.IPs, n.BType, n.DMAC = model.NICBench, ips(t, "10.0.0.1"), "ICMP_SND_LIKE", "42:42:42:42:42:43"
		}, "needs dip and dmac"},
		{"bench snd without dmac", func(n *model.NIC) {
			n.Type, n.IPs, n.BType, n.DIP = model.NICBench, ips(t, "10.0.0.1"), "ICMP_SND_LIKE", "10.0.0.2"
		}, "needs dip and dmac"},
		{"bench bad dip", func(n *model.NIC) {
			n.Type, n.IPs, n.BType, n.DIP, n.DMAC = model.NICBench, ips(t, "10.0.0.1"), "ICMP_SND_LIKE", "10.0.0", "42:42:42:42:42:43"
		}, `dip "10.0.0"`},
		{"bench bad dmac", func(n *model.NIC) {
			n.Type, n.IPs, n.BType, n.DIP, n.DMAC = model.NICBench, ips(t, "10.0.0.1"), "ICMP_SND_LIKE", "10.0.0.2", "nope"
		}, `dmac "nope"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, dp := newStore(t)
			if _, err := s.AddNIC(model.NIC{ID: "other", MACText: "42:42:42:42:42:40"}); err != nil {
				t.Fatal(err)
			}
			n := baseNIC()
			tc.mod(&n)
			unchanged(t, s, dp, func() {
				_, err := s.AddNIC(n)
				wantErr(t, err, model.CodeInvalid, "Bad NIC format: ")
				if err != nil && !strings.Contains(err.Error(), tc.detail) {
					t.Errorf("error %q does not mention %q", err, tc.detail)
				}
			})
		})
	}
}

func TestAddNICAccepts(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*model.NIC)
	}{
		{"vni 0", func(n *model.NIC) { n.VNI = 0 }},
		{"vni 2^24-1", func(n *model.NIC) { n.VNI = 1<<24 - 1 }},
		{"upper-case mac", func(n *model.NIC) { n.MACText = "AB:CD:EF:01:23:45" }},
		{"multicast mac", func(n *model.NIC) { n.MACText = "01:00:5e:00:00:01" }},
		{"tap", func(n *model.NIC) { n.Type = model.NICTap }},
		{"bench rcv", func(n *model.NIC) {
			n.Type, n.IPs, n.BType = model.NICBench, ips(t, "10.0.0.1"), "ICMP_RCV_LIKE"
		}},
		{"bench snd", func(n *model.NIC) {
			n.Type, n.IPs, n.BType, n.DIP, n.DMAC = model.NICBench, ips(t, "10.0.0.1"), "ICMP_SND_LIKE", "10.0.0.2", "42:42:42:42:42:43"
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, dp := newStore(t)
			n := baseNIC()
			tc.mod(&n)
			if _, err := s.AddNIC(n); err != nil {
				t.Fatalf("AddNIC: %v", err)
			}
			got, ok := dp.NIC(n.ID)
			if !ok {
				t.Fatal("dataplane has no nic")
			}
			if got.VNI != n.VNI || got.MACText != n.MACText || got.Type != n.Type || got.BType != n.BType {
				t.Errorf("dataplane got %+v, want fields of %+v", got, n)
			}
		})
	}
}

func TestAddNICNormalises(t *testing.T) {
	s, dp := newStore(t)
	n := model.NIC{
		ID:             "nic-1",
		MACText:        "aB:cd:EF:01:23:45",
		VNI:            7,
		IPs:            ips(t, "1.2.3.4", "2001:db8:0:85a3::ac1f:8001", "1.2.3.4", "2001:0db8:0000:85a3:0000:0000:ac1f:8001"),
		SecurityGroups: []string{"sg-2", "", "sg-1", "sg-2"},
		Type:           model.NICTap,
		BType:          "ICMP_RCV_LIKE", // meaningless for TAP: dropped
		DIP:            "10.0.0.1",
		Path:           "ignored",
	}
	path, err := s.AddNIC(n)
	if err != nil {
		t.Fatal(err)
	}
	if path != "nic-1" {
		t.Errorf("path %q, want the fake's tap path nic-1", path)
	}
	want := model.NIC{
		ID:             "nic-1",
		MACText:        "aB:cd:EF:01:23:45",
		MAC:            [6]byte{0xab, 0xcd, 0xef, 0x01, 0x23, 0x45},
		VNI:            7,
		IPs:            ips(t, "1.2.3.4", "2001:db8:0:85a3::ac1f:8001"),
		SecurityGroups: []string{"sg-2", "sg-1"},
		Type:           model.NICTap,
		TracePath:      "/tmp/butterfly-42-nic-1.pcap",
		Path:           "nic-1",
	}
	got, err := s.NICDetails("nic-1")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []model.NIC{want}) {
		t.Errorf("details\n got %+v\nwant %+v", got, want)
	}
	dpNIC, _ := dp.NIC("nic-1")
	want.Path = "nic-1"
	if !reflect.DeepEqual(dpNIC, want) {
		t.Errorf("dataplane\n got %+v\nwant %+v", dpNIC, want)
	}
	// A trace path given explicitly is kept.
	n.ID, n.TracePath = "nic-2", "/var/tmp/x.pcap"
	if _, err := s.AddNIC(n); err != nil {
		t.Fatal(err)
	}
	got, _ = s.NICDetails("nic-2")
	if got[0].TracePath != "/var/tmp/x.pcap" {
		t.Errorf("trace path %q", got[0].TracePath)
	}
}

// TestVhostClient: the vhost-user mode is kept as given for vhost-user
// vNICs and reaches the dataplane, is cleared for other types, survives
// the state file and Restore, and replacing the vNIC with nic_add is the
// way to change it. The daemon default is only reported by the Store.
func TestVhostClient(t *testing.T) {
	tests := []struct {
		name string
		typ  model.NICType
		in   bool
		want bool
	}{
		{"vhost-user client", model.NICVhostUser, true, true},
		{"vhost-user server", model.NICVhostUser, false, false},
		{"tap ignores it", model.NICTap, true, false},
		{"bench ignores it", model.NICBench, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, dp := newStore(t)
			n := baseNIC()
			n.Type, n.VhostClient = tc.typ, tc.in
			if tc.typ == model.NICBench {
				n.IPs, n.BType = ips(t, "10.0.0.1"), "ICMP_RCV_LIKE"
			}
			if _, err := s.AddNIC(n); err != nil {
				t.Fatal(err)
			}
			got, _ := s.NICDetails(n.ID)
			if got[0].VhostClient != tc.want {
				t.Errorf("stored VhostClient %t, want %t", got[0].VhostClient, tc.want)
			}
			if d, _ := dp.NIC(n.ID); d.VhostClient != tc.want {
				t.Errorf("dataplane got VhostClient %t, want %t", d.VhostClient, tc.want)
			}
			b, err := json.Marshal(s.State())
			if err != nil {
				t.Fatal(err)
			}
			if has := strings.Contains(string(b), `"vhost_client":true`); has != tc.want {
				t.Errorf("state JSON %s: vhost_client present %t, want %t", b, has, tc.want)
			}
			var back model.State
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			s2, dp2 := newStore(t)
			if err := s2.Restore(back); err != nil {
				t.Fatal(err)
			}
			if d, _ := dp2.NIC(n.ID); d.VhostClient != tc.want {
				t.Errorf("restored into the dataplane with VhostClient %t, want %t", d.VhostClient, tc.want)
			}
		})
	}
	// A state file written before the field existed restores server mode.
	var old model.State
	if err := json.Unmarshal([]byte(`{"version":1,"nics":[{"id":"v","mac":"42:42:42:42:42:42","vni":1,"type":0}]}`), &old); err != nil {
		t.Fatal(err)
	}
	s, dp := newStore(t)
	if err := s.Restore(old); err != nil {
		t.Fatal(err)
	}
	if d, _ := dp.NIC("v"); d.VhostClient {
		t.Error("an old state restored a client-mode vNIC")
	}
	// Re-adding the id with the other mode replaces the port.
	n := baseNIC()
	n.VhostClient = true
	if _, err := s.AddNIC(n); err != nil {
		t.Fatal(err)
	}
	n.VhostClient = false
	dp.ResetCalls()
	if _, err := s.AddNIC(n); err != nil {
		t.Fatal(err)
	}
	if c := dp.Calls(); len(c) != 2 || c[0].Op != modeltest.OpDeleteNIC || c[1].Op != modeltest.OpAddNIC || c[1].NIC.VhostClient {
		t.Errorf("replacing a client vNIC by a server one: calls %+v", c)
	}
	for _, def := range []bool{false, true} {
		if got := model.New(dp, model.Options{DefaultVhostClient: def}).DefaultVhostClient(); got != def {
			t.Errorf("DefaultVhostClient() = %t, want %t", got, def)
		}
	}
}

func TestAddNICReplaces(t *testing.T) {
	s, dp := newStore(t)
	n := baseNIC()
	if _, err := s.AddNIC(n); err != nil {
		t.Fatal(err)
	}
	dp.ResetCalls()
	n.VNI = 1000
	path, err := s.AddNIC(n)
	if err != nil {
		t.Fatal(err)
	}
	if path != "/tmp/qemu-vhost-nic-1" {
		t.Errorf("path %q", path)
	}
	var ops []string
	for _, c := range dp.Calls() {
		ops = append(ops, c.Op+" "+c.ID)
	}
	if want := []string{"DeleteNIC nic-1", "AddNIC nic-1"}; !slices.Equal(ops, want) {
		t.Errorf("calls %q, want %q", ops, want)
	}
	if l := s.NICList(); !slices.Equal(l, []string{"nic-1"}) {
		t.Errorf("list %q", l)
	}
	d, _ := s.NICDetails("nic-1")
	if d[0].VNI != 1000 {
		t.Errorf("vni %d, want 1000", d[0].VNI)
	}
}

func TestAddNICReplaceFailure(t *testing.T) {
	t.Run("old restored", func(t *testing.T) {
		s, dp := newStore(t)
		old := baseNIC()
		if _, err := s.AddNIC(old); err != nil {
			t.Fatal(err)
		}
		before := s.State()
		dp.FailOnce(modeltest.OpAddNIC, "nic-1", errors.New("boom"))
		n := old
		n.VNI = 99
		_, err := s.AddNIC(n)
		wantErr(t, err, model.CodeDataplane, "NIC creation failed")
		if !strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), "restored") {
			t.Errorf("error %q", err)
		}
		if !reflect.DeepEqual(s.State(), before) {
			t.Errorf("state changed: %+v", s.State())
		}
		if got, ok := dp.NIC("nic-1"); !ok || got.VNI != 321 {
			t.Errorf("dataplane nic %+v %v, want the old one", got, ok)
		}
	})
	t.Run("old lost", func(t *testing.T) {
		s, dp := newStore(t)
		if _, err := s.AddNIC(baseNIC()); err != nil {
			t.Fatal(err)
		}
		dp.FailOn(modeltest.OpAddNIC, "", errors.New("boom"))
		_, err := s.AddNIC(baseNIC())
		wantErr(t, err, model.CodeDataplane, "NIC creation failed")
		if !strings.Contains(err.Error(), "removed") {
			t.Errorf("error %q does not say the old nic is removed", err)
		}
		if l := s.NICList(); len(l) != 0 {
			t.Errorf("model still lists %q though the dataplane lost it", l)
		}
	})
	t.Run("delete of old fails", func(t *testing.T) {
		s, dp := newStore(t)
		if _, err := s.AddNIC(baseNIC()); err != nil {
			t.Fatal(err)
		}
		dp.FailOn(modeltest.OpDeleteNIC, "", errors.New("busy"))
		unchangedState(t, s, dp, false, func() {
			n := baseNIC()
			n.VNI = 5
			_, err := s.AddNIC(n)
			wantErr(t, err, model.CodeDataplane, "NIC deletion failed")
		})
	})
	t.Run("new nic fails", func(t *testing.T) {
		s, dp := newStore(t)
		dp.FailOn(modeltest.OpAddNIC, "", errors.New("no tap"))
		_, err := s.AddNIC(baseNIC())
		wantErr(t, err, model.CodeDataplane, "NIC creation failed")
		if len(s.NICList()) != 0 {
			t.Error("failed nic is listed")
		}
	})
}

func ptr[T any](v T) *T { return &v }

func TestUpdateNIC(t *testing.T) {
	start := model.NIC{
		ID: "nic-1", MACText: "42:42:42:42:42:42", VNI: 321,
		IPs:            ips(t, "1.2.3.4", "1.2.3.5"),
		SecurityGroups: []string{"sg-1", "sg-2"},
		IPAntiSpoof:    true,
		PacketTrace:    true,
		TracePath:      "/tmp/custom.pcap",
		// A client-mode vhost-user vNIC: every update keeps the mode.
		VhostClient: true,
	}
	tests := []struct {
		name string
		u    model.NICUpdate
		want func(*model.NIC)
	}{
		{"ips replace", model.NICUpdate{IPs: []string{"4.3.2.1", "1.2.3.4", "4.3.2.1"}},
			func(n *model.NIC) { n.IPs = ips(t, "4.3.2.1", "1.2.3.4") }},
		{"ips normalised", model.NICUpdate{IPs: []string{"2001:0db8:0000:85a3:0000:0000:ac1f:8001"}},
			func(n *model.NIC) { n.IPs = ips(t, "2001:db8:0:85a3::ac1f:8001") }},
		{"single empty ip clears", model.NICUpdate{IPs: []string{""}},
			func(n *model.NIC) { n.IPs = nil }},
		{"empty ips skipped", model.NICUpdate{IPs: []string{"", "9.9.9.9", ""}},
			func(n *model.NIC) { n.IPs = ips(t, "9.9.9.9") }},
		{"sgs replace", model.NICUpdate{SecurityGroups: []string{"sg-3", "sg-1", "sg-3"}},
			func(n *model.NIC) { n.SecurityGroups = []string{"sg-3", "sg-1"} }},
		{"single empty sg clears", model.NICUpdate{SecurityGroups: []string{""}},
			func(n *model.NIC) { n.SecurityGroups = nil }},
		{"antispoof off", model.NICUpdate{IPAntiSpoof: ptr(false)},
			func(n *model.NIC) { n.IPAntiSpoof = false }},
		{"trace off keeps path", model.NICUpdate{PacketTrace: ptr(false)},
			func(n *model.NIC) { n.PacketTrace = false }},
		{"trace path", model.NICUpdate{TracePath: ptr("/tmp/new.pcap")},
			func(n *model.NIC) { n.TracePath = "/tmp/new.pcap" }},
		{"empty trace path keeps path", model.NICUpdate{TracePath: ptr("")},
			func(n *model.NIC) {}},
		{"everything", model.NICUpdate{IPs: []string{"8.8.8.8"}, SecurityGroups: []string{"x"},
			IPAntiSpoof: ptr(false), PacketTrace: ptr(false), TracePath: ptr("/p")},
			func(n *model.NIC) {
				n.IPs, n.SecurityGroups, n.IPAntiSpoof, n.PacketTrace, n.TracePath = ips(t, "8.8.8.8"), []string{"x"}, false, false, "/p"
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, dp := newStore(t)
			if _, err := s.AddNIC(start); err != nil {
				t.Fatal(err)
			}
			before, _ := s.NICDetails("nic-1")
			want := before[0]
			tc.want(&want)
			dp.ResetCalls()
			tc.u.ID = "nic-1"
			if err := s.UpdateNIC(tc.u); err != nil {
				t.Fatal(err)
			}
			got, _ := s.NICDetails("nic-1")
			if !reflect.DeepEqual(got[0], want) {
				t.Errorf("\n got %+v\nwant %+v", got[0], want)
			}
			calls := dp.Calls()
			if reflect.DeepEqual(want, before[0]) {
				if len(calls) != 0 {
					t.Errorf("no-op update called the dataplane: %+v", calls)
				}
				return
			}
			if len(calls) != 1 || calls[0].Op != modeltest.OpUpdateNIC || !reflect.DeepEqual(calls[0].NIC, want) {
				t.Errorf("dataplane calls %+v, want one UpdateNIC with %+v", calls, want)
			}
		})
	}
}

func TestUpdateNICNoChange(t *testing.T) {
	s, dp := newStore(t)
	n := baseNIC()
	n.IPs = ips(t, "1.2.3.4")
	n.IPAntiSpoof = true
	if _, err := s.AddNIC(n); err != nil {
		t.Fatal(err)
	}
	for _, u := range []model.NICUpdate{
		{ID: "nic-1"},
		{ID: "nic-1", IPs: []string{"1.2.3.4"}},
		{ID: "nic-1", IPs: []string{}}, // empty list: no change, as on the wire
		{ID: "nic-1", IPAntiSpoof: ptr(true)},
		{ID: "nic-1", SecurityGroups: []string{""}},
	} {
		unchanged(t, s, dp, func() {
			if err := s.UpdateNIC(u); err != nil {
				t.Errorf("%+v: %v", u, err)
			}
		})
	}
}

func TestUpdateNICErrors(t *testing.T) {
	s, dp := newStore(t)
	if _, err := s.AddNIC(baseNIC()); err != nil {
		t.Fatal(err)
	}
	unchanged(t, s, dp, func() {
		err := s.UpdateNIC(model.NICUpdate{ID: "nope", IPAntiSpoof: ptr(true)})
		wantErr(t, err, model.CodeNotFound, "NIC does not exist with id nope")
	})
	for _, bad := range [][]string{{"1.2.3"}, {"1.2.3.4", "x"}, {"fe80::1%lo"}, {" 1.2.3.4"}} {
		unchanged(t, s, dp, func() {
			err := s.UpdateNIC(model.NICUpdate{ID: "nic-1", IPs: bad})
			wantErr(t, err, model.CodeInvalid, "Bad Nic update format: ")
		})
	}
	// A bad IP list is reported even for an unknown NIC (validation first).
	err := s.UpdateNIC(model.NICUpdate{ID: "nope", IPs: []string{"bad"}})
	wantErr(t, err, model.CodeInvalid, "Bad Nic update format: ")

	dp.FailOn(modeltest.OpUpdateNIC, "", errors.New("boom"))
	dp.ResetCalls()
	before, gen := s.State(), s.Generation()
	err = s.UpdateNIC(model.NICUpdate{ID: "nic-1", IPs: []string{"10.0.0.1"}})
	wantErr(t, err, model.CodeDataplane, "NIC update failed")
	if !reflect.DeepEqual(before, s.State()) || gen != s.Generation() {
		t.Error("failed update changed the state")
	}
}

func TestDeleteNIC(t *testing.T) {
	s, dp := newStore(t)
	unchanged(t, s, dp, func() {
		if err := s.DeleteNIC("nope"); err != nil {
			t.Errorf("delete unknown: %v", err)
		}
	})
	for _, id := range []string{"b", "a", "c"} {
		n := baseNIC()
		n.ID = id
		if _, err := s.AddNIC(n); err != nil {
			t.Fatal(err)
		}
	}
	if l := s.NICList(); !slices.Equal(l, []string{"a", "b", "c"}) {
		t.Errorf("list %q, want sorted", l)
	}
	dp.FailOnce(modeltest.OpDeleteNIC, "b", errors.New("busy"))
	unchangedState(t, s, dp, false, func() {
		wantErr(t, s.DeleteNIC("b"), model.CodeDataplane, "NIC deletion failed")
	})
	for range 2 { // idempotent
		if err := s.DeleteNIC("b"); err != nil {
			t.Fatal(err)
		}
	}
	if l := s.NICList(); !slices.Equal(l, []string{"a", "c"}) {
		t.Errorf("list %q", l)
	}
	if l := dp.NICIDs(); !slices.Equal(l, []string{"a", "c"}) {
		t.Errorf("dataplane nics %q", l)
	}
}

func TestNICDetails(t *testing.T) {
	s, _ := newStore(t)
	for _, id := range []string{"nic-2", "nic-1"} {
		n := baseNIC()
		n.ID = id
		if _, err := s.AddNIC(n); err != nil {
			t.Fatal(err)
		}
	}
	all, err := s.NICDetails("")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].ID != "nic-1" || all[1].ID != "nic-2" {
		t.Errorf("all = %+v", all)
	}
	_, err = s.NICDetails("nic-3")
	wantErr(t, err, model.CodeNotFound, "NIC: nic-3 not found")
	// Details are copies.
	all[0].IPs = append(all[0].IPs, netip.MustParseAddr("1.1.1.1"))
	all[0].SecurityGroups = append(all[0].SecurityGroups, "x")
	again, _ := s.NICDetails("nic-1")
	if len(again[0].IPs) != 0 || len(again[0].SecurityGroups) != 0 {
		t.Error("NICDetails returned shared slices")
	}
}

func TestNICStatsAndCounters(t *testing.T) {
	s, dp := newStore(t)
	if _, err := s.AddNIC(baseNIC()); err != nil {
		t.Fatal(err)
	}
	dp.SetStats("nic-1", model.NICStats{In: 10, Out: 20})
	dp.SetCounters("nic-1", model.NICCounters{RxPackets: 1, TxBytes: 5, Drops: map[string]uint64{"antispoof": 3}})
	st, err := s.NICStats("nic-1")
	if err != nil || st != (model.NICStats{In: 10, Out: 20}) {
		t.Errorf("stats %+v %v", st, err)
	}
	c, err := s.NICCounters("nic-1")
	if err != nil || c.RxPackets != 1 || c.TxBytes != 5 || c.Drops["antispoof"] != 3 {
		t.Errorf("counters %+v %v", c, err)
	}
	_, err = s.NICStats("x")
	wantErr(t, err, model.CodeNotFound, "NIC does not exist with id x")
	_, err = s.NICCounters("x")
	wantErr(t, err, model.CodeNotFound, "NIC does not exist with id x")
	dp.FailOn(modeltest.OpStats, "", errors.New("gone"))
	_, err = s.NICStats("nic-1")
	wantErr(t, err, model.CodeDataplane, "NIC stats failed")
}

func TestStateJSONRoundTrip(t *testing.T) {
	s, _ := newStore(t)
	n := baseNIC()
	n.IPs = ips(t, "1.2.3.4", "2001:db8::1")
	n.SecurityGroups = []string{"sg-1"}
	n.PacketTrace = true
	if _, err := s.AddNIC(n); err != nil {
		t.Fatal(err)
	}
	if err := s.AddSG(model.SG{ID: "sg-1", Members: ips(t, "10.0.0.1"), Rules: []model.Rule{
		{Protocol: 6, PortStart: 22, PortEnd: 22, CIDR: netip.MustParsePrefix("10.0.0.1/24")},
		{Direction: model.Outbound, Protocol: -1, SG: "sg-1"},
	}}); err != nil {
		t.Fatal(err)
	}
	st := s.State()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"version":1`, `"mac":"42:42:42:42:42:42"`, `"2001:db8::1"`, `"cidr":"10.0.0.1/24"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON %s lacks %s", b, want)
		}
	}
	var back model.State
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	// MAC is not serialized (MACText is): Restore parses it again.
	s2, dp2 := newStore(t)
	if err := s2.Restore(back); err != nil {
		t.Fatal(err)
	}
	if got := s2.State(); !reflect.DeepEqual(got, st) {
		t.Errorf("restored\n got %+v\nwant %+v", got, st)
	}
	if l := dp2.NICIDs(); !slices.Equal(l, []string{"nic-1"}) {
		t.Errorf("dataplane after restore: %q", l)
	}
}

func TestRestore(t *testing.T) {
	s, dp := newStore(t)
	if _, err := s.AddNIC(model.NIC{ID: "old", MACText: "42:42:42:42:42:40"}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddSG(model.SG{ID: "old-sg"}); err != nil {
		t.Fatal(err)
	}
	good := baseNIC()
	bad := baseNIC()
	bad.ID, bad.MACText = "bad", "nope"
	failing := baseNIC()
	failing.ID = "failing"
	dp.FailOn(modeltest.OpAddNIC, "failing", errors.New("no socket"))
	err := s.Restore(model.State{
		Version: 1,
		NICs:    []model.NIC{good, bad, failing},
		SGs: []model.SG{{ID: "sg-1", Members: ips(t, "1.1.1.1")}, {ID: ""},
			{ID: "sg-bad", Rules: []model.Rule{{Protocol: 6}}}, {ID: "sg-1"}},
	})
	if err == nil {
		t.Fatal("no error for the bad entries")
	}
	for _, want := range []string{`nic "bad"`, `nic "failing"`, "no socket", `security group ""`,
		`security group "sg-bad"`, `security group "sg-1" appears twice`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if l := s.NICList(); !slices.Equal(l, []string{"nic-1"}) {
		t.Errorf("nics %q", l)
	}
	if l := dp.NICIDs(); !slices.Equal(l, []string{"nic-1"}) {
		t.Errorf("dataplane nics %q (old ones must be removed)", l)
	}
	if l := s.SGList(); !slices.Equal(l, []string{"sg-1"}) {
		t.Errorf("sgs %q", l)
	}
	err = s.Restore(model.State{Version: 2})
	if err == nil || !strings.Contains(err.Error(), "version 2") {
		t.Errorf("version 2: %v", err)
	}
	if err := s.Restore(model.State{}); err != nil {
		t.Errorf("empty zero state: %v", err)
	}
	if len(s.NICList()) != 0 || len(s.SGList()) != 0 {
		t.Error("restoring an empty state left objects")
	}
}

func TestConcurrentUse(t *testing.T) {
	s, _ := newStore(t)
	done := make(chan struct{})
	for i := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for j := range 50 {
				n := baseNIC()
				n.ID = string(rune('a'+i)) + "-" + string(rune('a'+j%26))
				if _, err := s.AddNIC(n); err != nil {
					t.Error(err)
					return
				}
				_ = s.AddMember("sg", "10.0.0.1")
				_ = s.State()
				_ = s.NICList()
				_ = s.DeleteNIC(n.ID)
			}
		}()
	}
	for range 4 {
		<-done
	}
	if l := s.NICList(); len(l) != 0 {
		t.Errorf("left %q", l)
	}
}
