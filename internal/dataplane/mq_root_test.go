package dataplane

import (
	"net"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/port/vhostuser"
	"github.com/butterfly-go/butterfly/internal/port/vhostuser/vhosttest"
)

// TestVhostUserMultiqueueWorkers: two workers, two vhost-user vNICs of
// two queue pairs each, driven by testpmd front ends (A txonly towards B,
// B rxonly). Both workers read A's queues (each its pair), every frame A
// sent is counted once on A, and every frame is either delivered to B
// (counted by testpmd B) or counted as a drop. Filtered: the frames the
// second worker reads go through A's firewall on A's home worker.
// Bypass, many flows: the second worker switches them itself, and the
// flows are spread over both of B's receive queues.
func TestVhostUserMultiqueueWorkers(t *testing.T) {
	for _, tt := range []struct {
		name      string
		bypass    bool
		multiFlow bool
	}{
		{"filtered", false, false},
		{"bypass-many-flows", true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			vhosttest.Need(t)
			// Buffers enough for a full handoff ring and more: the
			// frames are lost to full rings (counted), not to an empty
			// pool.
			e, _ := tapHarness(t, Config{SocketDir: t.TempDir(), Workers: 2, PoolSize: maxPoolSize})
			const vni = 78
			macA, macB := "02:00:00:00:0a:02", "02:00:00:00:0b:02"
			add := func(id, mac, ip string) string {
				hw, err := net.ParseMAC(mac)
				if err != nil {
					t.Fatal(err)
				}
				n := nicOf(id, [6]byte(hw), vni, ip)
				n.Type = model.NICVhostUser
				n.Bypass = tt.bypass
				path, err := e.AddNIC(n)
				if err != nil {
					t.Fatalf("AddNIC(%s): %v", id, err)
				}
				return path
			}
			pathA := add("a", macA, "198.18.0.1")
			pathB := add("b", macB, "198.18.0.2")
			tpB := vhosttest.Start(t, pathB, "rxonly", vhosttest.Options{MAC: macB, Queues: 2})
			tpA := vhosttest.Start(t, pathA, "txonly", vhosttest.Options{MAC: macA, EthPeer: macB, Queues: 2, MultiFlow: tt.multiFlow})
			counters := func(id string) model.NICCounters {
				c, err := e.Counters(id)
				if err != nil {
					t.Fatal(err)
				}
				return c
			}
			e.mu.Lock()
			pa, pb := e.nics["a"].p, e.nics["b"].p
			e.mu.Unlock()
			if len(pa.shares) != 1 || pa.shares[0].worker == pa.worker {
				t.Fatalf("vNIC a: shares %+v, home worker %d; want one share on the other worker", pa.shares, pa.worker)
			}
			vA, vB := pa.port.(*vhostuser.Port), pb.port.(*vhostuser.Port)
			waitPairs(t, vA, 2)
			waitPairs(t, vB, 2)
			sent, ca := sendAtoB(t, tpA, tpB, counters)
			// Both workers read A's queues, each frame counted once.
			var perWorker [2]uint64
			for w := range perWorker {
				perWorker[w] = pa.rx.per[w].packets
			}
			if perWorker[0] == 0 || perWorker[1] == 0 || perWorker[0]+perWorker[1] != sent {
				t.Fatalf("A's frames read per worker %v, want both > 0, %d in all", perWorker, sent)
			}
			if qs := vA.QueueStats(); qs[0].In != perWorker[pa.worker] || qs[1].In != perWorker[pa.shares[0].worker] {
				t.Fatalf("A's queue stats %+v do not match the frames each worker read %v", qs, perWorker)
			}
			// Every frame is delivered to B and counted by testpmd B, or
			// counted as dropped, once the frames in flight have landed.
			var cb model.NICCounters
			var rx, dropped uint64
			deadline := time.Now().Add(5 * time.Second)
			for {
				ca, cb = counters("a"), counters("b")
				dropped = 0
				for _, v := range ca.Drops {
					dropped += v
				}
				for _, v := range cb.Drops {
					dropped += v
				}
				rx, _ = tpB.PortStats()
				if (rx == cb.TxPackets && cb.TxPackets+dropped == sent) || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if rx == 0 || rx != cb.TxPackets || cb.TxPackets+dropped != sent {
				t.Fatalf("testpmd B received %d, engine delivered %d, drops %v %v, A sent %d", rx, cb.TxPackets, ca.Drops, cb.Drops, sent)
			}
			qb := vB.QueueStats()
			if qb[0].Out+qb[1].Out != cb.TxPackets {
				t.Fatalf("B's queue stats %+v do not add up to %d delivered", qb, cb.TxPackets)
			}
			// The per-queue counters in Counters and the metrics.
			if len(ca.Queues) != 2 || ca.Queues[0].RxPackets+ca.Queues[1].RxPackets != ca.RxPackets ||
				len(cb.Queues) != 2 || cb.Queues[0].TxPackets != qb[0].Out || cb.Queues[1].TxPackets != qb[1].Out {
				t.Fatalf("Counters' queues: a %+v (rx %d), b %+v (port %+v)", ca.Queues, ca.RxPackets, cb.Queues, qb)
			}
			checkMetrics(t, e, []metricWant{
				{"butterfly_nic_queue_rx_packets_total", map[string]string{"nic": "a", "queue": "1"}, float64(ca.Queues[1].RxPackets)},
				{"butterfly_nic_queue_tx_packets_total", map[string]string{"nic": "b", "queue": "0"}, float64(qb[0].Out)},
			})
			if tt.multiFlow && (qb[0].Out == 0 || qb[1].Out == 0) {
				t.Fatalf("B's queue stats %+v: flows not spread over both receive queues", qb)
			}
			t.Logf("A sent %d (read per worker %v), B received %d (per queue %+v), drops %v %v", sent, perWorker, rx, qb, ca.Drops, cb.Drops)
		})
	}
}

// waitPairs waits until n queue pairs of p run.
func waitPairs(t *testing.T, p *vhostuser.Port, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(p.QueueStats()) < n || !p.Ready() {
		if time.Now().After(deadline) {
			t.Fatalf("%d queue pairs after 10s, want %d", len(p.QueueStats()), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
