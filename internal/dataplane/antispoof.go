package dataplane

import "encoding/binary"

// checkSpoof applies the anti-spoofing checks to a frame from the VM: the
// source MAC must be the vNIC's, RARP is refused and, with IP
// anti-spoofing, ARP must announce the vNIC's MAC and one of its IPv4
// addresses. It returns 0 when the frame passes.
func checkSpoof(nic *nicConf, f []byte) dropReason {
	if len(f) < 14 {
		return dropMalformed
	}
	if [6]byte(f[6:12]) != nic.mac {
		return dropAntispoofMAC
	}
	switch binary.BigEndian.Uint16(f[12:14]) {
	case 0x8035: // RARP
		return dropAntispoofRARP
	case 0x0806: // ARP
		if !nic.ipAntiSpoof {
			return 0
		}
		a := f[14:]
		if len(a) < 28 || binary.BigEndian.Uint16(a[0:2]) != 1 || binary.BigEndian.Uint16(a[2:4]) != 0x0800 ||
			a[4] != 6 || a[5] != 4 || [6]byte(a[8:14]) != nic.mac {
			return dropAntispoofARP
		}
		spa := [4]byte(a[14:18])
		for _, ip := range nic.ipv4 {
			if ip == spa {
				return 0
			}
		}
		return dropAntispoofARP
	}
	return 0
}
