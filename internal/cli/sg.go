package cli

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/cxxhash"
)

func sgCommand(seg *segment) *cobra.Command {
	return group("sg", "Manage security groups",
		`Create and remove security groups, and manage their rules and members.
A vNIC accepts inbound traffic allowed by a rule of one of its groups.`,
		sgListCommand(seg),
		sgAddCommand(seg),
		sgDelCommand(seg),
		group("rule", "Manage the rules of a security group",
			`List, add and remove the firewall rules of a security group.`,
			sgRuleListCommand(seg),
			sgRuleAddCommand(seg),
			sgRuleDelCommand(seg),
		),
		group("member", "Manage the members of a security group",
			`The members of a group are IP addresses; a rule may allow traffic from the
members of a group instead of a CIDR (--sg-members).`,
			sgMemberListCommand(seg),
			sgMemberAddCommand(seg),
			sgMemberDelCommand(seg),
		),
	)
}

func sgListCommand(seg *segment) *cobra.Command {
	return leaf(seg, leafSpec{
		use:   "list",
		short: "Print the id of every security group, one per line",
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			return sendPrintLines(&protocol.MessageV0_Request{SgList: proto.Bool(true)}, (*protocol.MessageV0_Response).GetSgList), nil
		},
	})
}

func sgAddCommand(seg *segment) *cobra.Command {
	return leaf(seg, leafSpec{
		use:   "add SG [SG...]",
		short: "Create empty security groups",
		long: `Create security groups with no rule and no member.
Beware: adding a group that exists replaces it with an empty one.`,
		minArgs:  1,
		maxArgs:  -1,
		argNames: []string{"security group"},
		complete: []argKind{sgArg},
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			return sendEach(args, func(a string) *protocol.MessageV0_Request {
				return &protocol.MessageV0_Request{SgAdd: &protocol.MessageV0_Sg{Id: proto.String(a)}}
			}), nil
		},
	})
}

func sgDelCommand(seg *segment) *cobra.Command {
	return leaf(seg, leafSpec{
		use:      "del SG [SG...]",
		short:    "Remove security groups (removing an unknown group succeeds)",
		minArgs:  1,
		maxArgs:  -1,
		argNames: []string{"security group"},
		complete: []argKind{sgArg},
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			return sendEach(args, func(a string) *protocol.MessageV0_Request {
				return &protocol.MessageV0_Request{SgDel: proto.String(a)}
			}), nil
		},
	})
}

// ruleHash names a rule as the original client does: libstdc++
// std::hash<std::string> of the rule's C++ text format, as 16 hex digits.
func ruleHash(r *protocol.MessageV0_Rule) string {
	return fmt.Sprintf("%016x", cxxhash.String(cxxText(r)))
}

// absent is printed for a rule field that is not set.
const absent = "Ø"

// ruleLine is the "sg rule list" line of a rule.
func ruleLine(r *protocol.MessageV0_Rule) string {
	opt := func(set bool, v string) string {
		if set {
			return v
		}
		return absent
	}
	cidr := absent
	if c := r.GetCidr(); c != nil {
		cidr = fmt.Sprintf("%s/%d", c.GetAddress(), c.GetMaskSize())
	}
	return fmt.Sprintf("%s | direction: %s - IP protocol: %d - port start: %s - port end: %s - cidr: %s - members of sg: %s",
		ruleHash(r), r.GetDirection(), r.GetProtocol(),
		opt(r.PortStart != nil, strconv.FormatUint(uint64(r.GetPortStart()), 10)),
		opt(r.PortEnd != nil, strconv.FormatUint(uint64(r.GetPortEnd()), 10)),
		cidr,
		opt(r.SecurityGroup != nil, r.GetSecurityGroup()))
}

