package crypto

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwe"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

func TestEncryptDecryptRoundTrip(t *testing.T) {
	k := generate(t, P256, UseEnc)
	tests := []struct {
		name      string
		plaintext []byte
	}{
		{name: "JSON", plaintext: []byte(`{"bsn":"pseudonym"}`)},
		{name: "one byte", plaintext: []byte{0}},
		{name: "binary", plaintext: []byte{0, 0xff, '.', '\n'}},
		{name: "large", plaintext: bytes.Repeat([]byte("x"), 100<<10)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := Encrypt(tt.plaintext, k.Public())
			if err != nil {
				t.Fatalf("Encrypt: %v", err)
			}
			got, err := Decrypt(tok, k)
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			if !bytes.Equal(got, tt.plaintext) {
				t.Errorf("Decrypt = %q, want %q", got, tt.plaintext)
			}
			hdr := jweHeader(t, tok)
			if hdr["alg"] != "ECDH-ES+A256KW" || hdr["enc"] != "A256GCM" || hdr["kid"] != k.KID() || hdr["zip"] != nil {
				t.Errorf("Encrypt header = %v", hdr)
			}
			again, err := Encrypt(tt.plaintext, k.Public())
			if err != nil {
				t.Fatalf("Encrypt: %v", err)
			}
			if bytes.Equal(again, tok) {
				t.Errorf("Encrypt returned the same JWE twice")
			}
		})
	}
}

// jweHeader decodes the protected header of a compact JWE.
func jweHeader(t *testing.T, tok []byte) map[string]any {
	t.Helper()
	seg, _, _ := bytes.Cut(tok, []byte("."))
	raw, err := base64.RawURLEncoding.DecodeString(string(seg))
	if err != nil {
		t.Fatalf("DecodeString: %v", err)
	}
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	return h
}

// TestJWEInteropJWX checks both directions against jwx, with keys jwx reads from our JWKs.
func TestJWEInteropJWX(t *testing.T) {
	k := generate(t, P256, UseEnc)
	privJSON, err := k.MarshalJSON()
	if err != nil {
		t.Fatalf("MarshalJSON: %v", err)
	}
	jpriv, err := jwk.ParseKey(privJSON)
	if err != nil {
		t.Fatalf("jwk.ParseKey: %v", err)
	}
	plaintext := []byte(`{"consent":"granted"}`)

	t.Run("Encrypt then jwe.Decrypt", func(t *testing.T) {
		tok, err := Encrypt(plaintext, k.Public())
		if err != nil {
			t.Fatalf("Encrypt: %v", err)
		}
		got, err := jwe.Decrypt(tok, jwe.WithKey(jwa.ECDH_ES_A256KW, jpriv))
		if err != nil {
			t.Fatalf("jwe.Decrypt: %v", err)
		}
		if !bytes.Equal(got, plaintext) {
			t.Errorf("jwe.Decrypt = %q, want %q", got, plaintext)
		}
	})
	t.Run("jwe.Encrypt then Decrypt", func(t *testing.T) {
		tok, err := jwe.Encrypt(plaintext, jwe.WithKey(jwa.ECDH_ES_A256KW, k.Public().JWK()), jwe.WithContentEncryption(jwa.A256GCM))
		if err != nil {
			t.Fatalf("jwe.Encrypt: %v", err)
		}
		got, err := Decrypt(tok, k)
		if err != nil {
			t.Fatalf("Decrypt: %v", err)
		}
		if !bytes.Equal(got, plaintext) {
			t.Errorf("Decrypt = %q, want %q", got, plaintext)
		}
	})
}

// TestJWEVectors checks that committed JWEs still decrypt.
func TestJWEVectors(t *testing.T) {
	vs := loadVectors(t).JWE
	if len(vs) == 0 {
		t.Fatal("no JWE vectors")
	}
	for _, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			k, err := ParsePrivateKey(v.Private)
			if err != nil {
				t.Fatalf("ParsePrivateKey: %v", err)
			}
			got, err := Decrypt([]byte(v.Token), k)
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			if string(got) != v.Plaintext {
				t.Errorf("Decrypt = %q, want %q", got, v.Plaintext)
			}
		})
	}
}

// withHeader returns tok with its protected header replaced by header.
func withHeader(tok []byte, header string) []byte {
	_, rest, _ := bytes.Cut(tok, []byte("."))
	return []byte(enc(header) + "." + string(rest))
}

