package vhostuser

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port/vhostuser/vhosttest"
	"golang.org/x/sys/unix"
)

func rawMsg(req, flags uint32, payload []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, req)
	b = binary.LittleEndian.AppendUint32(b, flags)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

func socketPair(t *testing.T) (a, b int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

// unixConn returns a *net.UnixConn on a duplicate of the socket fd,
// closed at the end of the test; fd stays the caller's.
func unixConn(t testing.TB, fd int) *net.UnixConn {
	t.Helper()
	dup, err := unix.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(dup), "socketpair")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.UnixConn)
}

func TestConnRead(t *testing.T) {
	tests := []struct {
		name    string
		data    []byte
		nfds    int
		wantErr error
		wantReq uint32
		wantLen int
	}{
		{"u64 request", rawMsg(reqSetFeatures, flagVersion, make([]byte, 8)), 0, nil, reqSetFeatures, 8},
		{"kick with fd", rawMsg(reqSetVringKick, flagVersion|flagNeedReply, make([]byte, 8)), 1, nil, reqSetVringKick, 8},
		{"eight fds", rawMsg(reqSetMemTable, flagVersion, make([]byte, 8)), 8, nil, reqSetMemTable, 8},
		{"nine fds", rawMsg(reqSetMemTable, flagVersion, make([]byte, 8)), 9, errTooManyFds, 0, 0},
		{"version 0", rawMsg(reqGetFeatures, 0, nil), 0, errVersion, 0, 0},
		{"version 2", rawMsg(reqGetFeatures, 2, nil), 0, errVersion, 0, 0},
		{"payload too large", rawMsg(reqGetFeatures, flagVersion, make([]byte, maxPayload+1)), 0, errTooBig, 0, 0},
		{"truncated payload", rawMsg(reqGetFeatures, flagVersion, make([]byte, 8))[:15], 0, errClosed, 0, 0},
		{"truncated header", rawMsg(reqGetFeatures, flagVersion, nil)[:7], 0, errClosed, 0, 0},
		{"empty stream", nil, 0, errClosed, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := socketPair(t)
			var fds []int
			for i := 0; i < tt.nfds; i++ {
				fds = append(fds, eventfdPair(t))
			}
			var oob []byte
			if len(fds) > 0 {
				oob = unix.UnixRights(fds...)
			}
			if len(tt.data) > 0 {
				if err := unix.Sendmsg(a, tt.data, oob, nil, 0); err != nil {
					t.Fatal(err)
				}
			}
			unix.Shutdown(a, unix.SHUT_WR)
			c := newConn(unixConn(t, b))
			before := vhosttest.OpenFds(t)
			m, err := c.read()
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("read error %v, want %v", err, tt.wantErr)
				}
				if after := vhosttest.OpenFds(t); after != before {
					t.Fatalf("received fds leaked: %d open before, %d after", before, after)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.req != tt.wantReq || len(m.payload) != tt.wantLen || len(m.fds) != tt.nfds {
				t.Fatalf("got request %d, %d bytes, %d fds", m.req, len(m.payload), len(m.fds))
			}
			m.closeFds()
		})
	}
}

func TestPayloadBounds(t *testing.T) {
	short := &msg{req: reqSetVringAddr, payload: make([]byte, 39)}
	if _, err := short.addr(); !errors.Is(err, errPayload) {
		t.Fatalf("39-byte vring address: %v", err)
	}
	if _, err := (&msg{payload: make([]byte, 7)}).u64(); !errors.Is(err, errPayload) {
		t.Fatalf("7-byte u64: %v", err)
	}
	if _, err := (&msg{payload: make([]byte, 7)}).state(); !errors.Is(err, errPayload) {
		t.Fatalf("7-byte state: %v", err)
	}
	p := binary.LittleEndian.AppendUint32(nil, 9)
	p = append(p, make([]byte, 4+9*regionSize)...)
	if _, err := (&msg{payload: p}).memTable(); !errors.Is(err, errPayload) {
		t.Fatalf("9 regions: %v", err)
	}
	p = binary.LittleEndian.AppendUint32(nil, 2)
	p = append(p, make([]byte, 4+regionSize)...)
	if _, err := (&msg{payload: p, fds: []int{-1, -1}}).memTable(); !errors.Is(err, errPayload) {
		t.Fatalf("2 regions in the room of 1: %v", err)
	}
	p = append(p, make([]byte, regionSize)...)
	if _, err := (&msg{payload: p, fds: []int{-1}}).memTable(); !errors.Is(err, errPayload) {
		t.Fatalf("2 regions with 1 fd: %v", err)
	}
}

