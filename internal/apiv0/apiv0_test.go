package apiv0_test

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/apiv0"
	"github.com/butterfly-go/butterfly/internal/logging"
	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/model/modeltest"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

// env is a Handler on a Store on the fake dataplane, configured like the
// original's API golden tests (daemon started with --packet-trace, socket
// dir /tmp, pid 5593).
type env struct {
	h        *apiv0.Handler
	store    *model.Store
	dp       *modeltest.Dataplane
	persists []model.Change
	persist  error
	quits    int
	levels   []string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{dp: modeltest.NewDataplane()}
	e.store = model.New(e.dp, model.Options{
		DefaultPacketTrace: true,
		DefaultTracePath:   func(id string) string { return "/tmp/butterfly-5593-" + id + ".pcap" },
	})
	e.h = apiv0.New(e.store, apiv0.Options{
		Persist: func(c model.Change) error {
			e.persists = append(e.persists, c)
			return e.persist
		},
		Quit:        func() { e.quits++ },
		SetLogLevel: func(l string) error { e.levels = append(e.levels, l); return nil },
		Requests:    func() uint64 { return 42 },
		StartTime:   time.Unix(1000, 0),
		Now:         func() time.Time { return time.Unix(2000, 0) },
	})
	return e
}

// do sends a request written in protobuf text format.
func (e *env) do(t *testing.T, request string) *protocol.MessageV0_Response {
	t.Helper()
	req := &protocol.MessageV0_Request{}
	if err := prototext.Unmarshal([]byte(request), req); err != nil {
		t.Fatalf("bad test request %q: %v", request, err)
	}
	reply := e.h.Handle(&protocol.MessageV0{Request: req})
	if reply == nil || reply.Response == nil || reply.Response.Status == nil || reply.Response.Status.Status == nil {
		t.Fatalf("reply without status: %v", reply)
	}
	return reply.Response
}

// expect checks a response against one written in protobuf text format.
func expect(t *testing.T, got *protocol.MessageV0_Response, want string) {
	t.Helper()
	w := &protocol.MessageV0_Response{}
	if err := prototext.Unmarshal([]byte(want), w); err != nil {
		t.Fatalf("bad test response %q: %v", want, err)
	}
	if !proto.Equal(got, w) {
		t.Errorf("response\n got: %v\nwant: %v", prototext.Format(got), prototext.Format(w))
	}
}

func (e *env) ok(t *testing.T, request, response string) {
	t.Helper()
	expect(t, e.do(t, request), "status { status: true } "+response)
}

// fail checks that a request fails with a description starting with
// prefix, and that it changed nothing and saved nothing.
func (e *env) fail(t *testing.T, request, prefix string) {
	t.Helper()
	before, saved := e.store.State(), len(e.persists)
	res := e.do(t, request)
	if res.GetStatus().GetStatus() {
		t.Errorf("%s: succeeded, want error %q", request, prefix)
		return
	}
	desc := res.GetStatus().GetError().GetDescription()
	if !strings.HasPrefix(desc, prefix) {
		t.Errorf("%s: error %q, want prefix %q", request, desc, prefix)
	}
	want := &protocol.MessageV0_Response{Status: res.Status}
	if !proto.Equal(res, want) {
		t.Errorf("%s: error reply carries data: %v", request, res)
	}
	if after := e.store.State(); !reflect.DeepEqual(before, after) {
		t.Errorf("%s: state changed", request)
	}
	if len(e.persists) != saved {
		t.Errorf("%s: state saved after a failed request", request)
	}
}

const nic1 = `nic_add { id: "nic-1" mac: "42:42:42:42:42:42" vni: 321 ip: "1.2.3.4" ip: "1.2.3.5"
	ip: "2001:0db8:0000:85a3:0000:0000:ac1f:8001" security_group: "sg-1" security_group: "sg-2" ip_anti_spoof: true }`
const nic2 = `nic_add { id: "nic-2" mac: "42:42:42:42:42:41" vni: 320 ip: "3.2.3.4" ip: "3.2.3.5"
	ip: "2001:0db8:0000:85a3:0000:0000:ac1f:8002" security_group: "sg-1" security_group: "sg-4" ip_anti_spoof: false }`
const nic2Details = `nic_details { id: "nic-2" mac: "42:42:42:42:42:41" vni: 320 ip: "3.2.3.4" ip: "3.2.3.5"
	ip: "2001:db8:0:85a3::ac1f:8002" security_group: "sg-1" security_group: "sg-4" ip_anti_spoof: false
	bypass_filtering: false type: VHOST_USER_SERVER path: "/tmp/qemu-vhost-nic-2" packet_trace: true
	packet_trace_path: "/tmp/butterfly-5593-nic-2.pcap" }`

