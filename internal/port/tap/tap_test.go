package tap

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port/porttest"
)

var seq atomic.Int32

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

func tapName() string { return fmt.Sprintf("bft%d-%d", os.Getpid()%100000, seq.Add(1)) }

func run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func bufs(n int) []*packet.Buf {
	out := make([]*packet.Buf, n)
	for i := range out {
		out[i] = packet.NewBuf()
	}
	return out
}

func open(t testing.TB, opts Options) *Port {
	t.Helper()
	p, err := Open(tapName(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// newNS creates a network namespace deleted at the end of the test.
func newNS(t testing.TB) (string, netns.NsHandle) {
	t.Helper()
	name := fmt.Sprintf("bftap%d-%d", os.Getpid(), seq.Add(1))
	return name, porttest.NewNS(t, name)
}

// vm moves p into a new namespace with addr/24 and returns the namespace.
func vm(t testing.TB, p *Port, addr string) (string, netns.NsHandle) {
	t.Helper()
	ns, h := newNS(t)
	run(t, "ip", "link", "set", p.Name(), "netns", ns)
	run(t, "ip", "-n", ns, "addr", "add", addr+"/24", "dev", p.Name())
	run(t, "ip", "-n", ns, "link", "set", p.Name(), "up")
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	return ns, h
}

func TestOpenErrors(t *testing.T) {
	needRoot(t)
	p := open(t, Options{})
	tests := []struct {
		name   string
		ifname string
		opts   Options
		inUse  bool
	}{
		{"empty", "", Options{}, false},
		{"too long", "abcdefghijklmnop", Options{}, false},
		{"loopback exists", "lo", Options{}, true},
		{"open tap exists", p.Name(), Options{Offload: true}, true},
		{"bad mtu", "bftmtu", Options{MTU: 70000}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, err := Open(tc.ifname, tc.opts)
			if err == nil {
				q.Close()
				t.Fatal("Open succeeded")
			}
			if errors.Is(err, ErrNameInUse) != tc.inUse {
				t.Fatalf("error %q: ErrNameInUse = %v, want %v", err, !tc.inUse, tc.inUse)
			}
		})
	}
}

func TestOpenConfiguresDevice(t *testing.T) {
	needRoot(t)
	for _, offload := range []bool{false, true} {
		t.Run(fmt.Sprintf("offload=%v", offload), func(t *testing.T) {
			name := tapName()
			if len(name) > MaxNameLen {
				t.Fatalf("test name %q too long", name)
			}
			p, err := Open(name, Options{Offload: offload, MTU: 1400})
			if err != nil {
				t.Fatal(err)
			}
			if p.Name() != name || p.Offload() != offload || p.Fd() < 0 {
				t.Fatalf("Name %q Offload %v Fd %d", p.Name(), p.Offload(), p.Fd())
			}
			link, err := netlink.LinkByName(name)
			if err != nil {
				t.Fatal(err)
			}
			a := link.Attrs()
			if a.MTU != 1400 || a.Flags&net.FlagUp == 0 {
				t.Fatalf("MTU %d flags %v", a.MTU, a.Flags)
			}
			tt, ok := link.(*netlink.Tuntap)
			if !ok || tt.Mode != netlink.TUNTAP_MODE_TAP {
				t.Fatalf("link %T is not a TAP", link)
			}
			if got := tt.Flags&netlink.TUNTAP_VNET_HDR != 0; got != offload {
				t.Fatalf("VNET_HDR flag %v, want %v", got, offload)
			}
			if err := p.SetMTU(9000); err != nil {
				t.Fatal(err)
			}
			if mtu, _ := os.ReadFile("/sys/class/net/" + name + "/mtu"); strings.TrimSpace(string(mtu)) != "9000" {
				t.Fatalf("MTU after SetMTU(9000): %s", mtu)
			}
			if err := p.SetMTU(10); err == nil {
				t.Fatal("SetMTU(10) succeeded")
			}
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			if err := p.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if _, err := netlink.LinkByName(name); err == nil {
				t.Fatal("device still exists after Close")
			}
		})
	}
}

// forwarder joins two ports with the batch API, as the dataplane does.
type forwarder struct {
	a, b     *Port
	stop     atomic.Bool
	done     chan struct{}
	frames   atomic.Int64
	gso      atomic.Int64
	maxLen   atomic.Int64
	csum     atomic.Int64
	errMu    sync.Mutex
	firstErr error
}

func forward(t *testing.T, a, b *Port) *forwarder {
	f := &forwarder{a: a, b: b, done: make(chan struct{})}
	go f.run()
	t.Cleanup(func() {
		f.stop.Store(true)
		<-f.done
		if err := f.err(); err != nil {
			t.Errorf("forwarder: %v", err)
		}
	})
	return f
}

func (f *forwarder) err() error {
	f.errMu.Lock()
	defer f.errMu.Unlock()
	return f.firstErr
}

func (f *forwarder) fail(err error) {
	f.errMu.Lock()
	defer f.errMu.Unlock()
	if f.firstErr == nil {
		f.firstErr = err
	}
}

func (f *forwarder) run() {
	defer close(f.done)
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		f.fail(err)
		return
	}
	defer unix.Close(ep)
	for _, p := range []*Port{f.a, f.b} {
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, p.Fd(), &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(p.Fd())}); err != nil {
			f.fail(err)
			return
		}
	}
	ba, bb := bufs(64), bufs(64)
	ev := make([]unix.EpollEvent, 2)
	for !f.stop.Load() {
		moved := f.pump(f.a, f.b, ba) + f.pump(f.b, f.a, bb)
		if moved == 0 {
			unix.EpollWait(ep, ev, 20)
		}
	}
}