// frontEnd is a minimal vhost-user front end driving a Port over its
// socket, with guest memory in a memfd.
type frontEnd struct {
	t    testing.TB
	c    *net.UnixConn
	g    *fakeGuest
	mfd  int
	kick [4]int // per ring, two queue pairs
	call [4]int
	// features are removed from the offered set before SET_FEATURES
	// (dialFrontEnd: EVENT_IDX, so that the flag-based tests see flags).
	without uint64
	// base is the ring state setup sends with SET_VRING_BASE.
	base uint32
}

func dialFrontEnd(t testing.TB, p *Port) *frontEnd {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: p.Path(), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	return newFrontEnd(t, c)
}

// newFrontEnd makes a front end on the connected socket c (closed at
// the end of the test).
func newFrontEnd(t testing.TB, c *net.UnixConn) *frontEnd {
	t.Helper()
	t.Cleanup(func() { c.Close() })
	mfd, err := unix.MemfdCreate("vhu-guest", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(mfd) })
	if err := unix.Ftruncate(mfd, memSize); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(mfd, 0, memSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	g := newFakeGuest(t, 256)
	g.mem = mem
	f := &frontEnd{t: t, c: c, g: g, mfd: mfd, without: 1<<fEventIdx | 1<<fRingPacked}
	for i := range f.kick {
		f.kick[i] = eventfdPair(t)
		f.call[i] = eventfdPair(t)
	}
	return f
}

func (f *frontEnd) send(req, flags uint32, payload []byte, fds ...int) {
	f.t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := f.c.WriteMsgUnix(rawMsg(req, flagVersion|flags, payload), oob, nil); err != nil {
		f.t.Fatal(err)
	}
}

func (f *frontEnd) recv(req uint32) []byte {
	f.t.Helper()
	f.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	h := make([]byte, hdrSize)
	if _, err := readFull(f.c, h); err != nil {
		f.t.Fatalf("reply to %d: %v", req, err)
	}
	if r := binary.LittleEndian.Uint32(h); r != req || binary.LittleEndian.Uint32(h[4:]) != flagVersion|flagReply {
		f.t.Fatalf("reply header % x to request %d", h, req)
	}
	b := make([]byte, binary.LittleEndian.Uint32(h[8:]))
	if _, err := readFull(f.c, b); err != nil {
		f.t.Fatal(err)
	}
	return b
}

func readFull(c *net.UnixConn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := c.Read(b[n:])
		if err != nil {
			return n, err
		}
		n += k
	}
	return n, nil
}

func (f *frontEnd) call64(req uint32, v uint64, needReply bool, fds ...int) uint64 {
	f.t.Helper()
	var flags uint32
	if needReply {
		flags = flagNeedReply
	}
	f.send(req, flags, binary.LittleEndian.AppendUint64(nil, v), fds...)
	if !needReply {
		return 0
	}
	return binary.LittleEndian.Uint64(f.recv(req))
}

func state(i, n uint32) []byte {
	return binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, i), n)
}

