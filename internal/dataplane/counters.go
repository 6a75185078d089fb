package dataplane

import "sync/atomic"

// dropReason says why an element dropped a frame.
type dropReason uint8

// Drop reasons. Their names are in dropNames.
const (
	dropNoBuffer dropReason = iota
	dropMalformed
	dropAntispoofMAC
	dropAntispoofRARP
	dropAntispoofARP
	dropReservedMAC
	dropHairpin
	dropUnknownVNI
	dropBadVXLAN
	dropNoRoute
	dropTooBig
	dropSegmentation
	dropNoUnderlay
	dropTxFull
	dropTxError
	dropRxError
	dropCaptureFull
	numDrops
)

// dropName names a drop reason as Counters and the metrics report it.
func dropName(r dropReason) string {
	switch r {
	case dropNoBuffer:
		return "no-buffer"
	case dropMalformed:
		return "malformed"
	case dropAntispoofMAC:
		return "antispoof-mac"
	case dropAntispoofRARP:
		return "antispoof-rarp"
	case dropAntispoofARP:
		return "antispoof-arp"
	case dropReservedMAC:
		return "reserved-mac"
	case dropHairpin:
		return "hairpin"
	case dropUnknownVNI:
		return "unknown-vni"
	case dropBadVXLAN:
		return "bad-vxlan"
	case dropNoRoute:
		return "no-route"
	case dropTooBig:
		return "too-big"
	case dropSegmentation:
		return "segmentation"
	case dropNoUnderlay:
		return "no-underlay"
	case dropTxFull:
		return "tx-full"
	case dropTxError:
		return "tx-error"
	case dropRxError:
		return "rx-error"
	case dropCaptureFull:
		return "capture-full"
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
	atomic.AddUint64(&s.bytes, bytes)
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
