// Package antispoof checks frames sent by a VM against the identity of
// its vNIC: source MAC always, and with IP anti-spoofing ARP sender
// fields, IPv4/IPv6 source addresses and IPv6 neighbour advertisements.
// Frames from the network are not checked.
//
// A Config is immutable once built: the dataplane keeps one per vNIC in
// its published snapshot and builds a new one when the vNIC changes.
// Config.Check allocates nothing and takes no lock.
package antispoof

import (
	"net/netip"
	"slices"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// Reason is a check's verdict: OK or why the frame is dropped.
type Reason uint8

// Verdicts.
const (
	// OK: the frame may pass.
	OK Reason = iota
	// Runt: shorter than an Ethernet header.
	Runt
	// SrcMAC: the Ethernet source is not the vNIC's MAC.
	SrcMAC
	// RARP: reverse ARP from a VM.
	RARP
	// VLAN: an 802.1Q/802.1ad tagged frame (hides its payload).
	VLAN
	// ARPMalformed: truncated, or not Ethernet/IPv4 (hrd 1, pro 0x0800,
	// hln 6, pln 4).
	ARPMalformed
	// ARPSenderMAC: sender hardware address is not the vNIC's MAC.
	ARPSenderMAC
	// ARPSenderIP: sender IP is neither one of the vNIC's IPv4
	// addresses nor 0.0.0.0 (RFC 5227 probe).
	ARPSenderIP
	// IPv4Malformed: bad IPv4 header.
	IPv4Malformed
	// IPv4Src: source not one of the vNIC's IPv4 addresses (and not a
	// DHCP client message from 0.0.0.0 to 255.255.255.255, UDP 68->67).
	IPv4Src
	// IPv6Malformed: bad IPv6 header or extension header chain.
	IPv6Malformed
	// IPv6Src: source neither one of the vNIC's IPv6 addresses nor
	// link-local, nor :: for a DAD/MLD/RS message.
	IPv6Src
	// NDPMalformed: truncated NS/NA or bad NDP options.
	NDPMalformed
	// NDPTarget: neighbour advertisement for an address that is not the
	// vNIC's.
	NDPTarget
	// NDPTargetLinkAddr: target link-layer address option is not the
	// vNIC's MAC.
	NDPTargetLinkAddr
	// NumReasons is one more than the largest Reason, for sizing counter arrays.
	NumReasons
)

var reasonNames = [NumReasons]string{
	"ok", "runt", "src_mac", "rarp", "vlan", "arp_malformed", "arp_sender_mac", "arp_sender_ip",
	"ipv4_malformed", "ipv4_src", "ipv6_malformed", "ipv6_src", "ndp_malformed", "ndp_target", "ndp_target_lladdr",
}

// String returns a short name usable as a counter label.
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Config is the identity of a vNIC. It is immutable once built.
type Config struct {
	mac     packet.MAC
	checkIP bool
	v4      []netip.Addr
	v6      []netip.Addr
	ll      netip.Addr // EUI-64 link-local address derived from mac
}

// NewConfig builds the configuration of a vNIC with MAC mac, addresses
// ips (IPv4 and IPv6, in any order; IPv4-mapped IPv6 are taken as IPv4)
// and the ip_anti_spoof flag, which enables every check but the source
// MAC and RARP ones.
func NewConfig(mac packet.MAC, ips []netip.Addr, ipAntiSpoof bool) *Config {
	c := &Config{mac: mac, checkIP: ipAntiSpoof}
	for _, a := range ips {
		a = a.Unmap().WithZone("")
		if a.Is4() {
			c.v4 = append(c.v4, a)
		} else if a.Is6() {
			c.v6 = append(c.v6, a)
		}
	}
	c.v4 = compact(c.v4)
	c.v6 = compact(c.v6)
	c.ll = LinkLocalEUI64(mac)
	return c
}

func compact(a []netip.Addr) []netip.Addr {
	slices.SortFunc(a, netip.Addr.Compare)
	return slices.Compact(a)
}

// MAC returns the vNIC's MAC.
func (c *Config) MAC() packet.MAC { return c.mac }

// IPAntiSpoof reports whether the IP-level checks are on.
func (c *Config) IPAntiSpoof() bool { return c.checkIP }

// LinkLocalEUI64 returns the modified EUI-64 link-local address of mac
// (RFC 4291 appendix A), the one Linux guests use by default.
func LinkLocalEUI64(mac packet.MAC) netip.Addr {
	return netip.AddrFrom16([16]byte{0xfe, 0x80, 8: mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]})
}

