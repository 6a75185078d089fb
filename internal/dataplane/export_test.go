package dataplane

import (
	"errors"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/firewall"
	"github.com/butterfly-go/butterfly/internal/model"
)

// closedNIC is vNIC b (10.0.0.2) in group "closed", which has no rule:
// nothing may open a flow towards it, and it keeps the default egress.
func closedNIC(imp []byte) model.NIC {
	n := nicOf("b", mac(2), 5, "10.0.0.2")
	n.SecurityGroups = []string{"closed"}
	n.Import = imp
	return n
}

// TestExportImportNIC moves vNIC b's tracked flows to a new b: a's reply
// to b's flow passes only because of the import.
func TestExportImportNIC(t *testing.T) {
	h := newHarness(t, Config{}, true)
	if err := h.e.SetSecurityGroups([]model.SG{openSG(), {ID: "closed"}}); err != nil {
		t.Fatal(err)
	}
	a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
	b := h.add(t, closedNIC(nil))
	b.inject(udpFlow(t, false, 3000, 4000)) // b opens a flow to a
	h.step()
	if len(a.take()) != 1 {
		t.Fatal("b's flow did not reach a")
	}
	reply := func(to *fakePort) int {
		a.inject(udpFlow(t, true, 4000, 3000))
		h.step()
		return len(to.take())
	}
	if reply(b) != 1 {
		t.Fatal("a's reply did not reach b")
	}

	data, err := h.e.ExportNIC("b")
	if err != nil {
		t.Fatal(err)
	}
	recs, err := firewall.ParseExport(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Dir != firewall.FromVM || recs[0].Src != netip.MustParseAddr("10.0.0.2") ||
		recs[0].SrcPort != 3000 || recs[0].DstPort != 4000 || !recs[0].Replied {
		t.Fatalf("export of b: %v", recs)
	}
	if _, err := h.e.ExportNIC("nope"); err == nil {
		t.Error("export of an unknown vNIC succeeded")
	}

	used := h.e.ctLimit.Used()
	t.Run("invalid import adds nothing", func(t *testing.T) {
		bad := append([]byte(nil), data...)
		bad[len(bad)-1] ^= 1
		n := closedNIC(bad)
		n.ID = "c"
		_, err := h.e.AddNIC(n)
		if err == nil || !strings.Contains(err.Error(), "fw_import") || !errors.Is(err, firewall.ErrExportFormat) {
			t.Fatalf("AddNIC with corrupt data: %v", err)
		}
		h.mu.Lock()
		_, opened := h.ports["c"]
		h.mu.Unlock()
		if _, ok := h.e.nics["c"]; ok || opened {
			t.Fatalf("vNIC c exists (%v) or its port was opened (%v)", ok, opened)
		}
		if got := h.e.ctLimit.Used(); got != used {
			t.Fatalf("connections tracked in total: %d, want %d", got, used)
		}
	})

	for _, c := range []struct {
		name   string
		imp    []byte
		passes bool
	}{
		{"with the import the reply passes", data, true},
		{"without it the reply is dropped", nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := h.e.DeleteNIC("b"); err != nil {
				t.Fatal(err)
			}
			b := h.add(t, closedNIC(c.imp))
			if got := reply(b); got != map[bool]int{true: 1}[c.passes] {
				t.Fatalf("%d frames reached the new b", got)
			}
			cnt, err := h.e.Counters("b")
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]uint64{false: 1}[c.passes]; cnt.Drops["firewall_no_rule"] != want {
				t.Errorf("b drops %v, want firewall_no_rule %d", cnt.Drops, want)
			}
		})
	}
}

// TestExportWhileForwarding exports a vNIC's table again and again while
// the workers track new flows of that vNIC: the worker that owns the table
// serializes it (run with -race).
func TestExportWhileForwarding(t *testing.T) {
	h := newHarness(t, Config{Workers: 2, ConntrackMax: 1024}, false)
	a := h.add(t, nicOf("a", mac(1), 5, "10.0.0.1"))
	b := h.add(t, nicOf("b", mac(2), 5, "10.0.0.2"))
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for p := 0; !stop.Load(); p++ {
			a.inject(udpFlow(t, true, uint16(1+p%512), 53))
			for len(b.take()) == 0 && !stop.Load() {
				runtime.Gosched()
			}
		}
	}()
	// At least 20 exports, and until one holds a flow (the sender may
	// start late on a loaded machine).
	most := 0
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; i < 20 || most == 0 && time.Now().Before(deadline); i++ {
		data, err := h.e.ExportNIC("a")
		if err != nil {
			t.Fatal(err)
		}
		recs, err := firewall.ParseExport(data)
		if err != nil {
			t.Fatal(err)
		}
		most = max(most, len(recs))
	}
	stop.Store(true)
	wg.Wait()
	if most == 0 {
		t.Fatal("no export held a flow")
	}
}
