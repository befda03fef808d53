package vc

import (
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/did"
)

// testPseudonym has the shape of a custodian's keyed pseudonym.
const testPseudonym = "v1.q83vEjRWeJASNFZ4kBI0VniQEjRWeJASNFZ4kBI0VniQ"

// referralRequest is a valid ReferralGrantCredential from custodian to grantee, issued at at.
func referralRequest(custodian, grantee string, at time.Time) Request {
	return Request{Kind: ReferralGrantCredential, ID: "urn:uuid:0f8e2a4c-1b7d-4e3a-9c5f-2d6b8a1e4f70", Issuer: custodian,
		IssuedAt: at, ValidFrom: at, ValidUntil: at.Add(7 * 24 * time.Hour),
		ReferralGrant: &ReferralGrant{ID: grantee, Patient: testPseudonym, DataCategories: []string{"medication"},
			Resources: []string{"MedicationStatement/42"}, Purpose: "TREAT"}}
}

// signRaw signs an arbitrary credential payload as issuer with k, so that a test can present what
// Issue would never produce.
func signRaw(t *testing.T, k *crypto.PrivateKey, issuer string, p map[string]any) []byte {
	t.Helper()
	return signRawKID(t, k, issuer+"#"+k.KID(), p)
}

// signRawKID is signRaw with the header's kid given, so that a signature can claim another key.
func signRawKID(t *testing.T, k *crypto.PrivateKey, kid string, p map[string]any) []byte {
	t.Helper()
	body, err := json.Marshal(p)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	compact, err := crypto.Sign(k, body, crypto.Header{Type: JWSType, KID: kid})
	if err != nil {
		t.Fatalf("crypto.Sign: %v", err)
	}
	return compact
}

// payloadOf decodes the payload of a compact credential into a map, for a test to change.
func payloadOf(t *testing.T, compact []byte) map[string]any {
	t.Helper()
	body, _, err := crypto.ParseUnverified(compact)
	if err != nil {
		t.Fatalf("ParseUnverified: %v", err)
	}
	var p map[string]any
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("json.Unmarshal: %v", err)
	}
	return p
}

// clonePayload copies a payload and its subject, so that a case can change either.
func clonePayload(p map[string]any) map[string]any {
	out := maps.Clone(p)
	out["credentialSubject"] = maps.Clone(p["credentialSubject"].(map[string]any))
	return out
}

func TestReferralGrantCredential(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t)
	gp := newParty(t, f.dids, t0)
	hospital := newParty(t, f.dids, t0)
	at := t0.Add(10 * time.Minute)
	compact, c, err := Issue(gp.sig, referralRequest(gp.id, hospital.id, at))
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	again, err := Parse(compact)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	g := again.ReferralGrant
	if again.Kind != ReferralGrantCredential || again.Issuer != gp.id || again.Subject != hospital.id || g == nil ||
		g.Patient != testPseudonym || g.Purpose != "TREAT" || strings.Join(g.DataCategories, ",") != "medication" ||
		strings.Join(g.Resources, ",") != "MedicationStatement/42" || again.ID != c.ID || again.Status != nil ||
		!again.ValidFrom.Equal(at) || !again.ValidUntil.Equal(at.Add(7*24*time.Hour)) {
		t.Fatalf("Parse(issued referral grant) = %+v (grant %+v)", again, g)
	}
	// The custodian's signature verifies through the ordinary path, and a tampered one does not.
	if _, err := f.s.Verifier().Verify(ctx, compact); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	parts := strings.Split(string(compact), ".")
	sig := []byte(parts[2])
	sig[len(sig)/2] ^= 1
	if _, err := f.s.Verifier().VerifySignature(ctx, []byte(parts[0]+"."+parts[1]+"."+string(sig))); !errors.Is(err, crypto.ErrSignature) && !errors.Is(err, ErrMalformed) {
		t.Fatalf("VerifySignature(tampered signature) = %v, want a signature error", err)
	}
	// Signed with another organisation's key under the custodian's name: refused.
	forged := signRaw(t, hospital.sig, gp.id, payloadOf(t, compact))
	if _, err := f.s.Verifier().VerifySignature(ctx, forged); err == nil {
		t.Fatalf("VerifySignature accepted a referral grant signed by the grantee in the custodian's name")
	}

	// Never public: every way into the store refuses it and leaves nothing behind.
	before := f.dump()
	if _, _, err := f.s.Add(ctx, compact); !errors.Is(err, ErrNotPublic) {
		t.Fatalf("Add(referral grant) = %v, want ErrNotPublic", err)
	}
	if res := f.s.AddMany(ctx, [][]byte{compact}); !errors.Is(res[0].Err, ErrNotPublic) || res[0].Added {
		t.Fatalf("AddMany(referral grant) = %+v, want ErrNotPublic", res[0])
	}
	if _, err := f.s.IssueAs(ctx, gp.sig, referralRequest(gp.id, hospital.id, at)); !errors.Is(err, ErrNotPublic) {
		t.Fatalf("IssueAs(referral grant) = %v, want ErrNotPublic", err)
	}
	if after := f.dump(); after != before {
		t.Fatalf("a refused referral grant changed storage:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if ReferralGrantCredential.Public() || !CustodianSuccessionCredential.Public() || !OrganizationCredential.Public() || Kind("x").Public() {
		t.Fatalf("Kind.Public does not separate the private referral grant from the public kinds")
	}
}