func (f *forwarder) pump(in, out *Port, bs []*packet.Buf) int {
	for _, b := range bs {
		b.Reset()
	}
	n, err := in.ReadBatch(bs)
	if err != nil {
		f.fail(err)
	}
	for _, b := range bs[:n] {
		f.frames.Add(1)
		if int64(b.Len()) > f.maxLen.Load() {
			f.maxLen.Store(int64(b.Len()))
		}
		if b.VNet.GSOType != packet.GSONone {
			f.gso.Add(1)
		}
		if b.VNet.Flags&packet.VNetFlagNeedsCsum != 0 {
			f.csum.Add(1)
		}
	}
	if _, _, err := out.WriteBatch(bs[:n]); err != nil {
		f.fail(err)
	}
	return n
}

func TestForwardBetweenNamespaces(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("ping"); err != nil {
		t.Skip("ping not installed")
	}
	for _, offload := range []bool{false, true} {
		t.Run(fmt.Sprintf("offload=%v", offload), func(t *testing.T) {
			a := open(t, Options{Offload: offload, MTU: 1500})
			b := open(t, Options{Offload: offload, MTU: 1500})
			nsA, hA := vm(t, a, "10.232.0.1")
			_, hB := vm(t, b, "10.232.0.2")
			f := forward(t, a, b)

			if out, err := exec.Command("ip", "netns", "exec", nsA, "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.232.0.2").CombinedOutput(); err != nil {
				t.Fatalf("ping: %v\n%s", err, out)
			}

			// TCP: a Go listener in B, a client in A.
			var ln net.Listener
			if err := porttest.InNS(hB, func() (err error) {
				ln, err = net.Listen("tcp4", "10.232.0.2:5201")
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			const size = 24 << 20
			type result struct {
				sum [32]byte
				n   int64
				err error
			}
			res := make(chan result, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					res <- result{err: err}
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(60 * time.Second))
				h := sha256.New()
				n, err := io.Copy(h, c)
				var r result
				copy(r.sum[:], h.Sum(nil))
				r.n, r.err = n, err
				res <- r
			}()
			var conn net.Conn
			if err := porttest.InNS(hA, func() (err error) {
				conn, err = net.DialTimeout("tcp4", "10.232.0.2:5201", 10*time.Second)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			conn.SetDeadline(time.Now().Add(60 * time.Second))
			rng := rand.NewChaCha8([32]byte{1, 2, 3})
			h := sha256.New()
			start := time.Now()
			chunk := make([]byte, 256<<10)
			for sent := 0; sent < size; sent += len(chunk) {
				rng.Read(chunk)
				h.Write(chunk)
				if _, err := conn.Write(chunk); err != nil {
					t.Fatalf("write after %d bytes: %v", sent, err)
				}
			}
			conn.Close()
			r := <-res
			elapsed := time.Since(start)
			if r.err != nil {
				t.Fatalf("receiver: %v", r.err)
			}
			if r.n != size || !bytes.Equal(r.sum[:], h.Sum(nil)) {
				t.Fatalf("received %d bytes, want %d; checksum equal: %v", r.n, size, bytes.Equal(r.sum[:], h.Sum(nil)))
			}
			t.Logf("TCP %d MiB in %v (%.2f Gbit/s); %d frames forwarded, %d GSO, %d partial checksum, largest %d bytes",
				size>>20, elapsed.Round(time.Millisecond), float64(size*8)/elapsed.Seconds()/1e9,
				f.frames.Load(), f.gso.Load(), f.csum.Load(), f.maxLen.Load())
			if offload {
				if f.maxLen.Load() <= 1514 || f.gso.Load() == 0 {
					t.Fatalf("with offloads no GSO frame was seen (largest %d bytes)", f.maxLen.Load())
				}
			} else if f.maxLen.Load() > 1514 || f.gso.Load() != 0 {
				t.Fatalf("without offloads a %d-byte frame (GSO %d) was seen", f.maxLen.Load(), f.gso.Load())
			}
		})
	}
}

// echoRequests builds ICMP echo requests from a fake host to the TAP's
// stack.
func echoRequests(t testing.TB, n int, dstMAC net.HardwareAddr, src, dst net.IP) [][]byte {
	t.Helper()
	var out [][]byte
	for i := 0; i < n; i++ {
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 0x99}, DstMAC: dstMAC, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: src, DstIP: dst}
		icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 7, Seq: uint16(i)}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, icmp, gopacket.Payload(make([]byte, 56))); err != nil {
			t.Fatal(err)
		}
		out = append(out, append([]byte(nil), buf.Bytes()...))
	}
	return out
}

