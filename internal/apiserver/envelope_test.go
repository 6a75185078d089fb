package apiserver

import (
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/crypto"
)

func msgs(ms ...*protocol.Message) *protocol.Messages {
	return &protocol.Messages{Messages: ms}
}

// sealed wraps a serialized inner request in an encrypted envelope.
func sealed(t testing.TB, key []byte, inner []byte) []byte {
	t.Helper()
	field, err := crypto.Seal(key, inner)
	if err != nil {
		t.Fatal(err)
	}
	return mustMarshal(t, &protocol.Messages{Encrypted: &protocol.Encrypted{Aes256CbcSha512: field}})
}

func encErr(code protocol.Encrypted_Error_Code) *protocol.Messages {
	return &protocol.Messages{Encrypted: &protocol.Encrypted{Error: &protocol.Encrypted_Error{Code: code.Enum()}}}
}

func parseReply(t *testing.T, b []byte) *protocol.Messages {
	t.Helper()
	var got protocol.Messages
	if err := proto.Unmarshal(b, &got); err != nil {
		t.Fatalf("reply is not a well-formed Messages: %v (%x)", err, b)
	}
	return &got
}

func checkEqual(t *testing.T, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Fatalf("reply\n%s\nwant\n%s", prototext.Format(got), prototext.Format(want))
	}
}

// threeRequests is a request of two MessageV0 around a Message without
// message_0.
func threeRequests() *protocol.Messages {
	return msgs(v0("a", nicList()), &protocol.Message{Revision: proto.Uint32(6)}, v0("c", sgList()))
}

func TestProcessClear(t *testing.T) {
	noRevision := &protocol.Messages{Messages: []*protocol.Message{{Message_0: &protocol.MessageV0{}}}}
	incompleteNic := msgs(v0("n", &protocol.MessageV0_Request{NicAdd: &protocol.MessageV0_Nic{Id: proto.String("x")}}))
	rev0 := msgs(v0("r", nicList()))
	rev0.Messages[0].Revision = proto.Uint32(0)
	valid := mustMarshal(t, msgs(v0("a", nicList())))
	unknownField := append(append([]byte(nil), valid...), 0xf8, 0x06, 0x01) // field 111, varint 1

	tests := []struct {
		name  string
		frame []byte
		want  *protocol.Messages
	}{
		{"garbage", []byte{0xff, 0xff, 0xff}, msgs(errMsg(protocol.Error_PARSE_ERROR))},
		{"truncated", valid[:len(valid)-2], msgs(errMsg(protocol.Error_PARSE_ERROR))},
		{"missing revision", mustMarshal(t, noRevision), msgs(errMsg(protocol.Error_PARSE_ERROR))},
		{"missing nested required", mustMarshal(t, incompleteNic), msgs(errMsg(protocol.Error_PARSE_ERROR))},
		{"empty frame", nil, msgs(errMsg(protocol.Error_REJECTED))},
		{"no message_0", mustMarshal(t, msgs(&protocol.Message{Revision: proto.Uint32(6)})),
			msgs(errMsg(protocol.Error_VERSION_NOT_MANAGED))},
		{"in order", mustMarshal(t, threeRequests()),
			msgs(echoed("a", "nic_list"), errMsg(protocol.Error_VERSION_NOT_MANAGED), echoed("c", "sg_list"))},
		{"request revision ignored", mustMarshal(t, rev0), msgs(echoed("r", "nic_list"))},
		{"unknown field ignored", unknownField, msgs(echoed("a", "nic_list"))},
		{"encrypted without key", sealed(t, testKey(), valid), msgs(errMsg(protocol.Error_REJECTED))},
		{"empty encrypted without key", mustMarshal(t, &protocol.Messages{Encrypted: &protocol.Encrypted{}}),
			msgs(errMsg(protocol.Error_REJECTED))},
	}
	s := newTestServer(t, nil, nil)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkEqual(t, parseReply(t, s.Process(tt.frame)), tt.want)
			if got := s.Requests(); got != uint64(i+1) {
				t.Fatalf("Requests() = %d, want %d", got, i+1)
			}
		})
	}
}

func TestProcessHandlerFailures(t *testing.T) {
	h := HandlerFunc(func(req *protocol.MessageV0) *protocol.MessageV0 {
		switch req.GetMessageId() {
		case "panic":
			panic("boom")
		case "nil":
			return nil
		case "incomplete":
			return &protocol.MessageV0{MessageId: req.MessageId, Response: &protocol.MessageV0_Response{}}
		}
		return echoHandler().Handle(req)
	})
	s := newTestServer(t, nil, h)
	req := msgs(v0("panic", nicList()), v0("ok1", nicList()), v0("nil", sgList()),
		v0("incomplete", sgList()), v0("ok2", sgList()))
	want := msgs(errMsg(protocol.Error_INTERNAL_ERROR), echoed("ok1", "nic_list"),
		errMsg(protocol.Error_INTERNAL_ERROR), errMsg(protocol.Error_INTERNAL_ERROR), echoed("ok2", "sg_list"))
	checkEqual(t, parseReply(t, s.Process(mustMarshal(t, req))), want)
}

