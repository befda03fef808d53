package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/schakel-health/schakel/node"
)

// addNodeFlags adds the settings every command that opens a data directory shares.
func addNodeFlags(fs *pflag.FlagSet) {
	fs.String("data", "", "data directory (env SCHAKEL_DATA)")
	fs.String("config", "", "YAML configuration file (default <data>/schakel.yaml when present)")
	fs.String("api-addr", "", "internal API listen address HOST:PORT (env SCHAKEL_API_ADDR, default 127.0.0.1:7631)")
	fs.String("p2p-addr", "", "libp2p listen multiaddr; a TCP address also listens on QUIC at the same port (env SCHAKEL_P2P_ADDR, default /ip4/0.0.0.0/tcp/7632)")
	fs.StringSlice("bootstrap", nil, "peer to dial at start, a multiaddr ending in /p2p/<peer id>; repeatable (env SCHAKEL_BOOTSTRAP, comma-separated)")
	fs.StringSlice("announce-addr", nil, "libp2p address to announce instead of the listen addresses; repeatable (env SCHAKEL_ANNOUNCE_ADDRS)")
	fs.String("membership-addr", "", "host:port for memberlist membership and failure detection; empty turns it off (env SCHAKEL_MEMBERSHIP_ADDR)")
	fs.String("sync-interval", "", "mean time between reconciliation rounds with a random peer (env SCHAKEL_SYNC_INTERVAL, default 45s)")
	fs.String("policy", "", "access policy file (YAML; env SCHAKEL_POLICY; default: the built-in Dutch policy)")
	fs.StringSlice("trusted-register", nil, "DID of a register trusted to issue organisation credentials; repeatable (env SCHAKEL_TRUSTED_REGISTERS, comma-separated)")
	fs.String("credential-validity", "", "default validity of credentials issued by hosted organisations, e.g. 8760h (env SCHAKEL_CREDENTIAL_VALIDITY)")
	fs.String("log-level", "", "debug, info, warn or error (env SCHAKEL_LOG_LEVEL)")
	fs.String("api-tls-cert", "", "PEM certificate chain for the API (env SCHAKEL_API_TLS_CERT)")
	fs.String("api-tls-key", "", "PEM private key file for the API certificate (env SCHAKEL_API_TLS_KEY)")
	fs.String("api-client-ca", "", "PEM CA file: require client certificates from it, mTLS (env SCHAKEL_API_CLIENT_CA)")
}

func newInitCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "init --data DIR",
		Short: "Create a node's data directory and identity key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir := flagOrEnv(cmd.Flags(), "data", "SCHAKEL_DATA")
			if dir == "" {
				return &exitError{2, fmt.Errorf("init: --data DIR required")}
			}
			id, err := node.Init(dir)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "initialised %s\npeer id %s\n", dir, id)
			return nil
		},
	}
	cmd.Flags().String("data", "", "data directory to create (env SCHAKEL_DATA)")
	return cmd
}

func newRunCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run --data DIR [--api-addr HOST:PORT] [--p2p-addr MULTIADDR]",
		Short: "Run the node daemon until SIGINT or SIGTERM",
		Long: `Run the node daemon. Settings come from defaults, then the YAML file, then SCHAKEL_*
environment variables, then flags. The API token is a secret: set SCHAKEL_API_TOKEN or
api_token_file, never a flag. SIGINT or SIGTERM stop the node gracefully.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := loadSettings(cmd.Flags())
			if err != nil {
				return &exitError{2, err}
			}
			logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: s.logLevel}))
			if initialise, _ := cmd.Flags().GetBool("init"); initialise && s.node.DataDir != "" {
				// A node started on an empty volume (a new container) creates its identity first.
				if _, err := os.Stat(filepath.Join(s.node.DataDir, "node.key")); errors.Is(err, os.ErrNotExist) {
					id, err := node.Init(s.node.DataDir)
					if err != nil {
						return err
					}
					logger.Info("data directory initialised", slog.String("dir", s.node.DataDir), slog.String("peer_id", id.String()))
				}
			}
			if path := os.Getenv("SCHAKEL_CPU_PROFILE"); path != "" {
				// For measuring the node under load (schakel bench): a CPU profile until it stops.
				f, err := os.Create(path)
				if err != nil {
					return err
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer func() { pprof.StopCPUProfile(); f.Close() }()
			}
			n, err := node.New(s.node, logger)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if err := n.Start(ctx); err != nil {
				n.Close(context.Background())
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "schakel %s running: api http://%s peer %s\n", node.Version, n.APIAddr(), n.PeerID())
			<-ctx.Done()
			logger.Info("shutting down")
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			return n.Close(sctx)
		},
	}
	addNodeFlags(cmd.Flags())
	cmd.Flags().Bool("init", false, "create the data directory and the node's identity key first when they do not exist")
	return cmd
}
