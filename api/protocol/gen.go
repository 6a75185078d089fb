// Package protocol holds the Butterfly API messages generated from the .proto
// files beside this file: proto.Messages, proto.Message, proto.Error,
// MessageV0 and Encrypted, wire-compatible with the original Butterfly at
// protocol revision 6.
package protocol

//go:generate sh -c "protoc --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --go_out=. --go_opt=paths=source_relative -I . message.proto message_0.proto encrypted.proto"

// Revision is the protocol revision this implementation reports in every
// reply Message.
const Revision = 6
