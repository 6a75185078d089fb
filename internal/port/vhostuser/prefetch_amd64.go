package vhostuser

// prefetchLines asks the CPU to start loading the cache line at each
// address of lines, for reading, or with ownership for writing when
// write is set (PREFETCHT0, PREFETCHW). It only hints: it never faults,
// whatever the address, changes no memory, and returns without waiting
// for the lines, so that the misses of a whole batch overlap without
// holding loads or stores in the pipeline. write must only be set on a
// CPU with PREFETCHW (hasPrefetchW).
//
//go:noescape
func prefetchLines(lines []uintptr, write bool)

// cpuid returns the registers CPUID gives for leaf and subleaf.
func cpuid(leaf, sub uint32) (eax, ebx, ecx, edx uint32)

// hasPrefetchW reports whether the CPU has PREFETCHW (CPUID
// 0x80000001, ECX bit 8; Linux calls it 3dnowprefetch). It is set once,
// when the package loads, and only read after.
var hasPrefetchW = func() bool {
	if max, _, _, _ := cpuid(0x80000000, 0); max < 0x80000001 {
		return false
	}
	_, _, ecx, _ := cpuid(0x80000001, 0)
	return ecx&(1<<8) != 0
}()

// prefetch is prefetchLines, for writing only where the CPU can.
func prefetch(lines []uintptr, write bool) { prefetchLines(lines, write && hasPrefetchW) }
