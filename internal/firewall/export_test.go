package firewall

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/packet"
)

// exportPolicy allows SSH in (TCP 22 from anywhere) and keeps the
// default egress.
func exportPolicy(t testing.TB, gen uint64) *Policy {
	return mustCompile(t, CompileInput{Generation: gen, IPs: addrs(vm4, vm6), Groups: []model.SG{{ID: "sg", Rules: []model.Rule{
		cidrRule(model.Inbound, 6, 22, 22, "0.0.0.0/0"), cidrRule(model.Inbound, 6, 22, 22, "::/0")}}}})
}

func echo(src, dst string, proto, typ uint8, id uint16) pk {
	return pk{src: src, dst: dst, proto: proto, sport: uint16(typ), dport: id}
}

// exportSteps build a table with one flow of every kind, both families,
// both directions, several TCP states, plus a fragment record.
var exportSteps = []step{
	// TCP v4 from the VM, ESTABLISHED.
	{0, FromVM, tcpOut(vm4, peer4, syn), Accept},
	{0, ToVM, tcpIn(peer4, vm4, synack), Accept},
	{0, FromVM, tcpOut(vm4, peer4, ack), Accept},
	// TCP v6 towards the VM's SSH, SYN_RECV.
	{1, ToVM, pk{src: peer6, dst: vm6, proto: 6, sport: 5555, dport: 22, flags: syn}, Accept},
	{1, FromVM, pk{src: vm6, dst: peer6, proto: 6, sport: 22, dport: 5555, flags: synack}, Accept},
	// UDP v4 answered, UDP v6 not.
	{1, FromVM, pk{src: vm4, dst: peer4, proto: 17, sport: 5353, dport: 53}, Accept},
	{1, ToVM, pk{src: peer4, dst: vm4, proto: 17, sport: 53, dport: 5353}, Accept},
	{1, FromVM, pk{src: vm6, dst: peer6, proto: 17, sport: 6000, dport: 7000}, Accept},
	// ICMP echo by identifier, both families.
	{2, FromVM, echo(vm4, peer4, 1, packet.ICMPv4Echo, 7), Accept},
	{2, FromVM, echo(vm6, peer6, 58, packet.ICMPv6EchoRequest, 9), Accept},
	// SCTP (other, with ports) and GRE (other, without).
	{2, FromVM, pk{src: vm4, dst: peer4, proto: 132, sport: 1000, dport: 2000}, Accept},
	{2, FromVM, pk{src: vm6, dst: peer6, proto: 47}, Accept},
	// TCP v4 closing: FIN_WAIT after the VM's FIN.
	{2, FromVM, pk{src: vm4, dst: peer4, proto: 6, sport: 40001, dport: 80, flags: syn}, Accept},
	{2, ToVM, pk{src: peer4, dst: vm4, proto: 6, sport: 80, dport: 40001, flags: synack}, Accept},
	{2, FromVM, pk{src: vm4, dst: peer4, proto: 6, sport: 40001, dport: 80, flags: ack}, Accept},
	{3, FromVM, pk{src: vm4, dst: peer4, proto: 6, sport: 40001, dport: 80, flags: finack}, Accept},
	// First fragment of a UDP datagram: a fragment record, not exported.
	{3, FromVM, pk{src: vm4, dst: peer4, proto: 17, sport: 1, dport: 2, mf: true, fragID: 77, payload: make([]byte, 16)}, Accept},
}

const exportFlows = 10 // flows in exportSteps (fragment record excluded)

func exportedTable(t *testing.T) (*Conntrack, *Policy) {
	t.Helper()
	ct := NewConntrack(64)
	pol := exportPolicy(t, 1)
	runSteps(t, ct, pol, exportSteps)
	if ct.Len() != exportFlows+1 {
		t.Fatalf("table holds %d entries, want %d", ct.Len(), exportFlows+1)
	}
	return ct, pol
}

