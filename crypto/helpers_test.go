package crypto

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// rfc8037Seed is the Ed25519 private key of RFC 8037 Appendix A.1.
const rfc8037Seed = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"

// enc is base64url without padding, for building test tokens by hand.
func enc(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func generate(t testing.TB, kt KeyType, use Use) *PrivateKey {
	t.Helper()
	k, err := GenerateKey(kt, use)
	if err != nil {
		t.Fatalf("GenerateKey(%q, %q): %v", kt, use, err)
	}
	return k
}

// rfc8037Key returns the deterministic Ed25519 signing key of RFC 8037 Appendix A.1.
func rfc8037Key(t testing.TB) *PrivateKey {
	t.Helper()
	seed, err := base64.RawURLEncoding.DecodeString(rfc8037Seed)
	if err != nil {
		t.Fatalf("DecodeString: %v", err)
	}
	k, err := newEd25519PrivateKey(ed25519.NewKeyFromSeed(seed), UseSign)
	if err != nil {
		t.Fatalf("newEd25519PrivateKey: %v", err)
	}
	return k
}

// signRaw builds a compact JWS with exactly the given header JSON, signed with k's algorithm, so
// tests can check header rules on tokens whose signatures are valid.
func signRaw(t testing.TB, k *PrivateKey, header, payload string) []byte {
	t.Helper()
	input := enc(header) + "." + enc(payload)
	var sig []byte
	switch k.Type() {
	case Ed25519:
		sig = ed25519.Sign(k.ed, []byte(input))
	case P256:
		digest := sha256.Sum256([]byte(input))
		r, s, err := ecdsa.Sign(rand.Reader, k.ec, digest[:])
		if err != nil {
			t.Fatalf("ecdsa.Sign: %v", err)
		}
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	}
	return []byte(input + "." + base64.RawURLEncoding.EncodeToString(sig))
}

func ed25519Sign(k *PrivateKey, msg []byte) []byte { return ed25519.Sign(k.ed, msg) }

// vectors is the content of testdata/vectors.json: fixed keys, tokens and ciphertexts that pin
// the wire formats.
type vectors struct {
	Thumbprints []struct {
		Name string          `json:"name"`
		JWK  json.RawMessage `json:"jwk"`
		KID  string          `json:"kid"`
	} `json:"thumbprints"`
	JWS []struct {
		Name    string          `json:"name"`
		Private json.RawMessage `json:"private"`
		Token   string          `json:"token"`
		Payload string          `json:"payload"`
		Header  Header          `json:"header"`
		// Reproducible is set for EdDSA vectors made by Sign: Sign of Payload with Header MUST
		// return Token exactly.
		Reproducible bool `json:"reproducible"`
	} `json:"jws"`
	JWE []struct {
		Name      string          `json:"name"`
		Private   json.RawMessage `json:"private"`
		Token     string          `json:"token"`
		Plaintext string          `json:"plaintext"`
	} `json:"jwe"`
}

func loadVectors(t testing.TB) *vectors {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "vectors.json"))
	if err != nil {
		t.Fatalf("ReadFile: %v", err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("Unmarshal vectors: %v", err)
	}
	return &v
}
