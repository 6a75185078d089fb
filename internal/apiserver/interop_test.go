package apiserver

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/apiv0"
	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/model/modeltest"
)

// TestPythonAPIv0 sends every MessageV0 request from the python3-zmq peer
// through apiserver + apiv0 + model on the fake dataplane, and checks the
// replies as Python decoded them (text format, parsed back here).
func TestPythonAPIv0(t *testing.T) {
	pydir := pyProto(t)
	sockDir := t.TempDir()
	dp := modeltest.NewDataplane()
	dp.SetSocketDir(sockDir)
	dp.SetStats("vnic1", model.NICStats{In: 100, Out: 200})
	dp.SetCounters("vnic1", model.NICCounters{RxPackets: 3, RxBytes: 300, TxPackets: 4, TxBytes: 400,
		Drops: map[string]uint64{"antispoof": 2}})
	dp.SetDOT("strict graph G {\n  vnic1;\n}\n")
	store := model.New(dp, model.Options{})

	start := time.Unix(1_700_000_000, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var srv *Server
	var levels []string
	quitCalled := false
	h := apiv0.New(store, apiv0.Options{
		Quit:        func() { quitCalled = true; cancel() },
		SetLogLevel: func(l string) error { levels = append(levels, l); return nil },
		Requests:    func() uint64 { return srv.Requests() },
		StartTime:   start,
		Now:         func() time.Time { return start.Add(42 * time.Second) },
		Logger:      quietLogger(),
	})
	srv, err := New(Config{Endpoint: "tcp://127.0.0.1:*", Logger: quietLogger()}, h)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ctx) }()

	res := runPeer(t, pydir, "apiv0", srv.Endpoint())
	// app_quit stopped the server after its reply.
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still running after app_quit")
	}
	if !quitCalled {
		t.Fatal("Quit not called")
	}

	order := res["order"].([]any)
	texts := res["replies"].(map[string]any)
	if got := srv.Requests(); got != uint64(len(order)) {
		t.Errorf("Requests() = %d, want %d", got, len(order))
	}
	// reply returns the MessageV0 answer to the request named name, after
	// checking the envelope.
	reply := func(name string) *protocol.MessageV0 {
		t.Helper()
		text, ok := texts[name].(string)
		if !ok {
			t.Fatalf("no reply to %s", name)
		}
		var m protocol.Messages
		if err := prototext.Unmarshal([]byte(text), &m); err != nil {
			t.Fatalf("%s: python's text %q: %v", name, text, err)
		}
		if len(m.Messages) != 1 || m.Messages[0].GetRevision() != protocol.Revision || m.Messages[0].Error != nil {
			t.Fatalf("%s: envelope %s", name, text)
		}
		v := m.Messages[0].GetMessage_0()
		if v.GetMessageId() != name {
			t.Fatalf("%s: message_id %q", name, v.GetMessageId())
		}
		return v
	}
	ok := func(name string) *protocol.MessageV0_Response {
		t.Helper()
		r := reply(name).GetResponse()
		if !r.GetStatus().GetStatus() {
			t.Fatalf("%s: status false: %q", name, r.GetStatus().GetError().GetDescription())
		}
		return r
	}
	failed := func(name string) {
		t.Helper()
		r := reply(name).GetResponse()
		if r.GetStatus().GetStatus() || r.GetStatus().GetError().GetDescription() == "" {
			t.Fatalf("%s: want status false with a description, got %v", name, r)
		}
	}
	strs := func(name string, got, want []string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}

	if p := ok("nic_add").GetNicAdd().GetPath(); p != filepath.Join(sockDir, "qemu-vhost-vnic1") {
		t.Errorf("nic_add path %q", p)
	}
	if p := ok("nic_add_tap").GetNicAdd().GetPath(); p != "vnic2" {
		t.Errorf("TAP nic_add path %q, want the interface name", p)
	}
	ok("nic_update")
	strs("nic_list", ok("nic_list").GetNicList(), []string{"vnic1", "vnic2"})
	nics := ok("nic_details").GetNicDetails()
	if len(nics) != 1 {
		t.Fatalf("nic_details: %d vNICs", len(nics))
	}
	n := nics[0]
	if n.GetId() != "vnic1" || n.GetMac() != "52:54:00:12:34:56" || n.GetVni() != 1337 || !n.GetIpAntiSpoof() {
		t.Errorf("nic_details: %v", n)
	}
	strs("nic_details ip", n.GetIp(), []string{"10.0.0.2"})
	strs("nic_details security_group", n.GetSecurityGroup(), []string{"sg-web"})
	failed("nic_details_missing")
	if fw := ok("nic_export").GetNicExport().GetFwData(); fw == nil || len(fw.GetData()) != 0 {
		t.Errorf("nic_export: %v", fw)
	}
	if st := ok("nic_stats").GetNicStats(); st.GetIn() != 100 || st.GetOut() != 200 {
		t.Errorf("nic_stats: %v", st)
	}
	c := ok("nic_counters").GetNicCounters()
	if c.GetRxPackets() != 3 || c.GetRxBytes() != 300 || c.GetTxPackets() != 4 || c.GetTxBytes() != 400 ||
		len(c.GetDrops()) != 1 || c.GetDrops()[0].GetName() != "antispoof" || c.GetDrops()[0].GetValue() != 2 {
		t.Errorf("nic_counters: %v", c)
	}
	ok("sg_add")
	strs("sg_list", ok("sg_list").GetSgList(), []string{"sg-web"})
	ok("sg_rule_add")
	ok("sg_rule_del")
	udp53 := func(what string, rules []*protocol.MessageV0_Rule) {
		t.Helper()
		if len(rules) != 1 {
			t.Fatalf("%s: %d rules, want 1", what, len(rules))
		}
		r := rules[0]
		if r.GetDirection() != protocol.MessageV0_Rule_INBOUND || r.GetProtocol() != 17 ||
			r.GetPortStart() != 53 || r.GetPortEnd() != 53 ||
			r.GetCidr().GetAddress() != "10.0.0.0" || r.GetCidr().GetMaskSize() != 8 {
			t.Errorf("%s: %v", what, r)
		}
	}
	udp53("sg_rule_list", ok("sg_rule_list").GetSgRuleList())
	ok("sg_member_add")
	ok("sg_member_del")
	strs("sg_member_list", ok("sg_member_list").GetSgMemberList(), []string{"10.0.0.10"})
	sgs := ok("sg_details").GetSgDetails()
	if len(sgs) != 1 || sgs[0].GetId() != "sg-web" {
		t.Fatalf("sg_details: %v", sgs)
	}
	strs("sg_details member", sgs[0].GetMember(), []string{"10.0.0.10"})
	udp53("sg_details rule", sgs[0].GetRule())
	st := ok("app_status").GetAppStatus()
	statusIndex := uint64(slices.Index(order, any("app_status")) + 1)
	if st.GetStartDate() != 1_700_000_000 || st.GetCurrentDate() != 1_700_000_042 ||
		st.GetRequestCounter() != statusIndex || st.GetGraphDot() == "" {
		t.Errorf("app_status: %v (want request_counter %d)", st, statusIndex)
	}
	ok("app_config")
	failed("app_config_bad")
	strs("log levels set", levels, []string{"debug"})
	ok("nic_del")
	strs("nic_list after nic_del", ok("nic_list_after").GetNicList(), []string{"vnic1"})
	ok("sg_del")
	strs("sg_list after sg_del", ok("sg_list_after").GetSgList(), nil)
	ok("app_quit")
	strs("dataplane vNICs", dp.NICIDs(), []string{"vnic1"})
}
