// Sending: sendmmsg of the caller's buffers, UDP GSO runs, and the
// sorting of a batch into sent, refused and not taken.

package udp

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port"
)

// txState is the preallocated sendmmsg state; touched by the writer only.
type txState struct {
	mmsgState
	segs  []int          // datagrams in each message (>1: a GSO message)
	first []int          // first iovec of each message
	skip  []int          // unsendable buffers right before each message
	one   []unix.Mmsghdr // fallback: a GSO message's segments one by one

	gsoSent uint64 // GSO messages sent, for tests
}

func (p *Port) allocTx() {
	n := p.opts.Batch
	t := &p.tx
	t.alloc(n)
	t.segs = make([]int, n)
	t.first = make([]int, n)
	t.skip = make([]int, n)
	t.one = make([]unix.Mmsghdr, min(n, maxGSOSegments))
}

// encodeName fills a raw destination address; false if ap does not suit
// the socket's family.
func (p *Port) encodeName(sa *sockaddr, ap netip.AddrPort) (uint32, bool) {
	a := ap.Addr()
	if ap.Port() == 0 || !a.IsValid() {
		return 0, false
	}
	if p.v6 {
		if !a.Is6() || a.Is4In6() {
			return 0, false
		}
		*sa = sockaddr{Family: unix.AF_INET6, Addr: a.As16()}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], ap.Port())
		if a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() {
			sa.Scope_id = uint32(p.ifindex.Load())
		}
		return unix.SizeofSockaddrInet6, true
	}
	a = a.Unmap()
	if !a.Is4() {
		return 0, false
	}
	s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
	*s4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.As4()}
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&s4.Port))[:], ap.Port())
	return unix.SizeofSockaddrInet4, true
}

// WriteBatch sends each Buf as one datagram to its Peer with sendmmsg
// (port.Port's contract). A full socket buffer stops it; a datagram the
// kernel refuses (no route, too big, wrong family) or that cannot be sent
// (no peer, wrong family, empty) is refused and counted (TxRefused). With
// UDP GSO, consecutive buffers for the same peer of equal length (the
// last of a run may be shorter) go out as one GSO message; the kernel
// splits them back into the same datagrams.
func (p *Port) WriteBatch(bufs []*packet.Buf) (sent, dropped int, err error) {
	c := tally{bufs: bufs}
	for i, more := 0, true; more && i < len(bufs); {
		i, more, err = p.sendChunk(bufs, i, &c)
	}
	if c.dropped > 0 {
		p.refused.Add(uint64(c.dropped))
	}
	return c.sent, c.dropped, err
}

// tally sorts the buffers of a WriteBatch into sent and refused as the
// datagrams are handled, in their original order (port.MoveSent).
type tally struct {
	bufs          []*packet.Buf
	sent, dropped int
}

// send records that the next k datagrams were sent.
func (c *tally) send(k int) {
	for ; k > 0; k-- {
		c.sent = port.MoveSent(c.bufs, c.sent, c.dropped)
	}
}

// refuse records that the next k datagrams were refused.
func (c *tally) refuse(k int) { c.dropped += k }

