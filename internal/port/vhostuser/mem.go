package vhostuser

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// memRegion is one region of guest memory mapped into this process.
type memRegion struct {
	gpa   uint64 // guest physical address of mem[0]
	uaddr uint64 // front-end virtual address of mem[0]
	mem   []byte // the region, len == size
	mmap  []byte // the whole mapping (nil for test memory)
}

// memTable is an immutable set of mapped regions. The data path reads it
// through the ring state; the control side replaces it whole.
type memTable struct {
	regions []memRegion
}

// mapRegions maps each region once, MAP_SHARED. fds are closed whether or
// not mapping succeeds (a mapping keeps its own reference).
func mapRegions(rs []region, fds []int) (*memTable, error) {
	defer closeAll(fds)
	t := &memTable{}
	page := uint64(unix.Getpagesize())
	for i, r := range rs {
		if r.size == 0 || r.size > 1<<46 || r.offset > 1<<46 ||
			r.gpa+r.size < r.gpa || r.uaddr+r.size < r.uaddr {
			t.unmap()
			return nil, fmt.Errorf("vhost-user: memory region %d: bad geometry %+v", i, r)
		}
		// Mapping past the end of the file would turn guest accesses
		// into SIGBUS in this process: the file must cover the region.
		var st unix.Stat_t
		if err := unix.Fstat(fds[i], &st); err != nil {
			t.unmap()
			return nil, fmt.Errorf("vhost-user: memory region %d: fstat: %w", i, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG && uint64(st.Size) < r.offset+r.size {
			t.unmap()
			return nil, fmt.Errorf("vhost-user: memory region %d: %d bytes at offset %d past the end of a %d-byte file", i, r.size, r.offset, st.Size)
		}
		// The offset need not be page aligned: map from 0 and skip it.
		length := (r.offset + r.size + page - 1) &^ (page - 1)
		m, err := unix.Mmap(fds[i], 0, int(length), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.unmap()
			return nil, fmt.Errorf("vhost-user: mmap memory region %d (%d bytes): %w", i, length, err)
		}
		t.regions = append(t.regions, memRegion{gpa: r.gpa, uaddr: r.uaddr, mem: m[r.offset : r.offset+r.size], mmap: m})
	}
	return t, nil
}

// unmap releases every mapping. Only call it once no ring uses t.
func (t *memTable) unmap() {
	if t == nil {
		return
	}
	for _, r := range t.regions {
		if r.mmap != nil {
			unix.Munmap(r.mmap)
		}
	}
	t.regions = nil
}

// guest returns the n bytes at guest physical address a, or nil when they
// are not wholly inside one region.
func (t *memTable) guest(a uint64, n uint32) []byte {
	for i := range t.regions {
		r := &t.regions[i]
		if a >= r.gpa {
			off := a - r.gpa
			if off < uint64(len(r.mem)) && uint64(n) <= uint64(len(r.mem))-off {
				return r.mem[off : off+uint64(n)]
			}
		}
	}
	return nil
}

// user returns the n bytes at front-end virtual address a, or nil.
func (t *memTable) user(a uint64, n uint64) []byte {
	for i := range t.regions {
		r := &t.regions[i]
		if a >= r.uaddr {
			off := a - r.uaddr
			if off < uint64(len(r.mem)) && n <= uint64(len(r.mem))-off {
				return r.mem[off : off+n]
			}
		}
	}
	return nil
}

// gpaOf returns the guest physical address of front-end virtual address
// a, or 0 when no region holds it.
func (t *memTable) gpaOf(a uint64) uint64 {
	for i := range t.regions {
		r := &t.regions[i]
		if a >= r.uaddr && a-r.uaddr < uint64(len(r.mem)) {
			return r.gpa + (a - r.uaddr)
		}
	}
	return 0
}
