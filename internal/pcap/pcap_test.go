package pcap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

type record struct {
	data []byte
	orig int
	ts   time.Time
}

func readAll(t *testing.T, path string) []record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatalf("read header: %v", err)
	}
	if r.LinkType() != layers.LinkTypeEthernet || r.Snaplen() != Snaplen {
		t.Fatalf("link type %v snaplen %d", r.LinkType(), r.Snaplen())
	}
	var out []record
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("read record %d: %v", len(out), err)
		}
		out = append(out, record{data: data, orig: ci.Length, ts: ci.Timestamp})
	}
}

// frame returns a frame of n bytes whose first 8 bytes carry id.
func frame(id uint64, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(int(id) + i)
	}
	if n >= 8 {
		binary.BigEndian.PutUint64(b, id)
	}
	return b
}

func TestWriteReadBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.pcap")
	w, err := NewWriter(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 11, 22, 1, 2, 3, 456789000, time.UTC)
	sizes := []int{60, 64, 1514, 9000, 65535, 65550, 70000, 14, 1}
	for i, n := range sizes {
		if !w.Capture(frame(uint64(i), n), base.Add(time.Duration(i)*time.Millisecond).UnixNano()) {
			t.Fatalf("frame %d (%d bytes) dropped", i, n)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.Dropped() != 0 || w.Written() != uint64(len(sizes)) {
		t.Fatalf("dropped %d written %d", w.Dropped(), w.Written())
	}
	got := readAll(t, path)
	if len(got) != len(sizes) {
		t.Fatalf("read %d records, want %d", len(got), len(sizes))
	}
	for i, n := range sizes {
		want := frame(uint64(i), n)
		if len(want) > Snaplen {
			want = want[:Snaplen]
		}
		if !bytes.Equal(got[i].data, want) || got[i].orig != n {
			t.Errorf("record %d: %d bytes (orig %d), want %d (orig %d), equal=%v", i, len(got[i].data), got[i].orig, len(want), n, bytes.Equal(got[i].data, want))
		}
		wantTS := base.Add(time.Duration(i) * time.Millisecond).Truncate(time.Microsecond)
		if !got[i].ts.Equal(wantTS) {
			t.Errorf("record %d: timestamp %v, want %v", i, got[i].ts, wantTS)
		}
	}
}

func TestConcurrentProducers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.pcap")
	w, err := NewWriterRing(path, 0, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	const producers, per = 4, 2000
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				id := uint64(p)<<32 | uint64(i)
				for !w.Capture(frame(id, 60+i%200), time.Now().UnixNano()) {
					// Ring full: the writer catches up.
					time.Sleep(100 * time.Microsecond)
				}
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, path)
	if len(got) != producers*per {
		t.Fatalf("read %d records, want %d", len(got), producers*per)
	}
	next := make([]int, producers)
	for k, r := range got {
		id := binary.BigEndian.Uint64(r.data)
		p, i := int(id>>32), int(uint32(id))
		if p >= producers || i != next[p] {
			t.Fatalf("record %d: producer %d frame %d, want frame %d", k, p, i, next[p])
		}
		if !bytes.Equal(r.data, frame(id, 60+i%200)) {
			t.Fatalf("record %d: content differs", k)
		}
		next[p]++
	}
}

func TestRingOverflowDropsAndCounts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.pcap")
	// The writer goroutine is not started yet, so nothing drains.
	w, err := newWriter(path, 0, MinRingBytes)
	if err != nil {
		t.Fatal(err)
	}
	accepted := 0
	const attempts = 400
	for i := 0; i < attempts; i++ {
		if w.Capture(frame(uint64(i), 1000), int64(i)) {
			if accepted != i {
				t.Fatalf("frame %d accepted after a drop", i)
			}
			accepted++
		}
	}
	// 1000-byte frames take 1024 bytes of ring each.
	if want := MinRingBytes / 1024; accepted != want {
		t.Fatalf("accepted %d frames, want %d", accepted, want)
	}
	if w.Dropped() != uint64(attempts-accepted) {
		t.Fatalf("dropped %d, want %d", w.Dropped(), attempts-accepted)
	}
	go w.run()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, path)
	if len(got) != accepted {
		t.Fatalf("file holds %d records, want %d", len(got), accepted)
	}
	for i, r := range got {
		if !bytes.Equal(r.data, frame(uint64(i), 1000)) {
			t.Fatalf("record %d differs", i)
		}
	}
	if w.Capture(frame(0, 60), 0) {
		t.Fatal("Capture after Close accepted a frame")
	}
}

func TestRingWrapsAround(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.pcap")
	w, err := newWriter(path, 0, MinRingBytes)
	if err != nil {
		t.Fatal(err)
	}
	// Odd sizes so that records straddle the end of the ring and need
	// padding; drain by hand between rounds.
	id := uint64(0)
	var want [][]byte
	for round := 0; round < 20; round++ {
		for k := 0; k < 7; k++ {
			f := frame(id, 3000+int(id*37)%20000)
			if !w.Capture(f, int64(id)) {
				t.Fatalf("frame %d dropped", id)
			}
			want = append(want, f)
			id++
		}
		if w.drain() != drainEmpty {
			t.Fatal("drain left records behind")
		}
	}
	go w.run()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, path)
	if len(got) != len(want) {
		t.Fatalf("read %d, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i].data, want[i]) {
			t.Fatalf("record %d differs", i)
		}
	}
}

func TestSizeBound(t *testing.T) {
	tests := []struct {
		name     string
		maxBytes int64
		frames   int
		size     int
		written  int
	}{
		{"ten fit", fileHeaderLen + 10*(recordHeaderLen+100), 20, 100, 10},
		{"one byte short", fileHeaderLen + 10*(recordHeaderLen+100) - 1, 20, 100, 9},
		{"header only", fileHeaderLen, 5, 100, 0},
		{"unbounded", 0, 20, 100, 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "t.pcap")
			w, err := NewWriter(path, tc.maxBytes)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < tc.frames; i++ {
				if !w.Capture(frame(uint64(i), tc.size), int64(i)) {
					t.Fatalf("frame %d dropped by the ring", i)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if int(w.Written()) != tc.written || int(w.Dropped()) != tc.frames-tc.written {
				t.Fatalf("written %d dropped %d, want %d and %d", w.Written(), w.Dropped(), tc.written, tc.frames-tc.written)
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if tc.maxBytes > 0 && st.Size() > tc.maxBytes {
				t.Fatalf("file is %d bytes, bound %d", st.Size(), tc.maxBytes)
			}
			if got := readAll(t, path); len(got) != tc.written {
				t.Fatalf("file holds %d records, want %d", len(got), tc.written)
			}
		})
	}
}

func TestNewWriterBadPath(t *testing.T) {
	if _, err := NewWriter(filepath.Join(t.TempDir(), "missing", "t.pcap"), 0); err == nil {
		t.Fatal("NewWriter in a missing directory succeeded")
	}
}

func TestCaptureDoesNotAllocate(t *testing.T) {
	w, err := NewWriter(filepath.Join(t.TempDir(), "t.pcap"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	f := frame(1, 1514)
	allocs := testing.AllocsPerRun(1000, func() {
		w.Capture(f, 1)
	})
	if allocs != 0 {
		t.Fatalf("Capture allocates %.1f times per call", allocs)
	}
}

func BenchmarkCapture(b *testing.B) {
	w, err := NewWriter(filepath.Join(b.TempDir(), "t.pcap"), 0)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	f := frame(1, 1514)
	b.SetBytes(int64(len(f)))
	for b.Loop() {
		w.Capture(f, 1)
	}
}
