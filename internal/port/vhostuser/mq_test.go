package vhostuser

import (
	"encoding/binary"
	"path/filepath"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port/vhostuser/vhosttest"
	"golang.org/x/sys/unix"
)

// TestMultiqueueProtocol: the port offers VIRTIO_NET_F_MQ and the MQ
// protocol feature, GET_QUEUE_NUM reports 8 pairs, the rings of a second
// pair run only once SET_VRING_ENABLE enables them, frames flow on them
// both ways (by flow hash towards the guest, each pair counted), and a
// disabled pair is no longer written.
func TestMultiqueueProtocol(t *testing.T) {
	p := listenTest(t)
	f := dialFrontEnd(t, p)
	f.send(reqGetProtocolFeatures, 0, nil)
	if pf := binary.LittleEndian.Uint64(f.recv(reqGetProtocolFeatures)); pf&(1<<pfMQ) == 0 {
		t.Fatalf("protocol features %#x without MQ", pf)
	}
	f.send(reqGetFeatures, 0, nil)
	if v := binary.LittleEndian.Uint64(f.recv(reqGetFeatures)); v&(1<<fNetMQ) == 0 {
		t.Fatalf("features %#x without VIRTIO_NET_F_MQ", v)
	}
	f.send(reqGetQueueNum, 0, nil)
	if n := binary.LittleEndian.Uint64(f.recv(reqGetQueueNum)); n != MaxQueuePairs {
		t.Fatalf("GET_QUEUE_NUM = %d, want %d", n, MaxQueuePairs)
	}
	f.setup()
	f.startRing(2, false)
	f.startRing(3, false)
	if p.rings[2].Load() != nil || p.rings[3].Load() != nil {
		t.Fatal("rings of pair 1 run before SET_VRING_ENABLE")
	}
	bufs := newBufs(8)
	read := func() int {
		t.Helper()
		for _, b := range bufs {
			b.Reset()
		}
		n, _ := p.ReadBatch(bufs)
		return n
	}
	// A frame on the disabled transmit ring 3 is not read.
	f.g.postTxOn(3, append(hdr12(packet.VNetHdr{}, 0), frameOf(60, 1)...), 4096)
	unix.Write(f.kick[3], binary.LittleEndian.AppendUint64(nil, 1))
	if n := read(); n != 0 {
		t.Fatalf("ReadBatch read %d frames from a disabled ring", n)
	}
	f.enable(2, true)
	f.enable(3, true)
	if n := read(); n != 1 || bufs[0].Len() != 60 {
		t.Fatalf("ReadBatch after enabling pair 1: %d frames", n)
	}
	if qs := p.QueueStats(); len(qs) != 2 || qs[0].In != 0 || qs[1].In != 1 {
		t.Fatalf("queue stats %+v, want one frame in on pair 1", qs)
	}
	// Towards the guest: 64 flows over both receive rings.
	f.g.postRxOn(0, 100, 2048)
	f.g.postRxOn(2, 100, 2048)
	out := newBufs(64)
	for i, b := range out {
		udpFrame(b, uint16(i), 0)
	}
	if sent, dropped, _ := p.WriteBatch(out); sent != 64 || dropped != 0 {
		t.Fatalf("WriteBatch over two pairs: %d sent, %d dropped", sent, dropped)
	}
	u0, u2 := len(f.g.used(0)), len(f.g.used(2))
	qs := p.QueueStats()
	if u0 == 0 || u2 == 0 || u0+u2 != 64 || qs[0].Out != uint64(u0) || qs[1].Out != uint64(u2) {
		t.Fatalf("guest got %d frames on ring 0 and %d on ring 2, queue stats %+v; want both used, 64 in all, counted", u0, u2, qs)
	}
	// The guest drops back to one pair: everything goes to ring 0.
	f.enable(2, false)
	f.enable(3, false)
	for i, b := range out[:16] {
		udpFrame(b, uint16(i), 1)
	}
	if sent, _, _ := p.WriteBatch(out[:16]); sent != 16 || len(f.g.used(0)) != 16 || len(f.g.used(2)) != 0 {
		t.Fatalf("WriteBatch with pair 1 disabled: %d sent; want 16, all on ring 0", sent)
	}
	if s := p.Stats(); s.OutFrames != 80 || s.InFrames != 1 {
		t.Fatalf("stats %+v, want 80 frames out, 1 in", s)
	}
}

