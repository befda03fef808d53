package authz

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/schakel-health/schakel/crypto"
)

// b64 is base64url without padding (RFC 7515 §2), strict about trailing bits.
var b64 = base64.RawURLEncoding.Strict()

// idBytes is the entropy of identifiers made by NewID: 128 bits.
const idBytes = 16

// maxIDLen bounds a jti, basis or request id read from a token; real ones are 22 characters.
const maxIDLen = 256

// maxClaimLen bounds the other string claims read from a token.
const maxClaimLen = 1024

// thumbprintLen is the length of a base64url SHA-256 thumbprint (RFC 7638): 43 characters.
var thumbprintLen = b64.EncodedLen(32)

// KeyResolver returns the signing key named by kid, "<organisation DID>#<key thumbprint>", if
// that key was the organisation's signing key at time at; otherwise an error. The resolver
// decides what a rotation means: Verifier.Open asks for the key valid now, so a key rotated out
// before now MUST give an error, while VerifyReceipt asks for the key valid when the receipt was
// made. node satisfies it with the DID registry, see [RegistryResolver].
type KeyResolver func(ctx context.Context, kid string, at time.Time) (*crypto.PublicKey, error)

// RegistryResolver adapts a DID registry (did.Registry's KeyByID, which takes the DID and the
// thumbprint separately) to a KeyResolver.
func RegistryResolver(r interface {
	KeyByID(ctx context.Context, did, kid string, t time.Time) (*crypto.PublicKey, error)
}) KeyResolver {
	return func(ctx context.Context, kid string, at time.Time) (*crypto.PublicKey, error) {
		did, thumb, ok := splitKID(kid)
		if !ok {
			return nil, fmt.Errorf("kid %q is not <did>#<thumbprint>", clip(kid))
		}
		return r.KeyByID(ctx, did, thumb, at)
	}
}

// KID returns the kid of an organisation's signing key in a JWS header: "<did>#<thumbprint>".
func KID(did string, k *crypto.PrivateKey) string { return did + "#" + k.KID() }

// splitKID splits "<did>#<thumbprint>". Both parts MUST be non-empty.
func splitKID(kid string) (did, thumb string, ok bool) {
	did, thumb, ok = strings.Cut(kid, "#")
	return did, thumb, ok && did != "" && thumb != "" && !strings.Contains(thumb, "#")
}

// NewID returns a fresh random identifier for a jti: 128 bits, base64url without padding.
func NewID() string {
	var b [idBytes]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (it panics if the system has no entropy)
	return b64.EncodeToString(b[:])
}

// validThumbprint reports whether s has the form of an RFC 7638 SHA-256 thumbprint.
func validThumbprint(s string) bool {
	if len(s) != thumbprintLen {
		return false
	}
	var b [32]byte
	n, err := b64.Decode(b[:], []byte(s))
	return err == nil && n == 32
}

// validDID reports whether s can be an organisation DID: "did:" and a method-specific id without
// '#', white space or control characters. The DID registry checks the rest.
func validDID(s string) bool {
	if !strings.HasPrefix(s, "did:") || len(s) > 256 || len(s) <= len("did:") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
	}
	return true
}

// unix returns t as a JWT NumericDate (RFC 7519 §2), truncated to the second.
func unix(t time.Time) int64 { return t.Unix() }

// fromUnix is the inverse of unix.
func fromUnix(s int64) time.Time { return time.Unix(s, 0).UTC() }

