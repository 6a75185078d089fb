package cli

import (
	"io"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/apiclient"
)

// argKind says what a positional argument names, for shell completion.
type argKind int

const (
	anyArg argKind = iota
	nicArg
	sgArg
)

// completionTimeoutMS bounds the request a completion makes when -t is not
// given, so that a stopped daemon does not hang the shell.
const completionTimeoutMS = 1000

// isCompletionRequest reports whether args is a request from a completion
// script (cobra's hidden __complete commands).
func isCompletionRequest(args []string) bool {
	return len(args) > 0 && (args[0] == cobra.ShellCompRequestCmd || args[0] == cobra.ShellCompNoDescRequestCmd)
}

// completionArgs keeps, of a chained command line being completed, the
// command after the last "+" and the global options written before it.
func completionArgs(args []string) []string {
	last := -1
	for i := len(args) - 1; i > 0; i-- {
		if args[i] == chainSeparator {
			last = i
			break
		}
	}
	if last < 0 {
		return args
	}
	out := []string{args[0]}
	for i := 1; i < last; i++ {
		a := args[i]
		switch {
		case isGlobalValueFlag(a) && i+1 < last:
			out = append(out, a, args[i+1])
			i++
		case strings.HasPrefix(a, "--endpoint=") || strings.HasPrefix(a, "--timeout=") || strings.HasPrefix(a, "--key="):
			out = append(out, a)
		}
	}
	return append(out, args[last+1:]...)
}

// liveIDs asks the daemon for the vNIC or security group ids that start
// with prefix; errors give no completion.
func liveIDs(c *cobra.Command, kind argKind, prefix string) []string {
	g := globals{endpoint: apiclient.DefaultEndpoint, defaultKeyFile: c.Root().Annotations[defaultKeyAnnotation]}
	mergeGlobals(&g, c.Root())
	if g.timeoutMS == 0 {
		g.timeoutMS = completionTimeoutMS
	}
	s := newSession(g, io.Discard, io.Discard)
	defer s.close()
	var ids []string
	switch kind {
	case nicArg:
		r, err := s.exec1(&protocol.MessageV0_Request{NicList: proto.Bool(true)})
		if err != nil {
			return nil
		}
		ids = r.GetNicList()
	case sgArg:
		r, err := s.exec1(&protocol.MessageV0_Request{SgList: proto.Bool(true)})
		if err != nil {
			return nil
		}
		ids = r.GetSgList()
	}
	var out []string
	for _, id := range ids {
		if strings.HasPrefix(id, prefix) {
			out = append(out, id)
		}
	}
	return out
}

// completeArgs completes positional arguments of the kinds given; with
// repeat the last kind applies to every further argument.
func completeArgs(kinds []argKind, repeat bool) cobra.CompletionFunc {
	return func(c *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		kind := anyArg
		switch {
		case len(args) < len(kinds):
			kind = kinds[len(args)]
		case repeat && len(kinds) > 0:
			kind = kinds[len(kinds)-1]
		}
		if kind == anyArg {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return liveIDs(c, kind, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeFlag registers the completion of a flag's value: live ids, or a
// fixed list of words.
func completeFlag(c *cobra.Command, flag string, kind argKind, words ...string) {
	_ = c.RegisterFlagCompletionFunc(flag, func(c *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if kind != anyArg {
			return liveIDs(c, kind, toComplete), cobra.ShellCompDirectiveNoFileComp
		}
		return words, cobra.ShellCompDirectiveNoFileComp
	})
}
