package apiv0

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/butterfly-go/butterfly/api/protocol"
)

// metrics counts a Handler's requests by kind and result and times them.
// The kinds are the request fields of MessageV0 (a few dozen), whatever
// a peer sends: an unknown field is no kind, so a peer cannot grow the
// label sets.
type metrics struct {
	requests *prometheus.CounterVec
	seconds  *prometheus.HistogramVec
}

func newMetrics() *metrics {
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "butterfly_api_requests_total",
			Help: "API requests answered (MessageV0 requests: messages the envelope refused are not counted), by request (the request field served, \"none\" for a message without one) and result (ok or error).",
		}, []string{"request", "result"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "butterfly_api_request_seconds",
			Help: "Time the daemon took to answer an API request, from its decoded message to its reply (persisting the change included; the transport and the envelope not), by request.",
			// 50 µs to 3.3 s.
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 17),
		}, []string{"request"}),
	}
}

// observe records a request of kind answered in d, ok or with an error.
func (m *metrics) observe(kind string, d time.Duration, failed bool) {
	result := "ok"
	if failed {
		result = "error"
	}
	m.requests.WithLabelValues(kind, result).Inc()
	m.seconds.WithLabelValues(kind).Observe(d.Seconds())
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.requests.Describe(ch)
	m.seconds.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.requests.Collect(ch)
	m.seconds.Collect(ch)
}

// Collector returns the collector of the Handler's request metrics:
// butterfly_api_requests_total and butterfly_api_request_seconds.
func (h *Handler) Collector() prometheus.Collector { return h.metrics }

// requestKind names the request field Handle serves, the first one set in
// field-number order ("none" if there is none).
func requestKind(r *protocol.MessageV0_Request) string {
	if r == nil {
		return "none"
	}
	m := r.ProtoReflect()
	kind, first := "none", protoreflect.FieldNumber(0)
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if first == 0 || fd.Number() < first {
			kind, first = string(fd.Name()), fd.Number()
		}
		return true
	})
	return kind
}
