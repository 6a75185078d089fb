package dataplane

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestUnderlayMTU: the MTU read from the VTEP's link is clamped to what an
// IP packet can carry (loopback has 65536) and the clamp is logged; an
// explicit MTU out of range is refused.
func TestUnderlayMTU(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	for _, tc := range []struct {
		name    string
		mtu     int
		want    int
		wantErr string
		wantLog string
	}{
		{"loopback link: clamped", 0, 65535, "", "65536"},
		{"explicit 65535", 65535, 65535, "", ""},
		{"explicit 9000", 9000, 9000, "", ""},
		{"explicit 65536 refused", 65536, 0, "underlay MTU 65536 out of range", ""},
		{"explicit 500 refused", 500, 0, "underlay MTU 500 out of range", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log bytes.Buffer
			cfg := Config{VTEP: lo, UnderlayMTU: tc.mtu, Logger: slog.New(slog.NewTextHandler(&log, nil))}
			err := cfg.normalize()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("normalize: %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("normalize: %v", err)
			}
			if cfg.UnderlayMTU != tc.want {
				t.Errorf("underlay MTU %d, want %d", cfg.UnderlayMTU, tc.want)
			}
			if tc.wantLog != "" && !strings.Contains(log.String(), tc.wantLog) {
				t.Errorf("log %q does not mention the link's MTU %s", log.String(), tc.wantLog)
			}
			if tc.wantLog == "" && log.Len() != 0 {
				t.Errorf("unexpected log %q", log.String())
			}
		})
	}
}

// TestConfigTuning checks the defaults and bounds of the runtime tuning
// fields and that the engine's workers use them.
func TestConfigTuning(t *testing.T) {
	tests := []struct {
		name     string
		idle     time.Duration
		pool     int
		wantIdle time.Duration
		wantPool int
		err      string
	}{
		{name: "defaults", wantIdle: 100 * time.Microsecond, wantPool: 1024},
		{name: "set", idle: 5 * time.Millisecond, pool: 64, wantIdle: 5 * time.Millisecond, wantPool: 64},
		{name: "never sleep", idle: -1, pool: 8192, wantIdle: neverIdle, wantPool: 8192},
		{name: "pool below a batch", pool: 63, err: "pool of 63 buffers"},
		{name: "pool too large", pool: 8193, err: "pool of 8193 buffers"},
		{name: "negative pool", pool: -1, err: "pool of -1 buffers"},
	}
	for _, tt := range tests {
		cfg := Config{VTEP: vtep4, UnderlayMTU: 1500, PollIdle: tt.idle, PoolSize: tt.pool}
		err := cfg.normalize()
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: error %v, want %q", tt.name, err, tt.err)
			}
			continue
		}
		if err != nil || cfg.PollIdle != tt.wantIdle || cfg.PoolSize != tt.wantPool {
			t.Errorf("%s: PollIdle %v PoolSize %d (%v), want %v %d", tt.name, cfg.PollIdle, cfg.PoolSize, err, tt.wantIdle, tt.wantPool)
		}
	}
	h := newHarness(t, Config{PoolSize: 128, PollIdle: time.Second}, true)
	w := h.e.workers[0]
	if n := w.pool.Available() + w.rxn; n != 128 {
		t.Fatalf("worker pool holds %d buffers, want 128", n)
	}
	if w.e.cfg.PollIdle != time.Second {
		t.Fatalf("engine idle spell %v", w.e.cfg.PollIdle)
	}
}
