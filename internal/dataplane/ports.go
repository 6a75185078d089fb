package dataplane

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/butterfly-go/butterfly/internal/model"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/pcap"
	"github.com/butterfly-go/butterfly/internal/port"
	"github.com/butterfly-go/butterfly/internal/port/tap"
	"github.com/butterfly-go/butterfly/internal/port/udp"
	"github.com/butterfly-go/butterfly/internal/port/vhostuser"
	"github.com/butterfly-go/butterfly/internal/vxlan"
)

// traceMaxBytes bounds each packet trace file.
const traceMaxBytes = 1 << 30

// openUDPUnderlay binds the underlay socket to VTEP:4789; it receives
// everything and sends a share of the flows. It warns, in cfg.Logger,
// while the host does not have the VTEP address yet.
func openUDPUnderlay(cfg *Config) (underlay, error) {
	return udp.Listen(cfg.VTEP, vxlan.Port, udp.Options{Logger: cfg.Logger})
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
	p, err := tap.Open(name, tap.Options{Offload: offload, NoIPv6: true})
	if err != nil {
		return nil, "", err
	}
	return p, p.Name(), nil
}

// vhostPort is a vhost-user port: it reports whether its guest takes
// TSO frames.
type vhostPort interface {
	port.Port
	GuestTSO() bool
}

// openVhost creates a vhost-user server socket at path whose transmit
// rings readers workers read (see addShares). The guest does not kick
// while a worker polls the port: the worker asks for kicks
// (PrepareSleep) when the port leaves its active set.
func openVhost(path string, offload bool, readers int, log *slog.Logger) (vhostPort, error) {
	return vhostuser.Listen(path, vhostuser.Options{Logger: log, NoOffloads: !offload, ArmOnSleep: true, Readers: readers})
}

// dialVhost starts a vhost-user client port on path, the socket the VM's
// QEMU listens on; it connects in the background and keeps reconnecting,
// so it succeeds whether or not the VM runs yet. Kicks as in openVhost.
func dialVhost(path string, offload bool, readers int, log *slog.Logger) (vhostPort, error) {
	return vhostuser.Dial(path, vhostuser.Options{Logger: log, NoOffloads: !offload, ArmOnSleep: true, Readers: readers})
}

// openPort opens a vNIC's port: a TAP device named after the vNIC, or
// the vhost-user socket <SocketDir>/qemu-vhost-<id>, which the port
// creates (server mode) or connects to (client mode, NIC.VhostClient). It
// returns the vNIC's path and, for vhost-user, the guest's TSO
// capability.
func (e *Engine) openPort(n model.NIC) (port.Port, string, func() bool, error) {
	if n.Type == model.NICVhostUser {
		if n.ID == "" || strings.ContainsAny(n.ID, "/\x00") || n.ID == "." || n.ID == ".." {
			return nil, "", nil, fmt.Errorf("dataplane: vNIC id %q cannot name a socket", n.ID)
		}
		path := filepath.Join(e.cfg.SocketDir, "qemu-vhost-"+n.ID)
		open := e.hooks.openVhost
		if n.VhostClient {
			open = func(path string, offload bool, log *slog.Logger) (vhostPort, error) {
				return dialVhost(path, offload, queueReaders(e.cfg.Workers), log)
			}
		}
		p, err := open(path, !e.cfg.NoOffload, e.log)
		if err != nil {
			return nil, "", nil, fmt.Errorf("dataplane: vNIC %s: open vhost-user socket: %w", n.ID, err)
		}
		return p, path, p.GuestTSO, nil
	}
	if n.Netns != "" {
		// The TAP of a deleted vNIC of that name in that namespace
		// must be gone first.
		e.waitRemoved(removalKey(n.Netns, n.IfName))
		p, err := e.hooks.openNetnsTAP(n, !e.cfg.NoOffload, e.restoring, e.log)
		if err != nil {
			return nil, "", nil, err
		}
		return p, n.IfName, nil, nil
	}
	name, err := e.tapName(n.ID)
	if err != nil {
		return nil, "", nil, err
	}
	p, path, err := e.hooks.openTAP(name, !e.cfg.NoOffload)
	if err != nil {
		return nil, "", nil, fmt.Errorf("dataplane: vNIC %s: open TAP %s: %w", n.ID, name, err)
	}
	return p, path, nil, nil
}

