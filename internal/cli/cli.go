// Package cli is the butterfly command-line client: it turns a command line
// such as "nic add --id n1 --mac 52:54:00:00:00:01 --vni 42" into MessageV0
// requests, sends them to butterflyd over the ZeroMQ API and prints the
// replies in the output formats of the original C++ client, so that scripts
// written for it keep working.
//
// Global options (-e, -t, -k, -v, -V, -h) may appear anywhere on the line.
// Several commands may be chained with a lone "+" word; each one is sent as
// its own request and the chain stops at the first failure. Every command
// of a chain is parsed and checked before the first request is sent.
package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/butterfly-go/butterfly/internal/apiclient"
	"github.com/butterfly-go/butterfly/internal/version"
)

// chainSeparator separates chained commands on the command line.
const chainSeparator = "+"

// isGlobalValueFlag reports whether a is a global option that takes its
// value in the next word.
func isGlobalValueFlag(a string) bool {
	switch a {
	case "-e", "--endpoint", "-t", "--timeout", "-k", "--key":
		return true
	}
	return false
}

// globals are the options that apply to the whole command line.
type globals struct {
	endpoint  string
	timeoutMS int
	// keyPath is -k's value, "" when not given.
	keyPath string
	// defaultKeyFile is the key file used without -k when it can be
	// read ("" = none).
	defaultKeyFile string
	verbose        bool
}

// defaultKeyFileOrDefault is defaultKeyFile, or apiclient.DefaultKeyFile
// when there is none, for messages.
func (g globals) defaultKeyFileOrDefault() string {
	if g.defaultKeyFile != "" {
		return g.defaultKeyFile
	}
	return apiclient.DefaultKeyFile
}

// segment is one command of a chain.
type segment struct {
	args []string
	// name is the command's first word, used in "error in command: X".
	name string
	// action sends the command's requests; nil when the command only
	// printed something locally (help, completion script).
	action func(*session) error
	// helped is set when the command showed help text.
	helped bool
	// root is the command tree that parsed args; its persistent flags hold
	// the global options written in this segment.
	root *cobra.Command
	// defaultKeyFile is globals.defaultKeyFile, for shell completion.
	defaultKeyFile string
}

// usageError is a mistake on the command line, found before any request.
type usageError struct {
	cmd *cobra.Command
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usagef returns a usageError for cmd.
func usagef(cmd *cobra.Command, format string, a ...any) error {
	return &usageError{cmd: cmd, err: fmt.Errorf(format, a...)}
}

// Run executes the command line args (without the program name), writing
// normal output to stdout and diagnostics to stderr. It returns the process
// exit status: 0 on success, 1 on any error. Without -k, requests are
// encrypted with the key in apiclient.DefaultKeyFile when it can be read.
func Run(args []string, stdout, stderr io.Writer) int {
	return run(args, stdout, stderr, apiclient.DefaultKeyFile)
}

// run is Run with the key file used when -k is not given ("" = none).
func run(args []string, stdout, stderr io.Writer, defaultKeyFile string) int {
	// Like the original, -V/--version anywhere wins over everything else.
	for _, a := range args {
		if a == "-V" || a == "--version" {
			fmt.Fprintln(stdout, version.String())
			return 0
		}
	}

	if isCompletionRequest(args) {
		args = completionArgs(args)
		seg := newSegment(args)
		seg.defaultKeyFile = defaultKeyFile
		if err := parse(seg, stdout, stderr); err != nil {
			return 1
		}
		return 0
	}

	segs, err := split(args)
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}

	g := globals{endpoint: apiclient.DefaultEndpoint, defaultKeyFile: defaultKeyFile}
	helped := false
	for _, seg := range segs {
		seg.defaultKeyFile = defaultKeyFile
		if err := parse(seg, stdout, stderr); err != nil {
			reportParse(stderr, seg, err)
			return 1
		}
		mergeGlobals(&g, seg.root)
		helped = helped || seg.helped
	}
	if helped {
		// Help anywhere on the line shows help and runs nothing.
		return 0
	}
	if g.timeoutMS < 0 {
		fmt.Fprintf(stderr, "error: --timeout must not be negative, got %d\n", g.timeoutMS)
		return 1
	}

	s := newSession(g, stdout, stderr)
	defer s.close()
	for _, seg := range segs {
		if seg.action == nil {
			continue
		}
		if err := seg.action(s); err != nil {
			fmt.Fprintln(stderr, strings.TrimRight(err.Error(), "\n"))
			fmt.Fprintf(stderr, "error in command: %s\n", seg.name)
			return 1
		}
	}
	return 0
}

// split cuts the command line at each "+" word.
func split(args []string) ([]*segment, error) {
	var segs []*segment
	cur := []string{}
	for _, a := range args {
		if a == chainSeparator {
			if len(cur) == 0 {
				return nil, errors.New(`empty command before "+"`)
			}
			segs = append(segs, newSegment(cur))
			cur = []string{}
			continue
		}
		cur = append(cur, a)
	}
	if len(cur) == 0 && len(segs) > 0 {
		return nil, errors.New(`empty command after "+"`)
	}
	segs = append(segs, newSegment(cur))
	return segs, nil
}

func newSegment(args []string) *segment {
	s := &segment{args: args}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if isGlobalValueFlag(a) {
			i++ // skip the flag's value
			continue
		}
		if !strings.HasPrefix(a, "-") {
			s.name = a
			break
		}
	}
	if s.name == "" {
		s.name = "butterfly"
	}
	return s
}

// parse runs the segment's words through a fresh command tree. Leaf
// commands check their arguments and store the action to run later.
func parse(seg *segment, stdout, stderr io.Writer) error {
	root := newRoot(seg)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(seg.args)
	seg.root = root
	cmd, err := root.ExecuteC()
	if err != nil {
		var ue *usageError
		if !errors.As(err, &ue) {
			// Flag and command errors from cobra itself.
			err = &usageError{cmd: cmd, err: err}
		}
		return err
	}
	return nil
}

func reportParse(stderr io.Writer, seg *segment, err error) {
	fmt.Fprintf(stderr, "error: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) && ue.cmd != nil {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", ue.cmd.CommandPath())
	}
	fmt.Fprintf(stderr, "error in command: %s\n", seg.name)
}

// mergeGlobals copies the global options set in one segment into g; a
// later segment overrides an earlier one.
func mergeGlobals(g *globals, root *cobra.Command) {
	fs := root.PersistentFlags()
	if f := fs.Lookup("endpoint"); f != nil && f.Changed {
		g.endpoint = f.Value.String()
	}
	if f := fs.Lookup("timeout"); f != nil && f.Changed {
		if v, err := fs.GetInt("timeout"); err == nil {
			g.timeoutMS = v
		}
	}
	if f := fs.Lookup("key"); f != nil && f.Changed {
		g.keyPath = f.Value.String()
	}
	if f := fs.Lookup("verbose"); f != nil && f.Changed {
		if v, err := fs.GetBool("verbose"); err == nil {
			g.verbose = g.verbose || v
		}
	}
}
