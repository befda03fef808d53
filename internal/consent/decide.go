package consent

import (
	"fmt"
	"slices"
	"time"
)

// Request is one access request as the custodian's node sees it, after it has verified the
// requesting organisation's assertion and credentials.
type Request struct {
	// Custodian is the DID of the organisation asked; Custodians is it and its predecessors
	// (Store.Custodians). Custodian is counted even when Custodians omits it.
	Custodian  string
	Custodians []string
	// Requester is the requesting organisation's DID, RequesterPredecessors the organisations it
	// succeeded (Store.Predecessors), RequesterType its RoleCodeNL type from its
	// OrganizationCredential, and Credentialed whether it holds a valid one.
	Requester             string
	RequesterPredecessors []string
	RequesterType         string
	Credentialed          bool
	// Role is the employee's UZI role code, Assurance the assurance level of their
	// authentication (low, substantial, high).
	Role, Assurance string
	// Purpose is the HL7 PurposeOfUse code, DataCategory the one data category asked for.
	Purpose, DataCategory string
	// Patient holds the custodian's pseudonyms of the patient, every secret version
	// (crypto.Pseudonymizer.All).
	Patient []string
	// PatientAge is the patient's age in years if the caller knows it, -1 if not; when unknown
	// the date of birth on the records is used.
	PatientAge int
	// Emergency marks an emergency (an emergency purpose does too). BreakGlass asks for the
	// break-the-glass override when no consent permits.
	Emergency, BreakGlass bool
	// Time is when the request is decided; consents and grants must be valid then.
	Time time.Time
}

// Reason says, machine-readably, why a decision went the way it did. It is for the custodian's
// access log and the patient's view. What the requester is told is the caller's choice: telling
// it "objection" or "consent-revoked" reveals that the patient has a record at the custodian, so
// the token endpoint should answer every refusal alike.
type Reason string

// Reasons of a permit.
const (
	ReasonConsent       Reason = "consent"
	ReasonReferralGrant Reason = "referral-grant"
	ReasonBreakTheGlass Reason = "break-the-glass"
)

// Reasons of a refusal, in the order Decide checks them.
const (
	ReasonInvalidRequest         Reason = "invalid-request"
	ReasonNotCareProvider        Reason = "not-a-care-provider"
	ReasonRoleNeverAllowed       Reason = "role-never-allowed"
	ReasonPurposeNeverAllowed    Reason = "purpose-never-allowed"
	ReasonAssuranceTooLow        Reason = "assurance-too-low"
	ReasonRoleNotAllowedCategory Reason = "role-not-allowed-category"
	ReasonObjection              Reason = "objection"
	ReasonBreakGlassDisabled     Reason = "break-the-glass-disabled"
	ReasonGrantRevoked           Reason = "grant-revoked"
	ReasonGrantExpired           Reason = "grant-expired"
	ReasonGrantOutOfScope        Reason = "grant-out-of-scope"
	ReasonResearchNeedsConsent   Reason = "research-needs-research-consent"
	ReasonConsentPending         Reason = "consent-pending"
	ReasonConsentRevoked         Reason = "consent-revoked"
	ReasonConsentExpired         Reason = "consent-expired"
	ReasonConsentNotYetValid     Reason = "consent-not-yet-valid"
	ReasonParentalConsentLapsed  Reason = "parental-consent-lapsed"
	ReasonNoConsent              Reason = "no-consent"
)

// Result is a decision.
type Result struct {
	Permit bool
	Reason Reason
	// Detail is one human sentence for the log and the patient's view; it never holds a BSN or
	// a pseudonym.
	Detail string
	// ConsentID is the consent that decided (a permit or the objection), or the consent that
	// would have permitted but is not in force (pending, revoked, expired …).
	ConsentID string
	// GrantID is the referral grant that permitted, or the grant presented that did not apply.
	GrantID string
	// BreakGlass marks a permit by the break-the-glass override: the caller MUST log it flagged
	// for review and show it to the patient.
	BreakGlass bool
}

// adultAge is the age from which a patient decides alone (WGBO art. 7:450, 7:465).
const adultAge = 16

