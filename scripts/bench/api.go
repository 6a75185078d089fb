package main

import (
	"bufio"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/labtest"
	"github.com/butterfly-go/butterfly/internal/port/vhostuser/vhosttest"
)

// The api section: how fast one butterflyd applies a large configuration
// through its API, and what it costs in memory, threads and fds. Run twice,
// with the state file (persisted after every change, as in production)
// and without one (labels "-no-state-file"), each on a fresh daemon started
// with --metrics, in this order:
//
//	api-mem-fresh       the fresh daemon's Go heap in use (go_memstats_heap_inuse_bytes),
//	                    RSS and threads (/proc/PID/status), fds (/proc/PID/fd)
//	api-nic-add         -api-nics vNICs of -api-nic-type, one request each, spread over
//	                    -api-groups groups; the mean request time of the first and last 10 %
//	api-first-frame     nic_add of a TAP vNIC while a VM sends to it 10,000 frames/s: time from
//	                    the request to the reply and to the first frame the daemon delivers
//	                    to the new vNIC (its tx counter, read back to back: resolution
//	                    one API round trip and the pinger's 0.1 ms)
//	api-sg-rules        -api-groups x -api-rules sg_rule_add, each group used by
//	                    api-nics / api-groups vNICs, the VM paused; the daemon's mean
//	                    time per request (its butterfly_api_request_seconds) and, of
//	                    it, the wait for the workers (butterfly_engine_worker_wait_seconds)
//	api-round-trip      as many sg_member_list requests (a read of an empty list) as
//	                    api-sg-rules sent: the time the API's transport and envelope
//	                    take alone, the floor under api-sg-rules in the same run
//	api-sg-rules-traffic the same rules deleted (sg_rule_del), then added again, one
//	                    request each, while the VM sends again; with the frames per
//	                    second the probe got meanwhile
//	api-round-trip-traffic api-round-trip while the VM sends
//	api-restart         (persisted only) SIGTERM (its exit time reported), then a new daemon on the same state file:
//	                    time to its API answering, to every vNIC listed, and to a frame
//	                    forwarded to the probe vNIC again (including re-plugging the
//	                    probe VM's TAP, which the new daemon recreates)
//	api-delete          every vNIC and group deleted, one request each, and the time until
//	                    their TAP devices are gone (the daemon removes them in the
//	                    background); the heap is
//	                    compared with the fresh daemon's (the daemon offers no way to
//	                    force a GC, so it is the heap as the runtime left it)
//	api-nic-add-vhost   -api-nics VHOST_USER_SERVER vNICs in group sg-all (the first 10
//	                    also in sg-ten), no front end connected; threads and fds per vNIC
//	api-vhost-connected a front end (vhosttest.FrontEnd: what QEMU does to start a
//	                    virtio-net device, one queue pair) dialed to -api-vhost-connected
//	                    (default half) of those vNICs, spread evenly, one after the other:
//	                    time, threads (also the most seen after any connect) and fds
//	                    beyond the idle vNICs
//	api-vhost-disconnected the front ends closed: time until the daemon's fds are back
//	                    to the idle figure (polled, 30 s at most), threads, heap after a
//	                    GC against idle's (taken after a GC before the connects)
//	api-sg-rule-latency -api-latency-samples sg_rule_add each on sg-ten (10 vNICs) and on
//	                    sg-all (every vNIC), no front end connected: p50 and p99
//	api-stop            SIGTERM to the daemon's exit (killed after a minute)
//
// Every line also goes to OUT/apibench.txt, which results.md quotes.
func (b *bench) api() {
	f, err := os.Create(b.cfg.out + "/apibench.txt")
	if err != nil {
		b.say("RESULT api | %v", err)
		return
	}
	defer f.Close()
	for _, mode := range []struct {
		name, label string
		extra       []string
	}{{"persisted", "", nil}, {"volatile", "-no-state-file", []string{"--state-file", ""}}} {
		s0 := stealSnap()
		a := &apiRun{b: b, out: f, label: mode.label, persisted: mode.extra == nil}
		if !b.cases.run("api"+mode.label, func(t *caseT) { a.run(t, mode.extra) }) && !a.stopped.Load() {
			a.say("RESULT api%s | failed in phase %s (see the log above)", mode.label, a.phase.Load())
		}
		b.say("     (%s: steal %s%% load %s)", mode.name, stealSince(s0), load1())
	}
}

