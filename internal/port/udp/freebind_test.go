package udp

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port/porttest"
)

// syncBuffer is a bytes.Buffer for a logger written from another
// goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestListenBeforeAddress: a port opens on a VTEP address the machine
// does not have yet (IP_FREEBIND / IPV6_FREEBIND) and joins a group; it
// warns until the address is configured, then takes the group's
// membership on the address's link and carries datagrams both ways,
// unicast and to the group.
func TestListenBeforeAddress(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		name, addrA, addrB, prefix, group string
	}{
		{"ipv4", "10.232.0.1", "10.232.0.2", "/24", "239.12.34.57"},
		{"ipv6", "fd00:232::1", "fd00:232::2", "/64", "ff15::4243"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nsA, hA := newNS(t)
			nsB, hB := newNS(t)
			va := fmt.Sprintf("bfva%d", nsSeq.Add(1))
			vb := fmt.Sprintf("bfvb%d", nsSeq.Add(1))
			run(t, "ip", "link", "add", va, "type", "veth", "peer", "name", vb)
			t.Cleanup(func() { exec.Command("ip", "link", "del", va).Run() })
			run(t, "ip", "link", "set", va, "netns", nsA)
			run(t, "ip", "link", "set", vb, "netns", nsB)
			run(t, "ip", "-n", nsB, "addr", "add", tc.addrB+tc.prefix, "dev", vb, "nodad")
			run(t, "ip", "-n", nsA, "link", "set", va, "up")
			run(t, "ip", "-n", nsB, "link", "set", vb, "up")

			const port = 4789
			group := netip.MustParseAddr(tc.group)
			var log syncBuffer
			var a, b *Port
			if err := porttest.InNS(hA, func() (err error) {
				a, err = Listen(netip.MustParseAddr(tc.addrA), port, Options{Logger: newLogger(&log)})
				if err != nil {
					return err
				}
				return a.JoinGroup(group)
			}); err != nil {
				t.Fatalf("listen on an address not yet configured: %v", err)
			}
			t.Cleanup(func() { a.Close() })
			if err := porttest.InNS(hB, func() (err error) {
				b, err = Listen(netip.MustParseAddr(tc.addrB), port, Options{})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			if !strings.Contains(log.String(), "level=WARN") {
				t.Fatalf("no warning while the address is missing; log:\n%s", log.String())
			}

			run(t, "ip", "-n", nsA, "addr", "add", tc.addrA+tc.prefix, "dev", va, "nodad")
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(output(t, "ip", "-n", nsA, "maddr", "show", "dev", va), tc.group) {
				if time.Now().After(deadline) {
					t.Fatalf("group %s never joined on %s once the address came; log:\n%s", tc.group, va, log.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if !strings.Contains(log.String(), "level=INFO") {
				t.Errorf("nothing logged when the address came; log:\n%s", log.String())
			}

			// Datagrams both ways and to the group. Retry a few times:
			// the first ones may race with neighbour discovery.
			exchange := func(from, to *Port, dst netip.AddrPort, what string) {
				t.Helper()
				var got []*packet.Buf
				for id := uint64(0); id < 20 && len(got) == 0; id++ {
					o := packet.NewBuf()
					o.SetLen(copy(o.Space(), payload(id, 120)))
					o.Peer = dst
					from.WriteBatch([]*packet.Buf{o})
					got = readN(t, to, 1, 8, 250*time.Millisecond)
				}
				if len(got) != 1 || got[0].Peer != from.LocalAddr() {
					t.Fatalf("%s: %d datagrams received", what, len(got))
				}
			}
			exchange(a, b, b.LocalAddr(), "A to B")
			exchange(b, a, a.LocalAddr(), "B to A")
			exchange(b, a, netip.AddrPortFrom(group, port), "B to the group")
		})
	}
}

func newLogger(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
