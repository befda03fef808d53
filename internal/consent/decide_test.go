package consent

import (
	"strings"
	"testing"
	"time"
)

var (
	anyOrg      = Grantee{Any: true}
	typeV6      = Grantee{OrgType: "V6"}
	orgHospital = Grantee{Org: hospital}
	all         = []string{Wildcard}
	medication  = []string{"medication"}
	summary     = []string{"gp-professional-summary"}
)

// rec returns an active record at gp for patV2, given a day before t0 by the adult patient at the
// desk, for TREAT; opts change it.
func rec(id string, d Decision, g Grantee, cats []string, opts ...func(*Consent)) Consent {
	c := Consent{
		ID: id, Custodian: gp, Patient: patV2, Decision: d, Grantee: g, DataCategories: cats,
		Purposes: []string{"TREAT"}, ValidFrom: t0.Add(-24 * time.Hour), Grantors: []GrantorRole{GrantorSelf},
		PatientBirthDate: born(40), Channel: ChannelDesk, Assurance: AssuranceHigh, Status: StatusActive,
		Created: t0.Add(-24 * time.Hour), Updated: t0.Add(-24 * time.Hour),
	}
	for _, o := range opts {
		o(&c)
	}
	return c
}

func purposes(p ...string) func(*Consent)   { return func(c *Consent) { c.Purposes = p } }
func status(s Status) func(*Consent)        { return func(c *Consent) { c.Status = s } }
func custodian(did string) func(*Consent)   { return func(c *Consent) { c.Custodian = did } }
func patient(p string) func(*Consent)       { return func(c *Consent) { c.Patient = p } }
func createdAt(t time.Time) func(*Consent)  { return func(c *Consent) { c.Created, c.Updated = t, t } }
func validUntil(t time.Time) func(*Consent) { return func(c *Consent) { c.ValidUntil = t } }
func validFrom(t time.Time) func(*Consent)  { return func(c *Consent) { c.ValidFrom = t } }
func grantedBy(birth time.Time, g ...GrantorRole) func(*Consent) {
	return func(c *Consent) { c.PatientBirthDate, c.Grantors = birth, g }
}

// baseRequest: an internist of the hospital asks the GP for medication, for treatment.
func baseRequest() Request {
	return Request{
		Custodian: gp, Custodians: []string{gp}, Requester: hospital, RequesterType: "V6", Credentialed: true,
		Role: "01.016", Assurance: AssuranceHigh, Purpose: "TREAT", DataCategory: "medication",
		Patient: []string{patV2, patV1}, PatientAge: -1, Time: t0,
	}
}

func referral(opts ...func(*Grant)) *Grant {
	g := &Grant{ID: "urn:uuid:grant-1", Custodian: gp, Grantee: hospital, Patient: patV2,
		DataCategories: summary, Resources: []string{"DocumentReference/123"}, Purpose: "TREAT",
		ValidFrom: t0.Add(-time.Hour), ValidUntil: t0.Add(7 * 24 * time.Hour)}
	for _, o := range opts {
		o(g)
	}
	return g
}

func mustPolicy(t testing.TB, yaml string) *Policy {
	t.Helper()
	p, err := ParsePolicy([]byte(yaml))
	if err != nil {
		t.Fatalf("ParsePolicy: %v", err)
	}
	return p
}

func breakGlassPolicy(t testing.TB) *Policy {
	return mustPolicy(t, strings.Replace(string(defaultYAML), "breakGlass: false", "breakGlass: true", 1))
}

