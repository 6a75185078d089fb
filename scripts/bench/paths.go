package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// The paths section:
//
//	k-bridge   vmA --veth-- [Linux bridge] --veth-- vmB                 (one host)
//	bf-local   vmA --TAP-- [butterflyd] --TAP-- vmB                      (one host)
//	k-vxlan    vmA --veth-- [bridge+vxlan] ==veth underlay== [bridge+vxlan] --veth-- vmB
//	bf-vxlan   vmA --TAP-- [butterflyd] ==veth underlay, VXLAN== [butterflyd] --TAP-- vmB
//
// For each: ping min/avg (-pings pings 20 ms apart, then 20 times as many
// 0.2 ms apart), iperf3 TCP one stream (-seconds) and iperf3 UDP 64-byte
// datagrams at full speed (-b 0, -udp-seconds). Butterfly's vNICs are in a
// group allowing everything, so the firewall is in the path.
func (b *bench) paths() {
	for _, p := range []struct {
		label string
		setup func(*caseT) (vmA, vmB string)
	}{
		{"k-bridge", b.setupKBridge},
		{"bf-local", b.setupBFLocal},
		{"k-vxlan", b.setupKVXLAN},
		{"bf-vxlan", b.setupBFVXLAN},
	} {
		b.runPath(p.label, p.setup, b.cfg.pings, b.cfg.secs, b.cfg.udpSecs, nil)
	}
}

// runPath sets a path up and measures it in one case; before runs after
// the setup, before the measure. It reports whether the case succeeded.
func (b *bench) runPath(label string, setup func(*caseT) (string, string), pings, secs, udpSecs int, before func(t *caseT, vmA, vmB string)) bool {
	ok := b.cases.run(label, func(t *caseT) {
		a, s := setup(t)
		if before != nil {
			before(t, a, s)
		}
		b.measure(t, label, a, s, "10.77.0.2", pings, secs, udpSecs)
	})
	if !ok {
		b.say("RESULT %s | setup failed", label)
	}
	return ok
}

// vmPair creates the namespaces vmA and vmB.
func vmPair(l *labtest.Lab) (string, string) { return l.NetNS("vmA"), l.NetNS("vmB") }

// addrUp gives ns's eth0 addr (with prefix) and brings it up.
func addrUp(t *caseT, ns, addr string) {
	labtest.Must(t, "ip", "-n", ns, "addr", "add", addr, "dev", "eth0")
	labtest.Must(t, "ip", "-n", ns, "link", "set", "eth0", "up")
}

func (b *bench) setupKBridge(t *caseT) (string, string) {
	l := b.newLab(t)
	a, z := vmPair(l)
	sw := l.NetNS("sw")
	labtest.Must(t, "ip", "-n", sw, "link", "add", "br0", "type", "bridge")
	labtest.Must(t, "ip", "-n", sw, "link", "set", "br0", "up")
	for i, vm := range []string{a, z} {
		port := fmt.Sprintf("sw%c", 'A'+i)
		l.Veth(sw, port, vm, "eth0", 0)
		labtest.Must(t, "ip", "-n", sw, "link", "set", port, "master", "br0", "up")
	}
	addrUp(t, a, "10.77.0.1/24")
	addrUp(t, z, "10.77.0.2/24")
	return a, z
}

func (b *bench) setupKVXLAN(t *caseT) (string, string) {
	l := b.newLab(t)
	a, z := vmPair(l)
	h1, h2 := l.HostPair(labtest.IPv4)
	for _, p := range []struct {
		h      *labtest.Host
		vm     string
		remote string
	}{{h1, a, h2.VTEP.String()}, {h2, z, h1.VTEP.String()}} {
		labtest.Must(t, "ip", "-n", p.h.NS, "link", "add", "br0", "type", "bridge")
		labtest.Must(t, "ip", "-n", p.h.NS, "link", "set", "br0", "up")
		labtest.Must(t, "ip", "-n", p.h.NS, "link", "add", "vx42", "type", "vxlan", "id", "42", "local", p.h.VTEP.String(),
			"remote", p.remote, "dstport", "4789", "dev", "ul")
		labtest.Must(t, "ip", "-n", p.h.NS, "link", "set", "vx42", "master", "br0", "up")
		l.Veth(p.h.NS, "port0", p.vm, "eth0", 0)
		labtest.Must(t, "ip", "-n", p.h.NS, "link", "set", "port0", "master", "br0", "up")
		// tenant MTU = 1500 - 50 bytes of VXLAN/UDP/IPv4/Ethernet
		labtest.Must(t, "ip", "-n", p.vm, "link", "set", "eth0", "mtu", "1450")
	}
	addrUp(t, a, "10.77.0.1/24")
	addrUp(t, z, "10.77.0.2/24")
	return a, z
}

