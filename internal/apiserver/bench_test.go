package apiserver

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/apiclient"
)

// BenchmarkRoundTrip measures sequential request/reply round trips of a
// small nic_list-like request from one Go libzmq REQ client (apiclient).
func BenchmarkRoundTrip(b *testing.B) {
	cases := []struct {
		name     string
		endpoint string
		key      []byte
	}{
		{"tcp", "tcp://127.0.0.1:*", nil},
		{"ipc", "ipc://" + filepath.Join(b.TempDir(), "api.sock"), nil},
		{"tcp-encrypted", "tcp://127.0.0.1:*", testKey()},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			s := startServer(b, Config{Endpoint: tc.endpoint, Key: tc.key}, nil)
			c := dial(b, s.Endpoint(), apiclient.Options{Key: tc.key, Timeout: 10 * time.Second})
			req := msgs(v0("bench", nicList()))
			if _, err := c.Call(req); err != nil { // connect
				b.Fatal(err)
			}
			b.ReportAllocs()
			start := time.Now()
			for b.Loop() {
				if _, err := c.Call(req); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
		})
	}
}

// BenchmarkProcess measures the envelope logic alone (no socket).
func BenchmarkProcess(b *testing.B) {
	s := newTestServer(b, nil, nil)
	frame := mustMarshal(b, msgs(v0("bench", nicList())))
	b.ReportAllocs()
	for b.Loop() {
		s.Process(frame)
	}
}

// BenchmarkPythonClient has the python3-zmq peer send b.N sequential
// requests over tcp and reports the rate it measured.
func BenchmarkPythonClient(b *testing.B) {
	pydir := pyProto(b)
	s := startServer(b, Config{}, nil)
	b.ResetTimer()
	res := runPeer(b, pydir, "bench", s.Endpoint(), itoa(b.N))
	b.ReportMetric(res["per_second"].(float64), "req/s")
}
