package authz

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/schakel-health/schakel/crypto"
)

const fhirURL = "https://fhir.custodian.example/r4/MedicationStatement"

// rawProof builds a DPoP proof with any header and claims, signed with key (Ed25519 or P-256 via
// its private JWK), to make proofs a hostile client could send.
func rawProof(t *testing.T, key *crypto.PrivateKey, header, claims map[string]any) string {
	t.Helper()
	hb, _ := json.Marshal(header)
	cb, _ := json.Marshal(claims)
	input := b64.EncodeToString(hb) + "." + b64.EncodeToString(cb)
	priv, _ := key.MarshalJSON()
	var j struct{ D string }
	json.Unmarshal(priv, &j)
	d, _ := b64.DecodeString(j.D)
	var sig []byte
	if key.Type() == crypto.Ed25519 {
		sig = ed25519.Sign(ed25519.NewKeyFromSeed(d), []byte(input))
	} else {
		ec, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
		if err != nil {
			t.Fatalf("ParseRawPrivateKey: %v", err)
		}
		h := sha256.Sum256([]byte(input))
		r, s, _ := ecdsa.Sign(rand.Reader, ec, h[:])
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	}
	return input + "." + b64.EncodeToString(sig)
}

// publicJWK returns the public members of key as a DPoP header's jwk.
func publicJWK(key *crypto.PrivateKey) map[string]any {
	b, _ := key.Public().MarshalJSON()
	var m map[string]any
	json.Unmarshal(b, &m)
	delete(m, "kid")
	delete(m, "use")
	delete(m, "alg")
	return m
}

func ath(token string) string {
	s := sha256.Sum256([]byte(token))
	return b64.EncodeToString(s[:])
}

func TestDPoPGood(t *testing.T) {
	f := newFixture(t)
	tok := f.token(f.tokenClaims())
	for _, kt := range []crypto.KeyType{crypto.Ed25519, crypto.P256} {
		key := mustKey(t, kt, crypto.UseSign)
		for _, tc := range []struct {
			name, proofURL, reqURL string
			iat                    time.Time
		}{
			{"same URL", fhirURL, fhirURL, t0},
			{"query and fragment ignored", fhirURL + "?patient=x#f", fhirURL + "?_count=10", t0},
			{"scheme, host and default port normalised", "HTTPS://FHIR.Custodian.example:443/r4/MedicationStatement", fhirURL, t0},
			{"iat 59 s old", fhirURL, fhirURL, t0.Add(-59 * time.Second)},
			{"iat 59 s ahead", fhirURL, fhirURL, t0.Add(59 * time.Second)},
		} {
			t.Run(string(kt)+"/"+tc.name, func(t *testing.T) {
				proof, err := NewDPoPProof(key, "GET", tc.proofURL, tok, tc.iat)
				if err != nil {
					t.Fatalf("NewDPoPProof: %v", err)
				}
				if err := CheckDPoP(t.Context(), proof, "GET", tc.reqURL, tok, key.KID(), t0, f.replay); err != nil {
					t.Fatalf("CheckDPoP: %v", err)
				}
			})
		}
	}
	t.Run("token endpoint", func(t *testing.T) {
		proof, err := NewDPoPProof(f.dpopKey, "POST", "https://node.requester.example/token", "", t0)
		if err != nil {
			t.Fatalf("NewDPoPProof: %v", err)
		}
		jkt, err := VerifyDPoPProof(t.Context(), proof, "POST", "https://node.requester.example/token", t0, f.replay)
		if err != nil || jkt != f.dpopKey.KID() {
			t.Fatalf("VerifyDPoPProof = %q, %v; want %q", jkt, err, f.dpopKey.KID())
		}
	})
}