func TestExportRoundTrip(t *testing.T) {
	src, _ := exportedTable(t)
	now := 10 * sec
	data := src.Export(now)
	if want := exportHeaderLen + exportFlows*exportRecordLen + exportTrailerLen; len(data) != want {
		t.Fatalf("export is %d bytes, want %d", len(data), want)
	}
	if !bytes.Equal(data, src.Export(now)) {
		t.Fatal("two exports of the same table differ")
	}

	// Another host, another clock origin, another policy generation
	// with the same rules.
	dst := NewConntrack(64)
	pol2 := exportPolicy(t, 7)
	later := 5000 * sec
	st, err := dst.Import(data, pol2, later)
	if err != nil {
		t.Fatal(err)
	}
	if st != (ImportStats{Imported: exportFlows}) {
		t.Fatalf("import stats %+v, want %d imported", st, exportFlows)
	}
	if again := dst.Export(later); !bytes.Equal(again, data) {
		t.Fatalf("re-export differs:\n got %x\nwant %x", again, data)
	}

	// The flows continue on the new table without a SYN; a fresh
	// table refuses the same segments.
	fresh := NewConntrack(64)
	cont := []step{
		{5001, ToVM, tcpIn(peer4, vm4, ack), Accept},
		{5001, FromVM, tcpOut(vm4, peer4, ack), Accept},
		{5001, FromVM, pk{src: vm6, dst: peer6, proto: 6, sport: 22, dport: 5555, flags: synack}, Accept}, // SYN-ACK retransmission
		{5001, ToVM, pk{src: peer6, dst: vm6, proto: 6, sport: 5555, dport: 22, flags: ack}, Accept},
		{5001, ToVM, pk{src: peer4, dst: vm4, proto: 17, sport: 53, dport: 5353}, Accept},
		{5001, ToVM, pk{src: peer6, dst: vm6, proto: 17, sport: 7000, dport: 6000}, Accept},
		{5001, ToVM, echo(peer4, vm4, 1, packet.ICMPv4EchoReply, 7), Accept},
		{5001, ToVM, echo(peer6, vm6, 58, packet.ICMPv6EchoReply, 9), Accept},
		{5001, ToVM, pk{src: peer4, dst: vm4, proto: 132, sport: 2000, dport: 1000}, Accept},
		{5001, ToVM, pk{src: peer6, dst: vm6, proto: 47}, Accept},
		{5001, ToVM, pk{src: peer4, dst: vm4, proto: 6, sport: 80, dport: 40001, flags: finack}, Accept}, // -> LAST_ACK
		{5001, FromVM, pk{src: vm4, dst: peer4, proto: 6, sport: 40001, dport: 80, flags: ack}, Accept},  // -> TIME_WAIT
	}
	runSteps(t, dst, pol2, cont)
	for i, s := range cont {
		if got := fresh.Decide(s.p.build(), s.dir, pol2, s.at*sec); got.Allowed() {
			t.Errorf("step %d: a table without the import accepted %+v (%v)", i, s.p, got)
		}
	}
	var states []string
	dst.Flows(5002*sec, func(f Flow) bool {
		if f.Proto == packet.ProtoTCP && f.Src.String() == vm4 {
			states = append(states, f.State.String())
		}
		return true
	})
	if strings.Join(states, ",") != "ESTABLISHED,TIME_WAIT" && strings.Join(states, ",") != "TIME_WAIT,ESTABLISHED" {
		t.Errorf("TCP states after the import: %v, want ESTABLISHED and TIME_WAIT", states)
	}

	recs, err := ParseExport(data)
	if err != nil {
		t.Fatal(err)
	}
	var tcp4 *Record
	for i := range recs {
		if r := &recs[i]; r.Proto == 6 && r.SrcPort == 40000 {
			tcp4 = r
		}
	}
	if tcp4 == nil {
		t.Fatalf("no record of the TCP flow from port 40000 in %v", recs)
	}
	want := Record{Flow: Flow{Dir: FromVM, Proto: 6, Src: addrs(vm4)[0], Dst: addrs(peer4)[0], SrcPort: 40000, DstPort: 80,
		State: TCPEstablished, Replied: true}, Remaining: time.Duration(TimeoutEstablish - 10*sec)}
	if *tcp4 != want {
		t.Errorf("record\n got %+v\nwant %+v", *tcp4, want)
	}
	if s := tcp4.String(); s != "tcp 10.0.0.1:40000 -> 10.0.0.2:80 ESTABLISHED from_vm expires-in 119h59m50s" {
		t.Errorf("String() = %q", s)
	}
}

