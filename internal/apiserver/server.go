// Package apiserver serves the Butterfly API: a ZeroMQ REP socket (libzmq
// through github.com/pebbe/zmq4) that receives serialized proto.Messages
// frames, applies the envelope rules of the original protocol (revision,
// errors, optional encryption, see Process) and hands each MessageV0
// request to a Handler.
//
// One goroutine owns the socket: the one running Serve (Close waits for
// Serve to return before it touches the socket). Requests are served one
// at a time, in arrival order, with no artificial delay. Between requests
// Serve waits in the Go runtime's poller, on the descriptor libzmq
// signals (ZMQ_FD), never inside libzmq: a goroutine blocked in a cgo
// call holds an OS thread in what the runtime counts as a system call,
// and the runtime's monitor thread then keeps taking its processor back
// and polling every 20 µs (about 1,650 wake-ups a second on the CPUs the
// daemon shares with VMs, while a packet worker is busy). Each Server has
// its own ZeroMQ context, which retries calls interrupted by the Go
// runtime's preemption signals (EINTR, see the zmq4 README); Serve also
// treats an interrupted receive as a spurious wake-up.
//
// Robustness against peers: frames over Config.MaxMessageSize make libzmq
// drop that peer's connection; peers that connect and stay silent, or
// speak garbage, cost nothing but their connection; a multipart request
// gets a PARSE_ERROR reply.
package apiserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"
	"golang.org/x/sys/unix"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/crypto"
)

// DefaultMaxMessageSize bounds the size of one request frame. libzmq
// drops the connection of a peer that sends a bigger one; other peers are
// not affected.
const DefaultMaxMessageSize = 64 << 20

const (
	// sendTimeout bounds a reply send (REP never blocks in practice: it
	// drops replies to vanished peers).
	sendTimeout = time.Second
	// recvHWM is the per-peer queue of received requests. A REQ peer has
	// at most one request in flight; the small bound limits the memory a
	// pipelining hostile peer can pin (recvHWM * max message size).
	recvHWM = 8
	// closeLinger lets the reply sent just before Close (app_quit) reach
	// its peer, without waiting long for a peer that reads nothing.
	closeLinger = 500 * time.Millisecond
)

// ErrClosed is returned by Serve when the server has been closed.
var ErrClosed = errors.New("apiserver: server closed")

// Handler answers MessageV0 requests. Handle must return a non-nil answer
// with response.status set and the request's message_id copied; a nil or
// incomplete answer, or a panic, becomes an INTERNAL_ERROR Message.
type Handler interface {
	Handle(req *protocol.MessageV0) *protocol.MessageV0
}

// HandlerFunc adapts a function to the Handler interface.
type HandlerFunc func(req *protocol.MessageV0) *protocol.MessageV0

// Handle calls f(req).
func (f HandlerFunc) Handle(req *protocol.MessageV0) *protocol.MessageV0 { return f(req) }

// Config configures a Server.
type Config struct {
	// Endpoint is the ZeroMQ bind endpoint (tcp://, ipc://, ...); it must
	// be set (the daemon's default is apiclient.DefaultEndpoint). A tcp port of "*" picks a free port (see
	// Server.Endpoint).
	Endpoint string
	// Key, when set (32 bytes), makes the server accept only encrypted
	// requests. Empty means clear requests only.
	Key []byte
	// Logger receives request errors (and requests at debug level); nil
	// means slog.Default().
	Logger *slog.Logger
	// MaxMessageSize bounds request frames in bytes; 0 means
	// DefaultMaxMessageSize.
	MaxMessageSize int64
}

// Server is a bound API endpoint. Create it with New, run Serve, then
// Close.
type Server struct {
	h        Handler
	key      []byte
	log      *slog.Logger
	requests atomic.Uint64

	stopOnce sync.Once
	stop     chan struct{} // closed by Close

	mu   sync.Mutex // guards the fields below; hands the socket over
	zctx *zmq.Context
	sock *zmq.Socket
	// events is a duplicate of the socket's ZMQ_FD in the runtime's
	// poller, readable when libzmq signals a change of the socket's
	// state (see waitRequest); eventsRC is its raw connection.
	events   *os.File
	eventsRC syscall.RawConn
	endpoint string
	serving  bool
	done     chan struct{} // closed when the running Serve returns
	closed   bool
}