// apiRun is one run of the api section on one daemon.
type apiRun struct {
	b         *bench
	out       *os.File
	label     string
	persisted bool
	phase     atomic.Value // string: the phase running
	stopped   atomic.Bool  // by watchdog

	t        *caseT
	h        *labtest.Host
	memLimit float64 // see watchdog
	api      *labtest.API
	fresh    memStat
	// The pinger sends nothing while pingOff is set (pausePing); pingOn
	// wakes it (resumePing).
	pingOff atomic.Bool
	pingOn  chan struct{}
}

func (a *apiRun) pausePing() { a.pingOff.Store(true) }

func (a *apiRun) resumePing() {
	a.pingOff.Store(false)
	select {
	case a.pingOn <- struct{}{}:
	default:
	}
}

func (a *apiRun) say(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	a.b.say("%s", line)
	fmt.Fprintln(a.out, line)
}

// metricsAddr is where each api daemon serves Prometheus metrics (in its
// own namespace).
const metricsAddr = "127.0.0.1:9100"

// memStat is what the daemon holds.
type memStat struct {
	heap, rss    float64 // bytes
	threads, fds int
	heapErr      error
}

// String prints the figures as the RESULT lines show them.
func (m memStat) String() string {
	heap := fmt.Sprintf("heap %.1f MB", m.heap/1e6)
	if m.heapErr != nil {
		heap = "heap ? (" + m.heapErr.Error() + ")"
	}
	return fmt.Sprintf("%s, RSS %.1f MB, %d threads, %d fds", heap, m.rss/1e6, m.threads, m.fds)
}

// mem reads the daemon's heap in use (from its metrics), RSS and threads
// (/proc/PID/status) and open fds (/proc/PID/fd).
// memAfterGC is mem after the daemon collected its garbage (its
// /debug/pprof/heap?gc=1 on the metrics listener), so that the heap figure
// is the live heap.
func (a *apiRun) memAfterGC() memStat {
	if _, err := labtest.Run("ip", "netns", "exec", a.h.NS, "curl", "-sS", "-o", "/dev/null", "--max-time", "30", "http://"+metricsAddr+"/debug/pprof/heap?gc=1"); err != nil {
		a.t.Fatalf("forcing a GC in the daemon: %v", err)
	}
	return a.mem()
}

// metrics fetches the daemon's metrics page.
func (a *apiRun) metrics() (string, error) {
	return labtest.Run("ip", "netns", "exec", a.h.NS, "curl", "-sS", "--max-time", "10", "http://"+metricsAddr+"/metrics")
}

// metricIn reads the value of metric name (with its labels, as the page
// writes them) from a metrics page.
func metricIn(page, name string) (float64, error) {
	for _, l := range strings.Split(page, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no metric %s", name)
}

// reqTimes is what the daemon's metrics say of one kind of request.
type reqTimes struct {
	n, secs float64 // answered, and the time taken (butterfly_api_request_seconds)
	wait    float64 // seconds all changes waited for the workers (waitMetric)
}

const waitMetric = "butterfly_engine_worker_wait_seconds"

// requestTimes reads reqTimes for requests of kind from one metrics page
// (a histogram not there yet counts as zero).
func (a *apiRun) requestTimes(kind string) reqTimes {
	page, err := a.metrics()
	if err != nil {
		a.t.Fatalf("%s: %v", a.phase.Load(), err)
	}
	sum := func(name string) float64 {
		v, _ := metricIn(page, name)
		return v
	}
	l := `{request="` + kind + `"}`
	return reqTimes{
		n:    sum("butterfly_api_request_seconds_count" + l),
		secs: sum("butterfly_api_request_seconds_sum" + l),
		wait: sum(waitMetric + "_sum"),
	}
}

func (a *apiRun) mem() memStat {
	var m memStat
	pid := a.h.PID()
	page, err := a.metrics()
	m.heapErr = err
	if err == nil {
		m.heap, m.heapErr = metricIn(page, "go_memstats_heap_inuse_bytes")
	}
	if f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 2 {
				continue
			}
			switch fs[0] {
			case "VmRSS:":
				kb, _ := strconv.ParseFloat(fs[1], 64)
				m.rss = kb * 1024
			case "Threads:":
				m.threads, _ = strconv.Atoi(fs[1])
			}
		}
		f.Close()
	}
	m.fds = fdsOf(pid)
	return m
}

