package apiv0

import (
	"fmt"
	"slices"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/firewall"
	"github.com/butterfly-go/butterfly/internal/model"
	"google.golang.org/protobuf/proto"
)

// nicFromProto converts a nic_add request. A missing packet_trace or
// vhost_user_client takes the store's default; path is output only and
// ignored. vhost_user_client true on a vNIC of another type is refused
// (false, or the default, means nothing for it).
func nicFromProto(m *protocol.MessageV0_Nic, defaultTrace, defaultClient bool) (model.NIC, error) {
	n := model.NIC{
		ID:             m.GetId(),
		MACText:        m.GetMac(),
		VNI:            m.GetVni(),
		SecurityGroups: slices.Clone(m.GetSecurityGroup()),
		IPAntiSpoof:    m.GetIpAntiSpoof(),
		SniffTarget:    m.GetSniffTargetNicId(),
		Bypass:         m.GetBypassFiltering(),
		Type:           model.NICType(m.GetType()),
		PacketTrace:    defaultTrace,
		TracePath:      m.GetPacketTracePath(),
		BType:          m.GetBtype(),
		DIP:            m.GetDip(),
		DMAC:           m.GetDmac(),
		Netns:          m.GetNetns(),
		IfName:         m.GetIfname(),
	}
	if m.PacketTrace != nil {
		n.PacketTrace = *m.PacketTrace
	}
	if n.Type == model.NICVhostUser {
		n.VhostClient = defaultClient
		if m.VhostUserClient != nil {
			n.VhostClient = *m.VhostUserClient
		}
	} else if m.GetVhostUserClient() {
		return model.NIC{}, model.Errorf(model.CodeInvalid, model.TextBadNIC, "vhost_user_client is for %s nics, not %s", model.NICVhostUser, n.Type)
	}
	for _, s := range m.GetIp() {
		a, err := model.ParseIP(s)
		if err != nil {
			return model.NIC{}, model.Errorf(model.CodeInvalid, model.TextBadNIC, "ip %v", err)
		}
		n.IPs = append(n.IPs, a)
	}
	// fw_import (extension): checked here, before the store replaces an
	// existing vNIC, so that bad data changes nothing. Empty data (the
	// original's nic_export) imports nothing.
	if data := m.GetFwImport().GetData(); len(data) > 0 {
		if _, err := firewall.ParseExport(data); err != nil {
			return model.NIC{}, model.Errorf(model.CodeInvalid, model.TextBadNIC, "fw_import: %v", err)
		}
		n.Import = data
	}
	return n, nil
}

// nicToProto converts a vNIC for nic_details, with its true type. A
// vhost-user vNIC reports vhost_user_client when it is in client mode,
// and always when the daemon's default is client mode, so that replaying
// the output (butterfly dump) on any daemon gives the same mode; a
// server-mode vNIC on a server-default daemon is reported as the original
// did, without the field.
func nicToProto(n model.NIC, defaultClient bool) *protocol.MessageV0_Nic {
	m := &protocol.MessageV0_Nic{
		Id:              proto.String(n.ID),
		Mac:             proto.String(n.MACText),
		Vni:             proto.Uint32(n.VNI),
		SecurityGroup:   slices.Clone(n.SecurityGroups),
		IpAntiSpoof:     proto.Bool(n.IPAntiSpoof),
		BypassFiltering: proto.Bool(n.Bypass),
		Type:            protocol.MessageV0_Nic_Type(n.Type).Enum(),
		Path:            proto.String(n.Path),
		PacketTrace:     proto.Bool(n.PacketTrace),
		PacketTracePath: proto.String(n.TracePath),
	}
	for _, a := range n.IPs {
		m.Ip = append(m.Ip, model.IPString(a))
	}
	if n.SniffTarget != "" {
		m.SniffTargetNicId = proto.String(n.SniffTarget)
	}
	if n.BType != "" {
		m.Btype = proto.String(n.BType)
	}
	if n.DIP != "" {
		m.Dip = proto.String(n.DIP)
	}
	if n.DMAC != "" {
		m.Dmac = proto.String(n.DMAC)
	}
	if n.Netns != "" {
		m.Netns = proto.String(n.Netns)
		m.Ifname = proto.String(n.IfName)
	}
	if n.Type == model.NICVhostUser && (n.VhostClient || defaultClient) {
		m.VhostUserClient = proto.Bool(n.VhostClient)
	}
	return m
}

