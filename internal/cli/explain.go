package cli

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
)

// explainFlags are the options of "explain".
type explainFlags struct {
	from, dst, src, proto, frame, dstMAC, tcpFlags string
	sport, dport                                   string
}

func explainCommand(seg *segment) *cobra.Command {
	var f explainFlags
	return leaf(seg, leafSpec{
		use:   "explain --from NIC (--dst IP --proto tcp|udp|icmp|N [--dport P] [--sport P] [--src IP] [--dst-mac MAC] [--tcp-flags F] | --frame HEX)",
		short: "Show what the switch would do now with a packet a vNIC sends",
		long: `Show each decision the daemon would take now for a packet sent by a vNIC,
without sending anything and without changing any state: anti-spoofing,
the egress firewall (the rule and group that allow the flow, the default
egress, or no rule; the tracked connection if there is one), the switch
(local vNIC, remote VTEP or flood), then the ingress firewall of each
destination vNIC. The last line is "verdict: deliver <where>" or
"verdict: drop <reason>", the reason named as "nic counters" names it.
The exit status is 0 whatever the verdict, 1 when the question is invalid.

The packet is described (--dst and --proto at least) or given whole as an
Ethernet frame in hex (--frame). A described packet comes from the vNIC's
MAC and its first address of the destination's family (--src to change
it), goes to the MAC of the vNIC of the same VNI on this host that has the
destination address (--dst-mac for any other), is a TCP SYN (--tcp-flags
syn,ack,fin,rst,psh to change it), a UDP datagram, an ICMP echo request
(--sport: its identifier) or a bare IP packet of another protocol. Ports
default to 40000 (source) and 0. This command is an extension of this
implementation.`,
		example: `  butterfly explain --from vm-1 --dst 42.0.0.2 --proto tcp --dport 22
  butterfly explain --from vm-1 --frame 52540000000252540000000108060001...`,
		maxArgs: 0,
		flags: func(c *cobra.Command) {
			fl := c.Flags()
			fl.StringVar(&f.from, "from", "", "the vNIC that sends the packet")
			fl.StringVar(&f.dst, "dst", "", "destination IP address")
			fl.StringVar(&f.src, "src", "", "source IP address (default: the vNIC's first address of the family)")
			fl.StringVar(&f.proto, "proto", "", "IP protocol: tcp, udp, icmp or a number")
			fl.StringVar(&f.sport, "sport", "", "source port (ICMP: echo identifier)")
			fl.StringVar(&f.dport, "dport", "", "destination port")
			fl.StringVar(&f.dstMAC, "dst-mac", "", "destination MAC (default: the local vNIC with the destination address)")
			fl.StringVar(&f.tcpFlags, "tcp-flags", "", "TCP flags, comma-separated: syn, ack, fin, rst, psh (default syn)")
			fl.StringVar(&f.frame, "frame", "", "a whole Ethernet frame in hex")
			completeFlag(c, "from", nicArg)
			completeFlag(c, "proto", anyArg, "tcp", "udp", "icmp")
		},
		build: func(c *cobra.Command, _ []string) (func(*session) error, error) {
			req, err := explainRequest(c, &f)
			if err != nil {
				return nil, err
			}
			return func(s *session) error {
				r, err := s.exec1(&protocol.MessageV0_Request{Explain: req})
				if err != nil {
					return err
				}
				x := r.GetExplain()
				if x == nil {
					return errors.New("error: no explanation received (the daemon does not implement explain)")
				}
				for _, l := range x.GetStep() {
					fmt.Fprintln(s.stdout, l)
				}
				fmt.Fprintln(s.stdout, "verdict: "+x.GetVerdict())
				return nil
			}, nil
		},
	})
}

