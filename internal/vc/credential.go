package vc

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/schakel-health/schakel/crypto"
)

// Sentinel errors, wrapped with the credential id or the field that failed.
var (
	ErrMalformed         = errors.New("malformed credential")
	ErrTooLarge          = errors.New("credential too large")
	ErrUnknownType       = errors.New("unknown credential type")
	ErrExpired           = errors.New("credential expired")
	ErrNotYetValid       = errors.New("credential not yet valid")
	ErrUntrusted         = errors.New("issuer not trusted for this credential type")
	ErrRevoked           = errors.New("credential revoked")
	ErrStatusUnavailable = errors.New("revocation status unavailable")
	ErrNotFound          = errors.New("credential not found")
	ErrRollback          = errors.New("status list older than the one held")
	ErrInvalidQuery      = errors.New("invalid directory query")
	// ErrNotPublic refuses a credential of a kind that MUST NOT be stored with the public documents
	// or gossiped (a ReferralGrantCredential).
	ErrNotPublic = errors.New("credential is not public")
)

// JWSType is the JWS "typ" of a credential secured as a JWT (VC-JOSE-COSE §3.1.1).
const JWSType = "vc+jwt"

// MaxSize bounds a compact credential. A status list of 131,072 entries compresses to well under it.
const MaxSize = 32 << 10

// Context is the W3C VC 2.0 base context; it MUST be the first @context entry.
const Context = "https://www.w3.org/ns/credentials/v2"

// Kind is a credential type schakel understands.
type Kind string

// Credential kinds. The set is closed: a credential of another type is refused.
const (
	OrganizationCredential        Kind = "OrganizationCredential"
	ServiceRegistrationCredential Kind = "ServiceRegistrationCredential"
	StatusListCredential          Kind = "BitstringStatusListCredential"
	// ReferralGrantCredential is issued by a custodian to the one organisation a patient is
	// referred to. It is private: see Public.
	ReferralGrantCredential Kind = "ReferralGrantCredential"
	// CustodianSuccessionCredential is issued by an organisation (the predecessor) to name the
	// organisation that continues it. It is public.
	CustodianSuccessionCredential Kind = "CustodianSuccessionCredential"
)

// Kinds lists the credential kinds Parse understands, in a stable order. Not every kind is public:
// what may be stored and gossiped is decided by Kind.Public.
var Kinds = []Kind{OrganizationCredential, ServiceRegistrationCredential, StatusListCredential,
	ReferralGrantCredential, CustodianSuccessionCredential}

// Public reports whether credentials of kind k are public documents, which every node stores and
// gossips. A ReferralGrantCredential is not: it names a patient (by the custodian's pseudonym) and
// who is referred where, so it MUST travel point to point only and never reach the Store.
func (k Kind) Public() bool {
	switch k {
	case OrganizationCredential, ServiceRegistrationCredential, StatusListCredential, CustodianSuccessionCredential:
		return true
	}
	return false
}

// MaxReferralLifetime bounds the validity period of a ReferralGrantCredential: a referral grant is
// for one referral, not a standing permission. It leaves a day of slack over the 30 days the
// custodian's consent store allows, so that clock rounding never makes a stored grant unissuable.
const MaxReferralLifetime = 31 * 24 * time.Hour

// Succession reasons of a CustodianSuccessionCredential.
const (
	SuccessionRenamed = "renamed" // a new name, and with it a new URA
	SuccessionMerged  = "merged"  // absorbed by, or merged into, the successor
	SuccessionMoved   = "moved"   // moved to another system (another node, another DID)
)

// payload is the JWT claims set: the credential itself (VC-JOSE-COSE: the payload is the
// credential), plus the JWT "iat" claim giving the issuance time whose key signs it.
type payload struct {
	Context           []string        `json:"@context"`
	ID                string          `json:"id"`
	Type              []string        `json:"type"`
	Issuer            string          `json:"issuer"`
	ValidFrom         string          `json:"validFrom"`
	ValidUntil        string          `json:"validUntil,omitempty"`
	CredentialSubject json.RawMessage `json:"credentialSubject"`
	CredentialStatus  *StatusEntry    `json:"credentialStatus,omitempty"`
	IssuedAt          int64           `json:"iat"`
}

