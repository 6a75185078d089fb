package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// edgeCase is one command line run against a fresh test daemon.
type edgeCase struct {
	name string
	// why says why the exit status is the expected one.
	why string
	// setup holds command lines that must succeed before cmd runs.
	setup []string
	// cmd is the command line under test (split by splitLine). Unless bare
	// is set, "-e <endpoint> -t <ms>" is appended to it.
	cmd  string
	bare bool
	code int
	// errHas, when set, must appear in stderr: the command failed for the
	// reason given in why and not for another one.
	errHas string
	// out, when set, is the exact stdout of cmd.
	out string
	// check is a command line run after cmd; its stdout must equal want,
	// or contain wantHas when that is set. It shows what the daemon holds.
	check   string
	want    string
	wantHas string
}

// Values shared by the cases.
const (
	macA = "52:54:00:00:0a:01"
	macB = "52:54:00:00:0a:02"

	addA = "nic add --id vm-a --mac " + macA + " --vni 100 --ip 192.0.2.10"
	addB = "nic add --id vm-b --mac " + macB + " --vni 100 --ip 192.0.2.11"

	// Two rules and the hashes that the original client computes for them;
	// scripts delete rules by these hashes, so they must not change. The
	// hash does not depend on the group holding the rule.
	rangeRule      = "--dir in --ip-proto tcp --port-start 1000 --port-end 2000 --cidr 10.0.0.0/24"
	rangeRuleHash  = "f44fac34f8667927"
	rangeRuleLine  = rangeRuleHash + " | direction: INBOUND - IP protocol: 6 - port start: 1000 - port end: 2000 - cidr: 10.0.0.0/24 - members of sg: Ø\n"
	memberRule     = "--ip-proto 42 --sg-members sg-2"
	memberRuleHash = "cfdb94f9418c88f1"
	memberRuleLine = memberRuleHash + " | direction: INBOUND - IP protocol: 42 - port start: Ø - port end: Ø - cidr: Ø - members of sg: sg-2\n"
)

// badRule is a rule that the client must refuse before sending anything:
// the group it names is never created.
func badRule(name, why, opts, errHas string) edgeCase {
	return edgeCase{
		name: name, why: why,
		cmd:  "sg rule add web " + opts,
		code: 1, errHas: errHas,
		check: "sg list", want: "",
	}
}

// goodRule is a rule that the daemon must accept; the listing of the group
// must then show the rule described by line (without its hash).
func goodRule(name, why, opts, line string) edgeCase {
	return edgeCase{
		name: name, why: why,
		cmd:   "sg rule add web " + opts,
		check: "sg rule list web", wantHas: line,
	}
}

