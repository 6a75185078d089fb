package main

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/apiclient"
)

// api is a test client for the daemon's API.
type api struct {
	t        testing.TB
	endpoint string
	key      []byte
	c        *apiclient.Client
	n        int
}

func dialAPI(t testing.TB, endpoint string) *api {
	t.Helper()
	return dialAPIKey(t, endpoint, nil)
}

// dialAPIKey is dialAPI with an encryption key (nil = clear).
func dialAPIKey(t testing.TB, endpoint string, key []byte) *api {
	t.Helper()
	a := &api{t: t, endpoint: endpoint, key: key}
	a.redial()
	t.Cleanup(func() { a.c.Close() })
	return a
}

// redial replaces the connection (after a timeout closed it).
func (a *api) redial() {
	a.t.Helper()
	if a.c != nil {
		a.c.Close()
	}
	c, err := apiclient.Dial(a.endpoint, apiclient.Options{Key: a.key, Timeout: 3 * time.Second})
	if err != nil {
		a.t.Fatal(err)
	}
	a.c = c
}

// errRefused is wrapped by call's error when the daemon answered with a
// failed status (as opposed to no answer at all).
var errRefused = errors.New("request refused")

// call sends one request and returns its response; an error either wraps
// errRefused (the daemon answered "no") or is a transport error (no
// answer: the request may or may not have been applied).
func (a *api) call(req *protocol.MessageV0_Request) (*protocol.MessageV0_Response, error) {
	a.n++
	id := fmt.Sprint(a.n)
	rep, err := a.c.Call(&protocol.Messages{Messages: []*protocol.Message{{
		Revision:  proto.Uint32(protocol.Revision),
		Message_0: &protocol.MessageV0{Request: req, MessageId: &id},
	}}})
	if err != nil {
		return nil, err
	}
	if len(rep.GetMessages()) != 1 || rep.GetMessages()[0].GetMessage_0().GetResponse() == nil {
		return nil, fmt.Errorf("%w: malformed reply %v", errRefused, rep)
	}
	res := rep.GetMessages()[0].GetMessage_0().GetResponse()
	if !res.GetStatus().GetStatus() {
		return res, fmt.Errorf("%w: %s", errRefused, res.GetStatus().GetError().GetDescription())
	}
	return res, nil
}

func (a *api) must(req *protocol.MessageV0_Request) *protocol.MessageV0_Response {
	a.t.Helper()
	res, err := a.call(req)
	if err != nil {
		a.t.Fatalf("request %v: %v", req, err)
	}
	return res
}

func (a *api) nicList() []string {
	a.t.Helper()
	l := a.must(&protocol.MessageV0_Request{NicList: proto.Bool(true)}).GetNicList()
	slices.Sort(l)
	return l
}

func (a *api) sgList() []string {
	a.t.Helper()
	l := a.must(&protocol.MessageV0_Request{SgList: proto.Bool(true)}).GetSgList()
	slices.Sort(l)
	return l
}

func (a *api) sgDetails(id string) *protocol.MessageV0_Sg {
	a.t.Helper()
	d := a.must(&protocol.MessageV0_Request{SgDetails: proto.String(id)}).GetSgDetails()
	if len(d) != 1 {
		a.t.Fatalf("sg_details %s: %d groups", id, len(d))
	}
	return d[0]
}

func tapNIC(id string, vni uint32, mac string, ips ...string) *protocol.MessageV0_Request {
	return &protocol.MessageV0_Request{NicAdd: &protocol.MessageV0_Nic{
		Id:   proto.String(id),
		Mac:  proto.String(mac),
		Vni:  proto.Uint32(vni),
		Ip:   ips,
		Type: protocol.MessageV0_Nic_TAP.Enum(),
	}}
}

func sgAdd(id string) *protocol.MessageV0_Request {
	return &protocol.MessageV0_Request{SgAdd: &protocol.MessageV0_Sg{Id: proto.String(id)}}
}

func memberAdd(sg, ip string) *protocol.MessageV0_Request {
	return &protocol.MessageV0_Request{SgMemberAdd: &protocol.MessageV0_SgMemberAddReq{SgId: proto.String(sg), Member: proto.String(ip)}}
}

func tcpRuleAdd(sg string, port uint32) *protocol.MessageV0_Request {
	return &protocol.MessageV0_Request{SgRuleAdd: &protocol.MessageV0_SgRuleAddReq{
		SgId: proto.String(sg),
		Rule: &protocol.MessageV0_Rule{
			Direction: protocol.MessageV0_Rule_INBOUND.Enum(),
			Protocol:  proto.Int32(6),
			PortStart: proto.Uint32(port),
			PortEnd:   proto.Uint32(port),
			Cidr:      &protocol.MessageV0_Cidr{Address: proto.String("10.0.0.0"), MaskSize: proto.Uint32(8)},
		},
	}}
}