// openNetnsTAP creates, or after a restart re-attaches to, the persistent
// TAP n.IfName in the namespace n.Netns, with the vNIC's MAC, up. While
// restoring a saved state, a namespace that no longer exists gives a
// detached port instead of an error: the vNIC stays, reported in the log
// and in its counters (netns_gone), until nic_add replaces it.
func openNetnsTAP(n model.NIC, offload, restoring bool, log *slog.Logger) (port.Port, error) {
	p, err := tap.Open(n.IfName, tap.Options{Offload: offload, Netns: n.Netns, MAC: n.MAC[:]})
	if err != nil && restoring && errors.Is(err, fs.ErrNotExist) {
		d, derr := newDetachedPort()
		if derr != nil {
			return nil, fmt.Errorf("dataplane: vNIC %s: %w (and %w)", n.ID, err, derr)
		}
		log.Warn("vNIC's namespace is gone: vNIC kept detached until nic add is replayed",
			"id", n.ID, "netns", n.Netns, "ifname", n.IfName, "err", err)
		return d, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dataplane: vNIC %s: %w", n.ID, err)
	}
	if p.Reattached() {
		log.Info("vNIC re-attached to its TAP", "id", n.ID, "netns", n.Netns, "ifname", n.IfName, "ifindex", p.Ifindex())
	}
	return p, nil
}

// SetRestoring tells whether the next AddNIC calls restore a saved state
// (true) or serve requests (false); see openNetnsTAP.
func (e *Engine) SetRestoring(on bool) {
	e.mu.Lock()
	e.restoring = on
	e.mu.Unlock()
}

// dropNetnsGone names the frames a detached vNIC (its namespace gone)
// could not deliver, in NICCounters.Drops.
const dropNetnsGone = "netns_gone"

// detachedPort stands for the TAP of a vNIC whose namespace is gone: it
// never has frames to read and refuses, counting them, every frame to
// write. Its descriptor is an eventfd that is never signalled.
type detachedPort struct {
	efd     int
	refused atomic.Uint64
}

func newDetachedPort() (*detachedPort, error) {
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return &detachedPort{efd: efd}, nil
}

// ReadBatch never returns a frame.
func (p *detachedPort) ReadBatch([]*packet.Buf) (int, error) { return 0, nil }

// WriteBatch refuses every frame.
func (p *detachedPort) WriteBatch(bufs []*packet.Buf) (int, int, error) {
	p.refused.Add(uint64(len(bufs)))
	return 0, len(bufs), nil
}

// Fd is the never-ready eventfd.
func (p *detachedPort) Fd() int { return p.efd }

// Close releases the eventfd.
func (p *detachedPort) Close() error {
	if err := unix.Close(p.efd); err != nil {
		return fmt.Errorf("detached port: close: %w", err)
	}
	return nil
}

// NICIssues returns the vNICs that cannot carry traffic now, sorted by
// id: those kept detached because their namespace was gone at the
// restore (model.IssueReporter).
func (e *Engine) NICIssues() []model.NICIssue {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []model.NICIssue
	for id, ent := range e.nics {
		if _, ok := ent.p.port.(*detachedPort); ok {
			out = append(out, model.NICIssue{ID: id, Reason: fmt.Sprintf(
				"network namespace %s is gone: detached, frames to it are dropped (%s) until nic add is replayed once it exists again",
				ent.nic.Netns, dropNetnsGone)})
		}
	}
	slices.SortFunc(out, func(a, b model.NICIssue) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Attached reports whether vNIC id is attached to its TAP in a network
// namespace and that device is still in place (same ifindex and name);
// false for other vNICs (model.AttachChecker).
func (e *Engine) Attached(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	ent, ok := e.nics[id]
	if !ok || ent.nic.Netns == "" {
		return false
	}
	p, ok := ent.p.port.(*tap.Port)
	return ok && p.InPlace()
}

// removePort closes a deleted vNIC's port and removes what it created
// that would outlive the descriptor (a persistent TAP).
func removePort(p port.Port) error {
	if r, ok := p.(interface{ Remove() error }); ok {
		return r.Remove()
	}
	return p.Close()
}

func openPcap(path string) (traceWriter, error) {
	return pcap.NewWriter(path, traceMaxBytes)
}

// tapName derives a free interface name (at most 15 bytes) from a vNIC
// id: characters the kernel refuses are replaced, and a short suffix is
// added when the name is taken. A name whose deleted vNIC's TAP is still
// being removed is waited for, not taken.
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
		if e.taps[n] {
			return true
		}
		e.waitRemoved(n)
		// One RTM_GETLINK by name (net.InterfaceByName lists every
		// interface, which made nic_add cost grow with their number).
		_, err := netlink.LinkByName(n)
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
