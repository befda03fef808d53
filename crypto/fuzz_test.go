package crypto

import (
	"bytes"
	stdcrypto "crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

// fuzzTokens returns the tokens rfc8037Key signs for FuzzVerify: with the RFC 8037 A.4 token,
// made with the same key, they are the only inputs that may verify.
func fuzzTokens(tb testing.TB, k *PrivateKey) [][]byte {
	tb.Helper()
	var out [][]byte
	for _, h := range []Header{{Type: "vc+jwt"}, {Type: "\u00e9\U0001F600", KID: `a"b`}} {
		for _, p := range []string{`{"a":1}`, "", `{"vc":{"type":["VerifiableCredential"]}}`} {
			tok, err := Sign(k, []byte(p), h)
			if err != nil {
				tb.Fatalf("Sign: %v", err)
			}
			out = append(out, tok)
		}
	}
	return out
}

const rfc8037Token = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"

// FuzzVerify checks that Verify never panics, accepts exactly the tokens the key signed, agrees
// with ParseUnverified, that re-signing what it parsed verifies to the same content, and that
// any single-byte change to an accepted token is refused.
func FuzzVerify(f *testing.F) {
	k := rfc8037Key(f)
	signed := map[string]bool{rfc8037Token: true}
	for _, tok := range fuzzTokens(f, k) {
		signed[string(tok)] = true
		f.Add(tok)
	}
	f.Add([]byte(rfc8037Token))
	f.Add([]byte(enc(`{"alg":"none"}`) + "." + enc(`{"a":1}`) + "."))

	f.Fuzz(func(t *testing.T, data []byte) {
		payload, h, err := Verify(data, k.Public())
		uPayload, uh, uerr := ParseUnverified(data)
		if _, herr := ParseHeader(data); uerr == nil && herr != nil {
			t.Fatalf("ParseHeader: %v, but ParseUnverified succeeded", herr)
		}
		if err != nil {
			if payload != nil {
				t.Fatalf("Verify returned a payload with error %v", err)
			}
		} else {
			if !signed[string(data)] {
				t.Fatalf("Verify accepted a token the key never signed: %q", data)
			}
			if uerr != nil || !bytes.Equal(uPayload, payload) || uh != h {
				t.Fatalf("ParseUnverified = %q, %+v, %v; Verify = %q, %+v", uPayload, uh, uerr, payload, h)
			}
			for i := range data {
				for _, c := range []byte{'A', '.', 0} {
					if data[i] == c {
						continue
					}
					tampered := bytes.Clone(data)
					tampered[i] = c
					if _, _, err := Verify(tampered, k.Public()); err == nil {
						t.Fatalf("Verify accepted %q changed at byte %d", data, i)
					}
				}
			}
		}
		if uerr != nil || uh.Alg != k.Algorithm() {
			return
		}
		// Round trip: what ParseUnverified read, signed again, verifies to the same content.
		tok, err := Sign(k, uPayload, Header{Type: uh.Type, KID: uh.KID})
		if err != nil {
			return // too large once re-encoded with a kid
		}
		p2, h2, err := Verify(tok, k.Public())
		if err != nil {
			t.Fatalf("Verify(Sign(ParseUnverified)): %v", err)
		}
		wantKID := uh.KID
		if wantKID == "" {
			wantKID = k.KID()
		}
		if !bytes.Equal(p2, uPayload) || h2.Type != uh.Type || h2.KID != wantKID {
			t.Fatalf("round trip = %q, %+v; want %q, %+v", p2, h2, uPayload, uh)
		}
	})
}

// FuzzParsePublicKey checks that ParsePublicKey never panics, that parse → marshal → parse is
// stable, and that the kid it computes is the thumbprint jwx computes.
func FuzzParsePublicKey(f *testing.F) {
	for _, kt := range []struct {
		kt  KeyType
		use Use
	}{{Ed25519, UseSign}, {P256, UseSign}, {P256, UseEnc}} {
		k := generate(f, kt.kt, kt.use)
		b, err := k.Public().MarshalJSON()
		if err != nil {
			f.Fatalf("MarshalJSON: %v", err)
		}
		f.Add(b)
		priv, err := k.MarshalJSON()
		if err != nil {
			f.Fatalf("MarshalJSON: %v", err)
		}
		f.Add(priv)
	}
	f.Add([]byte(`{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","use":"sig","alg":"EdDSA"}`))

	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePublicKey(data)
		if err != nil {
			if p != nil {
				t.Fatalf("ParsePublicKey returned a key with error %v", err)
			}
			return
		}
		b, err := p.MarshalJSON()
		if err != nil {
			t.Fatalf("MarshalJSON: %v", err)
		}
		p2, err := ParsePublicKey(b)
		if err != nil {
			t.Fatalf("ParsePublicKey(MarshalJSON(%q) = %s): %v", data, b, err)
		}
		if !p2.Equal(p) {
			t.Fatalf("ParsePublicKey(MarshalJSON) is not Equal for %q", data)
		}
		b2, err := p2.MarshalJSON()
		if err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("MarshalJSON not stable: %s, then %s (%v)", b, b2, err)
		}
		j, err := jwk.ParseKey(b)
		if err != nil {
			t.Fatalf("jwk.ParseKey(%s): %v", b, err)
		}
		tp, err := j.Thumbprint(stdcrypto.SHA256)
		if err != nil {
			t.Fatalf("Thumbprint: %v", err)
		}
		if got := base64.RawURLEncoding.EncodeToString(tp); got != p.KID() {
			t.Fatalf("jwx thumbprint %s, KID %s", got, p.KID())
		}
	})
}

// membersReference is a slow but obviously correct version of members built on encoding/json's
// token API, for FuzzMembers to compare against.
func membersReference(b []byte) ([]string, [][]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, nil, errors.New("not an object")
	}
	var names []string
	var values [][]byte
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		name := tok.(string)
		if slices.Contains(names, name) {
			return nil, nil, errors.New("duplicate")
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, err
		}
		names = append(names, name)
		values = append(values, v)
	}
	if _, err := dec.Token(); err != nil {
		return nil, nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, errors.New("trailing data")
	}
	if len(names) > maxMembers {
		return nil, nil, errors.New("too many members")
	}
	return names, values, nil
}

// FuzzMembers checks that the JSON object scanner under every JOSE header and JWK parse agrees
// with encoding/json on which inputs are objects without duplicate members, and on their names
// and values.
func FuzzMembers(f *testing.F) {
	for _, s := range []string{
		`{"alg":"EdDSA","kid":"a","typ":"vc+jwt"}`,
		` { "a" : [1, {"b": "}"}], "c":null , "d":"\"}" } `,
		`{"k\u0074y":"OKP","kty":"EC"}`,
		`{"a":1}{}`,
		`{"a":"\ud83d\ude00","b":-1.5e3,"c":true,"d":{}}`,
		`[]`,
		`{"a":"\xff"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var names []string
		var values [][]byte
		err := members(data, func(name string, v []byte) error {
			names = append(names, name)
			values = append(values, v)
			return nil
		})
		refNames, refValues, refErr := membersReference(data)
		if (err == nil) != (refErr == nil) {
			t.Fatalf("members(%q) err = %v, reference err = %v", data, err, refErr)
		}
		if err != nil {
			return
		}
		if !slices.Equal(names, refNames) {
			t.Fatalf("members(%q) names = %q, reference %q", data, names, refNames)
		}
		for i := range values {
			if !bytes.Equal(values[i], refValues[i]) {
				t.Fatalf("members(%q) value %d = %q, reference %q", data, i, values[i], refValues[i])
			}
		}
	})
}
