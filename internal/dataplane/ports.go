package dataplane

import (
	"fmt"
	"net"
	"strings"

	"github.com/butterfly-go/butterfly/internal/pcap"
	"github.com/butterfly-go/butterfly/internal/port"
	"github.com/butterfly-go/butterfly/internal/port/tap"
	"github.com/butterfly-go/butterfly/internal/port/udp"
	"github.com/butterfly-go/butterfly/internal/vxlan"
)

// traceMaxBytes bounds each packet trace file.
const traceMaxBytes = 1 << 30

// openUDPUnderlay binds the underlay socket to VTEP:4789; it receives
// everything and sends a share of the flows.
func openUDPUnderlay(cfg *Config) (underlay, error) {
	return udp.Listen(cfg.VTEP, vxlan.Port, udp.Options{})
}

// openUDPEntropy opens an extra send socket on VTEP and an ephemeral
// port: flows hashed to it leave with that UDP source port, which gives
// the underlay's ECMP some entropy (RFC 7348 section 5).
func openUDPEntropy(cfg *Config) (underlay, error) {
	return udp.Listen(cfg.VTEP, 0, udp.Options{RecvBuffer: 1 << 16})
}

// openTAP creates the TAP device name and returns its interface name as
// the vNIC's path.
func openTAP(name string, offload bool) (port.Port, string, error) {
	p, err := tap.Open(name, tap.Options{Offload: offload})
	if err != nil {
		return nil, "", err
	}
	return p, p.Name(), nil
}

func openPcap(path string) (traceWriter, error) {
	return pcap.NewWriter(path, traceMaxBytes)
}

// tapName derives a free interface name (at most 15 bytes) from a vNIC
// id: characters the kernel refuses are replaced, and a short suffix is
// added when the name is taken.
func (e *Engine) tapName(id string) (string, error) {
	var sb strings.Builder
	for _, r := range id {
		switch {
		case r > ' ' && r < 0x7f && r != '/' && r != ':' && r != '%':
			sb.WriteRune(r)
		default:
			sb.WriteByte('-')
		}
	}
	base := sb.String()
	if base == "" || base == "." || base == ".." {
		base = "vnic"
	}
	if len(base) > 15 {
		base = base[:15]
	}
	taken := func(n string) bool {
		for _, ent := range e.nics {
			if ent.p.path == n {
				return true
			}
		}
		_, err := net.InterfaceByName(n)
		return err == nil
	}
	if !taken(base) {
		return base, nil
	}
	for i := 1; i < 1000; i++ {
		suf := fmt.Sprintf("-%d", i)
		n := base
		if len(n)+len(suf) > 15 {
			n = n[:15-len(suf)]
		}
		if !taken(n + suf) {
			return n + suf, nil
		}
	}
	return "", fmt.Errorf("dataplane: no free interface name for vNIC %q", id)
}
