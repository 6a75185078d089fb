package apiserver

import (
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/crypto"
)

// FuzzProcess feeds arbitrary frames to the envelope logic of a server
// without a key and of a server with one. Properties:
//   - every reply is a well-formed Messages;
//   - a clear request that parses gets one reply Message per request
//     Message, in order, revision 6, with the message_id echoed;
//   - the keyed server answers the same frame sealed in an Encrypted
//     envelope with an encrypted reply that opens to exactly what the
//     unkeyed server answers in clear.
//
// The seed corpus is in testdata/fuzz/FuzzProcess; fuzz with
//
//	go test -run '^$' -fuzz FuzzProcess -fuzztime 30s -fuzzminimizetime 200x ./internal/apiserver
//
// (the bounded minimization keeps the workers from spending most of the
// time minimizing each new input).
func FuzzProcess(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0xff})
	f.Add(mustMarshal(f, threeRequests()))
	f.Add(mustMarshal(f, msgs(v0("n", &protocol.MessageV0_Request{NicAdd: &protocol.MessageV0_Nic{
		Id: proto.String("vnic1"), Mac: proto.String("52:54:00:00:00:01"), Vni: proto.Uint32(42),
		Ip: []string{"10.0.0.1"}, SecurityGroup: []string{"sg1"},
	}}))))
	f.Add(mustMarshal(f, &protocol.Messages{Encrypted: &protocol.Encrypted{Aes256CbcSha512: make([]byte, 96)}}))

	key := testKey()
	clear := newTestServer(f, nil, nil)
	keyed := newTestServer(f, key, nil)
	f.Fuzz(func(t *testing.T, frame []byte) {
		reply := clear.Process(frame)
		var got protocol.Messages
		if err := proto.Unmarshal(reply, &got); err != nil {
			t.Fatalf("reply to %x does not parse: %v", frame, err)
		}
		var req protocol.Messages
		if proto.Unmarshal(frame, &req) == nil && req.Encrypted == nil && len(req.Messages) > 0 {
			if len(got.Messages) != len(req.Messages) {
				t.Fatalf("%d request messages, %d replies", len(req.Messages), len(got.Messages))
			}
			for i, m := range got.Messages {
				if m.GetRevision() != protocol.Revision {
					t.Fatalf("reply %d: revision %d", i, m.GetRevision())
				}
				if in := req.Messages[i].Message_0; in != nil && m.GetMessage_0().GetMessageId() != in.GetMessageId() {
					t.Fatalf("reply %d: message_id %q, want %q", i, m.GetMessage_0().GetMessageId(), in.GetMessageId())
				}
			}
		}

		// Same frame, through the encrypted path of the keyed server.
		var kr protocol.Messages
		if err := proto.Unmarshal(keyed.Process(sealed(t, key, frame)), &kr); err != nil {
			t.Fatalf("encrypted reply does not parse: %v", err)
		}
		plain, err := crypto.Open(key, kr.GetEncrypted().GetAes256CbcSha512())
		if err != nil {
			t.Fatalf("encrypted reply does not open (%s): %v", prototext.Format(&kr), err)
		}
		var inner protocol.Messages
		if err := proto.Unmarshal(plain, &inner); err != nil {
			t.Fatalf("decrypted reply does not parse: %v", err)
		}
		if !proto.Equal(&inner, &got) {
			t.Fatalf("encrypted path answered\n%s\nclear path answered\n%s", prototext.Format(&inner), prototext.Format(&got))
		}

		// The raw frame at the keyed server still gets a well-formed reply.
		if err := proto.Unmarshal(keyed.Process(frame), &kr); err != nil {
			t.Fatalf("keyed reply to %x does not parse: %v", frame, err)
		}
	})
}
