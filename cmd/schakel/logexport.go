package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"

	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// newLogNodeCmds are the log subcommands that talk to a running node.
func newLogNodeCmds() []*cobra.Command {
	export := &cobra.Command{
		Use:   "export --org DID --out DIR",
		Short: "Export an organisation's access log for an auditor (entries, checkpoints, key)",
		Long: `export writes DIR/entries.jsonl (one entry per line, each line exactly the Merkle leaf),
DIR/checkpoints/<size> (each signed checkpoint as signed) and DIR/vkey (the log's note key),
covering the log up to its latest checkpoint. Check it with: schakel log verify DIR`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			org, _ := cmd.Flags().GetString("org")
			out, _ := cmd.Flags().GetString("out")
			n, size, err := exportLog(cmd.Context(), newClient(cmd), org, out)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "exported %d entries and %d checkpoints (latest size %d) to %s\n", size, n, size, out)
			return nil
		},
	}
	export.Flags().String("org", "", "DID of the hosted organisation")
	export.Flags().String("out", "", "directory to write (created; must be empty)")
	export.MarkFlagRequired("org")
	export.MarkFlagRequired("out")

	record := &cobra.Command{
		Use:   "record --org DID --bsn BSN --category C --query Q [--token ID] [--requester DID] [--uzi N --role R]",
		Short: "Record an actual data access by the EHR in the organisation's log",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			req := &schakelv1.RecordAccessRequest{Requester: &schakelv1.Requester{}, Employee: &schakelv1.Employee{}}
			req.Organization, _ = f.GetString("org")
			req.Bsn, _ = f.GetString("bsn")
			req.DataCategory, _ = f.GetString("category")
			req.Query, _ = f.GetString("query")
			req.TokenId, _ = f.GetString("token")
			req.Purpose, _ = f.GetString("purpose")
			req.Requester.Did, _ = f.GetString("requester")
			req.Requester.Ura, _ = f.GetString("requester-ura")
			req.Employee.Uzi, _ = f.GetString("uzi")
			req.Employee.Role, _ = f.GetString("role")
			resp, err := call(cmd.Context(), newClient(cmd).logs.RecordAccess, req)
			if err != nil {
				return err
			}
			if !printJSON(cmd, resp) {
				fmt.Fprintf(cmd.OutOrStdout(), "recorded as entry %d (patient's entry %d)\n", resp.GetIndex(), resp.GetPatientSeq())
			}
			return nil
		},
	}
	for _, fl := range [][2]string{
		{"org", "DID of the hosted organisation (the custodian)"}, {"bsn", "the patient's BSN (only its keyed pseudonym is logged)"},
		{"category", "data category read, e.g. medication"}, {"query", "what was read, e.g. a FHIR search"},
		{"token", "id of the access token presented"}, {"purpose", "purpose of use, e.g. TREAT"},
		{"requester", "DID of the requesting organisation"}, {"requester-ura", "URA of the requesting organisation"},
		{"uzi", "UZI number of the professional"}, {"role", "UZI role code of the professional"},
	} {
		record.Flags().String(fl[0], "", fl[1])
	}
	record.MarkFlagRequired("org")
	record.MarkFlagRequired("bsn")

	patient := &cobra.Command{
		Use:   "patient --org DID --bsn BSN",
		Short: "Show who requested a patient's data, refused requests included (the read is logged)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			req := &schakelv1.GetPatientViewRequest{Employee: &schakelv1.Employee{}}
			req.Organization, _ = f.GetString("org")
			req.Bsn, _ = f.GetString("bsn")
			req.Employee.Uzi, _ = f.GetString("uzi")
			req.Employee.Role, _ = f.GetString("role")
			resp, err := call(cmd.Context(), newClient(cmd).logs.GetPatientView, req)
			if err != nil {
				return err
			}
			if !printJSON(cmd, resp) {
				for _, e := range resp.GetEntries() {
					fmt.Fprintf(cmd.OutOrStdout(), "%d\t%s\n", e.GetPatientSeq(), e.GetEntry())
				}
				if len(resp.GetConsents()) > 0 {
					fmt.Fprintln(cmd.OutOrStdout(), "\nconsents in force or pending:")
					printConsents(cmd, resp.GetConsents())
				} else {
					fmt.Fprintln(cmd.OutOrStdout(), "\nno consent in force")
				}
			}
			return nil
		},
	}
	patient.Flags().String("org", "", "DID of the hosted organisation")
	patient.Flags().String("bsn", "", "the patient's BSN")
	patient.Flags().String("uzi", "", "UZI number of who looks")
	patient.Flags().String("role", "", "UZI role code of who looks")
	patient.MarkFlagRequired("org")
	patient.MarkFlagRequired("bsn")

	cmds := []*cobra.Command{export, record, patient}
	for _, c := range cmds {
		addClientFlags(c)
	}
	return cmds
}

// exportLog writes the export directory of org's log through the internal API: every checkpoint,
// then the entries up to the largest checkpoint, so that the export is fully covered.
func exportLog(ctx context.Context, c *client, org, dir string) (checkpoints int, size int64, err error) {
	info, err := call(ctx, c.logs.GetLogInfo, &schakelv1.GetLogInfoRequest{Organization: org, Checkpoint: true})
	if err != nil {
		return 0, 0, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "checkpoints"), 0o755); err != nil {
		return 0, 0, err
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "checkpoints")); len(left) > 0 {
		return 0, 0, fmt.Errorf("export: %s already holds checkpoints", dir)
	}
	if err := os.WriteFile(filepath.Join(dir, "vkey"), []byte(info.GetVkey()+"\n"), 0o644); err != nil {
		return 0, 0, err
	}
	after := int64(-1)
	for {
		page, err := call(ctx, c.logs.ListCheckpoints, &schakelv1.ListCheckpointsRequest{Organization: org, AfterSize: after})
		if err != nil {
			return 0, 0, err
		}
		for _, cp := range page.GetCheckpoints() {
			if err := os.WriteFile(filepath.Join(dir, "checkpoints", strconv.FormatInt(cp.GetSize(), 10)), []byte(cp.GetNote()), 0o644); err != nil {
				return 0, 0, err
			}
			checkpoints++
			after, size = cp.GetSize(), cp.GetSize()
		}
		if len(page.GetCheckpoints()) == 0 {
			break
		}
	}
	f, err := os.Create(filepath.Join(dir, "entries.jsonl"))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	for start := int64(0); start < size; {
		page, err := call(ctx, c.logs.ListEntries, &schakelv1.ListEntriesRequest{Organization: org, Start: start, Limit: int32(min(size-start, maxExportPage))})
		if err != nil {
			return 0, 0, err
		}
		if len(page.GetEntries()) == 0 {
			return 0, 0, fmt.Errorf("export: the node returned no entries at %d of %d", start, size)
		}
		for _, e := range page.GetEntries() {
			w.WriteString(e)
			w.WriteByte('\n')
		}
		start += int64(len(page.GetEntries()))
	}
	if err := w.Flush(); err != nil {
		return 0, 0, err
	}
	return checkpoints, size, f.Sync()
}

const maxExportPage = 1000
