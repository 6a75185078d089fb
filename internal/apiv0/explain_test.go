package apiv0_test

import (
	"strings"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/api/protocol"
	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/internal/apiv0"
	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/model/modeltest"
	"github.com/butterfly-go/butterfly/internal/packet"
)

// explainingDP is the fake dataplane with an Explain that describes the
// frame it is given.
type explainingDP struct{ *modeltest.Dataplane }

// Drops returns n drops (three when n < 0).
func (d explainingDP) Drops(id string, n int) ([]model.Drop, error) {
	if n < 0 {
		n = 3
	}
	var out []model.Drop
	for i := range n {
		out = append(out, model.Drop{Time: time.Unix(10, int64(i)), Reason: "switch_hairpin", Length: 60 + i, Decode: id})
	}
	return out, nil
}

func (d explainingDP) Explain(from string, frame []byte) (model.Explanation, error) {
	return model.Explanation{Steps: []string{from + ": " + packet.Describe(frame)}, Verdict: "deliver test"}, nil
}

// TestNICDrops: nic_drops passes the count and returns the drops, and
// fails on unknown vNICs and on a dataplane without a drop log.
func TestNICDrops(t *testing.T) {
	e := &env{dp: modeltest.NewDataplane()}
	e.store = model.New(explainingDP{e.dp}, model.Options{})
	e.h = apiv0.New(e.store, apiv0.Options{})
	e.ok(t, `nic_add { id: "a" mac: "52:54:00:00:00:01" vni: 7 type: TAP }`, `nic_add { path: "a" }`)
	e.ok(t, `nic_drops { nic_id: "a" count: 2 }`, `nic_drops {
		frame { time_ns: 10000000000 reason: "switch_hairpin" length: 60 decode: "a" }
		frame { time_ns: 10000000001 reason: "switch_hairpin" length: 61 decode: "a" } }`)
	e.ok(t, `nic_drops { nic_id: "a" count: 0 }`, `nic_drops { }`)
	if got := e.do(t, `nic_drops { nic_id: "a" }`); len(got.GetNicDrops().GetFrame()) != 3 {
		t.Errorf("nic_drops without count: %v, want all three", got)
	}
	e.fail(t, `nic_drops { nic_id: "x" }`, "NIC does not exist with id x")
	plain := newEnv(t)
	plain.ok(t, `nic_add { id: "a" mac: "52:54:00:00:00:01" vni: 7 type: TAP }`, `nic_add { path: "a" }`)
	plain.fail(t, `nic_drops { nic_id: "a" }`, "NIC drops failed: the dataplane keeps no dropped frames")
}

