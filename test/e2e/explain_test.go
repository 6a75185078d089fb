package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// TestExplainCLI: butterfly explain, through the CLI and a running daemon
// with two VMs, agrees with what the daemon does: a flow the ingress rule
// allows is delivered (and explain names the rule), another port is
// dropped as firewall_no_rule (and the real packet is, counted so on the
// destination, and logged in its nic drops); explaining tracks no
// connection; an invalid question exits 1.
func TestExplainCLI(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	h := l.SingleHost(labtest.IPv4)
	h.Start(labtest.DaemonOpts{})
	vm1 := h.AddVM(labtest.NICSpec{ID: "nic-1", MAC: labtest.MACFor(1), VNI: 42, Addrs: []string{"42.0.0.1/24"}, Quiet: true})
	vm2 := h.AddVM(labtest.NICSpec{ID: "nic-2", MAC: labtest.MACFor(2), VNI: 42, Addrs: []string{"42.0.0.2/24"}, Quiet: true})
	serveEcho(vm2, t)
	h.MustCLI("sg", "rule", "add", "sg-1", "--ip-proto", "udp", "--port", "5554", "--cidr", "0.0.0.0/0")
	h.MustCLI("nic", "sg", "set", "nic-2", "sg-1")
	// Real traffic first: the switch learns both MACs.
	if err := labtest.Poll(labtest.SettleTimeout, func() error { return echo(vm1, "udp", "42.0.0.2", 5554) }); err != nil {
		t.Fatal(err)
	}
	// The rule as "sg rule list" prints it, after its hash.
	_, rule, _ := strings.Cut(strings.TrimSpace(h.MustCLI("sg", "rule", "list", "sg-1")), " | ")

	out := h.MustCLI("explain", "--from", "nic-1", "--dst", "42.0.0.2", "--proto", "udp", "--dport", "5554", "--sport", "40001")
	if labtest.LastLine(out) != "verdict: deliver vNIC nic-2" || !strings.Contains(out, "rule of group sg-1: "+rule) ||
		!strings.Contains(out, "was learnt on local vNIC nic-2") {
		t.Errorf("explain of an allowed flow:\n%s\nwant delivery to nic-2 by the rule %q of sg-1", out, rule)
	}
	if ct := h.MustCLI("nic", "conntrack", "nic-1"); strings.Contains(ct, ":40001") {
		t.Errorf("explain tracked the flow it explained:\n%s", ct)
	}

	before := dropCount(h, t, "nic-2", "firewall_no_rule")
	out = h.MustCLI("explain", "--from", "nic-1", "--dst", "42.0.0.2", "--proto", "udp", "--dport", "5555")
	if labtest.LastLine(out) != "verdict: drop firewall_no_rule" || !strings.Contains(out, "no INBOUND rule allows it") {
		t.Errorf("explain of a flow no rule allows:\n%s\nwant drop firewall_no_rule", out)
	}
	if after := dropCount(h, t, "nic-2", "firewall_no_rule"); after != before {
		t.Errorf("explain changed nic-2's firewall_no_rule from %d to %d", before, after)
	}
	if err := echo(vm1, "udp", "42.0.0.2", 5555); err == nil {
		t.Error("udp 5555 passed, explain said it is dropped")
	}
	labtest.Eventually(t, labtest.SettleTimeout, "nic-2 to count the drop", func() error {
		if after := dropCount(h, t, "nic-2", "firewall_no_rule"); after == before {
			return fmt.Errorf("firewall_no_rule still %d", after)
		}
		return nil
	})

	// The frame dropped is in nic-2's drop log, last.
	drops := h.MustCLI("nic", "drops", "nic-2", "-n", "1")
	if !strings.Contains(drops, " firewall_no_rule ") || !strings.Contains(drops, "IPv4 42.0.0.1 > 42.0.0.2 UDP ") ||
		!strings.Contains(drops, " > 5555, ") || strings.Count(drops, "\n") != 1 {
		t.Errorf("nic drops nic-2 -n 1:\n%s\nwant the UDP 5555 datagram dropped as firewall_no_rule", drops)
	}

	// An invalid question: no vNIC of VNI 42 here has 42.0.0.9.
	if out, err := h.CLI("explain", "--from", "nic-1", "--dst", "42.0.0.9", "--proto", "tcp"); err == nil {
		t.Errorf("explain towards an unknown address without --dst-mac succeeded:\n%s", out)
	} else if !strings.Contains(err.Error(), "give the destination MAC") {
		t.Errorf("explain towards an unknown address: %v", err)
	}
}
