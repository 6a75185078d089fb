// Package pcap writes packet traces (pcap files, Ethernet link type,
// microsecond timestamps) without slowing the dataplane down.
//
// Capture copies a frame into a preallocated byte ring and returns at
// once: it never blocks, allocates, takes a lock or makes a system call
// (except one non-blocking wake-up of the writer when the ring was empty).
// When the ring is full the frame is dropped and counted. Any number of
// goroutines may call Capture at the same time: space is reserved with a
// compare-and-swap, so producers do not wait for each other. A background
// goroutine drains the ring into the file with gopacket's pcapgo.
//
// Trace files are never opened through a symbolic link and never
// truncated: NewWriter creates a new file (mode 0600), or appends to an
// existing trace with the same pcap header, and refuses anything else. Dir
// confines trace names to one directory that only the daemon's user can
// write to.
package pcap

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"golang.org/x/sys/unix"
)

const (
	// Snaplen is the most bytes of a frame kept; longer frames are
	// truncated (the record keeps their original length).
	Snaplen = 65535
	// DefaultRingBytes is the ring size NewWriter uses.
	DefaultRingBytes = 4 << 20
	// MinRingBytes is the smallest ring: two records of Snaplen bytes.
	MinRingBytes = 1 << 18

	fileHeaderLen   = 24
	recordHeaderLen = 16 // pcap per-packet header in the file

	// Ring record: header word, timestamp word, lengths word, data.
	ringHdrLen   = 24
	flagCommit   = 1 << 63
	flagPad      = 1 << 62
	lenMask      = 1<<32 - 1
	fileBufBytes = 256 << 10
)

// Writer is a trace file fed through a bounded ring.
type Writer struct {
	words []uint64 // the ring, 8-byte aligned
	ring  []byte   // the same memory as bytes
	mask  uint64

	_    [64]byte
	head atomic.Uint64 // next free byte (reservations)
	_    [56]byte
	tail atomic.Uint64 // first unconsumed byte
	_    [56]byte

	ringDrops atomic.Uint64
	sizeDrops atomic.Uint64
	written   atomic.Uint64
	closed    atomic.Bool

	kick chan struct{}
	stop chan struct{}
	done chan struct{}

	// Writer goroutine state.
	file     *os.File
	bw       *bufio.Writer
	pw       *pcapgo.Writer
	size     int64
	maxBytes int64
	werr     error

	closeOnce sync.Once
	closeErr  error
}

// NewWriter opens the trace file at path and starts its writer. A missing
// file is created with mode 0600. An existing regular file with a single
// link that starts with the header NewWriter writes is appended to; any
// other existing file, and a symbolic link, is refused and left untouched.
// maxBytes bounds the file size, what it held before included (<= 0:
// unbounded); records that would exceed it are dropped and counted. A file
// cut in the middle of a record (a crash) is appended to as it is.
func NewWriter(path string, maxBytes int64) (*Writer, error) {
	return NewWriterRing(path, maxBytes, DefaultRingBytes)
}

// NewWriterRing is NewWriter with a ring of ringBytes (rounded up to a
// power of two, at least MinRingBytes).
func NewWriterRing(path string, maxBytes int64, ringBytes int) (*Writer, error) {
	w, err := newWriter(path, maxBytes, ringBytes)
	if err != nil {
		return nil, err
	}
	go w.run()
	return w, nil
}

// newWriter creates the file and the ring; the caller starts run.
func newWriter(path string, maxBytes int64, ringBytes int) (*Writer, error) {
	size := uint64(MinRingBytes)
	for size < uint64(ringBytes) {
		size <<= 1
	}
	f, existing, err := openTrace(path)
	if err != nil {
		return nil, err
	}
	w := &Writer{
		words:    make([]uint64, size/8),
		mask:     size - 1,
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		file:     f,
		bw:       bufio.NewWriterSize(f, fileBufBytes),
		maxBytes: maxBytes,
	}
	w.ring = unsafe.Slice((*byte)(unsafe.Pointer(&w.words[0])), size)
	w.pw = pcapgo.NewWriter(w.bw)
	if existing > 0 {
		w.size = existing
		return w, nil
	}
	err = w.pw.WriteFileHeader(Snaplen, layers.LinkTypeEthernet)
	if err == nil {
		err = w.bw.Flush()
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pcap: write header %s: %w", path, err)
	}
	w.size = fileHeaderLen
	return w, nil
}

// fileHeader returns the pcap file header NewWriter writes.
func fileHeader() []byte {
	var b bytes.Buffer
	// Writing to a bytes.Buffer does not fail.
	_ = pcapgo.NewWriter(&b).WriteFileHeader(Snaplen, layers.LinkTypeEthernet)
	return b.Bytes()
}

// openTrace opens path for writing without following a symbolic link:
// created (0600) when missing, else only if it is a regular file with one
// link that starts with fileHeader(), positioned at its end. existing is
// the size of such a file, 0 for a new one.
func openTrace(path string) (f *os.File, existing int64, err error) {
	const flags = os.O_WRONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	f, err = os.OpenFile(path, flags|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		return f, 0, nil
	}
	if !errors.Is(err, os.ErrExist) {
		return nil, 0, fmt.Errorf("pcap: create %s: %w", path, refusedLink(err))
	}
	// O_NONBLOCK: a FIFO put in the file's place must not block the open.
	f, err = os.OpenFile(path, os.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("pcap: open %s: %w", path, refusedLink(err))
	}
	if existing, err = checkExisting(f); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("pcap: %s exists and is not overwritten: %w", path, err)
	}
	return f, existing, nil
}

