package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/schakel-health/schakel/internal/register"
)

func newSetupCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "setup --dir DIR [--orgs gp,pharmacy,hospital,portal]",
		Short: "Prepare the data directories of a network of nodes: a register and one organisation per node",
		Long: `setup prepares, under DIR, a register (DIR/register) and one node per organisation
(DIR/<key>, for the keys of --orgs: the demo's GP practice, pharmacy, hospital and patient portal).
For each node it creates the identity key, starts the node briefly on loopback, creates the
organisation, has the register issue its organisation credential, and writes DIR/<key>/schakel.yaml:
the API on 0.0.0.0:7631 (set SCHAKEL_API_TOKEN when running it), libp2p on port 7632, the register
trusted, and every other node as a bootstrap peer at /dns4/<key>/tcp/7632 — the host names of the
docker-compose network. A node already set up is left as it is, so running setup again is safe.
DIR/register/network.txt lists the organisations, their DIDs and peer ids.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, _ := cmd.Flags().GetString("dir")
			keys, _ := cmd.Flags().GetStringSlice("orgs")
			if dir == "" {
				return &exitError{2, errors.New("setup: --dir DIR required")}
			}
			return setupNetwork(cmd.Context(), cmd.OutOrStdout(), dir, keys)
		},
	}
	cmd.Flags().String("dir", "", "directory holding the register's and every node's data directory")
	cmd.Flags().StringSlice("orgs", []string{"gp", "pharmacy", "hospital", "portal"}, "the organisations, one node each, by key")
	return cmd
}

// setupNetwork runs `schakel setup`.
func setupNetwork(ctx context.Context, out io.Writer, dir string, keys []string) error {
	var orgs []demoOrg
	for _, k := range keys {
		i := slices.IndexFunc(demoOrgs, func(o demoOrg) bool { return o.key == k })
		if i < 0 {
			return &exitError{2, fmt.Errorf("setup: unknown organisation %q", k)}
		}
		orgs = append(orgs, demoOrgs[i])
	}
	d := &demo{out: io.Discard, dir: dir, nodes: map[string]*orgNode{}}
	defer d.closeAll()
	regDir := filepath.Join(dir, "register")
	r, err := register.Open(regDir)
	if err != nil {
		if r, err = register.Init(ctx, regDir, "Register Zorgaanbieders (compose)", time.Now()); err != nil {
			return err
		}
	}
	d.reg = r
	// What an earlier run set up is listed in network.txt; those nodes may be running (their data
	// directories locked), so they are not opened again.
	listed := map[string]string{}
	if b, err := os.ReadFile(filepath.Join(regDir, "network.txt")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				listed[f[0]] = line
			}
		}
	}
	peers := map[string]string{}
	var listing strings.Builder
	fmt.Fprintf(&listing, "register %s\n", r.DID())
	for _, o := range orgs {
		if _, err := os.Stat(filepath.Join(dir, o.key, "schakel.yaml")); err == nil {
			line, ok := listed[o.key]
			f := strings.Fields(line)
			if !ok || len(f) < 2 || f[len(f)-2] != "peer" {
				return fmt.Errorf("setup: %s is set up but not listed in %s; remove %s to set it up again",
					o.key, filepath.Join(regDir, "network.txt"), filepath.Join(dir, o.key, "schakel.yaml"))
			}
			fmt.Fprintf(out, "%s: already set up\n", o.key)
			peers[o.key] = f[len(f)-1]
			fmt.Fprintln(&listing, line)
			continue
		}
		n, err := d.startOrg(ctx, o)
		if err != nil {
			return err
		}
		if err := d.admit(ctx, o); err != nil {
			return err
		}
		fmt.Fprintf(out, "%s: %s %s admitted by the register\n", o.key, o.name, n.org)
		peers[o.key] = n.n.PeerID().String()
		fmt.Fprintf(&listing, "%-9s %s %s peer %s\n", o.key, n.org, o.name, peers[o.key])
		if err := d.stopNode(ctx, o.key); err != nil {
			return err
		}
	}
	for _, o := range orgs {
		// The file `schakel run` reads from the data directory, written with its own type so that
		// every key is one it knows.
		cfg := fileConfig{APIAddr: "0.0.0.0:7631", P2PAddr: "/ip4/0.0.0.0/tcp/7632", TrustedRegisters: []string{r.DID()},
			SyncInterval: "10s", LogLevel: "info"}
		for _, other := range orgs {
			if other.key != o.key {
				cfg.Bootstrap = append(cfg.Bootstrap, "/dns4/"+other.key+"/tcp/7632/p2p/"+peers[other.key])
			}
		}
		b, err := yaml.Marshal(cfg)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, o.key, "schakel.yaml"), b, 0o644); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(regDir, "network.txt"), []byte(listing.String()), 0o644); err != nil {
		return err
	}
	fmt.Fprint(out, listing.String())
	return nil
}

func newHealthCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "health [--url URL]",
		Short: "Exit 0 when the node answers ready (GET /readyz): a container health check",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			url, _ := cmd.Flags().GetString("url")
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return &exitError{2, err}
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return &exitError{1, err}
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			if resp.StatusCode != http.StatusOK {
				return &exitError{1, fmt.Errorf("%s: %s %s", url, resp.Status, strings.TrimSpace(string(body)))}
			}
			fmt.Fprintln(cmd.OutOrStdout(), strings.TrimSpace(string(body)))
			return nil
		},
	}
	cmd.Flags().String("url", "http://127.0.0.1:7631/readyz", "readiness URL of the node's API")
	return cmd
}