// explainRequest checks the options and builds the request.
func explainRequest(c *cobra.Command, f *explainFlags) (*protocol.MessageV0_ExplainReq, error) {
	fl := c.Flags()
	if f.from == "" {
		return nil, usagef(c, "--from is required")
	}
	req := &protocol.MessageV0_ExplainReq{NicId: proto.String(f.from)}
	described := []string{"dst", "src", "proto", "sport", "dport", "dst-mac", "tcp-flags"}
	if fl.Changed("frame") {
		for _, n := range described {
			if fl.Changed(n) {
				return nil, usagef(c, "--frame cannot be combined with --%s", n)
			}
		}
		b, err := hex.DecodeString(strings.NewReplacer(" ", "", ":", "").Replace(f.frame))
		if err != nil || len(b) == 0 {
			return nil, usagef(c, "--frame: want an Ethernet frame in hex")
		}
		req.Frame = b
		return req, nil
	}
	if f.dst == "" || f.proto == "" {
		return nil, usagef(c, "--dst and --proto are required (or --frame)")
	}
	dst, err := netip.ParseAddr(f.dst)
	if err != nil {
		return nil, usagef(c, "--dst: %q is not an IP address", f.dst)
	}
	req.Dst = proto.String(dst.String())
	if f.src != "" {
		src, err := netip.ParseAddr(f.src)
		if err != nil {
			return nil, usagef(c, "--src: %q is not an IP address", f.src)
		}
		req.Src = proto.String(src.String())
	}
	var p uint32
	switch strings.ToLower(f.proto) {
	case "tcp":
		p = 6
	case "udp":
		p = 17
	case "icmp":
		p = 1
		if dst.Unmap().Is6() {
			p = 58
		}
	default:
		n, err := strconv.ParseUint(f.proto, 10, 8)
		if err != nil {
			return nil, usagef(c, "--proto: want tcp, udp, icmp or a number from 0 to 255, got %q", f.proto)
		}
		p = uint32(n)
	}
	req.Protocol = proto.Uint32(p)
	for _, pf := range []struct {
		name, val string
		dst       **uint32
	}{{"sport", f.sport, &req.Sport}, {"dport", f.dport, &req.Dport}} {
		if !fl.Changed(pf.name) {
			continue
		}
		n, err := strconv.ParseUint(pf.val, 10, 16)
		if err != nil {
			return nil, usagef(c, "--%s: want a port from 0 to 65535, got %q", pf.name, pf.val)
		}
		*pf.dst = proto.Uint32(uint32(n))
	}
	if f.dstMAC != "" {
		req.DstMac = proto.String(f.dstMAC)
	}
	if fl.Changed("tcp-flags") {
		if p != 6 {
			return nil, usagef(c, "--tcp-flags goes with --proto tcp")
		}
		var flags uint32
		for _, w := range strings.Split(strings.ToLower(f.tcpFlags), ",") {
			bit, ok := map[string]uint32{"fin": 1, "syn": 2, "rst": 4, "psh": 8, "ack": 16}[strings.TrimSpace(w)]
			if !ok {
				return nil, usagef(c, "--tcp-flags: want syn, ack, fin, rst or psh, comma-separated, got %q", w)
			}
			flags |= bit
		}
		req.TcpFlags = proto.Uint32(flags)
	}
	return req, nil
}

// defaultDrops is the number of drops "nic drops" prints without -n.
const defaultDrops = 10

func nicDropsCommand(seg *segment) *cobra.Command {
	var count int
	return leaf(seg, leafSpec{
		use:   "drops NIC [-n N]",
		short: "Print the last frames a vNIC dropped, with the reason",
		long: `Print the last frames dropped and counted on a vNIC, oldest first, one per
line: the time (UTC), the drop reason as "nic counters" names it, and a
decode of the frame's first bytes with its length. The daemon keeps the
last 32 drops of each vNIC per packet worker. This command is an extension
of this implementation.`,
		example:  `  butterfly nic drops vm-1 -n 5`,
		minArgs:  1,
		maxArgs:  1,
		argNames: []string{"NIC id"},
		complete: []argKind{nicArg},
		flags: func(c *cobra.Command) {
			c.Flags().IntVarP(&count, "count", "n", defaultDrops, "print at most the last N drops")
		},
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			if count < 0 {
				return nil, usagef(c, "-n: want a number of drops, 0 or more, got %d", count)
			}
			return func(s *session) error {
				r, err := s.exec1(&protocol.MessageV0_Request{NicDrops: &protocol.MessageV0_NicDropsReq{
					NicId: proto.String(args[0]), Count: proto.Uint32(uint32(min(count, 1<<20)))}})
				if err != nil {
					return err
				}
				d := r.GetNicDrops()
				if d == nil {
					return errors.New("error: no nic drops received (the daemon does not implement nic_drops)")
				}
				for _, f := range d.GetFrame() {
					fmt.Fprintf(s.stdout, "%s %s %s\n", time.Unix(0, f.GetTimeNs()).UTC().Format("2006-01-02T15:04:05.000000Z"),
						f.GetReason(), f.GetDecode())
				}
				return nil
			}, nil
		},
	})
}
