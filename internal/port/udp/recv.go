// Receiving: recvmmsg into the caller's buffers, and the split of
// GRO-coalesced datagrams into one Buf per segment.

package udp

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// pending is the rest of a GRO-coalesced datagram that did not fit in the
// caller's batch: segments of seg bytes from off on.
type pending struct {
	buf *packet.Buf
	seg int
	off int
}

// rxState is the preallocated recvmmsg state; touched by the reader only.
type rxState struct {
	mmsgState
	gso  []int
	seg  []int // segments per message
	keep []int // segments delivered in this batch
	dst  []int // first slot of each message's segments

	spare []*packet.Buf // free buffers for pending remainders
	pend  []pending
	head  int
}

func (p *Port) allocRx() {
	n := p.opts.Batch
	r := &p.rx
	r.alloc(n)
	r.gso = make([]int, n)
	r.seg = make([]int, n)
	r.keep = make([]int, n)
	r.dst = make([]int, n)
	if p.gro {
		// One spare per message: at most every message of one
		// recvmmsg leaves a remainder behind.
		r.spare = make([]*packet.Buf, n)
		for i := range r.spare {
			r.spare[i] = packet.NewBuf()
		}
		r.pend = make([]pending, 0, n)
	}
}

// GRO reports whether UDP GRO is on: one read may then return a batch of
// segments the kernel coalesced, which ReadBatch splits.
func (p *Port) GRO() bool { return p.gro }

// Pending reports whether ReadBatch holds segments of a coalesced datagram
// that did not fit in the previous batch. It is only true after a full
// batch; the next ReadBatch returns them first.
func (p *Port) Pending() bool { return p.rx.head < len(p.rx.pend) }

