package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

func newConsentCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "consent",
		Short: "Record, relay, process, revoke and list patients' consents at the custodian; referrals and successions",
	}
	cmd.AddCommand(newConsentRecordCmd(), newConsentRequestCmd(), newConsentProcessCmd(),
		newConsentRevokeCmd(), newConsentListCmd(), newConsentNoticesCmd(), newReferralCmd(), newSuccessionCmd())
	return cmd
}

// addConsentFlags adds the flags that describe a consent.
func addConsentFlags(f *pflag.FlagSet) {
	f.String("custodian", "", "the custodian organisation (DID) that keeps the consent")
	f.String("bsn", "", "the patient's BSN")
	f.String("decision", "permit", "permit or objection")
	f.String("grantee-org", "", "the organisation (DID) the consent is for")
	f.String("grantee-type", "", "or: the organisation type (RoleCodeNL, e.g. V6) it is for")
	f.Bool("grantee-any", false, "or: any care provider")
	f.StringSlice("category", nil, "data categories, e.g. medication (repeat or comma-separate; * for all)")
	f.StringSlice("purpose", []string{"TREAT"}, "purposes (HL7 PurposeOfUse)")
	f.StringSlice("grantor", []string{"self"}, "who gives it: self, parent, guardian, legal-representative")
	f.String("birth-date", "", "the patient's date of birth, YYYY-MM-DD (the grantor rules use the age)")
	f.String("channel", "desk", "desk, form or online")
	f.String("assurance", "high", "assurance of the channel: low, substantial, high")
	f.String("basis", "", "legal basis or form reference")
	f.Duration("valid-for", 0, "how long the consent holds (0: until revoked)")
}

func consentFromFlags(f *pflag.FlagSet) *schakelv1.Consent {
	str := func(name string) string { v, _ := f.GetString(name); return v }
	list := func(name string) []string { v, _ := f.GetStringSlice(name); return v }
	anyProvider, _ := f.GetBool("grantee-any")
	validFor, _ := f.GetDuration("valid-for")
	now := time.Now()
	c := &schakelv1.Consent{
		Custodian: str("custodian"), Decision: str("decision"), Basis: str("basis"),
		GranteeOrg: str("grantee-org"), GranteeType: str("grantee-type"), GranteeAny: anyProvider,
		DataCategories: list("category"), Purposes: list("purpose"), Grantors: list("grantor"),
		PatientBirthDate: str("birth-date"), Channel: str("channel"), Assurance: str("assurance"),
		ValidFromUnix: now.Unix(),
	}
	if validFor > 0 {
		c.ValidUntilUnix = now.Add(validFor).Unix()
	}
	return c
}

func newConsentRecordCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "record",
		Short: "Record a consent or objection given at the custodian's desk or on a form (in force at once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bsn, _ := cmd.Flags().GetString("bsn")
			resp, err := call(cmd.Context(), newClient(cmd).acc.RecordConsent, &schakelv1.RecordConsentRequest{Consent: consentFromFlags(cmd.Flags()), Bsn: bsn})
			if err != nil {
				return err
			}
			if !printJSON(cmd, resp) {
				printConsents(cmd, []*schakelv1.Consent{resp.GetConsent()})
			}
			return nil
		},
	}
	addConsentFlags(cmd.Flags())
	_ = cmd.MarkFlagRequired("custodian")
	_ = cmd.MarkFlagRequired("bsn")
	addClientFlags(cmd)
	return cmd
}

func newConsentRequestCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "request",
		Short: "At a portal organisation's node: relay a patient's online consent to the custodian (pending there)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bsn, _ := cmd.Flags().GetString("bsn")
			org, _ := cmd.Flags().GetString("org")
			c := consentFromFlags(cmd.Flags())
			c.Channel = "online"
			resp, err := call(cmd.Context(), newClient(cmd).acc.RequestConsent, &schakelv1.RequestConsentRequest{Organization: org, Consent: c, Bsn: bsn})
			if err != nil {
				return err
			}
			if !printJSON(cmd, resp) {
				fmt.Fprintf(cmd.OutOrStdout(), "request %s sent to the custodian (message %s); the notice comes back when it is processed\n", resp.GetRequestId(), resp.GetMessageId())
			}
			return nil
		},
	}
	addConsentFlags(cmd.Flags())
	cmd.Flags().String("org", "", "the portal organisation (DID), hosted on this node")
	for _, name := range []string{"org", "custodian", "bsn"} {
		_ = cmd.MarkFlagRequired(name)
	}
	addClientFlags(cmd)
	return cmd
}

