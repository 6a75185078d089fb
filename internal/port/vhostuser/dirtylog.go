package vhostuser

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Live migration: while the front end has VHOST_F_LOG_ALL in the acked
// features and has shared a log with SET_LOG_BASE, every page of guest
// memory the back end writes is marked in that log, a bitmap over guest
// physical addresses with one bit per 4 KiB page, so that QEMU sends the
// page again. The back end writes receive buffers and the used rings
// (entries, index, flags and avail_event); it marks each page with an
// atomic OR after its last write to it (QEMU reads and clears the log
// concurrently: a mark made before a write could be cleared by a sync
// that copied the page before the write, and the page would reach the
// destination stale).

const (
	// fLogAll is VHOST_F_LOG_ALL: dirty-page logging is on.
	fLogAll = 26
	// logPageShift is log2 of the page size the log counts in.
	logPageShift = 12
	// vringFLog is VHOST_VRING_F_LOG in SET_VRING_ADDR's flags: log the
	// used ring's writes at its log_guest_addr.
	vringFLog = 1
	// maxLogSize bounds the log (one bit per page: 64 MiB of log covers
	// 2 TiB of guest memory).
	maxLogSize = 64 << 20
)

// dirtyLog is a mapped log region, shared with the front end.
type dirtyLog struct {
	words []uint64 // the bitmap, bit n of word w is page 64*w+n
	mmap  []byte   // the whole mapping
	// marked, if set, runs after each mark (tests play the front end's
	// concurrent sync of the log there).
	marked func()
}

// mapLog maps the log of a SET_LOG_BASE: size bytes of fd from offset.
// The fd is closed whether or not mapping succeeds.
func mapLog(fd int, size, offset uint64) (*dirtyLog, error) {
	defer unix.Close(fd)
	if size == 0 || size > maxLogSize || offset > maxLogSize || offset%8 != 0 {
		return nil, fmt.Errorf("vhost-user: dirty log of %d bytes at offset %d: out of range or unaligned", size, offset)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("vhost-user: dirty log: fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG && uint64(st.Size) < offset+size {
		return nil, fmt.Errorf("vhost-user: dirty log of %d bytes at offset %d past the end of a %d-byte file", size, offset, st.Size)
	}
	m, err := unix.Mmap(fd, 0, int(offset+size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("vhost-user: mmap dirty log (%d bytes): %w", offset+size, err)
	}
	b := m[offset : offset+size]
	return &dirtyLog{words: unsafe.Slice((*uint64)(unsafe.Pointer(&b[0])), size/8), mmap: m}, nil
}

// unmap releases the mapping. Only call it once no ring uses l.
func (l *dirtyLog) unmap() {
	if l != nil && l.mmap != nil {
		unix.Munmap(l.mmap)
		l.mmap, l.words = nil, nil
	}
}

// mark marks the pages of the n bytes at guest physical address gpa.
// Pages beyond the log are ignored: the front end sized it.
func (l *dirtyLog) mark(gpa, n uint64) {
	if n == 0 {
		return
	}
	first, last := gpa>>logPageShift, (gpa+n-1)>>logPageShift
	if last < first { // wrapped past the top of the address space
		last = ^uint64(0) >> logPageShift
	}
	for p := first; p <= last; p++ {
		w := p / 64
		if w >= uint64(len(l.words)) {
			return
		}
		bit := uint64(1) << (p % 64)
		if atomic.LoadUint64(&l.words[w])&bit == 0 {
			atomic.OrUint64(&l.words[w], bit)
		}
	}
	if l.marked != nil {
		l.marked()
	}
}
