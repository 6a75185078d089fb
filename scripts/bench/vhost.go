package main

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/labtest"
)

// The vhost section: VM to VM through vhost-user, Butterfly against DPDK's
// own vhost back end (the C reference), in one run, each back end on one
// core of the two:
//
//	endpoint  one dpdk-testpmd plays both VMs: virtio_user port 0 is VM A (socket A), port 1 VM B
//	          (socket B); forwarding lcore on CPU 0.
//	bf        butterflyd --workers 1, its packet worker pinned to CPU 1 (-u 1) and its other threads
//	          on CPU 0 (as DPDK's main lcore and control threads); two VHOST_USER_SERVER vNICs on
//	          VNI 42 (A 198.18.0.1, B 198.18.0.2) in an all-open security group: anti-spoofing,
//	          stateful firewall and learning switch as in production (-daemon-args applies).
//	dpdk      dpdk-testpmd with two net_vhost ports and io forwarding between them, forwarding lcore
//	          on CPU 1: DPDK's vhost library, no switching, no filtering.
//	bfx       as bf with both vNICs --bypass-filtering: switching only, like the reference.
//	dpdk-packed, bf-packed, bfx-packed
//	          as dpdk, bf and bfx with the endpoint's virtio_user ports on packed virtqueues
//	          (packed_vq=1): packed against split rings on each back end; bfx-packed runs only
//	          when named in -vhost-backends.
//	dpdk-mq, bf-mq1, bf-mq2, bfx-mq2
//	          multiqueue, run only when named in -vhost-backends: the endpoint's ports have 2 queue
//	          pairs each (queues=2, --rxq=2 --txq=2, still one forwarding lcore on CPU 0); dpdk-mq is
//	          dpdk with queues=2 on its one lcore; bf-mq1 is bf (one worker, CPU 1); bf-mq2 is bf with
//	          --workers 2 pinned to CPUs 0 and 1, so that its second worker shares CPU 0 with the
//	          endpoint (the machine has two); bfx-mq2 is bf-mq2 bypassing filtering (the second
//	          worker then switches what it reads instead of handing it to the vNIC's home worker).
//
// The endpoint runs testpmd's 5tswap mode on each port (it swaps MACs, IPs
// and UDP ports and sends the frame back out of the port it came in on),
// primed with "start tx_first N" (N bursts per port of testpmd's UDP
// 198.18.0.1:9 -> 198.18.0.2:9, A's to B's MAC and B's to A's). A frame
// from A crosses the back end to B, comes back as B's reply to A, and so
// on: one UDP flow answered both ways, which the firewall admits and the
// switch learns. B's primed frames claim A's address, so bf's firewall
// drops them; bfx and DPDK forward them. Frames in flight = primed - lost,
// where lost = what the back end received and did not deliver, read once
// the endpoint stopped.
//
// The rate is the sum of both ports' Rx-pps from the endpoint's "show port
// stats all" over -vhost-seconds after -vhost-warm seconds: what the back
// end delivers. Cases: 64 (64-byte frames, 8 bursts of 32 per port primed:
// packets per second), 1500 (1500-byte frames, likewise: Gbit/s), lat
// (64-byte frames, --burst=1, one burst: one or two frames in flight, so
// in-flight / Rx-pps is the time of one crossing, back end plus the
// endpoint's turnaround, with both sides busy-polling) and lat1 (lat with
// only A primed: one frame in flight on every back end). Without hugepages.
//
// Each case first measures how long a cache line takes to go from CPU 0
// to CPU 1 and back (coreRoundTrip) and reports it: the host moves this
// machine's two vCPUs between cores that share a cache (about 110 to 160
// ns) and cores that do not (about 450 ns), and every rate here follows
// it. Compare figures measured with the same round trip.
// Results: RESULT lines and OUT/vhost.md.
func (b *bench) vhost() {
	if _, err := exec.LookPath("dpdk-testpmd"); err != nil {
		b.say("RESULT vhost | dpdk-testpmd missing (apt-get install dpdk)")
		return
	}
	c := b.cfg
	for r := 1; r <= c.vhRounds; r++ {
		// each case on every back end back to back, so that all see the same machine load
		for _, cs := range vhCases {
			if !slices.Contains(c.vhCases, cs.name) {
				continue
			}
			for _, be := range c.vhBackends {
				b.vhCase(fmt.Sprintf("vh-%s-%s-%d", be, cs.name, r), be, cs)
			}
		}
	}
	var sb strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&sb, format+"\n", args...) }
	p("vhost-user, %s, %d CPUs; back end on CPU 1, endpoint testpmd (5tswap) on CPU 0;", nowUTC(), numCPU())
	p("%d s per case after %d s; no hugepages. Shared machine: compare within a row only.", c.vhSecs, c.vhWarm)
	p("")
	b.vhTable(p, "dpdk", []string{"bf", "bfx"}, "DPDK vhost (testpmd io)", []string{"Butterfly, firewall on", "Butterfly, bypass filtering"})
	p("")
	p("lat: microseconds per crossing of the back end (plus the endpoint's turnaround), lower is better;")
	p("one frame primed per port (bf's firewall drops B's: one in flight there, two on the others).")
	p("lat1: the same with only port A primed, one frame in flight on every back end.")
	p("CPU: nanoseconds of the back end's CPU time (/proc/PID/stat, all threads) per frame it delivered")
	p("in the measured window (a busy-polling back end spends its whole core whatever the rate).")
	p("")
	p("Packed virtqueues (the endpoint's virtio_user ports with packed_vq=1) against split ones, per back end:")
	p("")
	b.vhTable(p, "dpdk", []string{"dpdk-packed"}, "DPDK split", []string{"DPDK packed"})
	p("")
	b.vhTable(p, "bf", []string{"bf-packed"}, "Butterfly split", []string{"Butterfly packed"})
	if slices.Contains(c.vhBackends, "bfx-packed") {
		p("")
		b.vhTable(p, "dpdk-packed", []string{"bfx-packed"}, "DPDK packed", []string{"Butterfly packed, bypass filtering"})
	}
	if slices.ContainsFunc(c.vhBackends, func(be string) bool { return strings.Contains(be, "-mq") }) {
		p("")
		p("Multiqueue: the endpoint's ports with 2 queue pairs (one UDP flow each way, primed on both queues;")
		p("the back ends read both pairs and steer towards a guest by flow hash, so one queue of each port")
		p("carries the replies). Butterfly with 2 workers shares CPU 0 with the endpoint: on a 2-CPU machine")
		p("this measures the spreading of the queues, not a third core.")
		p("")
		b.vhTable(p, "dpdk", []string{"dpdk-mq"}, "DPDK 1 pair", []string{"DPDK 2 pairs"})
		p("")
		b.vhTable(p, "bf", []string{"bf-mq1", "bf-mq2", "bfx-mq2"}, "Butterfly 1 pair, 1 worker",
			[]string{"2 pairs, 1 worker", "2 pairs, 2 workers", "2 pairs, 2 workers, bypass"})
	}
	writeReport(b, "vhost", sb.String())
}

