// Command apibench measures how fast a running butterflyd applies a large
// configuration through its API: it creates N vNICs (one request each),
// then G security groups of R rules (one sg_rule_add request per rule; every
// group is used by N/G of the vNICs, so each rule recompiles their
// policies), and prints the times as "RESULT" lines. The api section of the benchmark
// program (scripts/bench) makes these and more measures on a daemon of its own;
// apibench is for a daemon already running.
//
//	apibench -e ipc:///tmp/x/api [-nics 1000] [-groups 100] [-rules 100] [-type VHOST_USER_SERVER]
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/labtest"
)

func main() {
	endpoint := flag.String("e", "", "API endpoint of the daemon")
	nics := flag.Int("nics", 1000, "vNICs to create")
	groups := flag.Int("groups", 100, "security groups to create")
	rules := flag.Int("rules", 100, "rules per security group")
	typ := flag.String("type", "VHOST_USER_SERVER", "vNIC type: VHOST_USER_SERVER or TAP")
	label := flag.String("label", "", "added to the RESULT names (api-nic-add<label>)")
	flag.Parse()
	if err := run(*endpoint, *nics, *groups, *rules, *typ, *label); err != nil {
		fmt.Fprintln(os.Stderr, "apibench:", err)
		os.Exit(1)
	}
}

func run(endpoint string, nics, groups, rules int, typ, label string) error {
	t, ok := protocol.MessageV0_Nic_Type_value[typ]
	if !ok {
		return fmt.Errorf("unknown vNIC type %q", typ)
	}
	if groups < 1 || rules < 1 || rules > 65535 || nics < 0 || nics > 1<<24 {
		return errors.New("need 1 <= groups, 1 <= rules <= 65535, 0 <= nics <= 2^24")
	}
	c, err := labtest.DialAPI(endpoint, 60*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()

	start := time.Now()
	for i := range nics {
		k := i + 1 // address 10.a.b.c from k: never .256
		n := &protocol.MessageV0_Nic{
			Id:            proto.String(fmt.Sprintf("bench-%d", i)),
			Mac:           proto.String(fmt.Sprintf("52:54:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff)),
			Vni:           proto.Uint32(uint32(1000 + i%100)),
			Ip:            []string{fmt.Sprintf("10.%d.%d.%d", k>>16&0xff, k>>8&0xff, k&0xff)},
			SecurityGroup: []string{fmt.Sprintf("sg-%d", i%groups)},
			Type:          protocol.MessageV0_Nic_Type(t).Enum(),
		}
		if _, err := c.Call(&protocol.MessageV0_Request{NicAdd: n}); err != nil {
			return fmt.Errorf("nic_add %d: %w", i, err)
		}
	}
	nicTime := time.Since(start)
	fmt.Printf("RESULT api-nic-add%s | %d vNICs (%s), one request each | %.2f s | %.0f requests/s\n",
		label, nics, typ, nicTime.Seconds(), float64(nics)/nicTime.Seconds())

	start = time.Now()
	for g := range groups {
		for r := range rules {
			req := &protocol.MessageV0_Request{SgRuleAdd: &protocol.MessageV0_SgRuleAddReq{
				SgId: proto.String(fmt.Sprintf("sg-%d", g)),
				Rule: &protocol.MessageV0_Rule{
					Direction: protocol.MessageV0_Rule_INBOUND.Enum(),
					Protocol:  proto.Int32(6),
					PortStart: proto.Uint32(uint32(1000 + r)),
					PortEnd:   proto.Uint32(uint32(1000 + r)),
					Cidr:      &protocol.MessageV0_Cidr{Address: proto.String(fmt.Sprintf("10.%d.0.0", g%256)), MaskSize: proto.Uint32(16)},
				},
			}}
			if _, err := c.Call(req); err != nil {
				return fmt.Errorf("sg_rule_add %d/%d: %w", g, r, err)
			}
		}
	}
	ruleTime := time.Since(start)
	fmt.Printf("RESULT api-sg-rules%s | %d groups x %d rules, one request each, %d vNICs per group | %.2f s | %.0f requests/s\n",
		label, groups, rules, nics/groups, ruleTime.Seconds(), float64(groups*rules)/ruleTime.Seconds())

	rtt, err := c.RoundTrips(groups*rules, "sg-0")
	if err != nil {
		return err
	}
	fmt.Printf("RESULT api-round-trip%s | %d sg_member_list requests (no change), one each | %.2f s | %.0f µs each\n",
		label, groups*rules, rtt.Seconds(), float64(rtt.Microseconds())/float64(groups*rules))
	return nil
}