// sendChunk sends the datagrams of bufs from i on that fit in one
// sendmmsg's state, records their fate in c and returns where the next
// chunk starts; more is false when the socket buffer is full or sending
// failed (err).
func (p *Port) sendChunk(bufs []*packet.Buf, i int, c *tally) (next int, more bool, err error) {
	t := &p.tx
	gso := p.gso.Load()
	m, iv, skipped := 0, 0, 0
	for i < len(bufs) && m < len(t.msgs) && iv < len(t.iovs) {
		b := bufs[i]
		i++
		nl, ok := p.encodeName(&t.names[m], b.Peer)
		if !ok || b.Len() == 0 {
			skipped++
			continue
		}
		t.skip[m] = skipped
		skipped = 0
		first, size, total := iv, b.Len(), b.Len()
		setIov(&t.iovs[iv], b.Bytes())
		iv++
		for gso && i < len(bufs) && iv < len(t.iovs) && iv-first < maxGSOSegments {
			nb := bufs[i]
			l := nb.Len()
			if nb.Peer != b.Peer || l == 0 || l > size || total+l > maxGSOBytes {
				break
			}
			setIov(&t.iovs[iv], nb.Bytes())
			iv++
			i++
			total += l
			if l < size {
				break // a shorter datagram ends the run
			}
		}
		h := &t.msgs[m].Hdr
		h.Name = (*byte)(unsafe.Pointer(&t.names[m]))
		h.Namelen = nl
		h.Iov = &t.iovs[first]
		h.Iovlen = uint64(iv - first)
		h.Flags = 0
		h.Control = nil
		h.Controllen = 0
		if iv-first > 1 {
			cm := t.ctrl[m*cmsgSpace : (m+1)*cmsgSpace]
			ch := (*unix.Cmsghdr)(unsafe.Pointer(&cm[0]))
			ch.Level = unix.IPPROTO_UDP
			ch.Type = unix.UDP_SEGMENT
			ch.SetLen(unix.CmsgLen(2))
			*(*uint16)(unsafe.Pointer(&cm[unix.SizeofCmsghdr])) = uint16(size)
			h.Control = &cm[0]
			h.SetControllen(unix.CmsgSpace(2))
		}
		t.segs[m] = iv - first
		t.first[m] = first
		m++
	}
	defer p.clearTx(iv)
	j := 0
	for j < m {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(p.fd), uintptr(unsafe.Pointer(&t.msgs[j])), uintptr(m-j), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			for k := j; k < j+int(n); k++ {
				c.refuse(t.skip[k])
				c.send(t.segs[k])
				if t.segs[k] > 1 {
					t.gsoSent++
				}
			}
			j += int(n)
		case unix.EINTR:
		case unix.EAGAIN, unix.ENOBUFS:
			return i, false, nil
		case unix.EIO, unix.EMSGSIZE, unix.EINVAL, unix.ENETUNREACH, unix.EHOSTUNREACH, unix.ENETDOWN,
			unix.EHOSTDOWN, unix.ECONNREFUSED, unix.EPERM, unix.EACCES, unix.EADDRNOTAVAIL, unix.EAFNOSUPPORT:
			c.refuse(t.skip[j])
			if t.segs[j] > 1 {
				// The GSO message failed (EIO: the device cannot
				// checksum; EINVAL: segments above the path MTU):
				// send its datagrams one by one.
				if e == unix.EIO {
					p.gso.Store(false)
				}
				if full := p.sendEach(j, c); full {
					return i, false, nil
				}
			} else {
				c.refuse(1) // a plain datagram the kernel refused
			}
			j++
		default:
			return i, false, fmt.Errorf("udp %v: sendmmsg: %w", p.local, e)
		}
	}
	c.refuse(skipped)
	return i, true, nil
}

// sendEach sends the datagrams of GSO message j as separate messages and
// records their fate in c. It reports whether the socket buffer was full.
func (p *Port) sendEach(j int, c *tally) bool {
	t := &p.tx
	src := &t.msgs[j].Hdr
	k := t.segs[j]
	for s := 0; s < k; s++ {
		h := &t.one[s].Hdr
		*h = unix.Msghdr{Name: src.Name, Namelen: src.Namelen, Iov: &t.iovs[t.first[j]+s], Iovlen: 1}
	}
	for from := 0; from < k; {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(p.fd), uintptr(unsafe.Pointer(&t.one[from])), uintptr(k-from), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			c.send(int(n))
			from += int(n)
		case unix.EINTR:
		case unix.EAGAIN, unix.ENOBUFS:
			return true
		default:
			c.refuse(1)
			from++
		}
	}
	return false
}

func setIov(v *unix.Iovec, b []byte) {
	v.Base = &b[0]
	v.SetLen(len(b))
}

// TxRefused returns the number of datagrams WriteBatch refused.
func (p *Port) TxRefused() uint64 { return p.refused.Load() }

// GSO reports whether WriteBatch coalesces datagrams with UDP GSO. It
// turns off by itself when the kernel reports that the egress device
// cannot do it (EIO).
func (p *Port) GSO() bool { return p.gso.Load() }

// clearTx drops the references to the caller's buffers.
func (p *Port) clearTx(m int) {
	for k := 0; k < m; k++ {
		p.tx.iovs[k].Base = nil
	}
}
