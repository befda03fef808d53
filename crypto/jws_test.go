package crypto

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

func TestSignVerifyRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		kt      KeyType
		header  Header
		payload []byte
		wantKID string // empty: the key's thumbprint
	}{
		{name: "EdDSA", kt: Ed25519, header: Header{Type: "vc+jwt"}, payload: []byte(`{"vc":{}}`)},
		{name: "ES256", kt: P256, header: Header{Type: "did-event+jwt"}, payload: []byte(`{"event":1}`)},
		{name: "EdDSA DID URL kid", kt: Ed25519, header: Header{Type: "vc+jwt", KID: "did:web:example.nl#key-1"}, payload: []byte("x"), wantKID: "did:web:example.nl#key-1"},
		{name: "EdDSA empty payload", kt: Ed25519, payload: nil},
		{name: "ES256 binary payload", kt: P256, payload: []byte{0, 1, 2, 0xff, '.'}},
		{name: "alg input ignored", kt: Ed25519, header: Header{Alg: "none"}, payload: []byte("p")},
		{name: "typ needing JSON escapes", kt: Ed25519, header: Header{Type: "a\"<b>\u00e9"}, payload: []byte("p")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := generate(t, tt.kt, UseSign)
			tok, err := Sign(k, tt.payload, tt.header)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			payload, h, err := Verify(tok, k.Public())
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !bytes.Equal(payload, tt.payload) {
				t.Errorf("Verify payload = %q, want %q", payload, tt.payload)
			}
			wantKID := tt.wantKID
			if wantKID == "" {
				wantKID = k.KID()
			}
			want := Header{Type: tt.header.Type, KID: wantKID, Alg: k.Algorithm()}
			if h != want {
				t.Errorf("Verify header = %+v, want %+v", h, want)
			}
			ph, err := ParseHeader(tok)
			if err != nil || ph != want {
				t.Errorf("ParseHeader = %+v, %v; want %+v", ph, err, want)
			}
			up, uh, err := ParseUnverified(tok)
			if err != nil || uh != want || !bytes.Equal(up, tt.payload) {
				t.Errorf("ParseUnverified = %q, %+v, %v; want %q, %+v", up, uh, err, tt.payload, want)
			}
		})
	}
}

// TestSignInteropJWX checks that jwx verifies what Sign makes, with the key as jwx reads it from
// our public JWK.
func TestSignInteropJWX(t *testing.T) {
	tests := []struct {
		name string
		kt   KeyType
		alg  jwa.SignatureAlgorithm
	}{
		{name: "EdDSA", kt: Ed25519, alg: jwa.EdDSA},
		{name: "ES256", kt: P256, alg: jwa.ES256},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := generate(t, tt.kt, UseSign)
			pubJSON, err := k.Public().MarshalJSON()
			if err != nil {
				t.Fatalf("MarshalJSON: %v", err)
			}
			jpub, err := jwk.ParseKey(pubJSON)
			if err != nil {
				t.Fatalf("jwk.ParseKey: %v", err)
			}
			payload := []byte(`{"iss":"did:web:a.example"}`)
			for i := 0; i < 20; i++ { // ES256 signatures vary; r or s with leading zeros must still work
				tok, err := Sign(k, payload, Header{Type: "vc+jwt"})
				if err != nil {
					t.Fatalf("Sign: %v", err)
				}
				got, err := jws.Verify(tok, jws.WithKey(tt.alg, jpub))
				if err != nil {
					t.Fatalf("jws.Verify(%s): %v", tok, err)
				}
				if !bytes.Equal(got, payload) {
					t.Fatalf("jws.Verify payload = %q, want %q", got, payload)
				}
			}
			msg, err := jws.Parse(mustSign(t, k, payload))
			if err != nil {
				t.Fatalf("jws.Parse: %v", err)
			}
			ph := msg.Signatures()[0].ProtectedHeaders()
			if ph.Type() != "vc+jwt" || ph.KeyID() != k.KID() || ph.Algorithm() != tt.alg {
				t.Errorf("jws.Parse header = typ %q kid %q alg %q", ph.Type(), ph.KeyID(), ph.Algorithm())
			}
		})
	}
}

