package apiv0

import (
	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/model"
)

// NICFromRecord converts a vNIC message stored outside the daemon (a
// cluster record) as nic_add converts its request, with the defaults
// every daemon shares: no packet trace and vhost-user server mode unless
// the message says otherwise.
func NICFromRecord(m *protocol.MessageV0_Nic) (model.NIC, error) {
	return nicFromProto(m, false, false)
}

// NICToRecord converts a vNIC to the message NICFromRecord reads back to
// the same vNIC (packet_trace and the vhost-user mode are explicit).
func NICToRecord(n model.NIC) *protocol.MessageV0_Nic {
	m := nicToProto(n, true)
	m.Path = nil
	if n.TracePath == "" {
		m.PacketTracePath = nil
	}
	return m
}

// SGFromRecord converts a security group message as sg_add does.
func SGFromRecord(m *protocol.MessageV0_Sg) (model.SG, error) { return sgFromProto(m) }

// SGToRecord converts a security group as sg_details does.
func SGToRecord(sg model.SG) *protocol.MessageV0_Sg { return sgToProto(sg) }
