package accesslog

import (
	"encoding/base64"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/schakel-health/schakel/internal/accesslog/verify"
)

// placeholderTime stands for the time in prepare's encoding; every time the log writes has its
// length.
var placeholderTime = strings.Repeat("0", len(timeLayout))

// maxGrowthIndexPrev and maxGrowthSeq are how much the log's own fields can lengthen prepare's
// encoding: an index of up to 19 digits in place of "0" and a prev of 44 base64 characters in
// place of "", and, for an entry about a patient, a patientSeq member of up to 20 digits.
const (
	maxGrowthIndexPrev = 18 + 44
	maxGrowthSeq       = len(`,"patientSeq":`) + 20
)

// prepare checks the caller's entry e and returns a request for the committer, with e encoded
// with placeholders for the fields the log assigns (or, when the log cannot splice, a deep copy
// of e to encode later). The log assigns V, Origin, Index, Prev, PatientSeq and, when empty, Time:
// e MUST leave Index, Prev and PatientSeq zero and may set V and Origin only to the values the
// log assigns.
func (l *Log) prepare(e *verify.Entry) (*request, error) {
	if e == nil {
		return nil, fmt.Errorf("%w: nil entry", ErrInvalidEntry)
	}
	r := &request{e: *e, done: make(chan struct{})}
	if err := l.check(&r.e); err != nil {
		return nil, err
	}
	if r.e.Time != "" {
		t, err := parseTime(r.e.Time)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidEntry, err)
		}
		r.t = t
	}
	p := r.e
	p.V, p.Origin, p.Index, p.Prev, p.Time, p.PatientSeq = verify.Version, l.origin, 0, "", placeholderTime, 0
	b, err := p.Marshal()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidEntry, err)
	}
	// The committer cannot refuse an entry for its size: bound it here with the longest values
	// the log may assign.
	size := len(b) + maxGrowthIndexPrev
	if r.e.Patient != "" {
		size += maxGrowthSeq
	}
	if size > verify.MaxEntrySize {
		return nil, fmt.Errorf("%w: entry of up to %d bytes exceeds %d", ErrInvalidEntry, size, verify.MaxEntrySize)
	}
	r.cost = l.requestCost(size, len(r.e.Patient))
	if l.sp.ok {
		r.tmpl, r.spliced = l.sp.cut(b, r.e.Patient)
	}
	if !r.spliced {
		// The committer encodes r.e itself: it must not share the caller's nested values.
		if e.Requester != nil {
			v := *e.Requester
			r.e.Requester = &v
		}
		if e.Employee != nil {
			v := *e.Employee
			r.e.Employee = &v
		}
		if e.Basis != nil {
			v := *e.Basis
			v.ConsentIDs = append([]string(nil), e.Basis.ConsentIDs...)
			r.e.Basis = &v
		}
	}
	return r, nil
}

