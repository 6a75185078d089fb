package dataplane

import (
	"errors"
	"log/slog"
	"maps"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port"
	"github.com/butterfly-go/butterfly/internal/port/vhostuser"
)

// Outcomes of one frame written to a verdictPort.
const (
	vSend   = iota // sent
	vRefuse        // refused, counted by the port (TxRefused)
	vFull          // queue full: this frame and the rest are not taken
	vFail          // error: this frame and the rest are not taken
)

// verdictPort is a fake TAP port whose WriteBatch treats each frame as
// verdict says (by payload length) and counts the frames it refuses, as
// tap.Port does.
type verdictPort struct {
	fakePort
	verdict func(b *packet.Buf) int
	// onWrite runs inside WriteBatch once the port has counted its
	// refusals, before WriteBatch returns.
	onWrite func()
}

func (p *verdictPort) WriteBatch(bufs []*packet.Buf) (sent, dropped int, err error) {
	defer func() {
		if p.onWrite != nil {
			p.onWrite()
		}
	}()
	for sent+dropped < len(bufs) {
		switch p.verdict(bufs[sent+dropped]) {
		case vSend:
			sent = port.MoveSent(bufs, sent, dropped)
		case vRefuse:
			p.txRefused.Add(1)
			dropped++
		case vFull:
			return sent, dropped, nil
		case vFail:
			return sent, dropped, errors.New("write failed")
		}
	}
	return sent, dropped, nil
}

// tapWith makes the harness's next TAP vNIC p.
func (h *harness) tapWith(p port.Port) {
	h.e.hooks.openTAP = func(name string, offload bool) (port.Port, string, error) {
		return p, name, nil
	}
}

// TestTxCountersExact: a batch in which the port refuses frames, or runs
// out of room, or fails, gives exact per-vNIC counters: packets and bytes
// of exactly the frames sent, the refused frames under the port's own
// counter only, the rest as tx_full or tx_error.
func TestTxCountersExact(t *testing.T) {
	payloads := []int{100, 200, 300, 400, 500}
	for _, tc := range []struct {
		name     string
		verdicts map[int]int // by payload; vSend if absent
		sent     []int       // payloads counted as sent
		drops    map[string]uint64
	}{
		{"all sent", nil, payloads, map[string]uint64{}},
		{"refused in the middle", map[int]int{200: vRefuse}, []int{100, 300, 400, 500},
			map[string]uint64{dropTapTxRefused: 1}},
		{"refused first and last", map[int]int{100: vRefuse, 500: vRefuse}, []int{200, 300, 400},
			map[string]uint64{dropTapTxRefused: 2}},
		{"refused then full", map[int]int{200: vRefuse, 500: vFull}, []int{100, 300, 400},
			map[string]uint64{dropTapTxRefused: 1, dropName(dropTxFull): 1}},
		{"full after the first", map[int]int{200: vFull}, []int{100},
			map[string]uint64{dropName(dropTxFull): 4}},
		{"refused then error", map[int]int{100: vRefuse, 300: vFail}, []int{200},
			map[string]uint64{dropTapTxRefused: 1, dropName(dropTxError): 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{}, true)
			a := h.add(t, bypassed(nicOf("a", mac(1), 5)))
			frames := map[int]int{} // frame length by payload
			vp := &verdictPort{}
			h.tapWith(vp)
			h.add(t, bypassed(nicOf("b", mac(2), 5)))
			vp.verdict = func(b *packet.Buf) int {
				for pl, l := range frames {
					if l == b.Len() {
						return tc.verdicts[pl]
					}
				}
				t.Fatalf("unexpected frame of %d bytes", b.Len())
				return vFail
			}
			for _, pl := range payloads {
				f := udp4(t, mac(2), mac(1), "10.0.0.1", "10.0.0.2", pl, false)
				frames[pl] = len(f)
				a.inject(frame{data: f})
			}
			h.step()
			c, err := h.e.Counters("b")
			if err != nil {
				t.Fatal(err)
			}
			var bytes uint64
			for _, pl := range tc.sent {
				bytes += uint64(frames[pl])
			}
			if c.TxPackets != uint64(len(tc.sent)) || c.TxBytes != bytes {
				t.Errorf("TX %d packets, %d bytes; want %d, %d", c.TxPackets, c.TxBytes, len(tc.sent), bytes)
			}
			if !maps.Equal(c.Drops, tc.drops) {
				t.Errorf("drops %v, want %v", c.Drops, tc.drops)
			}
		})
	}
}