// StatusEntry is a BitstringStatusListEntry (Bitstring Status List §2.1).
type StatusEntry struct {
	ID                   string `json:"id"`
	Type                 string `json:"type"`
	StatusPurpose        string `json:"statusPurpose"`
	StatusListIndex      string `json:"statusListIndex"`
	StatusListCredential string `json:"statusListCredential"`
}

// Organization is the subject of an OrganizationCredential.
type Organization struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// URA is the UZI-register number of the care organisation: 8 digits.
	URA string `json:"ura"`
	// Type is the RoleCodeNL organisation type, e.g. "Z3".
	Type string `json:"organizationType"`
	City string `json:"city"`
}

// Endpoint is a service endpoint of a registration.
type Endpoint struct {
	Type string `json:"type"`
	URL  string `json:"url"`
}

// Service is the subject of a ServiceRegistrationCredential.
type Service struct {
	ID             string     `json:"id"`
	Endpoints      []Endpoint `json:"endpoints"`
	DataCategories []string   `json:"dataCategories"`
	Purposes       []string   `json:"purposes"`
}

// StatusListSubject is the subject of a BitstringStatusListCredential (§2.2).
type StatusListSubject struct {
	ID            string `json:"id"`
	Type          string `json:"type"`
	StatusPurpose string `json:"statusPurpose"`
	EncodedList   string `json:"encodedList"`
}

// ReferralGrant is the subject of a ReferralGrantCredential: the grantee (the organisation the
// patient is referred to) may read the named data of one patient, for one purpose. The issuer is
// the custodian; the credential id is the grant's id, its validity period the grant's. The patient
// is named by the custodian's keyed pseudonym only, never by BSN: the BSN travels beside the
// credential, end-to-end encrypted.
type ReferralGrant struct {
	ID             string   `json:"id"`
	Patient        string   `json:"patient"`
	DataCategories []string `json:"dataCategories"`
	// Resources are FHIR references ("Type/id") the grant is scoped to; empty: the whole categories.
	Resources []string `json:"resources,omitempty"`
	// Purpose is one HL7 PurposeOfUse code, normally TREAT.
	Purpose string `json:"purpose"`
}

// Succession is the subject of a CustodianSuccessionCredential: the successor (ID) continues the
// predecessor, which issues the credential; consents recorded under the predecessor count for the
// successor from then on.
type Succession struct {
	ID          string `json:"id"`
	Predecessor string `json:"predecessor"`
	// Reason is SuccessionRenamed, SuccessionMerged or SuccessionMoved.
	Reason string `json:"reason"`
}

// Credential is a parsed credential with its compact JWT.
type Credential struct {
	JWT        []byte
	ID         string
	Kind       Kind
	Types      []string
	Issuer     string
	Subject    string
	KeyID      string // the issuer key id from the JWS header (without the DID)
	IssuedAt   time.Time
	ValidFrom  time.Time
	ValidUntil time.Time // zero when open-ended (status lists only)
	Status     *StatusEntry
	// Exactly one of the following is set, according to Kind.
	Organization  *Organization
	Service       *Service
	StatusList    *StatusListSubject
	ReferralGrant *ReferralGrant
	Succession    *Succession
}

// Request describes a credential to issue; Issue fills in id, times and types.
type Request struct {
	Kind         Kind
	ID           string // empty: a fresh urn:uuid
	Issuer       string
	IssuedAt     time.Time
	ValidFrom    time.Time // zero: IssuedAt; never before it
	ValidUntil   time.Time // zero only for status lists
	Status       *StatusEntry
	Organization *Organization
	Service      *Service
	StatusList   *StatusListSubject
	// ReferralGrant is the subject of a ReferralGrantCredential, which carries no Status.
	ReferralGrant *ReferralGrant
	Succession    *Succession
}

