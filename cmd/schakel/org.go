package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

func newOrgCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "org",
		Short: "Manage the organisations this node hosts",
	}
	addClientFlags(cmd)
	create := &cobra.Command{
		Use:   "create --name NAME",
		Short: "Create a hosted organisation: keys, DID and DID document",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			name, _ := cmd.Flags().GetString("name")
			resp, err := call(cmd.Context(), newClient(cmd).orgs.CreateOrganization, &schakelv1.CreateOrganizationRequest{Name: name})
			if err != nil {
				return err
			}
			if !printJSON(cmd, resp) {
				fmt.Fprintln(cmd.OutOrStdout(), resp.GetOrganization().GetDid())
			}
			return nil
		},
	}
	create.Flags().String("name", "", "the organisation's name (its authoritative name comes from its organisation credential)")
	create.MarkFlagRequired("name")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the hosted organisations",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := call(cmd.Context(), newClient(cmd).orgs.ListOrganizations, &schakelv1.ListOrganizationsRequest{})
			if err != nil {
				return err
			}
			if !printJSON(cmd, resp) {
				for _, o := range resp.GetOrganizations() {
					fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\tkey %s\tsince %s\n", o.GetDid(), o.GetName(), o.GetSigningKeyId(), time.Unix(o.GetCreatedUnix(), 0).UTC().Format(time.RFC3339))
				}
			}
			return nil
		},
	}
	rotate := &cobra.Command{
		Use:   "rotate-key --org DID",
		Short: "Rotate an organisation's keys; earlier signatures stay verifiable",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			org, _ := cmd.Flags().GetString("org")
			resp, err := call(cmd.Context(), newClient(cmd).orgs.RotateKey, &schakelv1.RotateKeyRequest{Organization: org})
			if err != nil {
				return err
			}
			if !printJSON(cmd, resp) {
				fmt.Fprintf(cmd.OutOrStdout(), "rotated %s: new signing key %s\n", org, resp.GetNewKeyId())
			}
			return nil
		},
	}
	rotate.Flags().String("org", "", "DID of the hosted organisation")
	rotate.MarkFlagRequired("org")
	cmd.AddCommand(create, list, rotate)
	return cmd
}

func readFileLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return b, nil
}
