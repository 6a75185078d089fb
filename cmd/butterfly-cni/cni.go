package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ipam"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/apiclient"
	"github.com/butterfly-go/butterfly/internal/crypto"
)

// defaultDataDir keeps each attachment's result, so that a repeated ADD
// returns it unchanged.
const defaultDataDir = "/var/lib/cni/butterfly"

// apiTimeout bounds each API call.
const apiTimeout = 10 * time.Second

// netConf is the network configuration: the CNI keys plus Butterfly's.
type netConf struct {
	types.NetConf
	// Endpoint is butterflyd's API address (default tcp://127.0.0.1:9999).
	Endpoint string `json:"endpoint,omitempty"`
	// KeyFile is the API key; "" = the daemon's default key file when
	// readable, "none" = clear requests.
	KeyFile string `json:"keyFile,omitempty"`
	// VNI is the network's VXLAN id (required).
	VNI *uint32 `json:"vni"`
	// SecurityGroups are the vNIC's groups.
	SecurityGroups []string `json:"securityGroups,omitempty"`
	// Antispoof turns IP anti-spoofing on.
	Antispoof bool `json:"antispoof,omitempty"`
	// DataDir is where attachments' results are kept (default
	// /var/lib/cni/butterfly).
	DataDir string `json:"dataDir,omitempty"`
	// MTU is the container interface's MTU (0: the TAP's default, 1500).
	MTU int `json:"mtu,omitempty"`
}

// minMTU and maxMTU bound netConf.MTU: IPv4's minimum, and the largest
// MTU Linux gives a TAP (65535 less its Ethernet header). minMTU6 is
// IPv6's minimum, required when the IPAM plugin allocates IPv6 addresses.
const (
	minMTU  = 68
	maxMTU  = 65535 - 14
	minMTU6 = 1280
)

// loadConf parses and checks the network configuration.
func loadConf(data []byte) (*netConf, error) {
	c := &netConf{}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "cannot parse the network configuration", err.Error())
	}
	bad := func(format string, args ...any) (*netConf, error) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "invalid network configuration", fmt.Sprintf(format, args...))
	}
	switch {
	case c.VNI == nil:
		return bad("vni is required")
	case *c.VNI >= 1<<24:
		return bad("vni %d does not fit 24 bits", *c.VNI)
	case c.IPAM.Type == "":
		return bad("ipam.type is required: the plugin delegates addresses to an IPAM plugin (host-local, static, ...)")
	case c.MTU != 0 && (c.MTU < minMTU || c.MTU > maxMTU):
		return bad("mtu %d out of range: want %d to %d", c.MTU, minMTU, maxMTU)
	}
	if c.Endpoint == "" {
		c.Endpoint = apiclient.DefaultEndpoint
	}
	if c.DataDir == "" {
		c.DataDir = defaultDataDir
	}
	return c, nil
}

// nicPrefix starts the id of every vNIC the plugin creates.
const nicPrefix = "cni-"

// nicID names the vNIC of one attachment: a container's interface.
func nicID(containerID, ifname string) string {
	return nicPrefix + containerID + "-" + ifname
}

// nicMAC derives a stable, locally administered unicast MAC from the
// network's name and the vNIC id, so that a repeated ADD asks for the same
// vNIC. It is also the plugin's tag (see isOurs): a vNIC whose MAC is the
// one network derives for its id was created by this plugin for network.
func nicMAC(network, id string) net.HardwareAddr {
	h := sha256.Sum256([]byte("butterfly-cni\x00" + network + "\x00" + id))
	mac := net.HardwareAddr(h[:6])
	mac[0] = mac[0]&0xfe | 0x02
	return mac
}

// daemon is a connection to butterflyd.
type daemon struct {
	c *apiclient.Client
}

// loadAndDial reads the network configuration of args and connects to its
// daemon.
func loadAndDial(args *skel.CmdArgs) (*netConf, *daemon, error) {
	c, err := loadConf(args.StdinData)
	if err != nil {
		return nil, nil, err
	}
	d, err := dial(c)
	if err != nil {
		return nil, nil, err
	}
	return c, d, nil
}