func sgRuleListCommand(seg *segment) *cobra.Command {
	return leaf(seg, leafSpec{
		use:   "list SG",
		short: "Print the rules of a security group, one per line",
		long: `Print the rules of a security group, one per line:

  <hash> | direction: INBOUND - IP protocol: 6 - port start: 22 - port end: 22 - cidr: 10.0.0.0/24 - members of sg: Ø

"Ø" marks a field the rule does not have. The hash names the rule for
"butterfly sg rule del SG HASH"; it is the same as the original client's.`,
		minArgs:  1,
		maxArgs:  1,
		argNames: []string{"security group"},
		complete: []argKind{sgArg},
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			return func(s *session) error {
				r, err := s.exec1(&protocol.MessageV0_Request{SgRuleList: proto.String(args[0])})
				if err != nil {
					return err
				}
				for _, rule := range r.GetSgRuleList() {
					fmt.Fprintln(s.stdout, ruleLine(rule))
				}
				return nil
			}, nil
		},
	})
}

// ruleFlags are the options that describe a rule.
type ruleFlags struct {
	dir, proto, port, portStart, portEnd, cidr, members string
}

const ruleOptionsHelp = `Rule options:
  --dir in|out         direction, inbound (default) or outbound
  --ip-proto PROTO     tcp, udp, icmp, all (any protocol) or a number from
                       -1 (any) to 255, e.g. 58 for ICMPv6 (required)
  --port P             a single port (tcp and udp)
  --port-start A --port-end B
                       a port range, 0 to 65535 (tcp and udp need ports)
  --cidr ADDR/LEN      allow this IPv4 or IPv6 prefix
  --sg-members SG      allow the member addresses of this security group
Exactly one of --cidr and --sg-members is required.`

func (rf *ruleFlags) register(c *cobra.Command) {
	f := c.Flags()
	f.StringVar(&rf.dir, "dir", "in", "direction: in or out")
	f.StringVar(&rf.proto, "ip-proto", "", "protocol: tcp, udp, icmp, all, or -1 to 255")
	f.StringVar(&rf.port, "port", "", "single port, 0 to 65535")
	f.StringVar(&rf.portStart, "port-start", "", "first port of a range")
	f.StringVar(&rf.portEnd, "port-end", "", "last port of a range")
	f.StringVar(&rf.cidr, "cidr", "", "allowed prefix, as 10.0.0.0/24 or 2001:db8::/32")
	f.StringVar(&rf.members, "sg-members", "", "security group whose members are allowed")
	completeFlag(c, "dir", anyArg, "in", "out")
	completeFlag(c, "ip-proto", anyArg, "tcp", "udp", "icmp", "all")
	completeFlag(c, "sg-members", sgArg)
}

// any reports whether a rule option was given.
func (rf *ruleFlags) any(c *cobra.Command) bool {
	for _, n := range []string{"dir", "ip-proto", "port", "port-start", "port-end", "cidr", "sg-members"} {
		if c.Flags().Changed(n) {
			return true
		}
	}
	return false
}

func parsePort(c *cobra.Command, flag, v string) (uint32, error) {
	p, err := strconv.ParseUint(v, 10, 32)
	if err != nil || p > 65535 {
		return 0, usagef(c, "--%s: want a port from 0 to 65535, got %q", flag, v)
	}
	return uint32(p), nil
}