// TestMultiqueueBadRingIndex: ring indexes beyond the 8 pairs are
// refused with an error ack, the descriptors they carry are closed, and
// the session goes on.
func TestMultiqueueBadRingIndex(t *testing.T) {
	p := listenTest(t)
	f := dialFrontEnd(t, p)
	f.setup()
	before := vhosttest.OpenFds(t)
	addr := binary.LittleEndian.AppendUint32(nil, numRings)
	addr = append(addr, make([]byte, 36)...)
	tests := []struct {
		name    string
		req     uint32
		payload []byte
		fd      bool
	}{
		{"SET_VRING_NUM 16", reqSetVringNum, state(numRings, 256), false},
		{"SET_VRING_BASE 255", reqSetVringBase, state(255, 0), false},
		{"SET_VRING_ENABLE 16", reqSetVringEnable, state(numRings, 1), false},
		{"SET_VRING_ENABLE 2^32-1", reqSetVringEnable, state(^uint32(0), 1), false},
		{"GET_VRING_BASE 16", reqGetVringBase, state(numRings, 0), false},
		{"SET_VRING_ADDR 16", reqSetVringAddr, addr, false},
		{"SET_VRING_KICK 16", reqSetVringKick, binary.LittleEndian.AppendUint64(nil, numRings), true},
		{"SET_VRING_CALL 255", reqSetVringCall, binary.LittleEndian.AppendUint64(nil, 255), true},
		{"SET_VRING_ERR 16", reqSetVringErr, binary.LittleEndian.AppendUint64(nil, numRings), true},
	}
	for _, tt := range tests {
		var fds []int
		if tt.fd {
			efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(efd)
			fds = append(fds, efd)
		}
		f.send(tt.req, flagNeedReply, tt.payload, fds...)
		if ack := binary.LittleEndian.Uint64(f.recv(tt.req)); ack == 0 {
			t.Errorf("%s: acked as success", tt.name)
		}
	}
	if after := vhosttest.OpenFds(t); after != before+3 {
		t.Fatalf("%d descriptors open, want %d (the test's own eventfds only: the port closed the refused ones)", after, before+3)
	}
	// The session still works.
	f.g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(60, 5)...), 4096)
	bufs := newBufs(4)
	deadline := time.Now().Add(time.Second)
	for {
		if n, _ := p.ReadBatch(bufs); n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no frame after the refused requests")
		}
	}
	if qs := p.QueueStats(); len(qs) != 1 {
		t.Fatalf("queue stats %+v: refused rings made pairs appear", qs)
	}
}

// TestMultiqueueReaders: with two readers, the port's own ReadBatch reads
// pair 0 and Reader(1) pair 1; a kick on a pair's transmit ring wakes
// only its reader's Fd; frames towards the guest still reach both pairs
// through the port's WriteBatch.
func TestMultiqueueReaders(t *testing.T) {
	p, err := Listen(filepath.Join(t.TempDir(), "r.sock"), Options{Readers: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	r1 := p.Reader(1)
	if p.Reader(1) != r1 || r1.Fd() == p.Fd() {
		t.Fatal("Reader(1) not stable, or sharing the port's Fd")
	}
	f := dialFrontEnd(t, p)
	f.setup()
	f.startRing(2, true)
	f.startRing(3, true)
	bufs := newBufs(8)
	read := func(r interface {
		ReadBatch([]*packet.Buf) (int, error)
	}) int {
		for _, b := range bufs {
			b.Reset()
		}
		n, _ := r.ReadBatch(bufs)
		return n
	}
	// Empty polls arm kicks and quiet both Fds.
	read(p)
	read(r1)
	if fdReadable(t, p.Fd(), 0) || fdReadable(t, r1.Fd(), 0) {
		t.Fatal("Fds readable after empty polls")
	}
	kick := func(ring int) {
		unix.Write(f.kick[ring], binary.LittleEndian.AppendUint64(nil, 1))
	}
	f.g.postTxOn(3, append(hdr12(packet.VNetHdr{}, 0), frameOf(60, 1)...), 4096)
	kick(3)
	if !fdReadable(t, r1.Fd(), time.Second) || fdReadable(t, p.Fd(), 0) {
		t.Fatal("a kick on ring 3 must wake Reader(1)'s Fd only")
	}
	if n := read(p); n != 0 {
		t.Fatalf("the port's ReadBatch read %d frames of pair 1", n)
	}
	if n := read(r1); n != 1 || bufs[0].Len() != 60 {
		t.Fatalf("Reader(1).ReadBatch: %d frames", n)
	}
	f.g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(70, 2)...), 4096)
	kick(1)
	if !fdReadable(t, p.Fd(), time.Second) {
		t.Fatal("a kick on ring 1 did not wake the port's Fd")
	}
	if n := read(r1); n != 0 {
		t.Fatalf("Reader(1) read %d frames of pair 0", n)
	}
	if n := read(p); n != 1 || bufs[0].Len() != 70 {
		t.Fatalf("the port's ReadBatch: %d frames", n)
	}
	if qs := p.QueueStats(); len(qs) != 2 || qs[0].In != 1 || qs[1].In != 1 {
		t.Fatalf("queue stats %+v, want one frame in on each pair", qs)
	}
	if s := p.Stats(); s.InFrames != 2 {
		t.Fatalf("InFrames %d, want 2", s.InFrames)
	}
	f.g.postRxOn(0, 64, 2048)
	f.g.postRxOn(2, 64, 2048)
	out := newBufs(32)
	for i, b := range out {
		udpFrame(b, uint16(i), 0)
	}
	if sent, _, _ := p.WriteBatch(out); sent != 32 || len(f.g.used(0)) == 0 || len(f.g.used(2)) == 0 {
		t.Fatalf("WriteBatch: %d sent; want 32 over both receive rings", sent)
	}
	if sent, dropped, _ := r1.WriteBatch(out); sent != 0 || dropped != 0 {
		t.Fatalf("Reader.WriteBatch took %d frames", sent+dropped)
	}
}