func TestExportEmpty(t *testing.T) {
	data := NewConntrack(4).Export(0)
	if len(data) != exportHeaderLen+exportTrailerLen {
		t.Fatalf("empty export is %d bytes", len(data))
	}
	recs, err := ParseExport(data)
	if err != nil || len(recs) != 0 {
		t.Fatalf("ParseExport(empty) = %v, %v", recs, err)
	}
}

// TestExportTimeouts checks, with a fake clock, that an imported flow
// keeps the lifetime it had left at export, whatever the clocks of the
// two hosts.
func TestExportTimeouts(t *testing.T) {
	pol := defaultPolicy(t)
	src := NewConntrack(8)
	runSteps(t, src, pol, []step{
		{0, FromVM, pk{src: vm4, dst: peer4, proto: 17, sport: 5353, dport: 53}, Accept},
		{1, ToVM, pk{src: peer4, dst: vm4, proto: 17, sport: 53, dport: 5353}, Accept}, // replied: 180 s from t=1
		{1, FromVM, tcpOut(vm4, peer4, syn), Accept},                                   // SYN_SENT: 120 s
	})
	data := src.Export(61 * sec) // 120 s and 60 s left
	recs, err := ParseExport(data)
	if err != nil {
		t.Fatal(err)
	}
	left := map[uint8]time.Duration{}
	for _, r := range recs {
		left[r.Proto] = r.Remaining
	}
	if left[17] != 120*time.Second || left[6] != 60*time.Second {
		t.Fatalf("remaining lifetimes %v, want udp 120s, tcp 60s", left)
	}
	reply := pk{src: peer4, dst: vm4, proto: 17, sport: 53, dport: 5353}
	synack := tcpIn(peer4, vm4, synack)
	const base = 100_000 * sec
	for _, c := range []struct {
		name     string
		at       int64
		udp, tcp Verdict
	}{
		{"both alive", base + 59*sec, Accept, Accept},
		{"tcp expired", base + 61*sec, Accept, DropInvalid},
		{"udp just alive", base + 120*sec - 1e6, Accept, DropInvalid},
		{"both expired", base + 120*sec, DropNoRule, DropInvalid},
	} {
		t.Run(c.name, func(t *testing.T) {
			dst := NewConntrack(8)
			if _, err := dst.Import(data, pol, base); err != nil {
				t.Fatal(err)
			}
			if got := dst.Decide(reply.build(), ToVM, pol, c.at); got != c.udp {
				t.Errorf("UDP reply at base+%v: %v, want %v", time.Duration(c.at-base), got, c.udp)
			}
			if got := dst.Decide(synack.build(), ToVM, pol, c.at); got != c.tcp {
				t.Errorf("SYN-ACK at base+%v: %v, want %v", time.Duration(c.at-base), got, c.tcp)
			}
		})
	}
}

// fixCRC recomputes the checksum of an export after a test changed it.
func fixCRC(b []byte) []byte {
	n := len(b) - exportTrailerLen
	binary.BigEndian.PutUint32(b[n:], crc32.Checksum(b[:n], crc32.MakeTable(crc32.Castagnoli)))
	return b
}

// findRecord returns the offset of the first record whose kind and
// protocol match.
func findRecord(t *testing.T, data []byte, kind, proto uint8) int {
	t.Helper()
	for off := exportHeaderLen; off+exportRecordLen <= len(data)-exportTrailerLen; off += exportRecordLen {
		if data[off+2] == kind && data[off+1] == proto {
			return off
		}
	}
	t.Fatalf("no record of kind %d protocol %d", kind, proto)
	return 0
}

