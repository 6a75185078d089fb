package cli

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
)

// maxVNI is the largest 24-bit VXLAN network identifier.
const maxVNI = 1<<24 - 1

func nicCommand(seg *segment) *cobra.Command {
	return group("nic", "Manage virtual NICs",
		`Create, change, inspect and remove the virtual NICs (vNICs) of the switch.`,
		nicListCommand(seg),
		nicAddCommand(seg),
		nicUpdateCommand(seg),
		nicDelCommand(seg),
		nicDetailsCommand(seg),
		nicStatsCommand(seg),
		nicCountersCommand(seg),
		nicDropsCommand(seg),
		nicExportCommand(seg),
		nicConntrackCommand(seg),
		nicSGCommand(seg),
	)
}

func nicListCommand(seg *segment) *cobra.Command {
	return leaf(seg, leafSpec{
		use:   "list",
		short: "Print the id of every vNIC, one per line",
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			return sendPrintLines(&protocol.MessageV0_Request{NicList: proto.Bool(true)}, (*protocol.MessageV0_Response).GetNicList), nil
		},
	})
}

func nicAddCommand(seg *segment) *cobra.Command {
	var (
		id, mac, vni, typ, btype, dip, dmac string
		trace, tracePath, vhostClient       string
		fwImport, netns, ifname             string
		ips, sgs                            []string
		antispoof, bypass                   bool
	)
	return leaf(seg, leafSpec{
		use:   "add --id ID --mac MAC --vni VNI [options]",
		short: "Create a vNIC (or replace the vNIC with the same id) and print its path",
		long: `Create a vNIC and print the path of its port: the vhost-user socket, or
the interface name of a TAP vNIC. Adding an id that exists replaces that vNIC.

--id, --mac and --vni are required. The VNI is the 24-bit VXLAN network of
the vNIC (0 to 16777215). --ip and --sg may be repeated.

A VHOST_USER_SERVER vNIC is in server mode (the daemon creates the socket
and the VM's QEMU connects to it) or, with --vhost-client, in client mode:
QEMU creates the socket (-chardev socket,id=c0,path=PATH,server=on,wait=off)
and the daemon connects to it and reconnects after either side restarts.
Without the option the daemon's default (butterflyd --vhost-client) applies.
The mode of a vNIC is set when it is added; nic update cannot change it.

--fw-import FILE (an extension) starts the vNIC's firewall with the
connections another host exported ("nic export"), so that a migrated VM
keeps its established flows; those the vNIC's policy does not allow are
left out. Invalid data fails the command and changes nothing.

--netns PATH (an extension, TAP vNICs only) creates the TAP in that network
namespace (a bind mount such as /var/run/netns/X, or /proc/PID/ns/net) under
the name --ifname (default: derived from the id), with the vNIC's MAC, up.
The device is persistent: a restarted daemon re-attaches to it, and the
container's addresses and routes on it are kept; nic del removes it.`,
		example: `  butterfly nic add --id vm-1 --mac 52:54:00:12:34:01 --vni 42 --ip 10.0.0.1 --sg web --enable-antispoof
  butterfly nic add --id tap-1 --mac 52:54:00:12:34:02 --vni 42 --type TAP
  butterfly nic add --id vm-2 --mac 52:54:00:12:34:03 --vni 42 --vhost-client
  butterfly nic add --id pod-1 --mac 52:54:00:12:34:04 --vni 42 --type TAP --netns /var/run/netns/pod-1 --ifname eth0`,
		maxArgs: 0,
		flags: func(c *cobra.Command) {
			f := c.Flags()
			f.StringVar(&id, "id", "", "vNIC id (required)")
			f.StringVar(&mac, "mac", "", "MAC address of the VM side, as 52:54:00:12:34:56 (required)")
			f.StringVar(&vni, "vni", "", "VXLAN network identifier, 0 to 16777215 (required)")
			f.StringArrayVar(&ips, "ip", nil, "IPv4 or IPv6 address of the vNIC (repeatable)")
			f.StringArrayVar(&sgs, "sg", nil, "security group applied to the vNIC (repeatable)")
			f.BoolVar(&antispoof, "enable-antispoof", false, "drop frames whose source IP is not one of the vNIC's")
			f.BoolVar(&bypass, "bypass-filtering", false, "no firewall and no anti-spoofing for this vNIC")
			f.StringVar(&typ, "type", "VHOST_USER_SERVER", "port type: VHOST_USER_SERVER, TAP or BENCH")
			f.StringVar(&btype, "btype", "", "BENCH vNIC role: ICMP_SND_LIKE or ICMP_RCV_LIKE")
			f.StringVar(&dip, "dip", "", "destination IP of a sending BENCH vNIC")
			f.StringVar(&dmac, "dmac", "", "destination MAC of a sending BENCH vNIC")
			f.StringVar(&trace, "packet-trace", "", "true or false: record the vNIC's traffic in a pcap file (default: the daemon's setting)")
			f.StringVar(&tracePath, "trace-path", "", "pcap file of the trace: a name in the daemon's trace directory (--trace-dir), or a path in it (needs --packet-trace true)")
			f.StringVar(&vhostClient, "vhost-client", "", "true or false: vhost-user client mode, QEMU owns the socket (default: the daemon's setting)")
			f.Lookup("vhost-client").NoOptDefVal = "true"
			f.StringVar(&fwImport, "fw-import", "", `tracked connections to load into the vNIC's firewall: a file from "nic export" (raw or base64)`)
			f.StringVar(&netns, "netns", "", "TAP vNIC: network namespace (path) to create the TAP in")
			f.StringVar(&ifname, "ifname", "", "TAP vNIC: interface name in --netns (default: derived from the id)")
			completeFlag(c, "sg", sgArg)
			completeFlag(c, "type", anyArg, "VHOST_USER_SERVER", "TAP", "BENCH")
			completeFlag(c, "btype", anyArg, "ICMP_SND_LIKE", "ICMP_RCV_LIKE")
			completeFlag(c, "packet-trace", anyArg, "true", "false")
			completeFlag(c, "vhost-client", anyArg, "true", "false")
		},
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			if id == "" || mac == "" || vni == "" {
				var miss []string
				for _, m := range []struct{ name, v string }{{"--id", id}, {"--mac", mac}, {"--vni", vni}} {
					if m.v == "" {
						miss = append(miss, m.name)
					}
				}
				return nil, usagef(c, "%s: missing %s", c.CommandPath(), strings.Join(miss, ", "))
			}
			v, err := strconv.ParseUint(vni, 10, 32)
			if err != nil || v > maxVNI {
				return nil, usagef(c, "--vni: want a number from 0 to %d, got %q", maxVNI, vni)
			}
			t, ok := protocol.MessageV0_Nic_Type_value[strings.ToUpper(typ)]
			if !ok {
				return nil, usagef(c, "--type: want VHOST_USER_SERVER, TAP or BENCH, got %q", typ)
			}
			nic := &protocol.MessageV0_Nic{
				Id:              proto.String(id),
				Mac:             proto.String(mac),
				Vni:             proto.Uint32(uint32(v)),
				Ip:              ips,
				SecurityGroup:   sgs,
				IpAntiSpoof:     proto.Bool(antispoof),
				BypassFiltering: proto.Bool(bypass),
				Type:            protocol.MessageV0_Nic_Type(t).Enum(),
			}
			if c.Flags().Changed("btype") {
				nic.Btype = proto.String(btype)
			}
			if c.Flags().Changed("dip") {
				nic.Dip = proto.String(dip)
			}
			if c.Flags().Changed("dmac") {
				nic.Dmac = proto.String(dmac)
			}
			if err := setTrace(c, trace, tracePath, &nic.PacketTrace, &nic.PacketTracePath); err != nil {
				return nil, err
			}
			if c.Flags().Changed("vhost-client") {
				v, err := boolWord(c, "vhost-client", vhostClient)
				if err != nil {
					return nil, err
				}
				nic.VhostUserClient = proto.Bool(v)
			}
			if netns != "" {
				nic.Netns = proto.String(netns)
			}
			if ifname != "" {
				nic.Ifname = proto.String(ifname)
			}
			if c.Flags().Changed("fw-import") {
				data, err := readImport(fwImport)
				if err != nil {
					return nil, usagef(c, "--fw-import: %v", err)
				}
				nic.FwImport = &protocol.MessageV0_FwData{Data: data}
			}
			return func(s *session) error {
				r, err := s.exec1(&protocol.MessageV0_Request{NicAdd: nic})
				if err != nil {
					return err
				}
				if r.GetNicAdd() == nil || r.GetNicAdd().Path == nil {
					return errors.New("error: no nic add result received")
				}
				fmt.Fprintln(s.stdout, r.GetNicAdd().GetPath())
				return nil
			}, nil
		},
	})
}

