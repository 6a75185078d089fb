package vhostuser

import (
	"encoding/binary"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/butterfly-go/butterfly/internal/packet"
	"golang.org/x/sys/unix"
)

// FuzzMessage feeds arbitrary bytes to the message reader and applies
// every message it decodes to a device, as a front end would.
func FuzzMessage(f *testing.F) {
	f.Add(rawMsg(reqGetFeatures, flagVersion, nil))
	f.Add(append(rawMsg(reqSetProtocolFeatures, flagVersion, binary.LittleEndian.AppendUint64(nil, 1<<pfReplyAck)),
		rawMsg(reqSetFeatures, flagVersion|flagNeedReply, binary.LittleEndian.AppendUint64(nil, 1<<fVersion1))...))
	f.Add(rawMsg(reqSetVringNum, flagVersion, state(1, 256)))
	f.Add(rawMsg(reqSetVringAddr, flagVersion, make([]byte, 40)))
	f.Add(rawMsg(reqSetMemTable, flagVersion, make([]byte, 8)))
	f.Add(rawMsg(reqGetVringBase, flagVersion, state(0, 0)))
	f.Add(rawMsg(reqSetVringKick, flagVersion, binary.LittleEndian.AppendUint64(nil, 0x101)))
	f.Add(rawMsg(reqAddMemReg, flagVersion, make([]byte, 40)))
	f.Add(rawMsg(reqRemMemReg, flagVersion, make([]byte, 40)))
	// Multiqueue: the last ring of the eighth pair, the first beyond.
	f.Add(append(rawMsg(reqGetQueueNum, flagVersion, nil), rawMsg(reqSetVringEnable, flagVersion, state(numRings-1, 1))...))
	f.Add(rawMsg(reqSetVringNum, flagVersion, state(numRings, 256)))
	f.Add(rawMsg(reqSetVringKick, flagVersion, binary.LittleEndian.AppendUint64(nil, 0x100|numRings-1)))
	p, err := Listen(filepath.Join(f.TempDir(), "fuzz.sock"), Options{Logger: slog.New(slog.DiscardHandler), Readers: 2})
	if err != nil {
		f.Fatal(err)
	}
	defer p.Close()
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 32<<10 {
			return
		}
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.Write(fds[0], data)
		unix.Close(fds[0])
		f := os.NewFile(uintptr(fds[1]), "fuzz")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		d := newDevice(p, c.(*net.UnixConn))
		defer d.teardown()
		for i := 0; i < 64; i++ {
			m, err := d.c.read()
			if err != nil {
				return
			}
			if m.flags&flagVersionM != flagVersion || len(m.payload) > maxPayload {
				t.Fatalf("decoded an invalid header: flags %#x, %d bytes", m.flags, len(m.payload))
			}
			d.handle(m)
			m.closeFds()
		}
	})
}

const fuzzNum = 8

// fuzzRings lays data over the descriptor tables, avail rings and avail
// indices of both rings of a guest with 8-entry queues.
func fuzzRings(g *fakeGuest, data []byte) {
	var buf [2 * (fuzzNum*descSize + 2*fuzzNum + 2)]byte
	copy(buf[:], data)
	b := buf[:]
	for _, ring := range []int{1, 0} {
		o := ring * ringArea
		copy(g.mem[o:], b[:fuzzNum*descSize])
		b = b[fuzzNum*descSize:]
		copy(g.mem[o+0x4000+4:], b[:2*fuzzNum])
		b = b[2*fuzzNum:]
		copy(g.mem[o+0x4000+2:], b[:2])
		b = b[2:]
	}
}

// ringSeed builds a well-formed input: two transmit frames (one chained)
// and four receive buffers.
func ringSeed(split int) []byte {
	g := newFakeGuest(&testing.T{}, fuzzNum)
	g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(100, 1)...), split)
	g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(60, 2)...), 4096)
	g.postRx(4, 2048)
	var out []byte
	for _, ring := range []int{1, 0} {
		o := ring * ringArea
		out = append(out, g.mem[o:o+fuzzNum*descSize]...)
		out = append(out, g.mem[o+0x4000+4:o+0x4000+4+2*fuzzNum]...)
		out = append(out, g.mem[o+0x4000+2:o+0x4000+4]...)
	}
	return out
}

// FuzzRingWalker runs dequeue and enqueue over guest-written descriptor
// tables and avail rings. Whatever the guest writes, the walker must not
// panic, must not return more frames than asked or larger than a Buf, and
// must publish at most one used entry per avail entry.
func FuzzRingWalker(f *testing.F) {
	f.Add(ringSeed(4096))
	f.Add(ringSeed(30))
	f.Add(make([]byte, 8))
	f.Fuzz(func(t *testing.T, data []byte) {
		g := newFakeGuest(t, fuzzNum)
		fuzzRings(g, data)
		tx := g.vring(1, netFeatures)
		rx := g.vring(0, netFeatures)
		in := newBufs(4)
		out := newBufs(3)
		for i, b := range out {
			b.SetLen(60 + 2000*i)
		}
		n, dropped, _ := tx.dequeue(in)
		if n+dropped > len(in) {
			t.Fatalf("dequeue returned %d frames and %d drops for %d buffers", n, dropped, len(in))
		}
		for _, b := range in[:n] {
			if b.Len() == 0 || b.Len() > packet.MaxFrame {
				t.Fatalf("frame of %d bytes", b.Len())
			}
		}
		if u := g.used(1); len(u) > n+dropped {
			t.Fatalf("%d used entries for %d frames", len(u), n+dropped)
		}
		m, _, _ := rx.enqueue(out)
		if m > len(out) {
			t.Fatalf("enqueue took %d of %d", m, len(out))
		}
		if u := g.used(0); len(u) > fuzzNum {
			t.Fatalf("%d used receive entries on an %d-entry ring", len(u), fuzzNum)
		}
	})
}

