package apiserver

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/crypto"
)

// Process applies the envelope rules to one request frame (a serialized
// proto.Messages) and returns the serialized reply, always a well-formed
// proto.Messages:
//
//   - bytes that do not parse, or miss a required field: one Message with
//     error PARSE_ERROR;
//   - neither messages nor encrypted: one Message with error REJECTED;
//   - clear messages: one reply Message per request Message, in order; a
//     Message without message_0 gets error VERSION_NOT_MANAGED, the others
//     carry the Handler's answer. With a key configured, clear requests get
//     one Message with error REJECTED instead;
//   - encrypted (takes precedence over clear messages in the same request):
//     without a key, one Message with error REJECTED; with a key, the field
//     is opened, its plaintext processed as an inner Messages by the rules
//     above (an inner encrypted gets REJECTED), and the reply is
//     Messages{encrypted{aes256cbc_sha512}}. A missing field gives
//     Encrypted.error NOT_SUPPORTED, a field that does not open gives
//     Encrypted.error REJECTED.
//
// Every reply Message has revision protocol.Revision. Each call counts as
// one request in Requests. Process is safe for concurrent use if the
// Handler is; it needs no socket, which makes it the fuzzing entry point.
func (s *Server) Process(frame []byte) []byte {
	s.requests.Add(1)
	var req protocol.Messages
	if err := proto.Unmarshal(frame, &req); err != nil {
		s.log.Warn("api: unparsable request", "bytes", len(frame), "err", err)
		return marshalReply(envelopeError(protocol.Error_PARSE_ERROR))
	}
	if enc := req.GetEncrypted(); enc != nil {
		return marshalReply(s.processEncrypted(enc))
	}
	if len(req.GetMessages()) == 0 {
		s.log.Warn("api: request without messages or encrypted part")
		return marshalReply(envelopeError(protocol.Error_REJECTED))
	}
	if len(s.key) != 0 {
		s.log.Warn("api: clear request rejected: the server requires encryption")
		return marshalReply(envelopeError(protocol.Error_REJECTED))
	}
	return marshalReply(s.dispatch(&req))
}

func (s *Server) processEncrypted(enc *protocol.Encrypted) *protocol.Messages {
	if len(s.key) == 0 {
		s.log.Warn("api: encrypted request rejected: no key configured")
		return envelopeError(protocol.Error_REJECTED)
	}
	if enc.Aes256CbcSha512 == nil {
		s.log.Warn("api: encrypted request without a supported cipher field")
		return encryptedError(protocol.Encrypted_Error_NOT_SUPPORTED)
	}
	plain, err := crypto.Open(s.key, enc.Aes256CbcSha512)
	if err != nil {
		s.log.Warn("api: encrypted request rejected", "err", err)
		return encryptedError(protocol.Encrypted_Error_REJECTED)
	}
	var inner protocol.Messages
	var reply *protocol.Messages
	switch err := proto.Unmarshal(plain, &inner); {
	case err != nil:
		s.log.Warn("api: unparsable encrypted request", "bytes", len(plain), "err", err)
		reply = envelopeError(protocol.Error_PARSE_ERROR)
	case inner.Encrypted != nil:
		s.log.Warn("api: encryption inside encryption rejected")
		reply = envelopeError(protocol.Error_REJECTED)
	case len(inner.Messages) == 0:
		s.log.Warn("api: encrypted request without messages")
		reply = envelopeError(protocol.Error_REJECTED)
	default:
		reply = s.dispatch(&inner)
	}
	field, err := crypto.Seal(s.key, marshalReply(reply))
	if err != nil {
		s.log.Error("api: encrypting reply", "err", err)
		return encryptedError(protocol.Encrypted_Error_INTERNAL_ERROR)
	}
	return &protocol.Messages{Encrypted: &protocol.Encrypted{Aes256CbcSha512: field}}
}

// dispatch answers clear messages one by one, in order.
func (s *Server) dispatch(req *protocol.Messages) *protocol.Messages {
	debug := s.log.Enabled(context.Background(), slog.LevelDebug)
	reply := &protocol.Messages{Messages: make([]*protocol.Message, 0, len(req.Messages))}
	for _, m := range req.Messages {
		out := &protocol.Message{Revision: proto.Uint32(protocol.Revision)}
		if m.Message_0 == nil {
			out.Error = &protocol.Error{Code: protocol.Error_VERSION_NOT_MANAGED.Enum()}
		} else {
			if debug {
				s.log.Debug("api: request", "message", prototext.MarshalOptions{}.Format(m.Message_0))
			}
			res, err := s.handle(m.Message_0)
			if err != nil {
				s.log.Error("api: handler failed", "err", err)
				out.Error = &protocol.Error{Code: protocol.Error_INTERNAL_ERROR.Enum()}
			} else {
				out.Message_0 = res
				if debug {
					s.log.Debug("api: response", "message", prototext.MarshalOptions{}.Format(res))
				}
			}
		}
		reply.Messages = append(reply.Messages, out)
	}
	return reply
}

// handle calls the Handler and turns a panic or a nil answer into an error,
// so one bad request cannot stop the API.
func (s *Server) handle(m *protocol.MessageV0) (res *protocol.MessageV0, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("api: handler panic", "panic", r, "stack", string(debug.Stack()))
			res, err = nil, fmt.Errorf("handler panic: %v", r)
		}
	}()
	res = s.h.Handle(m)
	if res == nil {
		return nil, fmt.Errorf("handler returned no answer")
	}
	if err := proto.CheckInitialized(res); err != nil {
		return nil, fmt.Errorf("handler answer is incomplete: %w", err)
	}
	return res, nil
}

func envelopeError(code protocol.Error_Code) *protocol.Messages {
	return &protocol.Messages{Messages: []*protocol.Message{{
		Revision: proto.Uint32(protocol.Revision),
		Error:    &protocol.Error{Code: code.Enum()},
	}}}
}

func encryptedError(code protocol.Encrypted_Error_Code) *protocol.Messages {
	return &protocol.Messages{Encrypted: &protocol.Encrypted{
		Error: &protocol.Encrypted_Error{Code: code.Enum()},
	}}
}

// marshalReply serializes a reply. Handler answers are checked before they
// get here, so failure is not expected; should it happen anyway the reply
// degrades to one INTERNAL_ERROR Message, which always serializes.
func marshalReply(m *protocol.Messages) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		b, _ = proto.Marshal(envelopeError(protocol.Error_INTERNAL_ERROR))
	}
	return b
}
