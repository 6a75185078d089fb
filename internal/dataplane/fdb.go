package dataplane

import (
	"net/netip"
	"sync/atomic"
)

// A macTable maps MAC addresses of one VNI to a destination: a local port
// slot or a remote VTEP. Every entry is one 64-bit word, MAC<<16 | value,
// so that workers read and update it without locks: a reader sees either
// the old or the new entry, never half of one. Lookups probe a fixed
// number of positions; when all are taken, learning replaces the first.
type macTable struct {
	e [macTableSize]atomic.Uint64
}

const (
	macTableSize  = 4096
	macTableProbe = 8
	// remoteBit marks a value that is a remote VTEP index rather than
	// a local slot+1.
	remoteBit = 0x8000
	// maxSlots bounds local port slots so that slot+1 fits under
	// remoteBit.
	maxSlots = remoteBit - 1
	// maxRemotes bounds the remote VTEPs the engine remembers.
	maxRemotes = 4096
)

// mac48 packs a 6-byte MAC address into the low 48 bits of a word.
func mac48(m []byte) uint64 {
	_ = m[5]
	return uint64(m[0])<<40 | uint64(m[1])<<32 | uint64(m[2])<<24 |
		uint64(m[3])<<16 | uint64(m[4])<<8 | uint64(m[5])
}

func macHash(mac uint64) uint32 {
	return uint32((mac * 0x9E3779B97F4A7C15) >> 52)
}

// lookup returns the value learned for mac, 0 if none.
func (t *macTable) lookup(mac uint64) uint16 {
	h := macHash(mac)
	for i := uint32(0); i < macTableProbe; i++ {
		v := t.e[(h+i)%macTableSize].Load()
		if v != 0 && v>>16 == mac {
			return uint16(v)
		}
	}
	return 0
}

// learn records mac -> val (val != 0). It writes only when the entry
// changes, so steady traffic does not bounce cache lines between workers.
func (t *macTable) learn(mac uint64, val uint16) {
	h := macHash(mac)
	want := mac<<16 | uint64(val)
	free := -1
	for i := uint32(0); i < macTableProbe; i++ {
		idx := (h + i) % macTableSize
		v := t.e[idx].Load()
		if v == 0 {
			if free < 0 {
				free = int(idx)
			}
			continue
		}
		if v>>16 == mac {
			if v != want {
				t.e[idx].Store(want)
			}
			return
		}
	}
	if free >= 0 && t.e[free].CompareAndSwap(0, want) {
		return
	}
	t.e[h%macTableSize].Store(want)
}

// forget removes every entry whose value is val (a deleted port).
func (t *macTable) forget(val uint16) {
	for i := range t.e {
		v := t.e[i].Load()
		if v != 0 && uint16(v) == val {
			t.e[i].CompareAndSwap(v, 0)
		}
	}
}

// count returns the number of entries.
func (t *macTable) count() int {
	n := 0
	for i := range t.e {
		if t.e[i].Load() != 0 {
			n++
		}
	}
	return n
}

// remoteTable interns remote VTEP addresses into small indexes stored in
// macTable values. It has one writer (the worker that reads the underlay)
// and any number of readers: a slot is written before the count that
// publishes it, and never changes afterwards.
type remoteTable struct {
	n     atomic.Uint32
	addrs [maxRemotes]netip.AddrPort
	// index is the writer's hash index: position -> index+1.
	index [maxRemotes * 2]uint16
}

// intern returns the index of addr (port 4789 is implied), adding it if
// needed; ok is false when the table is full.
func (r *remoteTable) intern(addr netip.Addr) (uint16, bool) {
	a := addr.As16()
	var h uint64 = 1469598103934665603
	for _, c := range a {
		h = (h ^ uint64(c)) * 1099511628211
	}
	n := r.n.Load()
	for i := uint64(0); i < uint64(len(r.index)); i++ {
		pos := (h + i) % uint64(len(r.index))
		v := r.index[pos]
		if v == 0 {
			if n >= maxRemotes {
				return 0, false
			}
			r.addrs[n] = netip.AddrPortFrom(addr, vxlanPort)
			r.index[pos] = uint16(n + 1)
			r.n.Store(n + 1)
			return uint16(n), true
		}
		if r.addrs[v-1].Addr() == addr {
			return v - 1, true
		}
	}
	return 0, false
}

// get returns the endpoint of index i.
func (r *remoteTable) get(i uint16) (netip.AddrPort, bool) {
	if uint32(i) >= r.n.Load() {
		return netip.AddrPort{}, false
	}
	return r.addrs[i], true
}
