// Package model is Butterfly's desired state: vNICs, security groups, their
// rules and members. It validates every request, implements the idempotent
// semantics of the API and drives the dataplane through the Dataplane
// interface. It does no I/O of its own.
package model

import "net/netip"

// NICType is the kind of port behind a vNIC; the values are the wire
// protocol's MessageV0.Nic.Type.
type NICType int32

// vNIC types.
const (
	NICVhostUser NICType = 0
	NICTap       NICType = 1
	NICBench     NICType = 2
)

// String names the type as the wire protocol does.
func (t NICType) String() string {
	switch t {
	case NICVhostUser:
		return "VHOST_USER_SERVER"
	case NICTap:
		return "TAP"
	case NICBench:
		return "BENCH"
	}
	return "UNKNOWN"
}

// NIC is one vNIC as the dataplane needs it.
type NIC struct {
	ID string `json:"id"`
	// MACText is the MAC as the client wrote it (the API echoes it back).
	MACText string `json:"mac"`
	// MAC is MACText parsed.
	MAC [6]byte `json:"-"`
	VNI uint32  `json:"vni"`
	// IPs are unique, in the order given.
	IPs            []netip.Addr `json:"ips,omitempty"`
	SecurityGroups []string     `json:"security_groups,omitempty"`
	IPAntiSpoof    bool         `json:"ip_anti_spoof,omitempty"`
	SniffTarget    string       `json:"sniff_target,omitempty"`
	Bypass         bool         `json:"bypass_filtering,omitempty"`
	Type           NICType      `json:"type"`
	PacketTrace    bool         `json:"packet_trace,omitempty"`
	TracePath      string       `json:"packet_trace_path,omitempty"`
	BType          string       `json:"btype,omitempty"`
	DIP            string       `json:"dip,omitempty"`
	DMAC           string       `json:"dmac,omitempty"`
	// VhostClient selects vhost-user client mode for a NICVhostUser vNIC:
	// the VM's QEMU listens on the socket and the dataplane connects (and
	// reconnects) to it; false is the original's server mode. It is
	// resolved when the vNIC is added (the request's value, else the
	// daemon's default), always false for other types, and never changed
	// by an update.
	VhostClient bool `json:"vhost_client,omitempty"`
	// Import is connection-tracking state exported by another host's
	// Dataplane.ExportNIC (nic_add's fw_import, for live migration). Only
	// AddNIC uses it: the dataplane loads it into the new vNIC's firewall
	// or fails. The Store never keeps, persists or reports it.
	Import []byte `json:"-"`
	// Netns is the path of the network namespace a TAP vNIC's device is
	// created in (bind mount or /proc/PID/ns/net); "" = the daemon's.
	Netns string `json:"netns,omitempty"`
	// IfName is the TAP's interface name inside Netns. The Store sets it,
	// when Netns is given without it, to a name derived from the id; it is
	// persisted so that a restarted daemon finds the device again.
	IfName string `json:"ifname,omitempty"`
	// Path is the socket path or interface name the dataplane returned.
	Path string `json:"path,omitempty"`
}

// NICStats are a vNIC's byte counters: In counts bytes received from the
// VM, Out bytes delivered to the VM.
type NICStats struct {
	In, Out uint64
}

// NICCounters are a vNIC's packet counters and drops by reason.
type NICCounters struct {
	RxPackets, RxBytes uint64 // from the VM
	TxPackets, TxBytes uint64 // to the VM
	Drops              map[string]uint64
	// Queues are the frames of each queue pair of a vhost-user vNIC
	// whose guest used more than one (nil otherwise).
	Queues []QueueCounters
}

// QueueCounters are the frames of one queue pair of a vNIC: from the VM
// (read from its transmit queue) and to it.
type QueueCounters struct {
	RxPackets, TxPackets uint64
}

// Dataplane is what the model drives. Each call is made after validation
// and before the model commits the change: an error leaves the model
// unchanged. Implementations must be safe for use from one goroutine at a
// time (the model serializes calls).
type Dataplane interface {
	// AddNIC creates the vNIC's port and attaches it to its VNI. It returns
	// the path to report (socket path or interface name).
	AddNIC(n NIC) (path string, err error)
	// UpdateNIC applies a changed vNIC (IPs, anti-spoofing, trace). The
	// ID, MAC, VNI and type never change through an update.
	UpdateNIC(n NIC) error
	// DeleteNIC removes the vNIC's port. Unknown ids are not an error.
	DeleteNIC(id string) error
	// Stats returns the vNIC's byte counters.
	Stats(id string) (NICStats, error)
	// Counters returns the vNIC's packet counters.
	Counters(id string) (NICCounters, error)
	// ExportNIC returns the vNIC's connection-tracking state in the
	// firewall's export format (NIC.Import of another host's AddNIC).
	ExportNIC(id string) ([]byte, error)
	// DOT returns the dataplane graph in the DOT language.
	DOT() string
	// SetSecurityGroups replaces every security group (rules and
	// members), sorted by id. The model calls it before committing any
	// change of groups, rules or members, and at Restore before adding
	// the vNICs. The lists are shared with the model: read-only. A vNIC's
	// groups and IPs come with AddNIC and UpdateNIC.
	SetSecurityGroups(sgs []SG) error
}