func TestReferralGrantParseRefuses(t *testing.T) {
	f := newFixture(t)
	gp := newParty(t, f.dids, t0)
	hospital := newParty(t, f.dids, t0)
	compact, _, err := Issue(gp.sig, referralRequest(gp.id, hospital.id, t0))
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	base := payloadOf(t, compact)
	day := 24 * time.Hour
	tests := []struct {
		name   string
		change func(p, s map[string]any)
		want   error
	}{
		{"unchanged", func(p, s map[string]any) {}, nil},
		{"30 days", func(p, s map[string]any) { p["validUntil"] = t0.Add(30 * day).Format(time.RFC3339) }, nil},
		{"32 days", func(p, s map[string]any) { p["validUntil"] = t0.Add(32 * day).Format(time.RFC3339) }, ErrMalformed},
		{"no validUntil", func(p, s map[string]any) { delete(p, "validUntil") }, ErrMalformed},
		{"with a credentialStatus", func(p, s map[string]any) {
			p["credentialStatus"] = map[string]any{"id": gp.id + "/status/1#5", "type": "BitstringStatusListEntry", "statusPurpose": "revocation",
				"statusListIndex": "5", "statusListCredential": gp.id + "/status/1"}
		}, ErrMalformed},
		{"id holds a BSN", func(p, s map[string]any) { p["id"] = "urn:grant:111222333" }, ErrMalformed},
		{"grantee not a DID", func(p, s map[string]any) { s["id"] = "https://hospital.example" }, ErrMalformed},
		{"grantee is the custodian", func(p, s map[string]any) { s["id"] = gp.id }, ErrMalformed},
		{"patient is a BSN", func(p, s map[string]any) { s["patient"] = "111222333" }, ErrMalformed},
		{"no patient", func(p, s map[string]any) { delete(s, "patient") }, ErrMalformed},
		{"bsn field", func(p, s map[string]any) { s["bsn"] = "111222333" }, ErrMalformed},
		{"no data categories", func(p, s map[string]any) { s["dataCategories"] = []string{} }, ErrMalformed},
		{"wildcard with another category", func(p, s map[string]any) { s["dataCategories"] = []string{"*", "medication"} }, ErrMalformed},
		{"category with a space", func(p, s map[string]any) { s["dataCategories"] = []string{"gp summary"} }, ErrMalformed},
		{"wildcard alone", func(p, s map[string]any) { s["dataCategories"] = []string{"*"} }, nil},
		{"no resources", func(p, s map[string]any) { delete(s, "resources") }, nil},
		{"resource not a reference", func(p, s map[string]any) { s["resources"] = []string{"https://gp.example/fhir/Patient/1"} }, ErrMalformed},
		{"resource id holds a BSN", func(p, s map[string]any) { s["resources"] = []string{"Patient/111222333"} }, ErrMalformed},
		{"purpose not a code", func(p, s map[string]any) { s["purpose"] = "treat" }, ErrMalformed},
		{"no purpose", func(p, s map[string]any) { delete(s, "purpose") }, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := clonePayload(base)
			tc.change(p, p["credentialSubject"].(map[string]any))
			_, err := Parse(signRaw(t, gp.sig, gp.id, p))
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Parse = %v, want %v", err, tc.want)
			}
		})
	}
}

// successionRequest is a CustodianSuccessionCredential from predecessor to successor.
func successionRequest(predecessor, successor string, at time.Time) Request {
	return Request{Kind: CustodianSuccessionCredential, Issuer: predecessor, IssuedAt: at, ValidUntil: at.Add(365 * 24 * time.Hour),
		Succession: &Succession{ID: successor, Predecessor: predecessor, Reason: SuccessionMerged}}
}

