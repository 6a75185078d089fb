package udp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port/porttest"
)

func bufs(n int) []*packet.Buf {
	out := make([]*packet.Buf, n)
	for i := range out {
		out[i] = packet.NewBuf()
	}
	return out
}

func reset(bs []*packet.Buf) {
	for _, b := range bs {
		b.Reset()
	}
}

// payload returns n bytes whose first 8 carry id.
func payload(id uint64, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + int(id))
	}
	if n >= 8 {
		binary.BigEndian.PutUint64(b, id)
	}
	return b
}

func listen(t testing.TB, addr string, opts Options) *Port {
	t.Helper()
	p, err := Listen(netip.MustParseAddr(addr), 0, opts)
	if err != nil {
		t.Fatalf("Listen(%s): %v", addr, err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

// waitReadable sleeps in epoll on fd until it is readable or d passes.
func waitReadable(fd int, d time.Duration) bool {
	ev := make([]unix.EpollEvent, 1)
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return false
	}
	defer unix.Close(ep)
	if unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}) != nil {
		return false
	}
	n, _ := unix.EpollWait(ep, ev, int(d/time.Millisecond))
	return n > 0
}

// readN reads until want payloads arrived or the deadline passes, using
// batches of batch buffers and sleeping on Fd when idle.
func readN(t testing.TB, p *Port, want, batch int, timeout time.Duration) []*packet.Buf {
	t.Helper()
	var out []*packet.Buf
	bs := bufs(batch)
	deadline := time.Now().Add(timeout)
	for len(out) < want && time.Now().Before(deadline) {
		reset(bs)
		n, err := p.ReadBatch(bs)
		if err != nil {
			t.Fatalf("ReadBatch: %v", err)
		}
		if n == 0 {
			if p.Pending() {
				t.Fatal("ReadBatch returned nothing while segments are pending")
			}
			waitReadable(p.Fd(), time.Until(deadline))
			continue
		}
		if n < len(bs) && p.Pending() {
			t.Fatal("segments left pending after a partial batch")
		}
		for _, b := range bs[:n] {
			c := packet.NewBuf()
			c.SetLen(copy(c.Space(), b.Bytes()))
			c.Peer = b.Peer
			out = append(out, c)
		}
		bs = bufs(batch)
	}
	return out
}

func TestListenErrors(t *testing.T) {
	tests := []struct {
		name string
		addr netip.Addr
		opts Options
	}{
		{"invalid", netip.Addr{}, Options{}},
		{"unspecified", netip.IPv4Unspecified(), Options{}},
		{"multicast", netip.MustParseAddr("239.1.1.1"), Options{}},
		{"bad ttl", netip.MustParseAddr("127.0.0.1"), Options{MulticastTTL: 300}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if p, err := Listen(tc.addr, 0, tc.opts); err == nil {
				p.Close()
				t.Fatal("Listen succeeded")
			}
		})
	}
}

func TestExchange(t *testing.T) {
	tests := []struct{ name, a, b string }{
		{"ipv4", "127.0.0.1", "127.0.0.2"},
		{"ipv6", "::1", "::1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := listen(t, tc.a, Options{})
			b := listen(t, tc.b, Options{})
			for _, dir := range []struct{ from, to *Port }{{a, b}, {b, a}} {
				const count = 150 // more than one sendmmsg batch
				out := bufs(count)
				for i, o := range out {
					o.SetLen(copy(o.Space(), payload(uint64(i), 50+i*9)))
					o.Peer = dir.to.LocalAddr()
				}
				n, _, err := dir.from.WriteBatch(out)
				if err != nil || n != count {
					t.Fatalf("WriteBatch = %d, %v; want %d", n, err, count)
				}
				// The payloads must be untouched by the send.
				for i, o := range out {
					if !bytes.Equal(o.Bytes(), payload(uint64(i), 50+i*9)) {
						t.Fatalf("buffer %d changed by WriteBatch", i)
					}
				}
				got := readN(t, dir.to, count, 32, 5*time.Second)
				if len(got) != count {
					t.Fatalf("received %d datagrams, want %d", len(got), count)
				}
				for i, g := range got {
					if !bytes.Equal(g.Bytes(), payload(uint64(i), 50+i*9)) {
						t.Fatalf("datagram %d: wrong payload (%d bytes)", i, g.Len())
					}
					if g.Peer != dir.from.LocalAddr() {
						t.Fatalf("datagram %d: peer %v, want %v", i, g.Peer, dir.from.LocalAddr())
					}
				}
			}
		})
	}
}