// check validates the content fields of e.
func (l *Log) check(e *verify.Entry) error {
	switch {
	case e.V != 0 && e.V != verify.Version:
		return fmt.Errorf("%w: v %d, the log writes version %d", ErrInvalidEntry, e.V, verify.Version)
	case e.Origin != "" && e.Origin != l.origin:
		return fmt.Errorf("%w: origin %q is not this log's %q", ErrInvalidEntry, truncate(e.Origin), l.origin)
	case e.Index != 0:
		return fmt.Errorf("%w: index is assigned by the log, got %d", ErrInvalidEntry, e.Index)
	case e.Prev != "":
		return fmt.Errorf("%w: prev is assigned by the log", ErrInvalidEntry)
	case e.PatientSeq != 0:
		return fmt.Errorf("%w: patientSeq is assigned by the log, got %d", ErrInvalidEntry, e.PatientSeq)
	}
	switch e.Event {
	case verify.EventAccessDecision, verify.EventDataAccess, verify.EventConsentChange, verify.EventLogRead:
	default:
		return fmt.Errorf("%w: event %q is not one of %s, %s, %s, %s", ErrInvalidEntry, truncate(e.Event),
			verify.EventAccessDecision, verify.EventDataAccess, verify.EventConsentChange, verify.EventLogRead)
	}
	switch e.Outcome {
	case verify.OutcomeGranted, verify.OutcomeRefused:
	default:
		return fmt.Errorf("%w: outcome %q is not %s or %s", ErrInvalidEntry, truncate(e.Outcome),
			verify.OutcomeGranted, verify.OutcomeRefused)
	}
	if e.Action == "" {
		return fmt.Errorf("%w: action is empty", ErrInvalidEntry)
	}
	if e.Requester != nil && e.Requester.DID == "" {
		return fmt.Errorf("%w: requester without did", ErrInvalidEntry)
	}
	if e.Employee != nil && (e.Employee.UZI == "" || e.Employee.Role == "") {
		return fmt.Errorf("%w: employee without uzi or role", ErrInvalidEntry)
	}
	if e.Patient != "" {
		if err := checkPseudonym(e.Patient); err != nil {
			return fmt.Errorf("%w: patient: %v", ErrInvalidEntry, err)
		}
	}
	type field struct{ name, value string }
	var buf [17]field
	fields := append(buf[:0],
		field{"time", e.Time}, field{"event", e.Event}, field{"action", e.Action}, field{"outcome", e.Outcome},
		field{"reason", e.Reason}, field{"onBehalfOf", e.OnBehalfOf}, field{"peerId", e.PeerID},
		field{"purpose", e.Purpose}, field{"patient", e.Patient}, field{"dataCategory", e.DataCategory},
		field{"query", e.Query}, field{"tokenId", e.TokenID})
	if e.Requester != nil {
		fields = append(fields, field{"requester.did", e.Requester.DID}, field{"requester.ura", e.Requester.URA})
	}
	if e.Employee != nil {
		fields = append(fields, field{"employee.uzi", e.Employee.UZI}, field{"employee.role", e.Employee.Role})
	}
	if e.Basis != nil {
		// An empty basis would encode as "basis":{}, which no canonical entry carries.
		if len(e.Basis.ConsentIDs) == 0 && e.Basis.ReferralGrant == "" && !e.Basis.BreakTheGlass {
			return fmt.Errorf("%w: basis is empty (leave it out)", ErrInvalidEntry)
		}
		fields = append(fields, field{"basis.referralGrant", e.Basis.ReferralGrant})
		for i, id := range e.Basis.ConsentIDs {
			if id == "" {
				return fmt.Errorf("%w: basis.consentIds[%d] is empty", ErrInvalidEntry, i)
			}
			if err := checkString(fmt.Sprintf("basis.consentIds[%d]", i), id); err != nil {
				return err
			}
		}
	}
	for _, f := range fields {
		if err := checkString(f.name, f.value); err != nil {
			return err
		}
	}
	return nil
}

// checkString refuses strings over verify.MaxStringSize and strings that are not UTF-8, which
// encoding/json would silently alter.
func checkString(name, s string) error {
	if len(s) > verify.MaxStringSize {
		return fmt.Errorf("%w: %s of %d bytes exceeds %d", ErrInvalidEntry, name, len(s), verify.MaxStringSize)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not UTF-8", ErrInvalidEntry, name)
	}
	return nil
}

// checkPseudonym requires the shape of crypto.Pseudonymizer's output, "v<version>.<base64url>",
// so that a BSN or other plain identifier cannot be logged as the patient by mistake.
func checkPseudonym(p string) error {
	ver, mac, ok := strings.Cut(p, ".")
	if !ok || len(ver) < 2 || len(ver) > 11 || ver[0] != 'v' {
		return fmt.Errorf("not a keyed pseudonym v<version>.<base64url>")
	}
	for _, c := range ver[1:] {
		if c < '0' || c > '9' {
			return fmt.Errorf("not a keyed pseudonym v<version>.<base64url>")
		}
	}
	var buf [96]byte
	if len(mac) > base64.RawURLEncoding.EncodedLen(len(buf)) {
		return fmt.Errorf("not a keyed pseudonym: MAC of %d characters", len(mac))
	}
	// encoding/base64 skips CR and LF even in Strict mode: refuse them (and every other byte
	// outside the alphabet) so that a pseudonym has exactly one spelling.
	for i := 0; i < len(mac); i++ {
		if c := mac[i]; !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("not a keyed pseudonym: byte 0x%02x in the MAC is not base64url", c)
		}
	}
	if n, err := base64.RawURLEncoding.Strict().Decode(buf[:], []byte(mac)); err != nil || n < 16 {
		return fmt.Errorf("not a keyed pseudonym v<version>.<base64url>")
	}
	return nil
}

// truncate shortens s for an error message.
func truncate(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
