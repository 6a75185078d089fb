package vxlan

import (
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/butterfly-go/butterfly/internal/l2"
	"github.com/butterfly-go/butterfly/internal/packet"
)

// FDB is the forwarding database of one VNI: inner MAC -> remote VTEP,
// learned from every frame received from the underlay (unicast and
// flooded alike, unlike the original which learned from multicast only)
// and aged out. It is an l2.Table, so workers learn and look up
// concurrently without locks or allocation.
type FDB struct {
	t *l2.Table
}

const (
	tag4 = 4
	tag6 = 6
)

// NewFDB returns an FDB of at least size entries whose entries expire
// after maxAge without traffic (maxAge <= 0: never).
func NewFDB(size int, maxAge time.Duration) *FDB {
	return &FDB{t: l2.NewTable(size, maxAge)}
}

func addrVals(a netip.Addr) (uint64, uint64, uint8) {
	b := a.As16()
	tag := uint8(tag6)
	if a.Is4() {
		tag = tag4
	}
	return binary.BigEndian.Uint64(b[0:8]), binary.BigEndian.Uint64(b[8:16]), tag
}

// addrFromVals is the inverse of addrVals.
func addrFromVals(v0, v1 uint64, tag uint8) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[0:8], v0)
	binary.BigEndian.PutUint64(b[8:16], v1)
	a := netip.AddrFrom16(b)
	if tag == tag4 {
		a = a.Unmap()
	}
	return a
}

// Learn records that mac is behind vtep (zones are ignored).
func (f *FDB) Learn(mac packet.MAC, vtep netip.Addr, now int64) {
	if !vtep.IsValid() || mac.IsMulticast() || mac.IsZero() {
		return
	}
	v0, v1, tag := addrVals(vtep)
	f.t.Learn(mac, v0, v1, tag, now)
}

// LearnFrames learns inner source MAC -> b.Peer.Addr() for every
// decapsulated frame of bufs.
func (f *FDB) LearnFrames(bufs []*packet.Buf, now int64) {
	for _, b := range bufs {
		if fr := b.Bytes(); len(fr) >= packet.EthernetLen {
			f.Learn(packet.Ethernet(fr).Src(), b.Peer.Addr(), now)
		}
	}
}

// Lookup returns the VTEP behind mac, if learned and not expired.
func (f *FDB) Lookup(mac packet.MAC, now int64) (netip.Addr, bool) {
	v0, v1, tag, ok := f.t.Lookup(mac, now)
	if !ok {
		return netip.Addr{}, false
	}
	return addrFromVals(v0, v1, tag), true
}

// Remove forgets mac.
func (f *FDB) Remove(mac packet.MAC) bool { return f.t.Remove(mac) }

// RemoveVTEP forgets every MAC behind vtep and returns how many.
func (f *FDB) RemoveVTEP(vtep netip.Addr) int {
	a0, a1, atag := addrVals(vtep)
	return f.t.RemoveIf(func(_ packet.MAC, v0, v1 uint64, tag uint8) bool {
		return v0 == a0 && v1 == a1 && tag == atag
	})
}

// Flush forgets everything.
func (f *FDB) Flush() { f.t.Flush() }

// Len returns the number of live entries at now.
func (f *FDB) Len(now int64) int { return f.t.Len(now) }

// Range calls fn for each live entry until it returns false.
func (f *FDB) Range(now int64, fn func(mac packet.MAC, vtep netip.Addr) bool) {
	f.t.Range(now, func(mac packet.MAC, v0, v1 uint64, tag uint8, _ int64) bool {
		return fn(mac, addrFromVals(v0, v1, tag))
	})
}
