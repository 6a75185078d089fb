package main

import (
	"log/slog"
	"slices"
	"strings"
	"testing"
)

func TestNoKeyWarning(t *testing.T) {
	tests := []struct {
		endpoint string
		network  bool
	}{
		{"tcp://127.0.0.1:9999", false},
		{"ipc:///run/butterfly/api", false},
		{"tcp://[::1]:9999", false},
		{"tcp://0.0.0.0:9999", true},
		{"tcp://*:9999", true},
		{"tcp://10.0.0.1:9999", true},
	}
	for _, tt := range tests {
		w := noKeyWarning(tt.endpoint)
		if got := strings.Contains(w, "reachable from the network"); got != tt.network {
			t.Errorf("noKeyWarning(%q) = %q, want network warning %v", tt.endpoint, w, tt.network)
		}
	}
}

func TestUsableCPUs(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	if got := usableCPUs([]int{0, 1, 5}, 2, log); !slices.Equal(got, []int{0, 1}) {
		t.Errorf("usableCPUs = %v, want [0 1]", got)
	}
	if got := usableCPUs(nil, 2, log); len(got) != 0 {
		t.Errorf("usableCPUs(nil) = %v", got)
	}
}
