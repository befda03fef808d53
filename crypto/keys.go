package crypto

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

// KeyType names the curve of a key.
type KeyType string

const (
	// Ed25519 is an OKP key for EdDSA signatures (RFC 8037). It is the default signing key.
	Ed25519 KeyType = "Ed25519"
	// P256 is an EC key on NIST P-256, either for ES256 signatures or for ECDH-ES+A256KW key
	// agreement; a key is used for one of the two only.
	P256 KeyType = "P-256"
)

// Use is the JWK "use" member (RFC 7517 §4.2). Every key here has exactly one use.
type Use string

const (
	// UseSign marks a signing key.
	UseSign Use = "sig"
	// UseEnc marks a key-agreement key for JWE.
	UseEnc Use = "enc"
)

// Algorithm identifiers (RFC 7518 §3.1 and §4.1, RFC 8037 §3.1).
const (
	algEdDSA  = "EdDSA"
	algES256  = "ES256"
	algECDHES = "ECDH-ES+A256KW"
	encA256GM = "A256GCM"
)

// maxJWKSize bounds a JWK document accepted by ParsePublicKey and ParsePrivateKey.
const maxJWKSize = 4 << 10

// Sizes of raw key material.
const (
	ed25519Size = ed25519.PublicKeySize // x of an OKP key, and the seed d
	p256Coord   = 32                    // x, y and d of a P-256 key
)

// algorithmFor returns the single algorithm a key of type kt and use may be used with.
func algorithmFor(kt KeyType, use Use) (string, error) {
	switch {
	case kt == Ed25519 && use == UseSign:
		return algEdDSA, nil
	case kt == P256 && use == UseSign:
		return algES256, nil
	case kt == P256 && use == UseEnc:
		return algECDHES, nil
	}
	return "", fmt.Errorf("%w: no algorithm for key type %q with use %q", ErrKey, kt, use)
}

// PrivateKey is a private key together with its public JWK. It is immutable and safe for
// concurrent use.
type PrivateKey struct {
	ed  ed25519.PrivateKey // set when pub.kt is Ed25519
	ec  *ecdsa.PrivateKey  // set when pub.kt is P256
	pub *PublicKey
}

// GenerateKey returns a new random key of type kt for use. The zero KeyType means Ed25519 for
// signing and P-256 for encryption, the only type that can do it; the zero Use means UseSign.
// UseEnc with Ed25519 is ErrKey.
func GenerateKey(kt KeyType, use Use) (*PrivateKey, error) {
	if use == "" {
		use = UseSign
	}
	if kt == "" {
		kt = Ed25519
		if use == UseEnc {
			kt = P256
		}
	}
	if _, err := algorithmFor(kt, use); err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	switch kt {
	case Ed25519:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate key: %w", err)
		}
		return newEd25519PrivateKey(priv, use)
	default:
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate key: %w", err)
		}
		return newP256PrivateKey(priv, use)
	}
}

