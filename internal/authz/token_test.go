package authz

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/schakel-health/schakel/crypto"
)

func TestTokenRoundTrip(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name   string
		change func(*TokenClaims)
	}{
		{"consent", func(*TokenClaims) {}},
		{"referral grant", func(c *TokenClaims) {
			c.Scope = Scope{DataCategory: "imaging", Purpose: "TREAT", Patient: pseudonym,
				Resources: []string{"ImagingStudy/12", "DiagnosticReport/7"}}.String()
			c.Basis = "grant-9"
		}},
		{"break glass", func(c *TokenClaims) { c.BreakGlass, c.Basis = true, "btg-3" }},
		{"own audience", func(c *TokenClaims) { c.Audience = "https://fhir.custodian.example/r4" }},
		{"full employee", func(c *TokenClaims) { c.Employee.Assurance = "high" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.tokenClaims()
			tc.change(&c)
			tok := f.token(c)
			got, err := ParseToken(tok, f.tokenKeys, t0)
			if err != nil {
				t.Fatalf("ParseToken: %v", err)
			}
			if c.Audience == "" {
				c.Audience = c.Issuer
			}
			if !reflect.DeepEqual(*got, c) {
				t.Fatalf("ParseToken = %+v, want %+v", *got, c)
			}
			h, err := crypto.ParseHeader([]byte(tok))
			if err != nil || h.Type != "at+jwt" || h.KID != KID(custodianDID, f.custKey) {
				t.Fatalf("ParseHeader = %+v, %v; want typ at+jwt and the custodian's kid", h, err)
			}
		})
	}
}

func TestParseTokenRefuses(t *testing.T) {
	f := newFixture(t)
	kid := KID(custodianDID, f.custKey)
	signRaw := func(k *crypto.PrivateKey, typ, kid string, change func(map[string]any)) string {
		c := f.tokenClaims()
		p := map[string]any{
			"iss": c.Issuer, "sub": c.Subject, "aud": c.Issuer, "client_id": c.Subject, "jti": c.ID,
			"iat": c.IssuedAt.Unix(), "exp": c.Expiry.Unix(), "scope": c.Scope, "patient": c.Patient,
			"basis": c.Basis, "cnf": map[string]any{"jkt": c.JKT},
			"employee": map[string]any{"uzi": "1", "role": "01.015", "name": "A"},
		}
		change(p)
		body, _ := json.Marshal(p)
		b, err := crypto.Sign(k, body, crypto.Header{Type: typ, KID: kid})
		if err != nil {
			t.Fatalf("crypto.Sign: %v", err)
		}
		return string(b)
	}
	nop := func(map[string]any) {}
	good := f.token(f.tokenClaims())
	for _, tc := range []struct {
		name  string
		token string
		now   time.Time
		want  error
	}{
		{"expired", good, t0.Add(10 * time.Minute), ErrExpired},
		{"issued in the future", good, t0.Add(-2 * time.Minute), ErrNotYetValid},
		{"tampered payload", string(flip([]byte(good), strings.IndexByte(good, '.')+5)), t0, ErrSignature},
		{"tampered signature", string(flip([]byte(good), len(good)-3)), t0, ErrSignature},
		{"forged", signRaw(mustKey(t, crypto.Ed25519, crypto.UseSign), TokenType, kid, nop), t0, ErrSignature},
		{"issuer not hosted", f.tokenAs(t, requesterDID, f.reqKey), t0, ErrUnknownKey},
		{"wrong typ", signRaw(f.custKey, "JWT", kid, nop), t0, ErrMalformed},
		{"receipt typ", signRaw(f.custKey, ReceiptType, kid, nop), t0, ErrMalformed},
		{"application/at+jwt accepted, lifetime too long", signRaw(f.custKey, "application/at+jwt", kid,
			func(p map[string]any) { p["exp"] = t0.Add(16 * time.Minute).Unix() }), t0, ErrLifetime},
		{"iss not the signer", signRaw(f.custKey, TokenType, kid, func(p map[string]any) { p["iss"] = otherDID }), t0, ErrSignature},
		{"client_id not sub", signRaw(f.custKey, TokenType, kid, func(p map[string]any) { p["client_id"] = otherDID }), t0, ErrMalformed},
		{"no cnf", signRaw(f.custKey, TokenType, kid, func(p map[string]any) { delete(p, "cnf") }), t0, ErrMalformed},
		{"no basis", signRaw(f.custKey, TokenType, kid, func(p map[string]any) { delete(p, "basis") }), t0, ErrMalformed},
		{"null basis", signRaw(f.custKey, TokenType, kid, func(p map[string]any) { p["basis"] = nil }), t0, ErrMalformed},
		{"unknown claim", signRaw(f.custKey, TokenType, kid, func(p map[string]any) { p["bsn"] = testBSN }), t0, ErrMalformed},
		{"scope names another patient", signRaw(f.custKey, TokenType, kid, func(p map[string]any) { p["patient"] = "v1.other" }), t0, ErrMalformed},
		{"too large", strings.Repeat("A", MaxTokenSize+1), t0, ErrTooLarge},
		{"garbage", "not.a.token", t0, ErrMalformed},
		{"empty", "", t0, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseToken(tc.token, f.tokenKeys, tc.now)
			if !errors.Is(err, ErrInvalidToken) || !errors.Is(err, tc.want) {
				t.Fatalf("ParseToken: %v, want invalid token and %v", err, tc.want)
			}
			if oe := ToOAuth(err); oe.Code != CodeInvalidToken || oe.StatusCode() != 401 {
				t.Fatalf("ToOAuth(%v) = %+v", err, oe)
			}
		})
	}
}