// Decide decides req from the patient's consent records (Store.ForPatient, any status) and the
// referral grant presented, if any. It is pure: no I/O, no clock (req.Time), no allocation but the
// Detail sentence. A nil Policy decides with DefaultPolicy. The rules, in order:
//
//  1. The requester must hold a valid organisation credential and be of a care provider type;
//     the employee's role must not be a never role, the purpose not a never purpose, the
//     assurance at least the policy's minimum, and the role must be allowed the data category.
//  2. A referral grant that applies (custodian in req.Custodians, grantee the requester or a
//     predecessor, the patient, valid at req.Time, not revoked, the category and purpose, never
//     research) permits without consent.
//  3. A consent counts when it is active, valid at req.Time, of a custodian in req.Custodians and
//     a pseudonym in req.Patient, and matches grantee (Org the requester or a predecessor; OrgType
//     the requester's type; Any), category ("*" or equal) and purpose (equal; "*" or a
//     coveredBy purpose for an emergency purpose; research purposes only when listed
//     explicitly). Of several active consents with the same scope (Record) only the one put in
//     force last (Updated) counts: this covers records made under an older pseudonym version or
//     at a predecessor, which Record cannot supersede. A permit given only by parents or a
//     guardian lapses at 16.
//  4. The most specific counting consent wins: grantee Org (3) > OrgType (2) > Any (1), then
//     category exact (2) > "*" (1); at equal specificity an objection beats a permit. In an
//     emergency any counting objection blocks, whatever its specificity.
//  5. No permit: with BreakGlass asked for an emergency purpose, permitted flagged BreakGlass if
//     the policy allows it, refused "break-the-glass-disabled" if not; otherwise refused, with the
//     most telling reason: the grant presented not applying, a consent that would permit but is
//     not in force (pending, revoked, expired, not yet valid, parental consent lapsed), research
//     without a research consent, or no-consent.
func (p *Policy) Decide(req Request, records []Consent, grant *Grant) Result {
	if p == nil {
		p = DefaultPolicy()
	}
	if r, bad := checkRequest(&req); bad {
		return r
	}
	switch {
	case !req.Credentialed:
		return refuse(ReasonNotCareProvider, "the requesting organisation holds no valid organisation credential")
	case !p.careProvider.has(req.RequesterType):
		return refuse(ReasonNotCareProvider, fmt.Sprintf("organisation type %q is not a care provider", clip(req.RequesterType)))
	case p.neverRole.has(req.Role):
		return refuse(ReasonRoleNeverAllowed, fmt.Sprintf("employees in role %s never get access, whatever the consent", req.Role))
	case p.neverPurpose.has(req.Purpose):
		return refuse(ReasonPurposeNeverAllowed, fmt.Sprintf("purpose %s never gets access, whatever the consent", clip(req.Purpose)))
	case assuranceRank(req.Assurance) < p.minAssurance:
		return refuse(ReasonAssuranceTooLow, fmt.Sprintf("authentication at assurance %q is below the required level", clip(req.Assurance)))
	}
	if cats, ok := p.roleCategories(req.Role); !ok || !cats.has(req.DataCategory) {
		return refuse(ReasonRoleNotAllowedCategory, fmt.Sprintf("employees in role %s may not see data category %s", clip(req.Role), clip(req.DataCategory)))
	}
	m := matcher{p: p, req: &req, research: p.research.has(req.Purpose), emergencyPurpose: p.emergency.has(req.Purpose)}

	var grantMiss Result
	if grant != nil {
		reason, detail := m.grant(grant)
		if reason == "" {
			return Result{Permit: true, Reason: ReasonReferralGrant, GrantID: grant.ID,
				Detail: fmt.Sprintf("permitted by referral grant %s", grant.ID)}
		}
		grantMiss = Result{Reason: reason, Detail: detail, GrantID: grant.ID}
	}

	// scores[i] is how specifically records[i] applies, 0 if not at all (at most 14, see score).
	var buf [64]int8
	scores := buf[:0]
	if len(records) > len(buf) {
		scores = make([]int8, 0, len(records))
	}
	for i := range records {
		scores = append(scores, int8(m.score(&records[i])))
	}
	permit, objection, miss := -1, -1, -1
	var permitScore, objectionScore int8
	var missReason Reason
	for i := range records {
		c := &records[i]
		score := scores[i]
		if score == 0 {
			continue
		}
		switch c.Status {
		case StatusActive:
		case StatusPending, StatusRevoked:
			if c.Decision == DecisionPermit && (miss < 0 || c.Updated.After(records[miss].Updated)) {
				miss, missReason = i, ReasonConsentPending
				if c.Status == StatusRevoked {
					missReason = ReasonConsentRevoked
				}
			}
			continue
		default:
			continue
		}
		if reason := inForce(c, &req); reason != "" {
			if c.Decision == DecisionPermit && (miss < 0 || c.Updated.After(records[miss].Updated)) {
				miss, missReason = i, reason
			}
			continue
		}
		if shadowed(records, scores, i) {
			continue
		}
		if c.Decision == DecisionObjection {
			if objection < 0 || score > objectionScore || score == objectionScore && newerThan(c, &records[objection]) {
				objection, objectionScore = i, score
			}
		} else if permit < 0 || score > permitScore || score == permitScore && newerThan(c, &records[permit]) {
			permit, permitScore = i, score
		}
	}

	emergency := req.Emergency || m.emergencyPurpose
	switch {
	case objection >= 0 && emergency:
		return Result{Reason: ReasonObjection, ConsentID: records[objection].ID,
			Detail: fmt.Sprintf("the patient's objection (consent %s) blocks access, also in an emergency", records[objection].ID)}
	case objection >= 0 && (permit < 0 || objectionScore >= permitScore):
		return Result{Reason: ReasonObjection, ConsentID: records[objection].ID,
			Detail: fmt.Sprintf("the patient objected (consent %s)", records[objection].ID)}
	case permit >= 0:
		return Result{Permit: true, Reason: ReasonConsent, ConsentID: records[permit].ID,
			Detail: fmt.Sprintf("permitted by consent %s", records[permit].ID)}
	case req.BreakGlass && m.emergencyPurpose && p.breakGlass:
		return Result{Permit: true, Reason: ReasonBreakTheGlass, BreakGlass: true,
			Detail: "permitted by break-the-glass in an emergency without consent; flagged for review and shown to the patient"}
	case req.BreakGlass && m.emergencyPurpose:
		return refuse(ReasonBreakGlassDisabled, "no consent permits and break-the-glass is disabled by the custodian's policy")
	case grantMiss.Reason != "":
		return grantMiss
	case miss >= 0:
		return Result{Reason: missReason, ConsentID: records[miss].ID, Detail: missDetail(missReason, records[miss].ID)}
	case m.research:
		return refuse(ReasonResearchNeedsConsent, fmt.Sprintf("purpose %s needs a consent that names it; consent for treatment never implies research", req.Purpose))
	}
	return refuse(ReasonNoConsent, "no consent of the patient permits this access")
}

