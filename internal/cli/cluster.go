package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
)

func clusterCommand(seg *segment) *cobra.Command {
	return group("cluster", "Inspect the cluster (daemons in cluster mode)",
		`Show the nodes and vNICs of the cluster a daemon started with --etcd
belongs to. Daemons in standalone mode answer an error.`,
		clusterNodesCommand(seg),
		clusterNICsCommand(seg),
	)
}

func clusterNodesCommand(seg *segment) *cobra.Command {
	return leaf(seg, leafSpec{
		use:   "nodes",
		short: "Print every node: name, VTEP, alive or dead, last seen, version",
		long: `Print one line per registered node, sorted by name:
NAME VTEP alive|dead LAST-SEEN VERSION. LAST-SEEN is when the answering daemon
last saw the node's lease alive (UTC, RFC 3339; "never" if it did not).`,
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			return func(s *session) error {
				r, err := s.exec1(&protocol.MessageV0_Request{ClusterNodes: proto.Bool(true)})
				if err != nil {
					return err
				}
				for _, n := range r.GetClusterNodes() {
					alive, seen := "dead", "never"
					if n.GetAlive() {
						alive = "alive"
					}
					if t := n.GetLastSeen(); t > 0 {
						seen = time.Unix(int64(t), 0).UTC().Format(time.RFC3339)
					}
					fmt.Fprintf(s.stdout, "%s %s %s %s %s\n", n.GetName(), n.GetVtep(), alive, seen, n.GetVersion())
				}
				return nil
			}, nil
		},
	})
}

func clusterNICsCommand(seg *segment) *cobra.Command {
	return leaf(seg, leafSpec{
		use:   "nics",
		short: "Print which node holds each vNIC: NODE ID VNI MAC",
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			return func(s *session) error {
				r, err := s.exec1(&protocol.MessageV0_Request{ClusterNics: proto.Bool(true)})
				if err != nil {
					return err
				}
				for _, n := range r.GetClusterNics() {
					fmt.Fprintf(s.stdout, "%s %s %d %s\n", n.GetNode(), n.GetId(), n.GetVni(), n.GetMac())
				}
				return nil
			}, nil
		},
	})
}

// printClusterStatus prints the cluster part of app_status.
func printClusterStatus(s *session, c *protocol.MessageV0_ClusterStatus) {
	if c == nil {
		return
	}
	fmt.Fprintf(s.stdout, "cluster node: %s\n", c.GetNode())
	fmt.Fprintf(s.stdout, "cluster connected: %v\n", c.GetConnected())
	fmt.Fprintf(s.stdout, "cluster revision: %d\n", c.GetRevision())
	if c.Error != nil {
		fmt.Fprintf(s.stdout, "cluster error: %s\n", c.GetError())
	}
	for _, i := range c.GetInvalid() {
		fmt.Fprintf(s.stdout, "cluster invalid record: %s\n", i)
	}
}