// setup negotiates and starts both rings the way QEMU does.
func (f *frontEnd) setup() {
	f.t.Helper()
	f.send(reqGetFeatures, 0, nil)
	offered := binary.LittleEndian.Uint64(f.recv(reqGetFeatures)) &^ f.without
	f.send(reqGetProtocolFeatures, 0, nil)
	pf := binary.LittleEndian.Uint64(f.recv(reqGetProtocolFeatures))
	if pf&(1<<pfReplyAck) == 0 {
		f.t.Fatalf("REPLY_ACK not offered: %#x", pf)
	}
	f.send(reqSetOwner, 0, nil)
	f.call64(reqSetProtocolFeatures, 1<<pfReplyAck, false)
	if ack := f.call64(reqSetFeatures, offered|1<<33, true); ack == 0 {
		f.t.Fatal("SET_FEATURES with ACCESS_PLATFORM acked as success")
	}
	if ack := f.call64(reqSetFeatures, offered, true); ack != 0 {
		f.t.Fatalf("SET_FEATURES of the offered set: ack %d", ack)
	}
	tbl := binary.LittleEndian.AppendUint32(nil, 1)
	tbl = binary.LittleEndian.AppendUint32(tbl, 0)
	for _, v := range []uint64{gpaBase, memSize, uaBase, 0} {
		tbl = binary.LittleEndian.AppendUint64(tbl, v)
	}
	f.send(reqSetMemTable, flagNeedReply, tbl, f.mfd)
	if ack := binary.LittleEndian.Uint64(f.recv(reqSetMemTable)); ack != 0 {
		f.t.Fatalf("SET_MEM_TABLE ack %d", ack)
	}
	for i := range 2 {
		f.startRing(i, true)
	}
}

// startRing configures ring i and gives it its eventfds, the way QEMU
// does, then enables it or not.
func (f *frontEnd) startRing(i int, enable bool) {
	f.t.Helper()
	f.send(reqSetVringNum, 0, state(uint32(i), 256))
	f.send(reqSetVringBase, 0, state(uint32(i), f.base))
	c := f.g.conf(i, 0)
	a := binary.LittleEndian.AppendUint32(nil, uint32(i))
	a = binary.LittleEndian.AppendUint32(a, 0)
	for _, v := range []uint64{c.addr.desc, c.addr.used, c.addr.avail, 0} {
		a = binary.LittleEndian.AppendUint64(a, v)
	}
	f.send(reqSetVringAddr, 0, a)
	f.call64(reqSetVringCall, uint64(i), false, f.call[i])
	f.call64(reqSetVringKick, uint64(i), false, f.kick[i])
	f.enable(i, enable)
}

// enable sends SET_VRING_ENABLE for ring i and checks its ack.
func (f *frontEnd) enable(i int, on bool) {
	f.t.Helper()
	var v uint32
	if on {
		v = 1
	}
	f.send(reqSetVringEnable, flagNeedReply, state(uint32(i), v))
	if ack := binary.LittleEndian.Uint64(f.recv(reqSetVringEnable)); ack != 0 {
		f.t.Fatalf("SET_VRING_ENABLE(%d, %d) ack %d", i, v, ack)
	}
}

func fdReadable(t *testing.T, fd int, wait time.Duration) bool {
	t.Helper()
	// poll returns EINTR whenever the Go runtime preempts the thread
	// (SIGURG): retry until the deadline.
	deadline := time.Now().Add(wait)
	for {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, int(max(0, time.Until(deadline))/time.Millisecond))
		if err == unix.EINTR && time.Now().Before(deadline) {
			continue
		}
		if err != nil && err != unix.EINTR {
			t.Fatal(err)
		}
		return n > 0
	}
}