// The scenario of the original's test_nic_00.
func TestScenarioNIC00(t *testing.T) {
	e := newEnv(t)
	e.ok(t, nic1, `nic_add { path: "/tmp/qemu-vhost-nic-1" }`)
	e.ok(t, nic2, `nic_add { path: "/tmp/qemu-vhost-nic-2" }`)
	e.ok(t, `nic_list: true`, `nic_list: "nic-1" nic_list: "nic-2"`)
	e.ok(t, `nic_details: "nic-2"`, nic2Details)
	e.ok(t, `nic_details: ""`, `nic_details { id: "nic-1" mac: "42:42:42:42:42:42" vni: 321 ip: "1.2.3.4" ip: "1.2.3.5"
		ip: "2001:db8:0:85a3::ac1f:8001" security_group: "sg-1" security_group: "sg-2" ip_anti_spoof: true
		bypass_filtering: false type: VHOST_USER_SERVER path: "/tmp/qemu-vhost-nic-1" packet_trace: true
		packet_trace_path: "/tmp/butterfly-5593-nic-1.pcap" } `+nic2Details)
	e.ok(t, `nic_update { id: "nic-1" ip_anti_spoof: false ip: "4.3.2.1" ip: "1.2.3.4" security_group: "sg-1" security_group: "sg-3" }`, ``)
	e.ok(t, `nic_list: true`, `nic_list: "nic-1" nic_list: "nic-2"`)
	e.ok(t, `nic_stats: "nic-1"`, `nic_stats { in: 0 out: 0 }`)
	e.ok(t, `nic_export: "nic-2"`, `nic_export { fw_data { data: "" } }`)
	e.ok(t, `nic_details: "nic-1"`, `nic_details { id: "nic-1" mac: "42:42:42:42:42:42" vni: 321 ip: "4.3.2.1" ip: "1.2.3.4"
		security_group: "sg-1" security_group: "sg-3" ip_anti_spoof: false
		bypass_filtering: false type: VHOST_USER_SERVER path: "/tmp/qemu-vhost-nic-1" packet_trace: true
		packet_trace_path: "/tmp/butterfly-5593-nic-1.pcap" }`)
	if len(e.persists) != 3 {
		t.Errorf("%d saves, want 3 (two adds, one update)", len(e.persists))
	}
}

// test_nic_01 and test_nic_03: re-adding replaces; deletes are idempotent.
func TestScenarioNICReplaceDelete(t *testing.T) {
	e := newEnv(t)
	e.ok(t, nic1, `nic_add { path: "/tmp/qemu-vhost-nic-1" }`)
	e.ok(t, strings.Replace(nic1, "vni: 321", "vni: 42", 1), `nic_add { path: "/tmp/qemu-vhost-nic-1" }`)
	e.ok(t, `nic_list: true`, `nic_list: "nic-1"`)
	if d, _ := e.store.NICDetails("nic-1"); d[0].VNI != 42 {
		t.Errorf("vni %d after replace", d[0].VNI)
	}
	for range 3 {
		e.ok(t, `nic_del: "nic-1"`, ``)
	}
	e.ok(t, `nic_list: true`, ``)
	if len(e.persists) != 3 {
		t.Errorf("%d saves, want 3 (add, replace, first delete)", len(e.persists))
	}
}

// test_sg_rule_00: rules are listed in the original's hash order, and
// ports are not echoed for protocol -1.
func TestScenarioSGRule00(t *testing.T) {
	e := newEnv(t)
	const sg42 = `sg_rule_list { direction: INBOUND protocol: 6 port_start: 0 port_end: 65535 security_group: "sg-42" } `
	const any6 = `sg_rule_list { direction: INBOUND protocol: -1 cidr { address: "2001:db8:0:85a3::ac1f:8001" mask_size: 8 } } `
	const udp = `sg_rule_list { direction: INBOUND protocol: 17 port_start: 0 port_end: 65535 cidr { address: "1.2.3.0" mask_size: 24 } } `
	const some = `sg_rule_list { direction: INBOUND protocol: 6 port_start: 1000 port_end: 65535 security_group: "some-sg" } `
	const someRule = `rule { direction: INBOUND protocol: 6 port_start: 1000 port_end: 65535 security_group: "some-sg" }`
	e.ok(t, `sg_add { id: "sg-1" member: "1.2.3.4" member: "1.2.3.5" member: "1.2.3.6" member: "1.2.3.7"
		rule { direction: INBOUND protocol: 17 port_start: 0 port_end: 65535 cidr { address: "1.2.3.0" mask_size: 24 } }
		rule { direction: INBOUND protocol: 6 port_start: 0 port_end: 65535 security_group: "sg-42" } }`, ``)
	e.ok(t, `sg_list: true`, `sg_list: "sg-1"`)
	e.ok(t, `sg_rule_add { sg_id: "sg-1" rule { direction: INBOUND protocol: -1 port_start: 0 port_end: 1024
		cidr { address: "2001:0db8:0000:85a3:0000:0000:ac1f:8001" mask_size: 8 } } }`, ``)
	e.ok(t, `sg_rule_list: "sg-1"`, sg42+any6+udp)
	e.ok(t, `sg_rule_add { sg_id: "sg-1" `+someRule+` }`, ``)
	e.ok(t, `sg_rule_list: "sg-1"`, sg42+any6+udp+some)
	e.ok(t, `sg_rule_del { sg_id: "sg-1" `+someRule+` }`, ``)
	e.ok(t, `sg_rule_list: "sg-1"`, sg42+any6+udp)
	e.ok(t, `sg_details: "sg-1"`, `sg_details { id: "sg-1" member: "1.2.3.4" member: "1.2.3.5" member: "1.2.3.6" member: "1.2.3.7"
		rule { direction: INBOUND protocol: 6 port_start: 0 port_end: 65535 security_group: "sg-42" }
		rule { direction: INBOUND protocol: -1 cidr { address: "2001:db8:0:85a3::ac1f:8001" mask_size: 8 } }
		rule { direction: INBOUND protocol: 17 port_start: 0 port_end: 65535 cidr { address: "1.2.3.0" mask_size: 24 } } }`)
	// The -1 rule keeps its ports in its identity: without them it is
	// another rule, and deleting it removes nothing.
	e.ok(t, `sg_rule_del { sg_id: "sg-1" rule { direction: INBOUND protocol: -1
		cidr { address: "2001:db8:0:85a3::ac1f:8001" mask_size: 8 } } }`, ``)
	e.ok(t, `sg_rule_list: "sg-1"`, sg42+any6+udp)
}

