package labtest

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/apiclient"
)

// API is a Go client of a daemon's MessageV0 API, for callers that send
// many requests (the CLI costs a process per request).
type API struct {
	c *apiclient.Client
}

// DialAPI connects to the API at endpoint; every request waits at most
// timeout for its answer.
func DialAPI(endpoint string, timeout time.Duration) (*API, error) {
	c, err := apiclient.Dial(endpoint, apiclient.Options{Timeout: timeout})
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", endpoint, err)
	}
	return &API{c: c}, nil
}

// Close closes the connection.
func (a *API) Close() error { return a.c.Close() }

// Call sends one MessageV0 request and returns its response, or an error
// if it could not be sent or the daemon refused it.
func (a *API) Call(req *protocol.MessageV0_Request) (*protocol.MessageV0_Response, error) {
	resp, err := a.c.Call(&protocol.Messages{Messages: []*protocol.Message{{
		Revision:  proto.Uint32(protocol.Revision),
		Message_0: &protocol.MessageV0{Request: req},
	}}})
	if err != nil {
		return nil, err
	}
	if len(resp.GetMessages()) != 1 {
		return nil, fmt.Errorf("%d messages in reply, want 1", len(resp.GetMessages()))
	}
	r := resp.GetMessages()[0].GetMessage_0().GetResponse()
	if st := r.GetStatus(); !st.GetStatus() {
		return nil, fmt.Errorf("refused: %s", st.GetError().GetDescription())
	}
	return r, nil
}

// API dials this host's daemon; the connection is closed at cleanup.
func (h *Host) API() *API {
	h.Lab.T.Helper()
	a, err := DialAPI(h.Endpoint, 60*time.Second)
	if err != nil {
		h.Lab.T.Fatal(err)
	}
	h.Lab.T.Cleanup(func() { a.Close() })
	return a
}

// RoundTrips sends n sg_member_list requests for group sg, one at a time,
// and returns the time they took: the API's round trip with next to no
// work in the daemon, the floor under a series of n changes.
func (a *API) RoundTrips(n int, sg string) (time.Duration, error) {
	req := &protocol.MessageV0_Request{SgMemberList: proto.String(sg)}
	start := time.Now()
	for i := range n {
		if _, err := a.Call(req); err != nil {
			return 0, fmt.Errorf("sg_member_list %d of %d: %w", i+1, n, err)
		}
	}
	return time.Since(start), nil
}