func newEd25519PrivateKey(priv ed25519.PrivateKey, use Use) (*PrivateKey, error) {
	pub, err := newPublicKey(Ed25519, use, priv.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	return &PrivateKey{ed: priv, pub: pub}, nil
}

func newP256PrivateKey(priv *ecdsa.PrivateKey, use Use) (*PrivateKey, error) {
	point, err := priv.PublicKey.Bytes()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	pub, err := newPublicKey(P256, use, point)
	if err != nil {
		return nil, err
	}
	return &PrivateKey{ec: priv, pub: pub}, nil
}

// KID returns the key ID: the RFC 7638 SHA-256 thumbprint, base64url without padding.
func (k *PrivateKey) KID() string { return k.pub.kid }

// Type returns the key type.
func (k *PrivateKey) Type() KeyType { return k.pub.kt }

// Use returns the key's single use.
func (k *PrivateKey) Use() Use { return k.pub.use }

// Algorithm returns the single JOSE algorithm the key is used with: "EdDSA", "ES256" or
// "ECDH-ES+A256KW".
func (k *PrivateKey) Algorithm() string { return k.pub.alg }

// Public returns the public half. The result is shared and immutable.
func (k *PrivateKey) Public() *PublicKey { return k.pub }

// String identifies the key without revealing it, so a key that ends up in a log line or error
// message leaks nothing.
func (k *PrivateKey) String() string {
	if k == nil || k.pub == nil {
		return "PrivateKey(nil)"
	}
	return fmt.Sprintf("PrivateKey(%s %s %s)", k.pub.kt, k.pub.use, k.pub.kid)
}

// privateJWK is the JSON form of a private key. Member order is fixed so output is stable.
type privateJWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y,omitempty"`
	D   string `json:"d"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use Use    `json:"use"`
}

// MarshalJSON returns the private JWK with kid, alg and use set. The output contains the secret
// key and MUST only be written to protected storage.
func (k *PrivateKey) MarshalJSON() ([]byte, error) {
	j := privateJWK{Kid: k.pub.kid, Alg: k.pub.alg, Use: k.pub.use}
	j.Kty, j.Crv, j.X, j.Y = k.pub.members()
	switch k.pub.kt {
	case Ed25519:
		j.D = b64.EncodeToString(k.ed.Seed())
	case P256:
		d, err := k.ec.Bytes()
		if err != nil {
			return nil, fmt.Errorf("marshal private key: %w", err)
		}
		j.D = b64.EncodeToString(d)
	}
	return json.Marshal(j)
}

// ParsePrivateKey parses a private JWK as written by PrivateKey.MarshalJSON. It is strict: only
// OKP/Ed25519 and EC/P-256 keys, d present and matching the public part, use and alg present and
// consistent, a supplied kid equal to the thumbprint, at most 4 KiB.
func ParsePrivateKey(b []byte) (*PrivateKey, error) {
	j, err := parseJWK(b)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	if j.d == "" {
		return nil, fmt.Errorf("parse private key: %w: no private member d", ErrKey)
	}
	pub, err := j.publicKey()
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	var k *PrivateKey
	switch pub.kt {
	case Ed25519:
		seed, err := decodeFixed(j.d, ed25519.SeedSize)
		if err != nil {
			return nil, fmt.Errorf("parse private key: %w: d: %v", ErrKey, err)
		}
		k = &PrivateKey{ed: ed25519.NewKeyFromSeed(seed), pub: pub}
		if !bytes.Equal(k.ed.Public().(ed25519.PublicKey), pub.raw) {
			return nil, fmt.Errorf("parse private key: %w: d does not match x", ErrKey)
		}
	case P256:
		d, err := decodeFixed(j.d, p256Coord)
		if err != nil {
			return nil, fmt.Errorf("parse private key: %w: d: %v", ErrKey, err)
		}
		priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
		if err != nil {
			return nil, fmt.Errorf("parse private key: %w: d: %v", ErrKey, err)
		}
		k = &PrivateKey{ec: priv, pub: pub}
		if !priv.PublicKey.Equal(pub.ec) {
			return nil, fmt.Errorf("parse private key: %w: d does not match x and y", ErrKey)
		}
	}
	return k, nil
}

// PublicKey is an immutable public JWK whose kid is its RFC 7638 thumbprint and whose alg and use
// are set. It is safe for concurrent use.
type PublicKey struct {
	kt  KeyType
	use Use
	alg string
	kid string
	raw []byte           // Ed25519: the 32-byte key; P-256: the 65-byte uncompressed point
	ec  *ecdsa.PublicKey // P-256 only
}

// newPublicKey builds a PublicKey from raw key material that the caller has size-checked. It
// validates that a P-256 point is on the curve.
func newPublicKey(kt KeyType, use Use, raw []byte) (*PublicKey, error) {
	alg, err := algorithmFor(kt, use)
	if err != nil {
		return nil, err
	}
	p := &PublicKey{kt: kt, use: use, alg: alg, raw: bytes.Clone(raw)}
	if kt == P256 {
		p.ec, err = ecdsa.ParseUncompressedPublicKey(elliptic.P256(), p.raw)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrKey, err)
		}
	}
	p.kid = thumbprint(p.thumbprintInput())
	return p, nil
}

// members returns the JWK members that identify the key material.
func (p *PublicKey) members() (kty, crv, x, y string) {
	switch p.kt {
	case Ed25519:
		return "OKP", "Ed25519", b64.EncodeToString(p.raw), ""
	default:
		return "EC", "P-256", b64.EncodeToString(p.raw[1 : 1+p256Coord]), b64.EncodeToString(p.raw[1+p256Coord:])
	}
}

// thumbprintInput returns the RFC 7638 §3.2 input: the required members only, in lexicographic
// order, without whitespace. The values are base64url or fixed names, so need no JSON escaping.
func (p *PublicKey) thumbprintInput() []byte {
	kty, crv, x, y := p.members()
	if p.kt == Ed25519 {
		// RFC 8037 §2: the required members of an OKP key are crv, kty and x.
		return fmt.Appendf(nil, `{"crv":%q,"kty":%q,"x":%q}`, crv, kty, x)
	}
	// RFC 7638 §3.2: the required members of an EC key are crv, kty, x and y.
	return fmt.Appendf(nil, `{"crv":%q,"kty":%q,"x":%q,"y":%q}`, crv, kty, x, y)
}

func thumbprint(input []byte) string {
	sum := sha256.Sum256(input)
	return b64.EncodeToString(sum[:])
}

// KID returns the key ID: the RFC 7638 SHA-256 thumbprint, base64url without padding.
func (p *PublicKey) KID() string { return p.kid }

// Type returns the key type.
func (p *PublicKey) Type() KeyType { return p.kt }

// Use returns the key's single use.
func (p *PublicKey) Use() Use { return p.use }

// Algorithm returns the single JOSE algorithm the key is used with.
func (p *PublicKey) Algorithm() string { return p.alg }

// JWK returns the key as a jwx key with kid, alg and use set, for JWKS documents. Each call
// returns a new key built from a copy of the key material, so changing it cannot change p. It
// returns nil for a zero PublicKey.
func (p *PublicKey) JWK() jwk.Key {
	var raw any
	switch p.kt {
	case Ed25519:
		raw = ed25519.PublicKey(bytes.Clone(p.raw))
	case P256:
		ec, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), p.raw)
		if err != nil {
			return nil
		}
		raw = ec
	default:
		return nil
	}
	k, err := jwk.FromRaw(raw)
	if err != nil {
		return nil
	}
	// Set cannot fail for these names and values: they are the types jwk documents for them.
	_ = k.Set(jwk.KeyIDKey, p.kid)
	_ = k.Set(jwk.AlgorithmKey, p.alg)
	_ = k.Set(jwk.KeyUsageKey, string(p.use))
	return k
}

// publicJWK is the canonical JSON form of a public key: members kty, crv, x, (y), kid, alg, use
// in that order.
type publicJWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y,omitempty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use Use    `json:"use"`
}

// MarshalJSON returns the canonical public JWK: members kty, crv, x, (y), kid, alg and use, in
// that order. ParsePublicKey of the output returns an Equal key.
func (p *PublicKey) MarshalJSON() ([]byte, error) {
	if p.kt == "" {
		return nil, fmt.Errorf("marshal public key: %w: zero PublicKey", ErrKey)
	}
	j := publicJWK{Kid: p.kid, Alg: p.alg, Use: p.use}
	j.Kty, j.Crv, j.X, j.Y = p.members()
	return json.Marshal(j)
}

// Equal reports whether p and o are the same key with the same use. Two nil keys are equal.
func (p *PublicKey) Equal(o *PublicKey) bool {
	if p == nil || o == nil {
		return p == o
	}
	return p.kt == o.kt && p.use == o.use && p.alg == o.alg && bytes.Equal(p.raw, o.raw)
}

// ParsePublicKey parses a public JWK. It is strict: at most 4 KiB; one JSON object without
// duplicate members; only OKP/Ed25519 and EC/P-256 with canonical base64url coordinates and, for
// P-256, a point on the curve; no private members (d, or the RSA and symmetric ones); use and alg
// both present and consistent (sig: EdDSA for Ed25519, ES256 for P-256; enc: ECDH-ES+A256KW for
// P-256); a supplied kid equal to the RFC 7638 thumbprint. Other members are ignored as RFC 7517
// §4 requires. Failures wrap ErrKey, or ErrTooLarge for the size limit.
func ParsePublicKey(b []byte) (*PublicKey, error) {
	j, err := parseJWK(b)
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	if j.private != "" {
		return nil, fmt.Errorf("parse public key: %w: private member %q present", ErrKey, j.private)
	}
	p, err := j.publicKey()
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	return p, nil
}

// UnmarshalJSON parses b exactly like ParsePublicKey, so a PublicKey can be a field of a struct
// decoded with encoding/json. Following encoding/json convention, null leaves p unchanged. It
// overwrites p, so it MUST NOT be called on a key that is already shared.
func (p *PublicKey) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	k, err := ParsePublicKey(b)
	if err != nil {
		return err
	}
	*p = *k
	return nil
}

// Thumbprint returns the RFC 7638 SHA-256 thumbprint of p, base64url without padding. It is the
// same as p.KID().
func Thumbprint(p *PublicKey) string { return p.KID() }

// jwkMembers holds the members of a JWK document that this package reads.
type jwkMembers struct {
	kty, crv, x, y, d, kid, alg, use string
	hasKID                           bool
	private                          string // a private member present (d, or an RSA or symmetric one), or ""
}

// parseJWK decodes the members of a JWK object strictly. It only checks syntax and member types;
// publicKey checks their meaning.
func parseJWK(b []byte) (*jwkMembers, error) {
	if len(b) > maxJWKSize {
		return nil, fmt.Errorf("%w: JWK of %d bytes, limit %d", ErrTooLarge, len(b), maxJWKSize)
	}
	var j jwkMembers
	err := members(b, func(name string, v []byte) error {
		var dst *string
		switch name {
		case "kty":
			dst = &j.kty
		case "crv":
			dst = &j.crv
		case "x":
			dst = &j.x
		case "y":
			dst = &j.y
		case "d":
			dst = &j.d
			j.private = name
		case "kid":
			dst = &j.kid
			j.hasKID = true
		case "alg":
			dst = &j.alg
		case "use":
			dst = &j.use
		case "p", "q", "dp", "dq", "qi", "oth", "k":
			// RSA private members (RFC 7518 §6.3.2) and the symmetric key (§6.4.1).
			if j.private == "" {
				j.private = name
			}
			return nil
		default:
			return nil
		}
		s, ok := jsonString(v)
		if !ok {
			return fmt.Errorf("%w: member %q is not a string", ErrKey, name)
		}
		*dst = s
		return nil
	})
	if err != nil && !errors.Is(err, ErrKey) {
		// A JWK that is not even well-formed JSON is still an invalid key to the caller.
		err = fmt.Errorf("%w: %w", ErrKey, err)
	}
	if err != nil {
		return nil, err
	}
	return &j, nil
}

// publicKey checks the members that describe the public key and builds it.
func (j *jwkMembers) publicKey() (*PublicKey, error) {
	var kt KeyType
	var raw []byte
	switch {
	case j.kty == "OKP" && j.crv == "Ed25519":
		if j.y != "" {
			return nil, fmt.Errorf("%w: OKP key with member y", ErrKey)
		}
		x, err := decodeFixed(j.x, ed25519Size)
		if err != nil {
			return nil, fmt.Errorf("%w: x: %v", ErrKey, err)
		}
		kt, raw = Ed25519, x
	case j.kty == "EC" && j.crv == "P-256":
		x, err := decodeFixed(j.x, p256Coord)
		if err != nil {
			return nil, fmt.Errorf("%w: x: %v", ErrKey, err)
		}
		y, err := decodeFixed(j.y, p256Coord)
		if err != nil {
			return nil, fmt.Errorf("%w: y: %v", ErrKey, err)
		}
		kt, raw = P256, append(append([]byte{4}, x...), y...)
	default:
		return nil, fmt.Errorf("%w: unsupported kty %q with crv %q", ErrKey, j.kty, j.crv)
	}
	use := Use(j.use)
	alg, err := algorithmFor(kt, use)
	if err != nil {
		return nil, err
	}
	if j.alg != alg {
		return nil, fmt.Errorf("%w: alg %q, want %q for %s key with use %q", ErrKey, j.alg, alg, kt, use)
	}
	p, err := newPublicKey(kt, use, raw)
	if err != nil {
		return nil, err
	}
	if j.hasKID && j.kid != p.kid {
		return nil, fmt.Errorf("%w: kid %q is not the thumbprint %q", ErrKey, j.kid, p.kid)
	}
	return p, nil
}
