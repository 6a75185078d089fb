package cli

import (
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
)

func TestCxxTextRule(t *testing.T) {
	tests := []struct {
		name string
		rule *protocol.MessageV0_Rule
		want string
	}{
		{
			name: "tcp cidr",
			rule: &protocol.MessageV0_Rule{
				Direction: protocol.MessageV0_Rule_INBOUND.Enum(),
				Protocol:  proto.Int32(6),
				PortStart: proto.Uint32(22),
				PortEnd:   proto.Uint32(22),
				Cidr:      &protocol.MessageV0_Cidr{Address: proto.String("10.0.0.0"), MaskSize: proto.Uint32(24)},
			},
			want: "direction: INBOUND\nprotocol: 6\nport_start: 22\nport_end: 22\ncidr {\n  address: \"10.0.0.0\"\n  mask_size: 24\n}\n",
		},
		{
			name: "any protocol from members, outbound",
			rule: &protocol.MessageV0_Rule{
				// Set in reverse order: output follows field numbers.
				SecurityGroup: proto.String("sg-2"),
				Protocol:      proto.Int32(-1),
				Direction:     protocol.MessageV0_Rule_OUTBOUND.Enum(),
			},
			want: "direction: OUTBOUND\nprotocol: -1\nsecurity_group: \"sg-2\"\n",
		},
		{
			name: "escaping",
			rule: &protocol.MessageV0_Rule{
				Direction:     protocol.MessageV0_Rule_INBOUND.Enum(),
				Protocol:      proto.Int32(1),
				SecurityGroup: proto.String("a\"b'c\\d\ne\tf\rg\x01h\x7fé"),
			},
			want: "direction: INBOUND\nprotocol: 1\nsecurity_group: \"a\\\"b\\'c\\\\d\\ne\\tf\\rg\\001h\\177\\303\\251\"\n",
		},
		{
			name: "explicit zero values are printed",
			rule: &protocol.MessageV0_Rule{
				Direction: protocol.MessageV0_Rule_INBOUND.Enum(),
				Protocol:  proto.Int32(0),
				PortStart: proto.Uint32(0),
				PortEnd:   proto.Uint32(0),
			},
			want: "direction: INBOUND\nprotocol: 0\nport_start: 0\nport_end: 0\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cxxText(tt.rule); got != tt.want {
				t.Errorf("cxxText =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

// TestRuleHashVectors uses the hashes of the original's CLI test
// (tests/49_cli_reliable deletes rules f44fac34f8667927 and
// cfdb94f9418c88f1 of sg-1). The first is the rule added with
// "--dir in --ip-proto tcp --port-start 1000 --port-end 2000 --cidr
// 10.0.0.0/24", the second "--ip-proto 42 --sg-members sg-2" (the daemon
// does not echo ports of non-TCP/UDP rules). Both values were checked with
// std::hash<std::string> compiled by g++ over the same text.
func TestRuleHashVectors(t *testing.T) {
	tests := []struct {
		rule *protocol.MessageV0_Rule
		want string
	}{
		{
			rule: &protocol.MessageV0_Rule{
				Direction: protocol.MessageV0_Rule_INBOUND.Enum(),
				Protocol:  proto.Int32(6),
				PortStart: proto.Uint32(1000),
				PortEnd:   proto.Uint32(2000),
				Cidr:      &protocol.MessageV0_Cidr{Address: proto.String("10.0.0.0"), MaskSize: proto.Uint32(24)},
			},
			want: "f44fac34f8667927",
		},
		{
			rule: &protocol.MessageV0_Rule{
				Direction:     protocol.MessageV0_Rule_INBOUND.Enum(),
				Protocol:      proto.Int32(42),
				SecurityGroup: proto.String("sg-2"),
			},
			want: "cfdb94f9418c88f1",
		},
		{
			rule: &protocol.MessageV0_Rule{
				Direction:     protocol.MessageV0_Rule_INBOUND.Enum(),
				Protocol:      proto.Int32(6),
				PortStart:     proto.Uint32(9999),
				PortEnd:       proto.Uint32(9999),
				SecurityGroup: proto.String("sg-2"),
			},
			want: "2e056606cf527b18",
		},
	}
	for _, tt := range tests {
		if got := ruleHash(tt.rule); got != tt.want {
			t.Errorf("ruleHash(%s) = %s, want %s", cxxText(tt.rule), got, tt.want)
		}
	}
}

func TestRuleLine(t *testing.T) {
	r := &protocol.MessageV0_Rule{
		Direction: protocol.MessageV0_Rule_INBOUND.Enum(),
		Protocol:  proto.Int32(6),
		PortStart: proto.Uint32(1000),
		PortEnd:   proto.Uint32(2000),
		Cidr:      &protocol.MessageV0_Cidr{Address: proto.String("10.0.0.0"), MaskSize: proto.Uint32(24)},
	}
	want := "f44fac34f8667927 | direction: INBOUND - IP protocol: 6 - port start: 1000 - port end: 2000 - cidr: 10.0.0.0/24 - members of sg: Ø"
	if got := ruleLine(r); got != want {
		t.Errorf("ruleLine =\n%s\nwant\n%s", got, want)
	}
}

// TestCxxTextMessages checks nesting, repeated fields, bools, enums and
// unknown fields on a whole envelope, and that the text parses back to the
// same message.
func TestCxxTextMessages(t *testing.T) {
	m := &protocol.Messages{Messages: []*protocol.Message{{
		Revision: proto.Uint32(6),
		Message_0: &protocol.MessageV0{
			MessageId: proto.String("id"),
			Request: &protocol.MessageV0_Request{NicAdd: &protocol.MessageV0_Nic{
				Id:              proto.String("n1"),
				Mac:             proto.String("52:54:00:00:00:01"),
				Vni:             proto.Uint32(42),
				Ip:              []string{"10.0.0.1", "2001:db8::1"},
				IpAntiSpoof:     proto.Bool(false),
				BypassFiltering: proto.Bool(true),
				Type:            protocol.MessageV0_Nic_TAP.Enum(),
			}},
		},
	}}}
	want := `messages {
  revision: 6
  message_0 {
    request {
      nic_add {
        id: "n1"
        mac: "52:54:00:00:00:01"
        vni: 42
        ip: "10.0.0.1"
        ip: "2001:db8::1"
        ip_anti_spoof: false
        bypass_filtering: true
        type: TAP
      }
    }
    message_id: "id"
  }
}
`
	if got := cxxText(m); got != want {
		t.Errorf("cxxText =\n%s\nwant\n%s", got, want)
	}
	back := &protocol.Messages{}
	if err := prototext.Unmarshal([]byte(want), back); err != nil {
		t.Fatalf("parse back: %v", err)
	}
	if !proto.Equal(back, m) {
		t.Errorf("text does not parse back to the same message")
	}

	// Unknown fields (from a newer peer) are printed by number, last.
	withUnknown := &protocol.MessageV0_Cidr{Address: proto.String("::"), MaskSize: proto.Uint32(0)}
	withUnknown.ProtoReflect().SetUnknown([]byte{
		0xa0, 0x06, 0x05, // field 100, varint 5
		0xaa, 0x06, 0x02, 'a', 'b', // field 101, bytes "ab" (not a message)
		0xb5, 0x06, 1, 0, 0, 0, // field 102, fixed32 1
	})
	wantU := "address: \"::\"\nmask_size: 0\n100: 5\n101: \"ab\"\n102: 0x00000001\n"
	if got := cxxText(withUnknown); got != wantU {
		t.Errorf("unknown fields:\n%q\nwant\n%q", got, wantU)
	}
}