func TestProtocolSession(t *testing.T) {
	p := listenTest(t)
	for round := 1; round <= 2; round++ {
		f := dialFrontEnd(t, p)
		f.setup()
		if !p.Ready() {
			t.Fatalf("round %d: rings not running after setup", round)
		}
		if !fdReadable(t, p.Fd(), time.Second) {
			t.Fatal("Fd not readable after the rings started")
		}
		bufs := newBufs(8)
		if n, _ := p.ReadBatch(bufs); n != 0 {
			t.Fatalf("ReadBatch of an empty ring: %d", n)
		}
		if fdReadable(t, p.Fd(), 0) {
			t.Fatal("Fd still readable after an empty ReadBatch")
		}
		// The guest transmits and kicks: Fd wakes and the frame arrives.
		f.g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(60, 5)...), 4096)
		unix.Write(f.kick[1], binary.LittleEndian.AppendUint64(nil, 1))
		if !fdReadable(t, p.Fd(), time.Second) {
			t.Fatal("Fd not readable after a kick")
		}
		if n, _ := p.ReadBatch(bufs); n != 1 || bufs[0].Len() != 60 {
			t.Fatalf("ReadBatch after kick: %d frames", n)
		}
		// The switch transmits: the guest gets the frame and one call.
		f.g.postRx(4, 2048)
		out := newBufs(1)
		out[0].SetLen(80)
		if n, _, _ := p.WriteBatch(out); n != 1 {
			t.Fatalf("WriteBatch: %d", n)
		}
		if u := f.g.used(0); len(u) != 1 || u[0].n != 92 {
			t.Fatalf("guest used entries %v, want one of 92 bytes", u)
		}
		if c := readEventfd(t, f.call[0]); c != 1 {
			t.Fatalf("call eventfd %d, want 1", c)
		}
		// GET_VRING_BASE stops the ring and reports where it was.
		f.send(reqGetVringBase, 0, state(1, 0))
		if b := f.recv(reqGetVringBase); binary.LittleEndian.Uint32(b[4:]) != 1 {
			t.Fatalf("GET_VRING_BASE = % x, want index 1, base 1", b)
		}
		if p.Ready() {
			t.Fatal("ring 1 still running after GET_VRING_BASE")
		}
		if ack := f.call64(reqNetSetMTU, 1400, true); ack != 0 || p.MTU() != 1400 {
			t.Fatalf("NET_SET_MTU 1400: ack %d, MTU() %d", ack, p.MTU())
		}
		if ack := f.call64(reqNetSetMTU, 10, true); ack == 0 || p.MTU() != 1400 {
			t.Fatalf("NET_SET_MTU 10: ack %d, MTU() %d; want refused, MTU unchanged", ack, p.MTU())
		}
		if ack := f.call64(0xffff, 0, true); ack == 0 {
			t.Fatal("unknown request acked as success")
		}
		f.c.Close()
		deadline := time.Now().Add(5 * time.Second)
		for p.rings[rxRing].Load() != nil {
			if time.Now().After(deadline) {
				t.Fatal("rings still running after disconnect")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if s := p.Stats(); s.Connections != 2 || s.InFrames != 2 || s.OutFrames != 2 {
		t.Fatalf("stats %+v, want 2 connections, 2 frames each way", s)
	}
}

// TestBrokenRingRecovers: a guest that corrupts its transmit ring stops
// only that ring; its receive ring keeps working, and the front end's
// ring restart brings the transmit ring back.
func TestBrokenRingRecovers(t *testing.T) {
	p := listenTest(t)
	f := dialFrontEnd(t, p)
	f.setup()
	f.g.pushAvail(1, 300) // head index beyond the 256-entry ring
	bufs := newBufs(8)
	if n, _ := p.ReadBatch(bufs); n != 0 {
		t.Fatalf("ReadBatch on a corrupted ring returned %d", n)
	}
	if s := p.Stats(); s.Broken != 1 {
		t.Fatalf("Broken = %d, want 1", s.Broken)
	}
	f.g.postRx(2, 2048)
	out := newBufs(1)
	out[0].SetLen(60)
	if n, _, _ := p.WriteBatch(out); n != 1 || len(f.g.used(0)) != 1 {
		t.Fatalf("receive ring stopped with the transmit ring (WriteBatch %d)", n)
	}
	// The front end resets the ring: stop, fix it up, kick fd again.
	f.send(reqGetVringBase, 0, state(1, 0))
	f.recv(reqGetVringBase)
	binary.LittleEndian.PutUint16(f.g.mem[ringArea+0x4000+2:], 0)
	binary.LittleEndian.PutUint32(f.g.mem[ringArea+0x8000:], 0)
	f.g.avail[1], f.g.seen[1], f.g.next[1] = 0, 0, 0
	f.send(reqSetVringBase, 0, state(1, 0))
	f.call64(reqSetVringKick, 1, false, f.kick[1])
	f.g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(60, 5)...), 4096)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if n, _ := p.ReadBatch(bufs); n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("transmit ring did not come back after the restart")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestMemSlots: ADD_MEM_REG maps a region the rings can then use and
