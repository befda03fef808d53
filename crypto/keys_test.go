package crypto

import (
	stdcrypto "crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

func TestGenerateKey(t *testing.T) {
	tests := []struct {
		name    string
		kt      KeyType
		use     Use
		wantKT  KeyType
		wantUse Use
		wantAlg string
		wantErr error
	}{
		{name: "defaults", wantKT: Ed25519, wantUse: UseSign, wantAlg: "EdDSA"},
		{name: "Ed25519 sig", kt: Ed25519, use: UseSign, wantKT: Ed25519, wantUse: UseSign, wantAlg: "EdDSA"},
		{name: "P-256 sig", kt: P256, use: UseSign, wantKT: P256, wantUse: UseSign, wantAlg: "ES256"},
		{name: "P-256 enc", kt: P256, use: UseEnc, wantKT: P256, wantUse: UseEnc, wantAlg: "ECDH-ES+A256KW"},
		{name: "enc defaults to P-256", use: UseEnc, wantKT: P256, wantUse: UseEnc, wantAlg: "ECDH-ES+A256KW"},
		{name: "Ed25519 enc", kt: Ed25519, use: UseEnc, wantErr: ErrKey},
		{name: "unknown type", kt: "secp256k1", use: UseSign, wantErr: ErrKey},
		{name: "unknown use", kt: P256, use: "wrap", wantErr: ErrKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := GenerateKey(tt.kt, tt.use)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("GenerateKey: err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("GenerateKey: %v", err)
			}
			if k.Type() != tt.wantKT || k.Use() != tt.wantUse || k.Algorithm() != tt.wantAlg {
				t.Errorf("GenerateKey = %s %s %s, want %s %s %s", k.Type(), k.Use(), k.Algorithm(), tt.wantKT, tt.wantUse, tt.wantAlg)
			}
			pub := k.Public()
			if pub.KID() != k.KID() || pub.Type() != k.Type() || pub.Use() != k.Use() || pub.Algorithm() != k.Algorithm() {
				t.Errorf("Public() = %s %s %s %s, does not match the private key", pub.KID(), pub.Type(), pub.Use(), pub.Algorithm())
			}
			if Thumbprint(pub) != k.KID() {
				t.Errorf("Thumbprint = %s, want %s", Thumbprint(pub), k.KID())
			}
			if other := generate(t, tt.wantKT, tt.wantUse); other.KID() == k.KID() {
				t.Errorf("GenerateKey returned the same key twice: %s", k.KID())
			}
		})
	}
}

// TestThumbprintVectors checks kid against fixed vectors, among them RFC 8037 Appendix A.3.
func TestThumbprintVectors(t *testing.T) {
	for _, v := range loadVectors(t).Thumbprints {
		t.Run(v.Name, func(t *testing.T) {
			p, err := ParsePublicKey(v.JWK)
			if err != nil {
				t.Fatalf("ParsePublicKey: %v", err)
			}
			if p.KID() != v.KID {
				t.Errorf("KID = %s, want %s", p.KID(), v.KID)
			}
		})
	}
}

// TestKIDMatchesJWX checks that kid is the thumbprint jwx computes for the same key.
func TestKIDMatchesJWX(t *testing.T) {
	tests := []struct {
		name string
		kt   KeyType
		use  Use
	}{
		{name: "Ed25519", kt: Ed25519, use: UseSign},
		{name: "P-256 sig", kt: P256, use: UseSign},
		{name: "P-256 enc", kt: P256, use: UseEnc},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := generate(t, tt.kt, tt.use)
			j := k.Public().JWK()
			if j == nil {
				t.Fatal("JWK: nil")
			}
			tp, err := j.Thumbprint(stdcrypto.SHA256)
			if err != nil {
				t.Fatalf("Thumbprint: %v", err)
			}
			if got := base64.RawURLEncoding.EncodeToString(tp); got != k.KID() {
				t.Errorf("jwx thumbprint = %s, KID = %s", got, k.KID())
			}
			if j.KeyID() != k.KID() || j.Algorithm().String() != k.Algorithm() || j.KeyUsage() != string(k.Use()) {
				t.Errorf("JWK kid/alg/use = %s/%s/%s, want %s/%s/%s", j.KeyID(), j.Algorithm(), j.KeyUsage(), k.KID(), k.Algorithm(), k.Use())
			}
			if isPriv, err := jwk.IsPrivateKey(j); err != nil || isPriv {
				t.Errorf("JWK: IsPrivateKey = %v, %v; want false", isPriv, err)
			}
			// A changed clone MUST NOT change the key it came from.
			if err := j.Set(jwk.KeyIDKey, "changed"); err != nil {
				t.Fatalf("Set: %v", err)
			}
			if got := k.Public().JWK().KeyID(); got != k.KID() {
				t.Errorf("JWK().KeyID() after changing a clone = %s, want %s", got, k.KID())
			}
		})
	}
}

func TestPublicKeyJSONRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		kt   KeyType
		use  Use
	}{
		{name: "Ed25519", kt: Ed25519, use: UseSign},
		{name: "P-256 sig", kt: P256, use: UseSign},
		{name: "P-256 enc", kt: P256, use: UseEnc},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := generate(t, tt.kt, tt.use).Public()
			b, err := json.Marshal(pub)
			if err != nil {
				t.Fatalf("MarshalJSON: %v", err)
			}
			got, err := ParsePublicKey(b)
			if err != nil {
				t.Fatalf("ParsePublicKey(%s): %v", b, err)
			}
			if !got.Equal(pub) {
				t.Errorf("ParsePublicKey(MarshalJSON) is not Equal to the original")
			}
			b2, err := json.Marshal(got)
			if err != nil {
				t.Fatalf("MarshalJSON: %v", err)
			}
			if string(b2) != string(b) {
				t.Errorf("MarshalJSON not stable:\n%s\n%s", b, b2)
			}
			// The canonical member order is kty, crv, x, (y), kid, alg, use.
			want := []string{`"kty"`, `"crv"`, `"x"`, `"kid"`, `"alg"`, `"use"`}
			if tt.kt == P256 {
				want = []string{`"kty"`, `"crv"`, `"x"`, `"y"`, `"kid"`, `"alg"`, `"use"`}
			}
			last := -1
			for _, m := range want {
				i := strings.Index(string(b), m)
				if i <= last {
					t.Errorf("MarshalJSON = %s: member %s out of order", b, m)
				}
				last = i
			}
			if strings.Contains(string(b), `"d"`) {
				t.Errorf("MarshalJSON = %s: contains a private member", b)
			}
		})
	}
}

func TestPublicKeyInStruct(t *testing.T) {
	pub := generate(t, Ed25519, UseSign).Public()
	type doc struct {
		Key  *PublicKey `json:"key"`
		Opt  *PublicKey `json:"opt,omitempty"`
		Name string     `json:"name"`
	}
	b, err := json.Marshal(doc{Key: pub, Name: "x"})
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	var got doc
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	if !got.Key.Equal(pub) || got.Opt != nil {
		t.Errorf("Unmarshal = %+v, want key %s and no opt", got, pub.KID())
	}
	bad := strings.Replace(string(b), pub.KID(), "not-the-thumbprint", 1)
	if err := json.Unmarshal([]byte(bad), &got); !errors.Is(err, ErrKey) {
		t.Errorf("Unmarshal with wrong kid: err = %v, want ErrKey", err)
	}
}

