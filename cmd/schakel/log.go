package main

import (
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/schakel-health/schakel/internal/accesslog/verify"
)

// newLogCmd returns `schakel log`, the access log's commands. verify works offline and needs
// nothing but the export (and, preferably, the log's key from a trusted source); the others talk
// to a node.
func newLogCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "log",
		Short: "Work with an organisation's access log",
	}
	// Usage errors exit 2, as `log verify` documents.
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &exitError{2, err} })
	cmd.AddCommand(newLogVerifyCmd())
	// The subcommands that talk to a node (export, record).
	cmd.AddCommand(newLogNodeCmds()...)
	return cmd
}

func newLogVerifyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify DIR [--vkey KEY] [--witness KEY]... [--min-cosignatures N]",
		Short: "Verify an exported access log offline",
		Long: `verify checks the export in DIR (entries.jsonl, checkpoints/, vkey; docs/ACCESSLOG.md):
every entry canonical and in place, the hash chain unbroken, times in order, each patient's
sequence without gaps or repeats, every checkpoint signed by the log's key with the root of the
entries it covers, and a checkpoint that covers the whole export.

Pass the log's key with --vkey from a source you trust, such as the organisation's DID document:
the key inside the export shows only that the export agrees with itself.

Witnesses: each --witness is the cosignature key of a witness you trust,
"<name>+<hash>+<base64>" (C2SP tlog-cosignature, Ed25519, type 0x04). With --min-cosignatures N,
the latest checkpoint, the one that covers the export, must carry valid cosignatures by at least
N distinct keys of those given; older checkpoints may have fewer. Cosignatures by other keys, or
that do not verify, are ignored. Without --min-cosignatures the summary only counts them.

Exit 0: valid, with a one-line summary. Exit 1: invalid, naming the first bad entry or the bad
checkpoint (also a latest checkpoint with too few cosignatures). Exit 2: usage error (among them
a malformed key, or a minimum above the number of distinct witness keys) or the export cannot be
read.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return &exitError{2, fmt.Errorf("log verify: want one argument, the export directory (got %d)", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			key, _ := cmd.Flags().GetString("vkey")
			witnesses, _ := cmd.Flags().GetStringArray("witness")
			minCosigs, _ := cmd.Flags().GetInt("min-cosignatures")
			rep, err := verify.VerifyExport(cmd.Context(), args[0], verify.Options{
				VerifierKey: key, Witnesses: witnesses, MinCosignatures: minCosigs})
			if err != nil {
				if errors.Is(err, verify.ErrInvalid) {
					return &exitError{1, fmt.Errorf("invalid: %w", err)}
				}
				return &exitError{2, fmt.Errorf("log verify: %w", err)}
			}
			witnessed := ""
			if len(witnesses) > 0 {
				witnessed = fmt.Sprintf(", cosigned by %d of the witnesses given", rep.Cosignatures)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "valid: %s: %d entries, %d checkpoints, %d patients, root %s at size %d%s\n",
				rep.Origin, rep.Entries, rep.Checkpoints, rep.Patients, base64.StdEncoding.EncodeToString(rep.Latest.Root[:]), rep.Latest.Size, witnessed)
			return nil
		},
	}
	cmd.Flags().String("vkey", "", `the log's note verifier key "<name>+<hash>+<base64>" (overrides DIR/vkey)`)
	cmd.Flags().StringArray("witness", nil, `a trusted witness's cosignature verifier key "<name>+<hash>+<base64>" (repeatable)`)
	cmd.Flags().Int("min-cosignatures", 0, "how many distinct --witness keys must cosign the latest checkpoint")
	return cmd
}