// vhAllBackends are the back ends the vhost section knows (see vhost);
// vhDefaultBackends those it runs unless -vhost-backends names others.
var (
	vhAllBackends     = append(slices.Clone(vhDefaultBackends), "bfx-packed", "dpdk-mq", "bf-mq1", "bf-mq2", "bfx-mq2")
	vhDefaultBackends = []string{"dpdk", "bf", "bfx", "dpdk-packed", "bf-packed"}
)

// vhQueues returns the queue pairs of the endpoint's ports and the
// back end's workers for back end be.
func vhQueues(be string) (queues, workers int) {
	switch {
	case strings.HasSuffix(be, "-mq2"):
		return 2, 2
	case strings.Contains(be, "-mq"):
		return 2, 1
	}
	return 1, 1
}

// vhCases are the vhost section's cases: frame length, burst size and
// bursts primed per port.
var vhCases = []vhCaseT{
	{name: "64", len: 64, burst: 32, bursts: 8},
	{name: "1500", len: 1500, burst: 32, bursts: 8},
	{name: "lat", len: 64, burst: 1, bursts: 1},
	{name: "lat1", len: 64, burst: 1, bursts: 1, onePort: true},
}

// vhCaseT is a case of the vhost section.
type vhCaseT struct {
	name               string
	len, burst, bursts int
	// onePort: only port A is primed, so that every back end has the
	// same frames in flight (lat primes both ports, and bf's firewall
	// drops B's frame: one in flight there, two for bfx and DPDK).
	onePort bool
}

