package authz

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/schakel-health/schakel/crypto"
)

// AssertionType is the JWS "typ" of a token-request assertion. RFC 7523 does not fix one; an
// explicit type (RFC 8725 §3.11) keeps any other JWT an organisation signs — a credential, an
// access token, a receipt — from being accepted as an assertion, and an assertion from being
// accepted as anything else.
const AssertionType = "schakel-assertion+jwt"

// Limits of an assertion.
const (
	// MaxAssertionLifetime bounds exp − iat of an assertion (DESIGN §4, access flow step 2).
	MaxAssertionLifetime = 5 * time.Minute
	// MaxAssertionSize bounds the compact JWE Verifier.Open accepts; real ones are about 2 KiB.
	MaxAssertionSize = 16 << 10
)

// Employee is the professional on whose behalf a request is made. Role is the UZI role code
// (e.g. "01.015" huisarts) and Assurance the authentication level ("high", "substantial").
type Employee struct {
	UZI       string `json:"uzi"`
	Role      string `json:"role"`
	Name      string `json:"name"`
	Assurance string `json:"assurance,omitempty"`
}

// Emergency marks a request made in an emergency. BreakGlass asks for the override that the
// custodian only honours where it is enabled (DESIGN §5); Reason is required either way.
type Emergency struct {
	Reason     string `json:"reason"`
	BreakGlass bool   `json:"break_glass,omitempty"`
}

// AssertionClaims are the claims of a token request: an RFC 7523 JWT-bearer assertion that the
// requesting organisation signs and encrypts to the custodian.
type AssertionClaims struct {
	// Issuer is the requesting organisation's DID, both "iss" and "sub" (RFC 7523 §3 items 1–2).
	Issuer string
	// Custodian is the custodian organisation's DID, "aud" (RFC 7523 §3 item 3).
	Custodian string
	// ID is "jti": 128 random bits, base64url (NewID). NewAssertion fills it in when empty.
	ID string
	// IssuedAt and Expiry are "iat" and "exp", in whole seconds; Expiry − IssuedAt is at most
	// MaxAssertionLifetime. NewAssertion uses time.Now() for a zero IssuedAt and IssuedAt +
	// MaxAssertionLifetime for a zero Expiry.
	IssuedAt, Expiry time.Time
	// Employee is who asks ("employee"); every field is required.
	Employee Employee
	// BSN is the patient ("bsn"). It travels only inside the JWE, to the custodian, and MUST
	// pass the 11-proof.
	BSN string
	// DataCategory ("data_category") and Purpose ("purpose", an HL7 PurposeOfUse code such as
	// TREAT) say what is asked for and why.
	DataCategory, Purpose string
	// ReferralGrant is the id of the referral grant relied on, if any ("referral_grant").
	ReferralGrant string
	// Emergency is set for emergency requests ("emergency").
	Emergency *Emergency
	// DPoPJKT is "cnf.jkt": the RFC 7638 thumbprint of the requesting EHR's DPoP key, to which
	// the access token will be bound (RFC 9449 §6.1).
	DPoPJKT string
}

// assertionPayload is the JSON form of AssertionClaims. aud is a single string (RFC 7519 §4.1.3
// allows that form; the array form is refused).
type assertionPayload struct {
	Iss           string       `json:"iss"`
	Sub           string       `json:"sub"`
	Aud           string       `json:"aud"`
	Jti           string       `json:"jti"`
	Iat           int64        `json:"iat"`
	Exp           int64        `json:"exp"`
	Employee      Employee     `json:"employee"`
	BSN           string       `json:"bsn"`
	DataCategory  string       `json:"data_category"`
	Purpose       string       `json:"purpose"`
	ReferralGrant string       `json:"referral_grant,omitempty"`
	Emergency     *Emergency   `json:"emergency,omitempty"`
	Cnf           Confirmation `json:"cnf"`
}

// NewAssertion signs c as the requesting organisation with signer under kid (empty: "<c.Issuer>#
// <signer's thumbprint>") as a JWS of type AssertionType, then encrypts it to the custodian's
// key-agreement key custodianKey (ECDH-ES+A256KW, A256GCM, crypto.Encrypt). It refuses claims
// that Verifier.Open would refuse for their form: a missing claim, an invalid BSN, a lifetime
// over five minutes, a kid of another organisation. Errors wrap ErrMalformed (never with the BSN)
// or a crypto error.
func NewAssertion(signer *crypto.PrivateKey, kid string, c AssertionClaims, custodianKey *crypto.PublicKey) ([]byte, error) {
	if signer == nil {
		return nil, fmt.Errorf("new assertion: %w: no signing key", crypto.ErrKey)
	}
	if kid == "" {
		kid = KID(c.Issuer, signer)
	}
	if c.ID == "" {
		c.ID = NewID()
	}
	if c.IssuedAt.IsZero() {
		c.IssuedAt = time.Now()
	}
	if c.Expiry.IsZero() {
		c.Expiry = c.IssuedAt.Add(MaxAssertionLifetime)
	}
	p := assertionPayload{
		Iss: c.Issuer, Sub: c.Issuer, Aud: c.Custodian, Jti: c.ID,
		Iat: unix(c.IssuedAt), Exp: unix(c.Expiry),
		Employee: c.Employee, BSN: c.BSN, DataCategory: c.DataCategory, Purpose: c.Purpose,
		ReferralGrant: c.ReferralGrant, Emergency: c.Emergency, Cnf: Confirmation{JKT: c.DPoPJKT},
	}
	if err := p.check(kid, MaxAssertionLifetime); err != nil {
		return nil, fmt.Errorf("new assertion: %w", err)
	}
	body, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("new assertion: %w", err)
	}
	jws, err := crypto.Sign(signer, body, crypto.Header{Type: AssertionType, KID: kid})
	if err != nil {
		return nil, fmt.Errorf("new assertion: %w", err)
	}
	jwe, err := crypto.Encrypt(jws, custodianKey)
	if err != nil {
		return nil, fmt.Errorf("new assertion: %w", err)
	}
	if len(jwe) > MaxAssertionSize {
		return nil, fmt.Errorf("new assertion: %w: %d bytes, limit %d", ErrTooLarge, len(jwe), MaxAssertionSize)
	}
	return jwe, nil
}

