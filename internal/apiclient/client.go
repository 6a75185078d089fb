// Package apiclient is the client side of the Butterfly API: a ZeroMQ REQ
// socket (libzmq through github.com/pebbe/zmq4) that sends one
// proto.Messages and waits for its reply, encrypting both ways when a key
// is set. The CLI and the tests use it.
package apiclient

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"
	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/crypto"
)

// DefaultEndpoint is the API endpoint of a default butterflyd: the one it
// binds and the CLI connects to when none is given. Unlike the original's
// daemon (tcp://0.0.0.0:9999) it is on loopback only.
const DefaultEndpoint = "tcp://127.0.0.1:9999"

// DefaultKeyFile is the API key file butterflyd creates and requires when
// no key is configured, and the one the CLI uses when it can read it.
const DefaultKeyFile = "/etc/butterfly/api.key"

// maxReplySize bounds a reply frame (libzmq drops bigger ones).
const maxReplySize = 256 << 20

// ErrClosed is returned by Call after Close, or after a timeout closed the
// socket.
var ErrClosed = errors.New("apiclient: client closed")

// ErrTimeout is wrapped by the error Call returns when the request could
// not be sent or no reply came within Options.Timeout; the client is closed
// afterwards.
var ErrTimeout = errors.New("timeout")

// Options configures a Client.
type Options struct {
	// Key (32 bytes) encrypts every request and decrypts every reply; empty
	// sends clear requests.
	Key []byte
	// Timeout bounds sending a request and receiving its reply; 0 waits
	// forever.
	Timeout time.Duration
}

// Client is a connected REQ socket. Its methods may be called from several
// goroutines; calls are serialized.
type Client struct {
	endpoint string
	key      []byte
	timeout  time.Duration

	mu   sync.Mutex
	zctx *zmq.Context
	sock *zmq.Socket
}

// Dial creates a REQ socket (linger 0, send and receive timeouts from
// opts.Timeout) connected to endpoint; "" means DefaultEndpoint. Like any
// ZeroMQ connect it succeeds before the server is reachable.
func Dial(endpoint string, opts Options) (*Client, error) {
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	if n := len(opts.Key); n != 0 && n != crypto.KeySize {
		return nil, fmt.Errorf("apiclient: key is %d bytes: %w", n, crypto.ErrKeySize)
	}
	zctx, err := zmq.NewContext()
	if err != nil {
		return nil, fmt.Errorf("apiclient: creating ZeroMQ context: %w", err)
	}
	sock, err := zctx.NewSocket(zmq.REQ)
	if err != nil {
		_ = zctx.Term()
		return nil, fmt.Errorf("apiclient: creating REQ socket: %w", err)
	}
	fail := func(what string, err error) (*Client, error) {
		_ = sock.Close()
		_ = zctx.Term()
		return nil, fmt.Errorf("apiclient: %s: %w", what, err)
	}
	if err := sock.SetLinger(0); err != nil {
		return fail("setting linger", err)
	}
	if err := sock.SetMaxmsgsize(maxReplySize); err != nil {
		return fail("setting max message size", err)
	}
	if err := sock.SetIpv6(true); err != nil { // IPv6 endpoints; IPv4 still works
		return fail("enabling IPv6", err)
	}
	if opts.Timeout > 0 {
		if err := sock.SetRcvtimeo(opts.Timeout); err != nil {
			return fail("setting receive timeout", err)
		}
		if err := sock.SetSndtimeo(opts.Timeout); err != nil {
			return fail("setting send timeout", err)
		}
	}
	if err := sock.Connect(endpoint); err != nil {
		return fail("connecting to "+endpoint, err)
	}
	c := &Client{endpoint: endpoint, timeout: opts.Timeout, zctx: zctx, sock: sock}
	if len(opts.Key) != 0 {
		c.key = append([]byte(nil), opts.Key...)
	}
	return c, nil
}

