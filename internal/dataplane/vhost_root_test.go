package dataplane

import (
	"net"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/port/vhostuser/vhosttest"
)

// TestVhostUserTestpmdSwitching drives two vhost-user vNICs of one VNI
// with two testpmd front ends: A transmits (txonly, UDP from 198.18.0.1
// to 198.18.0.2, destination MAC B's), the engine checks anti-spoofing
// and the firewall and switches the frames to B (rxonly). Every frame
// testpmd A sent is received by the engine, and every frame the engine
// delivered to B is counted by testpmd B.
func TestVhostUserTestpmdSwitching(t *testing.T) {
	tpA, tpB, counters := testpmdPair(t, 77, "01")
	sent, ca := sendAtoB(t, tpA, tpB, counters)
	if len(ca.Drops) != 0 {
		t.Errorf("drops on A's path: %v", ca.Drops)
	}
	// Everything the engine handed to B's ring is counted by testpmd B.
	var rx uint64
	deadline := time.Now().Add(5 * time.Second)
	for {
		rx, _ = tpB.PortStats()
		if rx == counters("b").TxPackets || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cb := counters("b")
	if rx == 0 || rx != cb.TxPackets {
		t.Fatalf("testpmd B received %d frames, engine delivered %d (drops %v)", rx, cb.TxPackets, cb.Drops)
	}
	// B's ring may be full at times (dropped and counted as tx-full);
	// nothing else may be lost.
	if cb.TxPackets+cb.Drops[dropName(dropTxFull)] != sent {
		t.Errorf("B: delivered %d + ring-full drops %v != %d sent by A", cb.TxPackets, cb.Drops, sent)
	}
	t.Logf("A sent %d, B received %d, drops to B %v", sent, rx, cb.Drops)
}

// sendAtoB starts testpmd B (rxonly) then A (txonly), stops A once the
// engine delivered 50,000 frames to B (or after 10 s), and checks that
// every frame A sent reached the engine; it returns how many A sent and
// A's counters then.
func sendAtoB(t *testing.T, tpA, tpB *vhosttest.Testpmd, counters func(id string) model.NICCounters) (uint64, model.NICCounters) {
	t.Helper()
	tpB.Command("start")
	tpA.Command("start")
	deadline := time.Now().Add(10 * time.Second)
	for counters("b").TxPackets < 50000 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	tpA.Command("stop")
	_, sent := tpA.PortStats()
	if sent == 0 {
		t.Fatal("testpmd A sent nothing")
	}
	deadline = time.Now().Add(5 * time.Second)
	for counters("a").RxPackets != sent && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	ca := counters("a")
	if ca.RxPackets != sent {
		t.Fatalf("engine received %d frames from A, testpmd A sent %d (drops %v)", ca.RxPackets, sent, ca.Drops)
	}
	return sent, ca
}

// testpmdPair starts an engine with two vhost-user vNICs a (198.18.0.1)
// and b (198.18.0.2) in VNI vni, MACs 02:00:00:00:0a:<m> and
// 02:00:00:00:0b:<m>, each driven by a testpmd front end: A in txonly
// mode towards B, B in rxonly mode (neither started); it returns them and
// a reader of the engine's counters of a vNIC.
func testpmdPair(t *testing.T, vni uint32, m string) (*vhosttest.Testpmd, *vhosttest.Testpmd, func(id string) model.NICCounters) {
	t.Helper()
	vhosttest.Need(t)
	e, _ := tapHarness(t, Config{SocketDir: t.TempDir()})
	macA, macB := "02:00:00:00:0a:"+m, "02:00:00:00:0b:"+m
	add := func(id, mac, ip string) string {
		hw, err := net.ParseMAC(mac)
		if err != nil {
			t.Fatal(err)
		}
		n := nicOf(id, [6]byte(hw), vni, ip)
		n.Type = model.NICVhostUser
		path, err := e.AddNIC(n)
		if err != nil {
			t.Fatalf("AddNIC(%s): %v", id, err)
		}
		return path
	}
	pathA := add("a", macA, "198.18.0.1")
	pathB := add("b", macB, "198.18.0.2")
	tpB := vhosttest.Start(t, pathB, "rxonly", vhosttest.Options{MAC: macB})
	tpA := vhosttest.Start(t, pathA, "txonly", vhosttest.Options{MAC: macA, EthPeer: macB})
	counters := func(id string) model.NICCounters {
		c, err := e.Counters(id)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return tpA, tpB, counters
}