// Issue builds and signs a credential with k, the issuer's current signing key. The result is checked
// by Parse before it is returned, so an issuer cannot produce what a verifier would refuse.
func Issue(k *crypto.PrivateKey, req Request) ([]byte, *Credential, error) {
	id := req.ID
	if id == "" {
		id = NewID()
	}
	var subject any
	switch req.Kind {
	case OrganizationCredential:
		subject = req.Organization
	case ServiceRegistrationCredential:
		subject = req.Service
	case StatusListCredential:
		subject = req.StatusList
	case ReferralGrantCredential:
		subject = req.ReferralGrant
	case CustodianSuccessionCredential:
		subject = req.Succession
	default:
		return nil, nil, fmt.Errorf("issue: %w %q", ErrUnknownType, req.Kind)
	}
	sb, err := json.Marshal(subject)
	if err != nil {
		return nil, nil, fmt.Errorf("issue: encode subject: %w", err)
	}
	p := payload{
		Context:           []string{Context},
		ID:                id,
		Type:              []string{"VerifiableCredential", string(req.Kind)},
		Issuer:            req.Issuer,
		ValidFrom:         req.IssuedAt.UTC().Format(time.RFC3339),
		CredentialSubject: sb,
		CredentialStatus:  req.Status,
		IssuedAt:          req.IssuedAt.Unix(),
	}
	if !req.ValidUntil.IsZero() {
		p.ValidUntil = req.ValidUntil.UTC().Format(time.RFC3339)
	}
	if !req.ValidFrom.IsZero() {
		p.ValidFrom = req.ValidFrom.UTC().Format(time.RFC3339)
	}
	body, err := json.Marshal(p)
	if err != nil {
		return nil, nil, fmt.Errorf("issue: encode: %w", err)
	}
	compact, err := crypto.Sign(k, body, crypto.Header{Type: JWSType, KID: req.Issuer + "#" + k.KID()})
	if err != nil {
		return nil, nil, fmt.Errorf("issue: %w", err)
	}
	c, err := Parse(compact)
	if err != nil {
		return nil, nil, fmt.Errorf("issue: %w", err)
	}
	return compact, c, nil
}