// Call sends req and returns the server's reply. With a key, req is sent
// as Messages{encrypted} and the encrypted reply is opened; an
// Encrypted.error in the reply, or a clear reply to an encrypted request,
// is returned as an error naming the code. On timeout the socket is closed
// (a REQ socket cannot send again before a reply) and the error wraps
// ErrTimeout; later calls return ErrClosed.
func (c *Client) Call(req *protocol.Messages) (*protocol.Messages, error) {
	frame, err := proto.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("apiclient: encoding request: %w", err)
	}
	if len(c.key) != 0 {
		field, err := crypto.Seal(c.key, frame)
		if err != nil {
			return nil, fmt.Errorf("apiclient: encrypting request: %w", err)
		}
		frame, err = proto.Marshal(&protocol.Messages{
			Encrypted: &protocol.Encrypted{Aes256CbcSha512: field},
		})
		if err != nil {
			return nil, fmt.Errorf("apiclient: encoding encrypted request: %w", err)
		}
	}
	raw, err := c.roundTrip(frame)
	if err != nil {
		return nil, err
	}
	var reply protocol.Messages
	if err := proto.Unmarshal(raw, &reply); err != nil {
		return nil, fmt.Errorf("apiclient: decoding response from %s: %w", c.endpoint, err)
	}
	if len(c.key) == 0 {
		if enc := reply.GetEncrypted(); enc != nil {
			if enc.Error != nil {
				return nil, fmt.Errorf("apiclient: encrypted message error: %s", enc.GetError().GetCode())
			}
			return nil, errors.New("apiclient: encrypted reply to a clear request (no key given)")
		}
		return &reply, nil
	}
	enc := reply.GetEncrypted()
	if enc == nil {
		return nil, fmt.Errorf("apiclient: server answered an encrypted request in clear (is a key configured on the server?): %s",
			describeErrors(&reply))
	}
	if enc.Error != nil {
		return nil, fmt.Errorf("apiclient: encrypted message error: %s", enc.GetError().GetCode())
	}
	plain, err := crypto.Open(c.key, enc.GetAes256CbcSha512())
	if err != nil {
		return nil, fmt.Errorf("apiclient: decrypting response (wrong key?): %w", err)
	}
	var inner protocol.Messages
	if err := proto.Unmarshal(plain, &inner); err != nil {
		return nil, fmt.Errorf("apiclient: decoding decrypted response: %w", err)
	}
	return &inner, nil
}

// describeErrors lists the envelope error codes of a clear reply.
func describeErrors(m *protocol.Messages) string {
	var codes []string
	for _, msg := range m.GetMessages() {
		if msg.Error != nil {
			codes = append(codes, msg.GetError().GetCode().String())
		}
	}
	if len(codes) == 0 {
		return "no error code"
	}
	return strings.Join(codes, ", ")
}

// roundTrip sends one frame and receives one frame.
func (c *Client) roundTrip(frame []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sock == nil {
		return nil, ErrClosed
	}
	if _, err := c.sock.SendBytes(frame, 0); err != nil {
		if isErrno(err, syscall.EAGAIN) {
			c.closeLocked()
			return nil, fmt.Errorf("apiclient: send %w: could not queue the request to %s within %v", ErrTimeout, c.endpoint, c.timeout)
		}
		return nil, fmt.Errorf("apiclient: sending request to %s: %w", c.endpoint, err)
	}
	raw, err := c.sock.RecvBytes(0)
	if err != nil {
		c.closeLocked()
		if isErrno(err, syscall.EAGAIN) {
			return nil, fmt.Errorf("apiclient: receive %w: no reply from %s within %v", ErrTimeout, c.endpoint, c.timeout)
		}
		return nil, fmt.Errorf("apiclient: receiving response from %s: %w", c.endpoint, err)
	}
	return raw, nil
}

// Close releases the socket. It is safe to call more than once.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeLocked()
}

func (c *Client) closeLocked() error {
	if c.sock == nil {
		return nil
	}
	var errs []error
	if err := c.sock.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing socket: %w", err))
	}
	if err := c.zctx.Term(); err != nil {
		errs = append(errs, fmt.Errorf("terminating ZeroMQ context: %w", err))
	}
	c.sock, c.zctx = nil, nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("apiclient: close: %w", err)
	}
	return nil
}

// isErrno reports whether a zmq4 error is the given system error number.
func isErrno(err error, n syscall.Errno) bool {
	return zmq.AsErrno(err) == zmq.Errno(n)
}