// setTrace checks --packet-trace and --trace-path and fills the request.
func setTrace(c *cobra.Command, trace, path string, traceOut **bool, pathOut **string) error {
	on := false
	if c.Flags().Changed("packet-trace") {
		v, err := boolWord(c, "packet-trace", trace)
		if err != nil {
			return err
		}
		on = v
		*traceOut = proto.Bool(v)
	}
	if c.Flags().Changed("trace-path") {
		if !on {
			return usagef(c, "--trace-path needs --packet-trace true")
		}
		if path == "" {
			return usagef(c, "--trace-path: empty path")
		}
		*pathOut = proto.String(path)
	}
	return nil
}

func nicUpdateCommand(seg *segment) *cobra.Command {
	var (
		id, antispoof, trace, tracePath string
		ips                             []string
	)
	return leaf(seg, leafSpec{
		use:   "update --id ID [options]",
		short: "Change the addresses, anti-spoofing or tracing of a vNIC",
		long: `Change a vNIC. Only the options given are changed.

--ip replaces the whole address list of the vNIC; repeat it to give several
addresses. "--ip -e" (or an empty --ip "") removes every address.
Security groups are changed with "butterfly nic sg".`,
		example: `  butterfly nic update --id vm-1 --ip 10.0.0.1 --ip 2001:db8::1
  butterfly nic update --id vm-1 --ip -e
  butterfly nic update --id vm-1 --packet-trace true --trace-path vm-1.pcap`,
		maxArgs: 0,
		flags: func(c *cobra.Command) {
			f := c.Flags()
			f.StringVar(&id, "id", "", "vNIC id (required)")
			f.StringArrayVar(&ips, "ip", nil, `new address list (repeatable); "-e" or "" clears it`)
			f.StringVar(&antispoof, "enable-antispoof", "", "true or false: IP anti-spoofing")
			f.StringVar(&trace, "packet-trace", "", "true or false: record the vNIC's traffic in a pcap file")
			f.StringVar(&tracePath, "trace-path", "", "pcap file of the trace: a name in the daemon's trace directory (--trace-dir), or a path in it (needs --packet-trace true)")
			completeFlag(c, "id", nicArg)
			completeFlag(c, "enable-antispoof", anyArg, "true", "false")
			completeFlag(c, "packet-trace", anyArg, "true", "false")
		},
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			if id == "" {
				return nil, usagef(c, "%s: missing --id", c.CommandPath())
			}
			up := &protocol.MessageV0_NicUpdateReq{Id: proto.String(id)}
			clear := false
			for _, ip := range ips {
				if ip == "-e" || ip == "" {
					clear = true
					continue
				}
				up.Ip = append(up.Ip, ip)
			}
			if clear {
				if len(up.Ip) > 0 {
					return nil, usagef(c, "--ip: cannot both clear the addresses and set %q", up.Ip[0])
				}
				up.Ip = []string{""}
			}
			if c.Flags().Changed("enable-antispoof") {
				v, err := boolWord(c, "enable-antispoof", antispoof)
				if err != nil {
					return nil, err
				}
				up.IpAntiSpoof = proto.Bool(v)
			}
			if err := setTrace(c, trace, tracePath, &up.PacketTrace, &up.PacketTracePath); err != nil {
				return nil, err
			}
			return send(&protocol.MessageV0_Request{NicUpdate: up}), nil
		},
	})
}

