package cli

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/butterfly-go/butterfly/internal/apiclient"
)

// defaultKeyAnnotation names the root command's annotation that holds the
// default key file, for shell completion.
const defaultKeyAnnotation = "butterfly-default-key-file"

// newRoot builds the command tree for one segment of a command line. Leaf
// commands check their arguments and store their action in seg.
func newRoot(seg *segment) *cobra.Command {
	root := &cobra.Command{
		Use:   "butterfly",
		Short: "Control a butterflyd virtual switch",
		Long: `butterfly drives a butterflyd daemon through its API: virtual NICs,
security groups with their rules and members, status and configuration
dumps.

Global options may be written anywhere on the line. Chain several commands
with a lone "+" word, for example:
  butterfly sg add web + sg rule add web --ip-proto tcp --port 80 --cidr 0.0.0.0/0
Each command is sent as its own request; the chain stops at the first
failure. Every command of the chain is checked before anything is sent,
and asking for help anywhere (-h, or the word "help") only shows help.
The exit status is 0 on success and 1 on any error.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		Annotations:   map[string]string{defaultKeyAnnotation: seg.defaultKeyFile},
		Args:          cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) > 0 && args[0] == "help" {
				return c.Help()
			}
			if len(args) > 0 {
				return usagef(c, "unknown command %q", args[0])
			}
			return usagef(c, "missing command")
		},
	}
	pf := root.PersistentFlags()
	pf.StringP("endpoint", "e", apiclient.DefaultEndpoint, "API endpoint of butterflyd (ZeroMQ address)")
	pf.IntP("timeout", "t", 0, "give up on a request after this many milliseconds (0 waits forever)")
	pf.StringP("key", "k", "", "file holding the base64 API encryption key (default "+apiclient.DefaultKeyFile+
		" when readable; \"none\": send in clear)")
	pf.BoolP("verbose", "v", false, "print the requests sent and the replies received")
	pf.BoolP("version", "V", false, "print the version and exit")

	defaultHelp := root.HelpFunc()
	root.SetHelpFunc(func(c *cobra.Command, args []string) {
		seg.helped = true
		defaultHelp(c, args)
	})

	root.AddCommand(
		nicCommand(seg),
		sgCommand(seg),
		statusCommand(seg),
		shutdownCommand(seg),
		requestCommand(seg),
		dumpCommand(seg),
		explainCommand(seg),
		clusterCommand(seg),
	)
	return root
}

// group returns a command that only holds subcommands. Run without a
// subcommand it fails; "help" shows its help.
func group(use, short, long string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef(c, "%s: missing subcommand", c.CommandPath())
			}
			if args[0] == "help" {
				return c.Help()
			}
			return usagef(c, "%s: unknown subcommand %q", c.CommandPath(), args[0])
		},
	}
	c.AddCommand(subs...)
	return c
}

// leafSpec describes a command that sends requests.
type leafSpec struct {
	use, short, long, example string
	// minArgs and maxArgs bound the positional arguments; maxArgs < 0
	// means no upper bound.
	minArgs, maxArgs int
	// argNames name the positional arguments in error messages.
	argNames []string
	// complete says what the positional arguments name, for shell
	// completion; the last kind repeats when maxArgs < 0.
	complete []argKind
	flags    func(c *cobra.Command)
	// build checks the arguments and flags and returns the action.
	build func(c *cobra.Command, args []string) (func(*session) error, error)
}

// leaf builds a command from spec. The first argument "help" shows help.
func leaf(seg *segment, spec leafSpec) *cobra.Command {
	c := &cobra.Command{
		Use:     spec.use,
		Short:   spec.short,
		Long:    spec.long,
		Example: spec.example,
		Args:    cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) > 0 && args[0] == "help" {
				return c.Help()
			}
			if len(args) < spec.minArgs {
				name := "argument"
				if len(args) < len(spec.argNames) {
					name = spec.argNames[len(args)]
				}
				return usagef(c, "%s: missing %s", c.CommandPath(), name)
			}
			if spec.maxArgs >= 0 && len(args) > spec.maxArgs {
				return usagef(c, "%s: unexpected argument %q", c.CommandPath(), args[spec.maxArgs])
			}
			for i, a := range args {
				if a == "" {
					name := "argument"
					if i < len(spec.argNames) {
						name = spec.argNames[i]
					}
					return usagef(c, "%s: empty %s", c.CommandPath(), name)
				}
			}
			act, err := spec.build(c, args)
			if err != nil {
				var ue *usageError
				if !errors.As(err, &ue) {
					// Not a command-line mistake: no usage hint.
					err = &usageError{err: err}
				}
				return err
			}
			seg.action = act
			return nil
		},
	}
	if spec.flags != nil {
		spec.flags(c)
	}
	c.ValidArgsFunction = completeArgs(spec.complete, spec.maxArgs < 0)
	return c
}

// boolWord parses the "true"/"false" value of an option.
func boolWord(c *cobra.Command, flag, v string) (bool, error) {
	switch v {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, usagef(c, "--%s: want true or false, got %q", flag, v)
}
