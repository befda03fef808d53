package node

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/schakel-health/schakel/internal/accesslog/verify"
	"github.com/schakel-health/schakel/internal/authz"
	"github.com/schakel-health/schakel/internal/consent"
	"github.com/schakel-health/schakel/internal/register"
	"github.com/schakel-health/schakel/internal/vc"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// testBSN returns the i-th BSN that passes the 11-proof, so that each case has its own patient.
func testBSN(i int) string {
	for n := 100000000 + i*1000; ; n++ {
		s := fmt.Sprint(n)
		sum := 0
		for j := 0; j < 8; j++ {
			sum += (9 - j) * int(s[j]-'0')
		}
		if (sum-int(s[8]-'0'))%11 == 0 {
			return s
		}
	}
}

// hostTyped creates an organisation of the given RoleCodeNL type on n, admitted by reg.
func hostTyped(t testing.TB, n *netNode, reg *register.Register, name, typ string) string {
	t.Helper()
	ctx := t.Context()
	resp, err := n.CreateOrganization(ctx, &schakelv1.CreateOrganizationRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	org := resp.GetOrganization().GetDid()
	c, err := reg.Issue(ctx, vc.Organization{ID: org, Name: name, URA: "03456789", Type: typ, City: "Amersfoort"}, 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.SubmitDocuments(ctx, &schakelv1.SubmitDocumentsRequest{Documents: append(reg.Documents(), string(c.JWT))}); err != nil {
		t.Fatal(err)
	}
	return org
}

// TestAccessRules walks the domain rules through real nodes: each case records its consents at
// the GP practice for its own patient, then the hospital asks. Every answer, grant or refusal,
// must be in the GP practice's log with its reason, and in the hospital's log as a receipt.
func TestAccessRules(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two nodes")
	}
	ctx := t.Context()
	reg := newRegister(t)
	gpNode := startNetNode(t, reg, "", "gp")
	gp := hostTyped(t, gpNode, reg, "Huisartsenpraktijk Jansen", "Z3")
	oldGP := hostTyped(t, gpNode, reg, "Huisartsenpraktijk Jansen (before the merger)", "Z3")
	hNode := startNetNode(t, reg, "", "hospital")
	hospital := hostTyped(t, hNode, reg, "Stadsziekenhuis", "V6")
	gpNode.org, hNode.org = gp, hospital
	link(t, hNode, gpNode)
	eventually(t, 15*time.Second, "the nodes admit each other", func() bool {
		_, err := hNode.dids.Resolve(ctx, gp)
		_, err2 := gpNode.dids.Resolve(ctx, hospital)
		return err == nil && err2 == nil && admittedCount(gpNode) == 1 && admittedCount(hNode) == 1
	})
	jkt := dpopJKT(t)
	record := func(custodian, bsn string, c *schakelv1.Consent) error {
		c.Custodian = custodian
		if c.Purposes == nil {
			c.Purposes = []string{"TREAT"}
		}
		if c.Grantors == nil {
			c.Grantors = []string{"self"}
		}
		c.Channel, c.Assurance = "desk", "high"
		_, err := gpNode.RecordConsent(ctx, &schakelv1.RecordConsentRequest{Consent: c, Bsn: bsn})
		return err
	}
	var grantID, lastGrant string // the referral grant of the case that adds one
	ask := func(custodian, bsn, category, role, purpose string) *schakelv1.RequestTokenResponse {
		t.Helper()
		r := tokenRequest(hospital, custodian, category, role, jkt)
		r.Bsn, r.Purpose, r.ReferralGrant = bsn, purpose, grantID
		grantID = ""
		resp, err := hNode.RequestToken(ctx, r)
		if err != nil {
			t.Fatalf("RequestToken: %v", err)
		}
		return resp
	}
	fifteen := time.Now().AddDate(-15, -1, 0).Format(time.DateOnly)
	cases := []struct {
		name      string
		setup     func(bsn string) error
		category  string
		role      string
		purpose   string
		custodian string
		want      string // "granted" or the refusal reason the hospital is told
	}{
		{name: "consent permit", setup: func(b string) error {
			return record(gp, b, &schakelv1.Consent{Decision: "permit", GranteeOrg: hospital, DataCategories: []string{"medication"}})
		}, want: "granted"},
		{name: "no consent", want: "no-consent"},
		{name: "objection beats a category permit", setup: func(b string) error {
			if err := record(gp, b, &schakelv1.Consent{Decision: "permit", GranteeType: "V6", DataCategories: []string{"medication"}}); err != nil {
				return err
			}
			return record(gp, b, &schakelv1.Consent{Decision: "objection", GranteeType: "V6", DataCategories: []string{"medication"}, Purposes: []string{"TREAT", "ETREAT"}})
		}, want: "no-consent"},
		{name: "organisation permit beats a category objection", setup: func(b string) error {
			if err := record(gp, b, &schakelv1.Consent{Decision: "objection", GranteeType: "V6", DataCategories: []string{"medication"}}); err != nil {
				return err
			}
			return record(gp, b, &schakelv1.Consent{Decision: "permit", GranteeOrg: hospital, DataCategories: []string{"medication"}})
		}, want: "granted"},
		{name: "medication consent does not open the GP summary", setup: func(b string) error {
			return record(gp, b, &schakelv1.Consent{Decision: "permit", GranteeOrg: hospital, DataCategories: []string{"medication"}})
		}, category: "gp-professional-summary", want: "no-consent"},
		{name: "company doctor despite consent", setup: func(b string) error {
			return record(gp, b, &schakelv1.Consent{Decision: "permit", GranteeAny: true, DataCategories: []string{"*"}})
		}, role: "01.008", want: "role-never-allowed"},
		{name: "insurance doctor despite consent", setup: func(b string) error {
			return record(gp, b, &schakelv1.Consent{Decision: "permit", GranteeAny: true, DataCategories: []string{"*"}})
		}, role: "01.048", want: "role-never-allowed"},
		{name: "research without research consent", setup: func(b string) error {
			return record(gp, b, &schakelv1.Consent{Decision: "permit", GranteeOrg: hospital, DataCategories: []string{"medication"}})
		}, purpose: "HRESCH", want: "research-needs-research-consent"},
		{name: "patient of 15, self only: not recorded", setup: func(b string) error {
			err := record(gp, b, &schakelv1.Consent{Decision: "permit", GranteeOrg: hospital, DataCategories: []string{"medication"}, PatientBirthDate: fifteen})
			if err == nil || !strings.Contains(err.Error(), "consent not given by the right person") {
				return fmt.Errorf("a self-only consent of a 15-year-old was recorded (%v)", err)
			}
			return nil
		}, want: "no-consent"},
		{name: "patient of 15, parent and self", setup: func(b string) error {
			return record(gp, b, &schakelv1.Consent{Decision: "permit", GranteeOrg: hospital, DataCategories: []string{"medication"}, PatientBirthDate: fifteen, Grantors: []string{"self", "parent"}})
		}, want: "granted"},
		{name: "referral grant without consent", setup: func(b string) error {
			p, err := gpNode.pseudonymAt(gp, b)
			if err != nil {
				return err
			}
			g, err := gpNode.consents.AddGrant(ctx, consent.Grant{Custodian: gp, Grantee: hospital, Patient: p,
				DataCategories: []string{"medication"}, Resources: []string{"MedicationStatement/42"}, Purpose: "TREAT",
				ValidUntil: time.Now().Add(24 * time.Hour)})
			grantID, lastGrant = g.ID, g.ID
			return err
		}, want: "granted"},
		{name: "succession keeps consent working", custodian: gp, setup: func(b string) error {
			if err := record(oldGP, b, &schakelv1.Consent{Decision: "permit", GranteeOrg: hospital, DataCategories: []string{"medication"}}); err != nil {
				return err
			}
			return gpNode.consents.AddSuccession(ctx, oldGP, gp)
		}, want: "granted"},
	}
	var refusals int
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bsn := testBSN(i + 1)
			if tc.setup != nil {
				if err := tc.setup(bsn); err != nil {
					t.Fatalf("setup: %v", err)
				}
			}
			category, role, purpose, custodian := "medication", "01.015", "TREAT", gp
			if tc.category != "" {
				category = tc.category
			}
			if tc.role != "" {
				role = tc.role
			}
			if tc.purpose != "" {
				purpose = tc.purpose
			}
			if tc.custodian != "" {
				custodian = tc.custodian
			}
			resp := ask(custodian, bsn, category, role, purpose)
			got := "granted"
			if resp.GetAccessToken() == "" {
				got = resp.GetReason()
				refusals++
			}
			if got != tc.want {
				t.Fatalf("got %s (%s), want %s", got, resp.GetErrorDescription(), tc.want)
			}
			if tc.name == "referral grant without consent" && !strings.Contains(resp.GetScope(), "resource:MedicationStatement/42") {
				t.Errorf("scope %q does not name the grant's resources", resp.GetScope())
			}
			if resp.GetReceipt() == "" || resp.GetRequesterLogIndex() < 0 {
				t.Errorf("no receipt")
			}
		})
	}
	if t.Failed() {
		return
	}
	// The referral grant is for medication only.
	grantID = lastGrant
	if r := ask(gp, testBSN(11), "gp-professional-summary", "01.015", "TREAT"); r.GetAccessToken() != "" {
		t.Error("a referral grant for medication opened the GP summary")
	}
	refusals++

	// A BSN that fails the 11-proof never leaves the requesting node.
	r := tokenRequest(hospital, gp, "medication", "01.015", jkt)
	r.Bsn = "123456789"
	if _, err := hNode.RequestToken(ctx, r); err == nil || !strings.Contains(err.Error(), "11-proof") {
		t.Errorf("a BSN failing the 11-proof: %v", err)
	}

	// Assertions the custodian must refuse: replayed, expired, signed with a rotated-out key.
	_, sig, err := hNode.orgs.signingKey(ctx, hospital)
	if err != nil {
		t.Fatal(err)
	}
	st, err := hNode.dids.Resolve(ctx, gp)
	if err != nil {
		t.Fatal(err)
	}
	assertion := func(iat time.Time) []byte {
		t.Helper()
		jwe, err := authz.NewAssertion(sig, "", authz.AssertionClaims{Issuer: hospital, Custodian: gp, IssuedAt: iat,
			Employee: authz.Employee{UZI: "900012345", Role: "01.015", Name: "A. de Vries", Assurance: "high"},
			BSN:      testBSN(1), DataCategory: "medication", Purpose: "TREAT", DPoPJKT: jkt}, st.Current().AgreementKey)
		if err != nil {
			t.Fatal(err)
		}
		return jwe
	}
	send := func(jwe []byte) *schakelv1.PeerServiceRequestTokenResponse {
		t.Helper()
		resp, err := hNode.net.RequestToken(ctx, gp, &schakelv1.PeerServiceRequestTokenRequest{Assertion: jwe})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	once := assertion(time.Now())
	if r := send(once); r.GetAccessToken() == "" {
		t.Fatalf("a fresh assertion was refused: %s", r.GetErrorDescription())
	}
	if r := send(once); r.GetAccessToken() != "" || r.GetError() != "invalid_grant" {
		t.Errorf("replayed assertion: %+v", r)
	}
	if r := send(assertion(time.Now().Add(-10 * time.Minute))); r.GetAccessToken() != "" || r.GetError() != "invalid_grant" {
		t.Errorf("expired assertion: %+v", r)
	}
	if _, err := hNode.RotateKey(ctx, &schakelv1.RotateKeyRequest{Organization: hospital}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the rotation reaches the GP practice's node", func() bool {
		s, err := gpNode.dids.Resolve(ctx, hospital)
		return err == nil && s.Seq == 1
	})
	time.Sleep(1100 * time.Millisecond) // key validity is in whole seconds
	if r := send(assertion(time.Now())); r.GetAccessToken() != "" || r.GetError() != "invalid_grant" {
		t.Errorf("assertion signed with a rotated-out key: %+v", r)
	}
	refusals += 3

	// Every refusal is in the GP practice's log with its reason.
	var logged int
	for _, e := range entries(t, gpNode) {
		if e.Event == "access-decision" && e.Outcome == "refused" {
			logged++
			if e.Reason == "" {
				t.Errorf("refusal without a reason: %+v", e)
			}
		}
	}
	if logged != refusals {
		t.Errorf("the GP practice's log holds %d refusals, the hospital was refused %d times", logged, refusals)
	}
	_ = context.Background
}