// consentIDCmd is a command that acts on one consent of a custodian and prints it.
func consentIDCmd(use, short string, act func(cmd *cobra.Command, c *client, custodian, id string) (*schakelv1.Consent, error)) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use + " ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			custodian, _ := cmd.Flags().GetString("custodian")
			c, err := act(cmd, newClient(cmd), custodian, args[0])
			if err != nil {
				return err
			}
			if !printJSON(cmd, c) {
				printConsents(cmd, []*schakelv1.Consent{c})
			}
			return nil
		},
	}
	cmd.Flags().String("custodian", "", "the custodian organisation (DID)")
	_ = cmd.MarkFlagRequired("custodian")
	addClientFlags(cmd)
	return cmd
}

func newConsentProcessCmd() *cobra.Command {
	cmd := consentIDCmd("process", "Accept (or with --reject, reject) a pending consent; the portal that relayed it is told",
		func(cmd *cobra.Command, c *client, custodian, id string) (*schakelv1.Consent, error) {
			reject, _ := cmd.Flags().GetString("reject")
			resp, err := call(cmd.Context(), c.acc.ProcessConsent, &schakelv1.ProcessConsentRequest{
				Custodian: custodian, Id: id, Accept: reject == "", Reason: reject,
			})
			return resp.GetConsent(), err
		})
	cmd.Flags().String("reject", "", "reject with this reason instead of accepting")
	return cmd
}

func newConsentRevokeCmd() *cobra.Command {
	cmd := consentIDCmd("revoke", "Revoke a consent, effective at once",
		func(cmd *cobra.Command, c *client, custodian, id string) (*schakelv1.Consent, error) {
			reason, _ := cmd.Flags().GetString("reason")
			resp, err := call(cmd.Context(), c.acc.RevokeConsent, &schakelv1.RevokeConsentRequest{Custodian: custodian, Id: id, Reason: reason})
			return resp.GetConsent(), err
		})
	cmd.Flags().String("reason", "revoked by the patient", "why")
	return cmd
}

func newConsentListCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List a custodian's consents: a patient's (--bsn) or by status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			custodian, _ := f.GetString("custodian")
			bsn, _ := f.GetString("bsn")
			status, _ := f.GetString("status")
			limit, _ := f.GetInt32("limit")
			resp, err := call(cmd.Context(), newClient(cmd).acc.ListConsents, &schakelv1.ListConsentsRequest{Custodian: custodian, Bsn: bsn, Status: status, Limit: limit})
			if err != nil {
				return err
			}
			if !printJSON(cmd, resp) {
				printConsents(cmd, resp.GetConsents())
			}
			return nil
		},
	}
	cmd.Flags().String("custodian", "", "the custodian organisation (DID)")
	cmd.Flags().String("bsn", "", "the patient's BSN")
	cmd.Flags().String("status", "", "active, pending, rejected, revoked or superseded")
	cmd.Flags().Int32("limit", 100, "at most this many")
	_ = cmd.MarkFlagRequired("custodian")
	addClientFlags(cmd)
	return cmd
}

func newConsentNoticesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "notices",
		Short: "The custodians' notices on consent requests a portal relayed, and referral grants received",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			org, _ := cmd.Flags().GetString("org")
			resp, err := call(cmd.Context(), newClient(cmd).acc.ListNotices, &schakelv1.ListNoticesRequest{Organization: org})
			if err != nil {
				return err
			}
			if printJSON(cmd, resp) {
				return nil
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "REQUEST\tCUSTODIAN\tOUTCOME\tCONSENT\tREASON")
			for _, n := range resp.GetNotices() {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", n.GetRequestId(), n.GetCustodian(), n.GetOutcome(), n.GetConsentId(), n.GetReason())
			}
			if err := w.Flush(); err != nil || len(resp.GetGrants()) == 0 {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "\nreferral grants received:")
			w = tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "GRANT\tCUSTODIAN\tCATEGORIES\tRESOURCES\tPURPOSE\tUNTIL")
			for _, g := range resp.GetGrants() {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", g.GetGrantId(), g.GetCustodian(), strings.Join(g.GetDataCategories(), ","),
					strings.Join(g.GetResources(), ","), g.GetPurpose(), time.Unix(g.GetValidUntilUnix(), 0).UTC().Format(time.RFC3339))
			}
			return w.Flush()
		},
	}
	cmd.Flags().String("org", "", "the portal organisation (DID)")
	_ = cmd.MarkFlagRequired("org")
	addClientFlags(cmd)
	return cmd
}