// tapVM is vNIC id (VNI 42, group sg, address 10.77.0.N/24) plugged into a
// VM namespace as eth0 with the given MTU.
func tapVM(h *labtest.Host, id string, n int, mtu int, sg string, flags ...string) *labtest.VM {
	s := labtest.NICSpec{ID: id, MAC: fmt.Sprintf("52:54:00:00:00:%02x", 9+n), VNI: 42,
		Addrs: []string{fmt.Sprintf("10.77.0.%d/24", n)}, SGs: []string{sg}, MTU: mtu}
	for _, f := range flags {
		if f == "--bypass-filtering" {
			s.Bypass = true
		}
	}
	return h.AddVM(s)
}

func (b *bench) setupBFLocal(t *caseT) (string, string) {
	l := b.newLab(t)
	h := l.SingleHost(labtest.IPv4)
	b.startDaemon(h, "bf-local")
	h.OpenSG("sg-open")
	return tapVM(h, "nic-a", 1, 1500, "sg-open").NS, tapVM(h, "nic-b", 2, 1500, "sg-open").NS
}

func (b *bench) setupBFVXLAN(t *caseT) (string, string) {
	l := b.newLab(t)
	h1, h2 := l.HostPair(labtest.IPv4)
	for _, h := range []*labtest.Host{h1, h2} {
		b.startDaemon(h, "bf-vxlan")
		h.OpenSG("sg-open")
	}
	// same tenant MTU as the kernel VXLAN: 1500 - 50
	return tapVM(h1, "nic-a", 1, 1450, "sg-open").NS, tapVM(h2, "nic-b", 2, 1450, "sg-open").NS
}

// iperfServer starts a one-shot iperf3 server in ns and waits until it
// listens on port 5201; it is stopped by PID at cleanup if still running.
func iperfServer(t *caseT, ns string) *labtest.Process {
	p, err := labtest.StartProcess("iperf3 server", exec.Command("ip", "netns", "exec", ns, "iperf3", "-s", "-1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.Running() {
			p.Stop(t, syscall.SIGTERM)
		}
	})
	labtest.Eventually(t, 5*time.Second, "iperf3 server listening in "+ns, func() error {
		out, err := labtest.Run("ip", "netns", "exec", ns, "ss", "-Hltn", "sport = :5201")
		if err == nil && strings.TrimSpace(out) == "" {
			err = fmt.Errorf("not yet")
		}
		return err
	})
	return p
}

// pingStats returns ping's min and avg (ms, as printed) of count pings
// interval seconds apart from ns to ip.
func pingStats(ns, ip string, count int, interval string) (string, string) {
	out, _ := runFor(time.Duration(count)*time.Second+30*time.Second, "ip", "netns", "exec", ns,
		"ping", "-n", "-q", "-c", strconv.Itoa(count), "-i", interval, ip)
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, "min/avg"); i >= 0 {
			if j := strings.Index(l, "="); j >= 0 {
				f := strings.Split(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(l[j+1:]), "ms")), "/")
				if len(f) >= 2 {
					return f[0], f[1]
				}
			}
		}
	}
	return "", ""
}

// iperfJSON is the part of iperf3 -J's report the benchmark reads.
type iperfJSON struct {
	End struct {
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
		SumSent struct {
			Retransmits *int64 `json:"retransmits"`
		} `json:"sum_sent"`
		Sum struct {
			Packets     float64 `json:"packets"`
			LostPackets float64 `json:"lost_packets"`
			Seconds     float64 `json:"seconds"`
		} `json:"sum"`
	} `json:"end"`
}

// iperfClient runs an iperf3 client in ns towards ip, keeps its JSON
// report in file and returns it parsed (zero on failure).
func iperfClient(ns, ip string, secs int, file string, args ...string) iperfJSON {
	all := append([]string{"netns", "exec", ns, "iperf3", "-c", ip, "-t", strconv.Itoa(secs), "-J"}, args...)
	out, _ := runFor(time.Duration(secs)*time.Second+60*time.Second, "ip", all...)
	_ = os.WriteFile(file, []byte(out), 0o644)
	var r iperfJSON
	_ = json.Unmarshal([]byte(out), &r)
	return r
}