func nicDelCommand(seg *segment) *cobra.Command {
	return leaf(seg, leafSpec{
		use:      "del NIC [NIC...]",
		short:    "Remove vNICs (removing an unknown vNIC succeeds)",
		minArgs:  1,
		maxArgs:  -1,
		argNames: []string{"NIC id"},
		complete: []argKind{nicArg},
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			return sendEach(args, func(a string) *protocol.MessageV0_Request {
				return &protocol.MessageV0_Request{NicDel: proto.String(a)}
			}), nil
		},
	})
}

func nicDetailsCommand(seg *segment) *cobra.Command {
	return leaf(seg, leafSpec{
		use:   "details NIC",
		short: "Print the settings of a vNIC",
		long: `Print the settings of a vNIC, one "name: value" per line: id, mac, vni,
one ip line per address, then antispoof, sniff target, bypass filtering,
packet trace and vhost-user client when the daemon reports them.`,
		minArgs:  1,
		maxArgs:  1,
		argNames: []string{"NIC id"},
		complete: []argKind{nicArg},
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			return func(s *session) error {
				r, err := s.exec1(&protocol.MessageV0_Request{NicDetails: proto.String(args[0])})
				if err != nil {
					return err
				}
				if len(r.GetNicDetails()) == 0 {
					return errors.New("error: no nic details received")
				}
				printNICDetails(s, r.GetNicDetails()[0])
				return nil
			}, nil
		},
	})
}

