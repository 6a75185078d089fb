package model

import "slices"

// Equal reports whether n and o configure the same vNIC: every field but
// MAC (parsed from MACText) and Import (used once by AddNIC, never kept).
// Nil and empty lists are equal. The Store uses it to skip updates that
// change nothing, the state package to journal only changed vNICs.
func (n NIC) Equal(o NIC) bool {
	return n.ID == o.ID && n.MACText == o.MACText && n.VNI == o.VNI &&
		equalList(n.IPs, o.IPs) && equalList(n.SecurityGroups, o.SecurityGroups) &&
		n.IPAntiSpoof == o.IPAntiSpoof && n.SniffTarget == o.SniffTarget && n.Bypass == o.Bypass &&
		n.Type == o.Type && n.PacketTrace == o.PacketTrace && n.TracePath == o.TracePath &&
		n.BType == o.BType && n.DIP == o.DIP && n.DMAC == o.DMAC && n.Path == o.Path &&
		n.VhostClient == o.VhostClient && n.Netns == o.Netns && n.IfName == o.IfName
}

// Clone returns a copy of n that shares no list with it.
func (n NIC) Clone() NIC {
	n.IPs = slices.Clone(n.IPs)
	n.SecurityGroups = slices.Clone(n.SecurityGroups)
	n.Import = slices.Clone(n.Import)
	return n
}

// Equal reports whether g and o have the same id, members and rules (in
// the same order); nil and empty lists are equal.
func (g SG) Equal(o SG) bool {
	return g.ID == o.ID && equalList(g.Members, o.Members) && equalList(g.Rules, o.Rules)
}

// Clone returns a copy of g that shares no list with it.
func (g SG) Clone() SG {
	g.Members = slices.Clone(g.Members)
	g.Rules = slices.Clone(g.Rules)
	return g
}

// equalList reports whether a and b have equal elements: at once if they
// are the same list (same first element and length).
func equalList[T comparable](a, b []T) bool {
	if len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0]) {
		return true
	}
	return slices.Equal(a, b)
}