// packedFuzzLen is the input a packed fuzz case uses: for each ring
// (transmit first), its descriptor ring, its driver event area and its
// starting ring state.
const packedFuzzLen = 2 * (fuzzNum*descSize + 4 + 2)

// fuzzPacked lays data over both packed rings of g and returns the
// starting states.
func fuzzPacked(g *packedGuest, data []byte) (base [2]uint32) {
	var buf [packedFuzzLen]byte
	copy(buf[:], data)
	b := buf[:]
	for _, ring := range []int{1, 0} {
		o := ring * ringArea
		copy(g.mem[o:], b[:fuzzNum*descSize])
		b = b[fuzzNum*descSize:]
		copy(g.mem[o+0x4000:], b[:4])
		b = b[4:]
		v := uint32(binary.LittleEndian.Uint16(b))
		base[ring] = v&^wrapBit%fuzzNum | v&wrapBit
		b = b[2:]
	}
	return base
}

// packedSeed builds a well-formed input: transmit frames (one chained,
// one indirect) and receive buffers, from the given ring states.
func packedSeed(tx, rx uint16) []byte {
	g := newPackedGuest(&testing.T{}, fuzzNum)
	var base [2]uint16
	for ring, b := range []uint16{rx, tx} {
		g.avail[ring], g.availWrap[ring] = b&^wrapBit, b&wrapBit != 0
		base[ring] = b
	}
	g.postTx(append(hdr12(packet.VNetHdr{}, 0), frameOf(100, 1)...), 30)
	g.postTxIndirect(append(hdr12(packet.VNetHdr{}, 0), frameOf(60, 2)...), 40)
	g.postRx(4, 2048)
	var out []byte
	for _, ring := range []int{1, 0} {
		o := ring * ringArea
		out = append(out, g.mem[o:o+fuzzNum*descSize]...)
		out = append(out, g.mem[o+0x4000:o+0x4004]...)
		out = binary.LittleEndian.AppendUint16(out, base[ring])
	}
	return out
}

// FuzzPackedWalker runs dequeue and enqueue over guest-written packed
// descriptor rings and driver event areas, twice. Whatever the guest
// writes, the walker must not panic, must not return more frames than
// asked or larger than a Buf, must keep its indices inside the ring and
// write back exactly what it consumed (in order), and its ring state
// must start a ring again.
func FuzzPackedWalker(f *testing.F) {
	f.Add(packedSeed(wrapBit, wrapBit))
	f.Add(packedSeed(wrapBit|6, 5))
	f.Add(make([]byte, 8))
	f.Fuzz(func(t *testing.T, data []byte) {
		g := newPackedGuest(t, fuzzNum)
		base := fuzzPacked(g, data)
		var rings [2]*packedRing
		for ring := range rings {
			r, err := newPackedRing(g.table, g.conf(ring, netFeatures|1<<fRingPacked|1<<fEventIdx), base[ring], -1)
			if err != nil {
				t.Fatalf("ring %d from state %#x: %v", ring, base[ring], err)
			}
			rings[ring] = r
		}
		in := newBufs(4)
		out := newBufs(3)
		for i, b := range out {
			b.SetLen(60 + 2000*i)
		}
		for range 2 {
			n, dropped, _ := rings[1].dequeue(in)
			if n+dropped > len(in) {
				t.Fatalf("dequeue returned %d frames and %d drops for %d buffers", n, dropped, len(in))
			}
			for _, b := range in[:n] {
				if b.Len() == 0 || b.Len() > packet.MaxFrame {
					t.Fatalf("frame of %d bytes", b.Len())
				}
			}
			if m, _, _ := rings[0].enqueue(out); m > len(out) {
				t.Fatalf("enqueue took %d of %d", m, len(out))
			}
			for ring, r := range rings {
				if r.lastAvail >= r.num || r.lastAvail != r.usedIdx || r.availWrap != r.usedWrap || r.headSlot >= 0 {
					t.Fatalf("ring %d: avail %d/%v used %d/%v head %d after a batch", ring, r.lastAvail, r.availWrap, r.usedIdx, r.usedWrap, r.headSlot)
				}
				if _, err := newPackedRing(g.table, g.conf(ring, netFeatures|1<<fRingPacked), r.state(), -1); err != nil {
					t.Fatalf("ring %d: state %#x does not start a ring: %v", ring, r.state(), err)
				}
			}
		}
	})
}