func printNICDetails(s *session, n *protocol.MessageV0_Nic) {
	w := s.stdout
	fmt.Fprintf(w, "id: %s\n", n.GetId())
	fmt.Fprintf(w, "mac: %s\n", n.GetMac())
	fmt.Fprintf(w, "vni: %d\n", n.GetVni())
	for _, ip := range n.GetIp() {
		fmt.Fprintf(w, "ip: %s\n", ip)
	}
	if n.IpAntiSpoof != nil {
		fmt.Fprintf(w, "antispoof: %t\n", n.GetIpAntiSpoof())
	}
	if n.SniffTargetNicId != nil {
		fmt.Fprintf(w, "sniff target: %s\n", n.GetSniffTargetNicId())
	}
	if n.BypassFiltering != nil {
		fmt.Fprintf(w, "bypass filtering: %t\n", n.GetBypassFiltering())
	}
	if n.PacketTrace != nil {
		fmt.Fprintf(w, "packet trace: %t\n", n.GetPacketTrace())
	}
	if n.VhostUserClient != nil {
		fmt.Fprintf(w, "vhost-user client: %t\n", n.GetVhostUserClient())
	}
	if n.Netns != nil {
		fmt.Fprintf(w, "netns: %s\n", n.GetNetns())
		fmt.Fprintf(w, "ifname: %s\n", n.GetIfname())
	}
}

func nicStatsCommand(seg *segment) *cobra.Command {
	return leaf(seg, leafSpec{
		use:      "stats NIC",
		short:    "Print the byte counters of a vNIC",
		long:     `Print the bytes a vNIC received from its VM ("in") and delivered to it ("out").`,
		minArgs:  1,
		maxArgs:  1,
		argNames: []string{"NIC id"},
		complete: []argKind{nicArg},
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			return func(s *session) error {
				r, err := s.exec1(&protocol.MessageV0_Request{NicStats: proto.String(args[0])})
				if err != nil {
					return err
				}
				st := r.GetNicStats()
				if st == nil {
					return errors.New("error: no nic stats received")
				}
				fmt.Fprintf(s.stdout, "in: %d\nout: %d\n", st.GetIn(), st.GetOut())
				return nil
			}, nil
		},
	})
}

func nicCountersCommand(seg *segment) *cobra.Command {
	return leaf(seg, leafSpec{
		use:   "counters NIC",
		short: "Print the packet counters and drops of a vNIC",
		long: `Print the packet and byte counters of a vNIC ("rx" = from the VM,
"tx" = to the VM), then one "drop <reason>: <packets>" line per drop reason.
This command is an extension of this implementation.`,
		minArgs:  1,
		maxArgs:  1,
		argNames: []string{"NIC id"},
		complete: []argKind{nicArg},
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			return func(s *session) error {
				r, err := s.exec1(&protocol.MessageV0_Request{NicCounters: proto.String(args[0])})
				if err != nil {
					return err
				}
				nc := r.GetNicCounters()
				if nc == nil {
					return errors.New("error: no nic counters received")
				}
				fmt.Fprintf(s.stdout, "rx packets: %d\nrx bytes: %d\ntx packets: %d\ntx bytes: %d\n",
					nc.GetRxPackets(), nc.GetRxBytes(), nc.GetTxPackets(), nc.GetTxBytes())
				drops := append([]*protocol.MessageV0_Counter(nil), nc.GetDrops()...)
				sort.SliceStable(drops, func(i, j int) bool { return drops[i].GetName() < drops[j].GetName() })
				for _, d := range drops {
					fmt.Fprintf(s.stdout, "drop %s: %d\n", d.GetName(), d.GetValue())
				}
				for _, q := range nc.GetQueues() {
					fmt.Fprintf(s.stdout, "queue %d rx packets: %d\nqueue %d tx packets: %d\n",
						q.GetQueue(), q.GetRxPackets(), q.GetQueue(), q.GetTxPackets())
				}
				return nil
			}, nil
		},
	})
}