var edgeGroups = []struct {
	name  string
	cases []edgeCase
}{
	{"mandatory", []edgeCase{
		{name: "nic add without id", why: "a vNIC cannot be created without its id",
			cmd: "nic add --mac " + macA + " --vni 100 --ip 192.0.2.10", code: 1, errHas: "missing --id",
			check: "nic list", want: ""},
		{name: "nic add without mac", why: "the MAC is required",
			cmd: "nic add --id vm-a --vni 100 --ip 192.0.2.10", code: 1, errHas: "missing --mac",
			check: "nic list", want: ""},
		{name: "nic add without vni", why: "the VNI is required",
			cmd: "nic add --id vm-a --mac " + macA + " --ip 192.0.2.10", code: 1, errHas: "missing --vni",
			check: "nic list", want: ""},
		{name: "nic add without ip", why: "addresses are optional (a vNIC may learn none)",
			cmd: "nic add --id vm-a --mac " + macA + " --vni 100", out: "/run/butterfly/qemu-vhost-vm-a\n",
			check: "nic list", want: "vm-a\n"},
		{name: "nic update without id", why: "update must name the vNIC",
			setup: []string{addA},
			cmd:   "nic update --enable-antispoof true", code: 1, errHas: "missing --id",
			check: "nic details vm-a", wantHas: "antispoof: false\n"},
		{name: "nic del without id", why: "nothing to delete",
			cmd: "nic del", code: 1, errHas: "missing NIC id"},
		{name: "nic details without id", why: "details of one vNIC only",
			cmd: "nic details", code: 1, errHas: "missing NIC id"},
		{name: "nic stats without id", why: "stats of one vNIC only",
			cmd: "nic stats", code: 1, errHas: "missing NIC id"},
		{name: "nic sg list verbose flag is no id", why: "-v is the global verbose flag, so no vNIC is named",
			cmd: "nic sg list -v", code: 1, errHas: "missing NIC id"},
		{name: "nic sg add without anything", why: "vNIC and groups are needed",
			cmd: "nic sg add", code: 1, errHas: "missing NIC id"},
		{name: "nic sg add without group", why: "at least one group is needed",
			setup: []string{addA},
			cmd:   "nic sg add vm-a", code: 1, errHas: "missing security group"},
		{name: "nic sg del without group", why: "at least one group is needed",
			setup: []string{addA},
			cmd:   "nic sg del vm-a", code: 1, errHas: "missing security group"},
		{name: "sg add without group", why: "nothing to create",
			cmd: "sg add", code: 1, errHas: "missing security group"},
		{name: "sg del without group", why: "nothing to delete",
			cmd: "sg del", code: 1, errHas: "missing security group"},
		{name: "sg rule add without group", why: "options alone do not say where the rule goes",
			cmd: "sg rule add " + memberRule, code: 1, errHas: "missing security group",
			check: "sg list", want: ""},
		{name: "sg rule add without protocol", why: "--ip-proto is required",
			cmd: "sg rule add web --sg-members sg-2", code: 1, errHas: "--ip-proto is required",
			check: "sg list", want: ""},
		{name: "sg rule add without source", why: "a rule needs --cidr or --sg-members",
			cmd: "sg rule add web --ip-proto 42", code: 1, errHas: "one of --cidr and --sg-members",
			check: "sg list", want: ""},
		{name: "sg rule add group only", why: "no rule at all; the protocol is checked first",
			cmd: "sg rule add web", code: 1, errHas: "--ip-proto is required", check: "sg list", want: ""},
		{name: "sg rule list without group", why: "rules are listed per group",
			cmd: "sg rule list", code: 1, errHas: "missing security group"},
		{name: "sg rule del group only", why: "neither a hash nor rule options",
			setup: []string{"sg add web"},
			cmd:   "sg rule del web", code: 1, errHas: "missing rule hash or rule options"},
		{name: "sg member add without address", why: "the member address is required",
			setup: []string{"sg add web"},
			cmd:   "sg member add web", code: 1, errHas: "missing IP address"},
		{name: "sg member del without address", why: "the member address is required",
			setup: []string{"sg add web"},
			cmd:   "sg member del web", code: 1, errHas: "missing IP address"},
		{name: "sg member list without group", why: "members are listed per group",
			cmd: "sg member list", code: 1, errHas: "missing security group"},
		{name: "request without file", why: "request reads its messages from a file",
			cmd: "request", code: 1, errHas: "missing request FILE"},
	}},
	{"command words", []edgeCase{
		{name: "empty command line", why: "global options alone run nothing",
			cmd: "", code: 1, errHas: "missing command"},
		{name: "unknown command", why: "not a command",
			cmd: "frobnicate", code: 1, errHas: `unknown command "frobnicate"`},
		{name: "unknown flag", why: "not a global option",
			cmd: "--frobnicate", code: 1, errHas: "unknown flag: --frobnicate"},
		{name: "nic without subcommand", why: "nic is only a group of commands",
			cmd: "nic", code: 1, errHas: "missing subcommand"},
		{name: "nic sg without subcommand", why: "nic sg is only a group of commands",
			cmd: "nic sg", code: 1, errHas: "missing subcommand"},
		{name: "sg without subcommand", why: "sg is only a group of commands",
			cmd: "sg", code: 1, errHas: "missing subcommand"},
		{name: "sg rule without subcommand", why: "sg rule is only a group of commands",
			cmd: "sg rule", code: 1, errHas: "missing subcommand"},
		{name: "sg member without subcommand", why: "sg member is only a group of commands",
			cmd: "sg member", code: 1, errHas: "missing subcommand"},
		{name: "unknown nic subcommand", why: "not a nic command",
			cmd: "nic frobnicate", code: 1, errHas: `unknown subcommand "frobnicate"`},
	}},
	{"not found", []edgeCase{
		{name: "details of unknown nic", why: "the daemon has no such vNIC",
			cmd: "nic details vm-z", code: 1, errHas: "vm-z not found"},
		{name: "command word as nic id", why: `"request" here is only an id, and no vNIC has it`,
			cmd: "nic details request", code: 1, errHas: "request not found"},
		{name: "stats of unknown nic", why: "the daemon has no such vNIC",
			cmd: "nic stats request", code: 1, errHas: "NIC does not exist with id request"},
		{name: "update of unknown nic", why: "update does not create",
			cmd: "nic update --id vm-z --enable-antispoof true", code: 1, errHas: "NIC does not exist with id vm-z",
			check: "nic list", want: ""},
		{name: "groups of unknown nic", why: "the daemon has no such vNIC",
			cmd: "nic sg list vm-z", code: 1, errHas: "vm-z not found"},
		{name: "attach groups to unknown nic", why: "groups attach to an existing vNIC only",
			cmd: "nic sg add vm-z web db", code: 1, errHas: "vm-z not found",
			check: "sg list", want: ""},
		{name: "detach groups from unknown nic", why: "groups detach from an existing vNIC only",
			cmd: "nic sg del vm-z web db", code: 1, errHas: "vm-z not found"},
		{name: "rules of unknown group", why: "the daemon has no such group",
			cmd: "sg rule list ops", code: 1, errHas: "Security Group not found: ops"},
		{name: "members of unknown group", why: "the daemon has no such group",
			cmd: "sg member list ops", code: 1, errHas: "Security Group not found: ops"},
	}},
	{"idempotent", []edgeCase{
		{name: "nic add twice", why: "adding an identical vNIC again is a no-op",
			setup: []string{addA},
			cmd:   addA, out: "/run/butterfly/qemu-vhost-vm-a\n",
			check: "nic list", want: "vm-a\n"},
		{name: "nic add replaces", why: "adding an existing id replaces that vNIC",
			setup: []string{addA},
			cmd:   "nic add --id vm-a --mac " + macB + " --vni 200 --enable-antispoof",
			check: "nic details vm-a",
			want:  "id: vm-a\nmac: " + macB + "\nvni: 200\nantispoof: true\nbypass filtering: false\npacket trace: false\n"},
		{name: "nic del twice", why: "deleting a vNIC that is gone succeeds",
			setup: []string{addA, "nic del vm-a"},
			cmd:   "nic del vm-a", check: "nic list", want: ""},
		{name: "nic del mixed ids", why: "unknown ids among known ones are ignored",
			setup: []string{addA, addB},
			cmd:   "nic del vm-a vm-z vm-b", check: "nic list", want: ""},
		{name: "nic sg add twice", why: "a group is attached once",
			setup: []string{addA, "nic sg add vm-a web"},
			cmd:   "nic sg add vm-a web", check: "nic sg list vm-a", want: "web\n"},
		{name: "nic sg add undefined groups", why: "a vNIC may name groups defined later",
			setup: []string{addA},
			cmd:   "nic sg add vm-a web db", check: "nic sg list vm-a", want: "db\nweb\n"},
		{name: "nic sg del unattached group", why: "detaching a group the vNIC lacks is a no-op",
			setup: []string{addA, "nic sg add vm-a web"},
			cmd:   "nic sg del vm-a ops", check: "nic sg list vm-a", want: "web\n"},
		{name: "nic sg del twice", why: "detaching twice succeeds",
			setup: []string{addA, "nic sg add vm-a web db", "nic sg del vm-a web db"},
			cmd:   "nic sg del vm-a web db", check: "nic sg list vm-a", want: ""},
		{name: "sg add existing", why: "existing and repeated names are created once",
			setup: []string{"sg add web"},
			cmd:   "sg add web db web", check: "sg list", want: "db\nweb\n"},
		{name: "sg del unknown", why: "deleting a group that does not exist succeeds",
			cmd: "sg del ops", check: "sg list", want: ""},
		{name: "sg del mixed", why: "unknown groups among known ones are ignored",
			setup: []string{"sg add web db"},
			cmd:   "sg del ops web", check: "sg list", want: "db\n"},
		{name: "sg rule add twice", why: "the same rule is stored once",
			setup: []string{"sg rule add web " + rangeRule},
			cmd:   "sg rule add web " + rangeRule, check: "sg rule list web", want: rangeRuleLine},
		{name: "sg rule add creates group", why: "a rule may name a group not yet created",
			cmd: "sg rule add ops " + memberRule, check: "sg list", want: "ops\n"},
		{name: "sg member add twice", why: "a member is stored once",
			setup: []string{"sg member add web 192.0.2.10"},
			cmd:   "sg member add web 192.0.2.10", check: "sg member list web", want: "192.0.2.10\n"},
		{name: "sg member add long and short IPv6", why: "two spellings of one address are one member",
			setup: []string{"sg member add web 2001:0db8:0000:0000:0000:0000:0000:0010"},
			cmd:   "sg member add web 2001:db8::10", check: "sg member list web", want: "2001:db8::10\n"},
		{name: "sg member add creates group", why: "a member may name a group not yet created",
			cmd: "sg member add ops 198.51.100.7", check: "sg list", want: "ops\n"},
		{name: "sg member del twice", why: "removing a member that is gone succeeds",
			setup: []string{"sg member add web 192.0.2.10 + sg member add web 192.0.2.11", "sg member del web 192.0.2.10"},
			cmd:   "sg member del web 192.0.2.10", check: "sg member list web", want: "192.0.2.11\n"},
		{name: "sg member del other spelling", why: "the long IPv6 form removes the member added in short form",
			setup: []string{"sg member add web 2001:db8::20"},
			cmd:   "sg member del web 2001:0db8:0:0:0:0:0:0020", check: "sg member list web", want: ""},
		{name: "sg member del non member", why: "removing an address that is no member is a no-op",
			setup: []string{"sg member add web 192.0.2.10"},
			cmd:   "sg member del web 203.0.113.9", check: "sg member list web", want: "192.0.2.10\n"},
		{name: "sg member del unknown group", why: "nothing to remove from a group that does not exist",
			cmd: "sg member del ops 192.0.2.10", check: "sg list", want: ""},
	}},
	{"rule options", []edgeCase{
		badRule("protocol above 255", "IP protocol numbers are 8 bits", "--ip-proto 300 "+"--sg-members sg-2", "--ip-proto"),
		badRule("protocol below -1", "-1 is the only negative protocol (any)", "--ip-proto -2 --sg-members sg-2", "--ip-proto"),
		badRule("protocol name", "only tcp, udp, icmp and all are known by name", "--ip-proto sctp --sg-members sg-2", "--ip-proto"),
		badRule("tcp without port", "tcp rules need a port or a range", "--ip-proto tcp --cidr 198.51.100.0/24", "wrong port configuration"),
		badRule("udp without port", "udp rules need a port or a range", "--ip-proto udp --sg-members sg-2", "wrong port configuration"),
		badRule("negative port", "ports start at 0", "--ip-proto udp --port -1 --cidr 198.51.100.0/24", "--port:"),
		badRule("port above 65535", "ports are 16 bits", "--ip-proto udp --port 65536 --cidr 198.51.100.0/24", "--port:"),
		badRule("port name", "ports are numbers", "--ip-proto tcp --port https --cidr 198.51.100.0/24", "--port:"),
		badRule("range start only", "a range needs both ends", "--ip-proto tcp --port-start 8000 --cidr 198.51.100.0/24", "go together"),
		badRule("range end only", "a range needs both ends", "--ip-proto tcp --port-end 8000 --cidr 198.51.100.0/24", "go together"),
		badRule("range start not a number", "ports are numbers", "--ip-proto tcp --port-start low --port-end 9000 --cidr 198.51.100.0/24", "--port-start:"),
		badRule("range end not a number", "ports are numbers", "--ip-proto tcp --port-start 8000 --port-end high --cidr 198.51.100.0/24", "--port-end:"),
		badRule("range reversed", "the start must not be above the end", "--ip-proto tcp --port-start 9000 --port-end 8000 --cidr 198.51.100.0/24", "is above --port-end"),
		badRule("port and range", "a single port and a range contradict", "--ip-proto tcp --port 8000 --port-start 8000 --port-end 8001 --cidr 198.51.100.0/24", "cannot be combined"),
		badRule("cidr and members", "a rule has one kind of source", "--ip-proto 42 --cidr 198.51.100.0/24 --sg-members sg-2", "cannot be combined"),
		badRule("cidr without length", "a CIDR needs its prefix length", "--ip-proto 42 --cidr 198.51.100.0", "--cidr"),
		badRule("direction word", "directions are in and out", "--ip-proto 42 --sg-members sg-2 --dir both", "--dir"),
		goodRule("any protocol as -1", "-1 means any protocol", "--ip-proto -1 --sg-members sg-2",
			"IP protocol: -1 - port start: Ø - port end: Ø - cidr: Ø - members of sg: sg-2"),
		goodRule("any protocol as all", `"all" is -1 by name`, "--ip-proto all --cidr 198.51.100.0/24",
			"IP protocol: -1 - port start: Ø - port end: Ø - cidr: 198.51.100.0/24"),
		goodRule("icmp without port", "ports are for tcp and udp only", "--ip-proto icmp --sg-members sg-2",
			"IP protocol: 1 - port start: Ø"),
		goodRule("numeric protocol", "any protocol number from 0 to 255", "--ip-proto 132 --cidr 2001:db8::/48",
			"IP protocol: 132 - port start: Ø - port end: Ø - cidr: 2001:db8::/48"),
		goodRule("outbound", "--dir out is an egress rule", "--ip-proto 42 --sg-members sg-2 --dir out",
			"direction: OUTBOUND - IP protocol: 42"),
		goodRule("full port range", "0 and 65535 are valid ends", "--ip-proto udp --port-start 0 --port-end 65535 --cidr 0.0.0.0/0",
			"IP protocol: 17 - port start: 0 - port end: 65535 - cidr: 0.0.0.0/0"),
		goodRule("single port", "--port N is the range N to N", "--ip-proto tcp --port 443 --sg-members sg-2",
			"IP protocol: 6 - port start: 443 - port end: 443"),
	}},
	{"rule delete", []edgeCase{
		{name: "port range rule by hash", why: "the hash names the rule; it is the original client's hash",
			setup: []string{"sg rule add web " + rangeRule},
			cmd:   "sg rule del web " + rangeRuleHash, check: "sg rule list web", want: ""},
		{name: "member rule by hash", why: "the hash names the rule; it is the original client's hash",
			setup: []string{"sg rule add web " + memberRule},
			cmd:   "sg rule del web " + memberRuleHash, check: "sg rule list web", want: ""},
		{name: "hash in capitals", why: "hashes are hexadecimal in any case",
			setup: []string{"sg rule add web " + memberRule},
			cmd:   "sg rule del web " + strings.ToUpper(memberRuleHash), check: "sg rule list web", want: ""},
		{name: "only the named rule", why: "the other rules stay",
			setup: []string{"sg rule add web " + rangeRule + " + sg rule add web " + memberRule},
			cmd:   "sg rule del web " + rangeRuleHash, check: "sg rule list web", want: memberRuleLine},
		{name: "hash deleted twice", why: "a hash that matches no rule is an error",
			setup: []string{"sg rule add web " + rangeRule + " + sg rule add web " + memberRule, "sg rule del web " + rangeRuleHash},
			cmd:   "sg rule del web " + rangeRuleHash, code: 1, errHas: "no rule found with hash " + rangeRuleHash,
			check: "sg rule list web", want: memberRuleLine},
		{name: "hash of another group", why: "the hash is looked up in the named group only",
			setup: []string{"sg rule add db " + rangeRule, "sg add web"},
			cmd:   "sg rule del web " + rangeRuleHash, code: 1, errHas: "no rule found",
			check: "sg rule list db", want: rangeRuleLine},
		{name: "not a hash", why: "a hash is 16 hexadecimal digits",
			setup: []string{"sg rule add web " + rangeRule},
			cmd:   "sg rule del web f44fac34f866792", code: 1, errHas: "is not a rule hash",
			check: "sg rule list web", want: rangeRuleLine},
		{name: "hash in unknown group", why: "the daemon has no such group",
			cmd: "sg rule del ops " + rangeRuleHash, code: 1, errHas: "Security Group not found: ops"},
		{name: "by options", why: "the options that created a rule name it too",
			setup: []string{"sg rule add web " + rangeRule + " + sg rule add web " + memberRule},
			cmd:   "sg rule del web " + memberRule, check: "sg rule list web", want: rangeRuleLine},
		{name: "by options of no rule", why: "removing by options a rule that does not exist succeeds",
			setup: []string{"sg rule add web " + rangeRule},
			cmd:   "sg rule del web --ip-proto 42 --sg-members db", check: "sg rule list web", want: rangeRuleLine},
	}},
	{"members", []edgeCase{
		{name: "add a word", why: "members are IP addresses",
			setup: []string{"sg member add web 192.0.2.10"},
			cmd:   "sg member add web gateway", code: 1, errHas: "Bad IP format",
			check: "sg member list web", want: "192.0.2.10\n"},
		{name: "add a bad IPv4", why: "each byte of an IPv4 address is below 256",
			setup: []string{"sg add web"},
			cmd:   "sg member add web 192.0.2.256", code: 1, errHas: "Bad IP format",
			check: "sg member list web", want: ""},
		{name: "add a prefix", why: "members are single addresses, not networks",
			setup: []string{"sg add web"},
			cmd:   "sg member add web 192.0.2.0/24", code: 1, errHas: "Bad IP format",
			check: "sg member list web", want: ""},
		{name: "del a word", why: "members are IP addresses",
			setup: []string{"sg member add web 192.0.2.10"},
			cmd:   "sg member del web gateway", code: 1, errHas: "Bad IP format",
			check: "sg member list web", want: "192.0.2.10\n"},
	}},
	{"chains", []edgeCase{
		{name: "two adds then list", why: "each command of the chain runs in turn",
			cmd: addA + " + " + addB + " + nic list",
			out: "/run/butterfly/qemu-vhost-vm-a\n/run/butterfly/qemu-vhost-vm-b\nvm-a\nvm-b\n"},
		{name: "two deletes", why: "each command of the chain runs in turn",
			setup: []string{addA + " + " + addB},
			cmd:   "nic del vm-a + nic del vm-b", check: "nic list", want: ""},
		{name: "failure stops the chain", why: "the failing command ends the chain; what ran before stays",
			cmd: "sg add web + sg member add web gateway + sg add db", code: 1, errHas: "Bad IP format",
			check: "sg list", want: "web\n"},
		{name: "bad later command sends nothing", why: "every command is checked before the first is sent",
			cmd: "sg add web + sg rule add web --ip-proto tcp --port 99999 --cidr 198.51.100.0/24", code: 1, errHas: "--port:",
			check: "sg list", want: ""},
		{name: "empty command in chain", why: `two "+" in a row leave an empty command`,
			cmd: "sg add web + + sg add db", code: 1, errHas: "empty command",
			check: "sg list", want: ""},
	}},
	{"nic options", []edgeCase{
		{name: "trace path without trace", why: "--trace-path only makes sense with --packet-trace true",
			cmd: addA + " --trace-path /var/tmp/vm-a.pcap", code: 1, errHas: "--trace-path needs --packet-trace true",
			check: "nic list", want: ""},
		{name: "trace path with trace off", why: "--trace-path only makes sense with --packet-trace true",
			setup: []string{addA},
			cmd:   "nic update --id vm-a --packet-trace false --trace-path /var/tmp/vm-a.pcap", code: 1, errHas: "--trace-path needs --packet-trace true"},
		{name: "update trace path alone", why: "--trace-path only makes sense with --packet-trace true",
			setup: []string{addA},
			cmd:   "nic update --id vm-a --trace-path /var/tmp/vm-a.pcap", code: 1, errHas: "--trace-path needs --packet-trace true",
			check: "nic details vm-a", wantHas: "packet trace: false\n"},
		{name: "trace path with trace on", why: "both options together are valid",
			cmd:   addA + " --packet-trace true --trace-path /var/tmp/vm-a.pcap",
			check: "nic details vm-a", wantHas: "packet trace: true\n"},
		{name: "trace not boolean", why: "--packet-trace is true or false",
			cmd: addA + " --packet-trace yes", code: 1, errHas: "--packet-trace",
			check: "nic list", want: ""},
		{name: "type as number", why: "--type takes a port type name",
			cmd: addA + " --type 1", code: 1, errHas: "--type",
			check: "nic list", want: ""},
		{name: "type unknown name", why: "only the known port types are accepted",
			cmd: addA + " --type VETH", code: 1, errHas: "--type",
			check: "nic list", want: ""},
		{name: "vni above 24 bits", why: "a VNI is 24 bits",
			cmd: "nic add --id vm-a --mac " + macA + " --vni 16777216", code: 1, errHas: "--vni",
			check: "nic list", want: ""},
		{name: "same address in two networks", why: "IP and MAC are scoped by the VNI",
			setup: []string{addA},
			cmd:   "nic add --id vm-c --mac " + macA + " --vni 200 --ip 192.0.2.10",
			check: "nic list", want: "vm-a\nvm-c\n"},
		{name: "antispoof toggled", why: "each update applies in order",
			setup: []string{addA},
			cmd:   "nic update --id vm-a --enable-antispoof true + nic update --id vm-a --enable-antispoof false + nic update --id vm-a --enable-antispoof true",
			check: "nic details vm-a", wantHas: "antispoof: true\n"},
	}},
	{"global options", []edgeCase{
		{name: "key without file", why: "-k needs a file name",
			cmd: "-k", bare: true, code: 1, errHas: "flag needs an argument"},
		{name: "endpoint without address", why: "-e needs an address",
			cmd: "nic list -e", bare: true, code: 1, errHas: "flag needs an argument"},
		{name: "status repeated", why: "status is read-only and counts every request",
			setup: []string{"status", "status"},
			cmd:   "status", check: "status", wantHas: "request counter: 4\n"},
	}},
}