// echoer writes ICMP echo requests from a fake host (10.233.0.99) into a
// TAP whose other side is a namespace's stack, and reads the replies.
type echoer struct {
	p       *Port
	reqs    [][]byte
	out, in []*packet.Buf
	bad     int // frames read that were not our echo replies
}

func newEchoer(t testing.TB, offload bool, batch int) *echoer {
	p := open(t, Options{Offload: offload})
	ns, _ := vm(t, p, "10.233.0.1")
	run(t, "ip", "-n", ns, "neigh", "add", "10.233.0.99", "lladdr", "02:00:00:00:00:99", "dev", p.Name())
	macOut, err := exec.Command("ip", "-n", ns, "-br", "link", "show", p.Name()).Output()
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(macOut))
	if len(fields) < 3 {
		t.Fatalf("cannot parse %q", macOut)
	}
	mac, err := net.ParseMAC(fields[2])
	if err != nil {
		t.Fatal(err)
	}
	e := &echoer{p: p, out: bufs(batch), in: bufs(batch)}
	e.reqs = echoRequests(t, batch, mac, net.IPv4(10, 233, 0, 99), net.IPv4(10, 233, 0, 1))
	for i, r := range e.reqs {
		e.out[i].SetLen(copy(e.out[i].Space(), r))
	}
	return e
}

// isReply reports whether f is an echo reply to the fake host.
func isReply(f []byte) bool {
	return len(f) >= 42 &&
		bytes.Equal(f[0:6], []byte{2, 0, 0, 0, 0, 0x99}) && // to the fake host
		f[12] == 0x08 && f[13] == 0x00 && // IPv4
		f[23] == 1 && // ICMP
		bytes.Equal(f[30:34], []byte{10, 233, 0, 99}) &&
		f[34] == 0 && // echo reply
		f[38] == 0 && f[39] == 7 // our identifier
}

// exchange writes the batch of requests and reads until as many replies
// came back or a deadline passed; it returns the replies received.
func (e *echoer) exchange() (int, error) {
	n, _, err := e.p.WriteBatch(e.out)
	if err != nil {
		return 0, err
	}
	got := 0
	deadline := time.Now().Add(2 * time.Second)
	for got < n && time.Now().Before(deadline) {
		for _, b := range e.in {
			b.Reset()
		}
		m, err := e.p.ReadBatch(e.in[:n-got])
		if err != nil {
			return got, err
		}
		for _, b := range e.in[:m] {
			// The fresh link also sends IPv6 noise: count it apart.
			if isReply(b.Bytes()) {
				got++
			} else {
				e.bad++
			}
		}
	}
	return got, nil
}

// TestEchoAndNoAllocs checks real frames in both directions through one
// TAP, and that the steady state allocates nothing.
func TestEchoAndNoAllocs(t *testing.T) {
	needRoot(t)
	for _, offload := range []bool{false, true} {
		t.Run(fmt.Sprintf("offload=%v", offload), func(t *testing.T) {
			const batch = 8
			e := newEchoer(t, offload, batch)
			if got, err := e.exchange(); got != batch || err != nil {
				t.Fatalf("received %d echo replies (%v), want %d", got, err, batch)
			}
			// The written buffers are unchanged.
			for i, r := range e.reqs {
				if !bytes.Equal(e.out[i].Bytes(), r) {
					t.Fatalf("request %d changed by WriteBatch", i)
				}
			}
			var short atomic.Int64
			allocs := testing.AllocsPerRun(50, func() {
				if got, _ := e.exchange(); got != batch {
					short.Add(1)
				}
			})
			if allocs != 0 {
				t.Fatalf("WriteBatch+ReadBatch allocate %.1f times per batch", allocs)
			}
			if short.Load() != 0 {
				t.Fatalf("%d rounds missed replies", short.Load())
			}
		})
	}
}

