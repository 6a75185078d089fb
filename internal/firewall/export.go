package firewall

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net/netip"
	"slices"
	"time"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// Export format (nic_export's fw_data, nic_add's fw_import).
//
// An export is a connection-tracking table serialized for live migration:
// the flows of one vNIC, each with its remaining lifetime, so that a
// destination host can keep the VM's established connections. The format
// does not depend on this package's memory layout; every integer is
// big-endian (network order). Version 1:
//
//	offset size  header (16 bytes)
//	0      4     magic "BFCT"
//	4      2     version: 1
//	6      2     record size: 48
//	8      4     number of records N
//	12     4     reserved, 0
//	16     48*N  records, no two of the same flow (Export sorts them by
//	             their bytes; readers accept any order)
//	16+48N 4     CRC-32C (Castagnoli) of every byte before it
//
//	offset size  record (48 bytes), one tracked flow
//	0      1     address family: 4 or 6
//	1      1     IP protocol
//	2      1     kind: 1 TCP (protocol 6), 2 UDP (17), 3 ICMP echo or
//	             other ICMP of the family (1 for IPv4, 58 for IPv6),
//	             4 any other protocol (tracked by addresses, plus ports
//	             for SCTP, 132)
//	3      1     TCP state: 1 SYN_SENT, 2 SYN_RECV, 3 ESTABLISHED,
//	             4 FIN_WAIT, 5 CLOSE_WAIT, 6 LAST_ACK, 7 TIME_WAIT,
//	             8 CLOSE; 0 for the other kinds
//	4      1     flags: 0x01 the first packet left the VM (OUTBOUND;
//	             clear: it arrived at the VM), 0x02 the responder has
//	             answered, and for TCP only 0x04 the originator sent a
//	             FIN, 0x08 the responder sent a FIN, 0x10 the first FIN
//	             came from the originator; other bits 0
//	5      3     reserved, 0
//	8      16    originator's address (IPv4: 4 bytes, then 12 zero bytes)
//	24     16    responder's address (same layout)
//	40     2     originator's port (ICMP: the echo identifier, or 0)
//	42     2     responder's port (ICMP: equal to the originator's)
//	44     4     remaining lifetime in milliseconds, 1 to the timeout of
//	             the flow's state (e.g. 432000000 for ESTABLISHED)
//
// Ports are 0 for protocols without ports. A reader rejects the whole
// export on any deviation: wrong magic, an unknown version or record size,
// a length that is not 20+48N, a bad checksum, an unknown family, kind,
// state or flag, a protocol that does not match its kind, non-zero
// reserved or padding bytes, ports where the protocol has none, a
// lifetime of 0 or beyond the state's timeout, or two records of the same
// flow. Fragment records are never exported.
const (
	// ExportVersion is the version of the export format this package
	// writes and the only one it reads.
	ExportVersion = 1
	// exportHeaderLen, exportRecordLen and exportTrailerLen are the
	// sizes of the parts of a version 1 export.
	exportHeaderLen  = 16
	exportRecordLen  = 48
	exportTrailerLen = 4
)

// exportMagic starts every export.
const exportMagic = "BFCT"

// Record kinds.
const (
	recTCP   = 1
	recUDP   = 2
	recICMP  = 3
	recOther = 4
)

// Record flags.
const (
	recFromVM       = 0x01
	recReplied      = 0x02
	recFinOrig      = 0x04
	recFinReply     = 0x08
	recFirstFinOrig = 0x10
	recTCPFlags     = recFinOrig | recFinReply | recFirstFinOrig
	recKnownFlags   = recFromVM | recReplied | recTCPFlags
)

// ErrExportFormat is wrapped by every error about malformed export data.
var ErrExportFormat = errors.New("invalid connection-tracking export")

// Flow is a tracked connection as reported to tools.
type Flow struct {
	// Dir is the direction of the flow's first packet.
	Dir              Direction
	Proto            uint8
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16 // the ICMP echo identifier for echo flows
	// State is the TCP state for TCP flows, 0 otherwise.
	State TCPState
	// Replied reports whether a packet of the responder was seen.
	Replied bool
	// Expires is the monotonic time (ns) of expiry.
	Expires int64
}