// TestExplain: a described packet is built as the vNIC would send it (its
// MAC, its first address of the family, the MAC of the vNIC of its VNI
// with the destination address), a whole frame is passed as is, and
// invalid questions are refused with a clear error.
func TestExplain(t *testing.T) {
	e := &env{dp: modeltest.NewDataplane()}
	e.store = model.New(explainingDP{e.dp}, model.Options{})
	e.h = apiv0.New(e.store, apiv0.Options{Now: func() time.Time { return time.Unix(0, 0) }})
	e.ok(t, `nic_add { id: "a" mac: "52:54:00:00:00:01" vni: 7 ip: "10.0.0.1" ip: "fd00::1" type: TAP }`, `nic_add { path: "a" }`)
	e.ok(t, `nic_add { id: "b" mac: "52:54:00:00:00:02" vni: 7 ip: "10.0.0.2" ip: "fd00::2" type: TAP }`, `nic_add { path: "b" }`)
	e.ok(t, `nic_add { id: "c" mac: "52:54:00:00:00:03" vni: 8 ip: "10.0.0.3" type: TAP }`, `nic_add { path: "c" }`)
	ok := []struct{ req, step string }{
		{`explain { nic_id: "a" dst: "10.0.0.2" protocol: 6 dport: 22 }`,
			"a: 52:54:00:00:00:01 > 52:54:00:00:00:02 IPv4 10.0.0.1 > 10.0.0.2 TCP 40000 > 22 [S], 54 bytes"},
		{`explain { nic_id: "a" dst: "10.0.0.2" protocol: 6 sport: 5 dport: 22 tcp_flags: 16 }`,
			"a: 52:54:00:00:00:01 > 52:54:00:00:00:02 IPv4 10.0.0.1 > 10.0.0.2 TCP 5 > 22 [.], 54 bytes"},
		{`explain { nic_id: "a" dst: "fd00::2" protocol: 17 dport: 53 }`,
			"a: 52:54:00:00:00:01 > 52:54:00:00:00:02 IPv6 fd00::1 > fd00::2 UDP 40000 > 53, 62 bytes"},
		{`explain { nic_id: "a" dst: "10.0.0.2" src: "10.9.9.9" protocol: 1 }`,
			"a: 52:54:00:00:00:01 > 52:54:00:00:00:02 IPv4 10.9.9.9 > 10.0.0.2 ICMP type 8 code 0 id 1, 42 bytes"},
		{`explain { nic_id: "a" dst: "10.0.0.3" dst_mac: "52:54:00:00:00:09" protocol: 47 }`,
			"a: 52:54:00:00:00:01 > 52:54:00:00:00:09 IPv4 10.0.0.1 > 10.0.0.3 proto 47, 34 bytes"},
		{`explain { nic_id: "a" frame: "\x52\x54\x00\x00\x00\x02\x52\x54\x00\x00\x00\x01\x08\x06" dst: "ignored" }`,
			"a: 52:54:00:00:00:01 > 52:54:00:00:00:02 ARP malformed, 14 bytes"},
	}
	for _, tt := range ok {
		e.ok(t, tt.req, `explain { step: "`+tt.step+`" verdict: "deliver test" }`)
	}
	bad := []struct{ req, prefix string }{
		{`explain { nic_id: "x" dst: "10.0.0.2" protocol: 6 }`, "NIC: x not found"},
		{`explain { nic_id: "a" protocol: 6 }`, "Explain failed: a destination address or a frame is needed"},
		{`explain { nic_id: "a" dst: "10.0.0.2" }`, "Explain failed: a protocol is needed"},
		{`explain { nic_id: "a" dst: "10.0.0.256" protocol: 6 }`, "Explain failed: destination:"},
		{`explain { nic_id: "a" dst: "10.0.0.2" protocol: 256 }`, "Explain failed: protocol 256 is not in [0, 255]"},
		{`explain { nic_id: "a" dst: "10.0.0.2" protocol: 6 dport: 65536 }`, "Explain failed: ports must be in [0, 65535]"},
		{`explain { nic_id: "a" dst: "10.0.0.3" protocol: 6 }`, "Explain failed: invalid question: no other vNIC of VNI 7 on this host has 10.0.0.3: give the destination MAC"},
		{`explain { nic_id: "c" dst: "fd00::2" protocol: 6 dst_mac: "52:54:00:00:00:02" }`, "Explain failed: invalid question: vNIC c has no IPv6 address"},
		{`explain { nic_id: "a" dst: "10.0.0.2" src: "fd00::1" protocol: 6 }`, "Explain failed: invalid question: source fd00::1 and destination 10.0.0.2 are of different families"},
		{`explain { nic_id: "a" dst: "10.0.0.2" protocol: 58 }`, "Explain failed: invalid question: protocol 58 does not go with an IPv4 destination"},
		{`explain { nic_id: "a" dst: "10.0.0.2" protocol: 6 dst_mac: "zz" }`, "Explain failed: destination MAC:"},
	}
	for _, tt := range bad {
		e.fail(t, tt.req, tt.prefix)
	}
	big := &protocol.MessageV0_Request{Explain: &protocol.MessageV0_ExplainReq{NicId: proto.String("a"), Frame: make([]byte, model.MaxExplainFrame+1)}}
	if res := e.h.Handle(&protocol.MessageV0{Request: big}).GetResponse(); res.GetStatus().GetStatus() ||
		!strings.HasPrefix(res.GetStatus().GetError().GetDescription(), "Explain failed: a frame of 65536 bytes") {
		t.Errorf("explain of a 65536-byte frame: %v", res)
	}
	// A dataplane that cannot explain.
	plain := newEnv(t)
	plain.ok(t, `nic_add { id: "a" mac: "52:54:00:00:00:01" vni: 7 ip: "10.0.0.1" type: TAP }`, `nic_add { path: "a" }`)
	plain.fail(t, `explain { nic_id: "a" dst: "10.0.0.1" dst_mac: "52:54:00:00:00:01" protocol: 6 }`, "Explain failed: the dataplane cannot explain frames")
}