// REM_MEM_REG of a region the rings live in stops them.
func TestMemSlots(t *testing.T) {
	p := listenTest(t)
	f := dialFrontEnd(t, p)
	f.send(reqGetProtocolFeatures, 0, nil)
	f.recv(reqGetProtocolFeatures)
	f.call64(reqSetProtocolFeatures, 1<<pfReplyAck|1<<pfConfigureMemSlots, false)
	f.send(reqGetMaxMemSlots, 0, nil)
	if v := binary.LittleEndian.Uint64(f.recv(reqGetMaxMemSlots)); v != maxMemSlots {
		t.Fatalf("GET_MAX_MEM_SLOTS = %d", v)
	}
	reg := make([]byte, 8)
	for _, v := range []uint64{gpaBase, memSize, uaBase, 0} {
		reg = binary.LittleEndian.AppendUint64(reg, v)
	}
	f.send(reqAddMemReg, flagNeedReply, reg, f.mfd)
	if ack := binary.LittleEndian.Uint64(f.recv(reqAddMemReg)); ack != 0 {
		t.Fatalf("ADD_MEM_REG ack %d", ack)
	}
	f.send(reqAddMemReg, flagNeedReply, reg)
	if ack := binary.LittleEndian.Uint64(f.recv(reqAddMemReg)); ack == 0 {
		t.Fatal("ADD_MEM_REG without an fd acked as success")
	}
	for i := uint32(0); i < 2; i++ {
		f.send(reqSetVringNum, 0, state(i, 256))
		c := f.g.conf(int(i), 0)
		a := binary.LittleEndian.AppendUint32(nil, i)
		a = binary.LittleEndian.AppendUint32(a, 0)
		for _, v := range []uint64{c.addr.desc, c.addr.used, c.addr.avail, 0} {
			a = binary.LittleEndian.AppendUint64(a, v)
		}
		f.send(reqSetVringAddr, 0, a)
		f.call64(reqSetVringKick, uint64(i), false, f.kick[i])
		f.send(reqSetVringEnable, flagNeedReply, state(i, 1))
		f.recv(reqSetVringEnable)
	}
	if !p.Ready() {
		t.Fatal("rings not running on ADD_MEM_REG memory")
	}
	f.send(reqRemMemReg, flagNeedReply, reg)
	if ack := binary.LittleEndian.Uint64(f.recv(reqRemMemReg)); ack != 0 {
		t.Fatalf("REM_MEM_REG ack %d", ack)
	}
	if p.Ready() {
		t.Fatal("rings still running after their memory was removed")
	}
}

func TestCloseWhileConnected(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "c.sock")
	p, err := Listen(sock, Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := dialFrontEnd(t, p)
	f.setup()
	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return with a front end connected")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket still there after Close: %v", err)
	}
	f.c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := f.c.Read(make([]byte, 1)); err == nil {
		t.Fatal("front end connection still open after Close")
	}
	q, err := Listen(sock, Options{})
	if err != nil {
		t.Fatalf("Listen again on the same path: %v", err)
	}
	q.Close()
}