func mustSign(t *testing.T, k *PrivateKey, payload []byte) []byte {
	t.Helper()
	tok, err := Sign(k, payload, Header{Type: "vc+jwt"})
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return tok
}

// TestVerifyInteropJWX checks that Verify accepts what jwx signs, with our public key.
func TestVerifyInteropJWX(t *testing.T) {
	tests := []struct {
		name string
		kt   KeyType
		alg  jwa.SignatureAlgorithm
	}{
		{name: "EdDSA", kt: Ed25519, alg: jwa.EdDSA},
		{name: "ES256", kt: P256, alg: jwa.ES256},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := generate(t, tt.kt, UseSign)
			privJSON, err := k.MarshalJSON()
			if err != nil {
				t.Fatalf("MarshalJSON: %v", err)
			}
			jpriv, err := jwk.ParseKey(privJSON)
			if err != nil {
				t.Fatalf("jwk.ParseKey: %v", err)
			}
			hdrs := jws.NewHeaders()
			if err := hdrs.Set(jws.TypeKey, "vc+jwt"); err != nil {
				t.Fatalf("Set: %v", err)
			}
			payload := []byte(`{"sub":"did:web:b.example"}`)
			for i := 0; i < 20; i++ {
				tok, err := jws.Sign(payload, jws.WithKey(tt.alg, jpriv, jws.WithProtectedHeaders(hdrs)))
				if err != nil {
					t.Fatalf("jws.Sign: %v", err)
				}
				got, h, err := Verify(tok, k.Public())
				if err != nil {
					t.Fatalf("Verify(%s): %v", tok, err)
				}
				if !bytes.Equal(got, payload) || h.Type != "vc+jwt" || h.KID != k.KID() || h.Alg != string(tt.alg) {
					t.Fatalf("Verify = %q, %+v", got, h)
				}
			}
		})
	}
}

// TestJWSVectors checks fixed tokens, among them RFC 8037 A.4 and RFC 7515 A.3, and that Sign
// still produces the committed EdDSA tokens byte for byte.
func TestJWSVectors(t *testing.T) {
	for _, v := range loadVectors(t).JWS {
		t.Run(v.Name, func(t *testing.T) {
			k, err := ParsePrivateKey(v.Private)
			if err != nil {
				t.Fatalf("ParsePrivateKey: %v", err)
			}
			payload, h, err := Verify([]byte(v.Token), k.Public())
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if string(payload) != v.Payload || h != v.Header {
				t.Errorf("Verify = %q, %+v; want %q, %+v", payload, h, v.Payload, v.Header)
			}
			if _, err := jws.Verify([]byte(v.Token), jws.WithKey(jwa.SignatureAlgorithm(k.Algorithm()), k.Public().JWK())); err != nil {
				t.Errorf("jws.Verify: %v", err)
			}
			if v.Reproducible {
				tok, err := Sign(k, []byte(v.Payload), Header{Type: v.Header.Type, KID: v.Header.KID})
				if err != nil {
					t.Fatalf("Sign: %v", err)
				}
				if string(tok) != v.Token {
					t.Errorf("Sign = %s, want %s", tok, v.Token)
				}
			}
		})
	}
}

// flip returns a copy of tok with the character at i replaced by a different base64url one.
func flip(tok []byte, i int) []byte {
	c := bytes.Clone(tok)
	if c[i] == 'A' {
		c[i] = 'B'
	} else {
		c[i] = 'A'
	}
	return c
}