// TestEdgeCases runs each case against its own daemon, so that no case
// depends on the state another one left.
func TestEdgeCases(t *testing.T) {
	for _, g := range edgeGroups {
		for _, c := range g.cases {
			t.Run(g.name+"/"+c.name, func(t *testing.T) {
				ts := startServer(t, serverOpts{})
				for _, line := range c.setup {
					ts.mustRun(t, splitLine(t, line)...)
				}
				args := splitLine(t, c.cmd)
				var r result
				if c.bare {
					var out, errb bytes.Buffer
					r.code = runCLI(args, &out, &errb)
					r.stdout, r.stderr = out.String(), errb.String()
				} else {
					r = ts.run(args...)
				}
				if r.code != c.code {
					t.Fatalf("butterfly %s: exit %d, want %d (%s)\nstdout: %s\nstderr: %s",
						c.cmd, r.code, c.code, c.why, r.stdout, r.stderr)
				}
				if c.code == 0 && r.stderr != "" {
					t.Errorf("butterfly %s: unexpected stderr %q", c.cmd, r.stderr)
				}
				if c.errHas != "" && !strings.Contains(r.stderr, c.errHas) {
					t.Errorf("butterfly %s: stderr %q does not contain %q (%s)", c.cmd, r.stderr, c.errHas, c.why)
				}
				if c.out != "" && r.stdout != c.out {
					t.Errorf("butterfly %s: stdout %q, want %q", c.cmd, r.stdout, c.out)
				}
				if c.check == "" {
					return
				}
				got := ts.mustRun(t, splitLine(t, c.check)...)
				switch {
				case c.wantHas != "":
					if !strings.Contains(got, c.wantHas) {
						t.Errorf("after %q, %s printed:\n%s\nwant it to contain %q (%s)", c.cmd, c.check, got, c.wantHas, c.why)
					}
				case got != c.want:
					t.Errorf("after %q, %s printed %q, want %q (%s)", c.cmd, c.check, got, c.want, c.why)
				}
			})
		}
	}
}

