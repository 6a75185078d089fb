package e2e

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/apiclient"
	"github.com/butterfly-go/butterfly/internal/labtest"
)

// soakDuration is how long TestSoakChurn churns the configuration.
const soakDuration = 30 * time.Second

// TestSoakChurn: 30 s of configuration churn through the API (vNIC add
// and delete, rule add and delete on the group of two VMs exchanging
// traffic, member add and delete) while the VMs pass TCP: every transfer
// succeeds, and the daemon's goroutines, descriptors and heap do not grow
// (late samples against samples taken once the churn runs).
func TestSoakChurn(t *testing.T) {
	l := newLab(t)
	h := l.SingleHost(labtest.IPv4)
	h.Start(labtest.DaemonOpts{Extra: []string{"--metrics", "127.0.0.1:9464"}})
	h.MustCLI("sg", "rule", "add", "traffic", "--ip-proto", "all", "--sg-members", "traffic")
	h.MustCLI("sg", "rule", "add", "traffic", "--dir", "out", "--ip-proto", "all", "--cidr", "0.0.0.0/0")
	a := h.AddVM(labtest.NICSpec{ID: "soak-a", MAC: labtest.MACFor(1), VNI: 7, Addrs: []string{"42.0.0.1/24"}, SGs: []string{"traffic"}, Quiet: true})
	b := h.AddVM(labtest.NICSpec{ID: "soak-b", MAC: labtest.MACFor(2), VNI: 7, Addrs: []string{"42.0.0.2/24"}, SGs: []string{"traffic"}, Quiet: true})
	h.MustCLI("sg", "member", "add", "traffic", "42.0.0.1")
	h.MustCLI("sg", "member", "add", "traffic", "42.0.0.2")
	a.Reaches(t, b.IP(0))
	iperfServers(b, t, 5201)

	c, err := apiclient.Dial(h.Endpoint, apiclient.Options{Timeout: labtest.CmdTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	call := func(req *protocol.MessageV0_Request) error {
		resp, err := c.Call(&protocol.Messages{Messages: []*protocol.Message{{
			Revision:  proto.Uint32(protocol.Revision),
			Message_0: &protocol.MessageV0{Request: req},
		}}})
		if err != nil {
			return err
		}
		if st := resp.GetMessages()[0].GetMessage_0().GetResponse().GetStatus(); !st.GetStatus() {
			return fmt.Errorf("refused: %s", st.GetError().GetDescription())
		}
		return nil
	}
	rule := func(port uint32) *protocol.MessageV0_Rule {
		return &protocol.MessageV0_Rule{
			Direction: protocol.MessageV0_Rule_INBOUND.Enum(),
			Protocol:  proto.Int32(6),
			PortStart: proto.Uint32(port),
			PortEnd:   proto.Uint32(port),
			Cidr:      &protocol.MessageV0_Cidr{Address: proto.String("10.99.0.0"), MaskSize: proto.Uint32(16)},
		}
	}
	churn := func(i int) error {
		id := fmt.Sprintf("churn-%d", i%8)
		member := fmt.Sprintf("10.99.%d.%d", i/250%250, i%250+1)
		steps := []*protocol.MessageV0_Request{
			{NicAdd: &protocol.MessageV0_Nic{
				Id: proto.String(id), Mac: proto.String(labtest.MACFor(0x100 + i%8)), Vni: proto.Uint32(uint32(8 + i%3)),
				Ip: []string{fmt.Sprintf("43.0.0.%d", i%8+1)}, SecurityGroup: []string{"traffic"},
				Type: protocol.MessageV0_Nic_TAP.Enum(),
			}},
			{SgRuleAdd: &protocol.MessageV0_SgRuleAddReq{SgId: proto.String("traffic"), Rule: rule(uint32(2000 + i%1000))}},
			{SgMemberAdd: &protocol.MessageV0_SgMemberAddReq{SgId: proto.String("traffic"), Member: proto.String(member)}},
			{SgRuleDel: &protocol.MessageV0_SgRuleDelReq{SgId: proto.String("traffic"), Rule: rule(uint32(2000 + i%1000))}},
			{SgMemberDel: &protocol.MessageV0_SgMemberDelReq{SgId: proto.String("traffic"), Member: proto.String(member)}},
			{NicDel: proto.String(id)},
		}
		for _, r := range steps {
			if err := call(r); err != nil {
				return fmt.Errorf("churn %d: %v: %w", i, r, err)
			}
		}
		return nil
	}

	type sample struct{ goroutines, fds, heap float64 }
	scrape := func() sample {
		t.Helper()
		out := labtest.Must(t, "ip", "netns", "exec", h.NS, "busybox", "wget", "-qO-", "http://127.0.0.1:9464/metrics")
		m := map[string]float64{}
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 2 && !strings.HasPrefix(f[0], "#") {
				if v, err := strconv.ParseFloat(f[1], 64); err == nil {
					m[f[0]] = v
				}
			}
		}
		s := sample{m["go_goroutines"], m["process_open_fds"], m["go_memstats_heap_inuse_bytes"]}
		if s.goroutines == 0 || s.fds == 0 || s.heap == 0 {
			t.Fatalf("metrics lack go_goroutines, process_open_fds or go_memstats_heap_inuse_bytes:\n%s", out)
		}
		return s
	}

	var wg sync.WaitGroup
	stop := make(chan struct{})
	var transfers int
	var trafficErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := iperfFrom(a, b.IP(0), 5201, false, 20*time.Second); err != nil {
				trafficErr = fmt.Errorf("transfer %d: %w", transfers+1, err)
				return
			}
			transfers++
		}
	}()

	var early, late []sample
	start := time.Now()
	var churnErr error
	for i := 0; time.Since(start) < soakDuration; i++ {
		if churnErr = churn(i); churnErr != nil {
			break
		}
		if i%20 == 0 {
			switch since := time.Since(start); {
			case since > 5*time.Second && since < 12*time.Second:
				early = append(early, scrape())
			case since > soakDuration-7*time.Second:
				late = append(late, scrape())
			}
		}
	}
	close(stop)
	wg.Wait()
	if churnErr != nil {
		t.Fatal(churnErr)
	}
	if trafficErr != nil {
		t.Fatal(trafficErr)
	}
	if transfers < 3 || len(early) == 0 || len(late) == 0 {
		t.Fatalf("%d transfers, %d early and %d late samples: the churn or the traffic did not run", transfers, len(early), len(late))
	}
	minOf := func(ss []sample) sample {
		m := ss[0]
		for _, s := range ss[1:] {
			m.goroutines, m.fds, m.heap = min(m.goroutines, s.goroutines), min(m.fds, s.fds), min(m.heap, s.heap)
		}
		return m
	}
	e, lt := minOf(early), minOf(late)
	t.Logf("%d transfers; early goroutines %.0f fds %.0f heap %.1f MB; late %.0f %.0f %.1f MB",
		transfers, e.goroutines, e.fds, e.heap/1e6, lt.goroutines, lt.fds, lt.heap/1e6)
	if lt.goroutines > e.goroutines+4 {
		t.Errorf("goroutines grew from %.0f to %.0f", e.goroutines, lt.goroutines)
	}
	if lt.fds > e.fds+4 {
		t.Errorf("open fds grew from %.0f to %.0f", e.fds, lt.fds)
	}
	if lt.heap > 1.5*e.heap+8e6 {
		t.Errorf("heap in use grew from %.1f MB to %.1f MB", e.heap/1e6, lt.heap/1e6)
	}
	a.Reaches(t, b.IP(0))
}