// tokenAs issues a valid token as another organisation.
func (f *fixture) tokenAs(t *testing.T, did string, k *crypto.PrivateKey) string {
	c := f.tokenClaims()
	c.Issuer = did
	tok, err := IssueToken(k, "", c)
	if err != nil {
		t.Fatalf("IssueToken: %v", err)
	}
	return tok
}

func TestIssueTokenRefuses(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name   string
		change func(*TokenClaims)
		want   error
	}{
		{"BSN as patient", func(c *TokenClaims) {
			c.Patient = testBSN
			c.Scope = Scope{DataCategory: "medication", Purpose: "TREAT", Patient: testBSN}.String()
		}, ErrMalformed},
		{"BSN in scope", func(c *TokenClaims) { c.Scope += " resource:" + testBSN }, ErrMalformed},
		{"scope and patient differ", func(c *TokenClaims) { c.Patient = "v1.other" }, ErrMalformed},
		{"lifetime over 15 minutes", func(c *TokenClaims) { c.Expiry = c.IssuedAt.Add(15*time.Minute + time.Second) }, ErrLifetime},
		{"no basis", func(c *TokenClaims) { c.Basis = "" }, ErrMalformed},
		{"no jkt", func(c *TokenClaims) { c.JKT = "" }, ErrMalformed},
		{"no subject", func(c *TokenClaims) { c.Subject = "" }, ErrMalformed},
		{"bad scope", func(c *TokenClaims) { c.Scope = "medication" }, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.tokenClaims()
			tc.change(&c)
			_, err := IssueToken(f.custKey, "", c)
			if !errors.Is(err, tc.want) {
				t.Fatalf("IssueToken: %v, want %v", err, tc.want)
			}
			if strings.Contains(err.Error(), testBSN) {
				t.Fatalf("IssueToken: error names the BSN: %v", err)
			}
		})
	}
}

func TestIssueTokenDefaults(t *testing.T) {
	f := newFixture(t)
	c := f.tokenClaims()
	c.ID, c.IssuedAt, c.Expiry, c.Audience = "", time.Time{}, time.Time{}, ""
	got, err := ParseToken(f.token(c), f.tokenKeys, time.Now())
	if err != nil {
		t.Fatalf("ParseToken: %v", err)
	}
	if got.ID == "" || got.Audience != custodianDID || got.Expiry.Sub(got.IssuedAt) != DefaultTokenLifetime {
		t.Fatalf("ParseToken = %+v, want a jti, aud %s and lifetime %v", got, custodianDID, DefaultTokenLifetime)
	}
}

func TestScope(t *testing.T) {
	for _, tc := range []struct {
		name  string
		scope string
		want  Scope
		ok    bool
	}{
		{"plain", "medication purpose:TREAT patient:v1.abc", Scope{DataCategory: "medication", Purpose: "TREAT", Patient: "v1.abc"}, true},
		{"resources", "imaging purpose:TREAT patient:v1.abc resource:ImagingStudy/1 resource:DiagnosticReport/2",
			Scope{DataCategory: "imaging", Purpose: "TREAT", Patient: "v1.abc", Resources: []string{"ImagingStudy/1", "DiagnosticReport/2"}}, true},
		{"out of order", "purpose:TREAT medication patient:v1.abc", Scope{}, false},
		{"no patient", "medication purpose:TREAT", Scope{}, false},
		{"empty patient", "medication purpose:TREAT patient:", Scope{}, false},
		{"double space", "medication  purpose:TREAT patient:v1.abc", Scope{}, false},
		{"unknown entry", "medication purpose:TREAT patient:v1.abc bsn:1", Scope{}, false},
		{"quote", "medi\"cation purpose:TREAT patient:v1.abc", Scope{}, false},
		{"tab", "medication\tpurpose:TREAT patient:v1.abc", Scope{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseScope(tc.scope)
			if (err == nil) != tc.ok {
				t.Fatalf("ParseScope(%q): %v, want ok=%v", tc.scope, err, tc.ok)
			}
			if !tc.ok {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("ParseScope(%q): %v, want %v", tc.scope, err, ErrMalformed)
				}
				return
			}
			if !reflect.DeepEqual(got, tc.want) || got.String() != tc.scope {
				t.Fatalf("ParseScope(%q) = %+v (String %q), want %+v", tc.scope, got, got.String(), tc.want)
			}
		})
	}
}