// BenchmarkEcho measures a write batch into a TAP plus reading back the
// kernel's replies: two system calls per frame.
func BenchmarkEcho(b *testing.B) {
	needRoot(b)
	for _, offload := range []bool{false, true} {
		b.Run(fmt.Sprintf("offload=%v", offload), func(b *testing.B) {
			const batch = 32
			e := newEchoer(b, offload, batch)
			frames := 0
			for b.Loop() {
				n, err := e.exchange()
				if err != nil {
					b.Fatal(err)
				}
				frames += n
			}
			b.ReportMetric(float64(frames)/b.Elapsed().Seconds(), "replies/s")
		})
	}
}

func TestWriteWithoutHeadroom(t *testing.T) {
	needRoot(t)
	p := open(t, Options{Offload: true})
	b := packet.NewBuf()
	// Use all the headroom so that the vnet header must be gathered.
	if b.Prepend(packet.Headroom) == nil {
		t.Fatal("Prepend failed")
	}
	if b.Prepend(1) != nil {
		t.Fatal("headroom left")
	}
	frame := make([]byte, packet.Headroom)
	copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x88, 0xb5})
	copy(b.Bytes(), frame)
	n, d, err := p.WriteBatch([]*packet.Buf{b})
	if err != nil || n != 1 || d != 0 {
		t.Fatalf("WriteBatch = %d, %d, %v", n, d, err)
	}
	if !bytes.Equal(b.Bytes(), frame) {
		t.Fatal("frame changed")
	}
	// An inconsistent header (GSO with a zero size) is refused by the
	// kernel: the port refuses that frame, counts it and sends the
	// others; the sent frames come first in the batch.
	c := packet.NewBuf()
	c.SetLen(copy(c.Space(), frame))
	c.VNet = packet.VNetHdr{GSOType: packet.GSOTCPv4, GSOSize: 0, HdrLen: 200}
	batch := []*packet.Buf{c, b}
	n, d, err = p.WriteBatch(batch)
	if err != nil || n != 1 || d != 1 {
		t.Fatalf("WriteBatch with a bad header = %d sent, %d refused, %v; want 1, 1, nil", n, d, err)
	}
	if batch[0] != b || batch[1] != c {
		t.Fatal("the sent frame is not first in the batch, the refused one second")
	}
	if r := p.TxRefused(); r != 1 {
		t.Fatalf("TxRefused = %d, want 1", r)
	}
}

func TestNamespaceDeleted(t *testing.T) {
	needRoot(t)
	p := open(t, Options{Offload: true})
	// No netns handle here: an open handle would keep the namespace alive.
	ns := fmt.Sprintf("bftap%d-%d", os.Getpid(), seq.Add(1))
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run(t, "ip", "link", "set", p.Name(), "netns", ns)
	run(t, "ip", "-n", ns, "link", "set", p.Name(), "up")
	run(t, "ip", "netns", "del", ns)
	deadline := time.Now().Add(5 * time.Second)
	var rerr, werr error
	for time.Now().Before(deadline) {
		_, rerr = p.ReadBatch(bufs(4))
		b := packet.NewBuf()
		b.SetLen(60)
		_, _, werr = p.WriteBatch([]*packet.Buf{b})
		if rerr != nil && werr != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !errors.Is(rerr, ErrDeviceGone) || !errors.Is(werr, ErrDeviceGone) {
		t.Fatalf("after the namespace was deleted: read error %v, write error %v; want ErrDeviceGone", rerr, werr)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("Close of a dead port: %v", err)
	}
}

// TestNoIPv6: with Options.NoIPv6 the device comes up without the
// kernel's IPv6 (no link-local address, nothing sent by the host's stack
// into the port), and a device moved to another namespace gets that
// namespace's IPv6 defaults back, as a container's interface needs.
func TestNoIPv6(t *testing.T) {
	needRoot(t)
	name := tapName()
	p, err := Open(name, Options{NoIPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if v, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6"); err != nil || strings.TrimSpace(string(v)) != "1" {
		t.Fatalf("disable_ipv6 = %q (%v), want 1", v, err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if addrs, err := netlink.AddrList(link, netlink.FAMILY_V6); err != nil || len(addrs) != 0 {
		t.Fatalf("IPv6 addresses %v (%v), want none", addrs, err)
	}
	ns, _ := newNS(t)
	run(t, "ip", "link", "set", name, "netns", ns)
	out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6").Output()
	if err != nil || strings.TrimSpace(string(out)) != "0" {
		t.Fatalf("disable_ipv6 in the new namespace = %q (%v), want 0", out, err)
	}
}