// fdsOf is the number of fds process pid has open (0 if unknown).
func fdsOf(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0
	}
	return len(ents)
}

// threadsOf is process pid's OS thread count (0 if unknown).
func threadsOf(pid int) int {
	for _, l := range readLines(fmt.Sprintf("/proc/%d/status", pid)) {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// fdLimit is process pid's soft limit on open fds (/proc/PID/limits;
// 0 if unknown).
func fdLimit(pid int) int {
	for _, l := range readLines(fmt.Sprintf("/proc/%d/limits", pid)) {
		if v, ok := strings.CutPrefix(l, "Max open files"); ok {
			if fs := strings.Fields(v); len(fs) > 0 {
				n, _ := strconv.Atoi(fs[0])
				return n
			}
		}
	}
	return 0
}

// watchdog kills the daemon (SIGKILL to its PID) once its RSS passes
// a.memLimit: the daemon's memory grows with the vNIC count (and today
// with their product with the rules), and the machine is shared. It runs
// until the case ends.
func (a *apiRun) watchdog() {
	done := make(chan struct{})
	a.t.Cleanup(func() { close(done) })
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			pid := a.h.PID()
			if pid == 0 {
				continue
			}
			if rss := rssOf(pid); rss > a.memLimit {
				a.stopped.Store(true)
				_ = syscall.Kill(pid, syscall.SIGKILL)
				a.say("RESULT api%s | stopped in phase %s: butterflyd's RSS %.1f GB passed half of the memory available at the start (%.1f GB); daemon killed",
					a.label, a.phase.Load(), rss/1e9, 2*a.memLimit/1e9)
				return
			}
		}
	}()
}

// rssOf is VmRSS of process pid in bytes (0 if unknown).
func rssOf(pid int) float64 {
	for _, l := range readLines(fmt.Sprintf("/proc/%d/status", pid)) {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb * 1024
		}
	}
	return 0
}

// memAvailable is MemAvailable from /proc/meminfo, in bytes (0 if unknown).
func memAvailable() float64 {
	for _, l := range readLines("/proc/meminfo") {
		if v, ok := strings.CutPrefix(l, "MemAvailable:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb * 1024
		}
	}
	return 0
}

func (a *apiRun) call(req *protocol.MessageV0_Request) *protocol.MessageV0_Response {
	r, err := a.api.Call(req)
	if err != nil {
		a.t.Fatalf("%s: %v", a.phase.Load(), err)
	}
	return r
}

// addNICs sends one nic_add per vNIC i in [0, n): id PREFIX-i, MAC and
// address from i and base, VNI 1000 + i%100, groups sgs(i). It returns the
// total time and the mean time of the first and of the last 10 % of the
// requests.
func (a *apiRun) addNICs(prefix string, base, n int, typ string, sgs func(i int) []string) (total, first, last time.Duration) {
	tv := protocol.MessageV0_Nic_Type(protocol.MessageV0_Nic_Type_value[typ])
	tenth := max(1, n/10)
	start := time.Now()
	var firstEnd, lastStart time.Time
	for i := range n {
		if i == n-tenth {
			lastStart = time.Now()
		}
		k := base + i + 1 // address 10.a.b.c from k: never .256
		a.call(&protocol.MessageV0_Request{NicAdd: &protocol.MessageV0_Nic{
			Id:            proto.String(fmt.Sprintf("%s-%d", prefix, i)),
			Mac:           proto.String(labtest.MACFor(base + i)),
			Vni:           proto.Uint32(uint32(1000 + i%100)),
			Ip:            []string{fmt.Sprintf("10.%d.%d.%d", k>>16&0xff, k>>8&0xff, k&0xff)},
			SecurityGroup: sgs(i),
			Type:          tv.Enum(),
		}})
		if i == tenth-1 {
			firstEnd = time.Now()
		}
	}
	end := time.Now()
	return end.Sub(start), firstEnd.Sub(start) / time.Duration(tenth), end.Sub(lastStart) / time.Duration(tenth)
}

