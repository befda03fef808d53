package authz

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/schakel-health/schakel/crypto"
)

// TokenType is the JWS "typ" of an access token (RFC 9068 §2.1).
const TokenType = "at+jwt"

// tokenMediaType is the long form of TokenType that RFC 9068 §4 also requires resource servers
// to accept.
const tokenMediaType = "application/at+jwt"

// Limits of an access token.
const (
	// MaxTokenLifetime bounds exp − iat of an access token (DESIGN §4, access flow step 3).
	MaxTokenLifetime = 15 * time.Minute
	// DefaultTokenLifetime is the lifetime IssueToken gives a token with a zero Expiry.
	DefaultTokenLifetime = 5 * time.Minute
	// MaxTokenSize bounds the compact JWS ParseToken accepts; real ones are under 1 KiB.
	MaxTokenSize = 8 << 10
	// tokenSkew tolerates an iat slightly ahead of the verifier's clock. Tokens are issued and
	// introspected by the same node, so no skew is allowed on exp.
	tokenSkew = 60 * time.Second
)

// TokenClaims are the claims of an access token: an RFC 9068 JWT, bound to a DPoP key, issued by
// the custodian and introspected by the custodian's own FHIR API.
type TokenClaims struct {
	// Issuer is the custodian's DID ("iss").
	Issuer string
	// Audience is the custodian's FHIR resource server ("aud"); IssueToken uses Issuer when empty.
	Audience string
	// Subject is the requesting organisation's DID ("sub" and "client_id", RFC 9068 §2.2).
	Subject string
	// ID is "jti"; IssueToken fills it in (NewID) when empty.
	ID string
	// IssuedAt and Expiry are "iat" and "exp" in whole seconds; at most MaxTokenLifetime apart.
	// IssueToken uses time.Now() for a zero IssuedAt and IssuedAt + DefaultTokenLifetime for a
	// zero Expiry.
	IssuedAt, Expiry time.Time
	// Scope is "scope" (RFC 9068 §2.2.3): see Scope for its form. It MUST NOT contain the BSN.
	Scope string
	// Patient is the custodian's pseudonym of the patient ("patient"), the same as the scope's
	// patient: entry. It MUST NOT be the BSN.
	Patient string
	// Employee is the professional ("employee"): uzi, role and name required.
	Employee Employee
	// JKT is "cnf.jkt", the thumbprint of the DPoP key the token is bound to (RFC 9449 §6.1).
	JKT string
	// Basis is the id of the consent or referral grant that permitted the access ("basis"), or of
	// the break-glass decision; introspection re-checks it is still in force.
	Basis string
	// BreakGlass marks access under an emergency override ("break_glass").
	BreakGlass bool
}

// tokenPayload is the JSON form of TokenClaims.
type tokenPayload struct {
	Iss        string       `json:"iss"`
	Sub        string       `json:"sub"`
	Aud        string       `json:"aud"`
	ClientID   string       `json:"client_id"`
	Jti        string       `json:"jti"`
	Iat        int64        `json:"iat"`
	Exp        int64        `json:"exp"`
	Scope      string       `json:"scope"`
	Patient    string       `json:"patient"`
	Employee   Employee     `json:"employee"`
	Cnf        Confirmation `json:"cnf"`
	Basis      string       `json:"basis"`
	BreakGlass bool         `json:"break_glass,omitempty"`
}