func TestVerifyRefuses(t *testing.T) {
	ed := generate(t, Ed25519, UseSign)
	ec := generate(t, P256, UseSign)
	edOther := generate(t, Ed25519, UseSign)
	encKey := generate(t, P256, UseEnc)
	tok := mustSign(t, ed, []byte(`{"a":1}`))
	dot1 := bytes.IndexByte(tok, '.')
	dot2 := bytes.LastIndexByte(tok, '.')
	otherTok, err := Sign(ed, []byte(`{"a":1}`), Header{Type: "other+jwt"})
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	otherDot1 := bytes.IndexByte(otherTok, '.')

	const payload = `{"a":1}`
	tests := []struct {
		name    string
		tok     []byte
		key     *PublicKey
		wantErr error
	}{
		{name: "tampered payload", tok: flip(tok, dot1+2), key: ed.Public(), wantErr: ErrSignature},
		{name: "tampered signature", tok: flip(tok, dot2+5), key: ed.Public(), wantErr: ErrSignature},
		{name: "tampered header", tok: append([]byte(enc(`{"alg":"EdDSA","typ":"x"}`)), tok[dot1:]...), key: ed.Public(), wantErr: ErrSignature},
		{name: "header of another token", tok: append(bytes.Clone(otherTok[:otherDot1]), tok[dot1:]...), key: ed.Public(), wantErr: ErrSignature},
		{name: "other key", tok: tok, key: edOther.Public(), wantErr: ErrSignature},
		{name: "signature truncated", tok: tok[:len(tok)-2], key: ed.Public(), wantErr: ErrSignature},
		{name: "signature extended", tok: append(bytes.Clone(tok), 'A', 'A'), key: ed.Public(), wantErr: ErrSignature},
		{name: "signature empty", tok: tok[:dot2+1], key: ed.Public(), wantErr: ErrSignature},
		{name: "signature non-canonical trailing bits", tok: append(bytes.Clone(tok[:len(tok)-1]), nonCanonical(tok[len(tok)-1])...), key: ed.Public(), wantErr: ErrMalformed},

		{name: "alg none", tok: []byte(enc(`{"alg":"none"}`) + "." + enc(payload) + "."), key: ed.Public(), wantErr: ErrAlgorithm},
		{name: "alg None", tok: []byte(enc(`{"alg":"None"}`) + "." + enc(payload) + "."), key: ed.Public(), wantErr: ErrAlgorithm},
		{name: "alg HS256", tok: []byte(enc(`{"alg":"HS256"}`) + "." + enc(payload) + "." + enc(strings.Repeat("s", 32))), key: ed.Public(), wantErr: ErrAlgorithm},
		{name: "alg RS256", tok: []byte(enc(`{"alg":"RS256"}`) + "." + enc(payload) + "." + enc(strings.Repeat("s", 256))), key: ed.Public(), wantErr: ErrAlgorithm},
		{name: "alg ES384", tok: []byte(enc(`{"alg":"ES384"}`) + "." + enc(payload) + "." + enc(strings.Repeat("s", 96))), key: ec.Public(), wantErr: ErrAlgorithm},
		{name: "alg Ed25519", tok: []byte(enc(`{"alg":"Ed25519"}`) + "." + enc(payload) + "." + enc(strings.Repeat("s", 64))), key: ed.Public(), wantErr: ErrAlgorithm},
		{name: "alg unknown", tok: []byte(enc(`{"alg":"XYZ"}`) + "." + enc(payload) + "." + enc(strings.Repeat("s", 64))), key: ed.Public(), wantErr: ErrAlgorithm},
		{name: "ES256 header with Ed25519 key", tok: signRaw(t, ec, `{"alg":"ES256"}`, payload), key: ed.Public(), wantErr: ErrAlgorithm},
		{name: "EdDSA header with P-256 key", tok: tok, key: ec.Public(), wantErr: ErrAlgorithm},

		{name: "crit", tok: signRaw(t, ed, `{"alg":"EdDSA","crit":["exp"],"exp":1}`, payload), key: ed.Public(), wantErr: ErrMalformed},
		{name: "jku", tok: signRaw(t, ed, `{"alg":"EdDSA","jku":"https://evil.example/jwks"}`, payload), key: ed.Public(), wantErr: ErrMalformed},
		{name: "jwk", tok: signRaw(t, ed, `{"alg":"EdDSA","jwk":{"kty":"OKP"}}`, payload), key: ed.Public(), wantErr: ErrMalformed},
		{name: "x5u", tok: signRaw(t, ed, `{"alg":"EdDSA","x5u":"https://evil.example/cert"}`, payload), key: ed.Public(), wantErr: ErrMalformed},
		{name: "x5c", tok: signRaw(t, ed, `{"alg":"EdDSA","x5c":["MIIB"]}`, payload), key: ed.Public(), wantErr: ErrMalformed},
		{name: "b64 false", tok: signRaw(t, ed, `{"alg":"EdDSA","b64":false}`, payload), key: ed.Public(), wantErr: ErrMalformed},
		{name: "duplicate alg", tok: signRaw(t, ed, `{"alg":"none","alg":"EdDSA"}`, payload), key: ed.Public(), wantErr: ErrMalformed},
		{name: "no alg", tok: signRaw(t, ed, `{"typ":"vc+jwt"}`, payload), key: ed.Public(), wantErr: ErrMalformed},
		{name: "alg not a string", tok: signRaw(t, ed, `{"alg":["EdDSA"]}`, payload), key: ed.Public(), wantErr: ErrMalformed},
		{name: "kid not a string", tok: signRaw(t, ed, `{"alg":"EdDSA","kid":1}`, payload), key: ed.Public(), wantErr: ErrMalformed},
		{name: "header not an object", tok: signRaw(t, ed, `["alg","EdDSA"]`, payload), key: ed.Public(), wantErr: ErrMalformed},
		{name: "header trailing data", tok: signRaw(t, ed, `{"alg":"EdDSA"}{}`, payload), key: ed.Public(), wantErr: ErrMalformed},
		{name: "header not JSON", tok: signRaw(t, ed, `alg=EdDSA`, payload), key: ed.Public(), wantErr: ErrMalformed},

		{name: "oversize", tok: append(bytes.Clone(tok), bytes.Repeat([]byte("A"), MaxJWSSize)...), key: ed.Public(), wantErr: ErrTooLarge},
		{name: "empty", tok: nil, key: ed.Public(), wantErr: ErrMalformed},
		{name: "garbage", tok: []byte("not a token"), key: ed.Public(), wantErr: ErrMalformed},
		{name: "two segments", tok: tok[:dot2], key: ed.Public(), wantErr: ErrMalformed},
		{name: "four segments", tok: append(bytes.Clone(tok), '.'), key: ed.Public(), wantErr: ErrMalformed},
		{name: "JWE shape", tok: []byte("a.b.c.d.e"), key: ed.Public(), wantErr: ErrMalformed},
		{name: "newline in signature", tok: append(append(bytes.Clone(tok[:dot2+10]), '\n'), tok[dot2+10:]...), key: ed.Public(), wantErr: ErrMalformed},
		{name: "padding", tok: append(bytes.Clone(tok), '='), key: ed.Public(), wantErr: ErrMalformed},
		{name: "JSON serialization", tok: []byte(`{"payload":"e30","signatures":[]}`), key: ed.Public(), wantErr: ErrMalformed},
		{name: "payload not base64url", tok: signRawSegments(t, ed, enc(`{"alg":"EdDSA"}`), "A"), key: ed.Public(), wantErr: ErrMalformed},

		{name: "nil key", tok: tok, key: nil, wantErr: ErrKey},
		{name: "encryption key", tok: tok, key: encKey.Public(), wantErr: ErrKey},
		{name: "zero key", tok: tok, key: &PublicKey{}, wantErr: ErrKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload, _, err := Verify(tt.tok, tt.key)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify: err = %v, want %v", err, tt.wantErr)
			}
			if payload != nil {
				t.Errorf("Verify returned payload %q with error", payload)
			}
		})
	}
}

