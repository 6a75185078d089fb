//go:build !amd64

package vhostuser

// prefetch does nothing on this architecture (see the amd64 version: it
// only hints the CPU).
func prefetch(lines []uintptr, write bool) {}