// Record is one flow of an export, as ParseExport decodes it. Its Flow's
// Expires is 0: Remaining is the lifetime the flow had left when it was
// exported.
type Record struct {
	Flow
	// Remaining is the lifetime left at export time (millisecond
	// precision).
	Remaining time.Duration
}

// tcpStateCode maps a TCP state to its code in the format.
func tcpStateCode(s TCPState) uint8 {
	switch s {
	case TCPSynSent:
		return 1
	case TCPSynRecv:
		return 2
	case TCPEstablished:
		return 3
	case TCPFinWait:
		return 4
	case TCPCloseWait:
		return 5
	case TCPLastAck:
		return 6
	case TCPTimeWait:
		return 7
	case TCPClose:
		return 8
	}
	return 0
}

// tcpStateFromCode is the inverse of tcpStateCode; false for an unknown
// code.
func tcpStateFromCode(c uint8) (TCPState, bool) {
	for s := TCPSynSent; s <= TCPClose; s++ {
		if tcpStateCode(s) == c {
			return s, true
		}
	}
	return 0, false
}

// Export serializes the zone's live flows (fragment records and expired
// entries excluded) in the export format, with lifetimes relative to now
// (monotonic ns, as given to Decide). The records are sorted, so equal
// tables give equal exports. It allocates; it is meant for the control
// path. Same concurrency contract as Decide.
func (c *Conntrack) Export(now int64) []byte {
	recs := make([]byte, 0, c.count*exportRecordLen)
	for i := range c.slots {
		e := &c.slots[i]
		if e.state == stEmpty || e.state == stFrag || e.expires <= now || e.gen == genCut {
			continue
		}
		recs = appendRecord(recs, e, now)
	}
	n := len(recs) / exportRecordLen
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i * exportRecordLen
	}
	slices.SortFunc(idx, func(a, b int) int {
		return bytes.Compare(recs[a:a+exportRecordLen], recs[b:b+exportRecordLen])
	})
	out := make([]byte, exportHeaderLen, exportHeaderLen+len(recs)+exportTrailerLen)
	copy(out, exportMagic)
	binary.BigEndian.PutUint16(out[4:], ExportVersion)
	binary.BigEndian.PutUint16(out[6:], exportRecordLen)
	binary.BigEndian.PutUint32(out[8:], uint32(n))
	for _, o := range idx {
		out = append(out, recs[o:o+exportRecordLen]...)
	}
	return binary.BigEndian.AppendUint32(out, crc32.Checksum(out, crc32.MakeTable(crc32.Castagnoli)))
}

// appendRecord appends e's record.
func appendRecord(dst []byte, e *entry, now int64) []byte {
	var r [exportRecordLen]byte
	fam := int(e.k.kind & 1)
	r[0] = 4
	if fam == fam6 {
		r[0] = 6
	}
	r[1] = e.k.proto
	switch e.state {
	case stUDP:
		r[2] = recUDP
	case stICMP:
		r[2] = recICMP
	case stOther:
		r[2] = recOther
	default:
		r[2] = recTCP
		r[3] = tcpStateCode(e.state)
	}
	if e.flags&flOrigFrom != 0 {
		r[4] |= recFromVM
	}
	if e.flags&flReplied != 0 {
		r[4] |= recReplied
	}
	if r[2] == recTCP {
		if e.flags&flFinOrig != 0 {
			r[4] |= recFinOrig
		}
		if e.flags&flFinReply != 0 {
			r[4] |= recFinReply
		}
		if e.flags&flFirstFinOrig != 0 {
			r[4] |= recFirstFinOrig
		}
	}
	src, sp, dst2, dp := e.k.b, e.k.pb, e.k.a, e.k.pa
	if e.flags&flOrigIsA != 0 {
		src, sp, dst2, dp = e.k.a, e.k.pa, e.k.b, e.k.pb
	}
	if r[2] == recICMP {
		// The record holds the echo identifier in both ports; the
		// table keys the flow as (identifier, 0) from its originator.
		sp |= dp
		dp = sp
	}
	putAddr(r[8:24], src, fam)
	putAddr(r[24:40], dst2, fam)
	binary.BigEndian.PutUint16(r[40:], sp)
	binary.BigEndian.PutUint16(r[42:], dp)
	// Round up: a live entry never exports as 0.
	ms := (e.expires - now + 999_999) / 1_000_000
	binary.BigEndian.PutUint32(r[44:], uint32(min(ms, int64(^uint32(0)))))
	return append(dst, r[:]...)
}