// clip shortens attacker-supplied strings before they go into an error message.
func clip(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Confirmation is the "cnf" claim (RFC 7800 §3.1) holding the thumbprint of the DPoP key a token
// is bound to (RFC 9449 §6.1).
type Confirmation struct {
	JKT string `json:"jkt"`
}

// maxDepth bounds the nesting of JSON that uniqueMembers accepts; claims here nest two deep.
const maxDepth = 32

// uniqueMembers refuses JSON whose objects, at any depth, repeat a member name: RFC 7515 §4 and
// RFC 7519 §4 let a parser refuse them, and refusing means no other parser can read a different
// value for a claim than this one did. It also refuses invalid JSON and nesting deeper than 32.
// Names are compared after unescaping, as encoding/json reads them.
//
// It runs on every token verified, so after json.Valid has checked the syntax it delimits the
// values with a plain scan instead of encoding/json's token API.
func uniqueMembers(b []byte) error {
	if !json.Valid(b) {
		return fmt.Errorf("%w: invalid JSON", ErrMalformed)
	}
	_, err := scanValue(b, skipSpace(b, 0), 0)
	return err
}

// scanValue returns the index just past the JSON value at b[i], which json.Valid accepted, after
// checking the objects in it for duplicate names.
func scanValue(b []byte, i, depth int) (int, error) {
	if depth > maxDepth {
		return 0, fmt.Errorf("%w: JSON nested deeper than %d", ErrMalformed, maxDepth)
	}
	var err error
	switch b[i] {
	case '{':
		var buf [16]string
		names := buf[:0]
		for i = skipSpace(b, i+1); b[i] != '}'; {
			end := skipString(b, i)
			name := string(b[i+1 : end-1])
			if bytes.IndexByte(b[i:end], '\\') >= 0 {
				if err := json.Unmarshal(b[i:end], &name); err != nil {
					return 0, fmt.Errorf("%w: member name", ErrMalformed)
				}
			}
			if slices.Contains(names, name) {
				return 0, fmt.Errorf("%w: duplicate member %q", ErrMalformed, clip(name))
			}
			names = append(names, name)
			i = skipSpace(b, end) // at ':'
			i = skipSpace(b, i+1) // at the value
			if i, err = scanValue(b, i, depth+1); err != nil {
				return 0, err
			}
			if i = skipSpace(b, i); b[i] == ',' {
				i = skipSpace(b, i+1)
			}
		}
		return i + 1, nil
	case '[':
		for i = skipSpace(b, i+1); b[i] != ']'; {
			if i, err = scanValue(b, i, depth+1); err != nil {
				return 0, err
			}
			if i = skipSpace(b, i); b[i] == ',' {
				i = skipSpace(b, i+1)
			}
		}
		return i + 1, nil
	case '"':
		return skipString(b, i), nil
	default: // number, true, false or null
		for i < len(b) && !strings.ContainsRune(",}] \t\r\n", rune(b[i])) {
			i++
		}
		return i, nil
	}
}

// skipSpace returns the index of the first byte at or after i that is not JSON white space.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just past the JSON string starting at b[i] == '"'.
func skipString(b []byte, i int) int {
	for i++; b[i] != '"'; i++ {
		if b[i] == '\\' {
			i++
		}
	}
	return i + 1
}

// strictObject decodes b as one JSON object without duplicate members and returns its members.
// It is for inputs that crypto's strict JOSE parser does not see (DPoP headers and payloads).
func strictObject(b []byte) (map[string]json.RawMessage, error) {
	if err := uniqueMembers(b); err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil || m == nil {
		return nil, fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	return m, nil
}

// rawString decodes a JSON string member; null, numbers and the like are refused.
func rawString(v json.RawMessage) (string, bool) {
	if len(v) == 0 || v[0] != '"' {
		return "", false
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", false
	}
	return s, true
}

// decodeClaims decodes a verified JWT payload strictly: duplicate member names, unknown claims and
// trailing data are refused. A null claim reads as absent, which the callers' required-claim
// checks then refuse where it matters.
func decodeClaims(payload []byte, v any) error {
	if err := uniqueMembers(payload); err != nil {
		return err
	}
	if err := crypto.DecodeJSON(payload, v); err != nil {
		return fmt.Errorf("%w: %s", ErrMalformed, redactDigits(err.Error()))
	}
	return nil
}

// redactDigits replaces every run of six or more digits in s, which could be a BSN sent in the
// wrong place and echoed by encoding/json, by "#".
func redactDigits(s string) string {
	var b strings.Builder
	run := 0
	flush := func(end int) {
		if run >= 6 {
			b.WriteByte('#')
		} else {
			b.WriteString(s[end-run : end])
		}
		run = 0
	}
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			run++
			continue
		}
		flush(i)
		b.WriteByte(s[i])
	}
	flush(len(s))
	return b.String()
}