// check verifies the form of the claims: every required claim present and within bounds, iss ==
// sub, the kid naming a key of iss, the BSN passing the 11-proof, exp after iat by at most
// maxLife. Errors wrap ErrMalformed or ErrLifetime and never contain the BSN.
func (p *assertionPayload) check(kid string, maxLife time.Duration) error {
	kidDID, _, ok := splitKID(kid)
	switch {
	case !validDID(p.Iss):
		return fmt.Errorf("%w: iss %q is not a DID", ErrMalformed, clip(p.Iss))
	case p.Sub != p.Iss:
		return fmt.Errorf("%w: sub %q is not iss %s", ErrMalformed, clip(p.Sub), p.Iss)
	case !ok || kidDID != p.Iss:
		return fmt.Errorf("%w: kid %q does not name a key of %s", ErrMalformed, clip(kid), p.Iss)
	case !validDID(p.Aud):
		return fmt.Errorf("%w: aud %q is not a DID", ErrMalformed, clip(p.Aud))
	case p.Jti == "" || len(p.Jti) > maxIDLen:
		return fmt.Errorf("%w: jti missing or longer than %d", ErrMalformed, maxIDLen)
	case p.Iat <= 0 || p.Exp <= 0:
		return fmt.Errorf("%w: iat and exp are required", ErrMalformed)
	case p.Exp <= p.Iat:
		return fmt.Errorf("%w: exp %d is not after iat %d", ErrLifetime, p.Exp, p.Iat)
	case time.Duration(p.Exp-p.Iat)*time.Second > maxLife:
		return fmt.Errorf("%w: exp − iat is %ds, limit %v", ErrLifetime, p.Exp-p.Iat, maxLife)
	case p.Employee.UZI == "" || p.Employee.Role == "" || p.Employee.Name == "" || p.Employee.Assurance == "":
		return fmt.Errorf("%w: employee uzi, role, name and assurance are required", ErrMalformed)
	case p.DataCategory == "" || p.Purpose == "":
		return fmt.Errorf("%w: data_category and purpose are required", ErrMalformed)
	case p.Emergency != nil && p.Emergency.Reason == "":
		return fmt.Errorf("%w: emergency without a reason", ErrMalformed)
	case !validThumbprint(p.Cnf.JKT):
		return fmt.Errorf("%w: cnf.jkt is not a SHA-256 JWK thumbprint", ErrMalformed)
	}
	for _, f := range []struct{ name, v string }{
		{"employee.uzi", p.Employee.UZI}, {"employee.role", p.Employee.Role},
		{"employee.name", p.Employee.Name}, {"employee.assurance", p.Employee.Assurance},
		{"data_category", p.DataCategory}, {"purpose", p.Purpose},
		{"referral_grant", p.ReferralGrant},
	} {
		if len(f.v) > maxClaimLen {
			return fmt.Errorf("%w: %s longer than %d bytes", ErrMalformed, f.name, maxClaimLen)
		}
	}
	if p.Emergency != nil && len(p.Emergency.Reason) > maxClaimLen {
		return fmt.Errorf("%w: emergency.reason longer than %d bytes", ErrMalformed, maxClaimLen)
	}
	if err := crypto.ValidBSN(p.BSN); err != nil {
		// crypto.ValidBSN never repeats its input.
		return fmt.Errorf("%w: bsn: %w", ErrMalformed, err)
	}
	return nil
}

// claims returns the AssertionClaims of a checked payload.
func (p *assertionPayload) claims() *AssertionClaims {
	return &AssertionClaims{
		Issuer: p.Iss, Custodian: p.Aud, ID: p.Jti,
		IssuedAt: fromUnix(p.Iat), Expiry: fromUnix(p.Exp),
		Employee: p.Employee, BSN: p.BSN, DataCategory: p.DataCategory, Purpose: p.Purpose,
		ReferralGrant: p.ReferralGrant, Emergency: p.Emergency, DPoPJKT: p.Cnf.JKT,
	}
}
