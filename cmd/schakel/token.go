package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Request access tokens from custodians and introspect tokens this node issued",
	}
	cmd.AddCommand(newTokenRequestCmd(), newTokenIntrospectCmd())
	return cmd
}

func newTokenRequestCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "request",
		Short: "Ask the custodian's node for an access token on behalf of an employee",
		Long: `request has this node sign a token request as the requesting organisation, encrypt it to the
custodian and send it over the peer network. The custodian's node decides from its own records
(consent, policy), logs the decision and answers with a token or a refusal; either way this node
logs the custodian's receipt in the requesting organisation's access log. Exit 0 when granted,
3 when refused.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			str := func(name string) string { v, _ := f.GetString(name); return v }
			glass, _ := f.GetBool("break-glass")
			req := &schakelv1.RequestTokenRequest{
				Organization: str("org"), Custodian: str("custodian"), Bsn: str("bsn"),
				DataCategory: str("category"), Purpose: str("purpose"),
				Employee: &schakelv1.AccessEmployee{
					Uzi: str("uzi"), Role: str("role"), Name: str("name"), Assurance: str("assurance"),
				},
				DpopJkt: str("dpop-jkt"), ReferralGrant: str("referral-grant"),
				EmergencyReason: str("emergency"), BreakGlass: glass,
			}
			resp, err := call(cmd.Context(), newClient(cmd).acc.RequestToken, req)
			if err != nil {
				return err
			}
			if !printJSON(cmd, resp) {
				out := cmd.OutOrStdout()
				if resp.GetAccessToken() != "" {
					fmt.Fprintf(out, "granted: %s (expires in %ds)\naccess token: %s\n", resp.GetScope(), resp.GetExpiresIn(), resp.GetAccessToken())
				} else {
					fmt.Fprintf(out, "refused: %s (%s): %s\n", resp.GetError(), resp.GetReason(), resp.GetErrorDescription())
				}
				fmt.Fprintf(out, "custodian's log entry %d; receipt logged as entry %d of this organisation's log\n",
					resp.GetCustodianLogIndex(), resp.GetRequesterLogIndex())
			}
			if resp.GetAccessToken() == "" {
				return &exitError{3, fmt.Errorf("refused: %s", resp.GetReason())}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.String("org", "", "the requesting organisation (DID), hosted on this node")
	f.String("custodian", "", "the custodian organisation (DID) that holds the data")
	f.String("bsn", "", "the patient's BSN")
	f.String("category", "", "data category, e.g. medication")
	f.String("purpose", "TREAT", "HL7 PurposeOfUse: TREAT, ETREAT, HRESCH, ...")
	f.String("uzi", "", "the employee's UZI number")
	f.String("role", "", "the employee's UZI role code, e.g. 01.015")
	f.String("name", "", "the employee's name")
	f.String("assurance", "high", "the employee's authentication assurance: low, substantial, high")
	f.String("dpop-jkt", "", "RFC 7638 thumbprint of the EHR's DPoP key the token is bound to")
	f.String("referral-grant", "", "a referral grant id (planned care)")
	f.String("emergency", "", "state an emergency, with its reason")
	f.Bool("break-glass", false, "ask for the break-the-glass override (only where policy allows it)")
	for _, name := range []string{"org", "custodian", "bsn", "category", "uzi", "role", "dpop-jkt"} {
		_ = cmd.MarkFlagRequired(name)
	}
	addClientFlags(cmd)
	return cmd
}

func newTokenIntrospectCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "introspect TOKEN",
		Short: "Introspect an access token this node issued (RFC 7662); exit 0 when active, 3 when not",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tok, err := readArgOrFile(cmd, args[0])
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), newClient(cmd).acc.Introspect, &schakelv1.IntrospectRequest{Token: tok})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), resp.GetJson())
			if !resp.GetActive() {
				return &exitError{3, errors.New("the token is not active")}
			}
			return nil
		},
	}
	addClientFlags(cmd)
	return cmd
}
