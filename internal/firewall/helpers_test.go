package firewall

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/packet"
)

// pk describes a test frame; build makes it with the packet encoders.
type pk struct {
	src, dst     string
	proto        uint8
	sport, dport uint16 // ports, or ICMP type (sport) and identifier (dport)
	flags        uint8  // TCP flags
	hop          uint8  // TTL / hop limit; 0 means 64
	fragOff      int    // bytes
	mf           bool
	fragID       uint32
	payload      []byte
}

func (p pk) build() []byte {
	src, dst := netip.MustParseAddr(p.src), netip.MustParseAddr(p.dst)
	var l4 []byte
	if p.fragOff == 0 {
		switch p.proto {
		case packet.ProtoTCP:
			l4 = make([]byte, 20)
			t := packet.TCP(l4)
			t.SetSrcPort(p.sport)
			t.SetDstPort(p.dport)
			t.SetHeaderLen(20)
			t.SetFlags(p.flags)
		case packet.ProtoUDP:
			l4 = make([]byte, 8)
			packet.UDP(l4).Encode(p.sport, p.dport, uint16(8+len(p.payload)), 0)
		case packet.ProtoSCTP:
			l4 = make([]byte, 12)
			binary.BigEndian.PutUint16(l4[0:], p.sport)
			binary.BigEndian.PutUint16(l4[2:], p.dport)
		case packet.ProtoICMPv4, packet.ProtoICMPv6:
			l4 = make([]byte, 8)
			l4[0] = uint8(p.sport)
			binary.BigEndian.PutUint16(l4[4:], p.dport)
		}
	}
	l4 = append(l4, p.payload...)
	hop := p.hop
	if hop == 0 {
		hop = 64
	}
	f := make([]byte, packet.EthernetLen, 128+len(l4))
	if src.Is4() {
		packet.Ethernet(f).SetType(packet.EtherTypeIPv4)
		ip := make([]byte, 20)
		ff := uint16(p.fragOff / 8)
		if p.mf {
			ff |= packet.IPv4FlagMF
		}
		packet.IPv4(ip).Encode(0, uint16(20+len(l4)), uint16(p.fragID), ff, hop, p.proto, src, dst)
		f = append(f, ip...)
		return append(f, l4...)
	}
	packet.Ethernet(f).SetType(packet.EtherTypeIPv6)
	var ext []byte
	next := p.proto
	if p.fragOff != 0 || p.mf {
		ext = make([]byte, 8)
		ext[0] = p.proto
		fo := uint16(p.fragOff)
		if p.mf {
			fo |= 1
		}
		binary.BigEndian.PutUint16(ext[2:], fo)
		binary.BigEndian.PutUint32(ext[4:], p.fragID)
		next = packet.ProtoFragment
	}
	ip := make([]byte, 40)
	packet.IPv6(ip).Encode(0, 0, uint16(len(ext)+len(l4)), next, hop, src, dst)
	f = append(f, ip...)
	f = append(f, ext...)
	return append(f, l4...)
}

// CompileInput is what Compile needs for one vNIC's policy.
type CompileInput struct {
	Generation uint64
	IPs        []netip.Addr
	Groups     []model.SG
	Members    map[string]*MemberSet
}

// Compile builds one vNIC's policy from its own RuleSet, as the engine
// does for a vNIC whose group list no other vNIC has.
func Compile(in CompileInput) (*Policy, error) {
	rs, err := CompileRuleSet(in.Groups, in.Members)
	if err != nil {
		return nil, err
	}
	return NewPolicy(in.Generation, in.IPs, rs)
}

func mustCompileRules(t testing.TB, groups []model.SG) *RuleSet {
	t.Helper()
	rs, err := CompileRuleSet(groups, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func mustCompile(t testing.TB, in CompileInput) *Policy {
	t.Helper()
	p, err := Compile(in)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func addrs(ss ...string) []netip.Addr {
	var r []netip.Addr
	for _, s := range ss {
		r = append(r, netip.MustParseAddr(s))
	}
	return r
}

func cidrRule(dir model.RuleDirection, proto int32, lo, hi uint32, cidr string) model.Rule {
	return model.Rule{Direction: dir, Protocol: proto, PortStart: lo, PortEnd: hi, CIDR: netip.MustParsePrefix(cidr)}
}

// Allows evaluates the policy for one packet, statelessly: dir, protocol,
// source and destination addresses and ports (ports are ignored for
// protocols without ports). Tests compare it with a
// naive evaluation of the rules.
func (p *Policy) Allows(dir Direction, proto uint8, src, dst netip.Addr, sport, dport uint16) bool {
	src, dst = src.Unmap(), dst.Unmap()
	if src.Is4() != dst.Is4() || !src.IsValid() || !dst.IsValid() {
		return false
	}
	k := flowKey{dir: dir, proto: proto, src: addrOf(src), dst: addrOf(dst), sport: sport, dport: dport,
		portsValid: hasPorts(int32(proto))}
	if src.Is6() {
		k.fam = fam6
	}
	if !k.portsValid {
		k.sport, k.dport = 0, 0
	}
	return p.allows(&k)
}

// Flows calls fn for each live tracked flow (fragment records excluded)
// until fn returns false (tests inspect tables with it).
func (c *Conntrack) Flows(now int64, fn func(Flow) bool) {
	for i := range c.slots {
		e := &c.slots[i]
		if e.state == stEmpty || e.state == stFrag || e.expires <= now || e.gen == genCut {
			continue
		}
		fk := origKey(e)
		f := Flow{Dir: fk.dir, Proto: fk.proto, Src: fk.src.netip(fk.fam), Dst: fk.dst.netip(fk.fam),
			Replied: e.flags&flReplied != 0, Expires: e.expires}
		if e.flags&flOrigIsA != 0 {
			f.SrcPort, f.DstPort = e.k.pa, e.k.pb
		} else {
			f.SrcPort, f.DstPort = e.k.pb, e.k.pa
		}
		if e.state <= TCPClose {
			f.State = e.state
		}
		if !fn(f) {
			return
		}
	}
}
