package labtest

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// NICSpec describes a TAP vNIC and the VM behind it.
type NICSpec struct {
	ID        string
	MAC       string
	VNI       uint32
	Addrs     []string // in the VM, with prefix length: "42.0.0.1/24"
	NoAPIIPs  bool     // do not declare Addrs to the API (nic add without --ip)
	Antispoof bool
	Bypass    bool
	SGs       []string
	Trace     string // pcap path: packet trace on
	MTU       int    // VM MTU; 0 = 1400 (fits VXLAN over a 1500-byte IPv4 or IPv6 underlay)
	// Quiet drops the VM's MLD reports and router solicitations before
	// they leave it: flooded to the other vNICs of the VNI, they would be
	// counted there as firewall drops (no rule allows them towards a VM),
	// blurring tests that assert drop counters.
	Quiet bool
}

// VM is a namespace holding one vNIC's TAP device, renamed eth0.
type VM struct {
	Host *Host
	NS   string
	Spec NICSpec
	TAP  string // interface name the daemon returned
}

// IP returns the VM's i-th address without prefix length.
func (v *VM) IP(i int) string {
	return strings.SplitN(v.Spec.Addrs[i], "/", 2)[0]
}

// NICAddArgs is the CLI command line creating the vNIC.
func (s NICSpec) NICAddArgs() []string {
	args := []string{"nic", "add", "--id", s.ID, "--mac", s.MAC, "--vni", strconv.FormatUint(uint64(s.VNI), 10), "--type", "TAP"}
	if !s.NoAPIIPs {
		for _, a := range s.Addrs {
			args = append(args, "--ip", strings.SplitN(a, "/", 2)[0])
		}
	}
	for _, sg := range s.SGs {
		args = append(args, "--sg", sg)
	}
	if s.Antispoof {
		args = append(args, "--enable-antispoof")
	}
	if s.Bypass {
		args = append(args, "--bypass-filtering")
	}
	if s.Trace != "" {
		args = append(args, "--packet-trace", "true", "--trace-path", s.Trace)
	}
	return args
}

// AddVM creates the vNIC through the API and plugs its TAP into a new VM
// namespace.
func (h *Host) AddVM(s NICSpec) *VM {
	h.Lab.T.Helper()
	v := &VM{Host: h, NS: h.Lab.NetNS("vm-" + s.ID), Spec: s}
	v.Create()
	return v
}

// Create sends nic add and plugs the TAP.
func (v *VM) Create() {
	t := v.Host.Lab.T
	t.Helper()
	out := v.Host.MustCLI(v.Spec.NICAddArgs()...)
	v.TAP = LastLine(out)
	if v.TAP == "" {
		t.Fatalf("nic add %s printed no interface name", v.Spec.ID)
	}
	v.Plug()
}

// Plug moves the vNIC's TAP from the host namespace into the VM namespace
// and configures it as eth0. It waits for the TAP to appear (after a daemon
// restart the daemon recreates it).
func (v *VM) Plug() {
	t := v.Host.Lab.T
	t.Helper()
	if _, err := Run("ip", "-n", v.NS, "link", "show", "eth0"); err == nil {
		t.Fatalf("%s already has an eth0", v.NS)
	}
	Eventually(t, SettleTimeout, "TAP "+v.TAP+" in "+v.Host.NS, func() error {
		_, err := Run("ip", "-n", v.Host.NS, "link", "show", v.TAP)
		return err
	})
	mtu := v.Spec.MTU
	if mtu == 0 {
		mtu = 1400
	}
	Must(t, "ip", "-n", v.Host.NS, "link", "set", v.TAP, "netns", v.NS)
	Must(t, "ip", "-n", v.NS, "link", "set", v.TAP, "name", "eth0")
	Must(t, "ip", "-n", v.NS, "link", "set", "eth0", "address", v.Spec.MAC, "mtu", strconv.Itoa(mtu))
	for _, a := range v.Spec.Addrs {
		v.AddAddr(a)
	}
	if v.Spec.Quiet {
		for _, rule := range []string{"add table ip6 quiet",
			"add chain ip6 quiet out { type filter hook output priority 0; }",
			"add rule ip6 quiet out icmpv6 type { mld-listener-report, mld2-listener-report, mld-listener-done, nd-router-solicit } drop"} {
			Must(t, "ip", "netns", "exec", v.NS, "nft", rule)
		}
	}
	Must(t, "ip", "-n", v.NS, "link", "set", "eth0", "up")
}

// AddAddr adds an address (with prefix length) to the VM's eth0.
func (v *VM) AddAddr(a string) {
	t := v.Host.Lab.T
	t.Helper()
	args := []string{"-n", v.NS, "addr", "add", a, "dev", "eth0"}
	if strings.Contains(a, ":") {
		args = append(args, "nodad")
	}
	Must(t, "ip", args...)
}

// DelAddr removes an address from the VM's eth0.
func (v *VM) DelAddr(a string) {
	t := v.Host.Lab.T
	t.Helper()
	Must(t, "ip", "-n", v.NS, "addr", "del", a, "dev", "eth0")
}

// Exec runs a command inside the VM namespace.
func (v *VM) Exec(args ...string) (string, error) {
	return Run("ip", append([]string{"netns", "exec", v.NS}, args...)...)
}

// PingOnce sends one echo request (ICMP or ICMPv6 from the address family
// of dst) and waits one second for the reply. Extra ping flags go first.
func (v *VM) PingOnce(dst string, flags ...string) error {
	args := append([]string{"ping", "-n", "-c", "1", "-W", "1"}, flags...)
	_, err := v.Exec(append(args, dst)...)
	return err
}

// Reach returns nil once dst answers a ping, an error if it does not
// within the settle timeout.
func (v *VM) Reach(dst string, flags ...string) error {
	if err := Poll(SettleTimeout, func() error { return v.PingOnce(dst, flags...) }); err != nil {
		return fmt.Errorf("%s cannot reach %s %v: %w", v.Spec.ID, dst, flags, err)
	}
	return nil
}

// Reaches fails t unless dst answers a ping within the settle timeout.
func (v *VM) Reaches(t testing.TB, dst string, flags ...string) {
	t.Helper()
	if err := v.Reach(dst, flags...); err != nil {
		t.Fatal(err)
	}
}

// Blocked fails t if dst answers any of three pings.
func (v *VM) Blocked(t testing.TB, dst string, flags ...string) {
	t.Helper()
	if err := v.BlockedFrom(dst, flags...); err != nil {
		t.Fatal(err)
	}
}

// BlockedFrom reports an error if dst answers any of three pings.
func (v *VM) BlockedFrom(dst string, flags ...string) error {
	args := append([]string{"ping", "-n", "-c", "3", "-i", "0.3", "-W", "1"}, flags...)
	out, err := v.Exec(append(args, dst)...)
	if err == nil {
		return fmt.Errorf("%s reached %s (%v), expected no reply:\n%s", v.Spec.ID, dst, flags, out)
	}
	return nil
}
