package vhostuser

import (
	"encoding/binary"
	"path/filepath"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port/vhostuser/vhosttest"
)

func listenTest(t testing.TB) *Port {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "vhu.sock")
	p, err := Listen(sock, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func waitReady(t testing.TB, p *Port) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !p.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("port not ready within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newBufs(n int) []*packet.Buf {
	bufs := make([]*packet.Buf, n)
	for i := range bufs {
		bufs[i] = packet.NewBuf()
	}
	return bufs
}

// drain reads until the port has been empty for quiet.
func drain(p *Port, bufs []*packet.Buf, quiet time.Duration, each func(*packet.Buf)) {
	last := time.Now()
	for time.Since(last) < quiet {
		for _, b := range bufs {
			b.Reset()
		}
		n, _ := p.ReadBatch(bufs)
		if n > 0 {
			last = time.Now()
			for _, b := range bufs[:n] {
				each(b)
			}
		} else {
			time.Sleep(100 * time.Microsecond)
		}
	}
}

// testpmdLayouts are the ring layouts the testpmd tests run with: split,
// packed, and packed with two-segment frames, which DPDK's virtio driver
// transmits through indirect descriptors.
var testpmdLayouts = []struct {
	name   string
	packed bool
	txpkts string // testpmd "set txpkts" ("" = one 64-byte segment)
}{
	{"split", false, ""},
	{"packed", true, ""},
	{"packed-indirect", true, "40,24"},
}

// checkLayout fails the test unless the port's rings have the layout.
func checkLayout(t *testing.T, p *Port, packed bool) {
	t.Helper()
	for i := range 2 {
		if _, ok := p.ring(i).(*packedRing); ok != packed {
			t.Fatalf("ring %d: packed %v, want %v", i, ok, packed)
		}
		// testpmd's virtio_user asks for IN_ORDER by default (in_order=1)
		if r, ok := p.ring(i).(*vring); ok && !r.inOrder {
			t.Fatalf("ring %d: VIRTIO_F_IN_ORDER not negotiated", i)
		}
	}
}

// TestTestpmdTxonly: the guest transmits; every frame testpmd counts as
// sent reaches ReadBatch, with the right length, through many laps of
// the 256-entry ring. A second testpmd on the same socket (a VM restart)
// gets the same service.
func TestTestpmdTxonly(t *testing.T) {
	for _, l := range testpmdLayouts {
		t.Run(l.name, func(t *testing.T) { testTxonly(t, l.packed, l.txpkts) })
	}
}

func testTxonly(t *testing.T, packed bool, txpkts string) {
	p := listenTest(t)
	for round := 1; round <= 2; round++ {
		tp := vhosttest.Start(t, p.Path(), "txonly", vhosttest.Options{Packed: packed})
		waitReady(t, p)
		checkLayout(t, p, packed)
		if txpkts != "" {
			tp.Command("set txpkts " + txpkts)
		}
		tp.Command("start")
		bufs := newBufs(64)
		var got, badLen uint64
		count := func(b *packet.Buf) {
			got++
			if b.Len() != 64 {
				badLen++
			}
		}
		deadline := time.Now().Add(2 * time.Second)
		for got < 100000 && time.Now().Before(deadline) {
			for _, b := range bufs {
				b.Reset()
			}
			if n, _ := p.ReadBatch(bufs); n > 0 {
				for _, b := range bufs[:n] {
					count(b)
				}
			}
		}
		tp.Command("stop")
		drain(p, bufs, 300*time.Millisecond, count)
		_, tx := tp.PortStats()
		if got == 0 || got != tx {
			t.Fatalf("round %d: ReadBatch got %d frames, testpmd sent %d", round, got, tx)
		}
		if badLen != 0 {
			t.Fatalf("round %d: %d frames with a length other than testpmd's 64 bytes", round, badLen)
		}
		if s := p.Stats(); s.InDropped != 0 || s.Broken != 0 || s.Connections != uint64(round) {
			t.Fatalf("round %d: stats %+v", round, s)
		}
		tp.Kill()
		deadline = time.Now().Add(5 * time.Second)
		for p.Ready() {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: rings still running after testpmd quit", round)
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("round %d: %d frames from testpmd txonly", round, got)
	}
}

// TestTestpmdLoopback: frames written with WriteBatch come back through
// testpmd's io forwarding (port 0 to itself) intact and all counted.
func TestTestpmdLoopback(t *testing.T) {
	for _, l := range testpmdLayouts[:2] {
		t.Run(l.name, func(t *testing.T) { testLoopback(t, l.packed) })
	}
}

func testLoopback(t *testing.T, packed bool) {
	p := listenTest(t)
	tp := vhosttest.Start(t, p.Path(), "io", vhosttest.Options{Packed: packed})
	waitReady(t, p)
	checkLayout(t, p, packed)
	tp.Command("start")
	const total = 20000
	out := newBufs(32)
	in := newBufs(64)
	seen := make([]bool, total)
	var got, dup, corrupt int
	check := func(b *packet.Buf) {
		f := b.Bytes()
		if len(f) != 100 {
			corrupt++
			return
		}
		seq := binary.BigEndian.Uint32(f[14:])
		if seq >= total || f[99] != byte(seq) {
			corrupt++
			return
		}
		if seen[seq] {
			dup++
		}
		seen[seq] = true
		got++
	}
	sent := 0
	deadline := time.Now().Add(10 * time.Second)
	for sent < total && time.Now().Before(deadline) {
		k := 0
		for ; k < len(out) && sent+k < total; k++ {
			b := out[k]
			b.Reset()
			f := b.Space()[:100]
			copy(f[0:6], []byte{0x02, 0, 0, 0, 0, 2})
			copy(f[6:12], []byte{0x02, 0, 0, 0, 0, 1})
			binary.BigEndian.PutUint16(f[12:], 0x88b5)
			binary.BigEndian.PutUint32(f[14:], uint32(sent+k))
			f[99] = byte(sent + k)
			b.SetLen(100)
		}
		n, _, err := p.WriteBatch(out[:k])
		if err != nil {
			t.Fatal(err)
		}
		sent += n
		for _, b := range in {
			b.Reset()
		}
		if m, _ := p.ReadBatch(in); m > 0 {
			for _, b := range in[:m] {
				check(b)
			}
		}
	}
	drain(p, in, 300*time.Millisecond, check)
	tp.Command("stop")
	rx, tx := tp.PortStats()
	if sent != total {
		t.Fatalf("WriteBatch accepted %d of %d frames in 10s", sent, total)
	}
	if rx != total {
		t.Fatalf("testpmd received %d frames, WriteBatch delivered %d", rx, total)
	}
	// testpmd's io mode drops what its transmit burst cannot place, so
	// the frames to read back are the ones it counts as sent.
	if tx == 0 || uint64(got) != tx || dup != 0 || corrupt != 0 {
		t.Fatalf("read back %d frames, testpmd sent %d of %d (%d duplicates, %d corrupt)", got, tx, total, dup, corrupt)
	}
}

// BenchmarkTestpmdTxonly measures ReadBatch against testpmd txonly
// (64-byte frames, batches of 32): the guest-to-switch packet rate.
// (Sub-benchmark names must not contain '=' or ',': the socket path sits
// in testpmd's device arguments.)
func BenchmarkTestpmdTxonly(b *testing.B) {
	b.Run("arm-each-poll", func(b *testing.B) { benchTxonly(b, false, false) })
	b.Run("arm-on-sleep", func(b *testing.B) { benchTxonly(b, true, false) })
	b.Run("packed-arm-on-sleep", func(b *testing.B) { benchTxonly(b, true, true) })
}

func benchTxonly(b *testing.B, armOnSleep, packed bool) {
	sock := filepath.Join(b.TempDir(), "vhu.sock")
	p, err := Listen(sock, Options{ArmOnSleep: armOnSleep})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	tp := vhosttest.Start(b, sock, "txonly", vhosttest.Options{Packed: packed})
	defer tp.Kill()
	waitReady(b, p)
	tp.Command("start")
	bufs := newBufs(32)
	b.ResetTimer()
	got := 0
	for got < b.N {
		n, _ := p.ReadBatch(bufs)
		got += n
	}
	b.StopTimer()
	b.ReportMetric(float64(got)/b.Elapsed().Seconds()/1e6, "Mpps")
}

// BenchmarkTestpmdRxonly measures WriteBatch into testpmd rxonly (64-byte
// frames, batches of 32): the switch-to-guest packet rate. Frames the
// guest has no room for are retried, so every op is one delivered frame.
func BenchmarkTestpmdRxonly(b *testing.B) {
	b.Run("split", func(b *testing.B) { benchRxonly(b, false) })
	b.Run("packed", func(b *testing.B) { benchRxonly(b, true) })
}

func benchRxonly(b *testing.B, packed bool) {
	sock := filepath.Join(b.TempDir(), "vhu.sock")
	p, err := Listen(sock, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	tp := vhosttest.Start(b, sock, "rxonly", vhosttest.Options{Packed: packed})
	defer tp.Kill()
	waitReady(b, p)
	tp.Command("start")
	bufs := newBufs(32)
	for _, x := range bufs {
		x.SetLen(64)
	}
	b.ResetTimer()
	sent := 0
	for sent < b.N {
		n, _, _ := p.WriteBatch(bufs[:min(32, b.N-sent)])
		sent += n
	}
	b.StopTimer()
	b.ReportMetric(float64(sent)/b.Elapsed().Seconds()/1e6, "Mpps")
}

// udpFrame writes into b an IPv4/UDP frame of flow (its source port) and
// sequence number seq (in the payload), 100 bytes long.
func udpFrame(b *packet.Buf, flow uint16, seq uint32) {
	b.Reset()
	f := b.Space()[:100]
	clear(f)
	copy(f[0:6], []byte{0x02, 0, 0, 0, 0, 2})
	copy(f[6:12], []byte{0x02, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], 86)
	copy(ip[12:], []byte{10, 0, 0, 1})
	copy(ip[16:], []byte{10, 0, 0, 2})
	udp := f[34:42]
	binary.BigEndian.PutUint16(udp[0:], 1000+flow)
	binary.BigEndian.PutUint16(udp[2:], 7)
	binary.BigEndian.PutUint16(udp[4:], 66)
	binary.BigEndian.PutUint32(f[42:], seq)
	binary.BigEndian.PutUint16(f[46:], flow)
	b.SetLen(100)
}

// TestTestpmdMultiqueue: a virtio_user front end with two queue pairs.
// txonly: testpmd transmits on both queues and ReadBatch gets exactly
// what it sent, from both transmit rings. io loopback: 64 UDP flows
// written with WriteBatch are spread over both receive rings, come back
// through testpmd on the same pair, all counted per queue, each flow in
// order.
func TestTestpmdMultiqueue(t *testing.T) {
	t.Run("txonly", func(t *testing.T) {
		p := listenTest(t)
		tp := vhosttest.Start(t, p.Path(), "txonly", vhosttest.Options{Queues: 2})
		waitQueues(t, p, 2)
		tp.Command("start")
		bufs := newBufs(64)
		var got uint64
		deadline := time.Now().Add(2 * time.Second)
		for got < 100000 && time.Now().Before(deadline) {
			for _, b := range bufs {
				b.Reset()
			}
			n, _ := p.ReadBatch(bufs)
			got += uint64(n)
		}
		tp.Command("stop")
		drain(p, bufs, 300*time.Millisecond, func(*packet.Buf) { got++ })
		_, tx := tp.PortStats()
		qs := p.QueueStats()
		if got == 0 || got != tx {
			t.Fatalf("ReadBatch got %d frames, testpmd sent %d", got, tx)
		}
		if len(qs) != 2 || qs[0].In == 0 || qs[1].In == 0 || qs[0].In+qs[1].In != got {
			t.Fatalf("queue stats %+v, want both transmit queues used, %d in all", qs, got)
		}
		t.Logf("%d frames: %d on queue 0, %d on queue 1", got, qs[0].In, qs[1].In)
	})
	t.Run("loopback", func(t *testing.T) {
		p := listenTest(t)
		tp := vhosttest.Start(t, p.Path(), "io", vhosttest.Options{Queues: 2})
		waitQueues(t, p, 2)
		tp.Command("start")
		const total, flows = 20000, 64
		out := newBufs(32)
		in := newBufs(64)
		var next [flows]uint32
		var got, disorder, corrupt int
		check := func(b *packet.Buf) {
			f := b.Bytes()
			if len(f) != 100 {
				corrupt++
				return
			}
			seq, flow := binary.BigEndian.Uint32(f[42:]), binary.BigEndian.Uint16(f[46:])
			if flow >= flows {
				corrupt++
				return
			}
			if seq < next[flow] {
				disorder++
			}
			next[flow] = seq + 1
			got++
		}
		// out[:pend] are frames WriteBatch did not take: they go first
		// in the next batch, as the engine would retry them.
		sent, made, pend := 0, 0, 0
		deadline := time.Now().Add(10 * time.Second)
		for sent < total && time.Now().Before(deadline) {
			k := pend
			for ; k < len(out) && made < total; k++ {
				udpFrame(out[k], uint16(made%flows), uint32(made/flows))
				made++
			}
			n, dropped, err := p.WriteBatch(out[:k])
			if err != nil || dropped != 0 {
				t.Fatalf("WriteBatch: %d dropped, %v", dropped, err)
			}
			sent += n
			pend = k - n
			for i := range pend {
				out[i], out[n+i] = out[n+i], out[i]
			}
			for _, b := range in {
				b.Reset()
			}
			if m, _ := p.ReadBatch(in); m > 0 {
				for _, b := range in[:m] {
					check(b)
				}
			}
		}
		drain(p, in, 300*time.Millisecond, check)
		tp.Command("stop")
		rx, tx := tp.PortStats()
		qs := p.QueueStats()
		if sent != total || rx != total {
			t.Fatalf("WriteBatch delivered %d of %d frames, testpmd received %d", sent, total, rx)
		}
		if tx == 0 || uint64(got) != tx || disorder != 0 || corrupt != 0 {
			t.Fatalf("read back %d frames, testpmd sent %d (%d out of order in their flow, %d corrupt)", got, tx, disorder, corrupt)
		}
		if len(qs) != 2 || qs[0].Out == 0 || qs[1].Out == 0 || qs[0].Out+qs[1].Out != total ||
			qs[0].In+qs[1].In != tx || qs[0].In > qs[0].Out || qs[1].In > qs[1].Out {
			t.Fatalf("queue stats %+v: want both pairs used, %d out and %d in all, no pair returning more than it got", qs, total, tx)
		}
		t.Logf("queue stats %+v", qs)
	})
}

// waitQueues waits until the rings of n queue pairs run.
func waitQueues(t *testing.T, p *Port, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		up := 0
		for i := range 2 * n {
			if p.rings[i].Load() != nil {
				up++
			}
		}
		if up == 2*n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the %d rings of %d queue pairs running after 10s", up, 2*n, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
