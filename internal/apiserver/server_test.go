package apiserver

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/apiclient"
)

func dial(t testing.TB, endpoint string, opts apiclient.Options) *apiclient.Client {
	t.Helper()
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Second
	}
	c, err := apiclient.Dial(endpoint, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestServeStops(t *testing.T) {
	for _, how := range []string{"context", "close"} {
		t.Run(how, func(t *testing.T) {
			s, err := New(Config{Endpoint: "tcp://127.0.0.1:*", Logger: quietLogger()}, echoHandler())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- s.Serve(ctx) }()
			// Serving before the stop request.
			c := dial(t, s.Endpoint(), apiclient.Options{})
			if _, err := c.Call(msgs(v0("x", nicList()))); err != nil {
				t.Fatal(err)
			}
			if err := s.Serve(ctx); err == nil || errors.Is(err, ErrClosed) {
				t.Fatalf("second Serve: %v, want an 'already serving' error", err)
			}
			start := time.Now()
			if how == "context" {
				cancel()
			} else if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-errc:
				if err != nil {
					t.Fatalf("Serve: %v", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("Serve still running 2 s after the stop request")
			}
			t.Logf("Serve returned %v after the stop request", time.Since(start))
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if err := s.Serve(context.Background()); !errors.Is(err, ErrClosed) {
				t.Fatalf("Serve after Close: %v, want ErrClosed", err)
			}
		})
	}
}

// TestQuitReplyDelivered plays app_quit: the handler cancels Serve's
// context; the reply (made big, so that it takes a while to leave) must
// still reach the client before Close drops the socket.
func TestQuitReplyDelivered(t *testing.T) {
	big := make([]string, 1<<15)
	for i := range big {
		big[i] = fmt.Sprintf("vnic-%0120d", i)
	}
	for i := range 5 {
		ctx, cancel := context.WithCancel(context.Background())
		h := HandlerFunc(func(req *protocol.MessageV0) *protocol.MessageV0 {
			cancel()
			res := echoHandler().Handle(req)
			res.Response.NicList = big
			return res
		})
		s, err := New(Config{Endpoint: "tcp://127.0.0.1:*", Logger: quietLogger()}, h)
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			err := s.Serve(ctx)
			if cerr := s.Close(); err == nil {
				err = cerr
			}
			errc <- err
		}()
		c := dial(t, s.Endpoint(), apiclient.Options{Timeout: 3 * time.Second})
		res, err := c.Call(msgs(v0(fmt.Sprint("quit", i), &protocol.MessageV0_Request{AppQuit: proto.Bool(true)})))
		if err != nil {
			t.Fatalf("round %d: quit reply lost: %v", i, err)
		}
		if got := res.GetMessages()[0].GetMessage_0(); got.GetMessageId() != fmt.Sprint("quit", i) ||
			len(got.GetResponse().GetNicList()) != len(big) {
			t.Fatalf("round %d: reply id %q with %d names", i, got.GetMessageId(), len(got.GetResponse().GetNicList()))
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
	}
}

// TestOneRequestAtATime checks that the handler never runs twice at once
// and sees every request, with many Go clients in parallel.
func TestOneRequestAtATime(t *testing.T) {
	var inFlight, maxInFlight, calls atomic.Int64
	h := HandlerFunc(func(req *protocol.MessageV0) *protocol.MessageV0 {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		if n > maxInFlight.Load() {
			maxInFlight.Store(n)
		}
		calls.Add(1)
		return echoHandler().Handle(req)
	})
	s := startServer(t, Config{}, h)
	const clients, per = 20, 20
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Go(func() {
			c, err := apiclient.Dial(s.Endpoint(), apiclient.Options{Timeout: 10 * time.Second})
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for j := range per {
				id := fmt.Sprintf("g%d-%d", i, j)
				res, err := c.Call(msgs(v0(id, sgList())))
				if err != nil {
					errs <- err
					return
				}
				if got := res.GetMessages()[0].GetMessage_0().GetMessageId(); got != id {
					errs <- fmt.Errorf("reply id %q, want %q", got, id)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if calls.Load() != clients*per || maxInFlight.Load() != 1 {
		t.Fatalf("handler calls %d (want %d), max in flight %d (want 1)", calls.Load(), clients*per, maxInFlight.Load())
	}
}

func TestEndpoint(t *testing.T) {
	s := startServer(t, Config{Endpoint: "tcp://127.0.0.1:*"}, nil)
	host, port, ok := strings.Cut(strings.TrimPrefix(s.Endpoint(), "tcp://"), ":")
	if !ok || host != "127.0.0.1" || port == "*" || port == "" {
		t.Fatalf("Endpoint() = %q, want tcp://127.0.0.1:<port>", s.Endpoint())
	}
	for in, want := range map[string]string{
		"tcp://[::ffff:127.0.0.1]:5":  "tcp://127.0.0.1:5",
		"tcp://[::1]:5":               "tcp://[::1]:5",
		"tcp://127.0.0.1:5":           "tcp://127.0.0.1:5",
		"ipc:///tmp/x":                "ipc:///tmp/x",
		"tcp://[::ffff:10.0.0.1]:999": "tcp://10.0.0.1:999",
	} {
		if got := unmapEndpoint(in); got != want {
			t.Errorf("unmapEndpoint(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestGoClientEncrypted(t *testing.T) {
	key := testKey()
	s := startServer(t, Config{Key: key}, nil)
	c := dial(t, s.Endpoint(), apiclient.Options{Key: key})
	res, err := c.Call(threeRequests())
	if err != nil {
		t.Fatal(err)
	}
	checkEqual(t, res, msgs(echoed("a", "nic_list"), errMsg(protocol.Error_VERSION_NOT_MANAGED), echoed("c", "sg_list")))
	if got := s.Requests(); got != 1 {
		t.Fatalf("Requests() = %d, want 1", got)
	}
}

// TestNoEndpoint: the server has no default endpoint of its own (the
// daemon's is apiclient.DefaultEndpoint); an empty one is an error.
func TestNoEndpoint(t *testing.T) {
	s, err := New(Config{}, HandlerFunc(func(req *protocol.MessageV0) *protocol.MessageV0 { return req }))
	if err == nil {
		s.Close()
		t.Fatal("New without an endpoint succeeded")
	}
}

// TestServeWaitsOutsideLibzmq checks that a Serve waiting for requests
// parks in the Go runtime's poller rather than in a call into libzmq: a
// goroutine in a cgo call is in the "syscall" state, holds an OS thread,
// and keeps the runtime's monitor thread polling. Only Serve's own
// goroutine is looked at: others of the test process (a child's wait,
// another test's leftovers) may be in system calls of their own.
func TestServeWaitsOutsideLibzmq(t *testing.T) {
	s := startServer(t, Config{}, nil)
	c := dial(t, s.Endpoint(), apiclient.Options{})
	if _, err := c.Call(msgs(v0("x", nicList()))); err != nil {
		t.Fatal(err)
	}
	// The reply is out: Serve is waiting for the next request.
	const n = 200
	inSyscall := 0
	var last string
	for range n {
		state, stack, ok := serveGoroutine()
		if !ok {
			t.Fatal("no goroutine runs (*Server).Serve")
		}
		if strings.HasPrefix(state, "syscall") {
			inSyscall++
			last = stack
		}
		runtime.Gosched()
	}
	if inSyscall > n/2 {
		t.Errorf("Serve's goroutine was in a system call or cgo call in %d of %d samples while it waited:\n%s", inSyscall, n, last)
	}
	// Still serving after the wait.
	if _, err := c.Call(msgs(v0("y", nicList()))); err != nil {
		t.Fatal(err)
	}
}

// serveGoroutine returns the scheduling state ("IO wait", "syscall", ...)
// and the stack of the goroutine running (*Server).Serve.
func serveGoroutine() (state, stack string, ok bool) {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if !strings.Contains(g, "apiserver.(*Server).Serve(") {
			continue
		}
		// "goroutine 7 [IO wait]:" or "goroutine 7 [syscall, 2 minutes, locked to thread]:"
		head, _, _ := strings.Cut(g, "\n")
		_, state, _ = strings.Cut(head, "[")
		state, _, _ = strings.Cut(state, "]")
		return state, g, true
	}
	return "", "", false
}
