package dataplane

import (
	"bytes"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/port"
)

// TestRealUnderlay runs two engines with real UDP underlay sockets on the
// loopback of a private network namespace (VTEPs 127.0.0.1 and
// 127.0.0.2, head-end replication to each other) and fake vNICs: frames
// cross between the engines encapsulated in VXLAN, and unicast replies
// go to the learned VTEP. In the "later" cases the first engine starts
// on a VTEP address the namespace does not have yet (added to a veth
// after both engines started).
func TestRealUnderlay(t *testing.T) {
	for _, tc := range []struct {
		name, v1, v2 string
		later        bool
	}{
		{"ipv4", "127.0.0.1", "127.0.0.2", false},
		{"ipv6", "fd00::1", "fd00::2", false},
		{"ipv4 address added later", "10.233.0.1", "10.233.0.2", true},
		{"ipv6 address added later", "fd00:233::1", "fd00:233::2", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			realUnderlay(t, netip.MustParseAddr(tc.v1), netip.MustParseAddr(tc.v2), tc.later)
		})
	}
}

func realUnderlay(t *testing.T, v1, v2 netip.Addr, later bool) {
	if !isRoot() {
		t.Skip("needs root (network namespace)")
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.New()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer func() {
		netns.Set(orig)
		orig.Close()
		ns.Close()
		runtime.UnlockOSThread()
	}()
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	addAddr := func(l netlink.Link, a netip.Addr) {
		t.Helper()
		addr := &netlink.Addr{IPNet: netlink.NewIPNet(a.AsSlice()), Flags: unix.IFA_F_NODAD}
		if err := netlink.AddrAdd(l, addr); err != nil {
			t.Fatalf("add %v: %v", a, err)
		}
	}
	var link netlink.Link = lo // where v1 and v2 are
	if later {
		link = &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "bfl0"}, PeerName: "bfl1"}
		if err := netlink.LinkAdd(link); err != nil {
			t.Fatal(err)
		}
		for _, l := range []string{"bfl0", "bfl1"} {
			if err := netlink.LinkSetUp(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: l}}); err != nil {
				t.Fatal(err)
			}
		}
		addAddr(link, v2)
	} else if v1.Is6() {
		addAddr(lo, v1)
		addAddr(lo, v2)
	}
	mk := func(local, peer netip.Addr) (*Engine, map[string]*fakePort) {
		ports := map[string]*fakePort{}
		e, err := newEngine(Config{VTEP: local, HeadEnd: []netip.Addr{peer}, UnderlayMTU: 1500, PoolSize: 256, Logger: quietLogger()}, hooks{
			openTAP: func(name string, offload bool) (port.Port, string, error) {
				p := &fakePort{}
				ports[name] = p
				return p, name, nil
			},
		})
		if err != nil {
			t.Fatalf("engine on %v: %v", local, err)
		}
		t.Cleanup(func() { e.Close() })
		if err := e.SetSecurityGroups([]model.SG{openSG()}); err != nil {
			t.Fatal(err)
		}
		return e, ports
	}
	e1, p1 := mk(v1, v2)
	e2, p2 := mk(v2, v1)
	if later {
		addAddr(link, v1)
	}
	if _, err := e1.AddNIC(nicOf("a", mac(1), 77)); err != nil {
		t.Fatal(err)
	}
	if _, err := e2.AddNIC(nicOf("b", mac(2), 77)); err != nil {
		t.Fatal(err)
	}
	if _, err := e2.AddNIC(nicOf("x", mac(3), 78)); err != nil {
		t.Fatal(err)
	}
	a, b, x := p1["a"], p2["b"], p2["x"]
	// a broadcasts (ARP): head-end replication carries it to engine 2.
	req := arp(t, mac(1), "10.0.0.1", "10.0.0.2")
	// Sent again until it arrives, as ARP would: in the "later" cases
	// the first datagrams may leave before the kernel has fully set up
	// the new address (IPv6 on a loaded machine).
	sent := time.Time{}
	waitFor(t, "b to get a's broadcast", func() bool {
		if b.written.Load() >= 1 {
			return true
		}
		if time.Since(sent) > 200*time.Millisecond {
			a.inject(frame{data: req})
			sent = time.Now()
		}
		return false
	})
	if got := b.take(); !bytes.Equal(got[0].data, req) {
		t.Fatal("broadcast changed on the way")
	}
	// b answers unicast: engine 2 learned a behind 127.0.0.1. Sent again
	// until it arrives, as the broadcast: in the "later" cases engine 1
	// may still be moving its underlay socket to the new address.
	rep := udp4(t, mac(1), mac(2), "10.0.0.2", "10.0.0.1", 1000, false)
	sent, replies := time.Time{}, uint64(0)
	waitFor(t, "a to get b's reply", func() bool {
		if a.written.Load() >= 1 {
			return true
		}
		if time.Since(sent) > 200*time.Millisecond {
			b.inject(frame{data: rep})
			sent, replies = time.Now(), replies+1
		}
		return false
	})
	if got := a.take(); !bytes.Equal(got[0].data, rep) {
		t.Fatal("reply changed on the way")
	}
	if x.written.Load() != 0 {
		t.Fatal("a vNIC of VNI 78 got VNI 77 traffic")
	}
	// Every reply b sent (a retry may still be on its way) is counted
	// and encapsulated once.
	waitFor(t, "engine 2 to count b's replies", func() bool {
		c, _ := e2.Counters("b")
		p, _, _ := e2.encap.totals()
		return c.RxPackets == replies && p == replies
	})
	if c, _ := e2.Counters("b"); c.TxPackets != 1 {
		t.Fatalf("b counters %+v, want 1 frame sent to it", c)
	}
}
