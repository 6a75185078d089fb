package vhostuser

// prefetchLines asks the CPU to start loading the cache line at each
// address of lines, for reading, or with ownership for writing when
// write is set (PREFETCHT0, PREFETCHW). It only hints: it never faults,
// whatever the address, changes no memory, and returns without waiting
// for the lines, so that the misses of a whole batch overlap without
// holding loads or stores in the pipeline.
//
//go:noescape
func prefetchLines(lines []uintptr, write bool)
