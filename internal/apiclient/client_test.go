package apiclient_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/apiclient"
	"github.com/butterfly-go/butterfly/internal/apiserver"
	"github.com/butterfly-go/butterfly/internal/crypto"
)

func key(b byte) []byte {
	k := make([]byte, crypto.KeySize)
	for i := range k {
		k[i] = b ^ byte(i)
	}
	return k
}

// echo answers with the request's message_id and status true.
func echo(req *protocol.MessageV0) *protocol.MessageV0 {
	return &protocol.MessageV0{
		MessageId: req.MessageId,
		Response:  &protocol.MessageV0_Response{Status: &protocol.MessageV0_Status{Status: proto.Bool(true)}},
	}
}

// server binds on a free loopback port; serve=false leaves it bound but
// never answering.
func server(t *testing.T, key []byte, serve bool) string {
	t.Helper()
	s, err := apiserver.New(apiserver.Config{
		Endpoint: "tcp://127.0.0.1:*", Key: key,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, apiserver.HandlerFunc(echo))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	if serve {
		go func() { done <- s.Serve(ctx) }()
	} else {
		done <- nil
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		_ = s.Close()
	})
	return s.Endpoint()
}

func request(id string) *protocol.Messages {
	return &protocol.Messages{Messages: []*protocol.Message{{
		Revision:  proto.Uint32(protocol.Revision),
		Message_0: &protocol.MessageV0{MessageId: proto.String(id), Request: &protocol.MessageV0_Request{NicList: proto.Bool(true)}},
	}}}
}

func TestCall(t *testing.T) {
	k, other := key(1), key(2)
	tests := []struct {
		name       string
		serverKey  []byte
		clientKey  []byte
		wantErr    string // substring; "" = success
		wantEnvErr protocol.Error_Code
	}{
		{name: "clear", wantEnvErr: -1},
		{name: "encrypted", serverKey: k, clientKey: k, wantEnvErr: -1},
		{name: "wrong key", serverKey: k, clientKey: other, wantErr: "encrypted message error: REJECTED"},
		{name: "server has no key", clientKey: k, wantErr: "answered an encrypted request in clear"},
		{name: "client has no key", serverKey: k, wantEnvErr: protocol.Error_REJECTED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := apiclient.Dial(server(t, tt.serverKey, true), apiclient.Options{Key: tt.clientKey, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for i := range 3 { // the socket stays usable after each reply
				res, err := c.Call(request(fmt.Sprint("id", i)))
				if tt.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
						t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if len(res.GetMessages()) != 1 {
					t.Fatalf("%d reply messages", len(res.GetMessages()))
				}
				m := res.Messages[0]
				if tt.wantEnvErr >= 0 {
					if m.GetError().GetCode() != tt.wantEnvErr || m.Error == nil {
						t.Fatalf("reply %v, want envelope error %v", m, tt.wantEnvErr)
					}
					continue
				}
				if m.Error != nil || m.GetMessage_0().GetMessageId() != fmt.Sprint("id", i) {
					t.Fatalf("reply %v", m)
				}
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	endpoint := server(t, nil, false) // bound, never answers
	c, err := apiclient.Dial(endpoint, apiclient.Options{Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = c.Call(request("x"))
	if !errors.Is(err, apiclient.ErrTimeout) || !strings.Contains(err.Error(), "receive timeout") {
		t.Fatalf("err = %v, want a receive timeout", err)
	}
	// libzmq measures the timeout on its own millisecond clock, so the
	// call may return a little before 200 ms by ours.
	if d := time.Since(start); d < 150*time.Millisecond || d > 3*time.Second {
		t.Errorf("timed out after %v, want about 200ms", d)
	}
	if _, err := c.Call(request("y")); !errors.Is(err, apiclient.ErrClosed) {
		t.Fatalf("call after timeout: %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestNoServerTimeout(t *testing.T) {
	// Nothing listens on port 1 of loopback: the request is queued and no
	// reply ever comes.
	c, err := apiclient.Dial("tcp://127.0.0.1:1", apiclient.Options{Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Call(request("x")); !errors.Is(err, apiclient.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
}

func TestDialErrors(t *testing.T) {
	if _, err := apiclient.Dial("tcp://127.0.0.1:9", apiclient.Options{Key: make([]byte, 10)}); !errors.Is(err, crypto.ErrKeySize) {
		t.Fatalf("short key: %v", err)
	}
	if _, err := apiclient.Dial("nonsense", apiclient.Options{}); err == nil {
		t.Fatal("bad endpoint accepted")
	}
}

func TestCallAfterClose(t *testing.T) {
	c, err := apiclient.Dial(server(t, nil, true), apiclient.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := c.Call(request("x")); !errors.Is(err, apiclient.ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
}

func TestCallRejectsIncompleteRequest(t *testing.T) {
	c, err := apiclient.Dial(server(t, nil, true), apiclient.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bad := &protocol.Messages{Messages: []*protocol.Message{{}}} // no revision
	if _, err := c.Call(bad); err == nil || !strings.Contains(err.Error(), "encoding request") {
		t.Fatalf("err = %v, want an encoding error", err)
	}
	// Nothing was sent: the socket is still usable.
	if _, err := c.Call(request("ok")); err != nil {
		t.Fatal(err)
	}
}