// Parse decodes a compact credential without checking its signature, trust, validity period or
// status: strict JSON with size limits, the type's rules (field syntax, self-issuance where required).
func Parse(compact []byte) (*Credential, error) {
	if len(compact) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrTooLarge, len(compact), MaxSize)
	}
	body, h, err := crypto.ParseUnverified(compact)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if h.Type != JWSType {
		return nil, fmt.Errorf("%w: typ %q, want %q", ErrMalformed, h.Type, JWSType)
	}
	var p payload
	if err := crypto.DecodeJSON(body, &p); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	c := &Credential{JWT: compact, ID: p.ID, Types: p.Type, Issuer: p.Issuer, Status: p.CredentialStatus}
	if len(p.Context) == 0 || p.Context[0] != Context {
		return nil, fmt.Errorf("%w: @context must start with %s", ErrMalformed, Context)
	}
	if !validID(p.ID) {
		return nil, fmt.Errorf("%w: id %q is not a URI", ErrMalformed, clip(p.ID))
	}
	if !strings.HasPrefix(p.Issuer, "did:") || len(p.Issuer) > 128 {
		return nil, fmt.Errorf("%w: issuer %q is not a DID", ErrMalformed, clip(p.Issuer))
	}
	kidDID, kid, ok := strings.Cut(h.KID, "#")
	if !ok || kidDID != p.Issuer || kid == "" {
		return nil, fmt.Errorf("%w: kid %q does not name a key of issuer %s", ErrMalformed, clip(h.KID), p.Issuer)
	}
	c.KeyID = kid
	if len(p.Type) != 2 || p.Type[0] != "VerifiableCredential" {
		return nil, fmt.Errorf("%w: type must be [VerifiableCredential, <kind>]", ErrMalformed)
	}
	c.Kind = Kind(p.Type[1])
	if !slices.Contains(Kinds, c.Kind) {
		return nil, fmt.Errorf("%w %q", ErrUnknownType, p.Type[1])
	}
	if p.IssuedAt <= 0 {
		return nil, fmt.Errorf("%w: iat missing", ErrMalformed)
	}
	c.IssuedAt = time.Unix(p.IssuedAt, 0)
	if c.ValidFrom, err = time.Parse(time.RFC3339, p.ValidFrom); err != nil {
		return nil, fmt.Errorf("%w: validFrom: %w", ErrMalformed, err)
	}
	if c.ValidFrom.Before(c.IssuedAt) {
		return nil, fmt.Errorf("%w: validFrom before iat", ErrMalformed)
	}
	if p.ValidUntil != "" {
		if c.ValidUntil, err = time.Parse(time.RFC3339, p.ValidUntil); err != nil {
			return nil, fmt.Errorf("%w: validUntil: %w", ErrMalformed, err)
		}
		if !c.ValidUntil.After(c.ValidFrom) {
			return nil, fmt.Errorf("%w: validUntil not after validFrom", ErrMalformed)
		}
	}
	switch c.Kind {
	case OrganizationCredential:
		var s Organization
		if err := crypto.DecodeJSON(p.CredentialSubject, &s); err != nil {
			return nil, fmt.Errorf("%w: credentialSubject: %w", ErrMalformed, err)
		}
		if err := s.validate(); err != nil {
			return nil, err
		}
		c.Organization, c.Subject = &s, s.ID
	case ServiceRegistrationCredential:
		var s Service
		if err := crypto.DecodeJSON(p.CredentialSubject, &s); err != nil {
			return nil, fmt.Errorf("%w: credentialSubject: %w", ErrMalformed, err)
		}
		if err := s.validate(); err != nil {
			return nil, err
		}
		if s.ID != p.Issuer {
			return nil, fmt.Errorf("%w: a service registration must be self-issued (subject %s, issuer %s)", ErrMalformed, s.ID, p.Issuer)
		}
		c.Service, c.Subject = &s, s.ID
	case StatusListCredential:
		var s StatusListSubject
		if err := crypto.DecodeJSON(p.CredentialSubject, &s); err != nil {
			return nil, fmt.Errorf("%w: credentialSubject: %w", ErrMalformed, err)
		}
		if s.Type != "BitstringStatusList" || s.StatusPurpose != "revocation" {
			return nil, fmt.Errorf("%w: status list subject must be a revocation BitstringStatusList", ErrMalformed)
		}
		if s.ID != p.ID+"#list" || !strings.HasPrefix(p.ID, p.Issuer+"/status/") {
			return nil, fmt.Errorf("%w: status list id %q must be <issuer>/status/<n>", ErrMalformed, clip(p.ID))
		}
		if p.CredentialStatus != nil {
			return nil, fmt.Errorf("%w: a status list has no status of its own", ErrMalformed)
		}
		c.StatusList, c.Subject = &s, s.ID
	case ReferralGrantCredential:
		var s ReferralGrant
		if err := crypto.DecodeJSON(p.CredentialSubject, &s); err != nil {
			return nil, fmt.Errorf("%w: credentialSubject: %w", ErrMalformed, err)
		}
		if err := s.validate(p.Issuer); err != nil {
			return nil, err
		}
		if crypto.ContainsBSN(p.ID) {
			return nil, fmt.Errorf("%w: a referral grant id must not look like it holds a BSN", ErrMalformed)
		}
		// A referral grant carries no status list entry: it is revoked where it is decided on, in
		// the custodian's own grant record, and an entry would only tell the network how many
		// grants the custodian issues and revokes.
		if p.CredentialStatus != nil {
			return nil, fmt.Errorf("%w: a referral grant has no credentialStatus", ErrMalformed)
		}
		if !c.ValidUntil.IsZero() && c.ValidUntil.Sub(c.ValidFrom) > MaxReferralLifetime {
			return nil, fmt.Errorf("%w: a referral grant runs at most %d days, not %s", ErrMalformed,
				int(MaxReferralLifetime.Hours()/24), c.ValidUntil.Sub(c.ValidFrom).Round(time.Minute))
		}
		c.ReferralGrant, c.Subject = &s, s.ID
	case CustodianSuccessionCredential:
		var s Succession
		if err := crypto.DecodeJSON(p.CredentialSubject, &s); err != nil {
			return nil, fmt.Errorf("%w: credentialSubject: %w", ErrMalformed, err)
		}
		if err := s.validate(p.Issuer); err != nil {
			return nil, err
		}
		c.Succession, c.Subject = &s, s.ID
	}
	if c.Kind != StatusListCredential {
		if c.ValidUntil.IsZero() {
			return nil, fmt.Errorf("%w: validUntil required", ErrMalformed)
		}
	}
	if c.Kind != StatusListCredential && c.Kind != ReferralGrantCredential {
		if err := c.Status.validate(); err != nil {
			return nil, err
		}
		if !strings.HasPrefix(c.Status.StatusListCredential, c.Issuer+"/status/") {
			return nil, fmt.Errorf("%w: status list %q is not the issuer's own", ErrMalformed, clip(c.Status.StatusListCredential))
		}
	}
	return c, nil
}

