package main

import (
	"fmt"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// The firewall section. One host, vmA -> vmB (iperf3 server in vmB), six
// paths in one run:
//
//	fw-bypass   butterfly, both TAP vNICs --bypass-filtering (no firewall, no anti-spoofing)
//	fw-open     butterfly, both vNICs in a group allowing everything (stateful firewall on each vNIC)
//	fw-100      butterfly, both vNICs in a group of 100 rules: 97 that never match, then the ones
//	            iperf3 and ping need (TCP and UDP 5201, ICMP, from vmA's address)
//	k-nofw      kernel: veths on a Linux bridge, no filtering
//	k-nft-open  same, stateful nftables: ct established,related accept, invalid drop, new accept, drop
//	k-nft-100   same with the 97 non-matching rules before the allow rules, then drop
//
// The kernel's rules go in a bridge-family table when the kernel tracks
// connections on bridges (CONFIG_NF_CONNTRACK_BRIDGE); otherwise in an inet
// forward chain that bridged IPv4 traverses through br_netfilter
// (bridge-nf-call-iptables=1 in the switch namespace): the table says which.
// Before measuring, a TCP connection to port 5202 of vmB (no rule allows it
// in the 100-rule paths; nothing listens there) is tried: refused by vmB or
// dropped on the way (1 s timeout). -fw-rounds repeats the six paths in
// turn; the table then gives medians (and ranges) and the ratios are of
// medians. Results: RESULT lines and OUT/firewall.md.
func (b *bench) firewall() {
	c := b.cfg
	nft := ""
	paths := []string{"fw-bypass", "fw-open", "fw-100", "k-nofw"}
	if _, err := exec.LookPath("nft"); err == nil {
		paths = append(paths, "k-nft-open", "k-nft-100")
	}
	setups := map[string]func(*caseT) (string, string){
		"fw-bypass":  func(t *caseT) (string, string) { return b.setupFWBF(t, "bypass") },
		"fw-open":    func(t *caseT) (string, string) { return b.setupFWBF(t, "open") },
		"fw-100":     func(t *caseT) (string, string) { return b.setupFWBF(t, "100") },
		"k-nofw":     b.setupKBridge,
		"k-nft-open": func(t *caseT) (string, string) { return b.setupKNFT(t, "open", &nft) },
		"k-nft-100":  func(t *caseT) (string, string) { return b.setupKNFT(t, "100", &nft) },
	}
	b.say("== firewall: TCP %ds, UDP %ds, %d pings per path, %d round(s)", c.fwSecs, c.fwUDPSecs, c.fwPings, c.fwRounds)
	tcpl, udpl := map[string][]float64{}, map[string][]float64{}
	for range c.fwRounds {
		for _, L := range paths {
			ok := b.runPath(L, setups[L], c.fwPings, c.fwSecs, c.fwUDPSecs, func(t *caseT, vmA, _ string) {
				b.r[L+".p5202"] = probe5202(vmA)
			})
			if ok {
				tcp, _ := strconv.ParseFloat(b.r[L+".tcp"], 64)
				udp, _ := strconv.ParseFloat(b.r[L+".udpr"], 64)
				tcpl[L], udpl[L] = append(tcpl[L], tcp), append(udpl[L], udp)
			}
		}
	}
	b.say("== firewall Go benchmarks (one zone, 10,000 flows; ns per packet)")
	b.gobench("firewall-bench", "./internal/firewall/")

	var sb strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&sb, format+"\n", args...) }
	if nft == "" {
		nft = "not run"
	}
	p("Firewall run: %s, kernel %s, %d CPUs; TCP %d s, UDP %d s, %d round(s) (medians, range in brackets); kernel rules: %s.",
		nowUTC(), kernel(), numCPU(), c.fwSecs, c.fwUDPSecs, c.fwRounds, nft)
	p("Other columns are from the last round.")
	p("")
	p("| path | TCP (Gbit/s) | UDP 64 B received (pps) | TCP retransmits | ping avg 0.2 ms apart (ms) | TCP to port 5202 | steal %% | load |")
	p("|---|---|---|---|---|---|---|---|")
	r := b.r
	for _, L := range []string{"fw-bypass", "fw-open", "fw-100", "k-nofw", "k-nft-open", "k-nft-100"} {
		p("| %s | %s | %s | %s | %s | %s | %s | %s |", L, fwStat(tcpl[L]), fwStat(udpl[L]), r.get(L+".retr"), r.get(L+".pbusy"),
			r.get(L+".p5202"), r.get(L+".steal"), r.get(L+".load"))
	}
	p("")
	p("| ratio | TCP | UDP 64 B received |")
	p("|---|---|---|")
	for _, q := range [][3]string{
		{"fw-open", "fw-bypass", "butterfly all-open / bypass (firewall + anti-spoofing overhead)"},
		{"fw-100", "fw-bypass", "butterfly 100 rules / bypass"},
		{"k-nft-open", "k-nofw", "kernel nftables all-open / no filtering"},
		{"k-nft-100", "k-nofw", "kernel nftables 100 rules / no filtering"},
		{"fw-open", "k-nft-open", "butterfly / kernel, both all-open stateful"},
		{"fw-100", "k-nft-100", "butterfly / kernel, both 100 rules"},
		{"fw-bypass", "k-nofw", "butterfly / kernel, no filtering"},
	} {
		p("| %s | %s | %s |", q[2], ratio(fwMed(tcpl[q[0]]), fwMed(tcpl[q[1]])), ratio(fwMed(udpl[q[0]]), fwMed(udpl[q[1]])))
	}
	p("")
	p("Go benchmarks (internal/firewall):")
	p("")
	p("```")
	for _, l := range readLines(c.out + "/firewall-bench.txt") {
		if strings.HasPrefix(l, "Benchmark") {
			p("%s", l)
		}
	}
	p("```")
	writeReport(b, "firewall", sb.String())
}

