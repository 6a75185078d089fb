package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
)

func statusCommand(seg *segment) *cobra.Command {
	return leaf(seg, leafSpec{
		use:   "status",
		short: "Print the daemon's start time, request counter, vNIC issues and dataplane graph",
		long: `Print the daemon's start date and current date (Unix seconds), the number
of API requests it has processed, a line "nic ID: REASON" for each vNIC
that cannot carry traffic now (e.g. a TAP whose network namespace is
gone), and its dataplane graph in the DOT language (paste it into any
Graphviz viewer).`,
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			return func(s *session) error {
				r, err := s.exec1(&protocol.MessageV0_Request{AppStatus: proto.Bool(true)})
				if err != nil {
					return err
				}
				st := r.GetAppStatus()
				if st == nil {
					return errors.New("error: no status received")
				}
				if st.StartDate != nil {
					fmt.Fprintf(s.stdout, "start date: %d\n", st.GetStartDate())
				}
				if st.CurrentDate != nil {
					fmt.Fprintf(s.stdout, "current date: %d\n", st.GetCurrentDate())
				}
				if st.RequestCounter != nil {
					fmt.Fprintf(s.stdout, "request counter: %d\n", st.GetRequestCounter())
				}
				for _, is := range st.GetNicIssues() {
					fmt.Fprintf(s.stdout, "nic %s: %s\n", is.GetNicId(), is.GetReason())
				}
				printClusterStatus(s, st.GetCluster())
				if st.GraphDot != nil {
					fmt.Fprintf(s.stdout, "dot graph: \n%s\n", st.GetGraphDot())
				}
				return nil
			}, nil
		},
	})
}

func shutdownCommand(seg *segment) *cobra.Command {
	return leaf(seg, leafSpec{
		use:   "shutdown",
		short: "Ask the daemon to exit",
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			return send(&protocol.MessageV0_Request{AppQuit: proto.Bool(true)}), nil
		},
	})
}

func requestCommand(seg *segment) *cobra.Command {
	var toStdout bool
	return leaf(seg, leafSpec{
		use:   "request FILE [--stdout]",
		short: "Send a request written in protobuf text format",
		long: `Send the proto.Messages held in FILE, written in protobuf text format, as
one request. The command fails if any message of the reply reports an
error. With --stdout the reply is printed in text format.

The output of "butterfly dump" is a valid FILE.`,
		example: `  cat > req.txt <<EOF
  messages {
    revision: 6
    message_0 { request { nic_list: true } }
  }
  EOF
  butterfly request req.txt --stdout`,
		minArgs:  1,
		maxArgs:  1,
		argNames: []string{"request FILE"},
		flags: func(c *cobra.Command) {
			c.Flags().BoolVar(&toStdout, "stdout", false, "print the reply in protobuf text format")
		},
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			path := args[0]
			text, err := os.ReadFile(path)
			if err != nil {
				return nil, err
			}
			if len(text) == 0 {
				return nil, fmt.Errorf("failed to open %s: empty file", path)
			}
			req := &protocol.Messages{}
			if err := prototext.Unmarshal(text, req); err != nil {
				return nil, fmt.Errorf("%s is not a proto.Messages in text format: %w", path, err)
			}
			out := toStdout
			if len(req.GetMessages()) == 0 && req.GetEncrypted() == nil {
				// The dump of an empty daemon: the daemon would reject an
				// empty request, and there is nothing to apply.
				return func(s *session) error {
					fmt.Fprintf(s.stderr, "%s holds no message: nothing sent\n", path)
					return nil
				}, nil
			}
			return func(s *session) error {
				_, err := s.send(req, out)
				return err
			}, nil
		},
	})
}

func dumpCommand(seg *segment) *cobra.Command {
	return leaf(seg, leafSpec{
		use:   "dump",
		short: "Print the whole configuration as a request that recreates it",
		long: `Print every vNIC and security group of the daemon as one request in
protobuf text format: a nic_add per vNIC, then an sg_add per security group.
The output is stable: dumping, replaying the dump into a fresh daemon with
"butterfly request" and dumping again gives the same text. Extension fields
appear only where they differ from their default, so a dump of vNICs that
use no extension loads in the original's tools: vhost_user_client is printed
for client-mode vNICs, and for every vhost-user vNIC of a daemon started
with --vhost-client (a vNIC without it takes the mode of the daemon the dump
is replayed on).`,
		example: `  butterfly dump > butterfly.dump
  butterfly shutdown
  # start butterflyd again, then:
  butterfly request butterfly.dump`,
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			return dump, nil
		},
	})
}

// dump reads every vNIC and security group and prints the request that
// recreates them.
func dump(s *session) error {
	req := &protocol.Messages{Messages: []*protocol.Message{
		v0Message(&protocol.MessageV0{
			MessageId: proto.String("nics"),
			Request:   &protocol.MessageV0_Request{NicDetails: proto.String("")},
		}),
		v0Message(&protocol.MessageV0{
			MessageId: proto.String("sgs"),
			Request:   &protocol.MessageV0_Request{SgDetails: proto.String("")},
		}),
	}}
	res, err := s.send(req, false)
	if err != nil {
		return err
	}
	var nics, sgs *protocol.MessageV0_Response
	for _, m := range res.GetMessages() {
		switch m.GetMessage_0().GetMessageId() {
		case "nics":
			nics = m.GetMessage_0().GetResponse()
		case "sgs":
			sgs = m.GetMessage_0().GetResponse()
		}
	}
	if nics == nil || sgs == nil {
		return errors.New("error: reply does not carry the nics and sgs answers")
	}
	out := &protocol.Messages{}
	for _, n := range nics.GetNicDetails() {
		// Printed as reported: the daemon sets the extension fields only
		// where they differ from their default, so a dump of vNICs that
		// use no extension loads in the original's tools.
		out.Messages = append(out.Messages, v0Message(&protocol.MessageV0{
			Request: &protocol.MessageV0_Request{NicAdd: n},
		}))
	}
	for _, sg := range sgs.GetSgDetails() {
		out.Messages = append(out.Messages, v0Message(&protocol.MessageV0{
			Request: &protocol.MessageV0_Request{SgAdd: sg},
		}))
	}
	fmt.Fprintln(s.stdout, cxxText(out))
	return nil
}