// measure runs ping, TCP and UDP 64 B from client namespace c to server
// namespace s at ip and prints the RESULT line of label.
func (b *bench) measure(t *caseT, label, c, s, ip string, pings, secs, udpSecs int) {
	s0 := stealSnap()
	srv := iperfServer(t, s)
	pmin, pavg := pingStats(c, ip, pings, "0.02")
	// 0.2 ms apart: a switch that sleeps after an idle spell never gets to sleep
	_, pbusy := pingStats(c, ip, pings*20, "0.0002")
	tj := iperfClient(c, ip, secs, fmt.Sprintf("%s/%s-tcp.json", b.cfg.out, label))
	<-srv.Exited
	tcp := ftoa(math.Floor(tj.End.SumReceived.BitsPerSecond/1e9*1000) / 1000)
	retr := "?"
	if tj.End.SumSent.Retransmits != nil {
		retr = strconv.FormatInt(*tj.End.SumSent.Retransmits, 10)
	}
	srv = iperfServer(t, s)
	uj := iperfClient(c, ip, udpSecs, fmt.Sprintf("%s/%s-udp64.json", b.cfg.out, label), "-u", "-b", "0", "-l", "64")
	<-srv.Exited
	var udpS, udpR int64
	if u := uj.End.Sum; u.Seconds > 0 {
		udpS = int64(math.Floor(u.Packets / u.Seconds))
		udpR = int64(math.Floor((u.Packets - u.LostPackets) / u.Seconds))
	}
	or0 := func(v string) string {
		if v == "" {
			return "0"
		}
		return v
	}
	r := b.r
	r[label+".pmin"], r[label+".pavg"], r[label+".pbusy"] = or0(pmin), or0(pavg), or0(pbusy)
	r[label+".tcp"], r[label+".retr"] = tcp, retr
	r[label+".udps"], r[label+".udpr"] = strconv.FormatInt(udpS, 10), strconv.FormatInt(udpR, 10)
	r[label+".steal"], r[label+".load"] = stealSince(s0), load1()
	orQ := func(v string) string {
		if v == "" {
			return "?"
		}
		return v
	}
	b.say("RESULT %s | ping min/avg %s/%s ms, avg %s ms at 0.2 ms intervals | tcp %s Gbit/s (retr %s) | udp64 sent %d/s rcvd %d/s | steal %s%% load %s",
		label, orQ(pmin), orQ(pavg), orQ(pbusy), tcp, retr, udpS, udpR, r[label+".steal"], r[label+".load"])
}

// writeSummary writes OUT/results.md (paths, idle, api and go figures of
// this run) and prints it.
func (b *bench) writeSummary() error {
	r := b.r
	var sb strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&sb, format+"\n", args...) }
	c := b.cfg
	p("Run: %s, kernel %s, %d CPUs; TCP %d s, UDP %d s, %d pings.", nowUTC(), kernel(), numCPU(), c.secs, c.udpSecs, c.pings)
	p("")
	p("| path | ping min / avg, 20 ms apart (ms) | ping avg, 0.2 ms apart (ms) | TCP (Gbit/s) | UDP 64 B sent (pps) | UDP 64 B received (pps) | steal %% | load |")
	p("|---|---|---|---|---|---|---|---|")
	for _, row := range [][2]string{
		{"k-bridge", "kernel: Linux bridge + veth (one host)"},
		{"bf-local", "butterfly: two TAP vNICs, one daemon"},
		{"k-vxlan", "kernel: bridge + vxlan, two hosts"},
		{"bf-vxlan", "butterfly: two daemons, VXLAN"},
	} {
		L := row[0]
		p("| %s | %s / %s | %s | %s | %s | %s | %s | %s |", row[1], r.get(L+".pmin"), r.get(L+".pavg"), r.get(L+".pbusy"),
			r.get(L+".tcp"), r.get(L+".udps"), r.get(L+".udpr"), r.get(L+".steal"), r.get(L+".load"))
	}
	p("")
	p("| ratio butterfly / kernel | avg latency, 20 ms apart | avg latency, 0.2 ms apart | TCP | UDP 64 B received |")
	p("|---|---|---|---|---|")
	for _, pair := range [][3]string{{"bf-local", "k-bridge", "one host"}, {"bf-vxlan", "k-vxlan", "VXLAN"}} {
		bf, k := pair[0], pair[1]
		p("| %s | %s | %s | %s | %s |", pair[2], ratio(r[bf+".pavg"], r[k+".pavg"]), ratio(r[bf+".pbusy"], r[k+".pbusy"]),
			ratio(r[bf+".tcp"], r[k+".tcp"]), ratio(r[bf+".udpr"], r[k+".udpr"]))
	}
	p("")
	p("Idle butterflyd with 100 TAP vNICs: %s %% of one CPU over %d s (steal %s %%, load %s).", r.get("idle.cpu"), c.idleSecs, r.get("idle.steal"), r.get("idle.load"))
	p("Idle butterflyd with 100 TAP + 100 vhost-user vNICs, 2 connected to an idle testpmd: %s %% of one CPU over %d s (steal %s %%, load %s).",
		r.get("idlev.cpu"), c.idleSecs, r.get("idlev.steal"), r.get("idlev.load"))
	p("")
	p("```")
	if api, err := os.ReadFile(c.out + "/apibench.txt"); err == nil {
		for _, l := range strings.Split(string(api), "\n") {
			if strings.HasPrefix(l, "RESULT api") {
				p("%s", l)
			}
		}
	}
	for _, f := range []string{"dataplane-bench.txt", "apiserver-bench.txt"} {
		if gb, err := os.ReadFile(c.out + "/" + f); err == nil {
			for _, l := range strings.Split(string(gb), "\n") {
				if strings.HasPrefix(l, "Benchmark") {
					p("%s", l)
				}
			}
		}
	}
	p("```")
	md := c.out + "/results.md"
	if err := os.WriteFile(md, []byte(sb.String()), 0o644); err != nil {
		return err
	}
	fmt.Printf("\n==== markdown (%s)\n%s", md, sb.String())
	return nil
}
