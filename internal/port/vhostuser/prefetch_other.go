//go:build !amd64

package vhostuser

// prefetchLines does nothing on this architecture (see the amd64
// version: it only hints the CPU).
func prefetchLines(lines []uintptr, write bool) {}
