package crypto

import (
	"bytes"
	"cmp"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"slices"
	"strconv"
)

// pseudonymContext separates pseudonym HMACs from any other use of the same secret. The trailing
// NUL ends the context so no BSN can extend it.
const pseudonymContext = "schakel-pseudonym-v1\x00"

// minSecretSize is the smallest pseudonym secret NewPseudonymizer accepts: 256 bits, the HMAC-
// SHA256 output size.
const minSecretSize = 32

// Pseudonymizer derives keyed pseudonyms of BSNs, so records about one patient can be linked
// without storing the BSN. A pseudonym is "v<version>.<base64url(HMAC-SHA256(secret_v,
// "schakel-pseudonym-v1\x00" || bsn))>". Secrets are versioned so they can be rotated: new
// pseudonyms use the current version, and All lets lookups match records made under older ones.
// A Pseudonymizer is immutable and safe for concurrent use.
type Pseudonymizer struct {
	versions map[uint32][]byte
	order    []uint32 // current first, then the others from newest to oldest
	current  uint32
}

// NewPseudonymizer returns a Pseudonymizer over secrets, keyed by version, that makes new
// pseudonyms with version current. Each secret MUST be at least 32 bytes and current
// MUST be one of the versions. The secrets are copied.
func NewPseudonymizer(secrets map[uint32][]byte, current uint32) (*Pseudonymizer, error) {
	if _, ok := secrets[current]; !ok {
		return nil, fmt.Errorf("new pseudonymizer: %w: no secret for current version %d", ErrKey, current)
	}
	p := &Pseudonymizer{versions: make(map[uint32][]byte, len(secrets)), current: current}
	for v, s := range secrets {
		if len(s) < minSecretSize {
			return nil, fmt.Errorf("new pseudonymizer: %w: secret version %d has %d bytes, want at least %d", ErrKey, v, len(s), minSecretSize)
		}
		p.versions[v] = bytes.Clone(s)
		if v != current {
			p.order = append(p.order, v)
		}
	}
	slices.SortFunc(p.order, func(a, b uint32) int { return cmp.Compare(b, a) })
	p.order = slices.Insert(p.order, 0, current)
	return p, nil
}

// GenerateSecret returns 32 random bytes for use as a pseudonym secret.
func GenerateSecret() ([]byte, error) {
	s := make([]byte, minSecretSize)
	if _, err := rand.Read(s); err != nil {
		return nil, fmt.Errorf("generate secret: %w", err)
	}
	return s, nil
}

// Current returns the version new pseudonyms are made with.
func (p *Pseudonymizer) Current() uint32 { return p.current }

// Pseudonym returns the pseudonym of bsn under the current version. bsn MUST pass ValidBSN; the
// error then wraps ErrBSN and does not contain bsn.
func (p *Pseudonymizer) Pseudonym(bsn string) (string, error) {
	if err := ValidBSN(bsn); err != nil {
		return "", fmt.Errorf("pseudonym: %w", err)
	}
	return p.pseudonym(p.current, bsn), nil
}

// All returns the pseudonyms of bsn under every known version, current first and then from the
// newest version to the oldest, so a lookup finds records made before a rotation.
func (p *Pseudonymizer) All(bsn string) ([]string, error) {
	if err := ValidBSN(bsn); err != nil {
		return nil, fmt.Errorf("pseudonyms: %w", err)
	}
	out := make([]string, len(p.order))
	for i, v := range p.order {
		out[i] = p.pseudonym(v, bsn)
	}
	return out, nil
}

func (p *Pseudonymizer) pseudonym(v uint32, bsn string) string {
	mac := hmac.New(sha256.New, p.versions[v])
	mac.Write([]byte(pseudonymContext))
	mac.Write([]byte(bsn))
	var sum [sha256.Size]byte
	buf := make([]byte, 0, 1+10+1+b64.EncodedLen(len(sum)))
	buf = append(buf, 'v')
	buf = strconv.AppendUint(buf, uint64(v), 10)
	buf = append(buf, '.')
	buf = b64.AppendEncode(buf, mac.Sum(sum[:0]))
	return string(buf)
}

// ValidBSN reports whether bsn is a valid Burgerservicenummer: exactly 9 ASCII digits, not all
// zero, passing the 11-proof 9·d1 + 8·d2 + … + 2·d8 − 1·d9 ≡ 0 (mod 11). The error wraps ErrBSN
// and names the reason (length, non-digit, zeros, 11-proof) without repeating the input, since a
// BSN MUST NOT reach logs.
func ValidBSN(bsn string) error {
	if len(bsn) != 9 {
		return fmt.Errorf("%w: length %d, want 9", ErrBSN, len(bsn))
	}
	sum, zeros := 0, true
	for i := 0; i < 9; i++ {
		c := bsn[i]
		if c < '0' || c > '9' {
			return fmt.Errorf("%w: non-digit at position %d", ErrBSN, i+1)
		}
		d := int(c - '0')
		if d != 0 {
			zeros = false
		}
		if i < 8 {
			sum += (9 - i) * d
		} else {
			sum -= d
		}
	}
	if zeros {
		return fmt.Errorf("%w: all zeros", ErrBSN)
	}
	if sum%11 != 0 {
		return fmt.Errorf("%w: fails the 11-proof", ErrBSN)
	}
	return nil
}

// ContainsBSN reports whether s holds nine digits in a row that pass the 11-proof: an identifier
// or free text that must never carry, or be mistaken for, a BSN is refused when it does.
func ContainsBSN(s string) bool {
	run := 0
	for i := 0; i < len(s); i++ {
		if '0' <= s[i] && s[i] <= '9' {
			run++
			if run >= 9 && ValidBSN(s[i-8:i+1]) == nil {
				return true
			}
		} else {
			run = 0
		}
	}
	return false
}