func dial(c *netConf) (*daemon, error) {
	var key []byte
	switch path := c.KeyFile; path {
	case "none":
	case "":
		k, err := crypto.LoadKeyFile(apiclient.DefaultKeyFile)
		if err == nil {
			key = k
		}
	default:
		k, err := crypto.LoadKeyFile(path)
		if err != nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, "cannot load keyFile", err.Error())
		}
		key = k
	}
	cl, err := apiclient.Dial(c.Endpoint, apiclient.Options{Key: key, Timeout: apiTimeout})
	if err != nil {
		return nil, types.NewError(types.ErrPluginNotAvailable, "cannot reach butterflyd", err.Error())
	}
	return &daemon{c: cl}, nil
}

func (d *daemon) close() { d.c.Close() }

// call sends one request and returns its response, or an error with the
// daemon's description.
func (d *daemon) call(req *protocol.MessageV0_Request) (*protocol.MessageV0_Response, error) {
	msgs := &protocol.Messages{Messages: []*protocol.Message{{
		Revision: proto.Uint32(protocol.Revision), Message_0: &protocol.MessageV0{Request: req}}}}
	res, err := d.c.Call(msgs)
	if err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, "butterflyd did not answer", err.Error())
	}
	m := res.GetMessages()
	if len(m) != 1 || m[0].GetMessage_0().GetResponse() == nil {
		return nil, types.NewError(types.ErrInternal, "unexpected reply from butterflyd", fmt.Sprint(res))
	}
	r := m[0].GetMessage_0().GetResponse()
	if !r.GetStatus().GetStatus() {
		return nil, errors.New(r.GetStatus().GetError().GetDescription())
	}
	return r, nil
}

// details returns the vNIC id, or nil when the daemon has none.
func (d *daemon) details(id string) (*protocol.MessageV0_Nic, error) {
	r, err := d.call(&protocol.MessageV0_Request{NicList: proto.Bool(true)})
	if err != nil {
		return nil, err
	}
	if !slices.Contains(r.GetNicList(), id) {
		return nil, nil
	}
	r, err = d.call(&protocol.MessageV0_Request{NicDetails: proto.String(id)})
	if err != nil {
		return nil, err
	}
	if len(r.GetNicDetails()) != 1 {
		return nil, fmt.Errorf("nic_details %s: %d answers", id, len(r.GetNicDetails()))
	}
	return r.GetNicDetails()[0], nil
}

// resultPath is where an attachment's result is kept.
func resultPath(c *netConf, id string) string {
	return filepath.Join(c.DataDir, c.Name+"-"+id+".json")
}