func TestImportRejectsCorruptData(t *testing.T) {
	src, _ := exportedTable(t)
	good := src.Export(10 * sec)
	type mut func(t *testing.T, b []byte) []byte
	// rec applies f to the first record of kind/proto, then fixes the CRC.
	rec := func(kind, proto uint8, f func(r []byte)) mut {
		return func(t *testing.T, b []byte) []byte {
			off := findRecord(t, b, kind, proto)
			f(b[off : off+exportRecordLen])
			return fixCRC(b)
		}
	}
	hdr := func(f func(h []byte)) mut {
		return func(t *testing.T, b []byte) []byte { f(b[:exportHeaderLen]); return fixCRC(b) }
	}
	cases := []struct {
		name string
		f    mut
		want string
	}{
		{"empty", func(t *testing.T, b []byte) []byte { return nil }, "shorter than"},
		{"truncated", func(t *testing.T, b []byte) []byte { return b[:len(b)-1] }, "need"},
		{"trailing byte", func(t *testing.T, b []byte) []byte { return append(b, 0) }, "need"},
		{"one record short", func(t *testing.T, b []byte) []byte { return fixCRC(b[:len(b)-exportRecordLen]) }, "need"},
		{"bad magic", hdr(func(h []byte) { h[0] = 'X' }), "bad magic"},
		{"version 2", hdr(func(h []byte) { h[5] = 2 }), "version 2 is not supported"},
		{"version 0", hdr(func(h []byte) { h[5] = 0 }), "version 0 is not supported"},
		{"record size", hdr(func(h []byte) { h[7] = 40 }), "record size 40"},
		{"reserved header", hdr(func(h []byte) { h[15] = 1 }), "reserved header"},
		{"huge count", hdr(func(h []byte) { binary.BigEndian.PutUint32(h[8:], ^uint32(0)) }), "need"},
		{"checksum", func(t *testing.T, b []byte) []byte { b[len(b)-1] ^= 1; return b }, "checksum"},
		{"flipped bit", func(t *testing.T, b []byte) []byte { b[exportHeaderLen+9] ^= 4; return b }, "checksum"},
		{"family", rec(recTCP, 6, func(r []byte) { r[0] = 5 }), "address family 5"},
		{"ipv4 padding", rec(recTCP, 6, func(r []byte) { r[12] = 1 }), "non-zero padding"},
		{"kind", rec(recTCP, 6, func(r []byte) { r[2] = 9 }), "unknown kind 9"},
		{"tcp protocol", rec(recTCP, 6, func(r []byte) { r[1] = 17 }), "TCP record with protocol 17"},
		{"tcp state", rec(recTCP, 6, func(r []byte) { r[3] = 9 }), "unknown TCP state 9"},
		{"tcp state 0", rec(recTCP, 6, func(r []byte) { r[3] = 0 }), "unknown TCP state 0"},
		{"unknown flag", rec(recTCP, 6, func(r []byte) { r[4] |= 0x80 }), "unknown flags"},
		{"reserved byte", rec(recTCP, 6, func(r []byte) { r[6] = 1 }), "reserved bytes"},
		{"udp protocol", rec(recUDP, 17, func(r []byte) { r[1] = 6 }), "UDP record with protocol 6"},
		{"udp with state", rec(recUDP, 17, func(r []byte) { r[3] = 3 }), "TCP state 3 in a record of kind 2"},
		{"udp with fin", rec(recUDP, 17, func(r []byte) { r[4] |= recFinOrig }), "TCP FIN flags"},
		{"icmp ids", rec(recICMP, 1, func(r []byte) { r[41]++ }), "identifiers"},
		{"icmp family", rec(recICMP, 1, func(r []byte) { r[1] = 58 }), "ICMP record of an IPv4 flow with protocol 58"},
		{"other tcp", rec(recOther, 132, func(r []byte) { r[1] = 6 }), "kind other with protocol 6"},
		{"other ports", rec(recOther, 47, func(r []byte) { r[41] = 1 }), "ports in a record of protocol 47"},
		{"lifetime 0", rec(recTCP, 6, func(r []byte) { binary.BigEndian.PutUint32(r[44:], 0) }), "remaining lifetime 0 ms"},
		{"lifetime too long", rec(recUDP, 17, func(r []byte) { binary.BigEndian.PutUint32(r[44:], 180_001) }), "remaining lifetime 180001 ms out of 1.."},
		{"duplicate", func(t *testing.T, b []byte) []byte {
			off, to := findRecord(t, b, recICMP, 1), findRecord(t, b, recTCP, 6)
			copy(b[to:to+exportRecordLen], b[off:off+exportRecordLen])
			return fixCRC(b)
		}, "same flow as record"},
	}
	pol := exportPolicy(t, 1)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := c.f(t, bytes.Clone(good))
			if _, err := ParseExport(data); err == nil || !errors.Is(err, ErrExportFormat) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("ParseExport: %v, want an ErrExportFormat containing %q", err, c.want)
			}
			// A failed import changes nothing, even in a table that
			// already tracks flows.
			dst := NewConntrack(64)
			runSteps(t, dst, pol, exportSteps[:3])
			before := dst.Export(50 * sec)
			st, err := dst.Import(data, pol, 50*sec)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Import: %v, want an error containing %q", err, c.want)
			}
			if st != (ImportStats{}) || !bytes.Equal(dst.Export(50*sec), before) {
				t.Fatalf("a failed import changed the table (stats %+v)", st)
			}
		})
	}
	if _, err := ParseExport(good); err != nil {
		t.Fatalf("the unmodified export is rejected: %v", err)
	}
}

