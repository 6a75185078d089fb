package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/apiclient"
	"github.com/butterfly-go/butterfly/internal/crypto"
)

const verboseRule = "#########################"

// session holds the connection shared by the commands of one command line.
type session struct {
	g              globals
	stdout, stderr io.Writer

	key []byte
	// defaultKey is set when key comes from the default key file.
	defaultKey bool
	client     *apiclient.Client
	loaded     bool
}

func newSession(g globals, stdout, stderr io.Writer) *session {
	return &session{g: g, stdout: stdout, stderr: stderr}
}

func (s *session) close() {
	if s.client != nil {
		_ = s.client.Close()
	}
}

// connect dials the endpoint on first use.
func (s *session) connect() (*apiclient.Client, error) {
	if s.client != nil {
		return s.client, nil
	}
	if !s.loaded {
		s.loaded = true
		s.loadKey()
	}
	c, err := apiclient.Dial(s.g.endpoint, apiclient.Options{
		Key:     s.key,
		Timeout: time.Duration(s.g.timeoutMS) * time.Millisecond,
	})
	if err != nil {
		return nil, fmt.Errorf("error: connect to %s: %w", s.g.endpoint, err)
	}
	s.client = c
	return c, nil
}

// loadKey picks the encryption key: -k FILE (a file that cannot be loaded
// is reported and requests go in clear, as with the original client), none
// with -k none, else the default key file when it can be read (silently in
// clear when it does not exist or is not readable: a daemon with a key
// then refuses the request, see keyHint).
func (s *session) loadKey() {
	switch path := s.g.keyPath; {
	case path == "none":
	case path != "":
		key, err := crypto.LoadKeyFile(path)
		if err != nil {
			fmt.Fprintf(s.stderr, "cannot load encryption key: %v\n", err)
			return
		}
		s.key = key
	case s.g.defaultKeyFile != "":
		key, err := crypto.LoadKeyFile(s.g.defaultKeyFile)
		switch {
		case err == nil:
			s.key, s.defaultKey = key, true
		case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, fs.ErrPermission):
			fmt.Fprintf(s.stderr, "cannot load encryption key: %v\n", err)
		}
	}
}

// keyHint explains a clear request refused as a whole (REJECTED): the
// daemon has a key.
func (s *session) keyHint(res *protocol.Messages) string {
	msgs := res.GetMessages()
	if s.key != nil || len(msgs) != 1 || msgs[0].GetError().GetCode() != protocol.Error_REJECTED {
		return ""
	}
	return fmt.Sprintf("\n(the daemon requires its API key: give it with -k FILE; "+
		"butterflyd creates %s, readable by root only, when started without -k)", s.g.defaultKeyFileOrDefault())
}

// send sends req and checks the reply the way the original client does.
// With toStdout (and without -v) the reply is printed in text format.
func (s *session) send(req *protocol.Messages, toStdout bool) (*protocol.Messages, error) {
	c, err := s.connect()
	if err != nil {
		return nil, err
	}
	if s.g.verbose {
		fmt.Fprintf(s.stdout, "%s\n# Message to be sent:\n%s\n%s\n", verboseRule, cxxText(req), verboseRule)
		if s.key != nil {
			fmt.Fprintln(s.stdout, "Request is encrypted")
		}
	}
	res, err := c.Call(req)
	if err != nil {
		if s.defaultKey && !errors.Is(err, apiclient.ErrTimeout) {
			return nil, fmt.Errorf("error: %w\n(the request was encrypted with the key in %s: "+
				"give this daemon's key with -k FILE, or -k none if it has none)", err, s.g.defaultKeyFile)
		}
		return nil, fmt.Errorf("error: %w", err)
	}
	if s.g.verbose {
		if s.key != nil {
			fmt.Fprintln(s.stdout, "Received encrypted response")
		} else {
			fmt.Fprintln(s.stdout, "Received clear response")
		}
		fmt.Fprintf(s.stdout, "%s\n# Received message:\n%s\n%s\n", verboseRule, cxxText(res), verboseRule)
	} else if toStdout {
		fmt.Fprint(s.stdout, cxxText(res))
	}
	want := -1
	if req.GetEncrypted() == nil {
		want = len(req.GetMessages())
	}
	if err := checkReply(res, want); err != nil {
		if hint := s.keyHint(res); hint != "" {
			err = fmt.Errorf("%w%s", err, hint)
		}
		return res, err
	}
	return res, nil
}

