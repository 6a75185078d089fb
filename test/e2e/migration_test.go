package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// qmp is a QEMU Machine Protocol session (JSON lines on the VM's QMP
// socket).
type qmp struct {
	c  net.Conn
	rd *bufio.Reader
}

// dialQMP connects to v's QMP socket and leaves capabilities negotiation.
func dialQMP(v *qemuVM) (*qmp, error) {
	var c net.Conn
	err := labtest.Poll(10*time.Second, func() error {
		var err error
		c, err = net.Dial("unix", v.qmpPath())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: QMP: %w", v.opts.name, err)
	}
	q := &qmp{c: c, rd: bufio.NewReader(c)}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := q.rd.ReadString('\n'); err != nil { // the greeting
		c.Close()
		return nil, fmt.Errorf("%s: QMP greeting: %w", v.opts.name, err)
	}
	if _, err := q.run("qmp_capabilities", nil); err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: %w", v.opts.name, err)
	}
	return q, nil
}

// run executes a QMP command and returns its "return" value; events that
// arrive meanwhile are skipped.
func (q *qmp) run(cmd string, args any) (json.RawMessage, error) {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	q.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := q.c.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("QMP %s: %w", cmd, err)
	}
	for {
		line, err := q.rd.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("QMP %s: %w", cmd, err)
		}
		var r struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class, Desc string
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, fmt.Errorf("QMP %s: %w: %s", cmd, err, line)
		}
		switch {
		case r.Event != "":
		case r.Error != nil:
			return nil, fmt.Errorf("QMP %s: %s: %s", cmd, r.Error.Class, r.Error.Desc)
		default:
			return r.Return, nil
		}
	}
}

func (q *qmp) close() { q.c.Close() }

// migration is what query-migrate reports.
type migration struct {
	Status    string `json:"status"`
	TotalTime int64  `json:"total-time"` // ms
	Downtime  int64  `json:"downtime"`   // ms
	RAM       struct {
		Transferred int64 `json:"transferred"`
	} `json:"ram"`
	ErrorDesc string `json:"error-desc"`
}

// liveMigrate live-migrates src's guest to the QEMU waiting at uri and
// returns QEMU's report once it completed.
func liveMigrate(src *qemuVM, uri string) (migration, error) {
	q, err := dialQMP(src)
	if err != nil {
		return migration{}, err
	}
	defer q.close()
	if _, err := q.run("migrate", map[string]any{"uri": uri}); err != nil {
		return migration{}, err
	}
	var m migration
	var fatal error
	err = labtest.Poll(3*time.Minute, func() error {
		r, err := q.run("query-migrate", nil)
		if err != nil {
			fatal = err
			return nil
		}
		m = migration{}
		if err := json.Unmarshal(r, &m); err != nil {
			fatal = err
			return nil
		}
		switch m.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			fatal = fmt.Errorf("migration %s: %s", m.Status, m.ErrorDesc)
			return nil
		}
		return fmt.Errorf("migration %s, %d bytes of RAM sent", m.Status, m.RAM.Transferred)
	})
	if fatal != nil {
		return m, fatal
	}
	return m, err
}

