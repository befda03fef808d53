package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/schakel-health/schakel/internal/register"
	"github.com/schakel-health/schakel/internal/vc"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

func newRegisterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "register",
		Short: "Act as a register: the trust anchor that issues organisation credentials",
		Long: `A register admits care organisations by issuing them an OrganizationCredential. It keeps
its own key and revocation list in a directory (--dir) and needs no running node; with --node it
submits what it issues (and its own key events and status list) to a node.`,
	}
	cmd.PersistentFlags().String("dir", "", "the register's directory (env SCHAKEL_REGISTER_DIR)")
	cmd.PersistentFlags().String("node", "", "submit the result to this node's internal API URL")

	dirOf := func(cmd *cobra.Command) (string, error) {
		d := flagOrEnv(cmd.Flags(), "dir", "SCHAKEL_REGISTER_DIR")
		if d == "" {
			return "", &exitError{2, fmt.Errorf("--dir required")}
		}
		return d, nil
	}
	submit := func(cmd *cobra.Command, docs []string) error {
		url, _ := cmd.Flags().GetString("node")
		if url == "" {
			return nil
		}
		_, err := call(cmd.Context(), dial(url).docs.SubmitDocuments, &schakelv1.SubmitDocumentsRequest{Documents: docs})
		if err != nil {
			return fmt.Errorf("submit to %s: %w", url, err)
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "submitted %d documents to %s\n", len(docs), url)
		return nil
	}

	initCmd := &cobra.Command{
		Use:   "init --dir DIR --name NAME",
		Short: "Create a register: its key, DID and revocation list",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := dirOf(cmd)
			if err != nil {
				return err
			}
			name, _ := cmd.Flags().GetString("name")
			r, err := register.Init(cmd.Context(), dir, name, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), r.DID())
			return submit(cmd, r.Documents())
		},
	}
	initCmd.Flags().String("name", "register", "the register's label")

	show := &cobra.Command{
		Use:   "show --dir DIR",
		Short: "Print the register's DID, and with --node submit its key events and status list",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := dirOf(cmd)
			if err != nil {
				return err
			}
			r, err := register.Open(dir)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), r.DID())
			return submit(cmd, r.Documents())
		},
	}

	issue := &cobra.Command{
		Use:   "issue --dir DIR --subject DID --name NAME --ura URA --type CODE --city CITY",
		Short: "Issue an OrganizationCredential to an organisation's DID",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := dirOf(cmd)
			if err != nil {
				return err
			}
			f := cmd.Flags()
			var o vc.Organization
			o.ID, _ = f.GetString("subject")
			o.Name, _ = f.GetString("name")
			o.URA, _ = f.GetString("ura")
			o.Type, _ = f.GetString("type")
			o.City, _ = f.GetString("city")
			days, _ := f.GetInt("valid-days")
			out, _ := f.GetString("out")
			if days < 1 || days > 5*365 {
				return &exitError{2, fmt.Errorf("--valid-days %d outside 1–%d", days, 5*365)}
			}
			r, err := register.Open(dir)
			if err != nil {
				return err
			}
			c, err := r.Issue(cmd.Context(), o, time.Duration(days)*24*time.Hour, time.Now())
			if err != nil {
				return err
			}
			if out != "" {
				if err := os.WriteFile(out, append(c.JWT, '\n'), 0o644); err != nil {
					return err
				}
			}
			fmt.Fprintln(cmd.OutOrStdout(), c.ID)
			return submit(cmd, append(r.Documents(), string(c.JWT)))
		},
	}
	issue.Flags().String("subject", "", "DID of the organisation")
	issue.Flags().String("name", "", "the organisation's registered name")
	issue.Flags().String("ura", "", "URA number (8 digits)")
	issue.Flags().String("type", "", "organisation type, RoleCodeNL (e.g. Z3 huisartspraktijk, J8 openbare apotheek, V6 algemeen ziekenhuis)")
	issue.Flags().String("city", "", "city")
	issue.Flags().Int("valid-days", 365, "validity in days")
	issue.Flags().String("out", "", "also write the credential (compact JWT) to this file")
	for _, n := range []string{"subject", "name", "ura", "type", "city"} {
		issue.MarkFlagRequired(n)
	}

	revoke := &cobra.Command{
		Use:   "revoke --dir DIR --id ID",
		Short: "Revoke an organisation credential the register issued",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := dirOf(cmd)
			if err != nil {
				return err
			}
			id, _ := cmd.Flags().GetString("id")
			r, err := register.Open(dir)
			if err != nil {
				return err
			}
			list, err := r.Revoke(cmd.Context(), id, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %s\n", id)
			return submit(cmd, []string{string(list)})
		},
	}
	revoke.Flags().String("id", "", "credential id")
	revoke.MarkFlagRequired("id")

	cmd.AddCommand(initCmd, show, issue, revoke)
	return cmd
}