func printConsents(cmd *cobra.Command, cs []*schakelv1.Consent) {
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tSTATUS\tDECISION\tGRANTEE\tCATEGORIES\tPURPOSES\tCHANNEL")
	for _, c := range cs {
		grantee := c.GetGranteeOrg()
		switch {
		case c.GetGranteeType() != "":
			grantee = "type " + c.GetGranteeType()
		case c.GetGranteeAny():
			grantee = "any care provider"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.GetId(), c.GetStatus(), c.GetDecision(), grantee,
			strings.Join(c.GetDataCategories(), ","), strings.Join(c.GetPurposes(), ","), c.GetChannel())
	}
	_ = w.Flush()
}

func newReferralCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "refer",
		Short: "As the referring custodian, grant one organisation access for planned care (no consent needed), delivered to it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			str := func(name string) string { v, _ := f.GetString(name); return v }
			cats, _ := f.GetStringSlice("category")
			res, _ := f.GetStringSlice("resource")
			validFor, _ := f.GetDuration("valid-for")
			resp, err := call(cmd.Context(), newClient(cmd).acc.IssueReferralGrant, &schakelv1.IssueReferralGrantRequest{
				Custodian: str("custodian"), Grantee: str("grantee"), Bsn: str("bsn"), DataCategories: cats,
				Resources: res, Purpose: str("purpose"), ValidForSeconds: int64(validFor / time.Second),
			})
			if err != nil {
				return err
			}
			if !printJSON(cmd, resp) {
				fmt.Fprintf(cmd.OutOrStdout(), "referral grant %s sent to the grantee (message %s)\n", resp.GetGrantId(), resp.GetMessageId())
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.String("custodian", "", "the referring organisation (DID), hosted on this node")
	f.String("grantee", "", "the organisation (DID) the patient is referred to")
	f.String("bsn", "", "the patient's BSN")
	f.StringSlice("category", nil, "data categories the grant covers")
	f.StringSlice("resource", nil, "FHIR references it covers, e.g. DocumentReference/123 (default: the whole categories)")
	f.String("purpose", "TREAT", "HL7 PurposeOfUse")
	f.Duration("valid-for", 7*24*time.Hour, "lifetime, at most 720h")
	for _, name := range []string{"custodian", "grantee", "bsn", "category"} {
		_ = cmd.MarkFlagRequired(name)
	}
	addClientFlags(cmd)
	return cmd
}

func newSuccessionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "succession",
		Short: "As the organisation succeeded, declare its successor: its consents carry over (a public credential)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			str := func(name string) string { v, _ := f.GetString(name); return v }
			resp, err := call(cmd.Context(), newClient(cmd).acc.DeclareSuccession, &schakelv1.DeclareSuccessionRequest{
				Predecessor: str("organization"), Successor: str("successor"), Reason: str("reason"),
			})
			if err != nil {
				return err
			}
			if !printJSON(cmd, resp) {
				fmt.Fprintf(cmd.OutOrStdout(), "succession declared: %s continues %s (credential %s)\n", str("successor"), str("organization"), resp.GetCredentialId())
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.String("organization", "", "the organisation (DID) that is succeeded, hosted on this node (or --org)")
	// --org, the name the other commands use for a hosted organisation, is accepted as well.
	f.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		if name == "org" {
			name = "organization"
		}
		return pflag.NormalizedName(name)
	})
	f.String("successor", "", "the organisation (DID) that continues it")
	f.String("reason", "merged", "renamed, merged or moved")
	for _, name := range []string{"organization", "successor"} {
		_ = cmd.MarkFlagRequired(name)
	}
	addClientFlags(cmd)
	return cmd
}
