package dataplane

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/butterfly-go/butterfly/internal/port"
)

// errNoPorts is returned until the TAP, UDP and pcap packages are wired.
var errNoPorts = errors.New("not available in this build")

func openUDPUnderlay(cfg *Config) (underlay, error) {
	return nil, errNoPorts
}

func openTAP(name string, offload bool) (port.Port, string, error) {
	return nil, "", errNoPorts
}

func openPcap(path string) (traceWriter, error) {
	return nil, errNoPorts
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