func TestDecryptRefuses(t *testing.T) {
	k := generate(t, P256, UseEnc)
	other := generate(t, P256, UseEnc)
	plaintext := []byte("secret")
	tok, err := Encrypt(plaintext, k.Public())
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	segs := bytes.Split(tok, []byte("."))
	// start returns the offset of segment i in tok.
	start := func(i int) int {
		n := 0
		for _, s := range segs[:i] {
			n += len(s) + 1
		}
		return n
	}
	hdr := jweHeader(t, tok)
	epk, err := json.Marshal(hdr["epk"])
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	header := func(extra string) string {
		return fmt.Sprintf(`{"alg":"ECDH-ES+A256KW","enc":"A256GCM","epk":%s%s}`, epk, extra)
	}
	jwxEncrypt := func(alg jwa.KeyEncryptionAlgorithm, key any, opts ...jwe.EncryptOption) []byte {
		t.Helper()
		out, err := jwe.Encrypt(plaintext, append([]jwe.EncryptOption{jwe.WithKey(alg, key)}, opts...)...)
		if err != nil {
			t.Fatalf("jwe.Encrypt(%s): %v", alg, err)
		}
		return out
	}
	jku := jwe.NewHeaders()
	if err := jku.Set(jwe.JWKSetURLKey, "https://evil.example/jwks"); err != nil {
		t.Fatalf("Set: %v", err)
	}
	sym := bytes.Repeat([]byte{7}, 32)
	ecX, ecY := epkCoords(t, hdr)

	tests := []struct {
		name    string
		tok     []byte
		key     *PrivateKey
		wantErr error
	}{
		{name: "wrong recipient", tok: tok, key: other, wantErr: ErrDecrypt},
		{name: "tampered ciphertext", tok: flip(tok, start(3)+2), key: k, wantErr: ErrDecrypt},
		{name: "tampered tag", tok: flip(tok, start(4)+3), key: k, wantErr: ErrDecrypt},
		{name: "tampered iv", tok: flip(tok, start(2)+3), key: k, wantErr: ErrDecrypt},
		{name: "tampered encrypted key", tok: flip(tok, start(1)+3), key: k, wantErr: ErrDecrypt},
		{name: "tampered header", tok: withHeader(tok, header(`,"kid":"x"`)), key: k, wantErr: ErrDecrypt},

		{name: "ECDH-ES direct", tok: jwxEncrypt(jwa.ECDH_ES, k.Public().JWK()), key: k, wantErr: ErrAlgorithm},
		{name: "ECDH-ES+A128KW", tok: jwxEncrypt(jwa.ECDH_ES_A128KW, k.Public().JWK()), key: k, wantErr: ErrAlgorithm},
		{name: "enc A128GCM", tok: jwxEncrypt(jwa.ECDH_ES_A256KW, k.Public().JWK(), jwe.WithContentEncryption(jwa.A128GCM)), key: k, wantErr: ErrAlgorithm},
		{name: "enc A256CBC-HS512", tok: jwxEncrypt(jwa.ECDH_ES_A256KW, k.Public().JWK(), jwe.WithContentEncryption(jwa.A256CBC_HS512)), key: k, wantErr: ErrAlgorithm},
		{name: "zip DEF", tok: jwxEncrypt(jwa.ECDH_ES_A256KW, k.Public().JWK(), jwe.WithCompress(jwa.Deflate)), key: k, wantErr: ErrAlgorithm},
		{name: "dir", tok: jwxEncrypt(jwa.DIRECT, sym), key: k, wantErr: ErrAlgorithm},
		{name: "A256KW", tok: jwxEncrypt(jwa.A256KW, sym), key: k, wantErr: ErrAlgorithm},
		{name: "PBES2", tok: jwxEncrypt(jwa.PBES2_HS256_A128KW, []byte("password")), key: k, wantErr: ErrAlgorithm},
		{name: "RSA-OAEP", tok: withHeader(tok, `{"alg":"RSA-OAEP","enc":"A256GCM"}`), key: k, wantErr: ErrAlgorithm},
		{name: "alg none", tok: withHeader(tok, `{"alg":"none","enc":"A256GCM"}`), key: k, wantErr: ErrAlgorithm},

		{name: "jku", tok: jwxEncrypt(jwa.ECDH_ES_A256KW, k.Public().JWK(), jwe.WithProtectedHeaders(jku)), key: k, wantErr: ErrMalformed},
		{name: "crit", tok: withHeader(tok, header(`,"crit":["x"],"x":1`)), key: k, wantErr: ErrMalformed},
		{name: "duplicate alg", tok: withHeader(tok, header(`,"alg":"ECDH-ES+A256KW"`)), key: k, wantErr: ErrMalformed},
		{name: "no epk", tok: withHeader(tok, `{"alg":"ECDH-ES+A256KW","enc":"A256GCM"}`), key: k, wantErr: ErrMalformed},
		{name: "epk off curve", tok: withHeader(tok, fmt.Sprintf(`{"alg":"ECDH-ES+A256KW","enc":"A256GCM","epk":{"kty":"EC","crv":"P-256","x":%q,"y":%q}}`, ecX, ecX)), key: k, wantErr: ErrMalformed},
		{name: "epk other curve", tok: withHeader(tok, fmt.Sprintf(`{"alg":"ECDH-ES+A256KW","enc":"A256GCM","epk":{"kty":"EC","crv":"P-384","x":%q,"y":%q}}`, ecX, ecY)), key: k, wantErr: ErrMalformed},
		{name: "epk with d", tok: withHeader(tok, fmt.Sprintf(`{"alg":"ECDH-ES+A256KW","enc":"A256GCM","epk":{"kty":"EC","crv":"P-256","x":%q,"y":%q,"d":%q}}`, ecX, ecY, ecX)), key: k, wantErr: ErrMalformed},
		{name: "short iv", tok: []byte(string(segs[0]) + "." + string(segs[1]) + ".AAAA." + string(segs[3]) + "." + string(segs[4])), key: k, wantErr: ErrMalformed},
		{name: "non-canonical tag", tok: append(bytes.Clone(tok[:len(tok)-1]), nonCanonical(tok[len(tok)-1])...), key: k, wantErr: ErrMalformed},
		{name: "four segments", tok: tok[:start(4)-1], key: k, wantErr: ErrMalformed},
		{name: "JWS", tok: mustSign(t, generate(t, Ed25519, UseSign), []byte("x")), key: k, wantErr: ErrMalformed},
		{name: "JSON serialization", tok: jwxEncrypt(jwa.ECDH_ES_A256KW, k.Public().JWK(), jwe.WithJSON()), key: k, wantErr: ErrMalformed},
		{name: "garbage", tok: []byte("garbage"), key: k, wantErr: ErrMalformed},
		{name: "oversize", tok: bytes.Repeat([]byte("A"), 4*MaxJWSSize+1), key: k, wantErr: ErrTooLarge},
		{name: "nil key", tok: tok, key: nil, wantErr: ErrKey},
		{name: "signing key", tok: tok, key: generate(t, P256, UseSign), wantErr: ErrKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decrypt(tt.tok, tt.key)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Decrypt: err = %v, want %v", err, tt.wantErr)
			}
			if got != nil {
				t.Errorf("Decrypt returned %q with error", got)
			}
		})
	}
}