// TestHelpForms checks that every command shows its help for "help", -h
// and --help, exits 0 and sends nothing to the daemon (so "shutdown help"
// does not stop it).
func TestHelpForms(t *testing.T) {
	ts := startServer(t, serverOpts{})
	paths := []string{
		"",
		"status", "shutdown", "dump", "request",
		"nic", "nic add", "nic update", "nic del", "nic list", "nic details", "nic stats",
		"nic sg", "nic sg add", "nic sg del", "nic sg list",
		"sg", "sg add", "sg del", "sg list",
		"sg rule", "sg rule add", "sg rule del", "sg rule list",
		"sg member", "sg member add", "sg member del", "sg member list",
	}
	for _, p := range paths {
		for _, form := range []string{"help", "-h", "--help"} {
			args := append(strings.Fields(p), form)
			if p == "" && form == "help" {
				// "butterfly help" is cobra's help command.
				args = []string{"help"}
			}
			r := ts.run(args...)
			if r.code != 0 {
				t.Errorf("butterfly %s: exit %d, want 0\nstderr: %s", strings.Join(args, " "), r.code, r.stderr)
				continue
			}
			if want := strings.TrimSpace("butterfly " + p); !strings.Contains(r.stdout, "Usage:\n  "+want) {
				t.Errorf("butterfly %s: no usage of %q in:\n%s", strings.Join(args, " "), want, r.stdout)
			}
			if r.stderr != "" {
				t.Errorf("butterfly %s: stderr %q", strings.Join(args, " "), r.stderr)
			}
		}
	}
	if n := ts.srv.Requests(); n != 0 {
		t.Errorf("help forms sent %d requests to the daemon, want 0", n)
	}
}

