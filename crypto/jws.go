package crypto

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/big"
)

// MaxJWSSize is the largest compact JWS accepted; larger input is refused with ErrTooLarge before
// any parsing. Compact JWEs may be up to four times this size.
const MaxJWSSize = 64 << 10

// sigSize is the size of both allowed signatures: Ed25519 (RFC 8032 §5.1.6) and ES256 as the
// fixed-width R||S of RFC 7518 §3.4.
const sigSize = 64

// sigB64Size is the length of the base64url-encoded signature segment.
var sigB64Size = b64.EncodedLen(sigSize)

// Header is what a caller sets in, or reads from, a JWS protected header.
type Header struct {
	// Type is "typ" (RFC 7515 §4.1.9), e.g. "vc+jwt" or "did-event+jwt".
	Type string
	// KID is "kid" (RFC 7515 §4.1.4). Sign sets it to the key's thumbprint when empty. Verify
	// returns it without comparing it to the key: it may be a DID URL, and the caller chose the
	// key.
	KID string
	// Alg is "alg". Sign ignores it and uses the key's algorithm; ParseHeader, ParseUnverified
	// and Verify fill it in.
	Alg string
}

// protectedHeader is the JSON form Sign writes.
type protectedHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid,omitempty"`
	Typ string `json:"typ,omitempty"`
}

// Sign returns payload as a compact JWS (RFC 7515 §7.1) signed with k, which MUST be a UseSign
// key. The protected header holds alg, kid (h.KID, or k.KID() when empty) and typ (when set).
// EdDSA signatures are deterministic; ES256 signatures are randomised. A result larger than
// MaxJWSSize is refused with ErrTooLarge, since Verify would refuse it.
func Sign(k *PrivateKey, payload []byte, h Header) ([]byte, error) {
	if k == nil || k.pub == nil {
		return nil, fmt.Errorf("sign: %w: nil key", ErrKey)
	}
	if k.pub.use != UseSign {
		return nil, fmt.Errorf("sign: %w: key %s has use %q", ErrKey, k.pub.kid, k.pub.use)
	}
	if h.KID == "" {
		h.KID = k.pub.kid
	}
	hdr, err := json.Marshal(protectedHeader{Alg: k.pub.alg, Kid: h.KID, Typ: h.Type})
	if err != nil {
		return nil, fmt.Errorf("sign: header: %w", err)
	}
	size := b64.EncodedLen(len(hdr)) + 1 + b64.EncodedLen(len(payload)) + 1 + sigB64Size
	if size > MaxJWSSize {
		return nil, fmt.Errorf("sign: %w: JWS would be %d bytes, limit %d", ErrTooLarge, size, MaxJWSSize)
	}
	buf := make([]byte, 0, size)
	buf = b64.AppendEncode(buf, hdr)
	buf = append(buf, '.')
	buf = b64.AppendEncode(buf, payload)
	var sig [sigSize]byte
	switch k.pub.kt {
	case Ed25519:
		copy(sig[:], ed25519.Sign(k.ed, buf))
	case P256:
		digest := sha256.Sum256(buf)
		r, s, err := ecdsa.Sign(rand.Reader, k.ec, digest[:])
		if err != nil {
			return nil, fmt.Errorf("sign: %w", err)
		}
		r.FillBytes(sig[:sigSize/2])
		s.FillBytes(sig[sigSize/2:])
	}
	buf = append(buf, '.')
	return b64.AppendEncode(buf, sig[:]), nil
}

// Verify checks the compact JWS against pub and returns its payload and protected header. The
// checks run cheapest first: size (ErrTooLarge), shape and header (ErrMalformed), alg on the
// allow-list and equal to pub's algorithm (ErrAlgorithm), and only then the signature
// (ErrSignature). pub MUST be a UseSign key (else ErrKey); the header's kid is returned, not
// checked.
//
// ES256 signatures are malleable: (r, n−s) verifies too. Callers MUST NOT use the bytes of an
// ES256 token as a unique identifier; use its payload.
func Verify(compact []byte, pub *PublicKey) ([]byte, Header, error) {
	if len(compact) > MaxJWSSize {
		return nil, Header{}, fmt.Errorf("verify: %w: %d bytes, limit %d", ErrTooLarge, len(compact), MaxJWSSize)
	}
	if pub == nil || pub.use != UseSign {
		return nil, Header{}, fmt.Errorf("verify: %w: not a signing key", ErrKey)
	}
	var parts [3][]byte
	if err := splitCompact(compact, parts[:]); err != nil {
		return nil, Header{}, fmt.Errorf("verify: %w", err)
	}
	h, err := parseProtected(parts[0])
	if err != nil {
		return nil, Header{}, fmt.Errorf("verify: %w", err)
	}
	if h.Alg != pub.alg {
		return nil, Header{}, fmt.Errorf("verify: %w: alg %q but key %s is %s", ErrAlgorithm, h.Alg, pub.kid, pub.alg)
	}
	if len(parts[2]) != sigB64Size {
		return nil, Header{}, fmt.Errorf("verify: %w: signature of %d characters, want %d", ErrSignature, len(parts[2]), sigB64Size)
	}
	var sig [sigSize]byte
	if _, err := b64.Decode(sig[:], parts[2]); err != nil {
		return nil, Header{}, fmt.Errorf("verify: %w: signature: %v", ErrMalformed, err)
	}
	// RFC 7515 §5.2 step 8: the signing input is the ASCII of header '.' payload, as received.
	input := compact[:len(parts[0])+1+len(parts[1])]
	if !pub.verify(input, &sig) {
		return nil, Header{}, fmt.Errorf("verify: %w (key %s)", ErrSignature, pub.kid)
	}
	payload, err := decodeSegment(parts[1])
	if err != nil {
		return nil, Header{}, fmt.Errorf("verify: payload: %w", err)
	}
	return payload, h, nil
}

