package vhostuser

import (
	"os"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

// TestHasPrefetchW: the CPUID check agrees with the kernel's flags
// (3dnowprefetch is Linux's name for PREFETCHW), and prefetching a
// batch of lines, for reading and for writing, changes nothing.
func TestHasPrefetchW(t *testing.T) {
	info, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Skipf("no /proc/cpuinfo: %v", err)
	}
	var flags []string
	for _, l := range strings.Split(string(info), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "flags" {
			flags = strings.Fields(v)
			break
		}
	}
	if want := slices.Contains(flags, "3dnowprefetch"); hasPrefetchW != want {
		t.Errorf("hasPrefetchW = %v, /proc/cpuinfo's 3dnowprefetch flag %v", hasPrefetchW, want)
	}
	buf := make([]byte, 4096)
	for i := range buf {
		buf[i] = byte(i)
	}
	want := slices.Clone(buf)
	var lines []uintptr
	for off := 0; off < len(buf); off += 64 {
		lines = append(lines, uintptr(unsafe.Pointer(&buf[off])))
	}
	prefetch(lines, false)
	prefetch(lines, true)
	if !slices.Equal(buf, want) {
		t.Error("prefetching changed memory")
	}
}