func TestImportBounds(t *testing.T) {
	src, pol := exportedTable(t)
	data := src.Export(10 * sec)

	t.Run("capacity", func(t *testing.T) {
		dst := NewConntrack(4)
		st, err := dst.Import(data, pol, 0)
		if err != nil {
			t.Fatal(err)
		}
		if st != (ImportStats{Imported: 4, Full: exportFlows - 4}) || dst.Len() != 4 {
			t.Fatalf("stats %+v, %d entries; want 4 imported, %d full", st, dst.Len(), exportFlows-4)
		}
	})
	t.Run("limit", func(t *testing.T) {
		lim := NewLimit(3)
		dst := NewConntrack(64)
		dst.SetLimit(lim)
		st, err := dst.Import(data, pol, 0)
		if err != nil {
			t.Fatal(err)
		}
		if st.Imported != 3 || st.Full != exportFlows-3 || lim.Used() != 3 {
			t.Fatalf("stats %+v, limit used %d; want 3 imported", st, lim.Used())
		}
		dst.Release()
		if lim.Used() != 0 {
			t.Fatalf("limit holds %d after Release", lim.Used())
		}
	})
	t.Run("present", func(t *testing.T) {
		dst := NewConntrack(64)
		if _, err := dst.Import(data, pol, 0); err != nil {
			t.Fatal(err)
		}
		st, err := dst.Import(data, pol, 0)
		if err != nil {
			t.Fatal(err)
		}
		if st != (ImportStats{Present: exportFlows}) || dst.Len() != exportFlows {
			t.Fatalf("second import: %+v, %d entries", st, dst.Len())
		}
	})
	t.Run("policy", func(t *testing.T) {
		// Without the SSH rule the inbound SSH flow is not imported;
		// with an OUTBOUND rule to 10.0.0.0/8 only, no IPv6 flow from
		// the VM is either.
		strict := mustCompile(t, CompileInput{Generation: 3, IPs: addrs(vm4, vm6), Groups: []model.SG{{ID: "sg", Rules: []model.Rule{
			cidrRule(model.Outbound, -1, 0, 0, "10.0.0.0/8")}}}})
		dst := NewConntrack(64)
		st, err := dst.Import(data, strict, 0)
		if err != nil {
			t.Fatal(err)
		}
		// Denied: v6 SSH in, v6 UDP, ICMPv6, GRE v6.
		if st != (ImportStats{Imported: exportFlows - 4, Denied: 4}) {
			t.Fatalf("stats %+v", st)
		}
		dst.Flows(1, func(f Flow) bool {
			if f.Src.Is6() {
				t.Errorf("IPv6 flow imported against the policy: %+v", f)
			}
			return true
		})
	})
	t.Run("nil policy", func(t *testing.T) {
		if _, err := NewConntrack(4).Import(data, nil, 0); err == nil {
			t.Fatal("import without a policy succeeded")
		}
	})
}