// SGUpdater is implemented by a Dataplane that takes the change of one
// security group alone. The Store then calls UpdateSecurityGroup for each
// change of a group, its rules or its members, instead of
// SetSecurityGroups with every group, so that a change costs what it
// changes; Restore still calls SetSecurityGroups.
type SGUpdater interface {
	// UpdateSecurityGroup replaces group id by sg, adds it, or removes it
	// when sg is nil; the other groups are as the last call of either
	// method left them. On error nothing changes. sg's lists are shared
	// with the model: read-only.
	UpdateSecurityGroup(id string, sg *SG) error
}

// RuleDirection is the direction of a security group rule; the values are
// the wire protocol's MessageV0.Rule.Direction.
type RuleDirection int32

// Rule directions.
const (
	Inbound  RuleDirection = 0
	Outbound RuleDirection = 1
)

// String names the direction as the wire protocol does.
func (d RuleDirection) String() string {
	switch d {
	case Inbound:
		return "INBOUND"
	case Outbound:
		return "OUTBOUND"
	}
	return "UNKNOWN"
}

// Rule is one security group rule. It allows traffic of Protocol (-1 = any)
// whose peer is either in CIDR or a member of the security group SG; exactly
// one of CIDR and SG is set.
//
// PortStart and PortEnd are meaningful for TCP (6) and UDP (17) only. For
// other protocols they are kept as given (they are part of the rule's
// identity, as in the original) but not reported by the API. An absent port
// is 0, as in the original's identity.
type Rule struct {
	Direction RuleDirection `json:"direction"`
	Protocol  int32         `json:"protocol"`
	PortStart uint32        `json:"port_start,omitempty"`
	PortEnd   uint32        `json:"port_end,omitempty"`
	// CIDR keeps the address as given (host bits are not cleared) and the
	// mask length; the zero Prefix means "no CIDR".
	CIDR netip.Prefix `json:"cidr,omitzero"`
	// SG is the id of the security group whose members are the peers.
	SG string `json:"security_group,omitempty"`
}

// SG is a security group: a set of member addresses, which other groups'
// rules can refer to, and a set of rules.
type SG struct {
	ID string `json:"id"`
	// Members are unique addresses, in insertion order.
	Members []netip.Addr `json:"members,omitempty"`
	// Rules are unique (by Rule.Key), ordered by Rule.Hash.
	Rules []Rule `json:"rules,omitempty"`
}

// NICUpdate is a partial update of a vNIC. Nil fields are left unchanged.
type NICUpdate struct {
	ID string
	// IPs, when it has at least one element, replaces the vNIC's address
	// list. Empty strings are skipped, so []string{""} clears the list;
	// duplicates are dropped and order is kept.
	IPs []string
	// SecurityGroups works like IPs.
	SecurityGroups []string
	IPAntiSpoof    *bool
	PacketTrace    *bool
	// TracePath, when non-nil and non-empty, changes the pcap file. An
	// update without it keeps the current path.
	TracePath *string
}

// StateVersion is the version of State written by this package.
const StateVersion = 1

// State is a serializable snapshot of the whole model.
type State struct {
	Version int   `json:"version"`
	NICs    []NIC `json:"nics"`
	SGs     []SG  `json:"sgs"`
}

// Change is a change of a Store's state (Store.TakeChanges): the vNICs
// and security groups added or replaced, whole, and the ids of those
// removed. An id is in at most one of NICs and DelNICs (SGs and DelSGs).
type Change struct {
	NICs    []NIC
	SGs     []SG
	DelNICs []string
	DelSGs  []string
}

// Options configure a Store.
type Options struct {
	// DefaultPacketTrace is the packet_trace value of a nic_add that does
	// not set it (the daemon's -t flag). The Store itself does not apply it:
	// AddNIC takes NIC.PacketTrace as given; see Store.DefaultPacketTrace.
	DefaultPacketTrace bool
	// DefaultTracePath returns the pcap path of a vNIC added without one.
	// Nil means no default ("").
	DefaultTracePath func(nicID string) string
	// DefaultVhostClient is the vhost-user mode of a nic_add that does
	// not choose one (the daemon's --vhost-client). Like
	// DefaultPacketTrace it is applied by the API, not by AddNIC; see
	// Store.DefaultVhostClient.
	DefaultVhostClient bool
}