func cmdAdd(args *skel.CmdArgs) error {
	c, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	if err := ns.IsNSorErr(args.Netns); err != nil {
		return types.NewError(types.ErrInvalidNetNS, "invalid network namespace "+args.Netns, err.Error())
	}
	d, err := dial(c)
	if err != nil {
		return err
	}
	defer d.close()
	id := nicID(args.ContainerID, args.IfName)
	mac := nicMAC(c.Name, id)

	// A repeated ADD: the vNIC exists in this namespace and its result
	// was kept: configure the namespace again and return it.
	if old, err := d.details(id); err != nil {
		return types.NewError(types.ErrTryAgainLater, "cannot query butterflyd", err.Error())
	} else if old != nil && old.GetNetns() == args.Netns && old.GetIfname() == args.IfName {
		if b, err := os.ReadFile(resultPath(c, id)); err == nil {
			res, err := current.NewResult(b)
			if err == nil {
				r, _ := current.GetResult(res)
				if err := configure(args.Netns, args.IfName, c.MTU, r); err != nil {
					return err
				}
				return types.PrintResult(r, c.CNIVersion)
			}
		}
	}

	ipr, err := ipam.ExecAdd(c.IPAM.Type, args.StdinData)
	if err != nil {
		return types.NewError(types.ErrTryAgainLater, "IPAM plugin "+c.IPAM.Type+" failed", err.Error())
	}
	undo := func() { _ = ipam.ExecDel(c.IPAM.Type, args.StdinData) }
	r, err := current.NewResultFromResult(ipr)
	if err != nil {
		undo()
		return types.NewError(types.ErrDecodingFailure, "cannot read the IPAM result", err.Error())
	}
	if len(r.IPs) == 0 {
		undo()
		return types.NewError(types.ErrInvalidNetworkConfig, "IPAM plugin "+c.IPAM.Type+" returned no address", "")
	}
	for _, ip := range r.IPs {
		if c.MTU != 0 && c.MTU < minMTU6 && ip.Address.IP.To4() == nil {
			undo()
			return types.NewError(types.ErrInvalidNetworkConfig, "invalid network configuration",
				fmt.Sprintf("mtu %d is below IPv6's minimum %d and IPAM allocated %v", c.MTU, minMTU6, ip.Address.String()))
		}
	}
	nic := &protocol.MessageV0_Nic{
		Id:            proto.String(id),
		Mac:           proto.String(mac.String()),
		Vni:           proto.Uint32(*c.VNI),
		SecurityGroup: c.SecurityGroups,
		IpAntiSpoof:   proto.Bool(c.Antispoof),
		Type:          protocol.MessageV0_Nic_TAP.Enum(),
		Netns:         proto.String(args.Netns),
		Ifname:        proto.String(args.IfName),
	}
	for _, ip := range r.IPs {
		nic.Ip = append(nic.Ip, ip.Address.IP.String())
	}
	if _, err := d.call(&protocol.MessageV0_Request{NicAdd: nic}); err != nil {
		undo()
		return types.NewError(types.ErrInternal, "butterflyd refused the vNIC "+id, err.Error())
	}
	zero := 0
	r.Interfaces = []*current.Interface{{Name: args.IfName, Mac: mac.String(), Mtu: c.MTU, Sandbox: args.Netns}}
	for _, ip := range r.IPs {
		ip.Interface = &zero
	}
	if err := configure(args.Netns, args.IfName, c.MTU, r); err != nil {
		_, _ = d.call(&protocol.MessageV0_Request{NicDel: proto.String(id)})
		undo()
		return err
	}
	if err := keepResult(c, id, r); err != nil {
		_, _ = d.call(&protocol.MessageV0_Request{NicDel: proto.String(id)})
		undo()
		return err
	}
	return types.PrintResult(r, c.CNIVersion)
}

// keepResult writes the attachment's result for a repeated ADD.
func keepResult(c *netConf, id string, r *current.Result) error {
	b, err := json.Marshal(r)
	if err != nil {
		return types.NewError(types.ErrInternal, "cannot encode the result", err.Error())
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return types.NewError(types.ErrIOFailure, "cannot create dataDir", err.Error())
	}
	p := resultPath(c, id)
	if err := os.WriteFile(p+".tmp", b, 0o600); err != nil {
		return types.NewError(types.ErrIOFailure, "cannot keep the result", err.Error())
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		return types.NewError(types.ErrIOFailure, "cannot keep the result", err.Error())
	}
	return nil
}

// configure sets the MTU (unless 0) and the result's addresses and routes
// on ifname in the namespace (replacing what is there, so it can run
// twice) and brings it up.
func configure(netnsPath, ifname string, mtu int, r *current.Result) error {
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		link, err := netlink.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("find %s: %w", ifname, err)
		}
		if mtu != 0 {
			if err := netlink.LinkSetMTU(link, mtu); err != nil {
				return fmt.Errorf("set the MTU of %s to %d: %w", ifname, mtu, err)
			}
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up: %w", ifname, err)
		}
		gws := map[bool]net.IP{}
		for _, ip := range r.IPs {
			a := &netlink.Addr{IPNet: &ip.Address}
			if ip.Address.IP.To4() == nil {
				a.Flags = unix.IFA_F_NODAD
			}
			if err := netlink.AddrReplace(link, a); err != nil {
				return fmt.Errorf("add %v to %s: %w", ip.Address.String(), ifname, err)
			}
			if ip.Gateway != nil && gws[ip.Address.IP.To4() != nil] == nil {
				gws[ip.Address.IP.To4() != nil] = ip.Gateway
			}
		}
		for _, rt := range r.Routes {
			gw := rt.GW
			if gw == nil {
				gw = gws[rt.Dst.IP.To4() != nil]
			}
			route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: &rt.Dst, Gw: gw}
			if gw == nil {
				route.Scope = netlink.SCOPE_LINK
			}
			if err := netlink.RouteReplace(route); err != nil {
				return fmt.Errorf("route %v via %v on %s: %w", rt.Dst.String(), gw, ifname, err)
			}
		}
		return nil
	})
	if err != nil {
		return types.NewError(types.ErrInternal, "cannot configure the container's interface", err.Error())
	}
	return nil
}