// TestPortZeroAllocs: ReadBatch and WriteBatch on running rings, empty
// polls included, allocate nothing, with one queue pair and with two
// (frames spread over both by flow hash).
func TestPortZeroAllocs(t *testing.T) {
	for _, pairs := range []int{1, 2} {
		t.Run(fmt.Sprintf("pairs%d", pairs), func(t *testing.T) {
			p := listenTest(t)
			f := dialFrontEnd(t, p)
			f.setup()
			if pairs == 2 {
				f.startRing(2, true)
				f.startRing(3, true)
			}
			in := newBufs(32)
			out := newBufs(32)
			for i, b := range out {
				udpFrame(b, uint16(i), 0)
			}
			pkt := append(hdr12(packet.VNetHdr{}, 0), frameOf(64, 0)...)
			allocs := testing.AllocsPerRun(50, func() {
				for i := 0; i < 32; i++ {
					f.g.postTxOn(1+2*(i%pairs), pkt, 4096)
				}
				for q := range pairs {
					f.g.postRxOn(2*q, 32, 2048)
				}
				got := 0
				for got < 32 {
					n, _ := p.ReadBatch(in[got:])
					if n == 0 {
						t.Fatalf("ReadBatch: %d of 32 frames", got)
					}
					got += n
				}
				if n, _ := p.ReadBatch(in); n != 0 {
					t.Fatalf("empty ReadBatch %d", n)
				}
				if n, _, _ := p.WriteBatch(out); n != 32 {
					t.Fatalf("WriteBatch %d", n)
				}
				f.g.seen = [4]uint16{}
				for q := range pairs {
					// The buffers the guest did not use are posted again.
					used := binary.LittleEndian.Uint16(f.g.mem[2*q*ringArea+0x8000+2:])
					f.g.next[2*q], f.g.avail[2*q] = used, used
					binary.LittleEndian.PutUint16(f.g.mem[2*q*ringArea+0x4000+2:], used)
				}
			})
			if allocs != 0 {
				t.Fatalf("%v allocations per round, want 0", allocs)
			}
		})
	}
}

// TestArmOnSleep: with ArmOnSleep, empty ReadBatch calls leave guest
// kicks suppressed and Fd as it is; PrepareSleep rearms Fd and asks for
// kicks, a kick then wakes Fd, and frames turn kicks off again.
func TestArmOnSleep(t *testing.T) {
	p, err := Listen(filepath.Join(t.TempDir(), "i.sock"), Options{ArmOnSleep: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	f := dialFrontEnd(t, p)
	f.setup()
	usedFlags := func() uint16 { return binary.LittleEndian.Uint16(f.g.mem[ringArea+0x8000:]) }
	bufs := newBufs(4)
	for round := 0; round < 2; round++ {
		readable := fdReadable(t, p.Fd(), 0)
		for i := 1; i <= 20; i++ {
			if n, _ := p.ReadBatch(bufs); n != 0 {
				t.Fatalf("round %d: ReadBatch %d on an empty ring", round, n)
			}
			if got := fdReadable(t, p.Fd(), 0); got != readable {
				t.Fatalf("round %d, empty poll %d: Fd readable %v, was %v (rearmed by ReadBatch)", round, i, got, readable)
			}
			if round > 0 && usedFlags()&usedFNoNotif == 0 {
				t.Fatalf("round %d, empty poll %d: kicks asked for (used flags %#x)", round, i, usedFlags())
			}
		}
		if p.PrepareSleep() {
			t.Fatalf("round %d: PrepareSleep reports frames on an empty ring", round)
		}
		if fdReadable(t, p.Fd(), 0) || usedFlags()&usedFNoNotif != 0 {
			t.Fatalf("round %d: after PrepareSleep Fd readable %v, used flags %#x; want rearmed, kicks on", round, fdReadable(t, p.Fd(), 0), usedFlags())
		}
		f.g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(60, 5)...), 4096)
		unix.Write(f.kick[1], binary.LittleEndian.AppendUint64(nil, 1))
		if !fdReadable(t, p.Fd(), time.Second) {
			t.Fatalf("round %d: kick did not wake Fd", round)
		}
		if n, _ := p.ReadBatch(bufs); n != 1 {
			t.Fatalf("round %d: ReadBatch %d after a kick", round, n)
		}
		if usedFlags()&usedFNoNotif == 0 {
			t.Fatalf("round %d: kicks not suppressed while frames flow", round)
		}
	}
}

