package firewall

import (
	"testing"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// seg is a TCP segment with sequence numbers, for window tests: the VM
// (vm4:40000) talks to the peer (peer4:80).
type seg struct {
	fromVM   bool
	flags    uint8
	seq, ack uint32
	win      uint16
	wscale   int // window-scale option; -1 none
	dlen     int
}

func (s seg) frame() []byte {
	p := pk{src: peer4, dst: vm4, proto: packet.ProtoTCP, sport: 80, dport: 40000, flags: s.flags}
	if s.fromVM {
		p = pk{src: vm4, dst: peer4, proto: packet.ProtoTCP, sport: 40000, dport: 80, flags: s.flags}
	}
	hl := 20
	if s.wscale >= 0 {
		p.payload = []byte{1, 3, 3, byte(s.wscale)}
		hl = 24
	}
	p.payload = append(p.payload, make([]byte, s.dlen)...)
	f := p.build()
	tcp := packet.TCP(f[packet.EthernetLen+20:])
	tcp.SetHeaderLen(hl)
	tcp.SetSeq(s.seq)
	tcp.SetAck(s.ack)
	tcp.SetWindow(s.win)
	return f
}

func (s seg) dir() Direction {
	if s.fromVM {
		return FromVM
	}
	return ToVM
}

// Segments of a connection: the VM's ISN is 1000, the peer's 5000, both
// with window scale 7 unless a test says otherwise.
func vmSeg(flags uint8, seq, ack uint32, win uint16, dlen int) seg {
	return seg{fromVM: true, flags: flags, seq: seq, ack: ack, win: win, wscale: -1, dlen: dlen}
}

func peerSeg(flags uint8, seq, ack uint32, win uint16, dlen int) seg {
	return seg{flags: flags, seq: seq, ack: ack, win: win, wscale: -1, dlen: dlen}
}

func withWS(s seg, ws int) seg { s.wscale = ws; return s }

// minus subtracts modulo 2^32, as sequence numbers do.
func minus(a, b uint32) uint32 { return a - b }

// handshake opens the connection; the peer's SYN-ACK has window scale
// peerWS (-1: none).
func handshake(peerWS int) []seg {
	return []seg{
		withWS(vmSeg(syn, 1000, 0, 64240, 0), 7),
		withWS(peerSeg(synack, 5000, 1001, 65160, 0), peerWS),
		vmSeg(ack, 1001, 5001, 502, 0), // 502<<7 = 64256 bytes when scaled
	}
}

func TestTCPWindow(t *testing.T) {
	type step struct {
		s    seg
		want Verdict
	}
	ok := func(s seg) step { return step{s, Accept} }
	bad := func(s seg) step { return step{s, DropInvalid} }
	const fin = packet.TCPFlagFIN | packet.TCPFlagACK
	const rstack = packet.TCPFlagRST | packet.TCPFlagACK
	cases := []struct {
		name   string
		peerWS int
		steps  []step
		state  TCPState
	}{
		{"data both ways, retransmission, keepalive", 7, []step{
			ok(vmSeg(ack, 1001, 5001, 502, 1000)),
			ok(peerSeg(ack, 5001, 2001, 509, 1400)),
			ok(vmSeg(ack, 1001, 5001, 502, 1000)), // retransmitted
			ok(vmSeg(ack, 2000, 6401, 502, 0)),    // keepalive: seq one below
			ok(peerSeg(ack, 6401, 2001, 509, 0)),
		}, TCPEstablished},
		{"segment beyond the peer's window", 7, []step{
			bad(vmSeg(ack, 1001+200_000, 5001, 502, 100)),
			ok(vmSeg(ack, 1001+60_000, 5001, 502, 100)), // within 64 KB
		}, TCPEstablished},
		{"window scaling needs both SYNs", -1, []step{
			// Unscaled, the VM's window is 502 bytes: the peer may start a
			// segment at 5001+502 at most.
			ok(peerSeg(ack, 5001, 1001, 509, 502)),
			bad(peerSeg(ack, 5001+1000, 1001, 509, 100)),
		}, TCPEstablished},
		{"scaled window allows more", 7, []step{
			ok(peerSeg(ack, 5001, 1001, 509, 502)),
			ok(peerSeg(ack, 5001+1000, 1001, 509, 100)),
			ok(peerSeg(ack, 5001+60_000, 1001, 509, 100)),
		}, TCPEstablished},
		{"acknowledgement of unsent data", 7, []step{
			ok(vmSeg(ack, 1001, 5001, 502, 1000)),
			bad(peerSeg(ack, 5001, 2001+100_000, 509, 0)),
			ok(peerSeg(ack, 5001, 2001, 509, 0)),
		}, TCPEstablished},
		{"acknowledgement far behind", 7, []step{
			bad(peerSeg(ack, 5001, minus(1001, 100_000), 509, 0)),
		}, TCPEstablished},
		{"segment older than a window", 7, []step{
			ok(vmSeg(ack, 1001, 5001, 502, 1000)),
			bad(vmSeg(ack, minus(1001, 200_000), 5001, 502, 100)),
		}, TCPEstablished},
		{"RST out of window ignored, in window closes", 7, []step{
			bad(peerSeg(rstack, 5001+1_000_000, 1001, 0, 0)),
			bad(peerSeg(rst, minus(5001, 1_000_000), 0, 0, 0)),
			ok(peerSeg(rst, 5001, 0, 0, 0)),
		}, TCPClose},
		{"FIN counts one", 7, []step{
			ok(vmSeg(fin, 1001, 5001, 502, 0)),
			bad(peerSeg(ack, 5001, 1003, 509, 0)), // acks beyond the FIN
			ok(peerSeg(ack, 5001, 1002, 509, 0)),
		}, TCPCloseWait},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ct := NewConntrack(8)
			pol := defaultPolicy(t)
			for i, s := range handshake(c.peerWS) {
				if v := ct.Decide(s.frame(), s.dir(), pol, 0); v != Accept {
					t.Fatalf("handshake %d: %v", i, v)
				}
			}
			for i, st := range c.steps {
				if got := ct.Decide(st.s.frame(), st.s.dir(), pol, int64(i+1)*sec); got != st.want {
					t.Fatalf("step %d %+v: %v, want %v", i, st.s, got, st.want)
				}
			}
			var state TCPState
			ct.Flows(int64(len(c.steps)+1)*sec, func(f Flow) bool { state = f.State; return false })
			if state != c.state {
				t.Errorf("state %v, want %v", state, c.state)
			}
		})
	}
}