func TestDPoPBad(t *testing.T) {
	f := newFixture(t)
	tok := f.token(f.tokenClaims())
	key := f.dpopKey
	other := mustKey(t, crypto.Ed25519, crypto.UseSign)
	header := func(change func(h map[string]any)) map[string]any {
		h := map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": publicJWK(key)}
		if change != nil {
			change(h)
		}
		return h
	}
	claims := func(jti string, change func(c map[string]any)) map[string]any {
		c := map[string]any{"jti": jti, "htm": "GET", "htu": fhirURL, "iat": t0.Unix(), "ath": ath(tok)}
		if change != nil {
			change(c)
		}
		return c
	}
	for _, tc := range []struct {
		name  string
		proof func(jti string) string
		want  error
	}{
		{"wrong htm", func(jti string) string {
			return rawProof(t, key, header(nil), claims(jti, func(c map[string]any) { c["htm"] = "POST" }))
		}, ErrBinding},
		{"lower-case htm", func(jti string) string {
			return rawProof(t, key, header(nil), claims(jti, func(c map[string]any) { c["htm"] = "get" }))
		}, ErrBinding},
		{"wrong htu path", func(jti string) string {
			return rawProof(t, key, header(nil), claims(jti, func(c map[string]any) { c["htu"] = fhirURL + "2" }))
		}, ErrBinding},
		{"wrong htu host", func(jti string) string {
			return rawProof(t, key, header(nil), claims(jti, func(c map[string]any) {
				c["htu"] = strings.Replace(fhirURL, "custodian", "evil", 1)
			}))
		}, ErrBinding},
		{"htu over http", func(jti string) string {
			return rawProof(t, key, header(nil), claims(jti, func(c map[string]any) { c["htu"] = strings.Replace(fhirURL, "https", "http", 1) }))
		}, ErrBinding},
		{"wrong ath", func(jti string) string {
			return rawProof(t, key, header(nil), claims(jti, func(c map[string]any) { c["ath"] = ath(tok + "x") }))
		}, ErrBinding},
		{"no ath", func(jti string) string {
			return rawProof(t, key, header(nil), claims(jti, func(c map[string]any) { delete(c, "ath") }))
		}, ErrBinding},
		{"key is not the token's", func(jti string) string {
			return rawProof(t, other, header(func(h map[string]any) { h["alg"], h["jwk"] = "EdDSA", publicJWK(other) }), claims(jti, nil))
		}, ErrBinding},
		{"stale iat", func(jti string) string {
			return rawProof(t, key, header(nil), claims(jti, func(c map[string]any) { c["iat"] = t0.Add(-61 * time.Second).Unix() }))
		}, ErrExpired},
		{"future iat", func(jti string) string {
			return rawProof(t, key, header(nil), claims(jti, func(c map[string]any) { c["iat"] = t0.Add(61 * time.Second).Unix() }))
		}, ErrNotYetValid},
		{"alg none", func(jti string) string {
			hb, _ := json.Marshal(header(func(h map[string]any) { h["alg"] = "none" }))
			cb, _ := json.Marshal(claims(jti, nil))
			return b64.EncodeToString(hb) + "." + b64.EncodeToString(cb) + "."
		}, crypto.ErrAlgorithm},
		{"alg HS256", func(jti string) string {
			return rawProof(t, key, header(func(h map[string]any) { h["alg"] = "HS256" }), claims(jti, nil))
		}, crypto.ErrAlgorithm},
		{"alg does not fit the key", func(jti string) string {
			return rawProof(t, key, header(func(h map[string]any) { h["alg"] = "EdDSA" }), claims(jti, nil))
		}, ErrMalformed},
		{"private key in header", func(jti string) string {
			priv, _ := key.MarshalJSON()
			var jwk map[string]any
			json.Unmarshal(priv, &jwk)
			return rawProof(t, key, header(func(h map[string]any) { h["jwk"] = jwk }), claims(jti, nil))
		}, ErrMalformed},
		{"no jwk", func(jti string) string {
			return rawProof(t, key, header(func(h map[string]any) { delete(h, "jwk") }), claims(jti, nil))
		}, ErrMalformed},
		{"jwk with use enc", func(jti string) string {
			return rawProof(t, key, header(func(h map[string]any) { h["jwk"].(map[string]any)["use"] = "enc" }), claims(jti, nil))
		}, ErrMalformed},
		{"wrong typ", func(jti string) string {
			return rawProof(t, key, header(func(h map[string]any) { h["typ"] = "JWT" }), claims(jti, nil))
		}, ErrMalformed},
		{"crit", func(jti string) string {
			return rawProof(t, key, header(func(h map[string]any) { h["crit"] = []string{"exp"} }), claims(jti, nil))
		}, ErrMalformed},
		{"signed by another key than the jwk", func(jti string) string {
			return rawProof(t, mustKey(t, crypto.P256, crypto.UseSign), header(nil), claims(jti, nil))
		}, ErrSignature},
		{"tampered claims", func(jti string) string {
			p := rawProof(t, key, header(nil), claims(jti, nil))
			parts := strings.Split(p, ".")
			cb, _ := json.Marshal(claims(jti, func(c map[string]any) { c["iat"] = t0.Unix() + 1 }))
			return parts[0] + "." + b64.EncodeToString(cb) + "." + parts[2]
		}, ErrSignature},
		{"no jti", func(jti string) string {
			return rawProof(t, key, header(nil), claims(jti, func(c map[string]any) { delete(c, "jti") }))
		}, ErrMalformed},
		{"iat as string", func(jti string) string {
			return rawProof(t, key, header(nil), claims(jti, func(c map[string]any) { c["iat"] = "1773480413" }))
		}, ErrMalformed},
		{"newline in segment", func(jti string) string {
			p := rawProof(t, key, header(nil), claims(jti, nil))
			return p[:10] + "\n" + p[10:]
		}, ErrMalformed},
		{"too large", func(string) string { return strings.Repeat("a", 5000) }, ErrTooLarge},
		{"garbage", func(string) string { return "a.b" }, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			jti := NewID()
			err := CheckDPoP(t.Context(), tc.proof(jti), "GET", fhirURL, tok, key.KID(), t0, f.replay)
			if !errors.Is(err, ErrInvalidDPoPProof) || !errors.Is(err, tc.want) {
				t.Fatalf("CheckDPoP: %v, want invalid DPoP proof and %v", err, tc.want)
			}
			if oe := ToOAuth(err); oe.Code != CodeInvalidDPoPProof {
				t.Fatalf("ToOAuth(%v) = %+v", err, oe)
			}
			// Nothing was recorded: a valid proof with the same jti passes.
			if err := CheckDPoP(t.Context(), rawProof(t, key, header(nil), claims(jti, nil)), "GET", fhirURL, tok, key.KID(), t0, f.replay); err != nil {
				t.Fatalf("CheckDPoP of a valid proof with the refused one's jti: %v", err)
			}
		})
	}
}