// Index returns the position of the credential in its status list.
func (e *StatusEntry) Index() int {
	n := 0
	for _, r := range e.StatusListIndex {
		n = n*10 + int(r-'0')
	}
	return n
}

func (e *StatusEntry) validate() error {
	if e == nil {
		return fmt.Errorf("%w: credentialStatus required", ErrMalformed)
	}
	if e.Type != "BitstringStatusListEntry" || e.StatusPurpose != "revocation" {
		return fmt.Errorf("%w: credentialStatus must be a revocation BitstringStatusListEntry", ErrMalformed)
	}
	if !digits.MatchString(e.StatusListIndex) || len(e.StatusListIndex) > 9 {
		return fmt.Errorf("%w: statusListIndex %q", ErrMalformed, clip(e.StatusListIndex))
	}
	if e.Index() >= MaxStatusListSize {
		return fmt.Errorf("%w: statusListIndex %s beyond %d", ErrMalformed, e.StatusListIndex, MaxStatusListSize)
	}
	if !validID(e.StatusListCredential) || e.ID != e.StatusListCredential+"#"+e.StatusListIndex {
		return fmt.Errorf("%w: credentialStatus id must be <statusListCredential>#<index>", ErrMalformed)
	}
	return nil
}

var (
	digits  = regexp.MustCompile(`^[0-9]+$`)
	uraRe   = regexp.MustCompile(`^[0-9]{8}$`)
	roleRe  = regexp.MustCompile(`^[A-Z][0-9]$`)
	tokenRe = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)
	// pseudonymRe is the shape of crypto.Pseudonymizer's output: "v<version>.<base64url MAC>".
	pseudonymRe = regexp.MustCompile(`^v[0-9]{1,10}\.[A-Za-z0-9_-]{1,128}$`)
	purposeRe   = regexp.MustCompile(`^[A-Z0-9_]{2,16}$`)
	categoryRe  = regexp.MustCompile(`^[A-Za-z0-9._:/-]{1,64}$`)
	// referenceRe is a relative FHIR reference "Type/id" (FHIR R4 §2.1.3).
	referenceRe = regexp.MustCompile(`^[A-Z][A-Za-z]{0,63}/[A-Za-z0-9.-]{1,64}$`)
)

// OrganizationTypes names the RoleCodeNL organisation types (code system 2.16.840.1.113883.2.4.15.1060)
// that schakel's demo and policy use. Other codes of the same shape are accepted.
var OrganizationTypes = map[string]string{
	"Z3": "huisartspraktijk",
	"J8": "openbare apotheek",
	"V6": "algemeen ziekenhuis",
	"V5": "universitair medisch centrum",
	"N6": "huisartsenpost",
	"G5": "geestelijke gezondheidszorg",
	// P1 is schakel's own code, outside RoleCodeNL, for a patient portal (PGO): not a care provider.
	"P1": "patiëntportaal (PGO)",
}

const (
	maxText      = 200
	maxItems     = 32
	maxResources = 64
)

func (o *Organization) validate() error {
	switch {
	case !strings.HasPrefix(o.ID, "did:") || len(o.ID) > 128:
		return fmt.Errorf("%w: subject id %q is not a DID", ErrMalformed, clip(o.ID))
	case !validText(o.Name):
		return fmt.Errorf("%w: organisation name must be 1–%d characters of text", ErrMalformed, maxText)
	case !uraRe.MatchString(o.URA):
		return fmt.Errorf("%w: URA %q must be 8 digits", ErrMalformed, clip(o.URA))
	case !roleRe.MatchString(o.Type):
		return fmt.Errorf("%w: organisation type %q is not a RoleCodeNL code", ErrMalformed, clip(o.Type))
	case !validText(o.City):
		return fmt.Errorf("%w: city must be 1–%d characters of text", ErrMalformed, maxText)
	}
	return nil
}