// test_sg_rule_01: deletes on a missing SG succeed; rule add creates the
// SG; duplicate adds and double deletes are idempotent.
func TestScenarioSGRule01(t *testing.T) {
	e := newEnv(t)
	const rule = `rule { direction: INBOUND protocol: -1 port_start: 0 port_end: 1024
		cidr { address: "2001:0db8:0000:85a3:0000:0000:ac1f:8001" mask_size: 8 } }`
	const listed = `sg_rule_list { direction: INBOUND protocol: -1 cidr { address: "2001:db8:0:85a3::ac1f:8001" mask_size: 8 } }`
	e.ok(t, `sg_rule_del { sg_id: "sg-1" rule { direction: INBOUND protocol: -1 port_start: 0 port_end: 1024
		cidr { address: "2001:0db8:0000:85a3:0000:0000:ac1f:9999" mask_size: 8 } } }`, ``)
	e.ok(t, `sg_list: true`, ``)
	e.fail(t, `sg_rule_list: "sg-1"`, "Security Group not found")
	for range 2 {
		e.ok(t, `sg_rule_add { sg_id: "sg-1" `+rule+` }`, ``)
		e.ok(t, `sg_rule_list: "sg-1"`, listed)
	}
	for range 2 {
		e.ok(t, `sg_rule_del { sg_id: "sg-1" `+rule+` }`, ``)
		e.ok(t, `sg_rule_list: "sg-1"`, ``)
	}
	if len(e.persists) != 2 {
		t.Errorf("%d saves, want 2 (first add, first delete)", len(e.persists))
	}
}

// test_sg_member_00 and _01.
func TestScenarioSGMembers(t *testing.T) {
	e := newEnv(t)
	e.ok(t, `sg_member_del { sg_id: "sg-1" member: "2001:0db8:0000:85a3::0000:ac1f:8002" }`, ``)
	e.ok(t, `sg_list: true`, ``)
	e.fail(t, `sg_member_list: "sg-1"`, "Security Group not found")
	e.ok(t, `sg_add { id: "sg-1" member: "1.2.3.4" member: "1.2.3.5" member: "1.2.3.6" member: "1.2.3.7" }`, ``)
	const four = `sg_member_list: "1.2.3.4" sg_member_list: "1.2.3.5" sg_member_list: "1.2.3.6" sg_member_list: "1.2.3.7" `
	e.ok(t, `sg_member_list: "sg-1"`, four)
	e.ok(t, `sg_member_add { sg_id: "sg-1" member: "2001:0db8:0000:85a3:0000:0000:ac1f:8001" }`, ``)
	e.ok(t, `sg_member_add { sg_id: "sg-1" member: "2001:0db8:0000:85a3:0000:0000:ac1f:8001" }`, ``)
	e.ok(t, `sg_member_list: "sg-1"`, four+`sg_member_list: "2001:db8:0:85a3::ac1f:8001"`)
	e.ok(t, `sg_member_add { sg_id: "sg-1" member: "2001:0db8:0000:85a3:0000:0000:ac1f:8002" }`, ``)
	e.ok(t, `sg_member_list: "sg-1"`, four+`sg_member_list: "2001:db8:0:85a3::ac1f:8001" sg_member_list: "2001:db8:0:85a3::ac1f:8002"`)
	e.ok(t, `sg_member_del { sg_id: "sg-1" member: "2001:0db8:0000:85a3::0000:ac1f:8001" }`, ``)
	e.ok(t, `sg_member_list: "sg-1"`, four+`sg_member_list: "2001:db8:0:85a3::ac1f:8002"`)
	e.ok(t, `sg_member_del { sg_id: "sg-1" member: "2001:0db8::85a3:0000:0000:ac1f:8002" }`, ``)
	e.ok(t, `sg_member_del { sg_id: "sg-1" member: "2001:0db8::85a3:0000:0000:ac1f:8002" }`, ``)
	e.ok(t, `sg_member_list: "sg-1"`, four)
	// Member add creates a missing SG.
	e.ok(t, `sg_member_add { sg_id: "sg-2" member: "10.0.0.1" }`, ``)
	e.ok(t, `sg_list: true`, `sg_list: "sg-1" sg_list: "sg-2"`)
}

// test_sg_00 / test_sg_01: sg_add replaces, deletes are idempotent.
func TestScenarioSG(t *testing.T) {
	e := newEnv(t)
	e.ok(t, `sg_add { id: "sg-1" member: "2001:0db8:0000:85a3:0000:0000:ac1f:8001"
		rule { direction: OUTBOUND protocol: 1 port_start: 5 port_end: 2 cidr { address: "10.0.0.1" mask_size: 8 } } }`, ``)
	e.ok(t, `sg_details: ""`, `sg_details { id: "sg-1" member: "2001:db8:0:85a3::ac1f:8001"
		rule { direction: OUTBOUND protocol: 1 cidr { address: "10.0.0.1" mask_size: 8 } } }`)
	e.ok(t, `sg_add { id: "sg-1" }`, ``)
	e.ok(t, `sg_details: "sg-1"`, `sg_details { id: "sg-1" }`)
	e.ok(t, `sg_add { id: "sg-0" }`, ``)
	e.ok(t, `sg_list: true`, `sg_list: "sg-0" sg_list: "sg-1"`)
	e.ok(t, `sg_del: "sg-1"`, ``)
	e.ok(t, `sg_del: "sg-1"`, ``)
	e.ok(t, `sg_list: true`, `sg_list: "sg-0"`)
	e.fail(t, `sg_details: "sg-1"`, "Sg not found")
}

