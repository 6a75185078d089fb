package cluster

import (
	"errors"
	"fmt"
	"net/netip"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/apiv0"
	"github.com/butterfly-go/butterfly/internal/model"
)

// maxRecord bounds a record's size (etcd's default request limit is
// 1.5 MiB); larger values are refused before decoding.
const maxRecord = 2 << 20

// NodeInfo is a node's registration.
type NodeInfo struct {
	Name    string
	VTEP    netip.Addr
	Version string
}

// Record is one decoded, validated value. Exactly the field of its
// key's kind is set.
type Record struct {
	Key  Key
	Node NodeInfo  // KindNode, KindAlive
	NIC  model.NIC // KindNIC, normalized by the model
	SG   model.SG  // KindSG, normalized by the model
}

var (
	marshal   = protojson.MarshalOptions{UseProtoNames: true}
	unmarshal = protojson.UnmarshalOptions{DiscardUnknown: false}
)

// Decode decodes and validates the value of key: its message must
// decode, name the same node or id as its key, and pass the model's
// checks (a scratch model.Store validates it exactly as the API's
// requests are). Decode never panics and does no I/O.
func Decode(l Layout, key string, value []byte) (Record, error) {
	k, err := l.Parse(key)
	if err != nil {
		return Record{}, err
	}
	if len(value) > maxRecord {
		return Record{}, fmt.Errorf("value of %d bytes is larger than %d", len(value), maxRecord)
	}
	r := Record{Key: k}
	switch k.Kind {
	case KindNode, KindAlive:
		var m protocol.MessageV0_ClusterNode
		if err := unmarshal.Unmarshal(value, &m); err != nil {
			return Record{}, fmt.Errorf("not a ClusterNode message: %w", err)
		}
		if m.GetName() != k.Node {
			return Record{}, fmt.Errorf("name %q differs from the key's node %q", m.GetName(), k.Node)
		}
		a, err := netip.ParseAddr(m.GetVtep())
		if err != nil || a.Zone() != "" || !(a.Unmap().IsGlobalUnicast() || a.Unmap().IsLoopback()) {
			return Record{}, fmt.Errorf("vtep %q is not a unicast IPv4 or IPv6 address", m.GetVtep())
		}
		r.Node = NodeInfo{Name: k.Node, VTEP: a.Unmap(), Version: m.GetVersion()}
	case KindNIC:
		var m protocol.MessageV0_Nic
		if err := unmarshal.Unmarshal(value, &m); err != nil {
			return Record{}, fmt.Errorf("not a Nic message: %w", err)
		}
		if m.GetId() != k.ID {
			return Record{}, fmt.Errorf("id %q differs from the key's %q", m.GetId(), k.ID)
		}
		if m.FwImport != nil {
			return Record{}, errors.New("fw_import is not allowed in a record")
		}
		n, err := apiv0.NICFromRecord(&m)
		if err != nil {
			return Record{}, err
		}
		if r.NIC, err = CheckNIC(n, model.Options{}); err != nil {
			return Record{}, err
		}
	case KindSG:
		var m protocol.MessageV0_Sg
		if err := unmarshal.Unmarshal(value, &m); err != nil {
			return Record{}, fmt.Errorf("not a Sg message: %w", err)
		}
		if m.GetId() != k.ID {
			return Record{}, fmt.Errorf("id %q differs from the key's %q", m.GetId(), k.ID)
		}
		sg, err := apiv0.SGFromRecord(&m)
		if err != nil {
			return Record{}, err
		}
		if r.SG, err = CheckSG(sg); err != nil {
			return Record{}, err
		}
	}
	return r, nil
}

// EncodeNode returns the value of a node's registration.
func EncodeNode(n NodeInfo) []byte {
	return mustMarshal(&protocol.MessageV0_ClusterNode{
		Name:    proto.String(n.Name),
		Vtep:    proto.String(n.VTEP.String()),
		Version: proto.String(n.Version),
	})
}

// EncodeNIC returns the value of a vNIC's record.
func EncodeNIC(n model.NIC) []byte { return mustMarshal(apiv0.NICToRecord(n)) }

// EncodeSG returns the value of a security group's record.
func EncodeSG(sg model.SG) []byte { return mustMarshal(apiv0.SGToRecord(sg)) }

func mustMarshal(m proto.Message) []byte {
	b, err := marshal.Marshal(m)
	if err != nil {
		// Only invalid UTF-8 in a string fails, and every string here
		// went through the model's checks or comes from a decoded
		// message.
		panic(fmt.Sprintf("cluster: marshal %T: %v", m, err))
	}
	return b
}

// CheckNIC validates n exactly as the model does for nic_add and returns
// it normalized (Path empty).
func CheckNIC(n model.NIC, opts model.Options) (model.NIC, error) {
	s := model.New(nopDataplane{}, opts)
	if _, err := s.AddNIC(n); err != nil {
		return model.NIC{}, err
	}
	got, err := s.NICDetails(n.ID)
	if err != nil {
		return model.NIC{}, err
	}
	return got[0], nil
}

// CheckSG validates sg exactly as the model does for sg_add and returns
// it normalized.
func CheckSG(sg model.SG) (model.SG, error) {
	s := model.New(nopDataplane{}, model.Options{})
	if err := s.AddSG(sg); err != nil {
		return model.SG{}, err
	}
	got, err := s.SGDetails(sg.ID)
	if err != nil {
		return model.SG{}, err
	}
	return got[0], nil
}

// nopDataplane is the dataplane of scratch stores: it accepts everything.
type nopDataplane struct{}

func (nopDataplane) AddNIC(model.NIC) (string, error)           { return "", nil }
func (nopDataplane) UpdateNIC(model.NIC) error                  { return nil }
func (nopDataplane) DeleteNIC(string) error                     { return nil }
func (nopDataplane) Stats(string) (model.NICStats, error)       { return model.NICStats{}, nil }
func (nopDataplane) Counters(string) (model.NICCounters, error) { return model.NICCounters{}, nil }
func (nopDataplane) ExportNIC(string) ([]byte, error)           { return nil, nil }
func (nopDataplane) DOT() string                                { return "" }
func (nopDataplane) SetSecurityGroups([]model.SG) error         { return nil }
