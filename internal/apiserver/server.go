// Package apiserver serves the Butterfly API: a ZeroMQ REP socket (libzmq
// through github.com/pebbe/zmq4) that receives serialized proto.Messages
// frames, applies the envelope rules of the original protocol (revision,
// errors, optional encryption, see Process) and hands each MessageV0
// request to a Handler.
//
// One goroutine owns the socket: the one running Serve (Close waits for
// Serve to return before it touches the socket). Requests are served one
// at a time, in arrival order, with no artificial delay. Each Server has
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
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/crypto"
)

// DefaultMaxMessageSize bounds the size of one request frame. libzmq
// drops the connection of a peer that sends a bigger one; other peers are
// not affected.
const DefaultMaxMessageSize = 64 << 20

const (
	// pollInterval bounds how long Serve takes to notice a cancelled
	// context (the socket's receive timeout). It adds no latency to
	// requests: the receive returns as soon as one arrives.
	pollInterval = 50 * time.Millisecond
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

	mu       sync.Mutex // guards the fields below; hands the socket over
	zctx     *zmq.Context
	sock     *zmq.Socket
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
	if err := sock.SetRcvtimeo(pollInterval); err != nil {
		return fail("setting receive timeout", err)
	}
	if err := sock.Bind(endpoint); err != nil {
		return fail("binding "+endpoint, err)
	}
	bound, err := sock.GetLastEndpoint()
	if err != nil {
		bound = endpoint
	}
	bound = unmapEndpoint(bound)
	s.zctx, s.sock, s.endpoint = zctx, sock, bound
	return s, nil
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

	// The receive itself waits, for up to pollInterval (the socket's
	// receive timeout): one call into libzmq per request, where a poll
	// then a receive made two.
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

// serveOne receives one request (all its frames) and sends its reply.
// Only an unusable socket is an error; a bad request gets an error reply.
func (s *Server) serveOne(sock *zmq.Socket) error {
	frame, err := sock.RecvBytes(0)
	if err != nil {
		if isErrno(err, syscall.EAGAIN) || isErrno(err, syscall.EINTR) {
			return nil // no request within pollInterval, or interrupted
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

// Close stops Serve (waiting for the reply in flight) and releases the
// socket and its context. It is safe to call more than once and from any
// goroutine.
func (s *Server) Close() error {
	s.stopOnce.Do(func() { close(s.stop) })
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
	s.sock, s.zctx = nil, nil
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
