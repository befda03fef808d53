// Command schakel is the schakel trust node: it runs the daemon, manages the organisations a node
// hosts and their credentials through the node's internal API, acts as a register issuing
// organisation credentials, and plays the demo scenario. It parses flags, environment and
// configuration files and nothing else: all behaviour lives in node and the internal packages.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/schakel-health/schakel/node"
)

// exitError carries a process exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "schakel:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "schakel",
		Short: "schakel is a trust node for healthcare data exchange",
		Long: `schakel is a trust node for healthcare data exchange between care organisations.
Each node hosts organisations, publishes their signed credentials, decides locally who may
access a patient's data and keeps a verifiable access log. No medical data passes through it.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newInitCmd(), newRunCmd(), newVersionCmd(), newDemoCmd(),
		newOrgCmd(), newCredentialCmd(), newRegisterCmd(),
		newLogCmd(), newPeersCmd(), newTokenCmd(), newConsentCmd(), newBenchCmd(),
		newSetupCmd(), newHealthCmd(),
	)
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), "schakel", node.Version)
			return nil
		},
	}
}
