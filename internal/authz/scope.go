package authz

import (
	"fmt"
	"strings"
)

// Scope prefixes.
const (
	scopePurpose  = "purpose:"
	scopePatient  = "patient:"
	scopeResource = "resource:"
)

// Scope is an access token's scope in parsed form. Its string form (RFC 6749 §3.3, RFC 9068
// §2.2.3) is, separated by single spaces and in this order:
//
//	<data category> purpose:<PurposeOfUse> patient:<pseudonym> [resource:<reference> ...]
//
// for example "medication purpose:TREAT patient:v1.Xk…". resource: entries list what a referral
// grant covers. It never contains the BSN: the patient is the custodian's pseudonym.
type Scope struct {
	DataCategory string
	Purpose      string
	Patient      string
	Resources    []string
}

// String returns the scope's string form. It does not validate; ParseScope does.
func (s Scope) String() string {
	var b strings.Builder
	b.WriteString(s.DataCategory)
	b.WriteString(" " + scopePurpose + s.Purpose)
	b.WriteString(" " + scopePatient + s.Patient)
	for _, r := range s.Resources {
		b.WriteString(" " + scopeResource + r)
	}
	return b.String()
}

// ParseScope parses the string form of a Scope strictly: tokens of RFC 6749 §3.3 characters
// separated by single spaces, in the order String writes them, each part non-empty, the data
// category without ':', no unknown entries. ParseScope(s).String() == s for every s it accepts.
// Errors wrap ErrMalformed.
func ParseScope(scope string) (Scope, error) {
	var s Scope
	if len(scope) > 4*maxClaimLen {
		return s, fmt.Errorf("%w: scope longer than %d bytes", ErrMalformed, 4*maxClaimLen)
	}
	toks := strings.Split(scope, " ")
	if len(toks) < 3 {
		return s, fmt.Errorf("%w: scope needs a data category, purpose: and patient:", ErrMalformed)
	}
	for i, t := range toks {
		if !validScopeToken(t) {
			return s, fmt.Errorf("%w: scope token %d is empty or has characters RFC 6749 §3.3 does not allow", ErrMalformed, i+1)
		}
	}
	var ok bool
	s.DataCategory = toks[0]
	if strings.Contains(s.DataCategory, ":") {
		return s, fmt.Errorf("%w: scope must start with the data category, not %q", ErrMalformed, clip(s.DataCategory))
	}
	if s.Purpose, ok = strings.CutPrefix(toks[1], scopePurpose); !ok || s.Purpose == "" {
		return s, fmt.Errorf("%w: second scope token must be purpose:<code>", ErrMalformed)
	}
	if s.Patient, ok = strings.CutPrefix(toks[2], scopePatient); !ok || s.Patient == "" {
		return s, fmt.Errorf("%w: third scope token must be patient:<pseudonym>", ErrMalformed)
	}
	for _, t := range toks[3:] {
		r, ok := strings.CutPrefix(t, scopeResource)
		if !ok || r == "" {
			return s, fmt.Errorf("%w: unexpected scope token %q", ErrMalformed, clip(t))
		}
		s.Resources = append(s.Resources, r)
	}
	return s, nil
}

// validScopeToken reports whether t is a non-empty scope-token: NQCHAR = %x21 / %x23-5B /
// %x5D-7E (RFC 6749 §3.3, Appendix A.4).
func validScopeToken(t string) bool {
	if t == "" {
		return false
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