// TestAccessReplayAfterRestart: the jti of a decided assertion is spent in the same transaction
// as the decision's log entry, so the custodian refuses the assertion again after a restart, and
// both decisions are in its log.
func TestAccessReplayAfterRestart(t *testing.T) {
	reg := newRegister(t)
	gp, p, assertions, dir := accessSetupOn(t, reg, 1)
	ctx := t.Context()
	resp, err := gp.decideToken(ctx, p, assertions[0])
	if err != nil || resp.GetAccessToken() == "" {
		t.Fatalf("first use: %+v, %v", resp, err)
	}
	org := gp.org
	if err := gp.Node.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	gp = startNetNode(t, reg, dir, "gp")
	gp.org = org
	resp, err = gp.decideToken(ctx, p, assertions[0])
	if err != nil {
		t.Fatalf("replay after restart: %v", err)
	}
	if resp.GetAccessToken() != "" || resp.GetError() != "invalid_grant" || !strings.Contains(resp.GetErrorDescription(), "replayed") {
		t.Fatalf("replay after restart answered %+v, want invalid_grant: replayed", resp)
	}
	// The setup's 1,000 consents come first.
	list, err := gp.ListEntries(ctx, &schakelv1.ListEntriesRequest{Organization: org, Start: 1000, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var granted, refused int
	for _, raw := range list.GetEntries() {
		e, err := verify.ParseEntry([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		if e.Event == verify.EventAccessDecision && e.Action == "token" {
			switch e.Outcome {
			case verify.OutcomeGranted:
				granted++
			case verify.OutcomeRefused:
				refused++
			}
		}
	}
	if granted != 1 || refused != 1 {
		t.Fatalf("custodian's log holds %d granted and %d refused token decisions, want 1 and 1", granted, refused)
	}
}