// TestWriteBatchRefusesUnsendable: datagrams that cannot be sent (no
// peer, wrong family, port 0, empty) or that the kernel refuses (a
// broadcast without SO_BROADCAST: EACCES) are refused and counted; the
// others are sent, and come first in the batch.
func TestWriteBatchRefusesUnsendable(t *testing.T) {
	a := listen(t, "127.0.0.1", Options{})
	b := listen(t, "127.0.0.2", Options{})
	good := b.LocalAddr()
	cases := []struct {
		peer netip.AddrPort
		ok   bool
	}{
		{good, true},
		{netip.AddrPort{}, false}, // no peer
		{netip.MustParseAddrPort("[2001:db8::1]:4789"), false},                           // wrong family
		{netip.AddrPortFrom(good.Addr(), 0), false},                                      // port 0
		{netip.AddrPortFrom(netip.MustParseAddr("::ffff:127.0.0.2"), good.Port()), true}, // v4-mapped is fine
		{netip.AddrPortFrom(netip.MustParseAddr("255.255.255.255"), good.Port()), false}, // EACCES
		{good, true},
	}
	out := bufs(len(cases))
	for i, c := range cases {
		out[i].SetLen(copy(out[i].Space(), payload(uint64(i), 100)))
		out[i].Peer = c.peer
	}
	out = append(out, packet.NewBuf()) // empty datagram: refused
	out[len(out)-1].Peer = good
	sent, dropped, err := a.WriteBatch(out)
	if err != nil {
		t.Fatal(err)
	}
	if sent != 3 || dropped != 5 {
		t.Fatalf("WriteBatch sent %d, refused %d; want 3, 5", sent, dropped)
	}
	if r := a.TxRefused(); r != 5 {
		t.Fatalf("TxRefused = %d, want 5", r)
	}
	var first []uint64
	for _, o := range out[:sent] {
		first = append(first, binary.BigEndian.Uint64(o.Bytes()))
	}
	if fmt.Sprint(first) != "[0 4 6]" {
		t.Fatalf("batch starts with ids %v, want the sent [0 4 6]", first)
	}
	got := readN(t, b, 3, 8, 5*time.Second)
	if len(got) != 3 {
		t.Fatalf("received %d, want 3", len(got))
	}
	var ids []uint64
	for _, g := range got {
		ids = append(ids, binary.BigEndian.Uint64(g.Bytes()))
	}
	if fmt.Sprint(ids) != "[0 4 6]" {
		t.Fatalf("received ids %v, want [0 4 6]", ids)
	}
}

// gsoSend sends the concatenation of segs as one UDP GSO send of segment
// size seg from a plain socket bound to from.
func gsoSend(t *testing.T, fd int, to netip.AddrPort, seg int, data []byte) {
	t.Helper()
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT, seg); err != nil {
		t.Fatalf("UDP_SEGMENT: %v", err)
	}
	sa := &unix.SockaddrInet4{Addr: to.Addr().As4(), Port: int(to.Port())}
	if err := unix.Sendto(fd, data, 0, sa); err != nil {
		t.Fatalf("GSO sendto (%d bytes, seg %d): %v", len(data), seg, err)
	}
}