// ruleAdd is the r-th inbound TCP rule for group sg (port 1000+r from
// 10.G.0.0/16).
func ruleAdd(sg string, g, r int) *protocol.MessageV0_Request {
	return &protocol.MessageV0_Request{SgRuleAdd: &protocol.MessageV0_SgRuleAddReq{
		SgId: proto.String(sg),
		Rule: &protocol.MessageV0_Rule{
			Direction: protocol.MessageV0_Rule_INBOUND.Enum(),
			Protocol:  proto.Int32(6),
			PortStart: proto.Uint32(uint32(1000 + r)),
			PortEnd:   proto.Uint32(uint32(1000 + r)),
			Cidr:      &protocol.MessageV0_Cidr{Address: proto.String(fmt.Sprintf("10.%d.0.0", g%256)), MaskSize: proto.Uint32(16)},
		},
	}}
}

// ruleDel is the deletion of ruleAdd(sg, g, r).
func ruleDel(sg string, g, r int) *protocol.MessageV0_Request {
	add := ruleAdd(sg, g, r).SgRuleAdd
	return &protocol.MessageV0_Request{SgRuleDel: &protocol.MessageV0_SgRuleDelReq{SgId: add.SgId, Rule: add.Rule}}
}

// phaseStat is what timePhase measured.
type phaseStat struct {
	d      time.Duration
	perReq float64 // the daemon's mean time per request of the kind, µs
	wait   float64 // of which waiting for the workers, µs per request
	fps    float64 // frames delivered to the probe per second
}

// timePhase runs f, a series of requests of kind, and measures it.
func (a *apiRun) timePhase(kind string, f func()) phaseStat {
	t0 := a.requestTimes(kind)
	rx0, _ := a.txPackets("probe")
	start := time.Now()
	f()
	d := time.Since(start)
	rx1, _ := a.txPackets("probe")
	t1 := a.requestTimes(kind)
	n := t1.n - t0.n
	return phaseStat{d: d, perReq: (t1.secs - t0.secs) / n * 1e6, wait: (t1.wait - t0.wait) / n * 1e6, fps: float64(rx1-rx0) / d.Seconds()}
}

// roundTrips times n requests that change nothing (api-round-trip).
func (a *apiRun) roundTrips(suffix string, n int) {
	a.phase.Store("round-trip" + suffix)
	rtt, err := a.api.RoundTrips(n, "sg-0")
	if err != nil {
		a.t.Fatalf("%s: %v", a.phase.Load(), err)
	}
	traffic := "no traffic"
	if suffix != "" {
		traffic = "while the VM sends"
	}
	a.say("RESULT api-round-trip%s%s | %d sg_member_list requests (no change), one each, %s | %.2f s | %.0f µs each",
		suffix, a.label, n, traffic, rtt.Seconds(), float64(rtt.Microseconds())/float64(n))
}

// txPackets is the number of frames the daemon delivered to vNIC id.
func (a *apiRun) txPackets(id string) (uint64, error) {
	r, err := a.api.Call(&protocol.MessageV0_Request{NicCounters: proto.String(id)})
	if err != nil {
		return 0, err
	}
	return r.GetNicCounters().GetTxPackets(), nil
}

// waitFrame polls vNIC id's tx counter, one request after the other,
// until it exceeds base and returns when that was seen.
func (a *apiRun) waitFrame(id string, base uint64) time.Time {
	deadline := time.Now().Add(labtest.SettleTimeout)
	for {
		n, err := a.txPackets(id)
		if err == nil && n > base {
			return time.Now()
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("%s: no frame delivered to %s within %v (last error %v)", a.phase.Load(), id, labtest.SettleTimeout, err)
		}
	}
}

const (
	probeMAC = "52:54:00:fe:00:02" // the vNIC whose first frame is timed
	probeIP  = "10.80.0.2"
)