func nicUpdateFromProto(m *protocol.MessageV0_NicUpdateReq) model.NICUpdate {
	return model.NICUpdate{
		ID:             m.GetId(),
		IPs:            slices.Clone(m.GetIp()),
		SecurityGroups: slices.Clone(m.GetSecurityGroup()),
		IPAntiSpoof:    m.IpAntiSpoof,
		PacketTrace:    m.PacketTrace,
		TracePath:      m.PacketTracePath,
	}
}

// ruleFromProto converts a rule. It makes the checks the model cannot
// make (presence of TCP/UDP ports, both cidr and security_group given,
// CIDR text); the model validates the rest. The caller wraps the error in
// the right description.
func ruleFromProto(m *protocol.MessageV0_Rule) (model.Rule, error) {
	bad := func(format string, args ...any) (model.Rule, error) {
		return model.Rule{}, fmt.Errorf(format, args...)
	}
	if m == nil {
		return bad("rule is missing")
	}
	r := model.Rule{
		Direction: model.RuleDirection(m.GetDirection()),
		Protocol:  m.GetProtocol(),
		PortStart: m.GetPortStart(),
		PortEnd:   m.GetPortEnd(),
		SG:        m.GetSecurityGroup(),
	}
	if r.HasPorts() && (m.PortStart == nil || m.PortEnd == nil) {
		return bad("protocol %d needs port_start and port_end", r.Protocol)
	}
	if m.Cidr != nil {
		if m.SecurityGroup != nil {
			return bad("cidr and security_group are mutually exclusive")
		}
		p, err := model.ParseCIDR(m.Cidr.GetAddress(), m.Cidr.GetMaskSize())
		if err != nil {
			return bad("%v", err)
		}
		r.CIDR = p
	}
	return r, nil
}

// ruleToProto converts a rule for sg_rule_list and sg_details; ports are
// reported for TCP and UDP only, as in the original.
func ruleToProto(r model.Rule) *protocol.MessageV0_Rule {
	m := &protocol.MessageV0_Rule{
		Direction: protocol.MessageV0_Rule_Direction(r.Direction).Enum(),
		Protocol:  proto.Int32(r.Protocol),
	}
	if r.HasPorts() {
		m.PortStart = proto.Uint32(r.PortStart)
		m.PortEnd = proto.Uint32(r.PortEnd)
	}
	if r.CIDR.IsValid() {
		m.Cidr = &protocol.MessageV0_Cidr{
			Address:  proto.String(model.IPString(r.CIDR.Addr())),
			MaskSize: proto.Uint32(uint32(r.CIDR.Bits())),
		}
	} else {
		m.SecurityGroup = proto.String(r.SG)
	}
	return m
}

func sgFromProto(m *protocol.MessageV0_Sg) (model.SG, error) {
	sg := model.SG{ID: m.GetId()}
	for _, s := range m.GetMember() {
		a, err := model.ParseIP(s)
		if err != nil {
			return model.SG{}, model.Errorf(model.CodeInvalid, model.TextBadSG, "member %v", err)
		}
		sg.Members = append(sg.Members, a)
	}
	for i, rm := range m.GetRule() {
		r, err := ruleFromProto(rm)
		if err != nil {
			return model.SG{}, model.Errorf(model.CodeInvalid, model.TextBadSG, "rule %d: %v", i+1, err)
		}
		sg.Rules = append(sg.Rules, r)
	}
	return sg, nil
}

func sgToProto(sg model.SG) *protocol.MessageV0_Sg {
	m := &protocol.MessageV0_Sg{Id: proto.String(sg.ID)}
	for _, a := range sg.Members {
		m.Member = append(m.Member, model.IPString(a))
	}
	for _, r := range sg.Rules {
		m.Rule = append(m.Rule, ruleToProto(r))
	}
	return m
}