func refuse(r Reason, detail string) Result { return Result{Reason: r, Detail: detail} }

func missDetail(r Reason, id string) string {
	switch r {
	case ReasonConsentPending:
		return fmt.Sprintf("consent %s is a request the custodian has not processed yet", id)
	case ReasonConsentRevoked:
		return fmt.Sprintf("consent %s was revoked", id)
	case ReasonConsentExpired:
		return fmt.Sprintf("consent %s has expired", id)
	case ReasonConsentNotYetValid:
		return fmt.Sprintf("consent %s is not in force yet", id)
	default:
		return fmt.Sprintf("consent %s was given by a parent or guardian alone; from %d the patient consents themselves", id, adultAge)
	}
}

// checkRequest refuses a request that lacks what every decision needs.
func checkRequest(req *Request) (Result, bool) {
	var what string
	switch {
	case req.Custodian == "":
		what = "no custodian"
	case req.Requester == "":
		what = "no requesting organisation"
	case req.Purpose == "":
		what = "no purpose"
	case req.DataCategory == "" || req.DataCategory == Wildcard:
		what = "not one data category"
	case len(req.Patient) == 0:
		what = "no patient pseudonym"
	case req.Time.IsZero():
		what = "no time"
	default:
		return Result{}, false
	}
	return refuse(ReasonInvalidRequest, "the request names "+what), true
}

// matcher holds what Decide derived from the request for matching records.
type matcher struct {
	p                *Policy
	req              *Request
	research         bool
	emergencyPurpose bool
}

func (m *matcher) custodian(did string) bool {
	return did == m.req.Custodian || slices.Contains(m.req.Custodians, did)
}

func (m *matcher) requester(did string) bool {
	return did == m.req.Requester || slices.Contains(m.req.RequesterPredecessors, did)
}

