package dataplane

import (
	"sync/atomic"

	"github.com/butterfly-go/butterfly/internal/antispoof"
	"github.com/butterfly-go/butterfly/internal/firewall"
	"github.com/butterfly-go/butterfly/internal/l2"
	"github.com/butterfly-go/butterfly/internal/vxlan"
)

// dropReason says why an element dropped a frame.
type dropReason uint8

// Drop reasons of the engine itself, then ranges for the reasons of the
// switch (l2), anti-spoofing and VXLAN decapsulation packages.
const (
	dropNone dropReason = iota
	dropNoBuffer
	dropMalformed
	dropNoRoute
	dropTooBig
	dropSegmentation
	dropNoUnderlay
	dropTxFull
	dropTxError
	dropRxError
	dropCaptureFull
	dropHandoffFull
	numEngineDrops

	dropSwitchBase = numEngineDrops
	dropSpoofBase  = dropSwitchBase + dropReason(l2.NumReasons)
	dropDecapBase  = dropSpoofBase + dropReason(antispoof.NumReasons)
	dropFwBase     = dropDecapBase + dropReason(vxlan.NumDropReasons)
	numDrops       = dropFwBase + dropReason(firewall.DropFragment-firewall.DropNoRule+1)
)

// firewallDrop maps a firewall drop verdict to a drop reason.
func firewallDrop(v firewall.Verdict) dropReason {
	if v < firewall.DropNoRule || v > firewall.DropFragment {
		v = firewall.DropInvalid
	}
	return dropFwBase + dropReason(v-firewall.DropNoRule)
}

func switchDrop(r l2.Reason) dropReason {
	if r >= l2.NumReasons {
		r = 0
	}
	return dropSwitchBase + dropReason(r)
}

func spoofDrop(r antispoof.Reason) dropReason {
	if r >= antispoof.NumReasons {
		r = 0
	}
	return dropSpoofBase + dropReason(r)
}

func decapDrop(r vxlan.DropReason) dropReason {
	if r >= vxlan.NumDropReasons {
		r = 0
	}
	return dropDecapBase + dropReason(r)
}

func engineDropName(r dropReason) string {
	switch r {
	case dropNone:
		return "none"
	case dropNoBuffer:
		return "no_buffer"
	case dropMalformed:
		return "malformed"
	case dropNoRoute:
		return "no_route"
	case dropTooBig:
		return "too_big"
	case dropSegmentation:
		return "segmentation"
	case dropNoUnderlay:
		return "no_underlay"
	case dropTxFull:
		return "tx_full"
	case dropTxError:
		return "tx_error"
	case dropRxError:
		return "rx_error"
	case dropCaptureFull:
		return "capture_full"
	case dropHandoffFull:
		return "handoff_full"
	}
	return "unknown"
}

// dropName names a drop reason as Counters and the metrics report it.
func dropName(r dropReason) string {
	switch {
	case r < numEngineDrops:
		return engineDropName(r)
	case r < dropSpoofBase:
		return "switch_" + l2.Reason(r-dropSwitchBase).String()
	case r < dropDecapBase:
		return "antispoof_" + antispoof.Reason(r-dropSpoofBase).String()
	case r < dropFwBase:
		return "vxlan_" + vxlan.DropReason(r-dropDecapBase).String()
	case r < numDrops:
		return "firewall_" + (firewall.DropNoRule + firewall.Verdict(r-dropFwBase)).String()
	}
	return "unknown"
}

// elemStats are one worker's counters of one element. Only that worker
// writes them (atomic adds on a cache line nobody else writes); readers
// use atomic loads.
type elemStats struct {
	packets uint64
	bytes   uint64
	drops   [numDrops]uint64
	_       [128 - (2+int(numDrops))*8%128]byte
}

// element is a node of the graph: its kind and name (as in the DOT
// output) and its per-worker counters.
type element struct {
	kind string
	name string
	per  []elemStats
}

func newElement(kind, name string, workers int) *element {
	return &element{kind: kind, name: name, per: make([]elemStats, workers)}
}

// add counts packets that went through the element on worker w.
func (e *element) add(w int, packets, bytes uint64) {
	s := &e.per[w]
	atomic.AddUint64(&s.packets, packets)
	if bytes != 0 {
		atomic.AddUint64(&s.bytes, bytes)
	}
}

// drop counts one frame dropped by the element on worker w.
func (e *element) drop(w int, r dropReason) {
	atomic.AddUint64(&e.per[w].drops[r], 1)
}

// totals sums the counters of every worker.
func (e *element) totals() (packets, bytes uint64, drops [numDrops]uint64) {
	for i := range e.per {
		s := &e.per[i]
		packets += atomic.LoadUint64(&s.packets)
		bytes += atomic.LoadUint64(&s.bytes)
		for r := range drops {
			drops[r] += atomic.LoadUint64(&s.drops[r])
		}
	}
	return packets, bytes, drops
}
