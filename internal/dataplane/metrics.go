package dataplane

import (
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// collector exposes the engine's counters to Prometheus; it reads them at
// scrape time.
type collector struct {
	e                                  *Engine
	elPackets, elBytes, elDrops        *prometheus.Desc
	nicRxP, nicRxB, nicTxP, nicTxB     *prometheus.Desc
	nicDrops, fdbEntries, traceDropped *prometheus.Desc
	workerSleeps                       *prometheus.Desc
	workerPoolEmpty                    *prometheus.Desc
	flowHits, flowMisses               *prometheus.Desc
	queueRxP, queueTxP                 *prometheus.Desc
}

// Collector returns a prometheus.Collector of the per-element, per-vNIC
// and per-worker counters, and of the time changes waited for the
// workers.
func (e *Engine) Collector() prometheus.Collector {
	return &collector{
		e:               e,
		elPackets:       prometheus.NewDesc("butterfly_element_packets_total", "Frames processed by a dataplane element.", []string{"type", "name"}, nil),
		elBytes:         prometheus.NewDesc("butterfly_element_bytes_total", "Bytes processed by a dataplane element (elements that count bytes).", []string{"type", "name"}, nil),
		elDrops:         prometheus.NewDesc("butterfly_element_drops_total", "Frames dropped by a dataplane element, by reason.", []string{"type", "name", "reason"}, nil),
		nicRxP:          prometheus.NewDesc("butterfly_nic_rx_packets_total", "Frames received from the VM.", []string{"nic"}, nil),
		nicRxB:          prometheus.NewDesc("butterfly_nic_rx_bytes_total", "Bytes received from the VM.", []string{"nic"}, nil),
		nicTxP:          prometheus.NewDesc("butterfly_nic_tx_packets_total", "Frames delivered to the VM.", []string{"nic"}, nil),
		nicTxB:          prometheus.NewDesc("butterfly_nic_tx_bytes_total", "Bytes delivered to the VM.", []string{"nic"}, nil),
		nicDrops:        prometheus.NewDesc("butterfly_nic_drops_total", "Frames of a vNIC dropped, by reason.", []string{"nic", "reason"}, nil),
		fdbEntries:      prometheus.NewDesc("butterfly_vni_mac_entries", "Remote MACs learned in a VNI (live entries of its FDB).", []string{"vni"}, nil),
		workerSleeps:    prometheus.NewDesc("butterfly_worker_sleeps_total", "Times a worker went to sleep in epoll after an idle spell.", []string{"worker"}, nil),
		workerPoolEmpty: prometheus.NewDesc("butterfly_worker_pool_empty_total", "Port reads a worker skipped because its buffer pool was empty; the frames waited in their port.", []string{"worker"}, nil),
		flowHits:        prometheus.NewDesc("butterfly_worker_flow_cache_hits_total", "Frames a worker forwarded from its flow cache.", []string{"worker"}, nil),
		flowMisses:      prometheus.NewDesc("butterfly_worker_flow_cache_misses_total", "Frames a worker looked up in its flow cache without a usable entry (they took the full path).", []string{"worker"}, nil),
		queueRxP:        prometheus.NewDesc("butterfly_nic_queue_rx_packets_total", "Frames received from the VM on one queue pair of a multiqueue vNIC.", []string{"nic", "queue"}, nil),
		queueTxP:        prometheus.NewDesc("butterfly_nic_queue_tx_packets_total", "Frames delivered to the VM on one queue pair of a multiqueue vNIC.", []string{"nic", "queue"}, nil),
		traceDropped:    prometheus.NewDesc("butterfly_trace_dropped_total", "Frames a packet trace writer could not keep up with.", []string{"name"}, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	c.e.waits.Describe(ch)
	for _, d := range []*prometheus.Desc{c.elPackets, c.elBytes, c.elDrops, c.nicRxP, c.nicRxB, c.nicTxP, c.nicTxB, c.nicDrops, c.fdbEntries, c.traceDropped, c.workerSleeps, c.workerPoolEmpty, c.flowHits, c.flowMisses, c.queueRxP, c.queueTxP} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	e := c.e
	e.waits.Collect(ch)
	e.mu.Lock()
	els := []*element{e.urx, e.decap, e.encap, e.utx}
	if e.utrace != nil {
		els = append(els, e.utraceEl)
	}
	type vniRow struct {
		vni string
		n   int
	}
	var vnis []vniRow
	for _, v := range e.vnis {
		els = append(els, v.sw)
		vnis = append(vnis, vniRow{vni: strconv.FormatUint(uint64(v.vni), 10), n: v.fdb.Len(int64(time.Since(e.start)))})
	}
	var ids []string
	traces := map[string]traceWriter{}
	for id, n := range e.nics {
		els = append(els, n.p.rx, n.p.anti, n.p.fw, n.p.trace, n.p.tx)
		ids = append(ids, id)
		if n.tracer != nil {
			traces[id] = n.tracer
		}
	}
	utrace := e.utrace
	var urefused uint64 // datagrams the underlay sockets refused
	for _, u := range e.txUnder {
		if r, ok := u.(txRefuser); ok {
			urefused += r.TxRefused()
		}
	}
	e.mu.Unlock()
	sort.Strings(ids)

	for _, el := range els {
		p, b, d := el.totals()
		ch <- prometheus.MustNewConstMetric(c.elPackets, prometheus.CounterValue, float64(p), el.kind, el.name)
		ch <- prometheus.MustNewConstMetric(c.elBytes, prometheus.CounterValue, float64(b), el.kind, el.name)
		for r, v := range d {
			if v != 0 {
				ch <- prometheus.MustNewConstMetric(c.elDrops, prometheus.CounterValue, float64(v), el.kind, el.name, dropName(dropReason(r)))
			}
		}
	}
	if urefused != 0 {
		ch <- prometheus.MustNewConstMetric(c.elDrops, prometheus.CounterValue, float64(urefused), e.utx.kind, e.utx.name, dropUDPTxRefused)
	}
	for _, id := range ids {
		n, err := e.Counters(id)
		if err != nil {
			continue // deleted meanwhile
		}
		ch <- prometheus.MustNewConstMetric(c.nicRxP, prometheus.CounterValue, float64(n.RxPackets), id)
		ch <- prometheus.MustNewConstMetric(c.nicRxB, prometheus.CounterValue, float64(n.RxBytes), id)
		ch <- prometheus.MustNewConstMetric(c.nicTxP, prometheus.CounterValue, float64(n.TxPackets), id)
		ch <- prometheus.MustNewConstMetric(c.nicTxB, prometheus.CounterValue, float64(n.TxBytes), id)
		for r, v := range n.Drops {
			ch <- prometheus.MustNewConstMetric(c.nicDrops, prometheus.CounterValue, float64(v), id, r)
		}
		for q, v := range n.Queues {
			ch <- prometheus.MustNewConstMetric(c.queueRxP, prometheus.CounterValue, float64(v.RxPackets), id, strconv.Itoa(q))
			ch <- prometheus.MustNewConstMetric(c.queueTxP, prometheus.CounterValue, float64(v.TxPackets), id, strconv.Itoa(q))
		}
	}
	for _, v := range vnis {
		ch <- prometheus.MustNewConstMetric(c.fdbEntries, prometheus.GaugeValue, float64(v.n), v.vni)
	}
	for id, t := range traces {
		ch <- prometheus.MustNewConstMetric(c.traceDropped, prometheus.CounterValue, float64(t.Dropped()), id)
	}
	if utrace != nil {
		ch <- prometheus.MustNewConstMetric(c.traceDropped, prometheus.CounterValue, float64(utrace.Dropped()), "underlay")
	}
	for _, w := range e.workers {
		ch <- prometheus.MustNewConstMetric(c.workerSleeps, prometheus.CounterValue, float64(w.sleeps.Load()), strconv.Itoa(w.id))
		ch <- prometheus.MustNewConstMetric(c.workerPoolEmpty, prometheus.CounterValue, float64(w.poolEmpty.Load()), strconv.Itoa(w.id))
		if w.fc != nil {
			ch <- prometheus.MustNewConstMetric(c.flowHits, prometheus.CounterValue, float64(w.fc.hitsPub.Load()), strconv.Itoa(w.id))
			ch <- prometheus.MustNewConstMetric(c.flowMisses, prometheus.CounterValue, float64(w.fc.missesPub.Load()), strconv.Itoa(w.id))
		}
	}
}
