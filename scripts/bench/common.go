package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// bench is one run: its settings, binaries and results.
type bench struct {
	cfg   config
	bin   labtest.Binaries
	r     results
	cases *caseRunner
}

// results holds the run's figures by "label.metric", as the markdown
// summary reads them; a missing figure prints as "?".
type results map[string]string

func (r results) get(k string) string {
	if v, ok := r[k]; ok && v != "" {
		return v
	}
	return "?"
}

var sayMu sync.Mutex

// say prints a line of the run's output.
func (b *bench) say(format string, args ...any) {
	sayMu.Lock()
	defer sayMu.Unlock()
	fmt.Printf(format+"\n", args...)
}

// newLab is a lab for one case of the benchmark.
func (b *bench) newLab(t *caseT) *labtest.Lab { return labtest.New(t, b.bin, "bfb") }

// daemonOpts are the options of every butterflyd the benchmark starts.
func (b *bench) daemonOpts(extra ...string) labtest.DaemonOpts {
	return labtest.DaemonOpts{LogLevel: "error", Extra: append(append([]string{}, b.cfg.daemonArgs...), extra...)}
}

// startDaemon starts h's butterflyd with its log kept in the results
// directory as butterflyd-LABEL-HOST.log.
func (b *bench) startDaemon(h *labtest.Host, label string, extra ...string) {
	h.LogPath = fmt.Sprintf("%s/butterflyd-%s-%s.log", b.cfg.out, label, h.Name)
	h.Start(b.daemonOpts(extra...))
}

// runFor runs a command with a deadline of d and returns its combined output.
func runFor(d time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// cpuSnap is the machine's CPU time and steal time so far (/proc/stat, in ticks).
type cpuSnap struct{ total, steal uint64 }

func stealSnap() cpuSnap {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return cpuSnap{}
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 9 || fs[0] != "cpu" {
			continue
		}
		var s cpuSnap
		for i, v := range fs[1:] {
			n, _ := strconv.ParseUint(v, 10, 64)
			s.total += n
			if i == 7 {
				s.steal = n
			}
		}
		return s
	}
	return cpuSnap{}
}

// stealSince is the machine's steal in percent since s0, "%.1f".
func stealSince(s0 cpuSnap) string {
	s := stealSnap()
	if s.total <= s0.total {
		return "0.0"
	}
	return fmt.Sprintf("%.1f", 100*float64(s.steal-s0.steal)/float64(s.total-s0.total))
}

// load1 is the one-minute load average as /proc/loadavg prints it.
func load1() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

func nowUTC() string { return time.Now().UTC().Format("2006-01-02T15:04:05Z") }

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

func numCPU() int { return runtime.NumCPU() }

// ratio is a/b as "%.2f", "n/a" unless both are positive numbers.
func ratio(a, b string) string {
	x, err1 := strconv.ParseFloat(a, 64)
	y, err2 := strconv.ParseFloat(b, 64)
	if err1 != nil || err2 != nil || x <= 0 || y <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", x/y)
}

// ftoa prints a float the shortest way ("12.345", "7").
func ftoa(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }

// percentile is the p-th percentile (0 to 100, nearest rank) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	k := int(p/100*float64(len(s))+0.5) - 1
	k = max(0, min(k, len(s)-1))
	return s[k]
}

// gobench runs the Go benchmarks of pkgs, keeps the raw output in
// OUT/LABEL.txt and prints the benchmark lines.
func (b *bench) gobench(label string, pkgs ...string) {
	s0 := stealSnap()
	goBin := "go"
	if _, err := exec.LookPath("go"); err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	cmd := exec.Command(goBin, append([]string{"test", "-run", "^$", "-bench", ".", "-benchmem"}, pkgs...)...)
	cmd.Dir = b.cfg.root
	out, _ := cmd.CombinedOutput()
	_ = os.WriteFile(b.cfg.out+"/"+label+".txt", out, 0o644)
	for _, l := range strings.Split(string(out), "\n") {
		for _, p := range []string{"Benchmark", "ok", "FAIL", "---"} {
			if strings.HasPrefix(l, p) {
				b.say("%s", l)
				break
			}
		}
	}
	b.say("     (%s: steal %s%% load %s)", label, stealSince(s0), load1())
}

// readLines is the lines of file (none if it cannot be read).
func readLines(file string) []string {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	return strings.Split(string(b), "\n")
}

// writeReport writes OUT/NAME.md and prints it.
func writeReport(b *bench, name, text string) {
	f := b.cfg.out + "/" + name + ".md"
	if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
		b.say("bench: %v", err)
	}
	fmt.Printf("\n==== %s (%s)\n%s", name, f, text)
}

// asExit reports whether err is (or wraps) an *exec.ExitError.
func asExit(err error, target **exec.ExitError) bool { return errors.As(err, target) }