// vhTable prints one table comparing back ends others with ref: a row per
// case and round with each one's figure, its ratio to ref's and the CPU
// time per frame, then a row per case with the medians over the rounds
// (of the figures and of the per-round ratios). Back ends not run show
// n/a.
func (b *bench) vhTable(p func(string, ...any), ref string, others []string, refName string, names []string) {
	rs := b.r
	rounds := b.cfg.vhRounds
	head := "| case | " + refName + " | CPU ns/frame"
	line := "|---|---|---"
	for _, n := range names {
		head += " | " + n + " | ratio | CPU ns/frame"
		line += "|---|---|---"
	}
	p("%s | load | CPU 0-1 round trip (ns) |", head)
	p("%s|---|---|", line)
	type series struct{ v, ratio, cpu []float64 }
	for _, row := range []struct {
		c, unit, key string
		div          float64
	}{{"64", "Mpps", "pps", 1e6}, {"1500", "Gbit/s", "bps", 1e9}, {"lat", "us", "hop", 1}, {"lat1", "us", "hop", 1}} {
		val := func(be, field string, r int) float64 {
			f, err := strconv.ParseFloat(rs[fmt.Sprintf("vh-%s-%s-%d.%s", be, row.c, r, field)], 64)
			if err != nil || f <= 0 {
				return 0
			}
			return f
		}
		all := make([]series, len(others)+1)
		for r := 1; r <= rounds; r++ {
			vr := val(ref, row.key, r) / row.div
			cells := fmt.Sprintf("| %s: %s (round %d) | %s | %s", row.c, row.unit, r, fnum(vr), fcpu(val(ref, "cpuns", r)))
			all[0].v = append(all[0].v, vr)
			all[0].cpu = append(all[0].cpu, val(ref, "cpuns", r))
			loads := rs.get(fmt.Sprintf("vh-%s-%s-%d.load", ref, row.c, r))
			c2c := rs.get(fmt.Sprintf("vh-%s-%s-%d.c2c", ref, row.c, r))
			for i, o := range others {
				vo := val(o, row.key, r) / row.div
				q := 0.0
				if vo > 0 && vr > 0 {
					q = vo / vr
				}
				s := &all[i+1]
				s.v, s.ratio, s.cpu = append(s.v, vo), append(s.ratio, q), append(s.cpu, val(o, "cpuns", r))
				cells += fmt.Sprintf(" | %s | %s | %s", fnum(vo), fnum(q), fcpu(val(o, "cpuns", r)))
				loads += " / " + rs.get(fmt.Sprintf("vh-%s-%s-%d.load", o, row.c, r))
				c2c += " / " + rs.get(fmt.Sprintf("vh-%s-%s-%d.c2c", o, row.c, r))
			}
			p("%s | %s | %s |", cells, loads, c2c)
		}
		cells := fmt.Sprintf("| **%s: %s, median of %d** | %s | %s", row.c, row.unit, rounds, fnum(positiveMedian(all[0].v)), fcpu(positiveMedian(all[0].cpu)))
		for _, s := range all[1:] {
			cells += fmt.Sprintf(" | %s | **%s** | %s", fnum(positiveMedian(s.v)), fnum(positiveMedian(s.ratio)), fcpu(positiveMedian(s.cpu)))
		}
		p("%s | | |", cells)
	}
}

// fnum prints a positive figure with two decimals, or n/a.
func fnum(x float64) string {
	if x <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", x)
}

// fcpu prints a positive CPU time in whole nanoseconds, or n/a.
func fcpu(x float64) string {
	if x <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f", x)
}

// positiveMedian is the median of the positive values of xs (0 if none).
func positiveMedian(xs []float64) float64 {
	var s []float64
	for _, x := range xs {
		if x > 0 {
			s = append(s, x)
		}
	}
	if len(s) == 0 {
		return 0
	}
	slices.Sort(s)
	return median(s)
}

// vhPprofAddr is where butterflyd serves its profiles with -vhost-pprof,
// on its namespace's loopback.
const vhPprofAddr = "127.0.0.1:9499"