// pinger plugs VM "pinger" (TAP, VNI 42, 10.80.0.1, group sg-open) with a
// static neighbour entry for the probe's address and sends UDP datagrams
// to the probe at pingRate (from a socket in the VM's namespace, whether
// anything answers or not: ping would slow down without replies) until
// the case ends; the probe need not exist. A Go timer of 0.1 ms fires
// about every millisecond here (the runtime sleeps in epoll_wait, whose
// timeout is in milliseconds), so the sender sleeps in nanosleep on its
// own thread, and sends what is due if it woke late.
func (a *apiRun) pinger() *labtest.VM {
	v := a.h.AddVM(labtest.NICSpec{ID: "pinger", MAC: "52:54:00:fe:00:01", VNI: 42, Addrs: []string{"10.80.0.1/24"}, SGs: []string{"sg-open"}})
	a.neigh(v)
	var conn *net.UDPConn
	if err := labtest.InNS(v.NS, func() (err error) {
		conn, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.ParseIP(probeIP), Port: 9})
		return err
	}); err != nil {
		a.t.Fatal(err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	a.pingOn = make(chan struct{}, 1)
	go func() {
		defer close(done)
		runtime.LockOSThread()
		msg := make([]byte, 32)
		start, sent := time.Now(), int64(0)
		gap := unix.NsecToTimespec(int64(time.Second / pingRate))
		for {
			select {
			case <-stop:
				return
			default:
			}
			if a.pingOff.Load() {
				select {
				case <-a.pingOn:
				case <-stop:
					return
				}
				start, sent = time.Now(), 0
			}
			due := int64(time.Since(start) * pingRate / time.Second)
			for n := 0; sent < due && n < pingBurst; n++ {
				conn.Write(msg) // errors (an ICMP error came back) do not matter
				sent++
			}
			sent = max(sent, due-pingBurst) // a long stall is not made up for
			unix.Nanosleep(&gap, nil)
		}
	}()
	a.t.Cleanup(func() {
		close(stop)
		<-done
		conn.Close()
	})
	return v
}

// The pinger's datagrams per second, and the most it sends at one
// wake-up.
const (
	pingRate  = 10000
	pingBurst = 64
)

func (a *apiRun) neigh(v *labtest.VM) {
	labtest.Must(a.t, "ip", "-n", v.NS, "neigh", "replace", probeIP, "lladdr", probeMAC, "dev", "eth0", "nud", "permanent")
}

func (a *apiRun) run(t *caseT, extra []string) {
	a.t = t
	a.memLimit = memAvailable() / 2
	c := a.b.cfg
	a.phase.Store("setup")
	l := a.b.newLab(t)
	a.h = l.SingleHost(labtest.IPv4)
	opts := append([]string{"--metrics", metricsAddr}, extra...)
	a.b.startDaemon(a.h, "api"+a.label, opts...)
	a.api = a.h.API()
	a.watchdog()

	a.phase.Store("fresh")
	a.fresh = a.memAfterGC()
	a.say("RESULT api-mem-fresh%s | fresh daemon, no vNIC, after a GC | %v", a.label, a.fresh)

	a.phase.Store("nic-add")
	n, g := c.apiNICs, c.apiGroups
	total, first, last := a.addNICs("bench", 0, n, c.apiNICType, func(i int) []string { return []string{fmt.Sprintf("sg-%d", i%g)} })
	a.say("RESULT api-nic-add%s | %d vNICs (%s), one request each | %.2f s | %.0f requests/s | first 10 %% %.2f ms, last 10 %% %.2f ms per request | %v",
		a.label, n, c.apiNICType, total.Seconds(), float64(n)/total.Seconds(), ms(first), ms(last), a.mem())

	a.phase.Store("first-frame")
	for _, cidr := range []string{"0.0.0.0/0", "::/0"} {
		a.call(&protocol.MessageV0_Request{SgRuleAdd: &protocol.MessageV0_SgRuleAddReq{SgId: proto.String("sg-open"),
			Rule: &protocol.MessageV0_Rule{Direction: protocol.MessageV0_Rule_INBOUND.Enum(), Protocol: proto.Int32(-1),
				Cidr: &protocol.MessageV0_Cidr{Address: proto.String(strings.Split(cidr, "/")[0]), MaskSize: proto.Uint32(0)}}}})
	}
	pinger := a.pinger()
	t0 := time.Now()
	a.call(&protocol.MessageV0_Request{NicAdd: &protocol.MessageV0_Nic{Id: proto.String("probe"), Mac: proto.String(probeMAC),
		Vni: proto.Uint32(42), Ip: []string{probeIP}, SecurityGroup: []string{"sg-open"}, Type: protocol.MessageV0_Nic_TAP.Enum()}})
	reply := time.Since(t0)
	frame := a.waitFrame("probe", 0).Sub(t0)
	a.say("RESULT api-first-frame%s | nic_add of a TAP vNIC with %d vNICs present, a VM sending to it %d frames/s | reply %.2f ms | first frame delivered %.2f ms",
		a.label, n+1, pingRate, ms(reply), ms(frame))

	// The rules without traffic first, then deleted and added again
	// while the VM sends.
	a.pausePing()
	rules := func(mk func(sg string, g, r int) *protocol.MessageV0_Request) {
		for gi := range g {
			for r := range c.apiRules {
				a.call(mk(fmt.Sprintf("sg-%d", gi), gi, r))
			}
		}
	}
	a.phase.Store("sg-rules")
	p := a.timePhase("sg_rule_add", func() { rules(ruleAdd) })
	a.say("RESULT api-sg-rules%s | %d groups x %d rules, one request each, %d vNICs per group, no traffic | %.2f s | %.0f requests/s | the daemon's time per request %.0f µs (butterfly_api_request_seconds), of which %.1f µs waiting for the workers | %v",
		a.label, g, c.apiRules, n/g, p.d.Seconds(), float64(g*c.apiRules)/p.d.Seconds(), p.perReq, p.wait, a.mem())
	a.roundTrips("", g*c.apiRules)

	a.resumePing()
	a.phase.Store("sg-rules-traffic")
	del := a.timePhase("sg_rule_del", func() { rules(ruleDel) })
	add := a.timePhase("sg_rule_add", func() { rules(ruleAdd) })
	a.say("RESULT api-sg-rules-traffic%s | the same rules deleted, then added again, one request each, while the VM sends | sg_rule_del %.2f s (daemon %.0f µs per request, %.1f µs of it waiting for the workers) | sg_rule_add %.2f s (daemon %.0f µs, %.1f µs waiting) | %.0f frames/s delivered to the probe meanwhile | %v",
		a.label, del.d.Seconds(), del.perReq, del.wait, add.d.Seconds(), add.perReq, add.wait, add.fps, a.mem())
	a.roundTrips("-traffic", g*c.apiRules)

	if a.persisted {
		a.phase.Store("restart")
		a.restart(pinger, n+2, g*c.apiRules, opts)
	}

	a.phase.Store("delete")
	start := time.Now()
	for i := range n {
		a.call(&protocol.MessageV0_Request{NicDel: proto.String(fmt.Sprintf("bench-%d", i))})
	}
	for _, id := range []string{"probe", "pinger"} {
		a.call(&protocol.MessageV0_Request{NicDel: proto.String(id)})
	}
	for gi := range g {
		a.call(&protocol.MessageV0_Request{SgDel: proto.String(fmt.Sprintf("sg-%d", gi))})
	}
	a.call(&protocol.MessageV0_Request{SgDel: proto.String("sg-open")})
	dt := time.Since(start)
	// The daemon removes deleted vNICs' TAP devices in the background.
	if err := labtest.Poll(time.Minute, func() error {
		out, err := labtest.Run("ip", "-n", a.h.NS, "-o", "link", "show")
		if err == nil && strings.Contains(out, ": bench-") {
			err = fmt.Errorf("TAP devices of deleted vNICs still present")
		}
		return err
	}); err != nil {
		a.t.Fatalf("%s: %v", a.phase.Load(), err)
	}
	gone := time.Since(start)
	m := a.memAfterGC()
	a.say("RESULT api-delete%s | %d vNICs and %d groups deleted, one request each | %.2f s | their TAP devices gone %.2f s after the first request | %v | heap after a GC %s of the fresh daemon's",
		a.label, n+2, g+1, dt.Seconds(), gone.Seconds(), m, pct(m.heap, a.fresh.heap))

	a.phase.Store("nic-add-vhost")
	before := m
	total, first, last = a.addNICs("vh", 1<<20, n, "VHOST_USER_SERVER", func(i int) []string {
		if i < 10 {
			return []string{"sg-all", "sg-ten"}
		}
		return []string{"sg-all"}
	})
	m = a.mem()
	a.say("RESULT api-nic-add-vhost%s | %d vNICs (VHOST_USER_SERVER) in a group, no front end, one request each | %.2f s | %.0f requests/s | first 10 %% %.2f ms, last 10 %% %.2f ms per request | %v | per vNIC %.2f threads, %.2f fds",
		a.label, n, total.Seconds(), float64(n)/total.Seconds(), ms(first), ms(last), m,
		float64(m.threads-before.threads)/float64(n), float64(m.fds-before.fds)/float64(n))

	a.vhostFrontEnds(n)

	a.phase.Store("sg-rule-latency")
	for _, grp := range []struct {
		sg    string
		users int
	}{{"sg-ten", min(10, n)}, {"sg-all", n}} {
		if grp.sg == "sg-all" && n <= 10 {
			break // the same vNICs as sg-ten's
		}
		lat := make([]time.Duration, c.apiLatSamples)
		for i := range lat {
			s := time.Now()
			a.call(ruleAdd(grp.sg, 200, i))
			lat[i] = time.Since(s)
		}
		a.say("RESULT api-sg-rule-latency-%d%s | sg_rule_add on a group used by %d vNICs (VHOST_USER_SERVER, no front end connected), %d requests | p50 %.2f ms | p99 %.2f ms | %v",
			grp.users, a.label, grp.users, len(lat), ms(percentile(lat, 50)), ms(percentile(lat, 99)), a.mem())
	}

	a.phase.Store("stop")
	a.say("RESULT api-stop%s | SIGTERM to exit with %d vhost-user vNICs and their group | %s", a.label, n, a.terminate())
}

// Fds a front end holds: in the bench, its socket, memfd and four
// eventfds; in the daemon, at most as many (the connection, the four
// eventfds, the memfd until mapped).
const feFds = 6

// vhostFrontEnds dials a vhosttest.FrontEnd to -api-vhost-connected of the
// n vhost-user vNICs "vh-i" (spread evenly, one after the other; fewer if
// the bench's or the daemon's fd limit would not hold them, which the line
// says) and reports the time and the daemon's cost beyond idle, its figures
// with the n vNICs and no front end (after a GC). Then it closes them,
// waits for the daemon's fds to come back to the idle figure and compares
// its heap after a GC with idle's.
func (a *apiRun) vhostFrontEnds(n int) {
	a.phase.Store("vhost-connect")
	idle := a.memAfterGC()
	k := int(math.Round(a.b.cfg.apiVhostConnected * float64(n)))
	want, capped := k, ""
	pid := a.h.PID()
	if room := (fdLimit(os.Getpid()) - fdsOf(os.Getpid()) - 64) / feFds; k > room {
		k, capped = max(room, 0), fmt.Sprintf(" (capped from %d by the bench's fd limit %d)", want, fdLimit(os.Getpid()))
	}
	if room := (fdLimit(pid) - idle.fds - 64) / feFds; k > room {
		k, capped = max(room, 0), fmt.Sprintf(" (capped from %d by butterflyd's fd limit %d)", want, fdLimit(pid))
	}
	if k == 0 {
		a.say("RESULT api-vhost-connected%s | no front end connected (-api-vhost-connected %v of %d vNICs%s)", a.label, a.b.cfg.apiVhostConnected, n, capped)
		return
	}
	var fes []*vhosttest.FrontEnd
	closeAll := func() {
		for _, f := range fes {
			f.Close()
		}
		fes = nil
	}
	a.t.Cleanup(closeAll)
	peak := 0 // the daemon's most threads seen, read after each connect
	start := time.Now()
	for j := range k {
		i := j * n / k
		f, err := vhosttest.Dial(filepath.Join(a.h.SockDir, fmt.Sprintf("qemu-vhost-vh-%d", i)))
		if err != nil {
			a.t.Fatalf("%s: vNIC vh-%d: %v", a.phase.Load(), i, err)
		}
		fes = append(fes, f)
		peak = max(peak, threadsOf(pid))
	}
	ct := time.Since(start)
	m := a.mem()
	a.say("RESULT api-vhost-connected%s | %d of %d vhost-user vNICs given a front end (VERSION_1, REPLY_ACK, one queue pair running), one after the other%s | %.2f s | %.2f ms each | %v | beyond the idle vNICs: %+d threads (at most %+d after any connect), %.2f fds per connected vNIC",
		a.label, k, n, capped, ct.Seconds(), ms(ct)/float64(k), m, m.threads-idle.threads, peak-idle.threads, float64(m.fds-idle.fds)/float64(k))

	a.phase.Store("vhost-disconnect")
	start = time.Now()
	closeAll()
	const settle = 30 * time.Second
	err := labtest.Poll(settle, func() error {
		if fds := fdsOf(pid); fds > idle.fds {
			return fmt.Errorf("%d fds, %d when idle", fds, idle.fds)
		}
		return nil
	})
	back := time.Since(start)
	m = a.memAfterGC()
	if err != nil {
		a.say("RESULT api-vhost-disconnected%s | %d front ends closed | butterflyd's fds not back to the idle figure within %v: %v | after a GC: %v", a.label, k, settle, err, m)
		return
	}
	a.say("RESULT api-vhost-disconnected%s | %d front ends closed | fds back to the idle figure (%d) in %.2f s (polled every 50 ms) | after a GC: %v | %+d threads, heap %+.1f MB from idle after a GC (%v)",
		a.label, k, idle.fds, back.Seconds(), m, m.threads-idle.threads, (m.heap-idle.heap)/1e6, idle)
}

// restart stops the daemon and starts a new one on the same state file
// (nics vNICs and rules rules in it).
func (a *apiRun) restart(pinger *labtest.VM, nics, rules int, opts []string) {
	a.api.Close()
	stop := a.terminate()
	t0 := time.Now()
	p, err := a.h.Launch(a.b.daemonOpts(opts...))
	if err != nil {
		a.t.Fatal(err)
	}
	sock := strings.TrimPrefix(a.h.Endpoint, "ipc://")
	var api *labtest.API
	labtest.Eventually(a.t, 60*time.Second, "API of the restarted daemon", func() error {
		if !p.Running() {
			a.t.Fatalf("butterflyd exited: %s", a.h.LogTail())
		}
		if _, err := os.Stat(sock); err != nil {
			return err
		}
		if api == nil {
			if api, err = labtest.DialAPI(a.h.Endpoint, 2*time.Second); err != nil {
				return err
			}
		}
		_, err := api.Call(&protocol.MessageV0_Request{AppStatus: proto.Bool(true)})
		if err != nil {
			api.Close()
			api = nil
		}
		return err
	})
	tAPI := time.Since(t0)
	a.api = api
	a.t.Cleanup(func() { api.Close() })
	labtest.Eventually(a.t, 60*time.Second, "every vNIC restored", func() error {
		r, err := api.Call(&protocol.MessageV0_Request{NicList: proto.Bool(true)})
		if err != nil {
			return err
		}
		if len(r.GetNicList()) < nics {
			return fmt.Errorf("%d of %d vNICs listed", len(r.GetNicList()), nics)
		}
		return nil
	})
	tList := time.Since(t0)
	// The daemon recreated the pinger's TAP in its namespace: plug it
	// again (the ping keeps running in the VM); nothing reaches the probe
	// before.
	base, err := a.txPackets("probe")
	if err != nil {
		a.t.Fatal(err)
	}
	ps := time.Now()
	pinger.Plug()
	a.neigh(pinger)
	plug := time.Since(ps)
	tFrame := a.waitFrame("probe", base).Sub(t0)
	a.say("RESULT api-restart | %d vNICs and %d rules restored from the state file | API answering %.2f s | every vNIC listed %.2f s | frame forwarded to the probe vNIC %.2f s (%.0f ms of it re-plugging the pinging VM's TAP) | %v | the old daemon's exit on SIGTERM: %s",
		nics, rules, tAPI.Seconds(), tList.Seconds(), tFrame.Seconds(), ms(plug), a.mem(), stop)
}

// terminate stops the daemon (SIGTERM, SIGKILL after a minute) and says
// how long it took.
func (a *apiRun) terminate() string {
	d, err := a.h.Terminate(time.Minute)
	if err != nil {
		return fmt.Sprintf("%.2f s (%v)", d.Seconds(), err)
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// pct is a as a percentage of b ("+12.3 %").
func pct(a, b float64) string {
	if b <= 0 {
		return "?"
	}
	return fmt.Sprintf("%.1f %%", 100*a/b)
}
