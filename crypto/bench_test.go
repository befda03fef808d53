package crypto

import (
	"bytes"
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// benchCredential is a payload the size and shape of a typical organisation credential.
var benchCredential = []byte(`{"@context":["https://www.w3.org/ns/credentials/v2"],` +
	`"type":["VerifiableCredential","OrganisationCredential"],` +
	`"issuer":"did:schakel:3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",` +
	`"validFrom":"2026-01-01T00:00:00Z","iat":1767225600,` +
	`"credentialSubject":{"id":"did:schakel:9Ajdvzr3ab5ZjbYbCQsNzREJ4mB9CPSmZ1","ura":"90000123",` +
	`"name":"Huisartsenpraktijk Jansen","type":"huisartsenpraktijk","city":"Utrecht"},` +
	`"credentialStatus":{"type":"BitstringStatusListEntry","statusPurpose":"revocation",` +
	`"statusListIndex":"94567","statusListCredential":"did:schakel:3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy/status/1"}}`)

func benchKeys(b *testing.B) []struct {
	name string
	key  *PrivateKey
	alg  jwa.SignatureAlgorithm
} {
	return []struct {
		name string
		key  *PrivateKey
		alg  jwa.SignatureAlgorithm
	}{
		{name: "EdDSA", key: generate(b, Ed25519, UseSign), alg: jwa.EdDSA},
		{name: "ES256", key: generate(b, P256, UseSign), alg: jwa.ES256},
	}
}

func BenchmarkSign(b *testing.B) {
	for _, bk := range benchKeys(b) {
		b.Run(bk.name, func(b *testing.B) {
			h := Header{Type: "vc+jwt", KID: "did:schakel:3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy#" + bk.key.KID()}
			for b.Loop() {
				if _, err := Sign(bk.key, benchCredential, h); err != nil {
					b.Fatalf("Sign: %v", err)
				}
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	for _, bk := range benchKeys(b) {
		b.Run(bk.name, func(b *testing.B) {
			tok, err := Sign(bk.key, benchCredential, Header{Type: "vc+jwt", KID: "did:schakel:3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy#" + bk.key.KID()})
			if err != nil {
				b.Fatalf("Sign: %v", err)
			}
			pub := bk.key.Public()
			b.SetBytes(int64(len(tok)))
			for b.Loop() {
				if _, _, err := Verify(tok, pub); err != nil {
					b.Fatalf("Verify: %v", err)
				}
			}
		})
	}
}

// BenchmarkRawEd25519Verify is the floor for BenchmarkVerify/EdDSA: crypto/ed25519 alone, over
// the same signing input and signature, with no parsing at all.
func BenchmarkRawEd25519Verify(b *testing.B) {
	k := generate(b, Ed25519, UseSign)
	tok, err := Sign(k, benchCredential, Header{Type: "vc+jwt", KID: "did:schakel:3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy#" + k.KID()})
	if err != nil {
		b.Fatalf("Sign: %v", err)
	}
	dot := bytes.LastIndexByte(tok, '.')
	input := tok[:dot]
	sig, err := b64.DecodeString(string(tok[dot+1:]))
	if err != nil {
		b.Fatalf("DecodeString: %v", err)
	}
	pub := ed25519.PublicKey(k.Public().raw)
	b.SetBytes(int64(len(tok)))
	for b.Loop() {
		if !ed25519.Verify(pub, input, sig) {
			b.Fatal("ed25519.Verify: false")
		}
	}
}

// BenchmarkJWXVerify is jws.Verify on the same tokens, for comparison with BenchmarkVerify.
func BenchmarkJWXVerify(b *testing.B) {
	for _, bk := range benchKeys(b) {
		b.Run(bk.name, func(b *testing.B) {
			tok, err := Sign(bk.key, benchCredential, Header{Type: "vc+jwt"})
			if err != nil {
				b.Fatalf("Sign: %v", err)
			}
			jpub := bk.key.Public().JWK()
			b.SetBytes(int64(len(tok)))
			for b.Loop() {
				if _, err := jws.Verify(tok, jws.WithKey(bk.alg, jpub)); err != nil {
					b.Fatalf("jws.Verify: %v", err)
				}
			}
		})
	}
}

// BenchmarkParseHeader is the cost of the unverified header read done before key lookup.
func BenchmarkParseHeader(b *testing.B) {
	k := generate(b, Ed25519, UseSign)
	tok, err := Sign(k, benchCredential, Header{Type: "vc+jwt"})
	if err != nil {
		b.Fatalf("Sign: %v", err)
	}
	for b.Loop() {
		if _, err := ParseHeader(tok); err != nil {
			b.Fatalf("ParseHeader: %v", err)
		}
	}
}

func BenchmarkEncrypt(b *testing.B) {
	k := generate(b, P256, UseEnc)
	plaintext := []byte(strings.Repeat("x", 1024))
	b.SetBytes(int64(len(plaintext)))
	for b.Loop() {
		if _, err := Encrypt(plaintext, k.Public()); err != nil {
			b.Fatalf("Encrypt: %v", err)
		}
	}
}

func BenchmarkDecrypt(b *testing.B) {
	k := generate(b, P256, UseEnc)
	plaintext := []byte(strings.Repeat("x", 1024))
	tok, err := Encrypt(plaintext, k.Public())
	if err != nil {
		b.Fatalf("Encrypt: %v", err)
	}
	b.SetBytes(int64(len(plaintext)))
	for b.Loop() {
		if _, err := Decrypt(tok, k); err != nil {
			b.Fatalf("Decrypt: %v", err)
		}
	}
}

func BenchmarkPseudonym(b *testing.B) {
	s, err := GenerateSecret()
	if err != nil {
		b.Fatalf("GenerateSecret: %v", err)
	}
	p, err := NewPseudonymizer(map[uint32][]byte{1: s}, 1)
	if err != nil {
		b.Fatalf("NewPseudonymizer: %v", err)
	}
	for b.Loop() {
		if _, err := p.Pseudonym("111222333"); err != nil {
			b.Fatalf("Pseudonym: %v", err)
		}
	}
}