func (s *Service) validate() error {
	if !strings.HasPrefix(s.ID, "did:") || len(s.ID) > 128 {
		return fmt.Errorf("%w: subject id %q is not a DID", ErrMalformed, clip(s.ID))
	}
	if len(s.Endpoints) == 0 || len(s.Endpoints) > maxItems {
		return fmt.Errorf("%w: 1 to %d endpoints required", ErrMalformed, maxItems)
	}
	for _, e := range s.Endpoints {
		if !tokenRe.MatchString(e.Type) {
			return fmt.Errorf("%w: endpoint type %q", ErrMalformed, clip(e.Type))
		}
		u, err := url.Parse(e.URL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || len(e.URL) > 512 {
			return fmt.Errorf("%w: endpoint url %q must be an absolute http(s) URL", ErrMalformed, clip(e.URL))
		}
	}
	for _, list := range [][]string{s.DataCategories, s.Purposes} {
		if len(list) > maxItems {
			return fmt.Errorf("%w: more than %d data categories or purposes", ErrMalformed, maxItems)
		}
		for _, v := range list {
			if !tokenRe.MatchString(v) {
				return fmt.Errorf("%w: code %q", ErrMalformed, clip(v))
			}
		}
	}
	return nil
}

// validDID reports whether s has the syntax this package requires of a DID: the "did:" scheme and
// at most 128 bytes.
func validDID(s string) bool { return strings.HasPrefix(s, "did:") && len(s) <= 128 }

func (g *ReferralGrant) validate(issuer string) error {
	switch {
	case !validDID(g.ID):
		return fmt.Errorf("%w: grantee %q is not a DID", ErrMalformed, clip(g.ID))
	case g.ID == issuer:
		return fmt.Errorf("%w: a custodian cannot grant to itself", ErrMalformed)
	case !pseudonymRe.MatchString(g.Patient):
		return fmt.Errorf("%w: patient must be the custodian's keyed pseudonym v<version>.<base64url>", ErrMalformed)
	case !purposeRe.MatchString(g.Purpose) || crypto.ContainsBSN(g.Purpose):
		return fmt.Errorf("%w: purpose %q is not one PurposeOfUse code", ErrMalformed, clip(g.Purpose))
	case len(g.DataCategories) == 0 || len(g.DataCategories) > maxItems:
		return fmt.Errorf("%w: 1 to %d data categories required", ErrMalformed, maxItems)
	case len(g.Resources) > maxResources:
		return fmt.Errorf("%w: more than %d resources", ErrMalformed, maxResources)
	}
	for _, v := range g.DataCategories {
		if v == "*" && len(g.DataCategories) > 1 {
			return fmt.Errorf("%w: data category * must be listed alone", ErrMalformed)
		}
		if v != "*" && (!categoryRe.MatchString(v) || crypto.ContainsBSN(v)) {
			return fmt.Errorf("%w: data category %q", ErrMalformed, clip(v))
		}
	}
	for _, r := range g.Resources {
		if !referenceRe.MatchString(r) || crypto.ContainsBSN(r) {
			return fmt.Errorf("%w: resource is not a FHIR reference Type/id", ErrMalformed)
		}
	}
	return nil
}

func (s *Succession) validate(issuer string) error {
	switch {
	case !validDID(s.ID):
		return fmt.Errorf("%w: successor %q is not a DID", ErrMalformed, clip(s.ID))
	case !validDID(s.Predecessor):
		return fmt.Errorf("%w: predecessor %q is not a DID", ErrMalformed, clip(s.Predecessor))
	case s.Predecessor != issuer:
		// Only the predecessor can hand over what was granted to it and recorded under it.
		return fmt.Errorf("%w: a succession must be issued by the predecessor (predecessor %s, issuer %s)", ErrMalformed, clip(s.Predecessor), clip(issuer))
	case s.ID == s.Predecessor:
		return fmt.Errorf("%w: an organisation cannot succeed itself", ErrMalformed)
	}
	switch s.Reason {
	case SuccessionRenamed, SuccessionMerged, SuccessionMoved:
		return nil
	}
	return fmt.Errorf("%w: succession reason %q is not renamed, merged or moved", ErrMalformed, clip(s.Reason))
}

func validText(s string) bool {
	if s == "" || len(s) > maxText || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return strings.TrimSpace(s) != ""
}

func validID(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	u, err := url.Parse(s)
	return err == nil && u.Scheme != ""
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