// signRawSegments signs header '.' payload given as already-encoded segments, so a test can sign
// a payload segment that is not valid base64url.
func signRawSegments(t *testing.T, k *PrivateKey, header, payload string) []byte {
	t.Helper()
	input := header + "." + payload
	sig := base64.RawURLEncoding.EncodeToString(ed25519Sign(k, []byte(input)))
	return []byte(input + "." + sig)
}

func TestParseHeaderRefuses(t *testing.T) {
	ed := generate(t, Ed25519, UseSign)
	tests := []struct {
		name    string
		tok     []byte
		wantErr error
	}{
		{name: "alg none", tok: []byte(enc(`{"alg":"none"}`) + ".e30."), wantErr: ErrAlgorithm},
		{name: "alg HS256", tok: []byte(enc(`{"alg":"HS256","kid":"k"}`) + ".e30.c2ln"), wantErr: ErrAlgorithm},
		{name: "jwk header", tok: signRaw(t, ed, `{"alg":"EdDSA","jwk":{}}`, "{}"), wantErr: ErrMalformed},
		{name: "garbage", tok: []byte("garbage"), wantErr: ErrMalformed},
		{name: "oversize", tok: bytes.Repeat([]byte("A"), MaxJWSSize+1), wantErr: ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseHeader(tt.tok); !errors.Is(err, tt.wantErr) {
				t.Errorf("ParseHeader: err = %v, want %v", err, tt.wantErr)
			}
			if _, _, err := ParseUnverified(tt.tok); !errors.Is(err, tt.wantErr) {
				t.Errorf("ParseUnverified: err = %v, want %v", err, tt.wantErr)
			}
		})
	}
	// ParseUnverified also decodes the payload; ParseHeader does not need to.
	bad := []byte(enc(`{"alg":"EdDSA"}`) + ".A.sig")
	if _, err := ParseHeader(bad); err != nil {
		t.Errorf("ParseHeader(bad payload): %v", err)
	}
	if _, _, err := ParseUnverified(bad); !errors.Is(err, ErrMalformed) {
		t.Errorf("ParseUnverified(bad payload): err = %v, want ErrMalformed", err)
	}
}

