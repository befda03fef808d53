package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

func newCredentialCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "credential",
		Short: "Issue, list, search, verify and revoke credentials",
	}
	addClientFlags(cmd)

	issue := &cobra.Command{
		Use:   "issue --org DID --endpoint TYPE=URL [--category C] [--purpose P]",
		Short: "Publish a hosted organisation's service registration (self-issued)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			org, _ := f.GetString("org")
			eps, _ := f.GetStringSlice("endpoint")
			cats, _ := f.GetStringSlice("category")
			purposes, _ := f.GetStringSlice("purpose")
			days, _ := f.GetInt32("valid-days")
			sr := &schakelv1.ServiceRegistration{DataCategories: cats, Purposes: purposes}
			for _, e := range eps {
				typ, url, ok := strings.Cut(e, "=")
				if !ok {
					return &exitError{2, fmt.Errorf("--endpoint %q: want TYPE=URL", e)}
				}
				sr.Endpoints = append(sr.Endpoints, &schakelv1.Endpoint{Type: typ, Url: url})
			}
			resp, err := call(cmd.Context(), newClient(cmd).cred.IssueCredential, &schakelv1.IssueCredentialRequest{
				Organization: org,
				Subject:      &schakelv1.IssueCredentialRequest_ServiceRegistration{ServiceRegistration: sr},
				ValidDays:    days,
			})
			if err != nil {
				return err
			}
			if !printJSON(cmd, resp) {
				fmt.Fprintln(cmd.OutOrStdout(), resp.GetCredential().GetId())
			}
			return nil
		},
	}
	issue.Flags().String("org", "", "DID of the hosted organisation that issues")
	issue.Flags().StringSlice("endpoint", nil, "service endpoint TYPE=URL, e.g. fhir=https://ehr.example/fhir; repeatable")
	issue.Flags().StringSlice("category", nil, "data category offered, e.g. medication; repeatable")
	issue.Flags().StringSlice("purpose", nil, "purpose of use supported, e.g. TREAT; repeatable")
	issue.Flags().Int32("valid-days", 0, "validity in days (0: the node's default)")
	issue.MarkFlagRequired("org")
	issue.MarkFlagRequired("endpoint")

	list := &cobra.Command{
		Use:   "list [--org DID] [--type TYPE]",
		Short: "List the credentials the node holds, with their status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			org, _ := cmd.Flags().GetString("org")
			typ, _ := cmd.Flags().GetString("type")
			resp, err := call(cmd.Context(), newClient(cmd).cred.ListCredentials, &schakelv1.ListCredentialsRequest{Organization: org, Type: typ})
			if err != nil {
				return err
			}
			if !printJSON(cmd, resp) {
				for _, c := range resp.GetCredentials() {
					printCredential(cmd, c)
				}
			}
			return nil
		},
	}
	list.Flags().String("org", "", "only credentials this DID issued or is the subject of")
	list.Flags().String("type", "", "only this type, e.g. OrganizationCredential")

	search := &cobra.Command{
		Use:   "search [--name PATTERN] [--ura URA] [--type CODE] [--city CITY]",
		Short: "Search the organisation directory (name with a trailing * wildcard)",
		Example: `  schakel credential search --name 'jans*'
  schakel credential search --type Z3 --city Utrecht`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			q := &schakelv1.SearchDirectoryRequest{}
			q.Name, _ = f.GetString("name")
			q.Ura, _ = f.GetString("ura")
			q.Type, _ = f.GetString("type")
			q.City, _ = f.GetString("city")
			q.Limit, _ = f.GetInt32("limit")
			resp, err := call(cmd.Context(), newClient(cmd).cred.SearchDirectory, q)
			if err != nil {
				return err
			}
			if !printJSON(cmd, resp) {
				for _, e := range resp.GetEntries() {
					o := e.GetOrganization()
					line := fmt.Sprintf("%s\tURA %s\t%s\t%s\t%s", o.GetName(), o.GetUra(), o.GetType(), o.GetCity(), e.GetDid())
					for _, ep := range e.GetService().GetEndpoints() {
						line += fmt.Sprintf("\t%s=%s", ep.GetType(), ep.GetUrl())
					}
					fmt.Fprintln(cmd.OutOrStdout(), line)
				}
				if len(resp.GetEntries()) == 0 {
					fmt.Fprintln(cmd.ErrOrStderr(), "no organisations found")
				}
			}
			return nil
		},
	}
	search.Flags().String("name", "", "name, case- and accent-insensitive; a trailing * matches any continuation")
	search.Flags().String("ura", "", "URA number")
	search.Flags().String("type", "", "organisation type (RoleCodeNL), e.g. Z3")
	search.Flags().String("city", "", "city")
	search.Flags().Int32("limit", 0, "at most this many results (default 50)")

	verify := &cobra.Command{
		Use:   "verify (--id ID | JWT | @FILE)",
		Short: "Verify a credential; exit 1 when it is not valid",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &schakelv1.VerifyCredentialRequest{}
			id, _ := cmd.Flags().GetString("id")
			switch {
			case id != "" && len(args) == 0:
				req.Credential = &schakelv1.VerifyCredentialRequest_Id{Id: id}
			case id == "" && len(args) == 1:
				jwt, err := readArgOrFile(cmd, args[0])
				if err != nil {
					return &exitError{2, err}
				}
				req.Credential = &schakelv1.VerifyCredentialRequest_Jwt{Jwt: jwt}
			default:
				return &exitError{2, fmt.Errorf("verify: give --id ID or a JWT (or @file), not both")}
			}
			resp, err := call(cmd.Context(), newClient(cmd).cred.VerifyCredential, req)
			if err != nil {
				return err
			}
			if !printJSON(cmd, resp) {
				if resp.GetValid() {
					fmt.Fprintf(cmd.OutOrStdout(), "valid: %s %s issued by %s to %s\n", resp.GetCredential().GetTypes()[1], resp.GetCredential().GetId(), resp.GetCredential().GetIssuer(), resp.GetCredential().GetSubject())
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "NOT valid: %s\n", resp.GetReason())
				}
			}
			if !resp.GetValid() {
				return &exitError{1, fmt.Errorf("credential not valid: %s", resp.GetReason())}
			}
			return nil
		},
	}
	verify.Flags().String("id", "", "id of a credential the node holds")

	revoke := &cobra.Command{
		Use:   "revoke --org DID --id ID",
		Short: "Revoke a credential a hosted organisation issued",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			org, _ := cmd.Flags().GetString("org")
			id, _ := cmd.Flags().GetString("id")
			resp, err := call(cmd.Context(), newClient(cmd).cred.RevokeCredential, &schakelv1.RevokeCredentialRequest{Organization: org, CredentialId: id})
			if err != nil {
				return err
			}
			if !printJSON(cmd, resp) {
				fmt.Fprintf(cmd.OutOrStdout(), "revoked %s (status list %s, index %d)\n", id, resp.GetStatusListId(), resp.GetStatusIndex())
			}
			return nil
		},
	}
	revoke.Flags().String("org", "", "DID of the hosted organisation that issued it")
	revoke.Flags().String("id", "", "credential id")
	revoke.MarkFlagRequired("org")
	revoke.MarkFlagRequired("id")

	submit := &cobra.Command{
		Use:   "submit JWS|@FILE...",
		Short: "Submit signed documents (key events, credentials, status lists) to the node",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &schakelv1.SubmitDocumentsRequest{}
			for _, a := range args {
				d, err := readArgOrFile(cmd, a)
				if err != nil {
					return &exitError{2, err}
				}
				req.Documents = append(req.Documents, strings.Fields(d)...)
			}
			resp, err := call(cmd.Context(), newClient(cmd).docs.SubmitDocuments, req)
			if err != nil {
				return err
			}
			if !printJSON(cmd, resp) {
				for _, r := range resp.GetResults() {
					state := "stored"
					if r.GetDuplicate() {
						state = "already held"
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\t%s\n", r.GetKind(), r.GetId(), state)
				}
			}
			return nil
		},
	}
	cmd.AddCommand(issue, list, search, verify, revoke, submit)
	return cmd
}

func printCredential(cmd *cobra.Command, c *schakelv1.Credential) {
	kind := ""
	if len(c.GetTypes()) > 1 {
		kind = c.GetTypes()[1]
	}
	status := strings.TrimPrefix(c.GetStatus().String(), "CREDENTIAL_STATUS_")
	line := fmt.Sprintf("%s\t%s\t%s\tissuer %s\tsubject %s\tuntil %s", c.GetId(), kind, status, c.GetIssuer(), c.GetSubject(),
		time.Unix(c.GetValidUntilUnix(), 0).UTC().Format(time.DateOnly))
	if c.GetStatusReason() != "" {
		line += "\t(" + c.GetStatusReason() + ")"
	}
	fmt.Fprintln(cmd.OutOrStdout(), line)
}