func epkCoords(t *testing.T, hdr map[string]any) (x, y string) {
	t.Helper()
	epk, ok := hdr["epk"].(map[string]any)
	if !ok {
		t.Fatalf("header %v has no epk object", hdr)
	}
	x, _ = epk["x"].(string)
	y, _ = epk["y"].(string)
	return x, y
}

func TestEncryptRefuses(t *testing.T) {
	tests := []struct {
		name      string
		to        *PublicKey
		plaintext []byte
		wantErr   error
	}{
		{name: "nil key", to: nil, plaintext: []byte("x"), wantErr: ErrKey},
		{name: "P-256 signing key", to: generate(t, P256, UseSign).Public(), plaintext: []byte("x"), wantErr: ErrKey},
		{name: "Ed25519 key", to: generate(t, Ed25519, UseSign).Public(), plaintext: []byte("x"), wantErr: ErrKey},
		{name: "too large", to: generate(t, P256, UseEnc).Public(), plaintext: make([]byte, 3*MaxJWSSize), wantErr: ErrTooLarge},
		{name: "empty", to: generate(t, P256, UseEnc).Public(), plaintext: nil, wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Encrypt(tt.plaintext, tt.to); !errors.Is(err, tt.wantErr) {
				t.Errorf("Encrypt: err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}
