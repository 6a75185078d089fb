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
	l := newLab(t)
	h1, h2 := l.openHostPair(ipv4, daemonOpts{})
	trace := filepath.Join(l.dir, "nic-1.pcap")
	a := h1.addVM(nicSpec{id: "nic-1", mac: macFor(1), vni: 42, addrs: []string{"42.0.0.1/24"}, sgs: []string{"sg-open"}, trace: trace})
	local := h1.addVM(vnicSpec(2))
	remote := h2.addVM(vnicSpec(3))
	a.reaches(t, local.ip(0))
	a.reaches(t, remote.ip(0))

	const n = 5
	for _, peer := range []*vm{local, remote} {
		if out, err := a.exec("ping", "-n", "-c", fmt.Sprint(n), "-i", "0.05", "-W", "1", peer.ip(0)); err != nil {
			t.Fatalf("ping %s: %v\n%s", peer.ip(0), err, out)
		}
		eventually(t, settleTimeout, "trace holds the pings to "+peer.spec.id, func() error {
			c, err := countEchoes(trace, a.ip(0), peer.ip(0), a.spec.mac, peer.spec.mac)
			if err != nil {
				return err
			}
			if c.requests < n || c.replies < n {
				return fmt.Errorf("%d requests and %d replies to/from %s, want >= %d each", c.requests, c.replies, peer.ip(0), n)
			}
			return nil
		})
	}

	h1.mustCLI("nic", "update", "--id", "nic-1", "--packet-trace", "false")
	before, err := countEchoes(trace, a.ip(0), remote.ip(0), a.spec.mac, remote.spec.mac)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := a.exec("ping", "-n", "-c", fmt.Sprint(n), "-i", "0.05", "-W", "1", remote.ip(0)); err != nil {
		t.Fatalf("ping with trace off: %v\n%s", err, out)
	}
	// Give a (wrongly) still-running capture the time to write.
	if err := poll(time.Second, func() error {
		c, err := countEchoes(trace, a.ip(0), remote.ip(0), a.spec.mac, remote.spec.mac)
		if err == nil && c == before {
			return errors.New("unchanged")
		}
		return nil
	}); err == nil {
		after, _ := countEchoes(trace, a.ip(0), remote.ip(0), a.spec.mac, remote.spec.mac)
		t.Fatalf("trace off but the file grew: %+v -> %+v", before, after)
	}

	h1.mustCLI("nic", "update", "--id", "nic-1", "--packet-trace", "true", "--trace-path", trace)
	if out, err := a.exec("ping", "-n", "-c", fmt.Sprint(n), "-i", "0.05", "-W", "1", remote.ip(0)); err != nil {
		t.Fatalf("ping with trace on again: %v\n%s", err, out)
	}
	eventually(t, settleTimeout, "trace records again", func() error {
		c, err := countEchoes(trace, a.ip(0), remote.ip(0), a.spec.mac, remote.spec.mac)
		if err != nil {
			return err
		}
		if c.requests < n || c.replies < n {
			return fmt.Errorf("%d requests and %d replies after re-enabling, want >= %d each", c.requests, c.replies, n)
		}
		return nil
	})
}