// streamSum is the SHA-256 of what the stream sender writes: the numbers
// from 0 to lines-1, one per line (a page of it that went stale shows).
func streamSum(lines int) string {
	h := sha256.New()
	var b []byte
	for i := 0; i < lines; i++ {
		b = strconv.AppendInt(b[:0], int64(i), 10)
		h.Write(append(b, '\n'))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestQEMULiveMigration moves a running guest between two daemons (VXLAN
// between two host namespaces) with the README's recipe: the destination
// daemon gets the vNIC with the source's exported connections
// (--fw-import), QEMU migrates (dirty-page logging by the back end), the
// source's vNIC is deleted. Meanwhile a third guest, on the source host,
// streams a known sequence into the migrating guest over a TCP
// connection that the migrating guest opened and that only the
// connection tables allow (its group has no inbound rule), at the rate
// the guests manage: the stream must arrive whole (its checksum compared
// with what was sent) and the connection survive on the destination.
// QEMU refuses to migrate without the back end's dirty log; a page the
// back end wrote and did not log is not reliably seen here (the guest's
// TCP drops and recovers a segment whose data went stale): the unit
// tests of the log check every mark.
func TestQEMULiveMigration(t *testing.T) {
	l := newLab(t)
	needQEMU(t)
	h1, h2 := l.OpenHostPair(labtest.IPv4, labtest.DaemonOpts{})
	a1, a3 := "10.42.0.1/24", "10.42.0.3/24"
	ip1, ip3 := vmIP(a1), vmIP(a3)
	mac1, mac3 := labtest.MACFor(1), labtest.MACFor(3)
	for _, h := range []*labtest.Host{h1, h2} {
		// sg-vm1: no rule, so nothing may open a connection to vm-1;
		// vm-1 may open any (the default egress).
		h.MustCLI("sg", "add", "sg-vm1")
	}
	s1 := addVhostNIC(h1, "vm-1", mac1, 42, a1, "sg-vm1")
	s3 := addVhostNIC(h1, "vm-3", mac3, 42, a3, "sg-open")
	src := startVM(l, vmOpts{name: "vm-1", socket: s1, mac: mac1, addr: a1})
	vm3 := startVM(l, vmOpts{name: "vm-3", socket: s3, mac: mac3, addr: a3})
	waitVMs(t, src, vm3)
	// vm-1 reaches vm-3, nothing reaches vm-1 unasked.
	src.Reaches(t, ip3)
	vm3.Blocked(t, ip1)

	// The stream: the numbers 0 to lines-1 (about 21 MB), sent as fast
	// as the guests go, so that the migration happens while vm-1
	// receives at full rate (received data not yet read by the guest
	// when it stops lives only in pages the back end wrote).
	const lines = 3_000_000
	send := fmt.Sprintf("setsid sh -c 'seq 0 %d | nc -l -p 5000' </dev/null >/dev/null 2>&1 3>&- &", lines-1)
	// Background commands get their own session and a long agent
	// timeout: the agent's timeout kills what it started when it expires.
	if _, err := vm3.Exec(10*time.Minute, send); err != nil {
		t.Fatal(err)
	}
	// Port 5000 (0x1388) listening (state 0A), on IPv4 or IPv6.
	err := labtest.Poll(10*time.Second, func() error {
		if _, err := vm3.Exec(5*time.Second, "cat /proc/net/tcp /proc/net/tcp6 | grep -q ':1388 0*:0000 0A'"); err != nil {
			return fmt.Errorf("sender not listening: %w", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The receiver keeps its stdin open (an EOF there would end its side
	// of the connection); sha256sum writes the checksum once the sender
	// closed.
	recv := "setsid sh -c 'sleep 600 | nc " + ip3 + " 5000 | sha256sum > /tmp/rx.sum' </dev/null >/dev/null 2>&1 3>&- &"
	if _, err := src.Exec(10*time.Minute, recv); err != nil {
		t.Fatal(err)
	}
	err = labtest.Poll(10*time.Second, func() error {
		out, err := h1.CLI("nic", "conntrack", "vm-1")
		if err != nil {
			return err
		}
		if !strings.Contains(out, ip3+":5000") {
			return fmt.Errorf("the stream is not in vm-1's connection table:\n%s", out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// The recipe: the destination's vNIC with the exported connections,
	// QEMU waiting for the guest, the migration, the source vNIC deleted.
	ct := filepath.Join(l.Dir, "vm-1.ct")
	h1.MustCLI("nic", "export", "vm-1", "--output", ct)
	out := h2.MustCLI("nic", "add", "--id", "vm-1", "--mac", mac1, "--vni", "42", "--ip", ip1, "--sg", "sg-vm1",
		"--type", "VHOST_USER_SERVER", "--fw-import", ct)
	s1b := strings.TrimSpace(out)
	msock := filepath.Join(l.Dir, "migrate.sock")
	uri := "unix:" + msock
	dst := startVM(l, vmOpts{name: "vm-1-dst", socket: s1b, mac: mac1, addr: a1, incoming: uri})
	labtest.Eventually(t, 30*time.Second, "the destination QEMU waits for the guest", func() error {
		_, err := os.Stat(msock)
		return err
	})
	start := time.Now()
	m, err := liveMigrate(src, uri)
	if err != nil {
		logCounters(h1, t, "vm-1", "vm-3")
		t.Fatal(err)
	}
	t.Logf("live migration (QEMU TCG, 256 MiB guest): total %d ms, downtime %d ms, %d MB of RAM sent; %v here",
		m.TotalTime, m.Downtime, m.RAM.Transferred>>20, time.Since(start).Round(100*time.Millisecond))
	h1.MustCLI("nic", "del", "vm-1")
	src.Stop()

	// The guest runs on host 2: it answers, and the stream ends whole.
	if err := dst.Reach(ip3); err != nil {
		t.Fatalf("the migrated guest cannot reach vm-3: %v", err)
	}
	want := streamSum(lines)
	var sum string
	err = labtest.Poll(2*time.Minute, func() error {
		out, err := dst.Exec(5*time.Second, "cat /tmp/rx.sum")
		if err != nil {
			return err
		}
		f := strings.Fields(out)
		if len(f) < 2 || len(f[0]) != sha256.Size*2 {
			return fmt.Errorf("stream not finished: %q", out)
		}
		sum = f[0]
		return nil
	})
	if err != nil {
		logCounters(h2, t, "vm-1")
		logCounters(h1, t, "vm-3")
		logGuestNet(t, dst, vm3)
		t.Fatal(err)
	}
	if sum != want {
		t.Fatalf("the stream arrived altered: sha256 %s, sent %s", sum, want)
	}
	// The connection crossed by state alone on host 2: none of vm-3's
	// IPv4 frames was dropped there (vm-3's router solicitations, which
	// vm-1's group does not let in, are).
	out, err = h2.CLI("nic", "drops", "vm-1")
	if err != nil || strings.Contains(out, " "+ip3) {
		t.Fatalf("vm-1 on host 2 dropped frames from vm-3: %v\n%s", err, out)
	}
	vhostLogClean(h1, t)
	vhostLogClean(h2, t)
}
