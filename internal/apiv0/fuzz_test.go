package apiv0_test

import (
	"testing"

	"github.com/butterfly-go/butterfly/api/protocol"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

// FuzzHandle feeds arbitrary MessageV0 bytes to a Handler: it must never
// panic, always reply with a status, and its replies must serialize.
func FuzzHandle(f *testing.F) {
	for _, seed := range []string{
		nic1, nic2, `nic_update { id: "nic-1" ip: "" security_group: "" packet_trace: true }`,
		`nic_details: ""`, `nic_stats: "nic-1"`, `nic_export: "nic-1"`, `nic_counters: "nic-1"`,
		`sg_add { id: "sg-1" member: "1.2.3.4" rule { direction: OUTBOUND protocol: 6 port_start: 1 port_end: 2 cidr { address: "::" mask_size: 0 } } }`,
		`sg_rule_add { sg_id: "sg-1" rule { direction: INBOUND protocol: -1 security_group: "sg-1" } }`,
		`sg_member_add { sg_id: "sg-1" member: "::1" }`, `sg_details: ""`, `app_status: true`,
	} {
		req := &protocol.MessageV0_Request{}
		if err := prototext.Unmarshal([]byte(seed), req); err != nil {
			f.Fatal(err)
		}
		b, err := proto.Marshal(&protocol.MessageV0{Request: req, MessageId: proto.String("id")})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req := &protocol.MessageV0{}
		if err := (proto.UnmarshalOptions{AllowPartial: true}).Unmarshal(b, req); err != nil {
			return
		}
		e := newEnv(t)
		e.do(t, nic1)
		for range 2 { // twice: idempotence paths too
			reply := e.h.Handle(req)
			if reply.GetResponse().GetStatus() == nil {
				t.Fatalf("reply without status for %v", req)
			}
			if req.MessageId != nil && reply.GetMessageId() != req.GetMessageId() {
				t.Fatalf("message_id %q not echoed", req.GetMessageId())
			}
			if _, err := proto.Marshal(reply); err != nil {
				t.Fatalf("reply to %v does not marshal: %v", req, err)
			}
		}
	})
}
