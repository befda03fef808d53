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
)

// Kinds lists the credential kinds in a stable order.
var Kinds = []Kind{OrganizationCredential, ServiceRegistrationCredential, StatusListCredential}

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
	Organization *Organization
	Service      *Service
	StatusList   *StatusListSubject
}

// Request describes a credential to issue; Issue fills in id, times and types.
type Request struct {
	Kind         Kind
	ID           string // empty: a fresh urn:uuid
	Issuer       string
	IssuedAt     time.Time
	ValidUntil   time.Time // zero only for status lists
	Status       *StatusEntry
	Organization *Organization
	Service      *Service
	StatusList   *StatusListSubject
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
	}
	if c.Kind != StatusListCredential {
		if c.ValidUntil.IsZero() {
			return nil, fmt.Errorf("%w: validUntil required", ErrMalformed)
		}
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
	maxText  = 200
	maxItems = 32
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