// TestImportThenPolicyChange: imported flows carry the import's policy
// generation, so a later change cuts them at their next packet.
func TestImportThenPolicyChange(t *testing.T) {
	src, pol := exportedTable(t)
	dst := NewConntrack(64)
	if _, err := dst.Import(src.Export(10*sec), pol, 10*sec); err != nil {
		t.Fatal(err)
	}
	ssh := pk{src: peer6, dst: vm6, proto: 6, sport: 5555, dport: 22, flags: ack}
	runSteps(t, dst, pol, []step{{11, ToVM, ssh, Accept}})
	noSSH := mustCompile(t, CompileInput{Generation: 2, IPs: addrs(vm4, vm6)})
	runSteps(t, dst, noSSH, []step{
		{12, ToVM, ssh, DropCut},
		{12, ToVM, tcpIn(peer4, vm4, ack), Accept}, // outbound flows stay
	})
}

// FuzzImport: arbitrary data never panics; data ParseExport accepts
// imports completely into a roomy table under an allow-all policy and
// exports back to the same records. With fix set the checksum is made
// right first, so that the fuzzer reaches the record checks.
func FuzzImport(f *testing.F) {
	ct := NewConntrack(64)
	pol := exportPolicy(f, 1)
	for _, s := range exportSteps {
		ct.Decide(s.p.build(), s.dir, pol, s.at*sec)
	}
	good := ct.Export(10 * sec)
	f.Add(good, false)
	f.Add(NewConntrack(1).Export(0), false)
	f.Add(good[:len(good)-3], false)
	f.Add(append(bytes.Clone(good[:exportHeaderLen+exportRecordLen]), 0, 0, 0, 0), true)
	open := mustCompile(f, CompileInput{Generation: 1, Groups: []model.SG{{ID: "all", Rules: []model.Rule{
		cidrRule(model.Inbound, -1, 0, 0, "0.0.0.0/0"), cidrRule(model.Inbound, -1, 0, 0, "::/0"),
		cidrRule(model.Outbound, -1, 0, 0, "0.0.0.0/0"), cidrRule(model.Outbound, -1, 0, 0, "::/0")}}}})
	f.Fuzz(func(t *testing.T, data []byte, fix bool) {
		if fix && len(data) >= exportTrailerLen {
			data = fixCRC(bytes.Clone(data))
		}
		recs, perr := ParseExport(data)
		dst := NewConntrack(16)
		st, ierr := dst.Import(data, open, 1000*sec)
		if (perr == nil) != (ierr == nil) {
			t.Fatalf("ParseExport: %v, Import: %v", perr, ierr)
		}
		if perr != nil {
			if !errors.Is(perr, ErrExportFormat) || dst.Len() != 0 || st != (ImportStats{}) {
				t.Fatalf("rejected data (%v) left %d entries, stats %+v", perr, dst.Len(), st)
			}
			return
		}
		if dst.Len() > dst.Capacity() || st.Imported+st.Full != len(recs) || st.Denied != 0 || st.Present != 0 {
			t.Fatalf("%d records: stats %+v, %d entries", len(recs), st, dst.Len())
		}
		if st.Full > 0 {
			return
		}
		again, err := ParseExport(dst.Export(1000 * sec))
		if err != nil {
			t.Fatalf("re-export rejected: %v", err)
		}
		if len(again) != len(recs) {
			t.Fatalf("re-export has %d records, want %d", len(again), len(recs))
		}
		seen := map[Record]bool{}
		for _, r := range recs {
			seen[r] = true
		}
		for _, r := range again {
			if !seen[r] {
				t.Fatalf("re-exported record %+v not in the input", r)
			}
		}
	})
}
