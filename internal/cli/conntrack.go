package cli

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/firewall"
)

// maxImportFile bounds the size of a --fw-import file (the daemon's
// largest request is 64 MiB).
const maxImportFile = 64 << 20

// exportData sends nic_export for id and returns the exported data.
func exportData(s *session, id string) ([]byte, error) {
	r, err := s.exec1(&protocol.MessageV0_Request{NicExport: proto.String(id)})
	if err != nil {
		return nil, err
	}
	if r.GetNicExport() == nil {
		return nil, errors.New("error: no nic export received")
	}
	return r.GetNicExport().GetFwData().GetData(), nil
}

func nicExportCommand(seg *segment) *cobra.Command {
	var output string
	return leaf(seg, leafSpec{
		use:   "export NIC [--output FILE]",
		short: "Export the tracked connections of a vNIC (for live migration)",
		long: `Export the firewall's tracked connections of a vNIC (nic_export), in the
binary connection-tracking export format, to give to "nic add --fw-import"
on the host the VM moves to. With --output the data is written to FILE as
is; otherwise it is printed in base64 on one line. This command is an
extension of this implementation (the original daemon returns no data).`,
		example: `  butterfly nic export vm-1 --output vm-1.ct
  butterfly -e tcp://host2:9999 nic add --id vm-1 --mac 52:54:00:12:34:01 --vni 42 --fw-import vm-1.ct`,
		minArgs:  1,
		maxArgs:  1,
		argNames: []string{"NIC id"},
		complete: []argKind{nicArg},
		flags: func(c *cobra.Command) {
			c.Flags().StringVarP(&output, "output", "o", "", "write the raw data to FILE instead of base64 to stdout")
		},
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			if c.Flags().Changed("output") && output == "" {
				return nil, usagef(c, "--output: empty path")
			}
			return func(s *session) error {
				data, err := exportData(s, args[0])
				if err != nil {
					return err
				}
				if output == "" {
					fmt.Fprintln(s.stdout, base64.StdEncoding.EncodeToString(data))
					return nil
				}
				if err := os.WriteFile(output, data, 0o600); err != nil {
					return fmt.Errorf("error: %w", err)
				}
				return nil
			}, nil
		},
	})
}

// readImport reads a --fw-import file: raw export data (as written by
// "nic export --output") or its base64 text (as "nic export" prints), and
// checks it.
func readImport(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, maxImportFile+1)); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	if len(data) > maxImportFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxImportFile)
	}
	if !bytes.HasPrefix(data, []byte("BFCT")) {
		dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
		if err != nil {
			return nil, fmt.Errorf("%s: neither export data nor its base64 text", path)
		}
		data = dec
	}
	if _, err := firewall.ParseExport(data); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, nil
}

// conntrackJSON is one tracked connection in "nic conntrack --json".
type conntrackJSON struct {
	Protocol  uint8  `json:"protocol"`
	Src       string `json:"src"`
	SrcPort   uint16 `json:"src_port"`
	Dst       string `json:"dst"`
	DstPort   uint16 `json:"dst_port"`
	State     string `json:"state"`
	Direction string `json:"direction"`
	Replied   bool   `json:"replied"`
	ExpiresMS int64  `json:"expires_in_ms"`
}

func nicConntrackCommand(seg *segment) *cobra.Command {
	var asJSON bool
	return leaf(seg, leafSpec{
		use:   "conntrack NIC [--json]",
		short: "List the connections a vNIC's firewall tracks",
		long: `List the connections the firewall of a vNIC tracks, one per line, sorted:
protocol, originator -> responder (address:port; ICMP: the echo
identifier), TCP state (or REPLIED/UNREPLIED), the direction of the first
packet (from_vm or to_vm) and the time left before the entry expires.
The list is decoded from nic_export's data. With --json a JSON array is
printed instead. This command is an extension of this implementation.`,
		minArgs:  1,
		maxArgs:  1,
		argNames: []string{"NIC id"},
		complete: []argKind{nicArg},
		flags: func(c *cobra.Command) {
			c.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
		},
		build: func(c *cobra.Command, args []string) (func(*session) error, error) {
			return func(s *session) error {
				data, err := exportData(s, args[0])
				if err != nil {
					return err
				}
				if len(data) == 0 {
					return errors.New("error: the daemon exported no connection-tracking data (nic_export is not implemented by the original butterflyd)")
				}
				recs, err := firewall.ParseExport(data)
				if err != nil {
					return fmt.Errorf("error: %w", err)
				}
				sortRecords(recs)
				if !asJSON {
					for _, r := range recs {
						fmt.Fprintln(s.stdout, r.String())
					}
					return nil
				}
				out := make([]conntrackJSON, len(recs))
				for i, r := range recs {
					state := r.State.String()
					if r.Proto != 6 {
						state = ""
					}
					out[i] = conntrackJSON{Protocol: r.Proto, Src: r.Src.String(), SrcPort: r.SrcPort, Dst: r.Dst.String(),
						DstPort: r.DstPort, State: state, Direction: r.Dir.String(), Replied: r.Replied, ExpiresMS: r.Remaining.Milliseconds()}
				}
				b, err := json.MarshalIndent(out, "", "  ")
				if err != nil {
					return fmt.Errorf("error: %w", err)
				}
				fmt.Fprintln(s.stdout, string(b))
				return nil
			}, nil
		},
	})
}

// sortRecords orders connections by protocol, originator, responder.
func sortRecords(recs []firewall.Record) {
	slices.SortFunc(recs, func(a, b firewall.Record) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), a.Src.Compare(b.Src), cmp.Compare(a.SrcPort, b.SrcPort),
			a.Dst.Compare(b.Dst), cmp.Compare(a.DstPort, b.DstPort))
	})
}