func TestSignRefuses(t *testing.T) {
	tests := []struct {
		name    string
		key     *PrivateKey
		payload []byte
		wantErr error
	}{
		{name: "nil key", key: nil, payload: []byte("p"), wantErr: ErrKey},
		{name: "encryption key", key: generate(t, P256, UseEnc), payload: []byte("p"), wantErr: ErrKey},
		{name: "too large", key: generate(t, Ed25519, UseSign), payload: make([]byte, MaxJWSSize), wantErr: ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Sign(tt.key, tt.payload, Header{}); !errors.Is(err, tt.wantErr) {
				t.Errorf("Sign: err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// TestSignLargestPayload checks that Sign's size limit and Verify's agree at the boundary.
func TestSignLargestPayload(t *testing.T) {
	k := generate(t, Ed25519, UseSign)
	n := 0
	for size := MaxJWSSize; size > 0; size-- {
		if _, err := Sign(k, make([]byte, size), Header{}); err == nil {
			n = size
			break
		}
	}
	tok, err := Sign(k, make([]byte, n), Header{})
	if err != nil {
		t.Fatalf("Sign(%d bytes): %v", n, err)
	}
	if _, _, err := Verify(tok, k.Public()); err != nil {
		t.Fatalf("Verify(%d-byte token): %v", len(tok), err)
	}
	if len(tok) > MaxJWSSize || len(tok) < MaxJWSSize-4 {
		t.Errorf("largest token is %d bytes, want just under %d", len(tok), MaxJWSSize)
	}
}

func TestSHA256(t *testing.T) {
	tests := []struct {
		name  string
		parts [][]byte
		want  string
	}{
		{name: "empty", parts: nil, want: "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"},
		{name: "one", parts: [][]byte{[]byte("abc")}, want: "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"},
		{name: "concatenation", parts: [][]byte{[]byte("a"), nil, []byte("bc")}, want: "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sum := SHA256(tt.parts...)
			if got := base64.RawURLEncoding.EncodeToString(sum[:]); got != tt.want {
				t.Errorf("SHA256 = %s, want %s", got, tt.want)
			}
		})
	}
}
