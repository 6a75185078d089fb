package dataplane

import (
	"log/slog"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port/vhostuser"
)

// dropVhost is a fake vhost-user port that also reports its own drops
// and its guest's MTU, as vhostuser.Port does.
type dropVhost struct {
	*fakeVhost
	drops vhostuser.Drops
	mtu   int
}

func (p *dropVhost) Drops() vhostuser.Drops { return p.drops }
func (p *dropVhost) MTU() int               { return p.mtu }

// vhostWith makes the harness's next vhost-user vNIC a dropVhost.
func (h *harness) vhostWith(d vhostuser.Drops, mtu int) {
	h.e.hooks.openVhost = func(path string, offload bool, _ *slog.Logger) (vhostPort, error) {
		h.mu.Lock()
		defer h.mu.Unlock()
		fv := &fakeVhost{}
		h.ports[path] = &fv.fakePort
		h.vhosts[path] = fv
		return &dropVhost{fakeVhost: fv, drops: d, mtu: mtu}, nil
	}
}

// TestVhostPortDropsInCounters: the drops a vhost-user port counts itself
// appear in the vNIC's counters under their names and leave the TX
// counters (the frames WriteBatch says it sent) alone.
func TestVhostPortDropsInCounters(t *testing.T) {
	h := newHarness(t, Config{SocketDir: t.TempDir()}, true)
	a := h.add(t, bypassed(nicOf("a", mac(1), 5)))
	h.vhostWith(vhostuser.Drops{InMalformed: 2, InTooBig: 3, OutTooBig: 4, OutOffload: 1, Broken: 1}, 0)
	vn := bypassed(nicOf("v", mac(9), 5))
	vn.Type = model.NICVhostUser
	if _, err := h.e.AddNIC(vn); err != nil {
		t.Fatal(err)
	}
	f := udpFlow(t, true, 1000, 2000)
	copy(f.data[0:6], []byte{2, 0, 0, 0, 0, 9}) // mac(9)
	for i := 0; i < 10; i++ {
		a.inject(f)
	}
	h.step()
	c, err := h.e.Counters("v")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{
		dropVhostRxMalformed: 2, dropVhostRxTooBig: 3, dropVhostTxTooBig: 4, dropVhostTxOffload: 1, dropVhostRingBroken: 1,
	}
	for k, v := range want {
		if c.Drops[k] != v {
			t.Errorf("Drops[%s] = %d, want %d (all: %v)", k, c.Drops[k], v, c.Drops)
		}
	}
	if c.TxPackets != 10 || c.TxBytes != uint64(10*len(f.data)) {
		t.Errorf("TX %d frames, %d bytes; want %d, %d", c.TxPackets, c.TxBytes, 10, 10*len(f.data))
	}
	// A TAP vNIC has no such drops.
	if ca, _ := h.e.Counters("a"); len(ca.Drops) != 0 {
		t.Errorf("TAP vNIC drops %v", ca.Drops)
	}
}

// TestTSOToVhostGuestMTU: TSO frames towards a guest without GUEST_TSO are
// segmented to fit the guest's MTU, not only the sender's MSS.
func TestTSOToVhostGuestMTU(t *testing.T) {
	for _, tc := range []struct {
		name string
		mtu  int
		want int // segments of 4000 bytes of payload
	}{
		{"no MTU: sender's MSS 1448", 0, 3},
		{"MTU 1500: MSS 1448 fits", 1500, 3},
		{"MTU 1000: 960 bytes per segment", 1000, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{SocketDir: t.TempDir()}, true)
			a := h.add(t, bypassed(nicOf("a", mac(1), 5)))
			h.vhostWith(vhostuser.Drops{}, tc.mtu)
			vn := bypassed(nicOf("v", mac(9), 5))
			vn.Type = model.NICVhostUser
			path, err := h.e.AddNIC(vn)
			if err != nil {
				t.Fatal(err)
			}
			h.mu.Lock()
			v := &h.vhosts[path].fakePort
			h.mu.Unlock()
			a.inject(tsoFrame(t, mac(9), mac(1), 4000, 1448))
			h.step()
			got := v.take()
			if len(got) != tc.want {
				t.Fatalf("%d segments, want %d", len(got), tc.want)
			}
			total := 0
			for i, f := range got {
				if tc.mtu > 0 && len(f.data) > 14+tc.mtu {
					t.Errorf("segment %d: %d bytes over MTU %d", i, len(f.data), tc.mtu)
				}
				seg := f.data[34:]
				ps := packet.PseudoHeaderChecksum(packet.ProtoTCP, f.data[26:30], f.data[30:34], uint32(len(seg)))
				if packet.Checksum(seg, ps) != 0xffff {
					t.Errorf("segment %d: bad TCP checksum", i)
				}
				total += len(seg) - 20
			}
			if total != 4000 {
				t.Errorf("segments carry %d bytes, want 4000", total)
			}
		})
	}
}

// TestVhostUserGuestRingFull: a guest that stops taking frames (testpmd
// B whose forwarding is not started) fills its receive ring; the engine
// then counts every further frame as tx_full on B, delivers exactly what
// fits, and B finds exactly those frames once it starts.
func TestVhostUserGuestRingFull(t *testing.T) {
	tpA, tpB, counters := testpmdPair(t, 78, "02")
	tpA.Command("start")
	deadline := time.Now().Add(10 * time.Second)
	for counters("b").Drops[dropName(dropTxFull)] < 10000 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	tpA.Command("stop")
	_, sent := tpA.PortStats()
	deadline = time.Now().Add(5 * time.Second)
	for counters("a").RxPackets != sent && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cb := counters("b")
	full := cb.Drops[dropName(dropTxFull)]
	if full == 0 || cb.TxPackets == 0 || cb.TxPackets > 256 || cb.TxPackets+full != sent {
		t.Fatalf("B: %d delivered (ring of 256), %d tx_full, %d sent by A; drops %v", cb.TxPackets, full, sent, cb.Drops)
	}
	tpB.Command("start")
	var rx uint64
	deadline = time.Now().Add(5 * time.Second)
	for rx != cb.TxPackets && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		rx, _ = tpB.PortStats()
	}
	if rx != cb.TxPackets {
		t.Fatalf("testpmd B found %d frames in its ring, the engine delivered %d", rx, cb.TxPackets)
	}
	t.Logf("A sent %d; B's ring took %d, %d counted tx_full", sent, cb.TxPackets, full)
}
