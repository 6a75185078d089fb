//go:build linux && amd64 && !race

package vhostuser

import (
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// The data path marks its batches on a ring (Port.seq) with plain stores,
// no locked instruction, when the kernel has membarrier's private
// expedited command: quiesce then makes every thread of the process
// execute a full barrier before it reads the mark. A mark stored before
// that barrier is visible to quiesce; a batch that stores its mark after
// it loads the ring pointer after it too, and so sees the ring gone.
// (Race-detector builds use atomic adds, which the detector sees.)

const (
	membarrierPrivateExpedited         = 1 << 3
	membarrierRegisterPrivateExpedited = 1 << 4
)

// canFence registers the process for membarrier's private expedited
// command and reports whether it can use it (Linux 4.14 and later). The
// registration is per process and can be repeated.
func canFence() bool {
	_, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierRegisterPrivateExpedited, 0, 0)
	return errno == 0
}

// fence makes every running thread of the process execute a full memory
// barrier (see canFence).
func fence() error {
	if _, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierPrivateExpedited, 0, 0); errno != 0 {
		return errno
	}
	return nil
}

// bumpPlain adds one to *v with a plain read and store, no lock prefix:
// only the calling thread writes *v.
//
//go:noescape
func bumpPlain(v *uint64)

// bump adds one to the mark *v: a plain store where fenced, else an
// atomic add.
func bump(v *uint64, fenced bool) {
	if fenced {
		bumpPlain(v)
		return
	}
	atomic.AddUint64(v, 1)
}