// newServer builds a Server without a socket (Process only).
func newServer(cfg Config, h Handler) (*Server, error) {
	if h == nil {
		return nil, errors.New("apiserver: nil handler")
	}
	if n := len(cfg.Key); n != 0 && n != crypto.KeySize {
		return nil, fmt.Errorf("apiserver: key is %d bytes: %w", n, crypto.ErrKeySize)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{h: h, log: log, stop: make(chan struct{})}
	if len(cfg.Key) != 0 {
		s.key = append([]byte(nil), cfg.Key...)
	}
	return s, nil
}

// New creates a REP socket (linger 0, bounded message size) bound to
// cfg.Endpoint, with its own ZeroMQ context.
func New(cfg Config, h Handler) (*Server, error) {
	s, err := newServer(cfg, h)
	if err != nil {
		return nil, err
	}
	endpoint := cfg.Endpoint
	if endpoint == "" {
		return nil, errors.New("apiserver: no endpoint to bind")
	}
	maxSize := cfg.MaxMessageSize
	if maxSize <= 0 {
		maxSize = DefaultMaxMessageSize
	}
	zctx, err := zmq.NewContext()
	if err != nil {
		return nil, fmt.Errorf("apiserver: creating ZeroMQ context: %w", err)
	}
	sock, err := zctx.NewSocket(zmq.REP)
	if err != nil {
		_ = zctx.Term()
		return nil, fmt.Errorf("apiserver: creating REP socket: %w", err)
	}
	fail := func(what string, err error) (*Server, error) {
		_ = sock.Close()
		_ = zctx.Term()
		return nil, fmt.Errorf("apiserver: %s: %w", what, err)
	}
	if err := sock.SetLinger(0); err != nil {
		return fail("setting linger", err)
	}
	if err := sock.SetMaxmsgsize(maxSize); err != nil {
		return fail("setting max message size", err)
	}
	if err := sock.SetIpv6(true); err != nil { // IPv6 endpoints; IPv4 still works
		return fail("enabling IPv6", err)
	}
	if err := sock.SetRcvhwm(recvHWM); err != nil {
		return fail("setting receive high-water mark", err)
	}
	if err := sock.SetSndtimeo(sendTimeout); err != nil {
		return fail("setting send timeout", err)
	}
	if err := sock.Bind(endpoint); err != nil {
		return fail("binding "+endpoint, err)
	}
	events, rc, err := pollableEvents(sock)
	if err != nil {
		return fail("watching the socket", err)
	}
	bound, err := sock.GetLastEndpoint()
	if err != nil {
		bound = endpoint
	}
	bound = unmapEndpoint(bound)
	s.zctx, s.sock, s.endpoint = zctx, sock, bound
	s.events, s.eventsRC = events, rc
	return s, nil
}

// pollableEvents returns a duplicate of sock's ZMQ_FD registered with the
// Go runtime's poller, and its raw connection. libzmq keeps that
// descriptor non-blocking; a duplicate shares its readiness, and closing
// it leaves libzmq's own untouched.
func pollableEvents(sock *zmq.Socket) (*os.File, syscall.RawConn, error) {
	fd, err := sock.GetFd()
	if err != nil {
		return nil, nil, fmt.Errorf("reading ZMQ_FD: %w", err)
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("duplicating ZMQ_FD: %w", err)
	}
	if err := unix.SetNonblock(dup, true); err != nil {
		unix.Close(dup)
		return nil, nil, fmt.Errorf("ZMQ_FD: %w", err)
	}
	f := os.NewFile(uintptr(dup), "zmq-events")
	// Only a descriptor in the poller takes a deadline.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("ZMQ_FD is not pollable: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("ZMQ_FD: %w", err)
	}
	return f, rc, nil
}

// Endpoint returns the endpoint the socket is bound to, with the actual
// port when the configured one was "*".
func (s *Server) Endpoint() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.endpoint
}

// Requests returns the number of request frames processed so far (an
// encrypted request counts once).
func (s *Server) Requests() uint64 { return s.requests.Load() }

// Serve receives requests and sends replies until ctx is done or Close is
// called, then returns nil. The reply to a request already received is
// sent before Serve returns. Serve returns an error if the server was
// closed, is already serving, or the socket fails.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return ErrClosed
	case s.sock == nil:
		s.mu.Unlock()
		return errors.New("apiserver: server has no socket")
	case s.serving:
		s.mu.Unlock()
		return errors.New("apiserver: already serving")
	}
	// Clear the wake-up of an earlier Serve's context (see wake); Close
	// is seen through s.stop before any wait.
	if err := s.events.SetReadDeadline(time.Time{}); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("apiserver: %w", err)
	}
	s.serving = true
	s.done = make(chan struct{})
	sock := s.sock
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.serving = false
		close(s.done)
		s.mu.Unlock()
	}()
	defer context.AfterFunc(ctx, s.wake)()

	s.log.Info("api: serving", "endpoint", s.Endpoint(), "encrypted", len(s.key) != 0)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.stop:
			return nil
		default:
		}
		if err := s.serveOne(sock); err != nil {
			return err
		}
	}
}

