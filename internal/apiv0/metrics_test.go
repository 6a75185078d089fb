package apiv0_test

import (
	"maps"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/butterfly-go/butterfly/api/protocol"
)

func TestRequestMetrics(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		request string
		ok      bool
	}{
		{nic1, true},
		{`nic_add { id: "bad" mac: "not-a-mac" vni: 1 }`, false},
		{`sg_list: true`, true},
		// Counted as the request served: nic_list (4) before sg_list (10).
		{`sg_list: true nic_list: true`, true},
		{`nic_del: "nic-1"`, true},
		{`nic_del: "nic-1"`, true}, // deleting what is not there is no error
		{`sg_details: "sg-x"`, false},
		{``, false},
	} {
		if got := e.do(t, tc.request).GetStatus().GetStatus(); got != tc.ok {
			t.Fatalf("%q: status %v, want %v", tc.request, got, tc.ok)
		}
	}
	e.h.Handle(&protocol.MessageV0{}) // no request at all

	want := `# HELP butterfly_api_requests_total API requests answered (MessageV0 requests: messages the envelope refused are not counted), by request (the request field served, "none" for a message without one) and result (ok or error).
# TYPE butterfly_api_requests_total counter
butterfly_api_requests_total{request="nic_add",result="error"} 1
butterfly_api_requests_total{request="nic_add",result="ok"} 1
butterfly_api_requests_total{request="nic_del",result="ok"} 2
butterfly_api_requests_total{request="nic_list",result="ok"} 1
butterfly_api_requests_total{request="none",result="error"} 2
butterfly_api_requests_total{request="sg_details",result="error"} 1
butterfly_api_requests_total{request="sg_list",result="ok"} 1
`
	if err := testutil.CollectAndCompare(e.h.Collector(), strings.NewReader(want), "butterfly_api_requests_total"); err != nil {
		t.Error(err)
	}
	// One histogram per kind, each with as many samples as requests.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(e.h.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	samples := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "butterfly_api_request_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			samples[m.GetLabel()[0].GetValue()] = m.GetHistogram().GetSampleCount()
		}
	}
	wantSamples := map[string]uint64{"nic_add": 2, "nic_del": 2, "nic_list": 1, "none": 2, "sg_details": 1, "sg_list": 1}
	if !maps.Equal(samples, wantSamples) {
		t.Errorf("request-time samples %v, want %v", samples, wantSamples)
	}
}
