package crypto

import (
	"fmt"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwe"
)

// maxJWESize is the largest compact JWE Decrypt accepts and Encrypt produces.
const maxJWESize = 4 * MaxJWSSize

// Sizes of the fixed-size JWE segments for ECDH-ES+A256KW with A256GCM.
const (
	wrappedKeySize = 40 // a 32-byte CEK wrapped with AES key wrap (RFC 3394 §2.2.1)
	gcmIVSize      = 12 // RFC 7518 §5.3
	gcmTagSize     = 16 // RFC 7518 §5.3
)

// Encrypt returns plaintext as a compact JWE (RFC 7516 §7.1) for to, which MUST be a P-256 UseEnc
// key: key management ECDH-ES+A256KW (RFC 7518 §4.6) with a fresh ephemeral key, content
// encryption A256GCM (RFC 7518 §5.3), the recipient's kid in the protected header, no
// compression. plaintext MUST NOT be empty (ErrMalformed). A result larger than Decrypt accepts
// is refused with ErrTooLarge.
func Encrypt(plaintext []byte, to *PublicKey) ([]byte, error) {
	if to == nil || to.kt != P256 || to.use != UseEnc {
		return nil, fmt.Errorf("encrypt: %w: not a P-256 encryption key", ErrKey)
	}
	// An empty ciphertext segment is valid JOSE, but jwx's Decrypt cannot read one back, so such a
	// JWE would be undeliverable to every schakel node.
	if len(plaintext) == 0 {
		return nil, fmt.Errorf("encrypt: %w: empty plaintext", ErrMalformed)
	}
	// The ciphertext segment alone is 4/3 of the plaintext.
	if b64.EncodedLen(len(plaintext)) > maxJWESize {
		return nil, fmt.Errorf("encrypt: %w: %d bytes of plaintext", ErrTooLarge, len(plaintext))
	}
	hdr := jwe.NewHeaders()
	if err := hdr.Set(jwe.KeyIDKey, to.kid); err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	out, err := jwe.Encrypt(plaintext,
		jwe.WithKey(jwa.ECDH_ES_A256KW, to.ec),
		jwe.WithContentEncryption(jwa.A256GCM),
		jwe.WithProtectedHeaders(hdr),
	)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	if len(out) > maxJWESize {
		return nil, fmt.Errorf("encrypt: %w: JWE would be %d bytes, limit %d", ErrTooLarge, len(out), maxJWESize)
	}
	return out, nil
}

// Decrypt returns the plaintext of a compact JWE made by Encrypt for k, which MUST be a P-256
// UseEnc key (else ErrKey). Before any key operation it refuses input over 256 KiB
// (ErrTooLarge), anything but the five-segment compact form, headers it does not accept
// (ErrMalformed), and any alg other than ECDH-ES+A256KW, enc other than A256GCM or any zip
// (ErrAlgorithm). A JWE for another key, or one that was altered, is ErrDecrypt.
func Decrypt(compact []byte, k *PrivateKey) ([]byte, error) {
	if len(compact) > maxJWESize {
		return nil, fmt.Errorf("decrypt: %w: %d bytes, limit %d", ErrTooLarge, len(compact), maxJWESize)
	}
	if k == nil || k.pub == nil || k.pub.kt != P256 || k.pub.use != UseEnc {
		return nil, fmt.Errorf("decrypt: %w: not a P-256 encryption key", ErrKey)
	}
	var parts [5][]byte
	if err := splitCompact(compact, parts[:]); err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	if err := checkJWEHeader(parts[0]); err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	for _, seg := range []struct {
		name string
		b    []byte
		size int // 0: any
	}{
		{"encrypted key", parts[1], wrappedKeySize},
		{"iv", parts[2], gcmIVSize},
		{"ciphertext", parts[3], 0},
		{"tag", parts[4], gcmTagSize},
	} {
		if seg.size != 0 && len(seg.b) != b64.EncodedLen(seg.size) {
			return nil, fmt.Errorf("decrypt: %w: %s of %d characters, want %d", ErrMalformed, seg.name, len(seg.b), b64.EncodedLen(seg.size))
		}
		// jwx decodes base64url leniently; decoding strictly first gives every JWE one spelling.
		if _, err := decodeSegment(seg.b); err != nil {
			return nil, fmt.Errorf("decrypt: %s: %w", seg.name, err)
		}
	}
	plaintext, err := jwe.Decrypt(compact, jwe.WithKey(jwa.ECDH_ES_A256KW, k.ec))
	if err != nil {
		return nil, fmt.Errorf("decrypt: %w (key %s): %v", ErrDecrypt, k.pub.kid, err)
	}
	return plaintext, nil
}

// checkJWEHeader checks a JWE protected header (RFC 7516 §4.1) before it reaches jwx: alg MUST be
// ECDH-ES+A256KW and enc A256GCM (else ErrAlgorithm), zip MUST be absent (ErrAlgorithm: a
// decompression step is attack surface nobody here needs), crit, jku, jwk, x5u and x5c MUST be
// absent, and epk MUST be a valid P-256 public key (RFC 7518 §4.6.1.1), which rules out
// invalid-curve points before any ECDH.
func checkJWEHeader(seg []byte) error {
	raw, err := decodeSegment(seg)
	if err != nil {
		return fmt.Errorf("header: %w", err)
	}
	var alg, enc string
	var hasAlg, hasEnc, hasEPK bool
	err = members(raw, func(name string, v []byte) error {
		switch name {
		case "alg", "enc":
			s, ok := jsonString(v)
			if !ok {
				return fmt.Errorf("%w: header %q is not a string", ErrMalformed, name)
			}
			if name == "alg" {
				alg, hasAlg = s, true
			} else {
				enc, hasEnc = s, true
			}
		case "zip":
			return fmt.Errorf("%w: compression %s", ErrAlgorithm, v)
		case "crit", "jku", "jwk", "x5u", "x5c":
			return fmt.Errorf("%w: header %q not allowed", ErrMalformed, name)
		case "epk":
			if err := checkEPK(v); err != nil {
				return fmt.Errorf("%w: epk: %w", ErrMalformed, err)
			}
			hasEPK = true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("header: %w", err)
	}
	switch {
	case !hasAlg || !hasEnc:
		return fmt.Errorf("header: %w: alg and enc are required", ErrMalformed)
	case alg != algECDHES:
		return fmt.Errorf("header: %w: alg %q", ErrAlgorithm, alg)
	case enc != encA256GM:
		return fmt.Errorf("header: %w: enc %q", ErrAlgorithm, enc)
	case !hasEPK:
		return fmt.Errorf("header: %w: no epk", ErrMalformed)
	}
	return nil
}

// checkEPK checks that an ephemeral public key is an EC P-256 point on the curve.
func checkEPK(v []byte) error {
	j, err := parseJWK(v)
	if err != nil {
		return err
	}
	if j.private != "" {
		return fmt.Errorf("private member %q present", j.private)
	}
	if j.kty != "EC" || j.crv != "P-256" {
		return fmt.Errorf("kty %q with crv %q, want EC P-256", j.kty, j.crv)
	}
	// The ephemeral key carries no use or alg; borrow the recipient's to reuse the point checks.
	j.use, j.alg, j.hasKID = string(UseEnc), algECDHES, false
	_, err = j.publicKey()
	return err
}