func putAddr(b []byte, a addr, fam int) {
	if fam == fam4 {
		binary.BigEndian.PutUint32(b, uint32(a.lo))
		return
	}
	binary.BigEndian.PutUint64(b, a.hi)
	binary.BigEndian.PutUint64(b[8:], a.lo)
}

// parsed is a validated record in the package's terms.
type parsed struct {
	fk        flowKey
	state     TCPState
	flags     uint8 // record flags
	remaining int64 // ns
}

// ParseExport validates an export and decodes its records, in the order
// of the data. Any deviation from the format (see the package's export
// format documentation in export.go, ExportVersion) is an error wrapping
// ErrExportFormat that names the first bad field; nothing is decoded
// then. It never panics, whatever data holds.
func ParseExport(data []byte) ([]Record, error) {
	ps, err := parseExport(data)
	if err != nil {
		return nil, err
	}
	out := make([]Record, len(ps))
	for i, p := range ps {
		out[i] = Record{
			Flow: Flow{Dir: p.fk.dir, Proto: p.fk.proto, Src: p.fk.src.netip(p.fk.fam), Dst: p.fk.dst.netip(p.fk.fam),
				SrcPort: p.fk.sport, DstPort: p.fk.dport, State: p.state, Replied: p.flags&recReplied != 0},
			Remaining: time.Duration(p.remaining),
		}
		if p.fk.proto == packet.ProtoICMPv4 || p.fk.proto == packet.ProtoICMPv6 {
			// The record's identifier in both ports (parsed keeps the
			// table's key: (identifier, 0)).
			out[i].DstPort = out[i].SrcPort
		}
	}
	return out, nil
}

func formatErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrExportFormat, fmt.Sprintf(format, args...))
}

func parseExport(data []byte) ([]parsed, error) {
	if len(data) < exportHeaderLen+exportTrailerLen {
		return nil, formatErr("%d bytes, shorter than the %d of an empty export", len(data), exportHeaderLen+exportTrailerLen)
	}
	if string(data[:4]) != exportMagic {
		return nil, formatErr("bad magic %q (want %q)", data[:4], exportMagic)
	}
	if v := binary.BigEndian.Uint16(data[4:]); v != ExportVersion {
		return nil, formatErr("version %d is not supported (this build reads version %d)", v, ExportVersion)
	}
	if s := binary.BigEndian.Uint16(data[6:]); s != exportRecordLen {
		return nil, formatErr("record size %d (version %d records are %d bytes)", s, ExportVersion, exportRecordLen)
	}
	if r := binary.BigEndian.Uint32(data[12:]); r != 0 {
		return nil, formatErr("reserved header field is %#x, want 0", r)
	}
	n := uint64(binary.BigEndian.Uint32(data[8:]))
	if want := exportHeaderLen + n*exportRecordLen + exportTrailerLen; uint64(len(data)) != want {
		return nil, formatErr("%d records need %d bytes, got %d", n, want, len(data))
	}
	body := data[:len(data)-exportTrailerLen]
	sum := binary.BigEndian.Uint32(data[len(body):])
	if got := crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)); got != sum {
		return nil, formatErr("checksum %#08x does not match the data (%#08x)", sum, got)
	}
	out := make([]parsed, n)
	seen := make(map[key]int, n)
	for i := range out {
		off := exportHeaderLen + i*exportRecordLen
		p, err := parseRecord(data[off : off+exportRecordLen])
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
		var k key
		canonical(&p.fk, &k)
		if j, dup := seen[k]; dup {
			return nil, formatErr("record %d: same flow as record %d", i, j)
		}
		seen[k] = i
		out[i] = p
	}
	return out, nil
}

