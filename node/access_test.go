package node

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/accesslog/verify"
	"github.com/schakel-health/schakel/internal/authz"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

const accessBSN = "111222333"

// dpopJKT is the thumbprint of a fresh DPoP key, as an EHR would send.
func dpopJKT(t testing.TB) string {
	t.Helper()
	k, err := crypto.GenerateKey(crypto.P256, crypto.UseSign)
	if err != nil {
		t.Fatal(err)
	}
	return crypto.Thumbprint(k.Public())
}

func tokenRequest(org, custodian, category, role, jkt string) *schakelv1.RequestTokenRequest {
	return &schakelv1.RequestTokenRequest{
		Organization: org, Custodian: custodian, Bsn: accessBSN, DataCategory: category, Purpose: "TREAT",
		Employee: &schakelv1.AccessEmployee{Uzi: "900012345", Role: role, Name: "A. de Vries", Assurance: "high"},
		DpopJkt:  jkt,
	}
}

// TestAccessFlow runs the access story over real nodes on loopback: a consent requested online at
// a portal, processed at the GP practice (the custodian), a notice back; the hospital granted a
// token, introspected active, its access recorded; a request for another category refused; the
// consent revoked: the token introspects inactive and the next request is refused; both logs
// reconcile through the receipts; a node that is not a party holds no trace of the BSN.
func TestAccessFlow(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four nodes")
	}
	ctx := t.Context()
	reg := newRegister(t)
	gp := newNetNode(t, reg, "Huisartsenpraktijk Jansen", true)
	hospital := newNetNode(t, reg, "Stadsziekenhuis", true)
	portal := newNetNode(t, reg, "Mijn Portaal", true)
	bystander := newNetNode(t, reg, "Apotheek", true)
	for _, n := range []*netNode{hospital, portal, bystander} {
		link(t, n, gp)
	}
	eventually(t, 15*time.Second, "the nodes admit each other and know each other's organisations", func() bool {
		for _, n := range []*netNode{hospital, portal} {
			if _, err := n.dids.Resolve(ctx, gp.org); err != nil || admittedCount(n) == 0 {
				return false
			}
		}
		_, err := gp.dids.Resolve(ctx, hospital.org)
		return err == nil && admittedCount(gp) == 3
	})

	// Online: the portal relays the patient's consent; it is pending at the GP practice.
	req, err := portal.RequestConsent(ctx, &schakelv1.RequestConsentRequest{Organization: portal.org, Bsn: accessBSN,
		Consent: &schakelv1.Consent{Custodian: gp.org, Decision: "permit", GranteeOrg: hospital.org,
			DataCategories: []string{"medication"}, Purposes: []string{"TREAT"}, Grantors: []string{"self"},
			Channel: "online", Assurance: "high"}})
	if err != nil {
		t.Fatalf("RequestConsent: %v", err)
	}
	var pending *schakelv1.Consent
	eventually(t, 15*time.Second, "the request arrives pending at the GP practice", func() bool {
		l, err := gp.ListConsents(ctx, &schakelv1.ListConsentsRequest{Custodian: gp.org, Status: "pending"})
		if err != nil || len(l.GetConsents()) != 1 {
			return false
		}
		pending = l.GetConsents()[0]
		return true
	})
	jkt := dpopJKT(t)
	// Pending is not in force.
	if r, err := hospital.RequestToken(ctx, tokenRequest(hospital.org, gp.org, "medication", "01.015", jkt)); err != nil || r.GetAccessToken() != "" {
		t.Fatalf("request while the consent is pending: %v, token %q", err, r.GetAccessToken())
	}
	if _, err := gp.ProcessConsent(ctx, &schakelv1.ProcessConsentRequest{Custodian: gp.org, Id: pending.GetId(), Accept: true}); err != nil {
		t.Fatalf("ProcessConsent: %v", err)
	}
	eventually(t, 15*time.Second, "the notice reaches the portal", func() bool {
		l, err := portal.ListNotices(ctx, &schakelv1.ListNoticesRequest{Organization: portal.org})
		return err == nil && len(l.GetNotices()) == 1 && l.GetNotices()[0].GetOutcome() == "accepted" &&
			l.GetNotices()[0].GetRequestId() == req.GetRequestId()
	})

	// Granted, introspected active, bound to the DPoP key, no BSN in the token.
	granted, err := hospital.RequestToken(ctx, tokenRequest(hospital.org, gp.org, "medication", "01.015", jkt))
	if err != nil || granted.GetAccessToken() == "" {
		t.Fatalf("RequestToken: %v, %+v", err, granted)
	}
	if strings.Contains(granted.GetAccessToken(), accessBSN) || strings.Contains(granted.GetScope(), accessBSN) {
		t.Fatal("the token carries the BSN")
	}
	in, err := gp.Introspect(ctx, &schakelv1.IntrospectRequest{Token: granted.GetAccessToken()})
	if err != nil || !in.GetActive() {
		t.Fatalf("Introspect: %v, %s", err, in.GetJson())
	}
	var ir authz.Response
	if err := json.Unmarshal([]byte(in.GetJson()), &ir); err != nil || ir.Cnf.JKT != jkt || ir.Subject != hospital.org {
		t.Fatalf("introspection %s: want cnf.jkt %s and sub %s", in.GetJson(), jkt, hospital.org)
	}
	// The hospital cannot introspect the GP's token: only the issuer's node knows it.
	if in, _ := hospital.Introspect(ctx, &schakelv1.IntrospectRequest{Token: granted.GetAccessToken()}); in.GetActive() {
		t.Fatal("a node that did not issue the token introspects it active")
	}
	if _, err := gp.RecordAccess(ctx, &schakelv1.RecordAccessRequest{Organization: gp.org, Bsn: accessBSN,
		Requester: &schakelv1.Requester{Did: hospital.org}, Employee: &schakelv1.Employee{Uzi: "900012345", Role: "01.015"},
		Purpose: "TREAT", DataCategory: "medication", Query: "MedicationStatement?patient=…", TokenId: ir.ID}); err != nil {
		t.Fatalf("RecordAccess: %v", err)
	}

	// The patient's view shows the consent in force.
	pv, err := gp.GetPatientView(ctx, &schakelv1.GetPatientViewRequest{Organization: gp.org, Bsn: accessBSN})
	if err != nil || len(pv.GetConsents()) != 1 || pv.GetConsents()[0].GetStatus() != "active" {
		t.Fatalf("patient view consents: %v, %v", err, pv.GetConsents())
	}

	// The GP summary is not consented.
	other, err := hospital.RequestToken(ctx, tokenRequest(hospital.org, gp.org, "gp-professional-summary", "01.015", jkt))
	if err != nil || other.GetAccessToken() != "" || other.GetError() != "access_denied" || other.GetReason() != "no-consent" {
		t.Fatalf("summary request: %v, %+v", err, other)
	}

	// Revocation: at once.
	if _, err := gp.RevokeConsent(ctx, &schakelv1.RevokeConsentRequest{Custodian: gp.org, Id: pending.GetId()}); err != nil {
		t.Fatalf("RevokeConsent: %v", err)
	}
	if in, _ := gp.Introspect(ctx, &schakelv1.IntrospectRequest{Token: granted.GetAccessToken()}); in.GetActive() {
		t.Fatal("the token of a revoked consent still introspects active")
	}
	if pv, err := gp.GetPatientView(ctx, &schakelv1.GetPatientViewRequest{Organization: gp.org, Bsn: accessBSN}); err != nil || len(pv.GetConsents()) != 0 {
		t.Fatalf("patient view after revocation: %v, %v", err, pv.GetConsents())
	}
	after, err := hospital.RequestToken(ctx, tokenRequest(hospital.org, gp.org, "medication", "01.015", jkt))
	if err != nil || after.GetAccessToken() != "" || after.GetReason() != "no-consent" {
		t.Fatalf("request after revocation: %v, %+v", err, after)
	}

	// Reconcile: every receipt in the hospital's log names an entry of the GP's log with the same
	// leaf hash and outcome.
	gpEntries := entries(t, gp)
	var receipts int
	for _, e := range entries(t, hospital) {
		if e.Event != verify.EventAccessDecision || e.Action != "request" {
			continue
		}
		receipts++
		var origin, leaf, reqID string
		var index int
		if _, err := fmt.Sscanf(e.Query, "receipt: %s entry %d leaf %s request %s", &origin, &index, &leaf, &reqID); err != nil {
			t.Fatalf("receipt entry %q: %v", e.Query, err)
		}
		if index >= len(gpEntries) {
			t.Fatalf("receipt names entry %d; the GP's log has %d", index, len(gpEntries))
		}
		ge := gpEntries[index]
		if ge.Outcome != e.Outcome || ge.TokenID != e.TokenID || ge.Requester.DID != hospital.org {
			t.Errorf("receipt %q does not match the GP's entry %d: %+v", e.Query, index, ge)
		}
	}
	if receipts != 4 {
		t.Fatalf("the hospital's log holds %d receipts, want 4 (pending, granted, summary, revoked)", receipts)
	}
	var refusedAtGP int
	for _, e := range gpEntries {
		if e.Event == verify.EventAccessDecision && e.Outcome == verify.OutcomeRefused {
			refusedAtGP++
			if e.Reason == "" {
				t.Errorf("refusal without a reason: %+v", e)
			}
		}
	}
	if refusedAtGP != 3 {
		t.Errorf("the GP's log holds %d refusals, want 3", refusedAtGP)
	}

	// Planned care: the GP practice refers another patient to the hospital with a referral grant,
	// delivered point to point; the hospital is granted access to what it covers, without consent.
	referred := testBSN(50)
	ig, err := gp.IssueReferralGrant(ctx, &schakelv1.IssueReferralGrantRequest{Custodian: gp.org, Grantee: hospital.org,
		Bsn: referred, DataCategories: []string{"medication"}, Resources: []string{"MedicationStatement/7"}, ValidForSeconds: 3600})
	if err != nil {
		t.Fatalf("IssueReferralGrant: %v", err)
	}
	var got *schakelv1.ReceivedGrant
	eventually(t, 15*time.Second, "the grant reaches the hospital", func() bool {
		l, err := hospital.ListNotices(ctx, &schakelv1.ListNoticesRequest{Organization: hospital.org})
		if err != nil || len(l.GetGrants()) != 1 {
			return false
		}
		got = l.GetGrants()[0]
		return true
	})
	if got.GetGrantId() != ig.GetGrantId() || got.GetBsn() != referred || got.GetCustodian() != gp.org {
		t.Fatalf("received grant %+v, issued %s", got, ig.GetGrantId())
	}
	rq := tokenRequest(hospital.org, gp.org, "medication", "01.015", jkt)
	rq.Bsn, rq.ReferralGrant = got.GetBsn(), got.GetGrantId()
	if r, err := hospital.RequestToken(ctx, rq); err != nil || !strings.Contains(r.GetScope(), "resource:MedicationStatement/7") {
		t.Fatalf("request under the referral grant: %v, %+v", err, r)
	}

	// The bystander (a node that is no party) holds no trace of the BSN.
	var needles [][]byte
	for _, bsn := range []string{accessBSN, referred} {
		sum := sha256.Sum256([]byte(bsn))
		needles = append(needles, []byte(bsn), sum[:], []byte(hex.EncodeToString(sum[:])),
			[]byte(base64.StdEncoding.EncodeToString(sum[:])), []byte(base64.RawURLEncoding.EncodeToString(sum[:])))
	}
	scanStore(t, bystander, needles)
}

// entries reads a node's organisation's whole log.
func entries(t *testing.T, n *netNode) []verify.Entry {
	t.Helper()
	resp, err := n.ListEntries(t.Context(), &schakelv1.ListEntriesRequest{Organization: n.org, Start: 0, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []verify.Entry
	for _, raw := range resp.GetEntries() {
		e, err := verify.ParseEntry([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, *e)
	}
	return out
}

// scanStore fails if any key or value of n's storage contains one of needles.
func scanStore(t *testing.T, n *netNode, needles [][]byte) {
	t.Helper()
	err := n.db.Badger().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			for _, nd := range needles {
				if bytes.Contains(item.Key(), nd) || bytes.Contains(v, nd) {
					t.Errorf("key %q holds a trace of the BSN", item.Key())
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
