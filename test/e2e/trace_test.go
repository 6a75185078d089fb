package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// echoCount counts the ICMP echo requests from src to dst and the echo
// replies from dst to src in a pcap file, with the Ethernet source of each
// direction checked against the MACs given.
type echoCount struct{ requests, replies int }

func countEchoes(path string, srcIP, dstIP string, srcMAC, dstMAC string) (echoCount, error) {
	var c echoCount
	f, err := os.Open(path)
	if err != nil {
		return c, err
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		return c, fmt.Errorf("pcap header of %s: %w", path, err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		return c, fmt.Errorf("%s: link type %v, want Ethernet", path, r.LinkType())
	}
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			// A record being written may be incomplete: count what is whole.
			return c, nil
		}
		if err != nil {
			return c, fmt.Errorf("%s: %w", path, err)
		}
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.NoCopy)
		eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		icmp, _ := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
		if eth == nil || ip == nil || icmp == nil {
			continue
		}
		switch {
		case icmp.TypeCode.Type() == layers.ICMPv4TypeEchoRequest && ip.SrcIP.Equal(net.ParseIP(srcIP)) &&
			ip.DstIP.Equal(net.ParseIP(dstIP)) && eth.SrcMAC.String() == srcMAC:
			c.requests++
		case icmp.TypeCode.Type() == layers.ICMPv4TypeEchoReply && ip.SrcIP.Equal(net.ParseIP(dstIP)) &&
			ip.DstIP.Equal(net.ParseIP(srcIP)) && eth.SrcMAC.String() == dstMAC:
			c.replies++
		}
	}
}

// TestPacketTrace: a vNIC with packet trace on records both directions of
// its traffic in the pcap file given; turned off, the file stops growing;
// turned on again, it records again.
func TestPacketTrace(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	h1, h2 := l.OpenHostPair(labtest.IPv4, labtest.DaemonOpts{})
	trace := filepath.Join(l.Dir, "nic-1.pcap")
	a := h1.AddVM(labtest.NICSpec{ID: "nic-1", MAC: labtest.MACFor(1), VNI: 42, Addrs: []string{"42.0.0.1/24"}, SGs: []string{"sg-open"}, Trace: trace})
	local := h1.AddVM(vnicSpec(2))
	remote := h2.AddVM(vnicSpec(3))
	a.Reaches(t, local.IP(0))
	a.Reaches(t, remote.IP(0))

	const n = 5
	for _, peer := range []*labtest.VM{local, remote} {
		if out, err := a.Exec("ping", "-n", "-c", fmt.Sprint(n), "-i", "0.05", "-W", "1", peer.IP(0)); err != nil {
			t.Fatalf("ping %s: %v\n%s", peer.IP(0), err, out)
		}
		labtest.Eventually(t, labtest.SettleTimeout, "trace holds the pings to "+peer.Spec.ID, func() error {
			c, err := countEchoes(trace, a.IP(0), peer.IP(0), a.Spec.MAC, peer.Spec.MAC)
			if err != nil {
				return err
			}
			if c.requests < n || c.replies < n {
				return fmt.Errorf("%d requests and %d replies to/from %s, want >= %d each", c.requests, c.replies, peer.IP(0), n)
			}
			return nil
		})
	}

	h1.MustCLI("nic", "update", "--id", "nic-1", "--packet-trace", "false")
	before, err := countEchoes(trace, a.IP(0), remote.IP(0), a.Spec.MAC, remote.Spec.MAC)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := a.Exec("ping", "-n", "-c", fmt.Sprint(n), "-i", "0.05", "-W", "1", remote.IP(0)); err != nil {
		t.Fatalf("ping with trace off: %v\n%s", err, out)
	}
	// Give a (wrongly) still-running capture the time to write.
	if err := labtest.Poll(time.Second, func() error {
		c, err := countEchoes(trace, a.IP(0), remote.IP(0), a.Spec.MAC, remote.Spec.MAC)
		if err == nil && c == before {
			return errors.New("unchanged")
		}
		return nil
	}); err == nil {
		after, _ := countEchoes(trace, a.IP(0), remote.IP(0), a.Spec.MAC, remote.Spec.MAC)
		t.Fatalf("trace off but the file grew: %+v -> %+v", before, after)
	}

	h1.MustCLI("nic", "update", "--id", "nic-1", "--packet-trace", "true", "--trace-path", trace)
	if out, err := a.Exec("ping", "-n", "-c", fmt.Sprint(n), "-i", "0.05", "-W", "1", remote.IP(0)); err != nil {
		t.Fatalf("ping with trace on again: %v\n%s", err, out)
	}
	labtest.Eventually(t, labtest.SettleTimeout, "trace records again", func() error {
		c, err := countEchoes(trace, a.IP(0), remote.IP(0), a.Spec.MAC, remote.Spec.MAC)
		if err != nil {
			return err
		}
		if c.requests < n || c.replies < n {
			return fmt.Errorf("%d requests and %d replies after re-enabling, want >= %d each", c.requests, c.replies, n)
		}
		return nil
	})
}