// parseRecord validates one record.
func parseRecord(r []byte) (parsed, error) {
	var p parsed
	switch r[0] {
	case 4:
		p.fk.fam = fam4
		if !allZero(r[12:24]) || !allZero(r[28:40]) {
			return p, formatErr("IPv4 address with non-zero padding")
		}
	case 6:
		p.fk.fam = fam6
	default:
		return p, formatErr("address family %d (want 4 or 6)", r[0])
	}
	proto, kind, code, flags := r[1], r[2], r[3], r[4]
	p.fk.proto = proto
	if flags&^recKnownFlags != 0 {
		return p, formatErr("unknown flags %#02x", flags&^recKnownFlags)
	}
	if !allZero(r[5:8]) {
		return p, formatErr("reserved bytes are not 0")
	}
	p.flags = flags
	if p.fk.fam == fam4 {
		p.fk.src, p.fk.dst = addrFromBytes(r[8:12]), addrFromBytes(r[24:28])
	} else {
		p.fk.src, p.fk.dst = addrFromBytes(r[8:24]), addrFromBytes(r[24:40])
	}
	p.fk.sport, p.fk.dport = binary.BigEndian.Uint16(r[40:]), binary.BigEndian.Uint16(r[42:])
	if flags&recFromVM != 0 {
		p.fk.dir = FromVM
	}
	icmp := uint8(packet.ProtoICMPv4)
	if p.fk.fam == fam6 {
		icmp = packet.ProtoICMPv6
	}
	var timeout int64
	switch kind {
	case recTCP:
		if proto != packet.ProtoTCP {
			return p, formatErr("TCP record with protocol %d", proto)
		}
		s, ok := tcpStateFromCode(code)
		if !ok {
			return p, formatErr("unknown TCP state %d", code)
		}
		p.state = s
		timeout = tcpTimeout(s)
	case recUDP, recICMP, recOther:
		if code != 0 {
			return p, formatErr("TCP state %d in a record of kind %d", code, kind)
		}
		if flags&recTCPFlags != 0 {
			return p, formatErr("TCP FIN flags in a record of kind %d", kind)
		}
		switch kind {
		case recUDP:
			if proto != packet.ProtoUDP {
				return p, formatErr("UDP record with protocol %d", proto)
			}
			timeout = TimeoutUDP
			if flags&recReplied != 0 {
				timeout = TimeoutUDPAssured
			}
		case recICMP:
			if proto != icmp {
				return p, formatErr("ICMP record of an IPv%d flow with protocol %d", r[0], proto)
			}
			if p.fk.sport != p.fk.dport {
				return p, formatErr("ICMP record with identifiers %d and %d", p.fk.sport, p.fk.dport)
			}
			p.fk.dport = 0 // the table's key for an echo flow
			timeout = TimeoutICMP
		default:
			if proto == packet.ProtoTCP || proto == packet.ProtoUDP || proto == icmp {
				return p, formatErr("record of kind other with protocol %d", proto)
			}
			if proto != packet.ProtoSCTP && (p.fk.sport != 0 || p.fk.dport != 0) {
				return p, formatErr("ports in a record of protocol %d", proto)
			}
			timeout = TimeoutOther
		}
	default:
		return p, formatErr("unknown kind %d", kind)
	}
	p.fk.portsValid = hasPorts(int32(proto))
	ms := int64(binary.BigEndian.Uint32(r[44:]))
	if ms == 0 || ms*1_000_000 > timeout {
		return p, formatErr("remaining lifetime %d ms out of 1..%d", ms, timeout/1_000_000)
	}
	p.remaining = ms * 1_000_000
	return p, nil
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// ImportStats say what Import did with the records of an export.
type ImportStats struct {
	// Imported records became tracked flows.
	Imported int
	// Denied records are flows the current policy does not allow (they
	// would be cut at their next packet, as after a policy change).
	Denied int
	// Present records are flows the zone already tracks; its own entry
	// is kept.
	Present int
	// Full records did not fit the zone's capacity or its Limit.
	Full int
}

// Import validates data (see ParseExport) and, only if all of it is valid,
// adds its flows to the zone as tracked flows expiring at now plus their
// remaining lifetime. Imported flows obey the same rules as flows created
// by packets: they count against the zone's capacity and Limit (those
// that do not fit are skipped and counted in Full), and they are checked
// against pol, the vNIC's current policy, as a flow of an older policy
// generation is at its next packet: a flow pol does not allow is not
// imported (Denied). The imported entries carry pol's generation, so a
// later policy change re-checks them like any other flow. A flow the zone
// already tracks is left as it is (Present). Same concurrency contract as
// Decide.
func (c *Conntrack) Import(data []byte, pol *Policy, now int64) (ImportStats, error) {
	var st ImportStats
	if pol == nil {
		return st, errors.New("firewall: import: no policy")
	}
	ps, err := parseExport(data)
	if err != nil {
		return st, err
	}
	gen := pol.Generation()
	for i := range ps {
		p := &ps[i]
		if !classify(pol, &p.fk) {
			st.Denied++
			continue
		}
		var k key
		srcIsA := canonical(&p.fk, &k)
		h := c.hash(&k)
		j, free := c.find(&k, h)
		if j >= 0 {
			if c.slots[j].expires > now {
				st.Present++
				continue
			}
			c.deleteAt(uint32(j))
			_, free = c.find(&k, h)
		}
		e, ok := c.insert(&k, h, free, now)
		if !ok {
			st.Full++
			continue
		}
		e.gen = gen
		e.expires = now + p.remaining
		switch p.fk.proto {
		case packet.ProtoTCP:
			e.state = p.state
			// Window state is not exported: learnt, not enforced.
			e.flags |= flLiberal
		case packet.ProtoUDP:
			e.state = stUDP
		default:
			e.state = stOther
			if (p.fk.fam == fam4 && p.fk.proto == packet.ProtoICMPv4) || (p.fk.fam == fam6 && p.fk.proto == packet.ProtoICMPv6) {
				e.state = stICMP
			}
		}
		if srcIsA {
			e.flags |= flOrigIsA
		}
		if p.flags&recFromVM != 0 {
			e.flags |= flOrigFrom
		}
		if p.flags&recReplied != 0 {
			e.flags |= flReplied
		}
		if p.flags&recFinOrig != 0 {
			e.flags |= flFinOrig
		}
		if p.flags&recFinReply != 0 {
			e.flags |= flFinReply
		}
		if p.flags&recFirstFinOrig != 0 {
			e.flags |= flFirstFinOrig
		}
		st.Imported++
	}
	return st, nil
}

// String formats the record as one line: protocol, originator and
// responder (address:port), state, direction and remaining lifetime.
func (r Record) String() string {
	state := r.State.String()
	if r.Proto != packet.ProtoTCP {
		state = "UNREPLIED"
		if r.Replied {
			state = "REPLIED"
		}
	}
	return fmt.Sprintf("%s %s -> %s %s %s expires-in %s", protoName(r.Proto),
		endpoint(r.Src, r.SrcPort, r.Proto), endpoint(r.Dst, r.DstPort, r.Proto), state, r.Dir, r.Remaining)
}

// protoName names the common protocols, others by number.
func protoName(p uint8) string {
	if n, ok := packet.ProtoName(p); ok {
		return n
	}
	return fmt.Sprintf("proto-%d", p)
}

// endpoint formats an address with its port (ICMP: its echo identifier
// as "id N"; no port for protocols without ports).
func endpoint(a netip.Addr, port uint16, proto uint8) string {
	switch {
	case hasPorts(int32(proto)):
		return netip.AddrPortFrom(a, port).String()
	case proto == packet.ProtoICMPv4 || proto == packet.ProtoICMPv6:
		return fmt.Sprintf("%s id %d", a, port)
	}
	return a.String()
}
