package vhostuser_test

import (
	"log"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port/vhostuser"
	"golang.org/x/sys/unix"
)

// A worker polls the port while frames flow (the guest does not kick
// meanwhile) and, once ReadBatch has found nothing 64 times in a row,
// asks for kicks and sleeps in epoll on Fd.
func Example() {
	p, err := vhostuser.Listen("/run/butterfly/qemu-vhost-nic0", vhostuser.Options{ArmOnSleep: true})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		log.Fatal(err)
	}
	defer unix.Close(ep)
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, p.Fd(), &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(p.Fd())}); err != nil {
		log.Fatal(err)
	}
	pool := packet.NewPool(64)
	bufs := make([]*packet.Buf, 32)
	for i := range bufs {
		bufs[i] = pool.Get()
	}
	events := make([]unix.EpollEvent, 8)
	empty := 0
	for {
		for _, b := range bufs {
			b.Reset()
		}
		n, _ := p.ReadBatch(bufs)
		if n > 0 {
			empty = 0
			// Switch bufs[:n]; frames for this VM go out with p.WriteBatch.
			continue
		}
		if empty++; empty >= 64 && !p.PrepareSleep() {
			unix.EpollWait(ep, events, -1) // a kick, or a ring started or stopped
			empty = 0
		}
	}
}
