package vhostuser

import (
	"encoding/binary"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/packet"
	"golang.org/x/sys/unix"
)

// TestNoLostWakeup plays a guest that keeps one frame in flight (post,
// kick when the device asks for kicks, wait until the frame is used)
// against a worker that polls ReadBatch and, whenever it returns
// nothing, sleeps on Fd as the dataplane's workers do. A frame left in
// the ring while Fd stays silent is a lost wake-up: the worker would
// sleep until the guest's next frame, which here never comes.
//
// With ArmOnSleep the worker calls PrepareSleep before it sleeps (and
// polls again if it reports frames), as the dataplane does, and empty
// polls must leave the guest's kicks off.
func TestNoLostWakeup(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		eventIdx, armOnSleep bool
	}{{"flags", false, false}, {"event_idx", true, false}, {"flags/arm_on_sleep", false, true}, {"event_idx/arm_on_sleep", true, true}} {
		eventIdx := tc.eventIdx
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "vhu.sock")
			p, err := Listen(sock, Options{ArmOnSleep: tc.armOnSleep})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Close() })
			f := dialFrontEnd(t, p)
			if eventIdx {
				f.without = 1 << fRingPacked
			}
			f.setup()
			g := f.g
			usedIdx := func() uint16 { return binary.LittleEndian.Uint16(g.mem[ringArea+0x8000+2:]) }
			var fence atomic.Int32
			var posted atomic.Uint32 // the guest's avail index, for the worker side
			var lastKick atomic.Bool // whether the guest kicked for its last frame
			stop := make(chan struct{})
			done := make(chan int)
			pkt := append(hdr12(packet.VNetHdr{}, 0), frameOf(60, 1)...)
			go func() {
				sent := 0
				defer func() { done <- sent }()
				deadline := time.Now().Add(1500 * time.Millisecond)
				for sent < 30000 && time.Now().Before(deadline) {
					old := g.avail[1]
					g.postTx(pkt, 4096)
					posted.Store(uint32(g.avail[1]))
					fence.Add(1) // full barrier: the avail index before the flags
					var kick bool
					if eventIdx {
						kick = needEvent(g.availEvent(1), g.avail[1], old)
					} else {
						kick = binary.LittleEndian.Uint16(g.mem[ringArea+0x8000:])&usedFNoNotif == 0
					}
					lastKick.Store(kick)
					if kick {
						unix.Write(f.kick[1], binary.LittleEndian.AppendUint64(nil, 1))
					}
					sent++
					for usedIdx() != g.avail[1] {
						select {
						case <-stop:
							return
						default:
						}
						for i := 0; i < sent%64; i++ {
							fence.Add(1) // vary the timing
						}
					}
				}
			}()
			bufs := newBufs(4)
			got, sleeps := 0, 0
			for {
				if n, _ := p.ReadBatch(bufs); n > 0 {
					got += n
					if tc.armOnSleep {
						// polling: the guest must not be asked to kick
						if n, _ := p.ReadBatch(bufs); n > 0 {
							got += n
							continue
						}
						if r := p.ring(txRing).(*vring); r.kicksArmed() {
							close(stop)
							<-done
							t.Fatalf("kicks armed by an empty ReadBatch with ArmOnSleep (used flags %#x)", r.usedFlags)
						}
					}
					continue
				}
				if tc.armOnSleep && p.PrepareSleep() {
					continue
				}
				select {
				case sent := <-done:
					if got != sent {
						t.Fatalf("read %d of %d frames", got, sent)
					}
					t.Logf("%d frames, %d sleeps on Fd", got, sleeps)
					return
				default:
				}
				sleeps++
				if !fdReadable(t, p.Fd(), 200*time.Millisecond) {
					if pending := uint16(posted.Load()) - usedIdx(); pending != 0 {
						close(stop)
						<-done
						r := p.ring(txRing).(*vring)
						t.Fatalf("lost wake-up after %d frames: %d frame(s) in the ring, Fd silent for 200 ms (ring: last avail %d, used flags %#x, avail_event %d; port: %d empty polls; guest kicked %v)",
							got, pending, r.lastAvail, r.usedFlags, g.availEvent(1), p.r0.empty, lastKick.Load())
					}
				}
			}
		})
	}
}