// IssueToken signs c as the custodian with signer under kid (empty: "<c.Issuer>#<signer's
// thumbprint>") as an RFC 9068 access token (typ "at+jwt"). It refuses claims ParseToken would
// refuse for their form, a scope that does not parse or names another patient, and a scope or
// patient that is a valid BSN (a guard against passing the BSN where the pseudonym belongs).
// Errors wrap ErrMalformed or ErrLifetime.
func IssueToken(signer *crypto.PrivateKey, kid string, c TokenClaims) (string, error) {
	if signer == nil {
		return "", fmt.Errorf("issue token: %w: no signing key", crypto.ErrKey)
	}
	if kid == "" {
		kid = KID(c.Issuer, signer)
	}
	if c.Audience == "" {
		c.Audience = c.Issuer
	}
	if c.ID == "" {
		c.ID = NewID()
	}
	if c.IssuedAt.IsZero() {
		c.IssuedAt = time.Now()
	}
	if c.Expiry.IsZero() {
		c.Expiry = c.IssuedAt.Add(DefaultTokenLifetime)
	}
	p := tokenPayload{
		Iss: c.Issuer, Sub: c.Subject, Aud: c.Audience, ClientID: c.Subject, Jti: c.ID,
		Iat: unix(c.IssuedAt), Exp: unix(c.Expiry), Scope: c.Scope, Patient: c.Patient,
		Employee: c.Employee, Cnf: Confirmation{JKT: c.JKT}, Basis: c.Basis, BreakGlass: c.BreakGlass,
	}
	if err := p.check(kid); err != nil {
		return "", fmt.Errorf("issue token: %w", err)
	}
	if crypto.ValidBSN(p.Patient) == nil {
		return "", fmt.Errorf("issue token: %w: patient is a BSN, not a pseudonym", ErrMalformed)
	}
	for t := range strings.FieldsSeq(p.Scope) {
		_, v, _ := strings.Cut(t, ":")
		if crypto.ValidBSN(t) == nil || crypto.ValidBSN(v) == nil {
			return "", fmt.Errorf("issue token: %w: scope contains a BSN", ErrMalformed)
		}
	}
	body, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("issue token: %w", err)
	}
	jws, err := crypto.Sign(signer, body, crypto.Header{Type: TokenType, KID: kid})
	if err != nil {
		return "", fmt.Errorf("issue token: %w", err)
	}
	if len(jws) > MaxTokenSize {
		return "", fmt.Errorf("issue token: %w: %d bytes, limit %d", ErrTooLarge, len(jws), MaxTokenSize)
	}
	return string(jws), nil
}

// check verifies the form of the claims (RFC 9068 §2.2: iss, exp, aud, sub, client_id, iat, jti
// required) and the schakel ones (scope, patient, employee, cnf.jkt, basis).
func (p *tokenPayload) check(kid string) error {
	kidDID, _, ok := splitKID(kid)
	switch {
	case !validDID(p.Iss):
		return fmt.Errorf("%w: iss %q is not a DID", ErrMalformed, clip(p.Iss))
	case !ok || kidDID != p.Iss:
		return fmt.Errorf("%w: kid %q does not name a key of %s", ErrMalformed, clip(kid), p.Iss)
	case p.Aud == "" || len(p.Aud) > maxClaimLen:
		return fmt.Errorf("%w: aud missing or too long", ErrMalformed)
	case !validDID(p.Sub):
		return fmt.Errorf("%w: sub %q is not a DID", ErrMalformed, clip(p.Sub))
	case p.ClientID != p.Sub:
		return fmt.Errorf("%w: client_id %q is not sub %s", ErrMalformed, clip(p.ClientID), p.Sub)
	case p.Jti == "" || len(p.Jti) > maxIDLen:
		return fmt.Errorf("%w: jti missing or longer than %d", ErrMalformed, maxIDLen)
	case p.Basis == "" || len(p.Basis) > maxIDLen:
		return fmt.Errorf("%w: basis missing or longer than %d", ErrMalformed, maxIDLen)
	case p.Iat <= 0 || p.Exp <= 0:
		return fmt.Errorf("%w: iat and exp are required", ErrMalformed)
	case p.Exp <= p.Iat:
		return fmt.Errorf("%w: exp %d is not after iat %d", ErrLifetime, p.Exp, p.Iat)
	case time.Duration(p.Exp-p.Iat)*time.Second > MaxTokenLifetime:
		return fmt.Errorf("%w: exp − iat is %ds, limit %v", ErrLifetime, p.Exp-p.Iat, MaxTokenLifetime)
	case p.Employee.UZI == "" || p.Employee.Role == "" || p.Employee.Name == "":
		return fmt.Errorf("%w: employee uzi, role and name are required", ErrMalformed)
	case len(p.Employee.UZI)+len(p.Employee.Role)+len(p.Employee.Name)+len(p.Employee.Assurance) > maxClaimLen:
		return fmt.Errorf("%w: employee longer than %d bytes", ErrMalformed, maxClaimLen)
	case !validThumbprint(p.Cnf.JKT):
		return fmt.Errorf("%w: cnf.jkt is not a SHA-256 JWK thumbprint", ErrMalformed)
	}
	s, err := ParseScope(p.Scope)
	if err != nil {
		return err
	}
	if s.Patient != p.Patient {
		return fmt.Errorf("%w: scope names another patient than the patient claim", ErrMalformed)
	}
	return nil
}

