package dataplane

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// FuzzPaths feeds arbitrary frames (with arbitrary offload metadata) from
// a vNIC and arbitrary datagrams from the underlay through the engine: it
// must neither panic nor lose buffers.
func FuzzPaths(f *testing.F) {
	f.Add([]byte{}, false, uint8(0), uint16(0), uint16(0), uint16(0))
	f.Add(udp4(f, mac(9), mac(1), "10.0.0.1", "10.0.0.9", 100, true), false, uint8(0), uint16(0), uint16(0), uint16(0))
	f.Add(udp4(f, mac(9), mac(1), "10.0.0.1", "10.0.0.9", 1600, true), false, uint8(0), uint16(0), uint16(0), uint16(0))
	tso := tsoFrame(f, mac(9), mac(1), 5000, 1000)
	f.Add(tso.data, false, tso.vnet.GSOType, tso.vnet.GSOSize, tso.vnet.CsumStart, tso.vnet.CsumOffset)
	f.Add(vxlanFrame(5, tcpSeg(f, false, 1, 0, pattern(100, 0), nil)), true, uint8(0), uint16(0), uint16(0), uint16(0))
	f.Add(vxlanFrame(5, arp(f, mac(9), "10.0.0.9", "10.0.0.1")), true, uint8(0), uint16(0), uint16(0), uint16(0))
	h := newHarness(f, Config{}, true)
	a := h.add(f, nicOf("a", mac(1), 5, "10.0.0.1"))
	n := nicOf("b", mac(2), 5, "10.0.0.2")
	n.Bypass = true
	b := h.add(f, n)
	a.count, b.count, h.under.count = true, true, true
	h.under.inject(frame{data: vxlanFrame(5, arp(f, mac(9), "10.0.0.9", "10.0.0.1")), peer: netip.AddrPortFrom(remote, 4789)})
	h.step()
	f.Fuzz(func(t *testing.T, data []byte, fromNet bool, gso uint8, gsoSize, csumStart, csumOffset uint16) {
		if len(data) > packet.MaxFrame {
			return
		}
		fr := frame{data: data}
		switch {
		case fromNet:
			fr.peer = netip.AddrPortFrom(remote, 4789)
			h.under.inject(fr, fr)
		default:
			fr.vnet = packet.VNetHdr{Flags: packet.VNetFlagNeedsCsum, GSOType: gso, GSOSize: gsoSize, CsumStart: csumStart, CsumOffset: csumOffset}
			if len(data) >= 12 {
				copy(fr.data[6:12], []byte{2, 0, 0, 0, 0, 1})
			}
			a.inject(fr)
			b.inject(fr)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			h.step()
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			panic(fmt.Sprintf("engine stuck on fromNet=%v gso=%d size=%d start=%d off=%d len=%d", fromNet, gso, gsoSize, csumStart, csumOffset, len(data)))
		}
		w := h.e.workers[0]
		if got := w.pool.Available() + w.rxn; got != 512 {
			t.Fatalf("worker holds %d of its 512 buffers after the frames went through", got)
		}
	})
}
