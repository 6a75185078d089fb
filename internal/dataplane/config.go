package dataplane

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"time"

	"github.com/butterfly-go/butterfly/internal/pcap"
	"github.com/butterfly-go/butterfly/internal/port/udp"
)

// Config configures an Engine.
type Config struct {
	// VTEP is the outer source address; its family picks IPv4 or IPv6
	// outer headers. The underlay socket is bound to VTEP:4789.
	VTEP netip.Addr
	// Workers is the number of worker goroutines (default 1).
	Workers int
	// CPUs pins worker i to CPUs[i % len(CPUs)]; empty = no pinning.
	CPUs []int
	// UnderlayMTU is the MTU of the underlay (576 to 65535); 0 = the MTU
	// of the link holding VTEP (or routing to it), at most 65535, else
	// 1500.
	UnderlayMTU int
	// HeadEnd, when non-empty, replaces the per-VNI multicast group:
	// broadcast and unknown unicast are replicated to each of these VTEPs.
	HeadEnd []netip.Addr
	// Cluster selects cluster mode: no multicast group is joined, and the
	// VTEPs datagrams are accepted from and each VNI's flood list come
	// from SetRemotes (nothing is accepted or flooded before the first
	// call). Exclusive with HeadEnd.
	Cluster bool
	// TraceUnderlay is the pcap path of the underlay trace ("" = off).
	TraceUnderlay string
	// TraceDir confines the vNICs' trace files: a vNIC's trace path is
	// resolved in it and refused outside it (see pcap.Dir.Resolve), and
	// the directory is created and checked before a trace is opened. The
	// zero Dir uses paths as given.
	TraceDir pcap.Dir
	// SocketDir is the directory of vhost-user sockets.
	SocketDir string
	// NoOffload opens TAP vNICs without offloads (no vnet header).
	NoOffload bool
	// PollIdle is how long a worker keeps busy-polling after its last
	// packet before it sleeps in epoll: a longer spell lowers the wake-up
	// latency of sparse traffic and costs CPU. 0 = 100 µs; negative =
	// never sleep.
	PollIdle time.Duration
	// PoolSize is the number of packet buffers of each worker (64 KiB
	// each; 0 = 1024; 64, one read batch, to 8192). Buffers in transmit queues, in rings
	// between workers and in GRO hold come from it; while it is dry, the
	// worker reads no port (their frames wait there) and frames that need
	// a buffer of their own on the way (flood copies, segments, VXLAN
	// encapsulation) are dropped as no_buffer.
	PoolSize int
	// ConntrackMax is the number of connections tracked per vNIC (0 =
	// 65536); new connections beyond it are dropped (firewall_table_full).
	ConntrackMax int
	// ConntrackTotal bounds the connections tracked by all the vNICs
	// together (0 = 1048576).
	ConntrackTotal int
	// ConntrackPickup is the loose-pickup window: a vNIC created without
	// saved connections (model.NIC.Import) before ConntrackPickup has
	// passed since the engine started tracks the TCP connections in
	// progress it meets until then (firewall.Conntrack.SetPickup), so
	// that connections established before an unclean restart resume.
	// 0 = none; at most maxConntrackPickup.
	ConntrackPickup time.Duration
	// NoFlowCache turns the workers' flow cache off: every frame then
	// takes the full path (parse, anti-spoofing, both connection-table
	// lookups, MAC table). The decisions are the same either way.
	NoFlowCache bool
	// StallTimeout is how long a configuration change waits for a busy
	// worker to adopt it before that worker is reported stuck (0 = 5 s);
	// what the worker may still use (a deleted vNIC's port) is released
	// only once it moves on.
	StallTimeout time.Duration
	// Logger receives the engine's log lines (default slog.Default()).
	Logger *slog.Logger
}

const (
	// maxSlots bounds the number of vNICs.
	maxSlots = 1 << 16
	// batchSize is the number of frames a worker reads per poll.
	batchSize = 64
	// defaultPoolSize is the default Config.PoolSize (64 MiB of buffers
	// per worker: a buffer holds a 64 KiB super-frame); maxPoolSize
	// bounds it (512 MiB per worker).
	defaultPoolSize = 1024
	maxPoolSize     = 8192
	// maxWorkers bounds Config.Workers.
	maxWorkers = 64
	// defaultStallTimeout is the default Config.StallTimeout.
	defaultStallTimeout = 5 * time.Second
	// defaultPollIdle is the default Config.PollIdle.
	defaultPollIdle = 100 * time.Microsecond
	// neverIdle is an idle spell that never ends (Config.PollIdle < 0).
	neverIdle = time.Duration(math.MaxInt64)
	// defaultConntrackMax and defaultConntrackTotal are the default
	// Config.ConntrackMax and Config.ConntrackTotal; maxConntrack bounds
	// ConntrackMax.
	defaultConntrackMax   = 65536
	defaultConntrackTotal = 1 << 20
	maxConntrack          = 1 << 24
	// maxConntrackPickup bounds Config.ConntrackPickup.
	maxConntrackPickup = time.Hour
	// minUnderlayMTU and maxUnderlayMTU bound Config.UnderlayMTU: the
	// smallest datagram every IPv4 host must accept, the largest IP
	// packet.
	minUnderlayMTU = 576
	maxUnderlayMTU = 65535
)