// TestDumpReplay checks, for configurations that stress the dump, that
// dump -> request into a fresh daemon -> dump gives the same text and that
// the second daemon lists the same objects.
func TestDumpReplay(t *testing.T) {
	tests := []struct {
		name  string
		why   string
		setup []string
		// once appear exactly once in the dump.
		once []string
	}{
		{
			name: "replaced vnic",
			why:  "a vNIC added twice under one id is dumped once, with its last settings",
			setup: []string{
				"nic add --id vm-a --mac " + macA + " --vni 100 --ip 192.0.2.10",
				"nic add --id vm-a --mac " + macA + " --vni 100 --ip 192.0.2.10 --sg web --sg db --packet-trace true --trace-path /var/tmp/vm-a.pcap",
			},
			once: []string{`id: "vm-a"`, `packet_trace_path: "/var/tmp/vm-a.pcap"`},
		},
		{
			name: "one address in three networks",
			why:  "vNICs with the same IP and MAC in distinct VNIs are all kept",
			setup: []string{
				"nic add --id net1 --mac " + macA + " --vni 101 --ip 192.0.2.10",
				"nic add --id net2 --mac " + macA + " --vni 102 --ip 192.0.2.10 --enable-antispoof",
				"nic add --id net3 --mac " + macA + " --vni 103 --ip 192.0.2.10 --bypass-filtering",
			},
			once: []string{"vni: 101", "vni: 102", "vni: 103", "ip_anti_spoof: true", "bypass_filtering: true"},
		},
		{
			name: "group made of its own members",
			why:  "a rule may admit the members of its own group",
			setup: []string{
				"nic add --id vm-a --mac " + macA + " --vni 100 --ip 192.0.2.10 + nic add --id vm-b --mac " + macB + " --vni 100 --ip 192.0.2.11",
				"sg add lab + nic sg add vm-a lab + nic sg add vm-b lab",
				"sg member add lab 192.0.2.10 + sg member add lab 192.0.2.11",
				"sg rule add lab --ip-proto icmp --sg-members lab + sg rule add lab --ip-proto all --sg-members lab",
			},
			once: []string{`id: "lab"`, `member: "192.0.2.10"`, `member: "192.0.2.11"`},
		},
		{
			name: "groups without vnics",
			why:  "groups, rules and members exist on their own",
			setup: []string{
				"sg add web db ops",
				"sg rule add web --ip-proto udp --port 53 --cidr 0.0.0.0/0 + sg rule add web --ip-proto udp --port 123 --cidr ::/0",
				"sg rule add db " + rangeRule + " + sg rule add db " + memberRule + " --dir out",
				"sg member add ops 2001:db8::1",
			},
			once: []string{`id: "ops"`, `member: "2001:db8::1"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := startServer(t, serverOpts{})
			for _, line := range tt.setup {
				a.mustRun(t, splitLine(t, line)...)
			}
			first := a.mustRun(t, "dump")
			for _, s := range tt.once {
				if n := strings.Count(first, s); n != 1 {
					t.Errorf("dump holds %q %d times, want once (%s):\n%s", s, n, tt.why, first)
				}
			}
			file := filepath.Join(t.TempDir(), "dump.txt")
			if err := os.WriteFile(file, []byte(first), 0o644); err != nil {
				t.Fatal(err)
			}

			b := startServer(t, serverOpts{})
			b.mustRun(t, "request", file)
			if second := b.mustRun(t, "dump"); second != first {
				t.Errorf("dump after replay differs:\n%s", lineDiff(first, second))
			}
			lists := [][]string{{"nic", "list"}, {"sg", "list"}}
			for _, id := range strings.Fields(a.mustRun(t, "nic", "list")) {
				lists = append(lists, []string{"nic", "details", id}, []string{"nic", "sg", "list", id})
			}
			for _, sg := range strings.Fields(a.mustRun(t, "sg", "list")) {
				lists = append(lists, []string{"sg", "rule", "list", sg}, []string{"sg", "member", "list", sg})
			}
			for _, args := range lists {
				if x, y := a.mustRun(t, args...), b.mustRun(t, args...); x != y {
					t.Errorf("%s differs after replay:\n%s\nvs\n%s", strings.Join(args, " "), x, y)
				}
			}
		})
	}
}