func TestDPoPReplay(t *testing.T) {
	f := newFixture(t)
	tok := f.token(f.tokenClaims())
	proof, err := NewDPoPProof(f.dpopKey, "GET", fhirURL, tok, t0)
	if err != nil {
		t.Fatalf("NewDPoPProof: %v", err)
	}
	if err := CheckDPoP(t.Context(), proof, "GET", fhirURL, tok, f.dpopKey.KID(), t0, f.replay); err != nil {
		t.Fatalf("CheckDPoP: %v", err)
	}
	err = CheckDPoP(t.Context(), proof, "GET", fhirURL, tok, f.dpopKey.KID(), t0.Add(time.Second), f.replay)
	if !errors.Is(err, ErrReplay) || !errors.Is(err, ErrInvalidDPoPProof) {
		t.Fatalf("CheckDPoP replayed: %v, want %v", err, ErrReplay)
	}
	if err := CheckDPoP(t.Context(), proof, "GET", fhirURL, tok, f.dpopKey.KID(), t0, nil); err == nil {
		t.Fatal("CheckDPoP without a replay cache: no error")
	}
}

func TestNormalizeHTU(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://a.example/x", "https://a.example/x"},
		{"https://A.Example:443/x?q#f", "https://a.example/x"},
		{"https://a.example", "https://a.example/"},
		{"https://a.example:8443/x", "https://a.example:8443/x"},
		{"http://a.example:80/x", "http://a.example/x"},
		{"https://[::1]:443/x", "https://[::1]/x"},
		{"https://[::1]:8443/x", "https://[::1]:8443/x"},
		{"ftp://a.example/x", ""},
		{"/relative", ""},
		{"https://user@a.example/x", ""},
	} {
		got, err := normalizeHTU(tc.in)
		if (err != nil) != (tc.want == "") || got != tc.want {
			t.Errorf("normalizeHTU(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