// rule builds and checks the rule the options describe.
func (rf *ruleFlags) rule(c *cobra.Command) (*protocol.MessageV0_Rule, error) {
	r := &protocol.MessageV0_Rule{}
	switch rf.dir {
	case "in":
		r.Direction = protocol.MessageV0_Rule_INBOUND.Enum()
	case "out":
		r.Direction = protocol.MessageV0_Rule_OUTBOUND.Enum()
	default:
		return nil, usagef(c, "--dir: want in or out, got %q", rf.dir)
	}

	if !c.Flags().Changed("ip-proto") {
		return nil, usagef(c, "--ip-proto is required")
	}
	switch strings.ToLower(rf.proto) {
	case "tcp":
		r.Protocol = proto.Int32(6)
	case "udp":
		r.Protocol = proto.Int32(17)
	case "icmp":
		r.Protocol = proto.Int32(1)
	case "all":
		r.Protocol = proto.Int32(-1)
	default:
		p, err := strconv.ParseInt(rf.proto, 10, 32)
		if err != nil || p < -1 || p > 255 {
			return nil, usagef(c, "--ip-proto: want tcp, udp, icmp, all or a number from -1 to 255, got %q", rf.proto)
		}
		r.Protocol = proto.Int32(int32(p))
	}

	hasPort := c.Flags().Changed("port")
	hasStart, hasEnd := c.Flags().Changed("port-start"), c.Flags().Changed("port-end")
	switch {
	case hasPort && (hasStart || hasEnd):
		return nil, usagef(c, "--port cannot be combined with --port-start or --port-end")
	case hasPort:
		p, err := parsePort(c, "port", rf.port)
		if err != nil {
			return nil, err
		}
		r.PortStart, r.PortEnd = proto.Uint32(p), proto.Uint32(p)
	case hasStart || hasEnd:
		if !hasStart || !hasEnd {
			return nil, usagef(c, "--port-start and --port-end go together")
		}
		a, err := parsePort(c, "port-start", rf.portStart)
		if err != nil {
			return nil, err
		}
		b, err := parsePort(c, "port-end", rf.portEnd)
		if err != nil {
			return nil, err
		}
		if a > b {
			return nil, usagef(c, "wrong port configuration: --port-start %d is above --port-end %d", a, b)
		}
		r.PortStart, r.PortEnd = proto.Uint32(a), proto.Uint32(b)
	}
	if p := r.GetProtocol(); (p == 6 || p == 17) && r.PortStart == nil {
		return nil, usagef(c, "wrong port configuration: tcp and udp rules need --port or --port-start and --port-end")
	}

	hasCIDR, hasMembers := c.Flags().Changed("cidr"), c.Flags().Changed("sg-members")
	switch {
	case hasCIDR && hasMembers:
		return nil, usagef(c, "--cidr cannot be combined with --sg-members")
	case hasCIDR:
		addr, mask, ok := strings.Cut(rf.cidr, "/")
		if !ok || addr == "" || mask == "" {
			return nil, usagef(c, "--cidr: want ADDRESS/LENGTH, got %q", rf.cidr)
		}
		if _, err := netip.ParsePrefix(rf.cidr); err != nil {
			return nil, usagef(c, "--cidr: %q is not an IPv4 or IPv6 prefix", rf.cidr)
		}
		m, err := strconv.ParseUint(mask, 10, 32)
		if err != nil {
			return nil, usagef(c, "--cidr: bad prefix length in %q", rf.cidr)
		}
		r.Cidr = &protocol.MessageV0_Cidr{Address: proto.String(addr), MaskSize: proto.Uint32(uint32(m))}
	case hasMembers:
		if rf.members == "" {
			return nil, usagef(c, "--sg-members: empty security group")
		}
		r.SecurityGroup = proto.String(rf.members)
	default:
		return nil, usagef(c, "one of --cidr and --sg-members is required")
	}
	return r, nil
}

func sgRuleAddCommand(seg *segment) *cobra.Command {
	var rf ruleFlags
	return leaf(seg, leafSpec{
		use:   "add SG --ip-proto PROTO (--cidr ADDR/LEN | --sg-members SG) [options]",
		short: "Add a firewall rule to a security group (created if missing)",
		long: `Add a rule to a security group; the group is created if it does not
exist, and adding a rule that exists changes nothing.

` + ruleOptionsHelp,
		example: `  butterfly sg rule add web --ip-proto tcp --port 22 --cidr 10.0.0.0/24
  butterfly sg rule add web --ip-proto udp --port-start 8000 --port-end 8100 --sg-members front
  butterfly sg rule add web --dir out --ip-proto all --cidr ::/0`,
		minArgs:  1,
		maxArgs:  1,
		argNames: []string{"security group"},
		complete: []argKind{sgArg},
		flags:    rf.register,
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			r, err := rf.rule(c)
			if err != nil {
				return nil, err
			}
			req := &protocol.MessageV0_Request{SgRuleAdd: &protocol.MessageV0_SgRuleAddReq{
				SgId: proto.String(args[0]), Rule: r,
			}}
			return send(req), nil
		},
	})
}