const (
	vhMA = "52:54:00:00:00:1a"
	vhMB = "52:54:00:00:00:1b"
)

// vhBackend is a started back end: its two sockets and how to count what
// it lost.
type vhBackend struct {
	sockA, sockB string
	pid          int    // the back end's process, for its CPU time
	ns           string // butterflyd's namespace, whose loopback serves its profiles (-vhost-pprof)
	lost         func() (uint64, error)
}

// startBackend starts back end be (bf, bfx or dpdk; the -packed ones
// are these with packed rings, which only the endpoint asks for).
func (b *bench) startBackend(t *caseT, l *labtest.Lab, be string) vhBackend {
	var v vhBackend
	queues, workers := vhQueues(be)
	be = strings.TrimSuffix(be, "-packed")
	be = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(be, "-mq"), "-mq1"), "-mq2")
	switch be {
	case "bf", "bfx":
		h := l.SingleHost(labtest.IPv4)
		args := []string{"--workers", "1", "--graph-cpu-core", "1"}
		if workers > 1 {
			// worker 0 on CPU 0 (with the endpoint), worker 1 on CPU 1
			args = []string{"--workers", "2", "--graph-cpu-core", "0,1"}
		}
		if b.cfg.vhPprof != "" {
			args = append(args, "--metrics", vhPprofAddr)
			v.ns = h.NS
		}
		b.startDaemon(h, "vhost-"+be, args...)
		h.OpenSG("sg-open")
		// As DPDK's back end: the packet worker alone on CPU 1 (pinned
		// by butterflyd), every other thread (Go runtime, API, vhost-user
		// control) on CPU 0, where DPDK's main lcore and its control
		// threads run.
		pinHousekeeping(t, h.PID(), 1, 0)
		add := func(id, mac, ip string) string {
			args := []string{"nic", "add", "--id", id, "--mac", mac, "--vni", "42", "--ip", ip, "--sg", "sg-open", "--type", "VHOST_USER_SERVER"}
			if be == "bfx" {
				args = append(args, "--bypass-filtering")
			}
			return labtest.LastLine(h.MustCLI(args...))
		}
		v.sockA, v.sockB = add("vh-a", vhMA, "198.18.0.1"), add("vh-b", vhMB, "198.18.0.2")
		api := h.API()
		v.pid = h.PID()
		v.lost = func() (uint64, error) {
			// frames received from the two VMs and not delivered to either
			// (flood copies towards the underlay at start-up are neither)
			var rx, tx uint64
			for _, id := range []string{"vh-a", "vh-b"} {
				r, err := api.Call(&protocol.MessageV0_Request{NicCounters: proto.String(id)})
				if err != nil {
					return 0, err
				}
				rx += r.GetNicCounters().GetRxPackets()
				tx += r.GetNicCounters().GetTxPackets()
			}
			if rx > tx {
				return rx - tx, nil
			}
			return 0, nil
		}
	case "dpdk":
		v.sockA, v.sockB = l.Dir+"/dpdk-a.sock", l.Dir+"/dpdk-b.sock"
		log := b.cfg.out + "/vhost-dpdk.log"
		q := strconv.Itoa(queues)
		tp, err := l.StartTestpmd("dpdk", "0@0,1@1", log,
			"--vdev", "net_vhost0,iface="+v.sockA+",queues="+q, "--vdev", "net_vhost1,iface="+v.sockB+",queues="+q,
			"--", "-i", "--nb-cores=1", "--forward-mode=io", "--port-topology=paired", "--total-num-mbufs=32768",
			"--rxq="+q, "--txq="+q)
		if err != nil {
			t.Fatal(err)
		}
		if err := tp.Command("start"); err != nil {
			t.Fatal(err)
		}
		v.pid = tp.PID()
		v.lost = func() (uint64, error) {
			n := strings.Count(tp.Output(), "Rx-pps")
			if err := tp.Command("show port stats all"); err != nil {
				return 0, err
			}
			if err := tp.WaitCount("Rx-pps", n+2, 10*time.Second); err != nil {
				return 0, err
			}
			st := portStats(tp.Output())
			if st.rx > st.tx {
				return st.rx - st.tx, nil
			}
			return 0, nil
		}
	}
	labtest.Eventually(t, 5*time.Second, "vhost-user sockets", func() error {
		for _, s := range []string{v.sockA, v.sockB} {
			if fi, err := os.Stat(s); err != nil || fi.Mode()&os.ModeSocket == 0 {
				return fmt.Errorf("%s: not a socket (%v)", s, err)
			}
		}
		return nil
	})
	return v
}

