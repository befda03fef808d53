package consent

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/schakel-health/schakel/crypto"
)

// assuranceRank orders assurance levels: 0 for an unknown one.
func assuranceRank(a string) int {
	switch a {
	case AssuranceLow:
		return 1
	case AssuranceSubstantial:
		return 2
	case AssuranceHigh:
		return 3
	}
	return 0
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// validToken reports whether s is 1 to max printable ASCII characters without spaces. Keys use
// 0x00 as a separator, which such tokens never contain.
func validToken(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

func validDID(s string) bool {
	return len(s) > len("did:") && strings.HasPrefix(s, "did:") && validToken(s, maxDID)
}

// validCode reports whether s is a data category code: 1 to 64 characters from [A-Za-z0-9._:/-].
// A code that looks like a BSN is refused: codes are logged.
func validCode(s string) bool {
	if len(s) == 0 || len(s) > maxCode || crypto.ContainsBSN(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._:/-", c) >= 0) {
			return false
		}
	}
	return true
}

func validOrgType(s string) bool {
	if len(s) == 0 || len(s) > maxOrgType {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// validList checks a list of 1 to max data categories (kind categoryCodes) or purposes (kind
// purposeCodes) in which "*" only appears alone.
func validList(kind codeKind, list []string, max int) error {
	what, form, ok := "data category", "a code of 1 to 64 characters from [A-Za-z0-9._:/-]", validCode
	if kind == purposeCodes {
		what, form, ok = "purpose", "a PurposeOfUse code (2 to 16 of A-Z, 0-9, _)", validPurpose
	}
	if len(list) == 0 || len(list) > max {
		return invalid("%d %s codes, want 1 to %d", len(list), what, max)
	}
	for i, s := range list {
		if s == Wildcard {
			if len(list) > 1 {
				return invalid("%s %q covers every %s and must be listed alone", what, Wildcard, what)
			}
			continue
		}
		if !ok(s) {
			return invalid("%s %d (%q) is not %s or %q", what, i, clip(s), form, Wildcard)
		}
	}
	return nil
}

type codeKind int

const (
	categoryCodes codeKind = iota
	purposeCodes
)

// validText checks optional free text: valid UTF-8, at most 512 bytes, no control characters, and
// nothing that looks like a BSN, because free text ends up in logs and notices where a BSN MUST
// NOT appear. The error never repeats the text.
func validText(field, s string) error {
	if len(s) > maxText {
		return invalid("%s of %d bytes exceeds %d", field, len(s), maxText)
	}
	if !utf8.ValidString(s) {
		return invalid("%s is not valid UTF-8", field)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return invalid("%s contains a control character", field)
		}
	}
	if crypto.ContainsBSN(s) {
		return invalid("%s contains what looks like a BSN; leave it out", field)
	}
	return nil
}

// clip shortens a refused value for an error message, and hides it entirely when it might be a
// BSN. Only enum-like values are echoed, never free text.
func clip(s string) string {
	if crypto.ContainsBSN(s) {
		return "(hidden)"
	}
	const n = 32
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// validRole reports whether r is an UZI role code: two digits, a dot, three digits.
func validRole(r string) bool {
	if len(r) != 6 || r[2] != '.' {
		return false
	}
	for i, c := range []byte(r) {
		if i != 2 && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// validPurpose reports whether x is a PurposeOfUse code: 2 to 16 of A-Z, 0-9 and _, and not
// what looks like a BSN.
func validPurpose(x string) bool {
	if len(x) < 2 || len(x) > 16 || crypto.ContainsBSN(x) {
		return false
	}
	for i := 0; i < len(x); i++ {
		if c := x[i]; !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
