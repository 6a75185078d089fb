package dataplane

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
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