// fwFiller is the i-th rule that iperf3's flows never match.
func fwFiller(i int) (proto string, port int, cidr string) {
	proto = "udp"
	if i%2 == 0 {
		proto = "tcp"
	}
	return proto, 20000 + i, fmt.Sprintf("10.200.%d.0/24", i)
}

// setupFWBF: butterfly, one host, vNICs bypassing filtering, all open or
// in a group of 100 rules.
func (b *bench) setupFWBF(t *caseT, mode string) (string, string) {
	l := b.newLab(t)
	h := l.SingleHost(labtest.IPv4)
	b.startDaemon(h, "fw-"+mode)
	sg := "sg-open"
	var flags []string
	switch mode {
	case "bypass":
		flags = []string{"--bypass-filtering"}
		h.OpenSG(sg)
	case "open":
		h.OpenSG(sg)
	case "100":
		sg = "sg-100"
		for i := 1; i <= 97; i++ {
			pr, po, cidr := fwFiller(i)
			h.MustCLI("sg", "rule", "add", sg, "--ip-proto", pr, "--port", strconv.Itoa(po), "--cidr", cidr)
		}
		h.MustCLI("sg", "rule", "add", sg, "--ip-proto", "tcp", "--port", "5201", "--cidr", "10.77.0.1/32")
		h.MustCLI("sg", "rule", "add", sg, "--ip-proto", "udp", "--port", "5201", "--cidr", "10.77.0.1/32")
		h.MustCLI("sg", "rule", "add", sg, "--ip-proto", "icmp", "--cidr", "10.77.0.1/32")
	}
	return tapVM(h, "nic-a", 1, 1500, sg, flags...).NS, tapVM(h, "nic-b", 2, 1500, sg, flags...).NS
}

// nftRules is the ruleset of the switch namespace for family fam and mode.
func nftRules(fam, mode string) string {
	var sb strings.Builder
	p := func(s string) { sb.WriteString(s + "\n") }
	p("table " + fam + " bfw {")
	p("\tchain forward {")
	p("\t\ttype filter hook forward priority 0; policy drop;")
	if fam == "bridge" {
		p("\t\tether type arp accept")
	}
	p("\t\tct state established,related accept")
	p("\t\tct state invalid drop")
	if mode == "open" {
		p("\t\tct state new accept")
	} else {
		for i := 1; i <= 97; i++ {
			pr, po, cidr := fwFiller(i)
			p(fmt.Sprintf("\t\tip saddr %s %s dport %d accept", cidr, pr, po))
		}
		p("\t\tip saddr 10.77.0.1 tcp dport 5201 accept")
		p("\t\tip saddr 10.77.0.1 udp dport 5201 accept")
		p("\t\tip saddr 10.77.0.1 ip protocol icmp accept")
	}
	p("\t}")
	p("}")
	return sb.String()
}

// setupKNFT is setupKBridge with nftables rules in the switch namespace,
// bridge family first; how they were applied goes to *how.
func (b *bench) setupKNFT(t *caseT, mode string, how *string) (string, string) {
	a, z := b.setupKBridge(t)
	sw := strings.TrimSuffix(a, "vmA") + "sw"
	nft := func(fam string) error {
		cmd := exec.Command("ip", "netns", "exec", sw, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(nftRules(fam, mode))
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("nft %s: %w: %s", fam, err, out)
		}
		return nil
	}
	if nft("bridge") == nil {
		*how = "bridge family"
		return a, z
	}
	labtest.Must(t, "ip", "netns", "exec", sw, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")
	if err := nft("inet"); err != nil {
		t.Fatal(err)
	}
	*how = "inet forward chain through br_netfilter (this kernel has no bridge conntrack)"
	return a, z
}

// probe5202 tries a TCP connection from ns to 10.77.0.2:5202: "refused",
// "dropped" (no answer within 1 s) or the error.
func probe5202(ns string) string {
	out, err := runFor(10*time.Second, "ip", "netns", "exec", ns, "timeout", "1", "bash", "-c", "exec 3<>/dev/tcp/10.77.0.2/5202")
	if err == nil {
		return "accepted"
	}
	var ee *exec.ExitError
	if asExit(err, &ee) {
		switch ee.ExitCode() {
		case 124:
			return "dropped"
		case 1:
			return "refused"
		default:
			return fmt.Sprintf("exit %d", ee.ExitCode())
		}
	}
	return strings.TrimSpace(out)
}

// fwStat is the median of xs, with "(min to max)" when there are several.
func fwStat(xs []float64) string {
	if len(xs) == 0 {
		return "?"
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	f := func(v float64) string {
		if v >= 100 {
			return fmt.Sprintf("%.0f", v)
		}
		return fmt.Sprintf("%.2f", v)
	}
	m := f(median(s))
	if len(s) > 1 {
		m += fmt.Sprintf(" (%s to %s)", f(s[0]), f(s[len(s)-1]))
	}
	return m
}

// median is the median of s, sorted and not empty.
func median(s []float64) float64 {
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// fwMed is the median of xs as a string ("" when there is none).
func fwMed(xs []float64) string {
	if len(xs) == 0 {
		return ""
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return ftoa(median(s))
}