// TestMetricsTxMonotonic: the Prometheus TX counters of a vNIC never
// decrease, even when a scrape runs while its port is refusing frames
// (here: in the middle of the port's WriteBatch, after it counted them).
func TestMetricsTxMonotonic(t *testing.T) {
	h := newHarness(t, Config{SocketDir: t.TempDir()}, true)
	a := h.add(t, bypassed(nicOf("a", mac(1), 5)))
	dv := &verdictVhost{}
	h.e.hooks.openVhost = func(string, bool, *slog.Logger) (vhostPort, error) { return dv, nil }
	vn := bypassed(nicOf("v", mac(9), 5))
	vn.Type = model.NICVhostUser
	if _, err := h.e.AddNIC(vn); err != nil {
		t.Fatal(err)
	}
	ok := udp4(t, mac(9), mac(1), "10.0.0.1", "10.0.0.2", 100, false)
	big := udp4(t, mac(9), mac(1), "10.0.0.1", "10.0.0.2", 1000, false)
	var last [2]float64
	scrape := func(when string) {
		t.Helper()
		fams := gather(t, h.e)
		for i, name := range []string{"butterfly_nic_tx_packets_total", "butterfly_nic_tx_bytes_total"} {
			v, _ := metricValue(t, fams, name, map[string]string{"nic": "v"})
			if v < last[i] {
				t.Errorf("%s: %s went from %v down to %v", when, name, last[i], v)
			}
			last[i] = v
		}
	}
	// The port refuses frames of more than 500 bytes (too big for its
	// guest) and counts them itself.
	dv.verdict = func(b *packet.Buf) int {
		if b.Len() > 500 {
			return vRefuse
		}
		return vSend
	}
	dv.onWrite = func() { scrape("during WriteBatch") }
	a.inject(frame{data: ok}, frame{data: ok})
	h.step()
	scrape("after 2 frames sent")
	a.inject(frame{data: ok}, frame{data: big}, frame{data: big}, frame{data: ok})
	h.step()
	scrape("after 2 more sent and 2 refused")
	if last != [2]float64{4, float64(4 * len(ok))} {
		t.Errorf("TX %v packets and bytes, want 4, %d", last, 4*len(ok))
	}
	if c, _ := h.e.Counters("v"); c.Drops[dropVhostTxTooBig] != 2 {
		t.Errorf("drops %v, want %s 2", c.Drops, dropVhostTxTooBig)
	}
}

// verdictVhost is a fake vhost-user port whose WriteBatch treats each
// frame as verdict says and counts the frames it refuses as too big for
// its guest (Drops.OutTooBig), as vhostuser.Port does.
type verdictVhost struct {
	fakeVhost
	verdict func(b *packet.Buf) int
	drops   vhostuser.Drops
	onWrite func()
}

func (p *verdictVhost) Drops() vhostuser.Drops { return p.drops }

func (p *verdictVhost) WriteBatch(bufs []*packet.Buf) (sent, dropped int, err error) {
	for sent+dropped < len(bufs) {
		if p.verdict(bufs[sent+dropped]) == vRefuse {
			p.drops.OutTooBig++
			dropped++
		} else {
			sent = port.MoveSent(bufs, sent, dropped)
		}
	}
	p.onWrite()
	return sent, dropped, nil
}

// TestMetricsUnderlayRefused: the datagrams the underlay sockets refused
// are drops of the underlay-tx element.
func TestMetricsUnderlayRefused(t *testing.T) {
	h := newHarness(t, Config{}, true)
	h.under.txRefused.Store(3)
	checkMetrics(t, h.e, []metricWant{
		{"butterfly_element_drops_total", map[string]string{"type": "underlay-tx", "name": "underlay", "reason": dropUDPTxRefused}, 3},
	})
}