// pinHousekeeping moves every thread of process pid that is not pinned
// to CPU worker alone onto CPU cpu. butterflyd's workers (-u) pin their
// own threads; threads the Go runtime starts later are cloned by a thread
// that is not a worker, so they stay off the worker's CPU.
func pinHousekeeping(t *caseT, pid, worker, cpu int) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	var set, mine unix.CPUSet
	mine.Set(worker)
	set.Set(cpu)
	pinned := 0
	for _, task := range tasks {
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			continue
		}
		var cur unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &cur); err != nil {
			continue // the thread exited
		}
		if cur == mine {
			pinned++
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil {
			t.Logf("thread %d of %d: %v", tid, pid, err)
		}
	}
	if pinned == 0 {
		t.Fatalf("no thread of %d pinned to CPU %d", pid, worker)
	}
}

// stats are the sums over the two ports of testpmd's last "show port
// stats all".
type stats struct{ pps, bps, rx, tx uint64 }

// portStats reads the last two ports' blocks of testpmd's output.
func portStats(out string) stats {
	var rx, tx, pps, bps [2]uint64
	n := 0
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		num := func(i int) uint64 {
			if i >= len(f) {
				return 0
			}
			v, _ := strconv.ParseUint(f[i], 10, 64)
			return v
		}
		switch f[0] {
		case "RX-packets:":
			rx[n%2] = num(1)
		case "TX-packets:":
			tx[n%2] = num(1)
		case "Rx-pps:":
			pps[n%2], bps[n%2] = num(1), num(3)
			n++
		}
	}
	return stats{pps: pps[0] + pps[1], bps: bps[0] + bps[1], rx: rx[0] + rx[1], tx: tx[0] + tx[1]}
}