func TestFirstRequestFieldWins(t *testing.T) {
	e := newEnv(t)
	e.ok(t, nic1, `nic_add { path: "/tmp/qemu-vhost-nic-1" }`)
	// nic_list (4) comes before sg_list (10) and nic_counters (100).
	e.ok(t, `sg_list: true nic_list: true nic_counters: "nic-1"`, `nic_list: "nic-1"`)
	// nic_del (3) before nic_list (4): the NIC is deleted, no list.
	e.ok(t, `nic_list: true nic_del: "nic-1"`, ``)
	e.ok(t, `nic_list: true`, ``)
}

func TestMessageEnvelope(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name string
		req  *protocol.MessageV0
		want string
	}{
		{"nil", nil, `response { status { status: false error { description: "MessageV0 appears to not have any request inside" } } }`},
		{"no request", &protocol.MessageV0{MessageId: proto.String("x")},
			`response { status { status: false error { description: "MessageV0 appears to not have any request inside" } } } message_id: "x"`},
		{"empty request", &protocol.MessageV0{Request: &protocol.MessageV0_Request{}, MessageId: proto.String("")},
			`response { status { status: false error { description: "MessageV0 appears to not have any request" } } } message_id: ""`},
		{"app_config", &protocol.MessageV0{MessageId: proto.String("Some id"),
			Request: &protocol.MessageV0_Request{AppConfig: &protocol.MessageV0_AppConfigReq{LogLevel: proto.String("info")}}},
			`response { status { status: true } } message_id: "Some id"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := e.h.Handle(tc.req)
			want := &protocol.MessageV0{}
			if err := prototext.Unmarshal([]byte(tc.want), want); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("got %v, want %v", got, want)
			}
			// Replies must serialize (required fields set).
			if _, err := proto.Marshal(got); err != nil {
				t.Errorf("reply does not marshal: %v", err)
			}
		})
	}
}

func TestValidationErrors(t *testing.T) {
	tests := []struct{ req, prefix string }{
		{`nic_add { id: "n" mac: "zz" vni: 1 }`, `Bad NIC format: mac "zz" is not a MAC-48 address`},
		{`nic_add { id: "n" mac: "42:42:42:42:42:42" vni: 16777216 }`, `Bad NIC format: vni 16777216`},
		{`nic_add { id: "n" mac: "42:42:42:42:42:42" vni: 1 ip: "1.2.3.4" ip: "1.2.3" }`, `Bad NIC format: ip "1.2.3" is not an IPv4 or IPv6 address`},
		{`nic_add { id: "" mac: "42:42:42:42:42:42" vni: 1 }`, `Bad NIC format: id is empty`},
		{`nic_add { id: "a/b" mac: "42:42:42:42:42:42" vni: 1 }`, `Bad NIC format: id "a/b"`},
		{`nic_add { id: "n" mac: "42:42:42:42:42:42" vni: 1 type: BENCH ip: "1.1.1.1" }`, `Bad NIC format: a BENCH nic needs a btype`},
		{`nic_add { id: "n" mac: "42:42:42:42:42:42" vni: 1 type: BENCH ip: "1.1.1.1" btype: "ICMP_SND_LIKE" dip: "1.1.1.2" }`,
			`Bad NIC format: an ICMP_SND_LIKE BENCH nic needs dip and dmac`},
		{`nic_update { id: "nic-1" ip: "1.2.3.4" ip: "nope" }`, `Bad Nic update format: ip "nope"`},
		{`nic_update { id: "nic-9" ip_anti_spoof: true }`, `NIC does not exist with id nic-9`},
		{`nic_details: "nic-9"`, `NIC: nic-9 not found`},
		{`nic_export: "nic-9"`, `NIC does not exist with id nic-9`},
		{`nic_export: ""`, `NIC does not exist with id `},
		{`nic_stats: "nic-9"`, `NIC does not exist with id nic-9`},
		{`nic_counters: "nic-9"`, `NIC does not exist with id nic-9`},
		{`sg_add { id: "sg-1" member: "1.2.3.4" member: "1.2.3.256" }`, `Bad Security Group format: member "1.2.3.256"`},
		{`sg_add { id: "sg-1" rule { direction: INBOUND protocol: 6 port_start: 1 security_group: "x" } }`,
			`Bad Security Group format: rule 1: protocol 6 needs port_start and port_end`},
		{`sg_add { id: "sg-1" rule { direction: INBOUND protocol: 1 security_group: "x" } rule { direction: INBOUND protocol: 1 } }`,
			`Bad Security Group format: rule 2: a rule needs a cidr or a security_group`},
		{`sg_add { id: "sg-1" rule { direction: INBOUND protocol: 1 cidr { address: "10.0.0.0" mask_size: 33 } } }`,
			`Bad Security Group format: rule 1: cidr 10.0.0.0/33: mask longer than 32 bits`},
		{`sg_add { id: "" }`, `Bad Security Group format: id is empty`},
		{`sg_rule_add { sg_id: "sg-1" rule { direction: INBOUND protocol: 17 port_end: 5 cidr { address: "::" mask_size: 0 } } }`,
			`Bad Security Group rule format: protocol 17 needs port_start and port_end`},
		{`sg_rule_add { sg_id: "sg-1" rule { direction: INBOUND protocol: 17 port_start: 6 port_end: 5 cidr { address: "::" mask_size: 0 } } }`,
			`Bad Security Group rule format: port range 6-5: start after end`},
		{`sg_rule_add { sg_id: "sg-1" rule { direction: INBOUND protocol: 6 port_start: 0 port_end: 65536 cidr { address: "::" mask_size: 0 } } }`,
			`Bad Security Group rule format: port range 0-65536`},
		{`sg_rule_add { sg_id: "sg-1" rule { direction: INBOUND protocol: 256 cidr { address: "::" mask_size: 0 } } }`,
			`Bad Security Group rule format: protocol 256`},
		{`sg_rule_add { sg_id: "sg-1" rule { direction: INBOUND protocol: -2 cidr { address: "::" mask_size: 0 } } }`,
			`Bad Security Group rule format: protocol -2`},
		{`sg_rule_add { sg_id: "sg-1" rule { direction: INBOUND protocol: 1 cidr { address: "::" mask_size: 129 } } }`,
			`Bad Security Group rule format: cidr ::/129: mask longer than 128 bits`},
		{`sg_rule_add { sg_id: "sg-1" rule { direction: INBOUND protocol: 1 cidr { address: "10.0.0.0/8" mask_size: 8 } } }`,
			`Bad Security Group rule format: cidr address: "10.0.0.0/8" is not an IPv4 or IPv6 address`},
		{`sg_rule_add { sg_id: "sg-1" rule { direction: INBOUND protocol: 1 cidr { address: "::" mask_size: 0 } security_group: "x" } }`,
			`Bad Security Group rule format: cidr and security_group are mutually exclusive`},
		{`sg_rule_add { sg_id: "sg-1" rule { direction: INBOUND protocol: 1 } }`,
			`Bad Security Group rule format: a rule needs a cidr or a security_group`},
		{`sg_rule_add { sg_id: "sg-1" rule { direction: INBOUND protocol: 1 security_group: "" } }`,
			`Bad Security Group rule format: a rule needs a cidr or a security_group`},
		{`sg_rule_add { sg_id: "" rule { direction: INBOUND protocol: 1 security_group: "x" } }`,
			`Bad Security Group rule format: sg_id is empty`},
		{`sg_rule_del { sg_id: "sg-1" rule { direction: INBOUND protocol: 1 } }`,
			`Bad Security Group rule format: a rule needs a cidr or a security_group`},
		{`sg_rule_list: "nope"`, `Security Group not found`},
		{`sg_member_add { sg_id: "sg-1" member: "1.2.3.4.5" }`, `Bad IP format: member "1.2.3.4.5"`},
		{`sg_member_add { sg_id: "sg-9" member: "" }`, `Bad IP format`},
		{`sg_member_del { sg_id: "sg-1" member: "x" }`, `Bad IP format`},
		{`sg_member_list: "nope"`, `Security Group not found`},
		{`sg_details: "nope"`, `Sg not found`},
		{`app_config { log_level: "verbose" }`, `Application configuration failed: log level: failed`},
		{`nic_add { id: "t" mac: "42:42:42:42:42:42" vni: 1 type: TAP vhost_user_client: true }`,
			`Bad NIC format: vhost_user_client is for VHOST_USER_SERVER nics, not TAP`},
	}
	for _, tc := range tests {
		t.Run(tc.req, func(t *testing.T) {
			e := newEnv(t)
			e.ok(t, nic1, `nic_add { path: "/tmp/qemu-vhost-nic-1" }`)
			e.ok(t, `sg_add { id: "sg-1" member: "9.9.9.9" rule { direction: INBOUND protocol: 1 security_group: "sg-1" } }`, ``)
			e.fail(t, tc.req, tc.prefix)
			if len(e.levels) != 0 {
				t.Errorf("log level set to %q", e.levels)
			}
		})
	}
}

func TestNICTypesAndDefaults(t *testing.T) {
	e := newEnv(t)
	e.ok(t, `nic_add { id: "tap0" mac: "42:42:42:42:42:42" vni: 1 type: TAP packet_trace: false }`, `nic_add { path: "tap0" }`)
	e.ok(t, `nic_add { id: "b" mac: "42:42:42:42:42:43" vni: 1 type: BENCH ip: "10.0.0.1" btype: "ICMP_SND_LIKE"
		dip: "10.0.0.2" dmac: "42:42:42:42:42:44" packet_trace_path: "/var/tmp/b.pcap" path: "ignored" }`, `nic_add { path: "" }`)
	// nic_details reports the true type (the original said vhost).
	e.ok(t, `nic_details: ""`, `
		nic_details { id: "b" mac: "42:42:42:42:42:43" vni: 1 ip: "10.0.0.1" ip_anti_spoof: false bypass_filtering: false
			type: BENCH path: "" packet_trace: true packet_trace_path: "/var/tmp/b.pcap"
			btype: "ICMP_SND_LIKE" dip: "10.0.0.2" dmac: "42:42:42:42:42:44" }
		nic_details { id: "tap0" mac: "42:42:42:42:42:42" vni: 1 ip_anti_spoof: false bypass_filtering: false
			type: TAP path: "tap0" packet_trace: false packet_trace_path: "/tmp/butterfly-5593-tap0.pcap" }`)
}

// TestVhostUserClient: nic_add takes vhost_user_client, or the daemon's
// default when it is absent; nic_details reports it for client-mode
// vNICs, and for every vhost-user vNIC when the default is client mode,
// so that its output replayed as nic_add on a daemon with the other
// default recreates the same mode. Server-mode vNICs on a server-default
// daemon are reported without the field, as the original did. An update
// cannot change the mode.
func TestVhostUserClient(t *testing.T) {
	newDaemon := func(defaultClient bool) *apiv0.Handler {
		store := model.New(modeltest.NewDataplane(), model.Options{DefaultVhostClient: defaultClient})
		return apiv0.New(store, apiv0.Options{})
	}
	call := func(t *testing.T, h *apiv0.Handler, req *protocol.MessageV0_Request) *protocol.MessageV0_Response {
		t.Helper()
		res := h.Handle(&protocol.MessageV0{Request: req}).GetResponse()
		if !res.GetStatus().GetStatus() {
			t.Fatalf("%v: %s", req, res.GetStatus().GetError().GetDescription())
		}
		return res
	}
	details := func(t *testing.T, h *apiv0.Handler) *protocol.MessageV0_Nic {
		t.Helper()
		d := call(t, h, &protocol.MessageV0_Request{NicDetails: proto.String("v")}).GetNicDetails()
		if len(d) != 1 {
			t.Fatalf("nic_details: %v", d)
		}
		return d[0]
	}
	tests := []struct {
		name          string
		defaultClient bool
		field         *bool // vhost_user_client in nic_add
		typ           protocol.MessageV0_Nic_Type
		wantClient    bool
		wantField     *bool // in nic_details
	}{
		{"server default, absent", false, nil, protocol.MessageV0_Nic_VHOST_USER_SERVER, false, nil},
		{"server default, false", false, proto.Bool(false), protocol.MessageV0_Nic_VHOST_USER_SERVER, false, nil},
		{"server default, true", false, proto.Bool(true), protocol.MessageV0_Nic_VHOST_USER_SERVER, true, proto.Bool(true)},
		{"client default, absent", true, nil, protocol.MessageV0_Nic_VHOST_USER_SERVER, true, proto.Bool(true)},
		{"client default, false", true, proto.Bool(false), protocol.MessageV0_Nic_VHOST_USER_SERVER, false, proto.Bool(false)},
		{"client default, true", true, proto.Bool(true), protocol.MessageV0_Nic_VHOST_USER_SERVER, true, proto.Bool(true)},
		{"client default, tap", true, nil, protocol.MessageV0_Nic_TAP, false, nil},
		{"client default, tap false", true, proto.Bool(false), protocol.MessageV0_Nic_TAP, false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newDaemon(tc.defaultClient)
			add := &protocol.MessageV0_Nic{Id: proto.String("v"), Mac: proto.String("42:42:42:42:42:42"),
				Vni: proto.Uint32(1), Type: tc.typ.Enum(), VhostUserClient: tc.field}
			call(t, h, &protocol.MessageV0_Request{NicAdd: add})
			d := details(t, h)
			if got := d.VhostUserClient; (got == nil) != (tc.wantField == nil) || (got != nil && *got != *tc.wantField) {
				t.Errorf("nic_details vhost_user_client = %v, want %v", fmtBool(got), fmtBool(tc.wantField))
			}
			// The update request has no such field: the mode stays.
			call(t, h, &protocol.MessageV0_Request{NicUpdate: &protocol.MessageV0_NicUpdateReq{Id: proto.String("v"), Ip: []string{"10.0.0.1"}}})
			if d2 := details(t, h); d2.GetVhostUserClient() != tc.wantClient {
				t.Errorf("after nic_update: client %t, want %t", d2.GetVhostUserClient(), tc.wantClient)
			}
			// Replay the details on daemons with either default, as
			// butterfly dump does (it makes an absent field of a
			// vhost-user vNIC explicit: false): the mode is the same.
			for _, other := range []bool{false, true} {
				h2 := newDaemon(other)
				replay := proto.Clone(d).(*protocol.MessageV0_Nic)
				if replay.VhostUserClient == nil && replay.GetType() == protocol.MessageV0_Nic_VHOST_USER_SERVER {
					replay.VhostUserClient = proto.Bool(false)
				}
				call(t, h2, &protocol.MessageV0_Request{NicAdd: replay})
				if got := details(t, h2).GetVhostUserClient(); got != tc.wantClient {
					t.Errorf("replayed on a daemon with default client=%t: client %t, want %t", other, got, tc.wantClient)
				}
			}
		})
	}
}

func fmtBool(b *bool) string {
	if b == nil {
		return "unset"
	}
	if *b {
		return "true"
	}
	return "false"
}

func TestNICUpdateTrace(t *testing.T) {
	e := newEnv(t)
	e.ok(t, `nic_add { id: "n" mac: "42:42:42:42:42:42" vni: 1 packet_trace: false ip: "1.1.1.1" sniff_target_nic_id: "x" bypass_filtering: true }`,
		`nic_add { path: "/tmp/qemu-vhost-n" }`)
	e.ok(t, `nic_update { id: "n" packet_trace: true packet_trace_path: "/tmp/p.pcap" }`, ``)
	// An update without a path keeps the current one (the original reset it).
	e.ok(t, `nic_update { id: "n" packet_trace: false }`, ``)
	e.ok(t, `nic_update { id: "n" packet_trace: true }`, ``)
	e.ok(t, `nic_update { id: "n" ip: "" }`, ``)
	e.ok(t, `nic_details: "n"`, `nic_details { id: "n" mac: "42:42:42:42:42:42" vni: 1 ip_anti_spoof: false
		sniff_target_nic_id: "x" bypass_filtering: true type: VHOST_USER_SERVER path: "/tmp/qemu-vhost-n"
		packet_trace: true packet_trace_path: "/tmp/p.pcap" }`)
	n, _ := e.dp.NIC("n")
	if n.TracePath != "/tmp/p.pcap" || !n.PacketTrace || len(n.IPs) != 0 {
		t.Errorf("dataplane nic %+v", n)
	}
}

func TestStatsCountersStatus(t *testing.T) {
	e := newEnv(t)
	e.ok(t, nic1, `nic_add { path: "/tmp/qemu-vhost-nic-1" }`)
	e.dp.SetStats("nic-1", model.NICStats{In: 1500, Out: 9000})
	e.dp.SetCounters("nic-1", model.NICCounters{RxPackets: 1, RxBytes: 2, TxPackets: 3, TxBytes: 4,
		Drops: map[string]uint64{"firewall": 7, "antispoof": 5}})
	e.dp.SetDOT("strict graph G {}\n")
	e.ok(t, `nic_stats: "nic-1"`, `nic_stats { in: 1500 out: 9000 }`)
	e.ok(t, `nic_counters: "nic-1"`, `nic_counters { rx_packets: 1 rx_bytes: 2 tx_packets: 3 tx_bytes: 4
		drops { name: "antispoof" value: 5 } drops { name: "firewall" value: 7 } }`)
	// A multiqueue vNIC: its queue pairs, in order.
	e.dp.SetCounters("nic-1", model.NICCounters{RxPackets: 5, TxPackets: 7,
		Queues: []model.QueueCounters{{RxPackets: 2, TxPackets: 0}, {RxPackets: 3, TxPackets: 7}}})
	e.ok(t, `nic_counters: "nic-1"`, `nic_counters { rx_packets: 5 rx_bytes: 0 tx_packets: 7 tx_bytes: 0
		queues { queue: 0 rx_packets: 2 tx_packets: 0 } queues { queue: 1 rx_packets: 3 tx_packets: 7 } }`)
	e.ok(t, `app_status: true`, `app_status { start_date: 1000 current_date: 2000 request_counter: 42 graph_dot: "strict graph G {}\n" }`)
	e.dp.SetIssues([]model.NICIssue{{ID: "nic-1", Reason: "namespace gone"}, {ID: "nic-2", Reason: "also gone"}})
	e.ok(t, `app_status: true`, `app_status { start_date: 1000 current_date: 2000 request_counter: 42 graph_dot: "strict graph G {}\n"
		nic_issues { nic_id: "nic-1" reason: "namespace gone" } nic_issues { nic_id: "nic-2" reason: "also gone" } }`)
	e.dp.SetIssues(nil)
	e.dp.FailOn(modeltest.OpStats, "", errors.New("port gone"))
	e.fail(t, `nic_stats: "nic-1"`, "NIC stats failed: nic \"nic-1\": port gone")
}

func TestAppConfigAndQuit(t *testing.T) {
	e := newEnv(t)
	for _, l := range logging.LevelNames() {
		e.ok(t, `app_config { log_level: "`+l+`" }`, ``)
	}
	e.ok(t, `app_config { }`, ``)
	if !reflect.DeepEqual(e.levels, logging.LevelNames()) {
		t.Errorf("levels set %q", e.levels)
	}
	e.h = apiv0.New(e.store, apiv0.Options{SetLogLevel: func(string) error { return errors.New("no syslog") }})
	e.fail(t, `app_config { log_level: "debug" }`, "Application configuration failed: log level: failed: no syslog")

	e = newEnv(t)
	e.ok(t, `app_quit: true`, ``)
	if e.quits != 1 {
		t.Errorf("Quit called %d times", e.quits)
	}
	// Without callbacks nothing breaks.
	h := apiv0.New(e.store, apiv0.Options{})
	for _, r := range []*protocol.MessageV0_Request{
		{AppQuit: proto.Bool(true)}, {AppStatus: proto.Bool(true)},
		{AppConfig: &protocol.MessageV0_AppConfigReq{LogLevel: proto.String("info")}},
		{SgDel: proto.String("x")},
	} {
		if !h.Handle(&protocol.MessageV0{Request: r}).GetResponse().GetStatus().GetStatus() {
			t.Errorf("%v failed without callbacks", r)
		}
	}
}

func TestPersistence(t *testing.T) {
	e := newEnv(t)
	e.ok(t, nic1, `nic_add { path: "/tmp/qemu-vhost-nic-1" }`)
	if len(e.persists) != 1 || len(e.persists[0].NICs) != 1 {
		t.Fatalf("saves %+v", e.persists)
	}
	saved := replay(model.State{Version: model.StateVersion}, e.persists[0])
	// Reads and no-op changes save nothing.
	for _, r := range []string{`nic_list: true`, `nic_details: ""`, `sg_list: true`, `app_status: true`,
		`nic_del: "unknown"`, `sg_del: "unknown"`, `nic_update { id: "nic-1" ip_anti_spoof: true }`,
		`sg_member_del { sg_id: "x" member: "1.1.1.1" }`} {
		e.do(t, r)
	}
	if len(e.persists) != 1 {
		t.Errorf("%d saves after reads and no-ops, want 1", len(e.persists))
	}
	// Every kind of change saves, before the reply.
	for _, r := range []string{
		`nic_update { id: "nic-1" ip_anti_spoof: false }`,
		`sg_add { id: "sg-1" }`,
		`sg_rule_add { sg_id: "sg-1" rule { direction: INBOUND protocol: -1 security_group: "sg-1" } }`,
		`sg_rule_del { sg_id: "sg-1" rule { direction: INBOUND protocol: -1 security_group: "sg-1" } }`,
		`sg_member_add { sg_id: "sg-1" member: "1.1.1.1" }`,
		`sg_member_del { sg_id: "sg-1" member: "1.1.1.1" }`,
		`sg_del: "sg-1"`,
		`nic_del: "nic-1"`,
	} {
		n := len(e.persists)
		e.ok(t, r, ``)
		if len(e.persists) != n+1 {
			t.Errorf("%s: %d saves, want 1", r, len(e.persists)-n)
			continue
		}
		saved = replay(saved, e.persists[len(e.persists)-1])
		if want := e.store.State(); !reflect.DeepEqual(saved, want) {
			t.Errorf("%s: saved changes give\n%+v\nthe store has\n%+v", r, saved, want)
		}
	}
	// A failed save is reported; the change stays applied.
	e.persist = errors.New("disk full")
	res := e.do(t, `sg_add { id: "sg-2" }`)
	if res.GetStatus().GetStatus() || !strings.Contains(res.GetStatus().GetError().GetDescription(), "disk full") {
		t.Errorf("failed save: %v", res)
	}
	if l := e.store.SGList(); len(l) != 1 || l[0] != "sg-2" {
		t.Errorf("sgs %q", l)
	}
}

// TestPersistGetsTheChangeOnly: each request hands Persist the objects
// it changed, not the whole state, whether 10 or 10,000 vNICs exist.
func TestPersistGetsTheChangeOnly(t *testing.T) {
	for _, nics := range []int{10, 10000} {
		t.Run(fmt.Sprint(nics), func(t *testing.T) {
			e := newEnv(t)
			for i := range nics {
				n := model.NIC{ID: fmt.Sprintf("n-%d", i), MACText: "52:54:00:00:00:01", SecurityGroups: []string{"sg-1"}}
				if _, err := e.store.AddNIC(n); err != nil {
					t.Fatal(err)
				}
			}
			e.store.TakeChanges()
			for _, tt := range []struct {
				request string
				want    model.Change
			}{
				{nic1, model.Change{NICs: []model.NIC{{ID: "nic-1"}}}},
				{`sg_rule_add { sg_id: "sg-1" rule { direction: INBOUND protocol: 6 port_start: 22 port_end: 22 cidr { address: "10.0.0.0" mask_size: 8 } } }`,
					model.Change{SGs: []model.SG{{ID: "sg-1"}}}},
				{`sg_member_add { sg_id: "sg-1" member: "10.0.0.9" }`, model.Change{SGs: []model.SG{{ID: "sg-1"}}}},
				{`nic_del: "n-5"`, model.Change{DelNICs: []string{"n-5"}}},
			} {
				n := len(e.persists)
				e.do(t, tt.request)
				if len(e.persists) != n+1 {
					t.Fatalf("%s: %d saves, want 1", tt.request, len(e.persists)-n)
				}
				got := e.persists[n]
				ids := func(c model.Change) [4][]string {
					var out [4][]string
					for _, x := range c.NICs {
						out[0] = append(out[0], x.ID)
					}
					for _, x := range c.SGs {
						out[1] = append(out[1], x.ID)
					}
					out[2], out[3] = c.DelNICs, c.DelSGs
					return out
				}
				if !reflect.DeepEqual(ids(got), ids(tt.want)) {
					t.Errorf("%s: Persist got %v, want %v", tt.request, ids(got), ids(tt.want))
				}
			}
		})
	}
}

// replay returns st with c applied, vNICs and groups sorted by id, as
// model.Store.State returns them.
func replay(st model.State, c model.Change) model.State {
	nics := slices.DeleteFunc(slices.Clone(st.NICs), func(n model.NIC) bool {
		return slices.Contains(c.DelNICs, n.ID) || slices.ContainsFunc(c.NICs, func(m model.NIC) bool { return m.ID == n.ID })
	})
	sgs := slices.DeleteFunc(slices.Clone(st.SGs), func(g model.SG) bool {
		return slices.Contains(c.DelSGs, g.ID) || slices.ContainsFunc(c.SGs, func(h model.SG) bool { return h.ID == g.ID })
	})
	nics = append(nics, c.NICs...)
	sgs = append(sgs, c.SGs...)
	slices.SortFunc(nics, func(a, b model.NIC) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(sgs, func(a, b model.SG) int { return strings.Compare(a.ID, b.ID) })
	return model.State{Version: model.StateVersion, NICs: append([]model.NIC{}, nics...), SGs: append([]model.SG{}, sgs...)}
}