// score returns how specifically c applies to the request, ignoring status and period: 0 when
// it does not apply; grantee specificity times 4 plus category specificity otherwise.
func (m *matcher) score(c *Consent) int {
	if !m.custodian(c.Custodian) || !slices.Contains(m.req.Patient, c.Patient) {
		return 0
	}
	var g int
	switch {
	case c.Grantee.Org != "":
		if m.requester(c.Grantee.Org) {
			g = 3
		}
	case c.Grantee.OrgType != "":
		if c.Grantee.OrgType == m.req.RequesterType {
			g = 2
		}
	case c.Grantee.Any:
		g = 1
	}
	if g == 0 {
		return 0
	}
	cat := 0
	for _, x := range c.DataCategories {
		if x == m.req.DataCategory {
			cat = 2
			break
		}
		if x == Wildcard {
			cat = 1
		}
	}
	if cat == 0 || !m.purpose(c.Purposes) {
		return 0
	}
	return g*4 + cat
}

// purpose reports whether a consent's purposes cover the request's.
func (m *matcher) purpose(purposes []string) bool {
	for _, x := range purposes {
		switch {
		case x == m.req.Purpose:
			return true
		case m.research:
			// Only the research purpose itself, listed explicitly, covers research.
		case x == Wildcard:
			return true
		case m.emergencyPurpose && m.p.coveredBy.has(x):
			return true
		}
	}
	return false
}

// inForce returns why an active consent is not in force at the request's time, or "".
func inForce(c *Consent, req *Request) Reason {
	switch {
	case req.Time.Before(c.ValidFrom):
		return ReasonConsentNotYetValid
	case !c.ValidUntil.IsZero() && !req.Time.Before(c.ValidUntil):
		return ReasonConsentExpired
	case c.Decision == DecisionPermit && parentalOnly(c.Grantors):
		age := req.PatientAge
		if age < 0 && !c.PatientBirthDate.IsZero() {
			age = AgeOn(c.PatientBirthDate, req.Time)
		}
		if age >= adultAge {
			return ReasonParentalConsentLapsed
		}
	}
	return ""
}

func parentalOnly(grantors []GrantorRole) bool {
	return !slices.Contains(grantors, GrantorSelf) && !slices.Contains(grantors, GrantorRepresentative)
}

// shadowed reports whether another active record of the same scope, for this patient at a
// custodian of the request, came into force after records[i]: then records[i] no longer counts.
// Such a record applies exactly as records[i] does, so only records of the same score qualify.
func shadowed(records []Consent, scores []int8, i int) bool {
	c := &records[i]
	for j := range records {
		if j == i || scores[j] != scores[i] {
			continue
		}
		if o := &records[j]; o.Status == StatusActive && newerThan(o, c) && sameScope(o, c) {
			return true
		}
	}
	return false
}

// newerThan orders records by Updated, which for an active record is when it came into force
// (recorded, or its request accepted), then by id, so that ties are decided the same way every
// time.
func newerThan(a, b *Consent) bool {
	if c := a.Updated.Compare(b.Updated); c != 0 {
		return c > 0
	}
	return a.ID > b.ID
}

// grant returns why g does not apply to the request, or "" when it does.
func (m *matcher) grant(g *Grant) (Reason, string) {
	t := m.req.Time
	switch {
	case g.Revoked:
		return ReasonGrantRevoked, fmt.Sprintf("referral grant %s was revoked", g.ID)
	case t.Before(g.ValidFrom) || !t.Before(g.ValidUntil):
		return ReasonGrantExpired, fmt.Sprintf("referral grant %s is not valid at this time", g.ID)
	case !m.custodian(g.Custodian):
		return ReasonGrantOutOfScope, fmt.Sprintf("referral grant %s was issued by another custodian", g.ID)
	case !m.requester(g.Grantee):
		return ReasonGrantOutOfScope, fmt.Sprintf("referral grant %s names another organisation", g.ID)
	case !slices.Contains(m.req.Patient, g.Patient):
		return ReasonGrantOutOfScope, fmt.Sprintf("referral grant %s is for another patient", g.ID)
	case m.research:
		return ReasonGrantOutOfScope, fmt.Sprintf("referral grant %s cannot cover research", g.ID)
	case g.Purpose != m.req.Purpose && !(m.emergencyPurpose && m.p.coveredBy.has(g.Purpose)):
		return ReasonGrantOutOfScope, fmt.Sprintf("referral grant %s is for purpose %s", g.ID, clip(g.Purpose))
	case !slices.Contains(g.DataCategories, m.req.DataCategory) && !slices.Contains(g.DataCategories, Wildcard):
		return ReasonGrantOutOfScope, fmt.Sprintf("referral grant %s does not cover data category %s", g.ID, clip(m.req.DataCategory))
	}
	return "", ""
}