// ParseToken verifies an access token and returns its claims. pub returns the issuer's signing
// key for the token's kid ("<did>#<thumbprint>"), or an error for a kid of an organisation not
// hosted here. The checks: size at most MaxTokenSize; typ "at+jwt" or "application/at+jwt" (RFC
// 9068 §4); signature with pub(kid), EdDSA or ES256 only; strict claims with iss equal to the
// kid's DID and every RFC 9068 §2.2 claim present; iat ≤ now + 60 s; now < exp; exp − iat ≤
// MaxTokenLifetime. It does not check aud (the resource server compares it with itself) nor
// whether the basis is still in force (Introspector does). Errors wrap ErrInvalidToken and a
// reason (ErrTooLarge, ErrMalformed, ErrUnknownKey, ErrSignature, ErrExpired, ErrNotYetValid,
// ErrLifetime).
func ParseToken(token string, pub func(kid string) (*crypto.PublicKey, error), now time.Time) (*TokenClaims, error) {
	p, err := parseToken(token, pub, now)
	if err != nil {
		return nil, fmt.Errorf("parse token: %w: %w", ErrInvalidToken, err)
	}
	return p.claims(), nil
}

func parseToken(token string, pub func(kid string) (*crypto.PublicKey, error), now time.Time) (*tokenPayload, error) {
	if len(token) > MaxTokenSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(token), MaxTokenSize)
	}
	jws := []byte(token)
	h, err := crypto.ParseHeader(jws)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if h.Type != TokenType && h.Type != tokenMediaType {
		return nil, fmt.Errorf("%w: typ %q, want %q", ErrMalformed, clip(h.Type), TokenType)
	}
	kidDID, _, ok := splitKID(h.KID)
	if !ok {
		return nil, fmt.Errorf("%w: kid %q is not <did>#<thumbprint>", ErrMalformed, clip(h.KID))
	}
	key, err := pub(h.KID)
	if err != nil || key == nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnknownKey, clip(h.KID), err)
	}
	payload, _, err := crypto.Verify(jws, key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignature, err)
	}
	var p tokenPayload
	if err := decodeClaims(payload, &p); err != nil {
		return nil, err
	}
	if p.Iss != kidDID {
		return nil, fmt.Errorf("%w: iss %q is not the signer %s", ErrSignature, clip(p.Iss), kidDID)
	}
	if err := p.check(h.KID); err != nil {
		return nil, err
	}
	if iat := fromUnix(p.Iat); iat.After(now.Add(tokenSkew)) {
		return nil, fmt.Errorf("%w: iat %s, now %s", ErrNotYetValid, iat.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if exp := fromUnix(p.Exp); !now.Before(exp) {
		return nil, fmt.Errorf("%w at %s", ErrExpired, exp.Format(time.RFC3339))
	}
	return &p, nil
}

func (p *tokenPayload) claims() *TokenClaims {
	return &TokenClaims{
		Issuer: p.Iss, Audience: p.Aud, Subject: p.Sub, ID: p.Jti,
		IssuedAt: fromUnix(p.Iat), Expiry: fromUnix(p.Exp), Scope: p.Scope, Patient: p.Patient,
		Employee: p.Employee, JKT: p.Cnf.JKT, Basis: p.Basis, BreakGlass: p.BreakGlass,
	}
}
