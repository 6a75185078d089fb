package e2e

import (
	"bytes"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// cniEnv runs cnitool with butterfly-cni and host-local built into a
// directory of the lab, and network configurations written there.
type cniEnv struct {
	t      *testing.T
	bin    string // CNI_PATH, also holds cnitool
	netDir string // NETCONFPATH
	dir    string
}

func newCNIEnv(t *testing.T, l *labtest.Lab) *cniEnv {
	t.Helper()
	e := &cniEnv{t: t, bin: filepath.Join(l.Dir, "cnibin"), netDir: filepath.Join(l.Dir, "net.d"), dir: l.Dir}
	for _, p := range []struct{ out, pkg string }{
		{"butterfly-cni", "./cmd/butterfly-cni"},
		{"cnitool", "github.com/containernetworking/cni/cnitool"},
		{"host-local", "github.com/containernetworking/plugins/plugins/ipam/host-local"},
	} {
		if err := labtest.GoBuild(moduleRoot(), filepath.Join(e.bin, p.out), p.pkg); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(e.netDir, 0o755); err != nil {
		t.Fatal(err)
	}
	return e
}

// network writes the configuration list name: butterfly-cni on host h's
// daemon in VNI vni, addresses from host-local's range first..last of
// 42.0.0.0/24.
func (e *cniEnv) network(name string, h *labtest.Host, vni, first, last int) {
	e.t.Helper()
	e.networkMTU(name, h, vni, first, last, 0)
}

// networkMTU is network with the key mtu (unless 0).
func (e *cniEnv) networkMTU(name string, h *labtest.Host, vni, first, last, mtu int) {
	e.t.Helper()
	mtuKey := ""
	if mtu != 0 {
		mtuKey = fmt.Sprintf(`"mtu": %d,`, mtu)
	}
	conf := fmt.Sprintf(`{
  "cniVersion": "1.1.0",
  "name": %q,
  "plugins": [{
    "type": "butterfly-cni",
    "endpoint": %q,
    "keyFile": "none",
    "vni": %d,
    "securityGroups": ["sg-open"],
    "antispoof": true,%s
    "dataDir": %q,
    "ipam": {
      "type": "host-local",
      "dataDir": %q,
      "ranges": [[{"subnet": "42.0.0.0/24", "rangeStart": "42.0.0.%d", "rangeEnd": "42.0.0.%d"}]],
      "routes": [{"dst": "10.200.0.0/16"}]
    }
  }]
}`, name, h.Endpoint, vni, mtuKey, filepath.Join(e.dir, "cni-data-"+name), filepath.Join(e.dir, "ipam-"+name), first, last)
	if err := os.WriteFile(filepath.Join(e.netDir, name+".conflist"), []byte(conf), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// gc runs the plugin's GC (CNI 1.1) for network with the attachments
// (interface eth0) of the pods in namespaces valid, as a runtime would.
func (e *cniEnv) gc(network string, valid ...string) (string, error) {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.netDir, network+".conflist"))
	if err != nil {
		e.t.Fatal(err)
	}
	var list struct {
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		e.t.Fatal(err)
	}
	conf := list.Plugins[0]
	conf["name"], conf["cniVersion"] = network, "1.1.0"
	var atts []map[string]string
	for _, ns := range valid {
		atts = append(atts, map[string]string{"containerID": cnitoolContainerID(netnsPath(ns)), "ifname": "eth0"})
	}
	conf["cni.dev/valid-attachments"] = atts
	if b, err = json.Marshal(conf); err != nil {
		e.t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(e.bin, "butterfly-cni"))
	cmd.Env = append(os.Environ(), "CNI_COMMAND=GC", "CNI_PATH="+e.bin)
	cmd.Stdin = bytes.NewReader(b)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("GC of %s: %w: %s", network, err, out)
	}
	return string(out), nil
}

// cnitoolContainerID is the container id cnitool gives the pod in netns.
func cnitoolContainerID(netns string) string {
	s := sha512.Sum512([]byte(netns))
	return fmt.Sprintf("cnitool-%x", s[:10])
}

// tool runs cnitool.
func (e *cniEnv) tool(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(e.bin, "cnitool"), args...)
	cmd.Env = append(os.Environ(), "CNI_PATH="+e.bin, "NETCONFPATH="+e.netDir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("cnitool %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// cniResult is the part of a CNI result the test reads.
type cniResult struct {
	CNIVersion string `json:"cniVersion"`
	Interfaces []struct {
		Name, Mac, Sandbox string
		Mtu                int
	} `json:"interfaces"`
	IPs []struct {
		Address   string `json:"address"`
		Interface *int   `json:"interface"`
	} `json:"ips"`
}

// add runs cnitool add and returns the pod's address (without length).
func (e *cniEnv) add(network, ns string) (cniResult, string) {
	e.t.Helper()
	out, err := e.tool("add", network, netnsPath(ns))
	if err != nil {
		e.t.Fatal(err)
	}
	var r cniResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		e.t.Fatalf("cnitool add printed no result: %v\n%s", err, out)
	}
	if len(r.IPs) != 1 || len(r.Interfaces) != 1 || r.Interfaces[0].Name != "eth0" || r.Interfaces[0].Sandbox != netnsPath(ns) ||
		r.IPs[0].Interface == nil || *r.IPs[0].Interface != 0 || r.CNIVersion != "1.1.0" {
		e.t.Fatalf("unexpected result of ADD in %s:\n%s", ns, out)
	}
	return r, strings.SplitN(r.IPs[0].Address, "/", 2)[0]
}

func podPing(ns, dst string) error {
	_, err := labtest.Run("ip", "netns", "exec", ns, "ping", "-n", "-c", "1", "-W", "1", dst)
	return err
}

// TestCNI drives butterfly-cni through cnitool with host-local IPAM: two
// pods on two daemons (VXLAN) in one VNI ping each other and pass iperf3
// TCP, a pod in another VNI (same subnet) cannot; ADD again returns the same result and
// keeps the interface; CHECK passes, then detects a deleted TAP; DEL
// twice succeeds; STATUS answers; errors are CNI error objects.
func TestCNI(t *testing.T) {
	l := newLab(t)
	h1, h2 := l.OpenHostPair(labtest.IPv4, labtest.DaemonOpts{})
	e := newCNIEnv(t, l)
	e.networkMTU("h1-net42", h1, 42, 10, 19, 1400)
	e.network("h2-net42", h2, 42, 20, 29)
	e.network("h2-net43", h2, 43, 30, 39)
	podA, podB, podC := l.NetNS("cnia"), l.NetNS("cnib"), l.NetNS("cnic")

	resA, ipA := e.add("h1-net42", podA)
	_, ipB := e.add("h2-net42", podB)
	_, ipC := e.add("h2-net43", podC)
	t.Logf("pods: A %s (h1, VNI 42), B %s (h2, VNI 42), C %s (h2, VNI 43)", ipA, ipB, ipC)
	if route := labtest.Must(t, "ip", "-n", podA, "route", "show", "10.200.0.0/16"); !strings.Contains(route, "dev eth0") {
		t.Errorf("IPAM route not configured in pod A: %q", route)
	}
	// Pod A's network sets mtu 1400; the others keep the TAP's 1500.
	if link := labtest.Must(t, "ip", "-n", podA, "-o", "link", "show", "eth0"); !strings.Contains(link, " mtu 1400 ") || resA.Interfaces[0].Mtu != 1400 {
		t.Errorf("pod A: result's MTU %d, link %q; want 1400", resA.Interfaces[0].Mtu, link)
	}
	if link := labtest.Must(t, "ip", "-n", podB, "-o", "link", "show", "eth0"); !strings.Contains(link, " mtu 1500 ") {
		t.Errorf("pod B: link %q, want mtu 1500", link)
	}
	labtest.Eventually(t, labtest.SettleTimeout, "pod A pings pod B across hosts", func() error { return podPing(podA, ipB) })
	labtest.Eventually(t, labtest.SettleTimeout, "pod B pings pod A across hosts", func() error { return podPing(podB, ipA) })
	for _, dst := range []string{ipC} {
		if _, err := labtest.Run("ip", "netns", "exec", podA, "ping", "-n", "-c", "3", "-i", "0.3", "-W", "1", dst); err == nil {
			t.Errorf("pod A reached pod C (%s) in another VNI", dst)
		}
	}

	// iperf3 TCP from pod A to pod B, over VXLAN.
	srv := exec.Command("ip", "netns", "exec", podB, "iperf3", "-s", "-1", "-p", "5301")
	srv.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-srv.Process.Pid, syscall.SIGKILL)
		_ = srv.Wait()
	})
	var iperf string
	labtest.Eventually(t, labtest.SettleTimeout, "iperf3 TCP from pod A to pod B", func() (err error) {
		iperf, err = labtest.Run("ip", "netns", "exec", podA, "iperf3", "-c", ipB, "-p", "5301", "-t", "2", "-f", "m")
		return err
	})
	if m := regexp.MustCompile(`([0-9.]+) Mbits/sec.*receiver`).FindStringSubmatch(iperf); m == nil {
		t.Errorf("no receiver rate in iperf3's output:\n%s", iperf)
	} else {
		t.Logf("iperf3 TCP between two CNI pods on two hosts: %s Mbit/s", m[1])
	}

	// ADD again: same result, same interface.
	idx := func() string {
		return strings.SplitN(labtest.Must(t, "ip", "-n", podA, "-o", "link", "show", "eth0"), ":", 2)[0]
	}
	before := idx()
	resA2, ipA2 := e.add("h1-net42", podA)
	if ipA2 != ipA || resA2.Interfaces[0].Mac != resA.Interfaces[0].Mac || idx() != before {
		t.Errorf("repeated ADD: %s %s ifindex %s, want %s %s %s", ipA2, resA2.Interfaces[0].Mac, idx(), ipA, resA.Interfaces[0].Mac, before)
	}
	if err := podPing(podA, ipB); err != nil {
		t.Errorf("after a repeated ADD: %v", err)
	}

	// CHECK.
	if out, err := e.tool("check", "h1-net42", netnsPath(podA)); err != nil {
		t.Errorf("CHECK of a healthy pod: %v %s", err, out)
	}
	if out, err := e.tool("status", "h1-net42", netnsPath(podA)); err != nil {
		t.Errorf("STATUS: %v %s", err, out)
	}
	labtest.Must(t, "ip", "-n", podA, "link", "set", "eth0", "mtu", "1500")
	if out, err := e.tool("check", "h1-net42", netnsPath(podA)); err == nil || !strings.Contains(out, "eth0 has MTU 1500, want 1400") {
		t.Errorf("CHECK after the MTU changed: %v %s", err, out)
	}
	labtest.Must(t, "ip", "-n", podA, "link", "del", "eth0")
	out, err := e.tool("check", "h1-net42", netnsPath(podA))
	if err == nil || !strings.Contains(out, "eth0 is missing") {
		t.Errorf("CHECK after the TAP was deleted: %v %s", err, out)
	}

	// DEL twice.
	for i := 0; i < 2; i++ {
		if out, err := e.tool("del", "h1-net42", netnsPath(podA)); err != nil {
			t.Fatalf("DEL #%d: %v %s", i+1, err, out)
		}
	}
	if ids := strings.Fields(h1.MustCLI("nic", "list")); slices.ContainsFunc(ids, func(s string) bool { return strings.HasPrefix(s, "cni-") }) {
		t.Errorf("vNICs left on h1 after DEL: %v", ids)
	}
	// Pod C's namespace is gone before its DEL: DEL still succeeds.
	labtest.Must(t, "ip", "netns", "del", podC)
	if out, err := e.tool("del", "h2-net43", netnsPath(podC)); err != nil {
		t.Errorf("DEL after the namespace was deleted: %v %s", err, out)
	}

	// GC deletes the vNICs the plugin created for the network whose
	// attachment is not valid any more (pod E's), and host-local's
	// reservation; it leaves the valid ones (B, D), another network's on
	// the same daemon and VNI (G), and a vNIC made by hand with the
	// plugin's prefix (F).
	e.network("h2-net42b", h2, 42, 40, 49)
	podD, podE, podF, podG := l.NetNS("cnid"), l.NetNS("cnie"), l.NetNS("cnif"), l.NetNS("cnig")
	e.add("h2-net42", podD)
	_, ipE := e.add("h2-net42", podE)
	e.add("h2-net42b", podG)
	h2.MustCLI("nic", "add", "--id", "cni-byhand-eth0", "--mac", "52:54:00:00:00:99", "--vni", "42", "--type", "TAP",
		"--netns", netnsPath(podF), "--ifname", "eth0")
	reservation := filepath.Join(e.dir, "ipam-h2-net42", "h2-net42", ipE)
	if _, err := os.Stat(reservation); err != nil {
		t.Fatalf("host-local's reservation of pod E: %v", err)
	}
	if out, err := e.gc("h2-net42", podB, podD); err != nil {
		t.Fatal(err, out)
	}
	want := []string{"cni-byhand-eth0"}
	for _, ns := range []string{podB, podD, podG} {
		want = append(want, "cni-"+cnitoolContainerID(netnsPath(ns))+"-eth0")
	}
	slices.Sort(want)
	got := slices.Sorted(slices.Values(strings.Fields(h2.MustCLI("nic", "list"))))
	if !slices.Equal(got, want) {
		t.Errorf("vNICs on h2 after GC: %v, want %v", got, want)
	}
	if _, err := os.Stat(reservation); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pod E's address still reserved after GC: %v", err)
	}
	// The daemon removes a deleted vNIC's TAP in the background.
	labtest.Eventually(t, labtest.SettleTimeout, "pod E's TAP removed from its namespace after GC", func() error {
		if _, err := labtest.Run("ip", "-n", podE, "link", "show", "eth0"); err == nil {
			return errors.New("still there")
		}
		return nil
	})
	if err := podPing(podD, ipB); err != nil {
		t.Errorf("pod D after GC: %v", err)
	}

	// Errors are CNI error objects.
	cmd := exec.Command(filepath.Join(e.bin, "butterfly-cni"))
	cmd.Env = append(os.Environ(), "CNI_COMMAND=ADD", "CNI_CONTAINERID=x", "CNI_NETNS="+netnsPath(podB), "CNI_IFNAME=eth1", "CNI_PATH="+e.bin)
	cmd.Stdin = strings.NewReader(`{"cniVersion": "1.0.0", "name": "bad", "type": "butterfly-cni", "ipam": {"type": "host-local"}}`)
	b, err := cmd.Output()
	var ce struct {
		Code int    `json:"code"`
		Msg  string `json:"msg"`
		Det  string `json:"details"`
	}
	if err == nil || json.Unmarshal(b, &ce) != nil || ce.Code != 7 || !strings.Contains(ce.Det, "vni is required") {
		t.Errorf("ADD without vni: %v, printed %s; want error code 7 about vni", err, b)
	}
	cmd = exec.Command(filepath.Join(e.bin, "butterfly-cni"))
	cmd.Env = append(os.Environ(), "CNI_COMMAND=VERSION")
	cmd.Stdin = strings.NewReader(`{"cniVersion": "1.1.0"}`)
	if b, err := cmd.Output(); err != nil || !strings.Contains(string(b), `"1.1.0"`) {
		t.Errorf("VERSION: %v %s", err, b)
	}
}
