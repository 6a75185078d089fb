package dataplane

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/packet"
	"github.com/butterfly-go/butterfly/internal/port"
)

// frame is a frame with its metadata, as a fake port stores it.
type frame struct {
	data []byte
	vnet packet.VNetHdr
	peer netip.AddrPort
}

// fakePort is an in-memory port.Port backed by slices.
type fakePort struct {
	mu  sync.Mutex
	in  []frame
	out []frame
	// replay, when set, is returned by every ReadBatch (benchmarks and
	// allocation tests); count then replaces out by a counter.
	replay  []frame
	count   bool
	written atomic.Int64
	// reject makes WriteBatch accept nothing.
	reject bool
	// txRefused is what TxRefused reports.
	txRefused atomic.Uint64

	closed        atomic.Bool
	useAfterClose atomic.Bool
	groups        map[netip.Addr]bool
	// readErr makes ReadBatch fail; reads counts the calls.
	readErr error
	reads   atomic.Int64
	// efd, when > 0, is the descriptor Fd returns (an eventfd), so that
	// idle workers sleep as with real ports; signal makes inject make it
	// readable (ReadBatch resets it).
	efd      int
	signal   bool
	fdClosed atomic.Bool
	// closing, when set, runs at the start of Close.
	closing func()
}

var _ port.Port = (*fakePort)(nil)

func (p *fakePort) inject(fs ...frame) {
	p.mu.Lock()
	p.in = append(p.in, fs...)
	p.mu.Unlock()
	if p.signal {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		unix.Write(p.efd, one[:])
	}
}

// withEventfd gives p a descriptor that inject signals.
func (p *fakePort) withEventfd(t testing.TB) *fakePort {
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatalf("eventfd: %v", err)
	}
	t.Cleanup(func() {
		if !p.fdClosed.Load() {
			unix.Close(efd)
		}
	})
	p.efd, p.signal = efd, true
	return p
}

func (p *fakePort) ReadBatch(bufs []*packet.Buf) (int, error) {
	p.reads.Add(1)
	if p.signal {
		var b [8]byte
		unix.Read(p.efd, b[:])
	}
	if p.readErr != nil {
		return 0, p.readErr
	}
	if p.closed.Load() {
		p.useAfterClose.Store(true)
		return 0, nil
	}
	if p.replay != nil {
		n := min(len(bufs), len(p.replay))
		for i := 0; i < n; i++ {
			fill(bufs[i], p.replay[i])
		}
		return n, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	n := min(len(bufs), len(p.in))
	for i := 0; i < n; i++ {
		fill(bufs[i], p.in[i])
	}
	p.in = p.in[n:]
	return n, nil
}

func fill(b *packet.Buf, f frame) {
	b.SetLen(copy(b.Space(), f.data))
	b.VNet = f.vnet
	b.Peer = f.peer
}

func (p *fakePort) WriteBatch(bufs []*packet.Buf) (int, int, error) {
	if p.closed.Load() {
		p.useAfterClose.Store(true)
	}
	if p.reject {
		return 0, 0, nil
	}
	if p.count {
		p.written.Add(int64(len(bufs)))
		return len(bufs), 0, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range bufs {
		p.out = append(p.out, frame{data: append([]byte(nil), b.Bytes()...), vnet: b.VNet, peer: b.Peer})
	}
	p.written.Add(int64(len(bufs)))
	return len(bufs), 0, nil
}

// TxRefused reports txRefused, as the TAP and UDP ports report the
// frames their WriteBatch refused.
func (p *fakePort) TxRefused() uint64 { return p.txRefused.Load() }

// take returns and forgets the frames written so far.
func (p *fakePort) take() []frame {
	p.mu.Lock()
	defer p.mu.Unlock()
	o := p.out
	p.out = nil
	return o
}

func (p *fakePort) Fd() int {
	if p.efd > 0 {
		return p.efd
	}
	return -1
}

func (p *fakePort) Close() error {
	if p.closing != nil {
		p.closing()
	}
	p.closed.Store(true)
	if p.signal && !p.fdClosed.Swap(true) {
		// As a real port: its descriptor number may be reused at once.
		unix.Close(p.efd)
	}
	return nil
}

func (p *fakePort) JoinGroup(g netip.Addr) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.groups == nil {
		p.groups = map[netip.Addr]bool{}
	}
	p.groups[g] = true
	return nil
}

func (p *fakePort) LeaveGroup(g netip.Addr) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.groups, g)
	return nil
}