func TestProcessEncrypted(t *testing.T) {
	key := testKey()
	otherKey := append([]byte(nil), key...)
	otherKey[0] ^= 1
	validInner := mustMarshal(t, threeRequests())
	withEncrypted := mustMarshal(t, &protocol.Messages{
		Messages:  []*protocol.Message{v0("x", nicList())},
		Encrypted: &protocol.Encrypted{Aes256CbcSha512: []byte("nested")},
	})
	clearAndEncrypted := mustMarshal(t, &protocol.Messages{
		Messages:  []*protocol.Message{v0("clear", sgList())},
		Encrypted: &protocol.Encrypted{Aes256CbcSha512: mustSeal(t, key, mustMarshal(t, msgs(v0("enc", nicList()))))},
	})
	inOrder := msgs(echoed("a", "nic_list"), errMsg(protocol.Error_VERSION_NOT_MANAGED), echoed("c", "sg_list"))

	tests := []struct {
		name  string
		frame []byte
		// Exactly one of want (clear reply) and wantInner (reply inside
		// the encrypted answer) is set.
		want      *protocol.Messages
		wantInner *protocol.Messages
	}{
		{"clear rejected", validInner, msgs(errMsg(protocol.Error_REJECTED)), nil},
		{"garbage", []byte{0x0a, 0x05, 0x01}, msgs(errMsg(protocol.Error_PARSE_ERROR)), nil},
		{"empty frame", nil, msgs(errMsg(protocol.Error_REJECTED)), nil},
		{"encrypted", sealed(t, key, validInner), nil, inOrder},
		{"encrypted wins over clear", clearAndEncrypted, nil, msgs(echoed("enc", "nic_list"))},
		{"missing field", mustMarshal(t, &protocol.Messages{Encrypted: &protocol.Encrypted{}}),
			encErr(protocol.Encrypted_Error_NOT_SUPPORTED), nil},
		{"empty field", mustMarshal(t, &protocol.Messages{Encrypted: &protocol.Encrypted{Aes256CbcSha512: []byte{}}}),
			encErr(protocol.Encrypted_Error_REJECTED), nil},
		{"short field", mustMarshal(t, &protocol.Messages{Encrypted: &protocol.Encrypted{Aes256CbcSha512: make([]byte, 80)}}),
			encErr(protocol.Encrypted_Error_REJECTED), nil},
		{"wrong key", sealed(t, otherKey, validInner), encErr(protocol.Encrypted_Error_REJECTED), nil},
		{"inner garbage", sealed(t, key, []byte{0xff, 0x01}), nil, msgs(errMsg(protocol.Error_PARSE_ERROR))},
		{"inner empty", sealed(t, key, nil), nil, msgs(errMsg(protocol.Error_REJECTED))},
		{"encryption inside encryption", sealed(t, key, withEncrypted), nil, msgs(errMsg(protocol.Error_REJECTED))},
	}
	s := newTestServer(t, key, nil)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseReply(t, s.Process(tt.frame))
			if tt.want != nil {
				checkEqual(t, got, tt.want)
			} else {
				field := got.GetEncrypted().GetAes256CbcSha512()
				if len(got.Messages) != 0 || got.GetEncrypted().Error != nil || field == nil {
					t.Fatalf("want an encrypted reply, got\n%s", prototext.Format(got))
				}
				plain, err := crypto.Open(key, field)
				if err != nil {
					t.Fatalf("opening reply: %v", err)
				}
				var inner protocol.Messages
				if err := proto.Unmarshal(plain, &inner); err != nil {
					t.Fatalf("inner reply: %v", err)
				}
				checkEqual(t, &inner, tt.wantInner)
			}
			if got := s.Requests(); got != uint64(i+1) {
				t.Fatalf("Requests() = %d, want %d (encrypted requests count once)", got, i+1)
			}
		})
	}
}

func mustSeal(t testing.TB, key, plain []byte) []byte {
	t.Helper()
	f, err := crypto.Seal(key, plain)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(Config{Key: make([]byte, 16), Endpoint: "inproc://bad-key"}, echoHandler()); err == nil {
		t.Fatal("16-byte key accepted")
	}
	if _, err := New(Config{Endpoint: "inproc://nil-handler"}, nil); err == nil {
		t.Fatal("nil handler accepted")
	}
	if _, err := New(Config{Endpoint: "bogus://x"}, echoHandler()); err == nil {
		t.Fatal("bogus endpoint accepted")
	}
}

func TestIsLoopback(t *testing.T) {
	tests := []struct {
		endpoint string
		want     bool
	}{
		{"tcp://127.0.0.1:9999", true},
		{"tcp://127.1.2.3:1", true},
		{"tcp://localhost:9999", true},
		{"tcp://LOCALHOST:9999", true},
		{"tcp://[::1]:9999", true},
		{"tcp://[::ffff:127.0.0.1]:9999", true},
		{"tcp://lo:9999", true},
		{"tcp://127.0.0.1:*", true},
		{"ipc:///run/butterfly/api.sock", true},
		{"inproc://api", true},
		{"tcp://0.0.0.0:9999", false},
		{"tcp://*:9999", false},
		{"tcp://[::]:9999", false},
		{"tcp://10.0.0.1:9999", false},
		{"tcp://eth0:9999", false},
		{"tcp://example.com:9999", false},
		{"tcp://127.0.0.1", false},
		{"udp://127.0.0.1:9999", false},
		{"pgm://eth0;239.192.1.1:5555", false},
		{"127.0.0.1:9999", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := IsLoopback(tt.endpoint); got != tt.want {
			t.Errorf("IsLoopback(%q) = %v, want %v", tt.endpoint, got, tt.want)
		}
	}
}