func TestGROSplit(t *testing.T) {
	// Each send: segment size and total length; a segment size of 0 is a
	// plain datagram.
	type send struct{ seg, total int }
	sends := []send{
		{1000, 10*1000 + 500}, // 11 segments, short last one
		{0, 333},
		{1400, 1400 * 40}, // 40 equal segments
		{0, 1},
		{200, 200 * 3},
		{1200, 1200*20 + 7},
	}
	for _, batch := range []int{1, 3, 7, 16, 64} {
		t.Run(fmt.Sprintf("batch%d", batch), func(t *testing.T) {
			r := listen(t, "127.0.0.2", Options{})
			if !r.GRO() {
				t.Skip("kernel without UDP_GRO")
			}
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
				t.Fatal(err)
			}
			var want [][]byte
			id := uint64(0)
			for _, s := range sends {
				var data []byte
				seg := s.seg
				if seg == 0 {
					seg = s.total
				}
				for off := 0; off < s.total; off += seg {
					p := payload(id, min(seg, s.total-off))
					id++
					want = append(want, p)
					data = append(data, p...)
				}
				if s.seg == 0 {
					// Disable GSO for a plain datagram.
					gsoSend(t, fd, r.LocalAddr(), 0, data)
				} else {
					gsoSend(t, fd, r.LocalAddr(), s.seg, data)
				}
			}
			sawPending := false
			var got []*packet.Buf
			bs := bufs(batch)
			deadline := time.Now().Add(5 * time.Second)
			for len(got) < len(want) && time.Now().Before(deadline) {
				reset(bs)
				n, err := r.ReadBatch(bs)
				if err != nil {
					t.Fatal(err)
				}
				if r.Pending() {
					sawPending = true
					if n != batch {
						t.Fatalf("pending segments after a batch of %d/%d", n, batch)
					}
				}
				if n == 0 {
					waitReadable(r.Fd(), 100*time.Millisecond)
				}
				for _, b := range bs[:n] {
					c := packet.NewBuf()
					c.SetLen(copy(c.Space(), b.Bytes()))
					c.Peer = b.Peer
					got = append(got, c)
				}
			}
			if len(got) != len(want) {
				t.Fatalf("received %d segments, want %d", len(got), len(want))
			}
			for i := range want {
				if !bytes.Equal(got[i].Bytes(), want[i]) {
					t.Fatalf("segment %d: %d bytes, want %d (id %d)", i, got[i].Len(), len(want[i]), binary.BigEndian.Uint64(got[i].Bytes()))
				}
				if got[i].Peer.Addr() != netip.MustParseAddr("127.0.0.1") {
					t.Fatalf("segment %d: peer %v", i, got[i].Peer)
				}
			}
			// A batch smaller than a coalesced datagram must have
			// left segments pending, which proves the kernel
			// coalesced and the port split.
			if batch < 11 && !sawPending {
				t.Fatal("no coalesced datagram seen")
			}
		})
	}
}

func TestGSOSend(t *testing.T) {
	// Each datagram: a receiver index (0 or 1) and a length.
	type dg struct{ to, size int }
	run := func(n, to, size int) []dg {
		out := make([]dg, n)
		for i := range out {
			out[i] = dg{to, size}
		}
		return out
	}
	cat := func(parts ...[]dg) []dg {
		var out []dg
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	tests := []struct {
		name   string
		dgs    []dg
		minGSO uint64 // GSO messages at least expected
		maxGSO uint64
	}{
		{"one run", run(10, 0, 1400), 1, 1},
		{"short last", cat(run(5, 0, 1000), run(1, 0, 300)), 1, 1},
		{"longer after shorter", cat(run(3, 0, 500), run(3, 0, 900)), 2, 2},
		{"more than 64 segments", run(100, 0, 200), 2, 2},
		{"byte bound", run(60, 0, 1400), 2, 2}, // 46 x 1400 fit in 65000
		{"alternating peers", cat(run(1, 0, 800), run(1, 1, 800), run(1, 0, 800), run(1, 1, 800)), 0, 0},
		{"two peers in runs", cat(run(4, 0, 700), run(4, 1, 700)), 2, 2},
		{"singles", cat(run(1, 0, 100), run(1, 0, 200), run(1, 0, 300)), 0, 0},
	}
	for _, gro := range []bool{false, true} {
		for _, tc := range tests {
			t.Run(fmt.Sprintf("gro=%v/%s", gro, tc.name), func(t *testing.T) {
				tx := listen(t, "127.0.0.1", Options{Batch: 128})
				if !tx.GSO() {
					t.Skip("kernel without UDP GSO")
				}
				rx := []*Port{listen(t, "127.0.0.2", Options{NoGRO: !gro}), listen(t, "127.0.0.3", Options{NoGRO: !gro})}
				out := bufs(len(tc.dgs))
				var want [2][][]byte
				for i, d := range tc.dgs {
					p := payload(uint64(i), d.size)
					out[i].SetLen(copy(out[i].Space(), p))
					out[i].Peer = rx[d.to].LocalAddr()
					want[d.to] = append(want[d.to], p)
				}
				before := tx.tx.gsoSent
				n, _, err := tx.WriteBatch(out)
				if err != nil || n != len(tc.dgs) {
					t.Fatalf("WriteBatch = %d, %v; want %d", n, err, len(tc.dgs))
				}
				if g := tx.tx.gsoSent - before; g < tc.minGSO || g > tc.maxGSO {
					t.Fatalf("%d GSO messages, want %d to %d", g, tc.minGSO, tc.maxGSO)
				}
				for r := range rx {
					got := readN(t, rx[r], len(want[r]), 16, 5*time.Second)
					if len(got) != len(want[r]) {
						t.Fatalf("receiver %d: %d datagrams, want %d", r, len(got), len(want[r]))
					}
					for i := range got {
						if !bytes.Equal(got[i].Bytes(), want[r][i]) {
							t.Fatalf("receiver %d datagram %d: %d bytes, want %d", r, i, got[i].Len(), len(want[r][i]))
						}
						if got[i].Peer != tx.LocalAddr() {
							t.Fatalf("peer %v", got[i].Peer)
						}
					}
				}
			})
		}
	}
}

// TestConcurrentUse runs a reader, a writer and group changes at once
// (meaningful under -race).
func TestConcurrentUse(t *testing.T) {
	a := listen(t, "127.0.0.1", Options{})
	b := listen(t, "127.0.0.2", Options{})
	group := netip.MustParseAddr("239.77.0.1")
	if err := b.JoinGroup(group); err != nil {
		t.Skipf("cannot join a group on loopback: %v", err)
	}
	const total = 20000
	var sent atomic.Int64
	stop := make(chan struct{})
	done := make(chan error, 3)
	go func() { // writer
		out := bufs(32)
		id := 0
		for id < total {
			for _, o := range out {
				o.SetLen(copy(o.Space(), payload(uint64(id), 200+id%3)))
				o.Peer = b.LocalAddr()
				id++
			}
			n, _, err := a.WriteBatch(out)
			if err != nil {
				done <- err
				return
			}
			sent.Add(int64(n))
		}
		done <- nil
	}()
	go func() { // group changes
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if err := b.LeaveGroup(group); err != nil {
				done <- err
				return
			}
			if err := b.JoinGroup(group); err != nil {
				done <- err
				return
			}
			_ = b.Groups()
		}
	}()
	var recv int
	last := int64(-1)
	in := bufs(64)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		reset(in)
		n, err := b.ReadBatch(in)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range in[:n] {
			id := int64(binary.BigEndian.Uint64(g.Bytes()))
			if id <= last || !bytes.Equal(g.Bytes(), payload(uint64(id), 200+int(id)%3)) {
				t.Fatalf("datagram %d after %d, or corrupt", id, last)
			}
			last = id
			recv++
		}
		if n == 0 {
			if last == total-1 {
				break
			}
			waitReadable(b.Fd(), 50*time.Millisecond)
			if int64(recv) == sent.Load() && sent.Load() == total {
				break
			}
		}
	}
	close(stop)
	for i := 0; i < 2; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if recv == 0 || int64(recv) > sent.Load() {
		t.Fatalf("received %d of %d sent", recv, sent.Load())
	}
	t.Logf("sent %d, received %d", sent.Load(), recv)
}

