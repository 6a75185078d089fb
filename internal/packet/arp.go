package packet

import (
	"encoding/binary"
	"net/netip"
)

// ARP constants (RFC 826) for Ethernet and IPv4.
const (
	ARPLen          = 28
	ARPHwEthernet   = 1
	ARPOpRequest    = 1
	ARPOpReply      = 2
	ARPOpRevRequest = 3
	ARPOpRevReply   = 4
)

// ARP is a view of an ARP (or RARP) packet for Ethernet/IPv4. Accessors
// need len >= ARPLen; check with IsValid.
type ARP []byte

// IsValid reports whether the packet is complete.
func (a ARP) IsValid() bool { return len(a) >= ARPLen }

// HardwareType returns the hrd field.
func (a ARP) HardwareType() uint16 { return binary.BigEndian.Uint16(a[0:2]) }

// ProtocolType returns the pro field.
func (a ARP) ProtocolType() uint16 { return binary.BigEndian.Uint16(a[2:4]) }

// HardwareLen returns the hln field.
func (a ARP) HardwareLen() uint8 { return a[4] }

// ProtocolLen returns the pln field.
func (a ARP) ProtocolLen() uint8 { return a[5] }

// Op returns the opcode.
func (a ARP) Op() uint16 { return binary.BigEndian.Uint16(a[6:8]) }

// IsEthernetIPv4 reports whether hrd, pro, hln and pln describe
// Ethernet/IPv4 (1, 0x0800, 6, 4), the only layout the other accessors read.
func (a ARP) IsEthernetIPv4() bool {
	return a.HardwareType() == ARPHwEthernet && a.ProtocolType() == EtherTypeIPv4 && a.HardwareLen() == 6 && a.ProtocolLen() == 4
}

// SenderMAC returns sha.
func (a ARP) SenderMAC() MAC { return MAC(a[8:14]) }

// SenderIP returns spa.
func (a ARP) SenderIP() netip.Addr { return netip.AddrFrom4([4]byte(a[14:18])) }

// TargetMAC returns tha.
func (a ARP) TargetMAC() MAC { return MAC(a[18:24]) }

// TargetIP returns tpa.
func (a ARP) TargetIP() netip.Addr { return netip.AddrFrom4([4]byte(a[24:28])) }

// Encode writes an Ethernet/IPv4 ARP packet.
func (a ARP) Encode(op uint16, sha MAC, spa netip.Addr, tha MAC, tpa netip.Addr) {
	binary.BigEndian.PutUint16(a[0:2], ARPHwEthernet)
	binary.BigEndian.PutUint16(a[2:4], EtherTypeIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], op)
	copy(a[8:14], sha[:])
	s := spa.As4()
	copy(a[14:18], s[:])
	copy(a[18:24], tha[:])
	t := tpa.As4()
	copy(a[24:28], t[:])
}
