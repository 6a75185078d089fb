// Command butterfly is the command-line client of butterflyd: it manages
// virtual NICs and security groups through the daemon's API. Run
// "butterfly --help" for the commands.
package main

import (
	"os"

	"github.com/butterfly-go/butterfly/internal/cli"
)

func main() {
	os.Exit(cli.Run(os.Args[1:], os.Stdout, os.Stderr))
}
