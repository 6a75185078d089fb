package apiserver

import (
	"io"
	"log/slog"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
)

// requestType names the first request field set (the one the original
// server acts on), or "" when none is.
func requestType(req *protocol.MessageV0_Request) string {
	m := req.ProtoReflect()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		if f := fields.Get(i); m.Has(f) {
			return string(f.Name())
		}
	}
	return ""
}

// echoHandler answers every request with status true, the request's
// message_id, and the name of the request type in nic_list.
func echoHandler() Handler {
	return HandlerFunc(func(req *protocol.MessageV0) *protocol.MessageV0 {
		return &protocol.MessageV0{
			MessageId: req.MessageId,
			Response: &protocol.MessageV0_Response{
				Status:  &protocol.MessageV0_Status{Status: proto.Bool(true)},
				NicList: []string{requestType(req.GetRequest())},
			},
		}
	})
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testKey() []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = byte(i * 7)
	}
	return k
}

// newTestServer builds a socketless server for Process.
func newTestServer(t testing.TB, key []byte, h Handler) *Server {
	t.Helper()
	if h == nil {
		h = echoHandler()
	}
	s, err := newServer(Config{Key: key, Logger: quietLogger()}, h)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// v0 builds a request Message with the given message_id and request.
func v0(id string, req *protocol.MessageV0_Request) *protocol.Message {
	return &protocol.Message{
		Revision:  proto.Uint32(protocol.Revision),
		Message_0: &protocol.MessageV0{MessageId: proto.String(id), Request: req},
	}
}

func nicList() *protocol.MessageV0_Request {
	return &protocol.MessageV0_Request{NicList: proto.Bool(true)}
}

func sgList() *protocol.MessageV0_Request {
	return &protocol.MessageV0_Request{SgList: proto.Bool(true)}
}

// echoed is the reply Message echoHandler gives to v0(id, req).
func echoed(id, typ string) *protocol.Message {
	return &protocol.Message{
		Revision: proto.Uint32(protocol.Revision),
		Message_0: &protocol.MessageV0{
			MessageId: proto.String(id),
			Response: &protocol.MessageV0_Response{
				Status:  &protocol.MessageV0_Status{Status: proto.Bool(true)},
				NicList: []string{typ},
			},
		},
	}
}

func errMsg(code protocol.Error_Code) *protocol.Message {
	return &protocol.Message{
		Revision: proto.Uint32(protocol.Revision),
		Error:    &protocol.Error{Code: code.Enum()},
	}
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{AllowPartial: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
