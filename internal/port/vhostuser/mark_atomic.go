//go:build !linux || !amd64 || race

package vhostuser

import "sync/atomic"

// canFence reports false: the data path marks its batches with atomic
// adds on this architecture, and in race-detector builds, whose detector
// sees them (see mark_fenced.go).
func canFence() bool { return false }

// fence is never called where canFence is false.
func fence() error { return nil }

// bump adds one to the mark *v atomically.
func bump(v *uint64, _ bool) { atomic.AddUint64(v, 1) }
