package l2_test

import (
	"maps"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/l2"
	"github.com/butterfly-go/butterfly/internal/packet"
)

func mac(i int) packet.MAC { return packet.MAC{0x52, 0x54, 0, byte(i >> 16), byte(i >> 8), byte(i)} }

func frame(src, dst packet.MAC, in uint32) *packet.Buf {
	b := packet.NewBuf()
	f := b.Space()[:60]
	e := packet.Ethernet(f)
	e.SetSrc(src)
	e.SetDst(dst)
	e.SetType(packet.EtherTypeIPv4)
	packet.IPv4(f[14:]).Encode(0, 46, 1, 0, 64, packet.ProtoUDP, netip.AddrFrom4([4]byte{10, 0, 0, 1}), netip.AddrFrom4([4]byte{10, 0, 0, 2}))
	packet.UDP(f[34:]).Encode(1000, 2000, 26, 0)
	b.SetLen(60)
	b.InPort = in
	return b
}

const sec = int64(time.Second)

// tableOf returns the live entries of tb: MAC -> port and last seen.
func tableOf(tb *l2.Table, now int64) map[packet.MAC][2]int64 {
	m := map[packet.MAC][2]int64{}
	tb.Range(now, func(mac packet.MAC, v0, _ uint64, _ uint8, seen int64) bool {
		m[mac] = [2]int64{int64(v0), seen}
		return true
	})
	return m
}

func TestTableLearnLookupAging(t *testing.T) {
	tb := l2.NewTable(64, 10*time.Second)
	now := int64(1000 * sec)
	if _, _, _, ok := tb.Lookup(mac(1), now); ok {
		t.Fatal("empty table hit")
	}
	tb.Learn(mac(1), 7, 8, 9, now)
	if v0, v1, tag, ok := tb.Lookup(mac(1), now+sec); !ok || v0 != 7 || v1 != 8 || tag != 9 {
		t.Fatalf("Lookup = %d %d %d %v", v0, v1, tag, ok)
	}
	// Moves are learned.
	tb.Learn(mac(1), 3, 0, 0, now+2*sec)
	if v0, _, _, ok := tb.Lookup(mac(1), now+2*sec); !ok || v0 != 3 {
		t.Fatalf("after move: %d %v", v0, ok)
	}
	// Expires maxAge after the last refresh.
	if _, _, _, ok := tb.Lookup(mac(1), now+12*sec); !ok {
		t.Fatal("expired too early")
	}
	if _, _, _, ok := tb.Lookup(mac(1), now+13*sec); ok {
		t.Fatal("not expired after maxAge")
	}
	if n := tb.Len(now + 13*sec); n != 0 {
		t.Fatalf("Len = %d after expiry", n)
	}
	// Refreshing keeps it alive: traffic every 5 s for a minute.
	for i := int64(0); i < 12; i++ {
		tb.Learn(mac(2), 1, 0, 0, now+i*5*sec)
	}
	if _, _, _, ok := tb.Lookup(mac(2), now+11*5*sec+9*sec); !ok {
		t.Fatal("refreshed entry expired")
	}
}

func TestTableEvictionAndRemove(t *testing.T) {
	tb := l2.NewTable(8, 0) // one bucket: at most 8 entries
	for i := 0; i < 8; i++ {
		tb.Learn(mac(i), uint64(i), 0, 0, int64(i+1))
	}
	if tb.Len(100) != 8 {
		t.Fatalf("Len = %d, want 8", tb.Len(100))
	}
	// A ninth MAC evicts the least recently seen (mac 0).
	tb.Learn(mac(8), 8, 0, 0, 100)
	if _, _, _, ok := tb.Lookup(mac(0), 100); ok {
		t.Fatal("oldest entry not evicted")
	}
	for i := 1; i <= 8; i++ {
		if v, _, _, ok := tb.Lookup(mac(i), 100); !ok || v != uint64(i) {
			t.Fatalf("mac %d lost", i)
		}
	}
	if n := tb.RemoveIf(func(_ packet.MAC, v0, _ uint64, _ uint8) bool { return v0%2 == 0 }); n != 4 {
		t.Fatalf("RemoveIf removed %d, want 4", n)
	}
	if !tb.Remove(mac(3)) || tb.Remove(mac(3)) {
		t.Fatal("Remove")
	}
	var got []int
	tb.Range(100, func(m packet.MAC, v0, _ uint64, _ uint8, _ int64) bool { got = append(got, int(v0)); return true })
	slices.Sort(got)
	if !slices.Equal(got, []int{1, 5, 7}) {
		t.Fatalf("Range = %v", got)
	}
	tb.Flush()
	if tb.Len(100) != 0 {
		t.Fatal("Flush left entries")
	}
}