func sgRuleDelCommand(seg *segment) *cobra.Command {
	var rf ruleFlags
	return leaf(seg, leafSpec{
		use:   "del SG (HASH | rule options)",
		short: "Remove a firewall rule from a security group",
		long: `Remove a rule from a security group, named either by its hash (the first
column of "butterfly sg rule list SG") or by the options that created it.
A hash that matches no rule is an error; removing by options a rule that
does not exist succeeds.

` + ruleOptionsHelp,
		example: `  butterfly sg rule del web f44fac34f8667927
  butterfly sg rule del web --ip-proto tcp --port 22 --cidr 10.0.0.0/24`,
		minArgs:  1,
		maxArgs:  2,
		argNames: []string{"security group", "rule hash or rule options"},
		complete: []argKind{sgArg},
		flags:    rf.register,
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			sg := args[0]
			if len(args) == 2 {
				if rf.any(c) {
					return nil, usagef(c, "give either a rule hash or rule options, not both")
				}
				hash := strings.ToLower(args[1])
				if !isRuleHash(hash) {
					return nil, usagef(c, "%q is not a rule hash (16 hexadecimal digits)", args[1])
				}
				return func(s *session) error { return delRuleByHash(s, sg, hash) }, nil
			}
			if !rf.any(c) {
				return nil, usagef(c, "%s: missing rule hash or rule options", c.CommandPath())
			}
			r, err := rf.rule(c)
			if err != nil {
				return nil, err
			}
			req := &protocol.MessageV0_Request{SgRuleDel: &protocol.MessageV0_SgRuleDelReq{
				SgId: proto.String(sg), Rule: r,
			}}
			return send(req), nil
		},
	})
}

func isRuleHash(h string) bool {
	if len(h) != 16 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// delRuleByHash finds the rule of sg with the given hash and removes it,
// sending the rule exactly as the daemon listed it.
func delRuleByHash(s *session, sg, hash string) error {
	r, err := s.exec1(&protocol.MessageV0_Request{SgRuleList: proto.String(sg)})
	if err != nil {
		return err
	}
	for _, rule := range r.GetSgRuleList() {
		if ruleHash(rule) == hash {
			_, err := s.exec1(&protocol.MessageV0_Request{SgRuleDel: &protocol.MessageV0_SgRuleDelReq{
				SgId: proto.String(sg), Rule: rule,
			}})
			return err
		}
	}
	return errors.New("no rule found with hash " + hash)
}

func sgMemberListCommand(seg *segment) *cobra.Command {
	return leaf(seg, leafSpec{
		use:      "list SG",
		short:    "Print the member addresses of a security group, one per line",
		minArgs:  1,
		maxArgs:  1,
		argNames: []string{"security group"},
		complete: []argKind{sgArg},
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			return sendPrintLines(&protocol.MessageV0_Request{SgMemberList: proto.String(args[0])}, (*protocol.MessageV0_Response).GetSgMemberList), nil
		},
	})
}

func sgMemberAddCommand(seg *segment) *cobra.Command {
	return leaf(seg, leafSpec{
		use:      "add SG IP",
		short:    "Add a member address to a security group (created if missing)",
		minArgs:  2,
		maxArgs:  2,
		argNames: []string{"security group", "IP address"},
		complete: []argKind{sgArg},
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			req := &protocol.MessageV0_Request{SgMemberAdd: &protocol.MessageV0_SgMemberAddReq{
				SgId: proto.String(args[0]), Member: proto.String(args[1]),
			}}
			return send(req), nil
		},
	})
}

func sgMemberDelCommand(seg *segment) *cobra.Command {
	return leaf(seg, leafSpec{
		use:      "del SG IP",
		short:    "Remove a member address from a security group",
		minArgs:  2,
		maxArgs:  2,
		argNames: []string{"security group", "IP address"},
		complete: []argKind{sgArg},
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			req := &protocol.MessageV0_Request{SgMemberDel: &protocol.MessageV0_SgMemberDelReq{
				SgId: proto.String(args[0]), Member: proto.String(args[1]),
			}}
			return send(req), nil
		},
	})
}