func TestParsePublicKey(t *testing.T) {
	ed := generate(t, Ed25519, UseSign).Public()
	ec := generate(t, P256, UseSign).Public()
	_, edCrv, edX, _ := ed.members()
	_, _, ecX, ecY := ec.members()
	edPriv, err := json.Marshal(generate(t, Ed25519, UseSign))
	if err != nil {
		t.Fatalf("MarshalJSON: %v", err)
	}
	// okp returns an Ed25519 JWK with the given extra members.
	okp := func(extra string) string {
		return fmt.Sprintf(`{"kty":"OKP","crv":%q,"x":%q,"use":"sig","alg":"EdDSA"%s}`, edCrv, edX, extra)
	}
	tests := []struct {
		name    string
		in      string
		wantErr error
	}{
		{name: "minimal OKP without kid", in: okp("")},
		{name: "OKP with kid", in: okp(`,"kid":"` + ed.KID() + `"`)},
		{name: "unknown members ignored", in: okp(`,"key_ops":["verify"],"ext":true`)},
		{name: "EC sig", in: fmt.Sprintf(`{"kty":"EC","crv":"P-256","x":%q,"y":%q,"use":"sig","alg":"ES256"}`, ecX, ecY)},
		{name: "EC enc", in: fmt.Sprintf(`{"kty":"EC","crv":"P-256","x":%q,"y":%q,"use":"enc","alg":"ECDH-ES+A256KW"}`, ecX, ecY)},
		{name: "whitespace around", in: " \n" + okp("") + "\n "},

		{name: "private key", in: string(edPriv), wantErr: ErrKey},
		{name: "private member d", in: okp(`,"d":"` + edX + `"`), wantErr: ErrKey},
		{name: "symmetric member k", in: okp(`,"k":"AAAA"`), wantErr: ErrKey},
		{name: "wrong kid", in: okp(`,"kid":"` + ec.KID() + `"`), wantErr: ErrKey},
		{name: "kid not a string", in: okp(`,"kid":7`), wantErr: ErrKey},
		{name: "kid null", in: okp(`,"kid":null`), wantErr: ErrKey},
		{name: "unknown crv", in: strings.Replace(okp(""), "Ed25519", "Ed448", 1), wantErr: ErrKey},
		{name: "X25519", in: strings.Replace(okp(""), "Ed25519", "X25519", 1), wantErr: ErrKey},
		{name: "EC P-384", in: fmt.Sprintf(`{"kty":"EC","crv":"P-384","x":%q,"y":%q,"use":"sig","alg":"ES384"}`, ecX, ecY), wantErr: ErrKey},
		{name: "RSA", in: `{"kty":"RSA","n":"AQAB","e":"AQAB","use":"sig","alg":"RS256"}`, wantErr: ErrKey},
		{name: "oct", in: `{"kty":"oct","k":"AAAA","use":"sig","alg":"HS256"}`, wantErr: ErrKey},
		{name: "no use", in: fmt.Sprintf(`{"kty":"OKP","crv":"Ed25519","x":%q,"alg":"EdDSA"}`, edX), wantErr: ErrKey},
		{name: "no alg", in: fmt.Sprintf(`{"kty":"OKP","crv":"Ed25519","x":%q,"use":"sig"}`, edX), wantErr: ErrKey},
		{name: "OKP enc", in: fmt.Sprintf(`{"kty":"OKP","crv":"Ed25519","x":%q,"use":"enc","alg":"ECDH-ES+A256KW"}`, edX), wantErr: ErrKey},
		{name: "EC sig with enc alg", in: fmt.Sprintf(`{"kty":"EC","crv":"P-256","x":%q,"y":%q,"use":"sig","alg":"ECDH-ES+A256KW"}`, ecX, ecY), wantErr: ErrKey},
		{name: "EC enc with sig alg", in: fmt.Sprintf(`{"kty":"EC","crv":"P-256","x":%q,"y":%q,"use":"enc","alg":"ES256"}`, ecX, ecY), wantErr: ErrKey},
		{name: "EC point not on curve", in: fmt.Sprintf(`{"kty":"EC","crv":"P-256","x":%q,"y":%q,"use":"sig","alg":"ES256"}`, ecX, ecX), wantErr: ErrKey},
		{name: "EC without y", in: fmt.Sprintf(`{"kty":"EC","crv":"P-256","x":%q,"use":"sig","alg":"ES256"}`, ecX), wantErr: ErrKey},
		{name: "OKP with y", in: okp(`,"y":"` + edX + `"`), wantErr: ErrKey},
		{name: "x too short", in: strings.Replace(okp(""), edX, edX[:42], 1), wantErr: ErrKey},
		{name: "x padded", in: strings.Replace(okp(""), edX, edX+"=", 1), wantErr: ErrKey},
		{name: "x standard base64", in: strings.Replace(okp(""), edX, "+"+edX[1:], 1), wantErr: ErrKey},
		{name: "x non-canonical trailing bits", in: strings.Replace(okp(""), edX, edX[:42]+nonCanonical(edX[42]), 1), wantErr: ErrKey},
		{name: "duplicate x", in: okp(`,"x":"` + edX + `"`), wantErr: ErrKey},
		{name: "array", in: "[" + okp("") + "]", wantErr: ErrKey},
		{name: "trailing data", in: okp("") + "{}", wantErr: ErrKey},
		{name: "not JSON", in: "kty=OKP", wantErr: ErrKey},
		{name: "empty", in: "", wantErr: ErrKey},
		{name: "null", in: "null", wantErr: ErrKey},
		{name: "too large", in: okp(`,"pad":"` + strings.Repeat("a", 4096) + `"`), wantErr: ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePublicKey([]byte(tt.in))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParsePublicKey(%s): err = %v, want %v", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePublicKey(%s): %v", tt.in, err)
			}
			if p.KID() == "" || p.Algorithm() == "" || p.Use() == "" {
				t.Errorf("ParsePublicKey = kid %q alg %q use %q, want all set", p.KID(), p.Algorithm(), p.Use())
			}
		})
	}
}

// nonCanonical returns the base64url character c with its lowest bit set. As the last character
// of an encoding whose length is not a multiple of 3 bytes, that bit is padding, so the result is
// a non-canonical spelling of the same bytes.
func nonCanonical(c byte) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, c)
	return string(alphabet[i|1])
}

func TestPrivateKeyJSONRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		kt   KeyType
		use  Use
	}{
		{name: "Ed25519", kt: Ed25519, use: UseSign},
		{name: "P-256 sig", kt: P256, use: UseSign},
		{name: "P-256 enc", kt: P256, use: UseEnc},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := generate(t, tt.kt, tt.use)
			b, err := k.MarshalJSON()
			if err != nil {
				t.Fatalf("MarshalJSON: %v", err)
			}
			got, err := ParsePrivateKey(b)
			if err != nil {
				t.Fatalf("ParsePrivateKey: %v", err)
			}
			if !got.Public().Equal(k.Public()) || got.KID() != k.KID() {
				t.Fatalf("ParsePrivateKey: public key differs")
			}
			// jwx MUST read the same private key.
			j, err := jwk.ParseKey(b)
			if err != nil {
				t.Fatalf("jwk.ParseKey: %v", err)
			}
			if isPriv, _ := jwk.IsPrivateKey(j); !isPriv || j.KeyID() != k.KID() {
				t.Errorf("jwk.ParseKey: private %v kid %s, want private and %s", isPriv, j.KeyID(), k.KID())
			}
			if s := fmt.Sprint(k); strings.Contains(s, string(b[strings.Index(string(b), `"d":"`)+5:][:10])) {
				t.Errorf("fmt.Sprint(key) = %s: reveals the private key", s)
			}
		})
	}
}

func TestParsePrivateKey(t *testing.T) {
	ed := generate(t, Ed25519, UseSign)
	ec := generate(t, P256, UseEnc)
	edJSON, _ := ed.MarshalJSON()
	ecJSON, _ := ec.MarshalJSON()
	pubJSON, _ := ed.Public().MarshalJSON()
	var edm, ecm map[string]string
	if err := json.Unmarshal(edJSON, &edm); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	if err := json.Unmarshal(ecJSON, &ecm); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	other := generate(t, Ed25519, UseSign)
	otherJSON, _ := other.MarshalJSON()
	var otherm map[string]string
	if err := json.Unmarshal(otherJSON, &otherm); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	with := func(m map[string]string, k, v string) string {
		c := make(map[string]string, len(m))
		for mk, mv := range m {
			c[mk] = mv
		}
		if v == "" {
			delete(c, k)
		} else {
			c[k] = v
		}
		b, _ := json.Marshal(c)
		return string(b)
	}
	tests := []struct {
		name    string
		in      string
		wantErr error
	}{
		{name: "Ed25519", in: string(edJSON)},
		{name: "P-256", in: string(ecJSON)},
		{name: "without kid", in: with(edm, "kid", "")},
		{name: "public only", in: string(pubJSON), wantErr: ErrKey},
		{name: "d of another key", in: with(edm, "d", otherm["d"]), wantErr: ErrKey},
		{name: "EC d of another key", in: with(ecm, "d", otherm["d"]), wantErr: ErrKey},
		{name: "d too short", in: with(edm, "d", edm["d"][:20]), wantErr: ErrKey},
		{name: "wrong kid", in: with(edm, "kid", other.KID()), wantErr: ErrKey},
		{name: "no use", in: with(edm, "use", ""), wantErr: ErrKey},
		{name: "too large", in: with(edm, "pad", strings.Repeat("a", 5000)), wantErr: ErrTooLarge},
		{name: "garbage", in: "{", wantErr: ErrKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParsePrivateKey([]byte(tt.in))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParsePrivateKey: err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePrivateKey: %v", err)
			}
			if k.KID() == "" {
				t.Errorf("ParsePrivateKey: empty KID")
			}
		})
	}
}

func TestPublicKeyEqual(t *testing.T) {
	a := generate(t, P256, UseSign)
	b := generate(t, P256, UseSign)
	aJSON, _ := a.Public().MarshalJSON()
	aAgain, err := ParsePublicKey(aJSON)
	if err != nil {
		t.Fatalf("ParsePublicKey: %v", err)
	}
	tests := []struct {
		name string
		p, o *PublicKey
		want bool
	}{
		{name: "same", p: a.Public(), o: a.Public(), want: true},
		{name: "parsed copy", p: a.Public(), o: aAgain, want: true},
		{name: "different", p: a.Public(), o: b.Public(), want: false},
		{name: "nil and key", p: nil, o: a.Public(), want: false},
		{name: "key and nil", p: a.Public(), o: nil, want: false},
		{name: "both nil", p: nil, o: nil, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Equal(tt.o); got != tt.want {
				t.Errorf("Equal = %v, want %v", got, tt.want)
			}
		})
	}
}