func TestLinkMTULoopback(t *testing.T) {
	mtu, err := LinkMTU(netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	lo, err := os.ReadFile("/sys/class/net/lo/mtu")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(mtu) != strings.TrimSpace(string(lo)) {
		t.Fatalf("LinkMTU(127.0.0.1) = %d, lo has %s", mtu, lo)
	}
	if _, err := LinkMTU(netip.Addr{}); err == nil {
		t.Fatal("LinkMTU of an invalid address succeeded")
	}
}

func TestSteadyStateDoesNotAllocate(t *testing.T) {
	a := listen(t, "127.0.0.1", Options{})
	b := listen(t, "127.0.0.2", Options{})
	out, in := bufs(32), bufs(32)
	for i, o := range out {
		o.SetLen(copy(o.Space(), payload(uint64(i), 1400)))
		o.Peer = b.LocalAddr()
	}
	var lost atomic.Int64
	allocs := testing.AllocsPerRun(200, func() {
		n, _, _ := a.WriteBatch(out)
		got := 0
		for got < n {
			m, _ := b.ReadBatch(in[:n-got])
			if m == 0 {
				lost.Add(int64(n - got))
				break
			}
			got += m
		}
	})
	if allocs != 0 {
		t.Fatalf("WriteBatch+ReadBatch allocate %.1f times per batch", allocs)
	}
	if lost.Load() > 0 {
		t.Logf("%d datagrams not yet readable right after sending", lost.Load())
	}
}

// --- namespaces -----------------------------------------------------------

var nsSeq atomic.Int32

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func output(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newNS creates a network namespace deleted at the end of the test.
func newNS(t *testing.T) (string, netns.NsHandle) {
	t.Helper()
	name := fmt.Sprintf("bfudp%d-%d", os.Getpid(), nsSeq.Add(1))
	return name, porttest.NewNS(t, name)
}

func TestMulticastBetweenNamespaces(t *testing.T) {
	needRoot(t)
	tests := []struct {
		name         string
		addrA, addrB string
		prefix       string
		group        string
	}{
		{"ipv4", "10.231.0.1", "10.231.0.2", "/24", "239.12.34.56"},
		{"ipv6", "fd00:231::1", "fd00:231::2", "/64", "ff15::4242"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nsA, hA := newNS(t)
			nsB, hB := newNS(t)
			va := fmt.Sprintf("bfva%d", nsSeq.Add(1))
			vb := fmt.Sprintf("bfvb%d", nsSeq.Add(1))
			run(t, "ip", "link", "add", va, "type", "veth", "peer", "name", vb)
			t.Cleanup(func() { exec.Command("ip", "link", "del", va).Run() })
			run(t, "ip", "link", "set", va, "netns", nsA)
			run(t, "ip", "link", "set", vb, "netns", nsB)
			run(t, "ip", "-n", nsA, "addr", "add", tc.addrA+tc.prefix, "dev", va, "nodad")
			run(t, "ip", "-n", nsB, "addr", "add", tc.addrB+tc.prefix, "dev", vb, "nodad")
			run(t, "ip", "-n", nsA, "link", "set", va, "mtu", "1450", "up")
			run(t, "ip", "-n", nsB, "link", "set", vb, "mtu", "1450", "up")

			var a, b *Port
			group := netip.MustParseAddr(tc.group)
			const port = 4789
			if err := porttest.InNS(hA, func() (err error) {
				a, err = Listen(netip.MustParseAddr(tc.addrA), port, Options{})
				if err != nil {
					return err
				}
				if err := a.JoinGroup(group); err != nil {
					return err
				}
				mtu, err := LinkMTU(netip.MustParseAddr(tc.addrA))
				if err == nil && mtu != 1450 {
					err = fmt.Errorf("LinkMTU = %d, want 1450", mtu)
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { a.Close() })
			if err := porttest.InNS(hB, func() (err error) {
				b, err = Listen(netip.MustParseAddr(tc.addrB), port, Options{})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })

			// Datagrams above the link MTU: a GSO send is refused
			// (segment larger than the MTU) and the port falls back to
			// single datagrams, which the kernel fragments.
			big := bufs(3)
			for i, o := range big {
				o.SetLen(copy(o.Space(), payload(uint64(500+i), 1600)))
				o.Peer = a.LocalAddr()
			}
			gsoBefore := b.tx.gsoSent
			if n, _, err := b.WriteBatch(big); n != 3 || err != nil {
				t.Fatalf("WriteBatch of datagrams above the MTU = %d, %v", n, err)
			}
			if b.GSO() && b.tx.gsoSent != gsoBefore {
				t.Fatal("a GSO message with segments above the MTU was accepted")
			}
			if got := readN(t, a, 3, 8, 5*time.Second); len(got) != 3 || !bytes.Equal(got[2].Bytes(), payload(502, 1600)) {
				t.Fatalf("received %d of 3 fragmented datagrams", len(got))
			}

			// The kernel holds the membership on the VTEP's link.
			maddr := output(t, "ip", "-n", nsA, "maddr", "show", "dev", va)
			if !strings.Contains(maddr, tc.group) {
				t.Fatalf("group %s not joined on %s:\n%s", tc.group, va, maddr)
			}
			if err := a.JoinGroup(group); err != nil {
				t.Fatalf("second join: %v", err)
			}
			if err := a.JoinGroup(netip.MustParseAddr(tc.addrB)); err == nil {
				t.Fatal("joining a unicast address succeeded")
			}

			send := func(id uint64) {
				t.Helper()
				o := packet.NewBuf()
				o.SetLen(copy(o.Space(), payload(id, 120)))
				o.Peer = netip.AddrPortFrom(group, port)
				if n, _, err := b.WriteBatch([]*packet.Buf{o}); n != 1 || err != nil {
					t.Fatalf("WriteBatch to group = %d, %v", n, err)
				}
			}
			// Retry a few times: the first datagrams may race with
			// neighbour discovery on the fresh link.
			var got []*packet.Buf
			for id := uint64(0); id < 20 && len(got) == 0; id++ {
				send(id)
				got = readN(t, a, 1, 8, 250*time.Millisecond)
			}
			if len(got) != 1 {
				t.Fatal("datagram to the group never arrived")
			}
			if got[0].Peer.Addr() != netip.MustParseAddr(tc.addrB) || got[0].Peer.Port() != port {
				t.Fatalf("peer %v, want %s:%d", got[0].Peer, tc.addrB, port)
			}
			if got[0].Len() != 120 {
				t.Fatalf("payload %d bytes, want 120", got[0].Len())
			}

			if err := a.LeaveGroup(group); err != nil {
				t.Fatal(err)
			}
			if err := a.LeaveGroup(group); err == nil {
				t.Fatal("leaving twice succeeded")
			}
			if maddr := output(t, "ip", "-n", nsA, "maddr", "show", "dev", va); strings.Contains(maddr, tc.group) {
				t.Fatalf("group still joined after leave:\n%s", maddr)
			}
			send(1000)
			if late := readN(t, a, 1, 8, 300*time.Millisecond); len(late) != 0 {
				t.Fatalf("received %d datagrams after leaving the group", len(late))
			}
			// Rejoin works and delivers again.
			if err := porttest.InNS(hA, func() error { return a.JoinGroup(group) }); err != nil {
				t.Fatal(err)
			}
			send(2000)
			if again := readN(t, a, 1, 8, 2*time.Second); len(again) != 1 || binary.BigEndian.Uint64(again[0].Bytes()) != 2000 {
				t.Fatalf("after rejoin received %d datagrams", len(again))
			}
		})
	}
}

// --- benchmarks -------------------------------------------------------------

func benchLoopback(b *testing.B, size, batch int, opts Options) {
	tx := listen(b, "127.0.0.1", opts)
	rx := listen(b, "127.0.0.2", opts)
	out, in := bufs(batch), bufs(batch)
	for i, o := range out {
		o.SetLen(copy(o.Space(), payload(uint64(i), size)))
		o.Peer = rx.LocalAddr()
	}
	var sent, recv int
	b.SetBytes(int64(size * batch))
	for b.Loop() {
		n, _, err := tx.WriteBatch(out)
		if err != nil {
			b.Fatal(err)
		}
		sent += n
		for got := 0; got < n; {
			reset(in)
			m, err := rx.ReadBatch(in)
			if err != nil {
				b.Fatal(err)
			}
			if m == 0 {
				break
			}
			got += m
			recv += m
		}
	}
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(sent)/sec, "sent-pps")
	b.ReportMetric(float64(recv)/sec, "recv-pps")
}

var benchModes = []struct {
	name string
	opts Options
}{
	{"plain", Options{NoGSO: true, NoGRO: true}},
	{"gro", Options{NoGSO: true}},
	{"gso", Options{NoGRO: true}},
	{"gso+gro", Options{}},
}

func BenchmarkLoopback(b *testing.B) {
	for _, sz := range []struct{ size, batch int }{{1400, 64}, {64, 64}, {1400, 1}} {
		for _, m := range benchModes {
			b.Run(fmt.Sprintf("%dx%dB/%s", sz.batch, sz.size, m.name), func(b *testing.B) {
				benchLoopback(b, sz.size, sz.batch, m.opts)
			})
		}
	}
}

// TestLeftGroupsClosed: the socket of a left group is closed by the next
// ReadBatch (the reader no longer holds its fd then), so joining and
// leaving ever new groups (a VNI's first vNIC added, its last deleted)
// does not accumulate descriptors; a group joined again before that read
// takes its socket back.
func TestLeftGroupsClosed(t *testing.T) {
	needRoot(t)
	ns, h := newNS(t)
	run(t, "ip", "-n", ns, "link", "set", "lo", "up", "multicast", "on")
	var p *Port
	if err := porttest.InNS(h, func() (err error) {
		p, err = Listen(netip.MustParseAddr("127.0.0.1"), 0, Options{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	bufs := []*packet.Buf{packet.NewBuf()}
	base := fds()
	for i := range 200 {
		g := netip.AddrFrom4([4]byte{239, 1, byte(i >> 8), byte(i)})
		err := porttest.InNS(h, func() error {
			if err := p.JoinGroup(g); err != nil {
				return err
			}
			if i%2 == 0 {
				// Left and joined again before any read: same socket.
				if err := p.LeaveGroup(g); err != nil {
					return err
				}
				if err := p.JoinGroup(g); err != nil {
					return err
				}
			}
			return p.LeaveGroup(g)
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.ReadBatch(bufs); err != nil {
			t.Fatal(err)
		}
	}
	if n := fds(); n > base+1 {
		t.Fatalf("200 groups joined and left: %d descriptors open, %d before", n, base)
	}
}
