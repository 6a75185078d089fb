package spinwait

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestUntil(t *testing.T) {
	tests := []struct {
		name     string
		after    int // checks before done reports true; -1: never
		deadline time.Duration
		want     bool
	}{
		{"done at once", 0, time.Second, true},
		{"done after spinning", 100, time.Second, true},
		{"never done, deadline passes", -1, time.Millisecond, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var checks atomic.Int64
			done := func() bool {
				n := checks.Add(1)
				return tc.after >= 0 && n > int64(tc.after)
			}
			var deadline time.Time
			if tc.deadline > 0 {
				deadline = time.Now().Add(tc.deadline)
			}
			if got := Until(done, deadline); got != tc.want {
				t.Fatalf("Until = %v after %d checks, want %v", got, checks.Load(), tc.want)
			}
			if tc.want && checks.Load() != int64(tc.after)+1 {
				t.Errorf("done called %d times, want %d", checks.Load(), tc.after+1)
			}
		})
	}
}

// TestUntilPastTheSpin: a condition that comes true only after the
// spell of spinning is still seen, without a deadline.
func TestUntilPastTheSpin(t *testing.T) {
	start := time.Now()
	if !Until(func() bool { return time.Since(start) > 2*spin }, time.Time{}) {
		t.Fatal("Until without a deadline returned false")
	}
}
