package e2e

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// TestQEMUMultiqueue: two QEMU guests with 4 queue pairs each (QEMU
// queues=4, mq=on) on a daemon with 2 workers. The guests enable the
// four pairs (ethtool -L, which QEMU turns into SET_VRING_ENABLE), then
// vm-1 sends 8 UDP flows to vm-2: none is lost, they leave vm-1 on
// several transmit queues and reach vm-2 on several receive queues, as
// both the daemon (nic counters, per queue) and the guest (ethtool -S)
// count; each queue's frames the daemon delivered to vm-2 are the frames
// vm-2's driver received on that queue.
func TestQEMUMultiqueue(t *testing.T) {
	l := newLab(t)
	needQEMU(t)
	h := l.SingleHost(labtest.IPv4)
	h.Start(labtest.DaemonOpts{Extra: []string{"--workers", "2"}})
	h.OpenSG("sg-open")
	specs := []struct{ id, addr string }{{"vm-1", "10.42.0.1/24"}, {"vm-2", "10.42.0.2/24"}}
	vms := make([]*qemuVM, len(specs))
	for i, s := range specs {
		mac := labtest.MACFor(i + 1)
		sock := addVhostNIC(h, s.id, mac, 42, s.addr, "sg-open")
		vms[i] = startVM(l, vmOpts{name: s.id, socket: sock, mac: mac, addr: s.addr, queues: 4})
	}
	waitVMs(t, vms...)
	vm1, vm2 := vms[0], vms[1]
	ip2 := vmIP(specs[1].addr)
	for _, v := range vms {
		out, err := v.Exec(20*time.Second, "ethtool -L eth0 combined 4 && ethtool -l eth0")
		if err != nil {
			t.Fatalf("%s: ethtool -L: %v\n%s", v.opts.name, err, out)
		}
		// Maximum and current settings: 4 combined channels both.
		if n := len(regexp.MustCompile(`(?m)^Combined:\s+4$`).FindAllString(out, -1)); n != 2 {
			t.Fatalf("%s: ethtool -l after -L combined 4:\n%s", v.opts.name, out)
		}
	}
	// QEMU answers the guest's VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET itself
	// and tells the daemon which rings to use with SET_VRING_ENABLE: at
	// boot (one vCPU, so one pair) rings 2 to 7 are off, after ethtool
	// all eight are on.
	enabled := func(sock string) (on [8]bool, seq []string) {
		b, err := os.ReadFile(h.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		re := regexp.MustCompile(`SET_VRING_ENABLE.*ring=(\d+) enabled=(true|false)`)
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.Contains(line, sock) {
				continue
			}
			if m := re.FindStringSubmatch(line); m != nil {
				if i, _ := strconv.Atoi(m[1]); i < len(on) {
					on[i] = m[2] == "true"
					seq = append(seq, m[1]+map[bool]string{true: "+", false: "-"}[on[i]])
				}
			}
		}
		return on, seq
	}
	for _, v := range vms {
		var seq []string
		err := labtest.Poll(5*time.Second, func() error {
			var on [8]bool
			if on, seq = enabled(v.opts.socket); on != [8]bool{true, true, true, true, true, true, true, true} {
				return fmt.Errorf("%s: rings enabled %v after SET_VRING_ENABLE %v, want all 8", v.opts.name, on, seq)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: SET_VRING_ENABLE (ring, + on, - off) in order: %s", v.opts.name, strings.Join(seq, " "))
	}
	vm1.Reaches(t, ip2)
	if _, err := vm2.Exec(10*time.Second, "iperf3 -s -D"); err != nil {
		t.Fatal(err)
	}
	var out string
	err := labtest.Poll(15*time.Second, func() error {
		var err error
		out, err = vm1.Exec(40*time.Second, "iperf3 -u -c "+ip2+" -P 8 -b 200K -l 256 -t 2 --connect-timeout 3000")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`\[SUM\].*\s(\d+)/(\d+) \([^)]*\)\s+receiver`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no UDP receiver summary in iperf3's output:\n%s", out)
	}
	if m[1] != "0" || m[2] == "0" {
		t.Fatalf("iperf3 UDP, 8 flows: %s of %s datagrams lost\n%s", m[1], m[2], out)
	}
	t.Logf("iperf3 UDP, 8 flows: %s datagrams, none lost", m[2])

	// Per-queue use, as the daemon counts it: vm-1's flows came in on
	// several of its transmit queues, vm-2's went out on several of its
	// receive queues.
	used := func(id, dir string) []uint64 {
		t.Helper()
		out := h.MustCLI("nic", "counters", id)
		var qs []uint64
		for _, m := range regexp.MustCompile(`(?m)^queue (\d+) `+dir+` packets: (\d+)$`).FindAllStringSubmatch(out, -1) {
			v, _ := strconv.ParseUint(m[2], 10, 64)
			qs = append(qs, v)
		}
		if len(qs) != 4 {
			t.Fatalf("nic counters %s: want 4 queue pairs:\n%s", id, out)
		}
		return qs
	}
	busy := func(qs []uint64) int {
		n := 0
		for _, v := range qs {
			if v > 0 {
				n++
			}
		}
		return n
	}
	rx1 := used("vm-1", "rx")
	if busy(rx1) < 2 {
		t.Errorf("8 flows came in on fewer than 2 of vm-1's queues: %v", rx1)
	}
	// vm-2: each queue's frames as the daemon delivered them are the
	// frames its driver received on that queue (ethtool -S), once the
	// last ones have landed.
	guestRx := func() ([]uint64, error) {
		st, err := vm2.Exec(10*time.Second, "ethtool -S eth0")
		if err != nil {
			return nil, err
		}
		var qs []uint64
		for _, m := range regexp.MustCompile(`(?m)^\s*rx_queue_(\d+)_packets: (\d+)$`).FindAllStringSubmatch(st, -1) {
			v, _ := strconv.ParseUint(m[2], 10, 64)
			qs = append(qs, v)
		}
		return qs, nil
	}
	var tx2, rx2 []uint64
	err = labtest.Poll(10*time.Second, func() error {
		var err error
		if rx2, err = guestRx(); err != nil {
			return err
		}
		if tx2 = used("vm-2", "tx"); !slices.Equal(tx2, rx2) {
			return fmt.Errorf("vm-2: daemon delivered %v frames per queue, the driver received %v", tx2, rx2)
		}
		return nil
	})
	t.Logf("vm-1: frames in per queue %v; vm-2: frames out per queue %v, received by its driver %v", rx1, tx2, rx2)
	if err != nil {
		logCounters(h, t, "vm-1", "vm-2")
		t.Fatal(err)
	}
	if busy(tx2) < 2 {
		t.Errorf("8 flows went out on fewer than 2 of vm-2's queues: %v", tx2)
	}
	vhostLogClean(h, t)
}