func has(list []netip.Addr, a netip.Addr) bool {
	for _, b := range list {
		if b == a {
			return true
		}
	}
	return false
}

var (
	zero4      = netip.AddrFrom4([4]byte{})
	broadcast4 = netip.AddrFrom4([4]byte{255, 255, 255, 255})
)

// Check returns the verdict for a frame sent by the vNIC's VM.
func (c *Config) Check(frame []byte) Reason {
	if len(frame) < packet.EthernetLen {
		return Runt
	}
	e := packet.Ethernet(frame)
	if e.Src() != c.mac {
		return SrcMAC
	}
	t := e.Type()
	if t == packet.EtherTypeRARP {
		return RARP
	}
	if !c.checkIP {
		return OK
	}
	switch t {
	case packet.EtherTypeARP:
		return c.checkARP(packet.ARP(frame[packet.EthernetLen:]))
	case packet.EtherTypeIPv4:
		return c.checkIPv4(frame)
	case packet.EtherTypeIPv6:
		return c.checkIPv6(frame)
	case packet.EtherTypeVLAN, packet.EtherTypeQinQ:
		return VLAN
	}
	return OK
}

func (c *Config) checkARP(a packet.ARP) Reason {
	if !a.IsValid() || !a.IsEthernetIPv4() {
		return ARPMalformed
	}
	if a.SenderMAC() != c.mac {
		return ARPSenderMAC
	}
	if s := a.SenderIP(); s != zero4 && !has(c.v4, s) {
		return ARPSenderIP
	}
	return OK
}

func (c *Config) checkIPv4(frame []byte) Reason {
	var l packet.Layers
	if !packet.Parse(frame, &l) {
		return IPv4Malformed
	}
	ip := packet.IPv4(frame[l.L3:])
	src := ip.Src()
	if has(c.v4, src) {
		return OK
	}
	if src == zero4 && ip.Dst() == broadcast4 && l.Proto == packet.ProtoUDP && l.L4 != 0 && l.L4+packet.UDPLen <= l.L3End {
		u := packet.UDP(frame[l.L4:])
		if u.SrcPort() == 68 && u.DstPort() == 67 {
			return OK
		}
	}
	return IPv4Src
}

func (c *Config) checkIPv6(frame []byte) Reason {
	var l packet.Layers
	if !packet.Parse(frame, &l) {
		return IPv6Malformed
	}
	ip := packet.IPv6(frame[l.L3:])
	src := ip.Src()
	var ic packet.ICMPv6
	if l.Proto == packet.ProtoICMPv6 && l.L4 != 0 {
		ic = packet.ICMPv6(frame[l.L4:l.L3End])
	}
	switch {
	case has(c.v6, src), src.IsLinkLocalUnicast():
	case src.IsUnspecified():
		// RFC 4862 DAD sends NS from ::, with MLD reports (RFC 3810
		// section 5.2.13) and RS (RFC 4861 section 4.1) may use it too.
		if !ic.IsValid() {
			return IPv6Src
		}
		switch ic.Type() {
		case packet.ICMPv6NeighborSolicit, packet.ICMPv6MLDReport, packet.ICMPv6MLDv2Report, packet.ICMPv6RouterSolicit:
		default:
			return IPv6Src
		}
	default:
		return IPv6Src
	}
	if ic.IsValid() && ic.Type() == packet.ICMPv6NeighborAdvert {
		return c.checkNA(ic)
	}
	return OK
}

func (c *Config) checkNA(ic packet.ICMPv6) Reason {
	if !ic.IsNDPNSNA() {
		return NDPMalformed
	}
	if t := ic.NDPTarget(); t != c.ll && !has(c.v6, t) {
		return NDPTarget
	}
	mac, found, valid := ic.NDPLinkAddr(packet.NDPOptTargetLinkAddr)
	if !valid {
		return NDPMalformed
	}
	if found && mac != c.mac {
		return NDPTargetLinkAddr
	}
	return OK
}
