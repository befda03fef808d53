package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

func newPeersCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "peers",
		Short: "List the peers the node is or was connected to: admission, liveness, sync state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := call(cmd.Context(), newClient(cmd).node.ListPeers, &schakelv1.ListPeersRequest{})
			if err != nil {
				return err
			}
			if printJSON(cmd, resp) {
				return nil
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "this node: %s\n", strings.Join(resp.GetAddrs(), " "))
			if m := resp.GetMembers(); len(m) > 0 {
				fmt.Fprintf(out, "members alive: %d\n", len(m))
			}
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "PEER\tORGANISATION\tADMITTED\tCONNECTED\tLAST SEEN\tLAST SYNC\tFETCHED")
			for _, p := range resp.GetPeers() {
				org := p.GetOrganization()
				if org == "" {
					org = "-"
				}
				sync := ago(p.GetLastSyncUnix())
				if e := p.GetLastSyncError(); e != "" {
					sync += " (error: " + e + ")"
				}
				fmt.Fprintf(w, "%s\t%s\t%v\t%v\t%s\t%s\t%d\n", p.GetPeerId(), org, p.GetAdmitted(), p.GetConnected(),
					ago(p.GetLastSeenUnix()), sync, p.GetFetched())
			}
			return w.Flush()
		},
	}
	addClientFlags(cmd)
	return cmd
}

func ago(unix int64) string {
	if unix == 0 {
		return "never"
	}
	return time.Since(time.Unix(unix, 0)).Truncate(time.Second).String() + " ago"
}