// normalize checks cfg and fills its defaults.
func (cfg *Config) normalize() error {
	if !cfg.VTEP.IsValid() {
		return errors.New("dataplane: VTEP address is not set")
	}
	cfg.VTEP = cfg.VTEP.Unmap()
	if cfg.Workers == 0 {
		cfg.Workers = 1
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = defaultStallTimeout
	}
	if cfg.Workers < 0 || cfg.Workers > maxWorkers {
		return fmt.Errorf("dataplane: %d workers: want 1 to %d", cfg.Workers, maxWorkers)
	}
	for _, c := range cfg.CPUs {
		if c < 0 || c >= 1024 {
			return fmt.Errorf("dataplane: CPU %d out of range", c)
		}
	}
	if cfg.Cluster && len(cfg.HeadEnd) > 0 {
		return fmt.Errorf("dataplane: head-end VTEPs and cluster mode are exclusive")
	}
	for i, h := range cfg.HeadEnd {
		h = h.Unmap()
		if !h.IsValid() || h.Is4() != cfg.VTEP.Is4() {
			return fmt.Errorf("dataplane: head-end %v: not an address of the VTEP's family", h)
		}
		cfg.HeadEnd[i] = h
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.UnderlayMTU == 0 {
		cfg.UnderlayMTU = linkMTU(cfg.VTEP, cfg.Logger)
	}
	if cfg.UnderlayMTU < minUnderlayMTU || cfg.UnderlayMTU > maxUnderlayMTU {
		return fmt.Errorf("dataplane: underlay MTU %d out of range (%d to %d)", cfg.UnderlayMTU, minUnderlayMTU, maxUnderlayMTU)
	}
	switch {
	case cfg.PollIdle < 0:
		cfg.PollIdle = neverIdle
	case cfg.PollIdle == 0:
		cfg.PollIdle = defaultPollIdle
	}
	if cfg.PoolSize == 0 {
		cfg.PoolSize = defaultPoolSize
	}
	if cfg.PoolSize < batchSize || cfg.PoolSize > maxPoolSize {
		return fmt.Errorf("dataplane: pool of %d buffers per worker: want %d to %d", cfg.PoolSize, batchSize, maxPoolSize)
	}
	if cfg.ConntrackMax == 0 {
		cfg.ConntrackMax = defaultConntrackMax
	}
	if cfg.ConntrackTotal == 0 {
		cfg.ConntrackTotal = defaultConntrackTotal
	}
	if cfg.ConntrackMax < 0 || cfg.ConntrackMax > maxConntrack || cfg.ConntrackTotal < 0 {
		return fmt.Errorf("dataplane: conntrack sizes %d per vNIC, %d in total: want 1 to %d per vNIC", cfg.ConntrackMax, cfg.ConntrackTotal, maxConntrack)
	}
	if cfg.ConntrackPickup < 0 || cfg.ConntrackPickup > maxConntrackPickup {
		return fmt.Errorf("dataplane: conntrack pickup window %v: want 0 to %v", cfg.ConntrackPickup, maxConntrackPickup)
	}
	return nil
}

// linkMTU returns the MTU of the link that holds addr, or else of the
// link the kernel routes addr through (udp.LinkMTU), clamped to the
// largest IP packet; 1500 if there is no such link. A clamp or a missing
// link is logged.
func linkMTU(addr netip.Addr, log *slog.Logger) int {
	mtu, err := udp.LinkMTU(addr)
	if err != nil {
		log.Warn("underlay MTU: link of the VTEP address not found, assuming 1500", "vtep", addr, "err", err)
		return 1500
	}
	if mtu > maxUnderlayMTU {
		log.Info("underlay MTU: the VTEP's link MTU is larger than an IP packet; using the largest IP packet",
			"vtep", addr, "link_mtu", mtu, "mtu", maxUnderlayMTU)
		return maxUnderlayMTU
	}
	return mtu
}
