package packet

import (
	"encoding/binary"
	"math/bits"
)

const (
	hashK1 = 0x9e3779b97f4a7c15
	hashK2 = 0xbf58476d1ce4e5b9
)

func hmix(h, v uint64) uint64 {
	hi, lo := bits.Mul64(h^v, hashK2)
	return hi ^ lo
}

// FlowHash returns a hash of the frame's flow for spreading flows over
// underlay paths (the VXLAN UDP source port, RFC 7348 section 5). IP
// frames hash on addresses and protocol, plus the ports for unfragmented
// TCP, UDP and SCTP (fragments carry no ports, so they hash on addresses
// and protocol only); other frames hash on the MACs and EtherType. It
// never allocates.
func FlowHash(frame []byte) uint32 {
	var l Layers
	h := uint64(hashK1)
	if !Parse(frame, &l) {
		if len(frame) >= EthernetLen {
			h = hmix(h, MAC(frame[0:6]).Uint64())
			h = hmix(h, MAC(frame[6:12]).Uint64())
		}
		return uint32(h ^ h>>32)
	}
	switch l.EtherType {
	case EtherTypeIPv4:
		ip := frame[l.L3:]
		h = hmix(h, uint64(binary.LittleEndian.Uint32(ip[12:16]))<<32|uint64(binary.LittleEndian.Uint32(ip[16:20])))
	case EtherTypeIPv6:
		ip := frame[l.L3:]
		h = hmix(h, binary.LittleEndian.Uint64(ip[8:16]))
		h = hmix(h, binary.LittleEndian.Uint64(ip[16:24]))
		h = hmix(h, binary.LittleEndian.Uint64(ip[24:32]))
		h = hmix(h, binary.LittleEndian.Uint64(ip[32:40]))
	default:
		h = hmix(h, MAC(frame[0:6]).Uint64()<<16|uint64(l.EtherType))
		h = hmix(h, MAC(frame[6:12]).Uint64())
		return uint32(h ^ h>>32)
	}
	v := uint64(l.Proto)
	if !l.Fragment && l.L4 != 0 && l.L4+4 <= l.L3End {
		switch l.Proto {
		case ProtoTCP, ProtoUDP, ProtoSCTP:
			v |= uint64(binary.LittleEndian.Uint32(frame[l.L4:])) << 8
		}
	}
	h = hmix(h, v)
	return uint32(h ^ h>>32)
}