func nicSGCommand(seg *segment) *cobra.Command {
	return group("sg", "Manage the security groups of a vNIC",
		`List, add, remove or replace the security groups applied to a vNIC.`,
		nicSGListCommand(seg),
		nicSGAddCommand(seg),
		nicSGDelCommand(seg),
		nicSGSetCommand(seg),
	)
}

// nicSGs reads the security groups of a vNIC.
func nicSGs(s *session, nic string) ([]string, error) {
	r, err := s.exec1(&protocol.MessageV0_Request{NicDetails: proto.String(nic)})
	if err != nil {
		return nil, err
	}
	if len(r.GetNicDetails()) == 0 {
		return nil, errors.New("error: no nic details received")
	}
	return r.GetNicDetails()[0].GetSecurityGroup(), nil
}

// setNicSGs replaces the security groups of a vNIC; an empty list clears
// them (the protocol's security_group: "").
func setNicSGs(s *session, nic string, sgs []string) error {
	if len(sgs) == 0 {
		sgs = []string{""}
	}
	_, err := s.exec1(&protocol.MessageV0_Request{NicUpdate: &protocol.MessageV0_NicUpdateReq{
		Id:            proto.String(nic),
		SecurityGroup: sgs,
	}})
	return err
}

func nicSGListCommand(seg *segment) *cobra.Command {
	return leaf(seg, leafSpec{
		use:      "list NIC",
		short:    "Print the security groups of a vNIC, one per line",
		minArgs:  1,
		maxArgs:  1,
		argNames: []string{"NIC id"},
		complete: []argKind{nicArg},
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			return func(s *session) error {
				sgs, err := nicSGs(s, args[0])
				if err != nil {
					return err
				}
				printLines(s.stdout, sgs)
				return nil
			}, nil
		},
	})
}

func nicSGAddCommand(seg *segment) *cobra.Command {
	return leaf(seg, leafSpec{
		use:   "add NIC SG [SG...]",
		short: "Add security groups to a vNIC",
		long: `Add security groups to a vNIC. The vNIC's list is read, merged with the
new groups, sorted and written back; nothing is sent when every group is
already there.`,
		minArgs:  2,
		maxArgs:  -1,
		argNames: []string{"NIC id", "security group"},
		complete: []argKind{nicArg, sgArg},
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			nic, add := args[0], args[1:]
			return func(s *session) error {
				cur, err := nicSGs(s, nic)
				if err != nil {
					return err
				}
				merged := sortedUnique(append(append([]string(nil), cur...), add...))
				if len(merged) == len(sortedUnique(cur)) {
					return nil
				}
				return setNicSGs(s, nic, merged)
			}, nil
		},
	})
}

func nicSGDelCommand(seg *segment) *cobra.Command {
	return leaf(seg, leafSpec{
		use:   "del NIC SG [SG...]",
		short: "Remove security groups from a vNIC",
		long: `Remove security groups from a vNIC. Groups the vNIC does not have are
ignored; removing the last group leaves the vNIC with none.`,
		minArgs:  2,
		maxArgs:  -1,
		argNames: []string{"NIC id", "security group"},
		complete: []argKind{nicArg, sgArg},
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			nic, del := args[0], args[1:]
			return func(s *session) error {
				cur, err := nicSGs(s, nic)
				if err != nil {
					return err
				}
				var keep []string
				for _, sg := range cur {
					if !contains(del, sg) {
						keep = append(keep, sg)
					}
				}
				if len(keep) == len(cur) {
					return nil
				}
				return setNicSGs(s, nic, keep)
			}, nil
		},
	})
}

func nicSGSetCommand(seg *segment) *cobra.Command {
	return leaf(seg, leafSpec{
		use:      "set NIC [SG...]",
		short:    "Replace the security groups of a vNIC (none: remove them all)",
		minArgs:  1,
		maxArgs:  -1,
		argNames: []string{"NIC id"},
		complete: []argKind{nicArg, sgArg},
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			nic, sgs := args[0], args[1:]
			return func(s *session) error {
				return setNicSGs(s, nic, sgs)
			}, nil
		},
	})
}

func sortedUnique(l []string) []string {
	out := append([]string(nil), l...)
	sort.Strings(out)
	n := 0
	for i, v := range out {
		if i == 0 || v != out[n-1] {
			out[n] = v
			n++
		}
	}
	return out[:n]
}

func contains(l []string, v string) bool {
	for _, x := range l {
		if x == v {
			return true
		}
	}
	return false
}