// TestMemTableBeyondFile: a region larger than its file is refused (the
// mapping would SIGBUS the daemon on access).
func TestMemTableBeyondFile(t *testing.T) {
	p := listenTest(t)
	f := dialFrontEnd(t, p)
	f.call64(reqSetProtocolFeatures, 1<<pfReplyAck, false)
	tbl := binary.LittleEndian.AppendUint32(nil, 1)
	tbl = binary.LittleEndian.AppendUint32(tbl, 0)
	for _, v := range []uint64{gpaBase, 2 * memSize, uaBase, 0} {
		tbl = binary.LittleEndian.AppendUint64(tbl, v)
	}
	f.send(reqSetMemTable, flagNeedReply, tbl, f.mfd)
	if ack := binary.LittleEndian.Uint64(f.recv(reqSetMemTable)); ack == 0 {
		t.Fatal("SET_MEM_TABLE larger than its memfd acked as success")
	}
}

// TestCloseWhileReplyBlocked: a front end that sends requests and never
// reads the replies leaves the port blocked writing one; Close still
// returns promptly and hangs up on it.
func TestCloseWhileReplyBlocked(t *testing.T) {
	p, err := Listen(filepath.Join(t.TempDir(), "b.sock"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	f := dialFrontEnd(t, p)
	req := rawMsg(reqGetFeatures, flagVersion, nil)
	batch := bytes.Repeat(req, 1024)
	// Send until the port stops reading: its replies fill the socket
	// buffer, so it waits in a write, and then ours fill up too.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatal("the port kept reading requests whose replies nobody reads")
		}
		f.c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := f.c.Write(batch); errors.Is(err, os.ErrDeadlineExceeded) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	p.Close()
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %v with a reply blocked", d)
	}
	// The front end sees the hang-up (a reset: the port closed with our
	// requests unread).
	f.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, f.c); err != nil && !errors.Is(err, unix.ECONNRESET) {
		t.Fatalf("front end after Close: %v, want EOF or a reset", err)
	}
}

// TestRingStopBusyReader stops and restarts the transmit ring again and
// again while a reader polls it without pause and the guest keeps posting
// frames: the base GET_VRING_BASE reports is always exactly the number of
// frames the reader returned (the stop waited for the batch in flight),
// and across the restarts every frame arrives once, in order.
func TestRingStopBusyReader(t *testing.T) {
	p := listenTest(t)
	f := dialFrontEnd(t, p)
	f.setup()
	var read atomic.Int64
	var bad atomic.Value
	stop := busyReader(p, func(bufs []*packet.Buf) {
		for _, b := range bufs {
			want := uint32(read.Load())
			if got := binary.LittleEndian.Uint32(b.Bytes()); got != want {
				bad.CompareAndSwap(nil, fmt.Sprintf("frame %d where %d was due", got, want))
			}
			read.Add(1)
		}
	})
	defer stop()
	waitRead := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for read.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("the reader returned %d frames, want %d", read.Load(), n)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	posted := 0
	frame := frameOf(60, 1)
	for round := range 300 {
		// The guest stays at most 256 descriptors (the ring) ahead.
		waitRead(int64(posted - 192))
		for range 64 {
			binary.LittleEndian.PutUint32(frame, uint32(posted))
			f.g.postTx(append(hdr12(packet.VNetHdr{}, 0), frame...), 4096)
			posted++
		}
		f.send(reqGetVringBase, 0, state(1, 0))
		base := binary.LittleEndian.Uint32(f.recv(reqGetVringBase)[4:])
		// The batch that was in flight may still be returning its
		// frames: wait for them, then the count must match the base.
		waitRead(int64(base))
		if got := read.Load(); got != int64(base) {
			t.Fatalf("round %d: GET_VRING_BASE %d after the reader returned %d frames", round, base, got)
		}
		if msg := bad.Load(); msg != nil {
			t.Fatalf("round %d: %s", round, msg)
		}
		f.base = base
		f.startRing(1, true)
	}
	waitRead(int64(posted))
	if msg := bad.Load(); msg != nil {
		t.Fatal(msg)
	}
}