func TestCustodianSuccessionCredential(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t)
	oldGP := newParty(t, f.dids, t0)
	gp := newParty(t, f.dids, t0)
	f.now = t0.Add(10 * time.Minute)
	c, err := f.s.IssueAs(ctx, oldGP.sig, successionRequest(oldGP.id, gp.id, f.now))
	if err != nil {
		t.Fatalf("IssueAs(succession): %v", err)
	}
	if c.Kind != CustodianSuccessionCredential || c.Issuer != oldGP.id || c.Subject != gp.id || c.Succession == nil ||
		c.Succession.Predecessor != oldGP.id || c.Succession.Reason != SuccessionMerged || c.Status == nil {
		t.Fatalf("IssueAs returned %+v", c)
	}
	// Public: stored, listed under both parties, verifiable, and a second Add is a duplicate.
	if _, added, err := f.s.Add(ctx, c.JWT); err != nil || added {
		t.Fatalf("Add(stored succession) = %v, %v; want a duplicate", added, err)
	}
	for _, party := range []string{oldGP.id, gp.id} {
		cs, err := f.s.List(ctx, Filter{Party: party, Kind: CustodianSuccessionCredential})
		if err != nil || len(cs) != 1 || cs[0].ID != c.ID {
			t.Fatalf("List(%s) = %d credentials, %v; want the succession", party, len(cs), err)
		}
	}
	if _, err := f.s.Verifier().Verify(ctx, c.JWT); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	// Listed by kind alone, once each, even with a successor DID that holds a "/".
	odd, err := f.s.IssueAs(ctx, oldGP.sig, successionRequest(oldGP.id, "did:example:group/branch", f.now))
	if err != nil {
		t.Fatalf("IssueAs(second succession): %v", err)
	}
	cs, err := f.s.List(ctx, Filter{Kind: CustodianSuccessionCredential})
	if err != nil || len(cs) != 2 || cs[0].ID == cs[1].ID || (cs[0].ID != odd.ID && cs[1].ID != odd.ID) {
		t.Fatalf("List(kind) = %d credentials, %v; want the two successions once each", len(cs), err)
	}
	if cs, err := f.s.List(ctx, Filter{Kind: ServiceRegistrationCredential}); err != nil || len(cs) != 0 {
		t.Fatalf("List(service registrations) = %d, %v; want none", len(cs), err)
	}
	// The predecessor revokes it through its status list.
	if _, _, err := f.s.RevokeAs(ctx, oldGP.sig, oldGP.id, c.ID, f.now); err != nil {
		t.Fatalf("RevokeAs: %v", err)
	}
	if _, err := f.s.Verifier().Verify(ctx, c.JWT); !errors.Is(err, ErrRevoked) {
		t.Fatalf("Verify(revoked succession) = %v, want ErrRevoked", err)
	}

	// Forgeries: only the predecessor can declare its successor.
	base := payloadOf(t, c.JWT)
	stranger := newParty(t, f.dids, t0)
	tests := []struct {
		name   string
		signer *party
		issuer string
		change func(p, s map[string]any)
		want   error
	}{
		{"issued by the successor", gp, gp.id, func(p, s map[string]any) { p["issuer"] = gp.id }, ErrMalformed},
		{"issued by a stranger naming the predecessor", stranger, stranger.id, func(p, s map[string]any) { p["issuer"] = stranger.id }, ErrMalformed},
		{"predecessor's name, stranger's key", stranger, oldGP.id, func(p, s map[string]any) {}, did.ErrNoKey},
		{"predecessor's name and key id, stranger's signature", stranger, oldGP.id, func(p, s map[string]any) { p["kid"] = oldGP.sig.KID() }, crypto.ErrSignature},
		{"successor is the predecessor", oldGP, oldGP.id, func(p, s map[string]any) { s["id"] = oldGP.id }, ErrMalformed},
		{"successor not a DID", oldGP, oldGP.id, func(p, s map[string]any) { s["id"] = "urn:x:y" }, ErrMalformed},
		{"unknown reason", oldGP, oldGP.id, func(p, s map[string]any) { s["reason"] = "sold" }, ErrMalformed},
		{"no reason", oldGP, oldGP.id, func(p, s map[string]any) { delete(s, "reason") }, ErrMalformed},
		{"unknown subject field", oldGP, oldGP.id, func(p, s map[string]any) { s["ura"] = "01234567" }, ErrMalformed},
		{"no credentialStatus", oldGP, oldGP.id, func(p, s map[string]any) { delete(p, "credentialStatus") }, ErrMalformed},
		{"no validUntil", oldGP, oldGP.id, func(p, s map[string]any) { delete(p, "validUntil") }, ErrMalformed},
	}
	before := f.dump()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := clonePayload(base)
			p["id"] = NewID()
			tc.change(p, p["credentialSubject"].(map[string]any))
			kid := tc.issuer + "#" + tc.signer.sig.KID()
			if k, ok := p["kid"].(string); ok {
				kid = tc.issuer + "#" + k
				delete(p, "kid")
			}
			forged := signRawKID(t, tc.signer.sig, kid, p)
			if _, err := f.s.Verifier().Verify(ctx, forged); !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
			if _, _, err := f.s.Add(ctx, forged); !errors.Is(err, tc.want) {
				t.Fatalf("Add = %v, want %v", err, tc.want)
			}
		})
	}
	if after := f.dump(); after != before {
		t.Fatalf("refused successions changed storage:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// A predecessor that rotated its key can still be verified for what it declared before.
	st, err := f.dids.Resolve(ctx, oldGP.id)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	newSig, newEnc, err := did.GenerateKeys()
	if err != nil {
		t.Fatalf("GenerateKeys: %v", err)
	}
	f.now = t0.Add(20 * time.Minute)
	rot, err := did.NewRotate(oldGP.sig, st, newSig.Public(), newEnc.Public(), f.now)
	if err != nil {
		t.Fatalf("NewRotate: %v", err)
	}
	if _, _, err := f.dids.AddEvent(ctx, rot); err != nil {
		t.Fatalf("AddEvent(rotate): %v", err)
	}
	if _, err := f.s.Verifier().VerifySignature(ctx, c.JWT); err != nil {
		t.Fatalf("VerifySignature(succession signed before the rotation): %v", err)
	}
}