// TestTableConcurrent runs learners, readers and a purger at once; run
// with -race. Readers must only ever see values that were written for
// the MAC they asked about.
func TestTableConcurrent(t *testing.T) {
	tb := l2.NewTable(256, time.Minute)
	var learners, reader sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 3; w++ {
		learners.Add(1)
		go func(w int) {
			defer learners.Done()
			for i := 0; i < 20000; i++ {
				m := i % 300
				tb.Learn(mac(m), uint64(m)<<8|uint64(w), uint64(m), 0, int64(i))
			}
		}(w)
	}
	torn := 0
	reader.Add(1)
	go func() {
		defer reader.Done()
		for {
			for m := 0; m < 300; m++ {
				if v0, v1, _, ok := tb.Lookup(mac(m), 0); ok && (v0>>8 != uint64(m) || v1 != uint64(m)) {
					torn++
				}
			}
			tb.RemoveIf(func(_ packet.MAC, v0, _ uint64, _ uint8) bool { return v0>>8%50 == 0 })
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	learners.Wait()
	close(stop)
	reader.Wait()
	if torn != 0 {
		t.Fatalf("%d torn reads", torn)
	}
	if tb.Len(0) == 0 {
		t.Fatal("nothing learned")
	}
}

func TestSwitch(t *testing.T) {
	sw := l2.New(42, l2.Options{MaxAge: 30 * time.Second})
	sw.SetPorts([]uint32{3, 1, 2, 9})
	c := sw.Config()
	if !slices.Equal(c.Ports(), []uint32{1, 2, 3, 9}) || c.VNI != 42 {
		t.Fatalf("ports %v vni %d", c.Ports(), c.VNI)
	}
	now := int64(100 * sec)
	// decide checks first that Peek predicts the decision and changes
	// no entry of the MAC table.
	decide := func(src, dst packet.MAC, in uint32, at int64) l2.Decision {
		t.Helper()
		f := frame(src, dst, in)
		before := tableOf(sw.Table(), at)
		peek := sw.Peek(sw.Config(), f.Bytes(), in, at)
		if after := tableOf(sw.Table(), at); !maps.Equal(before, after) {
			t.Fatalf("Peek changed the MAC table: %v, then %v", before, after)
		}
		got := sw.DecideOne(sw.Config(), f.Bytes(), f.InPort, at)
		if peek != got {
			t.Fatalf("Peek %v -> %v on %d: %+v, DecideOne %+v", src, dst, in, peek, got)
		}
		return got
	}
	a, b := mac(0xa), mac(0xb)
	tests := []struct {
		name string
		src  packet.MAC
		dst  packet.MAC
		in   uint32
		at   int64
		want l2.Decision
	}{
		{"unknown unicast floods", a, b, 1, now, l2.Decision{Action: l2.Flood}},
		{"reply to learned MAC", b, a, 2, now, l2.Decision{Action: l2.Forward, Port: 1}},
		{"both learned", a, b, 1, now, l2.Decision{Action: l2.Forward, Port: 2}},
		{"broadcast floods", a, packet.BroadcastMAC, 1, now, l2.Decision{Action: l2.Flood}},
		{"multicast floods", a, packet.MAC{0x33, 0x33, 0, 0, 0, 1}, 1, now, l2.Decision{Action: l2.Flood}},
		{"STP dropped", a, packet.MAC{0x01, 0x80, 0xc2, 0, 0, 0}, 1, now, l2.Decision{Action: l2.Drop, Reason: l2.ReasonReserved}},
		{"LLDP dropped", a, packet.MAC{0x01, 0x80, 0xc2, 0, 0, 0x0e}, 1, now, l2.Decision{Action: l2.Drop, Reason: l2.ReasonReserved}},
		{"hairpin dropped", mac(0xc), b, 2, now, l2.Decision{Action: l2.Drop, Reason: l2.ReasonHairpin}},
		{"foreign port dropped", a, b, 77, now, l2.Decision{Action: l2.Drop, Reason: l2.ReasonNotMember}},
		{"multicast source dropped", packet.MAC{1, 0, 0x5e, 0, 0, 1}, b, 1, now, l2.Decision{Action: l2.Drop, Reason: l2.ReasonBadSource}},
		{"to its own source MAC: hairpin", a, a, 1, now, l2.Decision{Action: l2.Drop, Reason: l2.ReasonHairpin}},
		{"aged out floods", mac(0xd), a, 9, now + 31*sec, l2.Decision{Action: l2.Flood}},
	}
	for _, tt := range tests {
		if got := decide(tt.src, tt.dst, tt.in, tt.at); got != tt.want {
			t.Errorf("%s: %+v, want %+v", tt.name, got, tt.want)
		}
	}
	if got := c.AppendFlood(nil, 2); !slices.Equal(got, []uint32{1, 3, 9}) {
		t.Fatalf("flood set from 2 = %v", got)
	}
	// A moved MAC follows its new port.
	decide(a, b, 3, now)
	if got := decide(b, a, 2, now); got.Port != 3 {
		t.Fatalf("after move: %+v", got)
	}
	// Removing a port forgets what was learned on it and floods.
	sw.SetPorts([]uint32{1, 2, 9})
	if sw.Config().Has(3) {
		t.Fatal("port 3 still present")
	}
	if got := decide(b, a, 2, now); got.Action != l2.Flood {
		t.Fatalf("MAC on removed port: %+v", got)
	}
	if got := sw.Config().AppendFlood(nil, 2); !slices.Equal(got, []uint32{1, 9}) {
		t.Fatalf("flood set after removal = %v", got)
	}
	sw.SetPorts([]uint32{9, 5, 2, 1, 5})
	if !slices.Equal(sw.Config().Ports(), []uint32{1, 2, 5, 9}) {
		t.Fatalf("after adding 5: %v", sw.Config().Ports())
	}
	if l2.ReasonHairpin.String() != "hairpin" || l2.Reason(200).String() != "unknown" {
		t.Fatal("Reason.String")
	}
}

func TestSwitchManyPorts(t *testing.T) {
	sw := l2.New(1, l2.Options{})
	var ports []uint32
	for p := uint32(0); p < 100; p += 2 {
		ports = append(ports, p)
	}
	sw.SetPorts(ports)
	c := sw.Config()
	for p := uint32(0); p < 100; p++ {
		if c.Has(p) != (p%2 == 0) {
			t.Fatalf("Has(%d) = %v", p, c.Has(p))
		}
	}
}

func TestSwitchZeroAllocs(t *testing.T) {
	sw := l2.New(1, l2.Options{})
	sw.SetPorts([]uint32{1, 2, 3})
	bufs := make([]*packet.Buf, 64)
	for i := range bufs {
		bufs[i] = frame(mac(i), mac(i+1), uint32(i%3)+1)
	}
	out := make([]l2.Decision, 64)
	flood := make([]uint32, 0, 8)
	var now int64
	if a := testing.AllocsPerRun(100, func() {
		now += sec
		c := sw.Config()
		for i, b := range bufs {
			out[i] = sw.DecideOne(c, b.Bytes(), b.InPort, now)
		}
		flood = c.AppendFlood(flood[:0], 1)
	}); a != 0 {
		t.Fatalf("DecideOne: %v allocs", a)
	}
}

// BenchmarkParseAndDecide is the per-frame work of the switch stage: an
// L3/L4 parse (as antispoof and the firewall do) and the decision, on
// batches of 64.
func BenchmarkParseAndDecide(b *testing.B) {
	sw := l2.New(1, l2.Options{})
	sw.SetPorts([]uint32{1, 2, 3, 4})
	bufs := make([]*packet.Buf, 64)
	for i := range bufs {
		bufs[i] = frame(mac(i%8), mac((i+1)%8), uint32(i%4)+1)
	}
	out := make([]l2.Decision, 64)
	var now int64
	var l packet.Layers
	for b.Loop() {
		now++
		for _, f := range bufs {
			packet.Parse(f.Bytes(), &l)
		}
		c := sw.Config()
		for i, f := range bufs {
			out[i] = sw.DecideOne(c, f.Bytes(), f.InPort, now)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/frame")
}

// TestSwitchConcurrent runs two workers deciding while the control plane
// changes the ports (run with -race): every Forward goes to a port of the
// Config returned with the batch, never to the ingress port.
func TestSwitchConcurrent(t *testing.T) {
	sw := l2.New(9, l2.Options{})
	sw.SetPorts([]uint32{1, 2, 3, 4})
	var wg sync.WaitGroup
	bad := make([]int, 2)
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			bufs := make([]*packet.Buf, 16)
			for i := range bufs {
				bufs[i] = frame(mac(i%4+1), mac((i+1)%4+1), uint32(i%4)+1)
			}
			out := make([]l2.Decision, 16)
			for n := int64(0); n < 3000; n++ {
				c := sw.Config()
				for i, b := range bufs {
					out[i] = sw.DecideOne(c, b.Bytes(), b.InPort, n)
				}
				for i, d := range out {
					if d.Action == l2.Forward && (!c.Has(d.Port) || d.Port == bufs[i].InPort) {
						bad[w]++
					}
				}
			}
		}(w)
	}
	all := []uint32{1, 2, 3, 4}
	for i := 0; i < 200; i++ {
		p := uint32(i%4) + 1
		sw.SetPorts(slices.DeleteFunc(slices.Clone(all), func(q uint32) bool { return q == p }))
		sw.SetPorts(all)
	}
	wg.Wait()
	if bad[0]+bad[1] != 0 {
		t.Fatalf("%d bad forwards", bad[0]+bad[1])
	}
}

// TestHint checks that a Hint stays usable while the decision it
// recorded holds, and no longer once the MAC table changes in a way a
// lookup or learning would see; and that Touch refreshes the source as
// DecideOne does.
func TestHint(t *testing.T) {
	const maxAge = 30 * time.Second
	tests := []struct {
		name   string
		change func(sw *l2.Switch, now int64) int64 // returns the time of the check
		usable bool
	}{
		{"nothing", func(sw *l2.Switch, now int64) int64 { return now + sec }, true},
		{"refresh of a live entry", func(sw *l2.Switch, now int64) int64 {
			sw.DecideOne(sw.Config(), frame(mac(2), mac(1), 2).Bytes(), 2, now+5*sec)
			return now + 5*sec
		}, true},
		{"another MAC learned", func(sw *l2.Switch, now int64) int64 {
			sw.DecideOne(sw.Config(), frame(mac(7), mac(1), 3).Bytes(), 3, now)
			return now
		}, false},
		{"destination moved", func(sw *l2.Switch, now int64) int64 {
			sw.DecideOne(sw.Config(), frame(mac(2), mac(1), 3).Bytes(), 3, now)
			return now
		}, false},
		{"destination aged", func(sw *l2.Switch, now int64) int64 { return now + int64(maxAge) + sec }, false},
		{"destination removed", func(sw *l2.Switch, now int64) int64 {
			sw.Table().Remove(mac(2))
			return now
		}, false},
		{"port left", func(sw *l2.Switch, now int64) int64 {
			sw.SetPorts([]uint32{1, 3})
			return now
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sw := l2.New(5, l2.Options{MaxAge: maxAge})
			sw.SetPorts([]uint32{1, 2, 3})
			now := int64(100 * sec)
			sw.DecideOne(sw.Config(), frame(mac(2), mac(1), 2).Bytes(), 2, now)
			sw.DecideOne(sw.Config(), frame(mac(1), mac(2), 1).Bytes(), 1, now)
			d, h := sw.DecideHint(sw.Config(), frame(mac(1), mac(2), 1).Bytes(), 1, now)
			if d.Action != l2.Forward || d.Port != 2 || !h.Valid() {
				t.Fatalf("DecideHint = %+v, hint valid %v; want forward to 2 with a hint", d, h.Valid())
			}
			at := tc.change(sw, now)
			if got := sw.Usable(h, at); got != tc.usable {
				t.Fatalf("Usable = %v, want %v", got, tc.usable)
			}
			if got := sw.Usable(h, at); got && sw.DecideOne(sw.Config(), frame(mac(1), mac(2), 1).Bytes(), 1, at) != d {
				t.Fatal("usable hint, but DecideOne decides otherwise")
			}
		})
	}
	// A hint of another decision (a flood) only says whether the table
	// changed.
	sw := l2.New(5, l2.Options{MaxAge: maxAge})
	sw.SetPorts([]uint32{1, 2})
	sw.DecideOne(sw.Config(), frame(mac(1), mac(2), 1).Bytes(), 1, 0)
	d, h := sw.DecideHint(sw.Config(), frame(mac(1), mac(2), 1).Bytes(), 1, 0)
	if d.Action != l2.Flood || h.Valid() || sw.Usable(h, 0) || !sw.Unchanged(h) {
		t.Fatalf("flood: %+v, hint valid %v, usable %v, unchanged %v; want a flood with an invalid, unchanged hint", d, h.Valid(), sw.Usable(h, 0), sw.Unchanged(h))
	}
	sw.DecideOne(sw.Config(), frame(mac(2), mac(1), 2).Bytes(), 2, 0)
	if sw.Unchanged(h) {
		t.Fatal("hint unchanged after the destination was learned")
	}

	// Touch refreshes the source exactly when DecideOne would.
	for _, dt := range []int64{sec / 2, 2 * sec, 20 * sec} {
		sws := [2]*l2.Switch{l2.New(5, l2.Options{MaxAge: maxAge}), l2.New(5, l2.Options{MaxAge: maxAge})}
		now := int64(100 * sec)
		var h l2.Hint
		for i, sw := range sws {
			sw.SetPorts([]uint32{1, 2})
			sw.DecideOne(sw.Config(), frame(mac(2), mac(1), 2).Bytes(), 2, now)
			sw.DecideOne(sw.Config(), frame(mac(1), mac(2), 1).Bytes(), 1, now)
			if i == 0 {
				_, h = sw.DecideHint(sw.Config(), frame(mac(1), mac(2), 1).Bytes(), 1, now)
			}
		}
		if !sws[0].Usable(h, now+dt) {
			t.Fatalf("after %v: hint unusable", time.Duration(dt))
		}
		sws[0].Touch(h, mac(1), 1, now+dt)
		sws[1].DecideOne(sws[1].Config(), frame(mac(1), mac(2), 1).Bytes(), 1, now+dt)
		if a, b := tableOf(sws[0].Table(), now+dt), tableOf(sws[1].Table(), now+dt); !maps.Equal(a, b) {
			t.Errorf("after %v: Touch left %v, DecideOne %v", time.Duration(dt), a, b)
		}
	}
}