// vhCase is one measurement; it sets L.pps, L.bps, L.fly, L.hop.
func (b *bench) vhCase(L, be string, cs vhCaseT) {
	c := b.cfg
	s0 := stealSnap()
	queues, _ := vhQueues(be)
	length, burst := cs.len, cs.burst
	primed := uint64(2 * queues * burst * cs.bursts) // tx_first primes every queue of both ports
	if cs.onePort {
		primed /= 2
	}
	r := b.r
	r[L+".pps"], r[L+".bps"], r[L+".fly"], r[L+".hop"], r[L+".cpuns"], r[L+".c2c"] = "0", "0", "0", "n/a", "n/a", "n/a"
	// Where the host put the two vCPUs, before anything busy-polls.
	if rt, err := coreRoundTrip(0, 1, 100000); err == nil {
		r[L+".c2c"] = strconv.FormatInt(rt.Nanoseconds(), 10)
	}
	started := false
	ok := b.cases.run(L, func(t *caseT) {
		l := b.newLab(t)
		v := b.startBackend(t, l, be)
		started = true
		log := c.out + "/vhost-ep.log"
		packed := ""
		if strings.HasSuffix(be, "-packed") {
			packed = ",packed_vq=1"
		}
		args := []string{
			"--vdev", fmt.Sprintf("virtio_user0,path=%s,queues=%d,queue_size=1024,mac=%s%s", v.sockA, queues, vhMA, packed),
			"--vdev", fmt.Sprintf("virtio_user1,path=%s,queues=%d,queue_size=1024,mac=%s%s", v.sockB, queues, vhMB, packed),
			"--", "-i", "--nb-cores=1", "--forward-mode=5tswap", "--port-topology=loop", "--eth-peer=0," + vhMB, "--eth-peer=1," + vhMA,
			"--txpkts=" + strconv.Itoa(length), "--burst=" + strconv.Itoa(burst), "--total-num-mbufs=32768",
			fmt.Sprintf("--rxq=%d", queues), fmt.Sprintf("--txq=%d", queues)}
		if cs.onePort {
			args = append(args, "--no-flush-rx")
		}
		ep, err := l.StartTestpmd("ep", "0@1,1@0", log, args...)
		if err != nil {
			t.Fatal(err)
		}
		must := func(err error) {
			if err != nil {
				t.Fatal(err)
			}
		}
		if cs.onePort {
			// Forward port A alone while priming: its frames cross to
			// B's receive ring and wait there (--no-flush-rx keeps them
			// when forwarding starts again) until both ports forward.
			must(ep.Command("set nbport 1"))
			must(ep.Command(fmt.Sprintf("start tx_first %d", cs.bursts)))
			must(ep.Command("stop"))
			must(ep.Command("set nbport 2"))
			must(ep.Command("start"))
		} else {
			must(ep.Command(fmt.Sprintf("start tx_first %d", cs.bursts)))
		}
		time.Sleep(time.Duration(c.vhWarm) * time.Second)
		must(ep.Command("show port stats all"))
		must(ep.WaitCount("Rx-pps", 2, 10*time.Second))
		rx0 := portStats(ep.Output()).rx
		cpu0, cpuErr := cpuTicks(v.pid)
		prof := make(chan error, 1)
		if v.ns != "" {
			go func() {
				_, err := runFor(time.Duration(c.vhSecs+20)*time.Second, "ip", "netns", "exec", v.ns, "curl", "-sSf", "-o",
					fmt.Sprintf("%s/%s.pprof", c.vhPprof, L), fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", vhPprofAddr, c.vhSecs))
				prof <- err
			}()
		} else {
			prof <- nil
		}
		time.Sleep(time.Duration(c.vhSecs) * time.Second)
		must(ep.Command("show port stats all"))
		must(ep.WaitCount("Rx-pps", 4, 10*time.Second))
		cpu1, cpuErr1 := cpuTicks(v.pid)
		st := portStats(ep.Output())
		if err := <-prof; err != nil {
			t.Logf("profile: %v", err)
		}
		if cpuErr == nil && cpuErr1 == nil && st.rx > rx0 {
			// CPU time of the back end per frame it delivered in the window
			r[L+".cpuns"] = fmt.Sprintf("%.0f", float64(cpu1-cpu0)*1e9/clockTicks/float64(st.rx-rx0))
		}
		must(ep.Command("stop")) // the frames settle in the endpoint's rings before the back end is asked
		time.Sleep(time.Second)
		_ = os.WriteFile(c.out+"/vhost-ep-"+L+".log", []byte(ep.Output()), 0o644)
		lost, err := v.lost()
		if err != nil {
			t.Logf("lost frames: %v", err)
		}
		fly := primed - min(lost, primed)
		// testpmd's Rx-bps stops at 2^31: bits from the packet rate (frames without FCS, as testpmd counts)
		r[L+".pps"], r[L+".bps"], r[L+".fly"] = strconv.FormatUint(st.pps, 10), strconv.FormatUint(st.pps*uint64(length)*8, 10), strconv.FormatUint(fly, 10)
		if st.pps > 0 && fly > 0 {
			r[L+".hop"] = fmt.Sprintf("%.2f", 1e6*float64(fly)/float64(st.pps))
		}
		if strings.HasPrefix(be, "dpdk") {
			if b, err := os.ReadFile(c.out + "/vhost-dpdk.log"); err == nil {
				_ = os.WriteFile(c.out+"/vhost-dpdk-"+L+".log", b, 0o644)
			}
		}
	})
	r[L+".steal"], r[L+".load"] = stealSince(s0), load1()
	if !ok && !started {
		b.say("RESULT %s | back end %s did not start", L, be)
		return
	}
	pps, _ := strconv.ParseFloat(r[L+".pps"], 64)
	bps, _ := strconv.ParseFloat(r[L+".bps"], 64)
	b.say("RESULT %s | Rx %.0f pps, %.3f Gbit/s, %s of %d primed frames in flight, %s us per crossing, %s ns CPU per frame | steal %s%% load %s, CPU 0-1 round trip %s ns",
		L, pps, bps/1e9, r[L+".fly"], primed, r[L+".hop"], r.get(L+".cpuns"), r[L+".steal"], r[L+".load"], r.get(L+".c2c"))
}