// serveOne receives one request (all its frames) and sends its reply, or
// waits until one may have arrived or Serve must stop. Only an unusable
// socket is an error; a bad request gets an error reply.
func (s *Server) serveOne(sock *zmq.Socket) error {
	frame, err := sock.RecvBytes(zmq.DONTWAIT)
	if err != nil {
		if isErrno(err, syscall.EAGAIN) {
			return s.waitRequest(sock)
		}
		if isErrno(err, syscall.EINTR) {
			return nil
		}
		return fmt.Errorf("apiserver: receiving request: %w", err)
	}
	frames := 1
	for {
		more, err := sock.GetRcvmore()
		if err != nil {
			return fmt.Errorf("apiserver: reading request frames: %w", err)
		}
		if !more {
			break
		}
		// The parts of a message arrive together: drain and drop them.
		if _, err := sock.RecvBytes(zmq.DONTWAIT); err != nil {
			return fmt.Errorf("apiserver: draining multipart request: %w", err)
		}
		frames++
	}
	var reply []byte
	if frames > 1 {
		s.requests.Add(1)
		s.log.Warn("api: multipart request rejected", "frames", frames)
		reply = marshalReply(envelopeError(protocol.Error_PARSE_ERROR))
	} else {
		reply = s.Process(frame)
	}
	if _, err := sock.SendBytes(reply, 0); err != nil {
		// The peer is gone or too slow; the next request is unaffected.
		s.log.Warn("api: sending reply", "bytes", len(reply), "err", err)
	}
	return nil
}

// waitRequest returns when sock has a request to receive, or when Serve
// must stop (wake: a deadline in the past). It parks the goroutine in the
// runtime's poller until libzmq signals the socket's descriptor; that
// signal only says the state may have changed, and libzmq may take it
// while serving any call on the socket, so ZMQ_EVENTS is read again
// before each wait (after the poller has been armed: no signal is missed
// in between).
func (s *Server) waitRequest(sock *zmq.Socket) error {
	var evErr error
	err := s.eventsRC.Read(func(uintptr) bool {
		ev, err := sock.GetEvents()
		if err != nil && !isErrno(err, syscall.EINTR) {
			evErr = err
			return true
		}
		return ev&zmq.POLLIN != 0
	})
	if evErr != nil {
		return fmt.Errorf("apiserver: reading socket events: %w", evErr)
	}
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("apiserver: waiting for requests: %w", err)
	}
	return nil
}

// wake makes a waiting Serve, and any later wait, return (a deadline in
// the past stays set), so that Serve sees its context or Close.
func (s *Server) wake() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.events != nil {
		_ = s.events.SetReadDeadline(time.Unix(1, 0))
	}
}

// Close stops Serve (waiting for the reply in flight) and releases the
// socket and its context. It is safe to call more than once and from any
// goroutine.
func (s *Server) Close() error {
	s.stopOnce.Do(func() {
		close(s.stop)
		s.wake()
	})
	s.mu.Lock()
	for s.serving {
		done := s.done
		s.mu.Unlock()
		<-done
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.sock == nil {
		return nil
	}
	var errs []error
	if err := s.events.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing the socket's descriptor: %w", err))
	}
	// Give the last reply (app_quit) a moment to leave.
	if err := s.sock.SetLinger(closeLinger); err != nil {
		errs = append(errs, fmt.Errorf("setting linger: %w", err))
	}
	if err := s.sock.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing socket: %w", err))
	}
	if err := s.zctx.Term(); err != nil {
		errs = append(errs, fmt.Errorf("terminating ZeroMQ context: %w", err))
	}
	s.sock, s.zctx, s.events, s.eventsRC = nil, nil, nil, nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("apiserver: close: %w", err)
	}
	return nil
}

// isErrno reports whether a zmq4 error is the given system error number
// (zmq4 reports them as zmq4.Errno, which errors.Is does not match).
func isErrno(err error, n syscall.Errno) bool {
	return zmq.AsErrno(err) == zmq.Errno(n)
}

// unmapEndpoint rewrites "tcp://[::ffff:a.b.c.d]:port", which libzmq
// reports for an IPv4 bind on an IPv6-enabled socket, as
// "tcp://a.b.c.d:port".
func unmapEndpoint(endpoint string) string {
	rest, ok := strings.CutPrefix(endpoint, "tcp://[")
	if !ok {
		return endpoint
	}
	host, port, ok := strings.Cut(rest, "]:")
	if !ok {
		return endpoint
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.Is4In6() {
		return endpoint
	}
	return "tcp://" + ip.Unmap().String() + ":" + port
}