// verify checks a signature made with p's algorithm over input.
func (p *PublicKey) verify(input []byte, sig *[sigSize]byte) bool {
	switch p.kt {
	case Ed25519:
		// ed25519.Verify refuses non-canonical S (RFC 8032 §5.1.7), so EdDSA tokens are not
		// malleable.
		return ed25519.Verify(ed25519.PublicKey(p.raw), input, sig[:])
	case P256:
		digest := sha256.Sum256(input)
		r := new(big.Int).SetBytes(sig[:sigSize/2])
		s := new(big.Int).SetBytes(sig[sigSize/2:])
		return ecdsa.Verify(p.ec, digest[:], r, s)
	}
	return false
}

// ParseHeader reads the protected header of a compact JWS without verifying it, so the caller
// can look up the key by kid. It applies the same size, shape, header and alg allow-list checks
// as Verify; a header whose alg is not EdDSA or ES256 is ErrAlgorithm.
func ParseHeader(compact []byte) (Header, error) {
	if len(compact) > MaxJWSSize {
		return Header{}, fmt.Errorf("parse header: %w: %d bytes, limit %d", ErrTooLarge, len(compact), MaxJWSSize)
	}
	var parts [3][]byte
	if err := splitCompact(compact, parts[:]); err != nil {
		return Header{}, fmt.Errorf("parse header: %w", err)
	}
	h, err := parseProtected(parts[0])
	if err != nil {
		return Header{}, fmt.Errorf("parse header: %w", err)
	}
	return h, nil
}

// ParseUnverified returns the payload and header of a compact JWS without verifying the
// signature, after the same checks as ParseHeader. It is for routing only: nothing in the result
// may be trusted until Verify succeeds.
func ParseUnverified(compact []byte) (payload []byte, h Header, err error) {
	if len(compact) > MaxJWSSize {
		return nil, Header{}, fmt.Errorf("parse unverified: %w: %d bytes, limit %d", ErrTooLarge, len(compact), MaxJWSSize)
	}
	var parts [3][]byte
	if err := splitCompact(compact, parts[:]); err != nil {
		return nil, Header{}, fmt.Errorf("parse unverified: %w", err)
	}
	h, err = parseProtected(parts[0])
	if err != nil {
		return nil, Header{}, fmt.Errorf("parse unverified: %w", err)
	}
	payload, err = decodeSegment(parts[1])
	if err != nil {
		return nil, Header{}, fmt.Errorf("parse unverified: payload: %w", err)
	}
	return payload, h, nil
}

// parseProtected decodes and checks a JWS protected header (RFC 7515 §4.1). It refuses:
//   - crit (§4.1.11): no extension is understood, so none may be critical;
//   - jku, jwk, x5u and x5c (§4.1.2–§4.1.6): the verifying key is always chosen by the caller, and
//     refusing keys carried in the token keeps anyone from being tempted to use them;
//   - b64 (RFC 7797 §3): unencoded payloads are not supported;
//   - an alg that is missing or not a string (ErrMalformed), or not EdDSA or ES256 (ErrAlgorithm).
//
// typ and kid must be strings when present; other members are ignored.
func parseProtected(seg []byte) (Header, error) {
	raw, err := decodeSegment(seg)
	if err != nil {
		return Header{}, fmt.Errorf("header: %w", err)
	}
	var h Header
	hasAlg := false
	err = members(raw, func(name string, v []byte) error {
		var dst *string
		switch name {
		case "alg":
			dst, hasAlg = &h.Alg, true
		case "typ":
			dst = &h.Type
		case "kid":
			dst = &h.KID
		case "crit", "jku", "jwk", "x5u", "x5c", "b64":
			return fmt.Errorf("%w: header %q not allowed", ErrMalformed, name)
		default:
			return nil
		}
		s, ok := jsonString(v)
		if !ok {
			return fmt.Errorf("%w: header %q is not a string", ErrMalformed, name)
		}
		*dst = s
		return nil
	})
	if err != nil {
		return Header{}, fmt.Errorf("header: %w", err)
	}
	if !hasAlg {
		return Header{}, fmt.Errorf("header: %w: no alg", ErrMalformed)
	}
	if h.Alg != algEdDSA && h.Alg != algES256 {
		return Header{}, fmt.Errorf("header: %w: %q", ErrAlgorithm, h.Alg)
	}
	return h, nil
}

// SHA256 returns the SHA-256 hash of the concatenation of b.
func SHA256(b ...[]byte) [32]byte {
	d := sha256.New()
	for _, p := range b {
		d.Write(p)
	}
	var sum [32]byte
	d.Sum(sum[:0])
	return sum
}