// TestDecide walks the rules of Decide (DESIGN §5) one case at a time.
func TestDecide(t *testing.T) {
	glass := breakGlassPolicy(t)
	tests := []struct {
		name       string
		policy     *Policy
		records    []Consent
		grant      *Grant
		req        func(*Request)
		permit     bool
		reason     Reason
		id         string // ConsentID, or GrantID when a grant is given
		breakGlass bool
	}{
		{name: "permit for any care provider grants", records: []Consent{rec("c1", DecisionPermit, anyOrg, all)},
			permit: true, reason: ReasonConsent, id: "c1"},
		{name: "no consent refuses", reason: ReasonNoConsent},
		{name: "objection beats a permit of equal specificity",
			records: []Consent{rec("p", DecisionPermit, typeV6, medication), rec("o", DecisionObjection, typeV6, medication, purposes("TREAT", "ETREAT"))},
			reason:  ReasonObjection, id: "o"},
		{name: "objection for the organisation type beats a permit for any",
			records: []Consent{rec("p", DecisionPermit, anyOrg, medication), rec("o", DecisionObjection, typeV6, all)},
			reason:  ReasonObjection, id: "o"},
		{name: "organisation-specific permit beats an objection for its type",
			records: []Consent{rec("o", DecisionObjection, typeV6, medication), rec("p", DecisionPermit, orgHospital, all)},
			permit:  true, reason: ReasonConsent, id: "p"},
		{name: "exact category beats the wildcard at equal grantee",
			records: []Consent{rec("o", DecisionObjection, anyOrg, all), rec("p", DecisionPermit, anyOrg, medication)},
			permit:  true, reason: ReasonConsent, id: "p"},
		{name: "medication consent does not open the GP summary",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, medication)},
			req:     func(r *Request) { r.DataCategory = "gp-professional-summary" }, reason: ReasonNoConsent},
		{name: "consent for another organisation does not apply",
			records: []Consent{rec("c1", DecisionPermit, Grantee{Org: pharmacy}, all)}, reason: ReasonNoConsent},
		{name: "consent for another organisation type does not apply",
			records: []Consent{rec("c1", DecisionPermit, Grantee{OrgType: "J8"}, all)}, reason: ReasonNoConsent},
		{name: "insurer without organisation credential refused",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all)},
			req:     func(r *Request) { r.Credentialed, r.RequesterType = false, "" }, reason: ReasonNotCareProvider},
		{name: "credentialed organisation of no care provider type refused",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all)},
			req:     func(r *Request) { r.RequesterType = "X3" }, reason: ReasonNotCareProvider},
		{name: "patient portal is not a care provider",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all)},
			req:     func(r *Request) { r.RequesterType = "P1" }, reason: ReasonNotCareProvider},
		{name: "company doctor refused despite consent",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all)},
			req:     func(r *Request) { r.Role = "01.008" }, reason: ReasonRoleNeverAllowed},
		{name: "insurance doctor refused despite consent",
			records: []Consent{rec("c1", DecisionPermit, orgHospital, all)},
			req:     func(r *Request) { r.Role = "01.048" }, reason: ReasonRoleNeverAllowed},
		{name: "payment purpose refused despite consent",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all, purposes(Wildcard))},
			req:     func(r *Request) { r.Purpose = "HPAYMT" }, reason: ReasonPurposeNeverAllowed},
		{name: "assurance substantial is below high",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all)},
			req:     func(r *Request) { r.Assurance = AssuranceSubstantial }, reason: ReasonAssuranceTooLow},
		{name: "pharmacist may not see the GP summary",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all)},
			req: func(r *Request) {
				r.Requester, r.RequesterType, r.Role, r.DataCategory = pharmacy, "J8", "17.075", "gp-professional-summary"
			}, reason: ReasonRoleNotAllowedCategory},
		{name: "pharmacist sees medication through the 17.* group",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all)},
			req:     func(r *Request) { r.Requester, r.RequesterType, r.Role = pharmacy, "J8", "17.075" },
			permit:  true, reason: ReasonConsent, id: "c1"},
		{name: "role missing from the policy sees nothing",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all)},
			req:     func(r *Request) { r.Role = "99.000" }, reason: ReasonRoleNotAllowedCategory},
		{name: "research without research consent refused",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all, purposes(Wildcard))},
			req:     func(r *Request) { r.Purpose = "HRESCH" }, reason: ReasonResearchNeedsConsent},
		{name: "treatment consent never implies research",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all)},
			req:     func(r *Request) { r.Purpose = "CLINTRL" }, reason: ReasonResearchNeedsConsent},
		{name: "revoked research consent refused as revoked",
			records: []Consent{rec("r1", DecisionPermit, orgHospital, medication, purposes("HRESCH"), status(StatusRevoked))},
			req:     func(r *Request) { r.Purpose = "HRESCH" }, reason: ReasonConsentRevoked, id: "r1"},
		{name: "research with research consent granted",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all), rec("r1", DecisionPermit, orgHospital, medication, purposes("HRESCH"))},
			req:     func(r *Request) { r.Purpose = "HRESCH" }, permit: true, reason: ReasonConsent, id: "r1"},
		{name: "revoked consent refused",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all, status(StatusRevoked))}, reason: ReasonConsentRevoked, id: "c1"},
		{name: "expired consent refused",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all, validUntil(t0))}, reason: ReasonConsentExpired, id: "c1"},
		{name: "consent not yet in force refused",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all, validFrom(t0.Add(time.Hour)))}, reason: ReasonConsentNotYetValid, id: "c1"},
		{name: "pending consent not in force",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all, status(StatusPending))}, reason: ReasonConsentPending, id: "c1"},
		{name: "rejected and superseded records are ignored",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all, status(StatusRejected)), rec("c2", DecisionPermit, anyOrg, all, status(StatusSuperseded))},
			reason:  ReasonNoConsent},
		{name: "revoked objection no longer blocks",
			records: []Consent{rec("o", DecisionObjection, orgHospital, all, status(StatusRevoked)), rec("p", DecisionPermit, anyOrg, all)},
			permit:  true, reason: ReasonConsent, id: "p"},
		{name: "referral grant without consent granted", grant: referral(),
			req: func(r *Request) { r.DataCategory = "gp-professional-summary" }, permit: true, reason: ReasonReferralGrant, id: "urn:uuid:grant-1"},
		{name: "referral grant for another category refused", grant: referral(), reason: ReasonGrantOutOfScope, id: "urn:uuid:grant-1"},
		{name: "referral grant does not hide a consent that permits", grant: referral(),
			records: []Consent{rec("c1", DecisionPermit, anyOrg, medication)}, permit: true, reason: ReasonConsent, id: "c1"},
		{name: "referral grant for another organisation refused", grant: referral(func(g *Grant) { g.Grantee = pharmacy }),
			req: func(r *Request) { r.DataCategory = "gp-professional-summary" }, reason: ReasonGrantOutOfScope, id: "urn:uuid:grant-1"},
		{name: "referral grant for another patient refused", grant: referral(func(g *Grant) { g.Patient = patOther }),
			req: func(r *Request) { r.DataCategory = "gp-professional-summary" }, reason: ReasonGrantOutOfScope, id: "urn:uuid:grant-1"},
		{name: "revoked referral grant refused", grant: referral(func(g *Grant) { g.Revoked = true }),
			req: func(r *Request) { r.DataCategory = "gp-professional-summary" }, reason: ReasonGrantRevoked, id: "urn:uuid:grant-1"},
		{name: "expired referral grant refused", grant: referral(func(g *Grant) { g.ValidUntil = t0 }),
			req: func(r *Request) { r.DataCategory = "gp-professional-summary" }, reason: ReasonGrantExpired, id: "urn:uuid:grant-1"},
		{name: "referral grant never covers research", grant: referral(func(g *Grant) { g.Purpose = "HRESCH" }),
			req: func(r *Request) { r.DataCategory, r.Purpose = "gp-professional-summary", "HRESCH" }, reason: ReasonGrantOutOfScope, id: "urn:uuid:grant-1"},
		{name: "referral grant to a predecessor of the requester granted",
			grant: referral(func(g *Grant) { g.Grantee = hospitalOld }),
			req: func(r *Request) {
				r.DataCategory, r.RequesterPredecessors = "gp-professional-summary", []string{hospitalOld}
			}, permit: true, reason: ReasonReferralGrant, id: "urn:uuid:grant-1"},
		{name: "consent recorded at the custodian's predecessor keeps working",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all, custodian(gpOld))},
			req:     func(r *Request) { r.Custodians = []string{gp, gpOld} }, permit: true, reason: ReasonConsent, id: "c1"},
		{name: "consent at an unrelated custodian does not count",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all, custodian(gpOld))}, reason: ReasonNoConsent},
		{name: "consent naming the requester's predecessor keeps working",
			records: []Consent{rec("c1", DecisionPermit, Grantee{Org: hospitalOld}, all)},
			req:     func(r *Request) { r.RequesterPredecessors = []string{hospitalOld} }, permit: true, reason: ReasonConsent, id: "c1"},
		{name: "consent naming another organisation's predecessor does not count",
			records: []Consent{rec("c1", DecisionPermit, Grantee{Org: hospitalOld}, all)}, reason: ReasonNoConsent},
		{name: "consent under an older pseudonym version counts",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all, patient(patV1))}, permit: true, reason: ReasonConsent, id: "c1"},
		{name: "another patient's consent does not count",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all, patient(patOther))}, reason: ReasonNoConsent},
		{name: "newer permit of the same scope under the new pseudonym replaces an old objection",
			records: []Consent{rec("old", DecisionObjection, anyOrg, all, patient(patV1)), rec("new", DecisionPermit, anyOrg, all, createdAt(t0.Add(-time.Hour)))},
			permit:  true, reason: ReasonConsent, id: "new"},
		{name: "newer objection of the same scope at the successor replaces a permit at the predecessor",
			records: []Consent{rec("old", DecisionPermit, anyOrg, all, custodian(gpOld)), rec("new", DecisionObjection, anyOrg, all, createdAt(t0.Add(-time.Hour)))},
			req:     func(r *Request) { r.Custodians = []string{gp, gpOld} }, reason: ReasonObjection, id: "new"},
		{name: "a request accepted after an old-pseudonym record was made counts from its acceptance",
			records: []Consent{
				rec("old", DecisionObjection, anyOrg, all, patient(patV1), createdAt(t0.Add(-2*time.Hour))),
				rec("accepted", DecisionPermit, anyOrg, all, createdAt(t0.Add(-3*time.Hour)), func(c *Consent) { c.Updated = t0.Add(-time.Hour) }),
			},
			permit: true, reason: ReasonConsent, id: "accepted"},
		{name: "break-the-glass off refused",
			req:    func(r *Request) { r.Purpose, r.Emergency, r.BreakGlass = "ETREAT", true, true },
			reason: ReasonBreakGlassDisabled},
		{name: "break-the-glass on permits, flagged", policy: glass,
			req:    func(r *Request) { r.Purpose, r.Emergency, r.BreakGlass = "ETREAT", true, true },
			permit: true, reason: ReasonBreakTheGlass, breakGlass: true},
		{name: "break-the-glass needs an emergency purpose", policy: glass,
			req:    func(r *Request) { r.Emergency, r.BreakGlass = true, true },
			reason: ReasonNoConsent},
		{name: "objection blocks break-the-glass", policy: glass,
			records: []Consent{rec("o", DecisionObjection, anyOrg, all)},
			req:     func(r *Request) { r.Purpose, r.Emergency, r.BreakGlass = "ETREAT", true, true },
			reason:  ReasonObjection, id: "o"},
		{name: "in an emergency any objection blocks, even a less specific one",
			records: []Consent{rec("o", DecisionObjection, anyOrg, all), rec("p", DecisionPermit, orgHospital, medication, purposes("ETREAT"))},
			req:     func(r *Request) { r.Purpose, r.Emergency = "ETREAT", true }, reason: ReasonObjection, id: "o"},
		{name: "treatment consent covers emergency treatment",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all)},
			req:     func(r *Request) { r.Purpose, r.Emergency = "ETREAT", true }, permit: true, reason: ReasonConsent, id: "c1"},
		{name: "emergency consent does not cover treatment",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all, purposes("ETREAT"))}, reason: ReasonNoConsent},
		{name: "parents' permit lapses at 16",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all, grantedBy(born(17), GrantorParent))},
			reason:  ReasonParentalConsentLapsed, id: "c1"},
		{name: "parents' permit lapses at 16 by the age the caller knows",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all, grantedBy(time.Time{}, GrantorParent))},
			req:     func(r *Request) { r.PatientAge = 16 }, reason: ReasonParentalConsentLapsed, id: "c1"},
		{name: "parents' permit holds for a child of 10",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all, grantedBy(born(10), GrantorParent))},
			permit:  true, reason: ReasonConsent, id: "c1"},
		{name: "permit of a 14-year-old with a parent holds",
			records: []Consent{rec("c1", DecisionPermit, anyOrg, all, grantedBy(born(14), GrantorSelf, GrantorParent))},
			permit:  true, reason: ReasonConsent, id: "c1"},
		{name: "request without purpose is invalid", records: []Consent{rec("c1", DecisionPermit, anyOrg, all)},
			req: func(r *Request) { r.Purpose = "" }, reason: ReasonInvalidRequest},
		{name: "request for every category is invalid", records: []Consent{rec("c1", DecisionPermit, anyOrg, all)},
			req: func(r *Request) { r.DataCategory = Wildcard }, reason: ReasonInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := baseRequest()
			if tt.req != nil {
				tt.req(&req)
			}
			got := tt.policy.Decide(req, tt.records, tt.grant)
			if got.Permit != tt.permit || got.Reason != tt.reason || got.BreakGlass != tt.breakGlass {
				t.Fatalf("Decide = permit %v reason %q breakGlass %v (%s), want permit %v reason %q breakGlass %v",
					got.Permit, got.Reason, got.BreakGlass, got.Detail, tt.permit, tt.reason, tt.breakGlass)
			}
			id := got.ConsentID
			if tt.grant != nil && got.ConsentID == "" {
				id = got.GrantID
			}
			if id != tt.id {
				t.Errorf("Decide decided on %q, want %q", id, tt.id)
			}
			if got.Detail == "" || strings.Contains(got.Detail, patV2) || strings.Contains(got.Detail, patV1) {
				t.Errorf("Decide detail %q: want one sentence without a pseudonym", got.Detail)
			}
		})
	}
}

// TestDecideOrderIndependent checks that the outcome does not depend on the order of the records.
func TestDecideOrderIndependent(t *testing.T) {
	records := []Consent{
		rec("a", DecisionPermit, anyOrg, all),
		rec("b", DecisionObjection, typeV6, all),
		rec("c", DecisionPermit, typeV6, medication),
		rec("d", DecisionPermit, typeV6, medication, purposes("TREAT", "ETREAT")),
	}
	want := DefaultPolicy().Decide(baseRequest(), records, nil)
	if !want.Permit || (want.ConsentID != "c" && want.ConsentID != "d") {
		t.Fatalf("Decide = %+v, want a permit by c or d", want)
	}
	for i := range records {
		rotated := append(append([]Consent(nil), records[i:]...), records[:i]...)
		if got := DefaultPolicy().Decide(baseRequest(), rotated, nil); got != want {
			t.Errorf("Decide with records rotated by %d = %+v, want %+v", i, got, want)
		}
	}
}