// refusedLink rewords the error of an open that met a symbolic link.
func refusedLink(err error) error {
	if errors.Is(err, unix.ELOOP) {
		return fmt.Errorf("it is a symbolic link, which trace files never follow: %w", err)
	}
	return err
}

// checkExisting accepts an open file to append to: a regular file with one
// link that starts with fileHeader(). It returns its size, with f
// positioned at its end.
func checkExisting(f *os.File) (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0, errors.New("not a regular file")
	}
	if st.Nlink != 1 {
		return 0, fmt.Errorf("it has %d hard links", st.Nlink)
	}
	want := fileHeader()
	got := make([]byte, len(want))
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		return 0, errors.New("not a packet trace of this format (Ethernet, snaplen 65535)")
	}
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	return end, nil
}

func align8(n int) int { return (n + 7) &^ 7 }

// Capture copies frame, taken at ts (Unix nanoseconds), into the ring. It
// returns false when the frame was dropped (ring full or writer closed).
// It is safe for concurrent use.
func (w *Writer) Capture(frame []byte, ts int64) bool {
	if w.closed.Load() {
		w.ringDrops.Add(1)
		return false
	}
	caplen := min(len(frame), Snaplen)
	rec := uint64(ringHdrLen + align8(caplen))
	size := w.mask + 1
	var h, pad uint64
	for {
		h = w.head.Load()
		t := w.tail.Load()
		pad = 0
		if off := h & w.mask; off+rec > size {
			pad = size - off
		}
		if h+pad+rec-t > size {
			w.ringDrops.Add(1)
			return false
		}
		if w.head.CompareAndSwap(h, h+pad+rec) {
			break
		}
	}
	if pad > 0 {
		atomic.StoreUint64(&w.words[(h&w.mask)/8], flagCommit|flagPad|pad)
	}
	at := (h + pad) & w.mask
	i := at / 8
	w.words[i+1] = uint64(ts)
	w.words[i+2] = uint64(caplen)<<32 | uint64(uint32(len(frame)))
	copy(w.ring[at+ringHdrLen:], frame[:caplen])
	atomic.StoreUint64(&w.words[i], flagCommit|rec)
	// Wake the writer if the ring was empty when we reserved: it may be
	// asleep. Otherwise it is busy and will see the record.
	if w.tail.Load() == h {
		w.Kick()
	}
	return true
}

// Kick wakes the writer goroutine without blocking. Capture does it when
// needed; calling it once per batch is harmless.
func (w *Writer) Kick() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Dropped returns how many frames were not written: ring full, file size
// bound reached, write error or capture after Close.
func (w *Writer) Dropped() uint64 { return w.ringDrops.Load() + w.sizeDrops.Load() }

// Written returns how many frames were written to the file.
func (w *Writer) Written() uint64 { return w.written.Load() }

// Close stops capturing, writes what the ring holds, and closes the file.
func (w *Writer) Close() error {
	w.closeOnce.Do(func() {
		w.closed.Store(true)
		close(w.stop)
		<-w.done
		var errs []error
		if w.werr != nil {
			errs = append(errs, w.werr)
		}
		if err := w.bw.Flush(); err != nil {
			errs = append(errs, err)
		}
		if err := w.file.Close(); err != nil {
			errs = append(errs, err)
		}
		if err := errors.Join(errs...); err != nil {
			w.closeErr = fmt.Errorf("pcap: close %s: %w", w.file.Name(), err)
		}
	})
	return w.closeErr
}

// run is the writer goroutine.
func (w *Writer) run() {
	defer close(w.done)
	for {
		switch w.drain() {
		case drainBusy:
			// A producer is between reservation and commit: it
			// finishes within a copy's time.
			runtime.Gosched()
			continue
		case drainEmpty:
			if w.werr == nil {
				if err := w.bw.Flush(); err != nil {
					w.werr = err
				}
			}
		}
		select {
		case <-w.kick:
		case <-w.stop:
			// Producers that reserved before closed was set finish
			// their copy shortly; give them a moment.
			deadline := time.Now().Add(100 * time.Millisecond)
			for w.drain() == drainBusy && time.Now().Before(deadline) {
				runtime.Gosched()
			}
			return
		}
	}
}

type drainResult int

const (
	drainEmpty drainResult = iota
	drainBusy
)

// drain writes committed records until the ring is empty or the record at
// the tail is still being written.
func (w *Writer) drain() drainResult {
	for {
		t := w.tail.Load()
		if t == w.head.Load() {
			return drainEmpty
		}
		i := (t & w.mask) / 8
		hdr := atomic.LoadUint64(&w.words[i])
		if hdr&flagCommit == 0 {
			return drainBusy
		}
		l := hdr & lenMask
		if hdr&flagPad == 0 {
			ts := int64(w.words[i+1])
			lens := w.words[i+2]
			caplen := int(lens >> 32)
			orig := int(uint32(lens))
			at := t&w.mask + ringHdrLen
			w.write(ts, orig, w.ring[at:at+uint64(caplen)])
		}
		clear(w.words[i : i+l/8])
		w.tail.Store(t + l)
	}
}

func (w *Writer) write(ts int64, orig int, data []byte) {
	n := int64(recordHeaderLen + len(data))
	if w.werr != nil || (w.maxBytes > 0 && w.size+n > w.maxBytes) {
		w.sizeDrops.Add(1)
		return
	}
	ci := gopacket.CaptureInfo{Timestamp: time.Unix(0, ts), CaptureLength: len(data), Length: orig}
	if err := w.pw.WritePacket(ci, data); err != nil {
		w.werr = err
		w.sizeDrops.Add(1)
		return
	}
	w.size += n
	w.written.Add(1)
}