func (p *fakePort) joined(g netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.groups[g]
}

// fakeTrace records captured frames.
type fakeTrace struct {
	mu     sync.Mutex
	frames [][]byte
	count  bool
	n      atomic.Int64
	closed atomic.Bool
}

func (t *fakeTrace) Capture(f []byte, ts int64) bool {
	if t.closed.Load() {
		return false
	}
	t.n.Add(1)
	if t.count {
		return true
	}
	t.mu.Lock()
	t.frames = append(t.frames, append([]byte(nil), f...))
	t.mu.Unlock()
	return true
}

func (t *fakeTrace) Dropped() uint64 { return 0 }
func (t *fakeTrace) Close() error    { t.closed.Store(true); return nil }

// harness is an engine on fake ports.
// fakeVhost is a fake vhost-user port whose guest takes TSO frames when
// tso is set.
type fakeVhost struct {
	fakePort
	fakeCompleter
	tso atomic.Bool
}

// fakeCompleter records the CompleteReads calls of a fake vhost-user
// port: how many, and at each the value check returns (nil: none).
type fakeCompleter struct {
	calls atomic.Int64
	check func() int64
	seen  []int64
}

func (c *fakeCompleter) CompleteReads() {
	c.calls.Add(1)
	if c.check != nil {
		c.seen = append(c.seen, c.check())
	}
}

func (p *fakeVhost) GuestTSO() bool { return p.tso.Load() }

type harness struct {
	t      *testing.T
	e      *Engine
	under  *fakePort
	mu     sync.Mutex
	ports  map[string]*fakePort
	traces map[string]*fakeTrace
	vhosts map[string]*fakeVhost
	// replays, by TAP name, is what the TAP ports opened by that name
	// return at every ReadBatch (set before the port exists: a worker
	// may read it as soon as it is added).
	replays map[string][]frame
}

var (
	vtep4  = netip.MustParseAddr("192.0.2.1")
	remote = netip.MustParseAddr("192.0.2.2")
)

func newHarness(t testing.TB, cfg Config, manual bool) *harness {
	return newHarnessFds(t, cfg, manual, false)
}

// newHarnessFds is newHarness whose ports (TAP and underlay), with fds
// set, have descriptors that inject signals, so that idle workers sleep
// in epoll for as long as nothing comes, as with real ports.
func newHarnessFds(t testing.TB, cfg Config, manual, fds bool) *harness {
	return newHarnessClock(t, cfg, manual, fds, nil)
}