// TestCompleteReads: the guest gets back the buffers of the frames
// ReadBatch took (used entries on its transmit ring) when the caller
// says they are forwarded, with CompleteReads, and otherwise at the
// latest with the next ReadBatch, with PrepareSleep, or when the front
// end stops the ring.
func TestCompleteReads(t *testing.T) {
	tx := append(hdr12(packet.VNetHdr{}, 0), frameOf(60, 5)...)
	for _, tt := range []struct {
		name    string
		publish func(t *testing.T, p *Port, f *frontEnd)
	}{
		{"CompleteReads", func(t *testing.T, p *Port, f *frontEnd) { p.CompleteReads() }},
		{"next ReadBatch", func(t *testing.T, p *Port, f *frontEnd) {
			if n, _ := p.ReadBatch(newBufs(8)); n != 0 {
				t.Fatalf("second ReadBatch: %d frames", n)
			}
		}},
		{"PrepareSleep", func(t *testing.T, p *Port, f *frontEnd) { p.PrepareSleep() }},
		{"GET_VRING_BASE", func(t *testing.T, p *Port, f *frontEnd) {
			f.send(reqGetVringBase, 0, state(1, 0))
			if b := f.recv(reqGetVringBase); binary.LittleEndian.Uint32(b[4:]) != 3 {
				t.Fatalf("GET_VRING_BASE = % x, want base 3", b)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := listenTest(t)
			f := dialFrontEnd(t, p)
			f.setup()
			for range 3 {
				f.g.postTx(tx, 4096)
			}
			if n, _ := p.ReadBatch(newBufs(8)); n != 3 {
				t.Fatalf("ReadBatch: %d frames", n)
			}
			if u := f.g.used(1); len(u) != 0 {
				t.Fatalf("%d used entries before the frames were forwarded", len(u))
			}
			tt.publish(t, p, f)
			if u := f.g.used(1); len(u) != 3 {
				t.Fatalf("%d used entries, want 3", len(u))
			}
		})
	}
}

// BenchmarkRingStopBusyReader measures GET_VRING_BASE, which stops a
// ring once the batch in flight on it (if any) has left, and the ring's
// restart, while a reader polls the port without pause.
func BenchmarkRingStopBusyReader(b *testing.B) {
	p := listenTest(b)
	f := dialFrontEnd(b, p)
	f.setup()
	stop := busyReader(p, func([]*packet.Buf) {})
	for b.Loop() {
		f.send(reqGetVringBase, 0, state(1, 0))
		f.recv(reqGetVringBase)
		f.startRing(1, true)
	}
	stop()
}

// busyReader polls p's ReadBatch without pause on a goroutine, handing
// each batch's frames to got, until the returned stop is called.
func busyReader(p *Port, got func([]*packet.Buf)) (stop func()) {
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		bufs := newBufs(32)
		for {
			select {
			case <-quit:
				return
			default:
			}
			n, _ := p.ReadBatch(bufs)
			got(bufs[:n])
		}
	}()
	return func() { close(quit); <-done }
}