func cmdDel(args *skel.CmdArgs) error {
	c, d, err := loadAndDial(args)
	if err != nil {
		return err
	}
	defer d.close()
	id := nicID(args.ContainerID, args.IfName)
	// nic_del of an unknown id succeeds, so a repeated DEL does too.
	if _, err := d.call(&protocol.MessageV0_Request{NicDel: proto.String(id)}); err != nil {
		return types.NewError(types.ErrTryAgainLater, "butterflyd could not delete the vNIC "+id, err.Error())
	}
	if err := ipam.ExecDel(c.IPAM.Type, args.StdinData); err != nil {
		return types.NewError(types.ErrTryAgainLater, "IPAM plugin "+c.IPAM.Type+" failed to release", err.Error())
	}
	if err := os.Remove(resultPath(c, id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return types.NewError(types.ErrIOFailure, "cannot remove the kept result", err.Error())
	}
	return nil
}

func cmdCheck(args *skel.CmdArgs) error {
	c, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	if c.RawPrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs prevResult", "")
	}
	if err := version.ParsePrevResult(&c.NetConf); err != nil {
		return types.NewError(types.ErrDecodingFailure, "cannot parse prevResult", err.Error())
	}
	prev, err := current.GetResult(c.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "cannot read prevResult", err.Error())
	}
	d, err := dial(c)
	if err != nil {
		return err
	}
	defer d.close()
	id := nicID(args.ContainerID, args.IfName)
	n, err := d.details(id)
	switch {
	case err != nil:
		return types.NewError(types.ErrTryAgainLater, "cannot query butterflyd", err.Error())
	case n == nil:
		return types.NewError(types.ErrUnknownContainer, "butterflyd has no vNIC "+id, "")
	case n.GetNetns() != args.Netns || n.GetIfname() != args.IfName:
		return types.NewError(types.ErrInternal, "vNIC "+id+" is elsewhere",
			fmt.Sprintf("in %s as %s, want %s as %s", n.GetNetns(), n.GetIfname(), args.Netns, args.IfName))
	}
	if err := ipam.ExecCheck(c.IPAM.Type, args.StdinData); err != nil {
		return types.NewError(types.ErrInternal, "IPAM plugin "+c.IPAM.Type+" check failed", err.Error())
	}
	mac := nicMAC(c.Name, id)
	err = ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
		link, err := netlink.LinkByName(args.IfName)
		if err != nil {
			return fmt.Errorf("%s is missing: %w", args.IfName, err)
		}
		if link.Type() != "tuntap" {
			return fmt.Errorf("%s is a %s interface, not the vNIC's TAP", args.IfName, link.Type())
		}
		if !bytes.Equal(link.Attrs().HardwareAddr, mac) {
			return fmt.Errorf("%s has MAC %v, want %v", args.IfName, link.Attrs().HardwareAddr, mac)
		}
		if c.MTU != 0 && link.Attrs().MTU != c.MTU {
			return fmt.Errorf("%s has MTU %d, want %d", args.IfName, link.Attrs().MTU, c.MTU)
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("addresses of %s: %w", args.IfName, err)
		}
		for _, ip := range prev.IPs {
			if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IPNet.String() == ip.Address.String() }) {
				return fmt.Errorf("%s lacks %v", args.IfName, ip.Address.String())
			}
		}
		return nil
	})
	if err != nil {
		return types.NewError(types.ErrInternal, "the container's interface does not match", err.Error())
	}
	return nil
}

func cmdStatus(args *skel.CmdArgs) error {
	c, d, err := loadAndDial(args)
	if err != nil {
		return err
	}
	defer d.close()
	if _, err := d.call(&protocol.MessageV0_Request{AppStatus: proto.Bool(true)}); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "butterflyd at "+c.Endpoint+" does not answer", err.Error())
	}
	if err := ipam.ExecStatus(c.IPAM.Type, args.StdinData); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "IPAM plugin "+c.IPAM.Type+" is not available", err.Error())
	}
	return nil
}