// newHarnessClock is newHarnessFds whose engine reads clock instead of
// time.Now (nil: time.Now).
func newHarnessClock(t testing.TB, cfg Config, manual, fds bool, clock func() time.Time) *harness {
	h := &harness{under: &fakePort{}, ports: map[string]*fakePort{}, traces: map[string]*fakeTrace{}, vhosts: map[string]*fakeVhost{}}
	if fds {
		h.under.withEventfd(t)
	}
	if tt, ok := t.(*testing.T); ok {
		h.t = tt
	}
	if !cfg.VTEP.IsValid() {
		cfg.VTEP = vtep4
	}
	if cfg.UnderlayMTU == 0 {
		cfg.UnderlayMTU = 1500
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	if cfg.PoolSize == 0 {
		cfg.PoolSize = 512
	}
	e, err := newEngine(cfg, hooks{
		manual:       manual,
		clock:        clock,
		openUnderlay: func(*Config) (underlay, error) { return h.under, nil },
		openTAP: func(name string, offload bool) (port.Port, string, error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			p := &fakePort{replay: h.replays[name]}
			if fds {
				p.withEventfd(t)
			}
			h.ports[name] = p
			return p, name, nil
		},
		openVhost: func(path string, offload bool, _ *slog.Logger) (vhostPort, error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			p := &fakeVhost{}
			h.ports[path] = &p.fakePort
			h.vhosts[path] = p
			return p, nil
		},
		openTrace: func(path string) (traceWriter, error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			tr := &fakeTrace{}
			h.traces[path] = tr
			return tr, nil
		},
	})
	if err != nil {
		t.Fatalf("newEngine: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	h.e = e
	if err := e.SetSecurityGroups([]model.SG{openSG()}); err != nil {
		t.Fatalf("SetSecurityGroups: %v", err)
	}
	return h
}

// openSGID is the harness's all-open security group: nicOf puts every
// vNIC in it, so that tests of switching are not filtered (new TCP flows
// still need a SYN).
const openSGID = "open"

func openSG() model.SG {
	var rs []model.Rule
	for _, d := range []model.RuleDirection{model.Inbound, model.Outbound} {
		for _, p := range []string{"0.0.0.0/0", "::/0"} {
			rs = append(rs, model.Rule{Direction: d, Protocol: -1, CIDR: netip.MustParsePrefix(p)})
		}
	}
	return model.SG{ID: openSGID, Rules: rs}
}

func mac(last byte) [6]byte { return [6]byte{0x02, 0, 0, 0, 0, last} }

func nicOf(id string, m [6]byte, vni uint32, ips ...string) model.NIC {
	n := model.NIC{ID: id, MAC: m, VNI: vni, Type: model.NICTap, SecurityGroups: []string{openSGID}}
	for _, s := range ips {
		n.IPs = append(n.IPs, netip.MustParseAddr(s))
	}
	return n
}

// bypassed returns n bypassing filtering, for tests that inject TCP
// segments of a connection whose SYN the firewall never saw (it drops
// them as invalid).
func bypassed(n model.NIC) model.NIC {
	n.Bypass = true
	return n
}

func (h *harness) add(t testing.TB, n model.NIC) *fakePort {
	t.Helper()
	path, err := h.e.AddNIC(n)
	if err != nil {
		t.Fatalf("AddNIC(%s): %v", n.ID, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ports[path]
}

// step runs every worker's loop body a few times (manual engines).
func (h *harness) step() {
	for i := 0; i < 3; i++ {
		for _, w := range h.e.workers {
			w.iterate()
		}
	}
}

// build serializes layers into a frame.
func build(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	for _, l := range ls {
		switch x := l.(type) {
		case *layers.TCP:
			for _, n := range ls {
				if nl, ok := n.(gopacket.NetworkLayer); ok {
					x.SetNetworkLayerForChecksum(nl)
				}
			}
		case *layers.UDP:
			for _, n := range ls {
				if nl, ok := n.(gopacket.NetworkLayer); ok {
					x.SetNetworkLayerForChecksum(nl)
				}
			}
		}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func eth(dst, src [6]byte, typ layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{DstMAC: net.HardwareAddr(dst[:]), SrcMAC: net.HardwareAddr(src[:]), EthernetType: typ}
}

// udp4 builds an IPv4/UDP frame with payload bytes of payload.
func udp4(t testing.TB, dst, src [6]byte, sip, dip string, payload int, df bool) []byte {
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: net.ParseIP(sip).To4(), DstIP: net.ParseIP(dip).To4()}
	if df {
		ip.Flags = layers.IPv4DontFragment
	}
	return build(t, eth(dst, src, layers.EthernetTypeIPv4), ip,
		&layers.UDP{SrcPort: 1000, DstPort: 2000}, gopacket.Payload(make([]byte, payload)))
}

func udp6(t testing.TB, dst, src [6]byte, sip, dip string, payload int) []byte {
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP,
		SrcIP: net.ParseIP(sip), DstIP: net.ParseIP(dip)}
	return build(t, eth(dst, src, layers.EthernetTypeIPv6), ip,
		&layers.UDP{SrcPort: 1000, DstPort: 2000}, gopacket.Payload(make([]byte, payload)))
}

func arp(t testing.TB, src [6]byte, sip, tip string) []byte {
	return build(t, eth(mac(0xff), src, layers.EthernetTypeARP), &layers.ARP{
		AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPRequest,
		SourceHwAddress: src[:], SourceProtAddress: net.ParseIP(sip).To4(),
		DstHwAddress: make([]byte, 6), DstProtAddress: net.ParseIP(tip).To4(),
	})
}

// vxlanFrame builds an underlay datagram payload: VXLAN header + inner.
func vxlanFrame(vni uint32, inner []byte) []byte {
	p := make([]byte, 8+len(inner))
	p[0] = 0x08
	binary.BigEndian.PutUint32(p[4:], vni<<8)
	copy(p[8:], inner)
	return p
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