// ReadBatch receives datagrams without blocking. Coalesced (GRO)
// datagrams are split into one Buf per segment. ReadBatch may reorder the
// buffer pointers within bufs. When it returns a full batch, segments may
// remain inside the port (see Pending): call it again before sleeping.
func (p *Port) ReadBatch(bufs []*packet.Buf) (int, error) {
	if p.nRetired.Load() != 0 {
		p.closeRetired()
	}
	out := p.drainPending(bufs)
	if out == len(bufs) {
		return out, nil
	}
	n, err := p.recv(p.fd, bufs[out:])
	out += n
	if err != nil {
		return out, err
	}
	if g := p.active.Load(); g != nil {
		for _, fd := range *g {
			if out == len(bufs) {
				break
			}
			n, err := p.recv(fd, bufs[out:])
			out += n
			if err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

// drainPending hands out remainders of coalesced datagrams.
func (p *Port) drainPending(bufs []*packet.Buf) int {
	r := &p.rx
	out := 0
	for r.head < len(r.pend) && out < len(bufs) {
		e := &r.pend[r.head]
		data := e.buf.Bytes()
		end := min(e.off+e.seg, len(data))
		b := bufs[out]
		b.SetLen(copy(b.Space(), data[e.off:end]))
		b.Peer = e.buf.Peer
		out++
		e.off = end
		if e.off >= len(data) {
			r.spare = append(r.spare, e.buf)
			e.buf = nil
			r.head++
		}
	}
	if r.head == len(r.pend) {
		r.pend = r.pend[:0]
		r.head = 0
	}
	return out
}

// recv runs one recvmmsg on fd into bufs and splits coalesced datagrams.
func (p *Port) recv(fd int, bufs []*packet.Buf) (int, error) {
	r := &p.rx
	m := min(len(bufs), len(r.msgs))
	if m == 0 {
		return 0, nil
	}
	for i := 0; i < m; i++ {
		sp := bufs[i].Space()
		r.iovs[i].Base = &sp[0]
		r.iovs[i].SetLen(len(sp))
		h := &r.msgs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Namelen = uint32(unsafe.Sizeof(r.names[i]))
		h.Iov = &r.iovs[i]
		h.Iovlen = 1
		if p.gro {
			h.Control = &r.ctrl[i*cmsgSpace]
			h.SetControllen(cmsgSpace)
		} else {
			h.Control = nil
			h.Controllen = 0
		}
		h.Flags = 0
		r.msgs[i].Len = 0
	}
	var got uintptr
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(m), unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e == unix.EAGAIN {
			return 0, nil
		}
		if e != 0 {
			return 0, fmt.Errorf("udp %v: recvmmsg: %w", p.local, e)
		}
		got = n
		break
	}
	n := int(got)
	// Pass 1: decode each message, count its segments and place them.
	pos := 0
	for i := 0; i < n; i++ {
		b := bufs[i]
		h := &r.msgs[i].Hdr
		l := int(r.msgs[i].Len)
		r.seg[i], r.keep[i], r.dst[i], r.gso[i] = 0, 0, pos, 0
		if h.Flags&unix.MSG_TRUNC != 0 || l == 0 {
			continue // truncated or empty: drop
		}
		peer, ok := p.decodeName(&r.names[i], h.Namelen)
		if !ok {
			continue
		}
		b.SetLen(l)
		b.Peer = peer
		k := 1
		if p.gro {
			if g := groSize(r.ctrl[i*cmsgSpace:], int(h.Controllen)); g > 0 && l > g {
				r.gso[i] = g
				k = (l + g - 1) / g
			}
		}
		r.seg[i] = k
		keep := min(k, len(bufs)-pos)
		if keep < k {
			p.stash(b, r.gso[i], keep)
		}
		r.keep[i] = keep
		pos += keep
	}
	// Pass 2, backwards: move each message to its first slot and copy
	// its other segments into the following (free) slots. Slots between
	// the unprocessed messages and the processed ones always hold free
	// buffers, so nothing is overwritten.
	for i := n - 1; i >= 0; i-- {
		keep := r.keep[i]
		if keep == 0 {
			continue
		}
		d := r.dst[i]
		if d != i {
			bufs[d], bufs[i] = bufs[i], bufs[d]
		}
		if r.seg[i] == 1 {
			continue
		}
		src := bufs[d]
		g := r.gso[i]
		l := src.Len()
		data := src.Space()[:l]
		for s := 1; s < keep; s++ {
			seg := data[s*g : min((s+1)*g, l)]
			b := bufs[d+s]
			b.SetLen(copy(b.Space(), seg))
			b.Peer = src.Peer
		}
		src.SetLen(g)
	}
	return pos, nil
}

// stash copies segments from first on of a coalesced datagram into a spare
// buffer that ReadBatch hands out next time.
func (p *Port) stash(b *packet.Buf, g, first int) {
	r := &p.rx
	if len(r.spare) == 0 {
		return // cannot happen: one spare per message
	}
	if g <= 0 {
		g = b.Len() // a plain datagram: one segment
	}
	sp := r.spare[len(r.spare)-1]
	r.spare = r.spare[:len(r.spare)-1]
	sp.Reset()
	sp.SetLen(copy(sp.Space(), b.Bytes()[first*g:]))
	sp.Peer = b.Peer
	r.pend = append(r.pend, pending{buf: sp, seg: g})
}

// groSize returns the UDP_GRO segment size in a control buffer, or 0.
func groSize(ctrl []byte, n int) int {
	if n > len(ctrl) {
		n = len(ctrl)
	}
	ctrl = ctrl[:n]
	for len(ctrl) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&ctrl[0]))
		cl := int(h.Len)
		if cl < unix.SizeofCmsghdr || cl > len(ctrl) {
			return 0
		}
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && cl >= unix.SizeofCmsghdr+4 {
			v := int(*(*int32)(unsafe.Pointer(&ctrl[unix.SizeofCmsghdr])))
			if v < 0 {
				return 0
			}
			return v
		}
		sp := unix.CmsgSpace(cl - unix.SizeofCmsghdr)
		if sp > len(ctrl) {
			return 0
		}
		ctrl = ctrl[sp:]
	}
	return 0
}

// decodeName converts a raw source address without allocating.
func (p *Port) decodeName(sa *sockaddr, n uint32) (netip.AddrPort, bool) {
	switch sa.Family {
	case unix.AF_INET:
		if n < unix.SizeofSockaddrInet4 {
			return netip.AddrPort{}, false
		}
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&s4.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), port), true
	case unix.AF_INET6:
		if n < unix.SizeofSockaddrInet6 {
			return netip.AddrPort{}, false
		}
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port), true
	}
	return netip.AddrPort{}, false
}