// exec sends one request message per req (in one exchange) and returns the
// MessageV0 responses in the same order.
func (s *session) exec(reqs ...*protocol.MessageV0_Request) ([]*protocol.MessageV0_Response, error) {
	msgs := &protocol.Messages{}
	for _, r := range reqs {
		msgs.Messages = append(msgs.Messages, v0Message(&protocol.MessageV0{Request: r}))
	}
	res, err := s.send(msgs, false)
	if err != nil {
		return nil, err
	}
	out := make([]*protocol.MessageV0_Response, len(res.GetMessages()))
	for i, m := range res.GetMessages() {
		out[i] = m.GetMessage_0().GetResponse()
	}
	return out, nil
}

// exec1 is exec for a single request.
func (s *session) exec1(req *protocol.MessageV0_Request) (*protocol.MessageV0_Response, error) {
	res, err := s.exec(req)
	if err != nil {
		return nil, err
	}
	return res[0], nil
}

func v0Message(m *protocol.MessageV0) *protocol.Message {
	return &protocol.Message{Revision: proto.Uint32(protocol.Revision), Message_0: m}
}

// checkReply reports the first problem in a reply, with the original
// client's wording. want is the number of messages expected, or -1.
func checkReply(res *protocol.Messages, want int) error {
	if enc := res.GetEncrypted(); enc != nil {
		if enc.Error != nil {
			// The original client's wording, capital included.
			return fmt.Errorf("%s: %s", "Encrypted message error", enc.GetError().GetCode())
		}
		return errors.New("error: nothing recognized in encrypted response")
	}
	msgs := res.GetMessages()
	if len(msgs) == 0 {
		return errors.New("error: no message in response")
	}
	for _, m := range msgs {
		if m.Error != nil {
			if m.GetError().Code == nil {
				return errors.New("error in response: no error code")
			}
			return fmt.Errorf("error in response: %s", m.GetError().GetCode())
		}
		if m.Message_0 == nil {
			return errors.New("error: no message recognized in response")
		}
		r := m.GetMessage_0().GetResponse()
		if r == nil || r.Status == nil {
			return errors.New("error: no response in MessageV0")
		}
		if !r.GetStatus().GetStatus() {
			return errors.New("error in response" + describe(r.GetStatus().GetError()))
		}
	}
	if want >= 0 && len(msgs) != want {
		return fmt.Errorf("error: %d messages in response to %d requests", len(msgs), want)
	}
	return nil
}

// describe renders a MessageV0.Error as the original client does: the
// first field set, on its own line.
func describe(e *protocol.MessageV0_Error) string {
	switch {
	case e == nil:
		return ""
	case e.Description != nil:
		return "\ndescription: " + e.GetDescription()
	case e.ErrNo != nil:
		return fmt.Sprintf("\nerrno: %d", e.GetErrNo())
	case e.File != nil:
		return "\nfile: " + e.GetFile()
	case e.Line != nil:
		return fmt.Sprintf("\nline: %d", e.GetLine())
	case e.CursPos != nil:
		return fmt.Sprintf("\ncurs_pos: %d", e.GetCursPos())
	case e.Function != nil:
		return "\nfunction: " + e.GetFunction()
	}
	return " no details provided"
}

// send returns an action that sends req and prints nothing.
func send(req *protocol.MessageV0_Request) func(*session) error {
	return func(s *session) error {
		_, err := s.exec1(req)
		return err
	}
}

// sendEach returns an action that sends one request per argument, made by
// mk, in a single exchange, and prints nothing.
func sendEach(args []string, mk func(string) *protocol.MessageV0_Request) func(*session) error {
	reqs := make([]*protocol.MessageV0_Request, len(args))
	for i, a := range args {
		reqs[i] = mk(a)
	}
	return func(s *session) error {
		_, err := s.exec(reqs...)
		return err
	}
}

// sendPrintLines returns an action that sends req and prints the list that
// get picks from the response, one item per line.
func sendPrintLines(req *protocol.MessageV0_Request, get func(*protocol.MessageV0_Response) []string) func(*session) error {
	return func(s *session) error {
		r, err := s.exec1(req)
		if err != nil {
			return err
		}
		printLines(s.stdout, get(r))
		return nil
	}
}

// printLines writes each string on its own line.
func printLines(w io.Writer, lines []string) {
	if len(lines) > 0 {
		fmt.Fprintln(w, strings.Join(lines, "\n"))
	}
}