func TestTCPWindowRefusedAndWrap(t *testing.T) {
	pol := defaultPolicy(t)
	run := func(t *testing.T, ct *Conntrack, segs []seg, want []Verdict) {
		t.Helper()
		for i, s := range segs {
			if got := ct.Decide(s.frame(), s.dir(), pol, 0); got != want[i] {
				t.Fatalf("segment %d %+v: %v, want %v", i, s, got, want[i])
			}
		}
	}
	t.Run("connection refused", func(t *testing.T) {
		// A blind RST (wrong acknowledgement) is dropped; the peer's
		// real RST, acknowledging the SYN, closes.
		run(t, NewConntrack(4), []seg{
			withWS(vmSeg(syn, 1000, 0, 64240, 0), 7),
			peerSeg(packet.TCPFlagRST|packet.TCPFlagACK, 0, 77777, 0, 0),
			peerSeg(packet.TCPFlagRST|packet.TCPFlagACK, 0, 1001, 0, 0),
		}, []Verdict{Accept, DropInvalid, Accept})
	})
	t.Run("sequence numbers wrap", func(t *testing.T) {
		isn := uint32(0xffffff00)
		run(t, NewConntrack(4), []seg{
			withWS(vmSeg(syn, isn, 0, 64240, 0), 7),
			withWS(peerSeg(synack, 5000, isn+1, 65160, 0), 7),
			vmSeg(ack, isn+1, 5001, 502, 0),
			vmSeg(ack, isn+1, 5001, 502, 1000), // crosses 2^32
			peerSeg(ack, 5001, isn+1001, 509, 0),
			vmSeg(ack, isn+1001, 5001, 502, 1000),
		}, []Verdict{Accept, Accept, Accept, Accept, Accept, Accept})
	})
	t.Run("SYN again with another ISN", func(t *testing.T) {
		run(t, NewConntrack(4), []seg{
			withWS(vmSeg(syn, 1000, 0, 64240, 0), 7),
			withWS(vmSeg(syn, 900_000, 0, 64240, 0), 7),
			withWS(peerSeg(synack, 5000, 900_001, 65160, 0), 7),
			vmSeg(ack, 900_001, 5001, 502, 0),
		}, []Verdict{Accept, Accept, Accept, Accept})
	})
	t.Run("imported flows are liberal", func(t *testing.T) {
		src := NewConntrack(4)
		run(t, src, handshake(7), []Verdict{Accept, Accept, Accept})
		dst := NewConntrack(4)
		if _, err := dst.Import(src.Export(0), pol, 0); err != nil {
			t.Fatal(err)
		}
		// The scale is unknown on this host: a segment far beyond the
		// unscaled window must pass.
		run(t, dst, []seg{
			peerSeg(ack, 5001, 1001, 509, 100),
			vmSeg(ack, 1001, 5101, 502, 0),
			peerSeg(ack, 5001+60_000, 1001, 509, 100),
		}, []Verdict{Accept, Accept, Accept})
	})
}

func TestWindowScaleOption(t *testing.T) {
	for _, c := range []struct {
		opts []byte
		want int8
	}{
		{nil, -1},
		{[]byte{1, 3, 3, 7}, 7},
		{[]byte{2, 4, 5, 0xb4, 1, 3, 3, 9}, 9},      // MSS, NOP, WS
		{[]byte{3, 3, 20}, 14},                      // capped
		{[]byte{0, 3, 3, 7}, -1},                    // after end of options
		{[]byte{2, 1, 3, 3, 7}, -1},                 // bad length
		{[]byte{2, 40, 0, 0}, -1},                   // overruns
		{[]byte{1, 1, 1, 3}, -1},                    // truncated
		{[]byte{8, 10, 0, 0, 0, 1, 0, 0, 0, 2}, -1}, // timestamps only
	} {
		if got := windowScale(c.opts); got != c.want {
			t.Errorf("windowScale(%v) = %d, want %d", c.opts, got, c.want)
		}
	}
}
