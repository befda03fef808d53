package node

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/api"
	"github.com/schakel-health/schakel/internal/vc"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// TestSuccession: a GP practice merged into another declares its successor. A consent recorded
// at the predecessor then opens the successor's data to the hospital; the hospital's node learns
// the succession by gossip, a node that joins later by catch-up. A succession for an organisation
// the node does not host, a forged one, and a referral grant offered as a public document are
// refused.
func TestSuccession(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	ctx := t.Context()
	reg := newRegister(t)
	gpNode := startNetNode(t, reg, "", "gp")
	gp := hostTyped(t, gpNode, reg, "Huisartsenpraktijk Jansen", "Z3")
	oldGP := hostTyped(t, gpNode, reg, "Huisartsenpraktijk De Vries (merged)", "Z3")
	hNode := startNetNode(t, reg, "", "hospital")
	hospital := hostTyped(t, hNode, reg, "Stadsziekenhuis", "V6")
	gpNode.org, hNode.org = gp, hospital
	link(t, hNode, gpNode)
	eventually(t, 15*time.Second, "the nodes admit each other", func() bool {
		_, err := hNode.dids.Resolve(ctx, gp)
		_, err2 := hNode.dids.Resolve(ctx, oldGP)
		_, err3 := gpNode.dids.Resolve(ctx, hospital)
		return err == nil && err2 == nil && err3 == nil && admittedCount(gpNode) == 1 && admittedCount(hNode) == 1
	})

	// The patient consented at the predecessor.
	bsn := testBSN(60)
	if _, err := gpNode.RecordConsent(ctx, &schakelv1.RecordConsentRequest{Bsn: bsn, Consent: &schakelv1.Consent{
		Custodian: oldGP, Decision: "permit", GranteeOrg: hospital, DataCategories: []string{"medication"},
		Purposes: []string{"TREAT"}, Grantors: []string{"self"}, Channel: "desk", Assurance: "high"}}); err != nil {
		t.Fatalf("RecordConsent: %v", err)
	}
	jkt := dpopJKT(t)
	ask := func() *schakelv1.RequestTokenResponse {
		t.Helper()
		r := tokenRequest(hospital, gp, "medication", "01.015", jkt)
		r.Bsn = bsn
		resp, err := hNode.RequestToken(ctx, r)
		if err != nil {
			t.Fatalf("RequestToken: %v", err)
		}
		return resp
	}
	if r := ask(); r.GetAccessToken() != "" || r.GetReason() != "no-consent" {
		t.Fatalf("before the succession, the successor as custodian: token %t, reason %q; want no-consent", r.GetAccessToken() != "", r.GetReason())
	}

	// Refused declarations leave no succession behind.
	refusals := []struct {
		name string
		req  *schakelv1.DeclareSuccessionRequest
		want error
	}{
		{"predecessor not hosted here", &schakelv1.DeclareSuccessionRequest{Predecessor: hospital, Successor: gp, Reason: "merged"}, ErrUnknownOrganization},
		{"unknown reason", &schakelv1.DeclareSuccessionRequest{Predecessor: oldGP, Successor: gp, Reason: "sold"}, api.ErrInvalidArgument},
		{"successor unknown", &schakelv1.DeclareSuccessionRequest{Predecessor: oldGP, Successor: "did:schakel:unknown", Reason: "merged"}, api.ErrNotFound},
		{"successor is the predecessor", &schakelv1.DeclareSuccessionRequest{Predecessor: oldGP, Successor: oldGP, Reason: "renamed"}, api.ErrInvalidArgument},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := gpNode.DeclareSuccession(ctx, tc.req); !errors.Is(err, tc.want) {
				t.Fatalf("DeclareSuccession = %v, want %v", err, tc.want)
			}
		})
	}
	if preds, err := gpNode.consents.Predecessors(ctx, gp); err != nil || len(preds) != 0 {
		t.Fatalf("Predecessors after refused declarations = %v, %v; want none", preds, err)
	}

	d, err := gpNode.DeclareSuccession(ctx, &schakelv1.DeclareSuccessionRequest{Predecessor: oldGP, Successor: gp, Reason: "merged"})
	if err != nil {
		t.Fatalf("DeclareSuccession: %v", err)
	}
	c, err := vc.Parse([]byte(d.GetCredential()))
	if err != nil || c.Kind != vc.CustodianSuccessionCredential || c.Issuer != oldGP || c.Subject != gp || c.ID != d.GetCredentialId() {
		t.Fatalf("declared credential %+v, %v", c, err)
	}
	if again, err := gpNode.DeclareSuccession(ctx, &schakelv1.DeclareSuccessionRequest{Predecessor: oldGP, Successor: gp, Reason: "merged"}); err != nil || again.GetCredentialId() != d.GetCredentialId() {
		t.Fatalf("DeclareSuccession again = %v, %v; want the same credential %s", again.GetCredentialId(), err, d.GetCredentialId())
	}
	if r := ask(); r.GetAccessToken() == "" {
		t.Fatalf("after the succession, the consent at the predecessor was not followed: %s (%s)", r.GetReason(), r.GetErrorDescription())
	}

	// The hospital's node learns it by gossip, a node that joins later by catch-up.
	learned := func(n *netNode) bool {
		preds, err := n.consents.Predecessors(ctx, gp)
		return err == nil && slices.Equal(preds, []string{oldGP})
	}
	eventually(t, 15*time.Second, "the hospital's node records the succession it received", func() bool { return learned(hNode) })
	late := startNetNode(t, reg, "", "pharmacy")
	late.org = hostTyped(t, late, reg, "Apotheek Centrum", "J8")
	link(t, late, gpNode)
	eventually(t, 20*time.Second, "a node that joined later records the succession by catch-up", func() bool { return learned(late) })

	// A node that stored the credential but stopped before following it (the credential is then
	// never fetched again) follows it at its next start.
	dir := t.TempDir()
	if _, err := Init(dir); err != nil {
		t.Fatalf("Init: %v", err)
	}
	solo := startNetNode(t, reg, dir, "solo")
	events, err := gpNode.dids.Events(ctx, oldGP)
	if err != nil {
		t.Fatalf("Events: %v", err)
	}
	list, err := gpNode.creds.StatusList(ctx, c.Status.StatusListCredential)
	if err != nil {
		t.Fatalf("StatusList: %v", err)
	}
	var docs []string // the predecessor's key events, genesis first, then its status list
	for _, e := range events {
		docs = append(docs, string(e))
	}
	docs = append(docs, string(list))
	if _, err := solo.SubmitDocuments(ctx, &schakelv1.SubmitDocumentsRequest{Documents: docs}); err != nil {
		t.Fatalf("SubmitDocuments: %v", err)
	}
	if _, added, err := solo.creds.Add(ctx, c.JWT); err != nil || !added {
		t.Fatalf("creds.Add(succession) = %v, %v", added, err)
	}
	if learned(solo) {
		t.Fatalf("the succession was followed without the node being told")
	}
	if err := solo.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if solo = startNetNode(t, reg, dir, "solo"); !learned(solo) {
		t.Fatalf("a held succession credential was not followed at start")
	}

	// Forgeries: the hospital claims the GP practice's consents. Issued by the hospital in its own
	// name it does not parse (only the predecessor issues); in the GP practice's name it does not
	// verify.
	_, hsig, err := hNode.orgs.signingKey(ctx, hospital)
	if err != nil {
		t.Fatalf("signingKey: %v", err)
	}
	_, gsig, err := gpNode.orgs.signingKey(ctx, gp)
	if err != nil {
		t.Fatalf("signingKey: %v", err)
	}
	forge := func(issuer, kid string) []byte {
		t.Helper()
		now := time.Now().Unix()
		body, err := json.Marshal(map[string]any{
			"@context": []string{vc.Context}, "id": vc.NewID(), "type": []string{"VerifiableCredential", string(vc.CustodianSuccessionCredential)},
			"issuer": issuer, "validFrom": time.Unix(now, 0).UTC().Format(time.RFC3339), "iat": now,
			"validUntil":        time.Unix(now, 0).Add(time.Hour).UTC().Format(time.RFC3339),
			"credentialSubject": map[string]any{"id": hospital, "predecessor": gp, "reason": "merged"},
			"credentialStatus": map[string]any{"id": issuer + "/status/1#5", "type": "BitstringStatusListEntry", "statusPurpose": "revocation",
				"statusListIndex": "5", "statusListCredential": issuer + "/status/1"},
		})
		if err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		jws, err := crypto.Sign(hsig, body, crypto.Header{Type: vc.JWSType, KID: issuer + "#" + kid})
		if err != nil {
			t.Fatalf("crypto.Sign: %v", err)
		}
		return jws
	}
	forgeries := []struct {
		name string
		doc  []byte
		want error
	}{
		{"issued by the would-be successor", forge(hospital, hsig.KID()), vc.ErrMalformed},
		{"in the predecessor's name, signed by another key", forge(gp, gsig.KID()), crypto.ErrSignature},
	}
	for _, tc := range forgeries {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := gpNode.SubmitDocuments(ctx, &schakelv1.SubmitDocumentsRequest{Documents: []string{string(tc.doc)}}); !errors.Is(err, tc.want) {
				t.Fatalf("SubmitDocuments = %v, want %v", err, tc.want)
			}
			if _, err := gpNode.backend.Accept(ctx, tc.doc); !errors.Is(err, tc.want) {
				t.Fatalf("Accept (the gossip path) = %v, want %v", err, tc.want)
			}
			if preds, err := gpNode.consents.Predecessors(ctx, hospital); err != nil || len(preds) != 0 {
				t.Fatalf("Predecessors(hospital) = %v, %v; want none", preds, err)
			}
		})
	}

	// A referral grant is never a public document: neither the API nor the gossip path stores it.
	ig, err := gpNode.IssueReferralGrant(ctx, &schakelv1.IssueReferralGrantRequest{Custodian: gp, Grantee: hospital,
		Bsn: testBSN(61), DataCategories: []string{"medication"}, ValidForSeconds: 3600})
	if err != nil {
		t.Fatalf("IssueReferralGrant: %v", err)
	}
	grant := []byte(ig.GetGrant())
	if g, err := vc.Parse(grant); err != nil || g.Kind != vc.ReferralGrantCredential || g.ID != ig.GetGrantId() {
		t.Fatalf("the issued grant is not a ReferralGrantCredential: %+v, %v", g, err)
	}
	if _, err := hNode.SubmitDocuments(ctx, &schakelv1.SubmitDocumentsRequest{Documents: []string{string(grant)}}); !errors.Is(err, vc.ErrNotPublic) {
		t.Fatalf("SubmitDocuments(referral grant) = %v, want ErrNotPublic", err)
	}
	if _, err := hNode.backend.Accept(ctx, grant); !errors.Is(err, vc.ErrNotPublic) {
		t.Fatalf("Accept(referral grant) = %v, want ErrNotPublic", err)
	}
	if _, errs := hNode.backend.AcceptMany(ctx, [][]byte{grant}); !errors.Is(errs[0], vc.ErrNotPublic) {
		t.Fatalf("AcceptMany(referral grant) = %v, want ErrNotPublic", errs[0])
	}
	for _, n := range []*netNode{gpNode, hNode} {
		if _, err := n.creds.Get(ctx, ig.GetGrantId()); !errors.Is(err, vc.ErrNotFound) {
			t.Fatalf("the public store of %s holds the referral grant: %v", n.org, err)
		}
	}
}
