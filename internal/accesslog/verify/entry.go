package verify

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Version is the entry format version this package reads and writes.
const Version = 1

// TimeLayout is the layout of an entry's time, for time.Time.Format and time.Parse: RFC 3339 in
// UTC with exactly nine fractional digits, so that every instant has one spelling and times
// sort as strings.
const TimeLayout = "2006-01-02T15:04:05.000000000Z"

// Limits on an entry (docs/ACCESSLOG.md).
const (
	MaxEntrySize  = 8 << 10
	MaxStringSize = 1 << 10
)

// Event types.
const (
	EventAccessDecision = "access-decision"
	EventDataAccess     = "data-access"
	EventConsentChange  = "consent-change"
	EventLogRead        = "log-read"
)

// Outcomes.
const (
	OutcomeGranted = "granted"
	OutcomeRefused = "refused"
)

// Errors of ParseEntry. Every error wraps ErrEntry; the others say more.
var (
	// ErrEntry marks an entry that is not a canonical version-1 entry.
	ErrEntry = errors.New("invalid log entry")
	// ErrNotCanonical marks an entry whose bytes are not what encoding/json writes for it:
	// white space, member order, unknown or repeated members, escapes, number forms.
	ErrNotCanonical = errors.New("not canonical")
	// ErrTooLarge marks an entry longer than MaxEntrySize or a string longer than MaxStringSize.
	ErrTooLarge = errors.New("too large")
	// ErrVersion marks an entry of a format version other than Version.
	ErrVersion = errors.New("unsupported version")
)

// Entry is one access-log entry (NEN 7513 / FHIR AuditEvent fields). Its canonical encoding is
// exactly what encoding/json produces for this struct; the member order is the field order. Fields
// MUST NOT be reordered or renamed: that would change the bytes of every entry, which are leaves of
// the log's Merkle tree.
type Entry struct {
	V            int        `json:"v"`
	Origin       string     `json:"origin"`
	Index        uint64     `json:"index"`
	Prev         string     `json:"prev"`
	Time         string     `json:"time"`
	Event        string     `json:"event"`
	Action       string     `json:"action"`
	Outcome      string     `json:"outcome"`
	Reason       string     `json:"reason,omitempty"`
	Requester    *Requester `json:"requester,omitempty"`
	Employee     *Employee  `json:"employee,omitempty"`
	OnBehalfOf   string     `json:"onBehalfOf,omitempty"`
	PeerID       string     `json:"peerId,omitempty"`
	Purpose      string     `json:"purpose,omitempty"`
	Patient      string     `json:"patient,omitempty"`
	PatientSeq   uint64     `json:"patientSeq,omitempty"`
	DataCategory string     `json:"dataCategory,omitempty"`
	Query        string     `json:"query,omitempty"`
	Basis        *Basis     `json:"basis,omitempty"`
	TokenID      string     `json:"tokenId,omitempty"`
}

// Requester identifies the requesting organisation.
type Requester struct {
	DID string `json:"did"`
	URA string `json:"ura,omitempty"`
}

// Employee identifies the professional: UZI number and role code (e.g. 01.015 huisarts).
type Employee struct {
	UZI  string `json:"uzi"`
	Role string `json:"role"`
}

// Basis is the legal basis of a decision or access.
type Basis struct {
	ConsentIDs    []string `json:"consentIds,omitempty"`
	ReferralGrant string   `json:"referralGrant,omitempty"`
	BreakTheGlass bool     `json:"breakTheGlass,omitempty"`
}

// Marshal returns the canonical encoding of e.
func (e *Entry) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	if err := enc.Encode(e); err != nil {
		return nil, err
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if len(b) > MaxEntrySize {
		return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrEntry, len(b), MaxEntrySize)
	}
	return b, nil
}

// ParseEntry decodes one entry strictly (docs/ACCESSLOG.md, "Entry"): line MUST be exactly the
// canonical encoding of a version-1 entry, without the newline that ends it in an export, at
// most MaxEntrySize bytes with strings of at most MaxStringSize bytes; unknown members are
// refused; event and outcome MUST be known values; patient and patientSeq appear together; time
// is in TimeLayout; prev is empty exactly for index 0 and otherwise a base64 SHA-256 hash.
// Errors wrap ErrEntry and, where it applies, ErrNotCanonical, ErrTooLarge or ErrVersion.
// ParseEntry checks one entry on its own; its place in the log is VerifyExport's business.
func ParseEntry(line []byte) (*Entry, error) {
	var f fields
	if err := scanEntry(line, &f); err != nil {
		return nil, err
	}
	e := &Entry{
		V:            int(f.v),
		Origin:       unquote(f.origin),
		Index:        f.index,
		Prev:         unquote(f.prev),
		Time:         unquote(f.time),
		Event:        unquote(f.event),
		Action:       unquote(f.action),
		Outcome:      unquote(f.outcome),
		Reason:       unquote(f.reason),
		OnBehalfOf:   unquote(f.onBehalfOf),
		PeerID:       unquote(f.peerID),
		Purpose:      unquote(f.purpose),
		Patient:      unquote(f.patient),
		PatientSeq:   f.patientSeq,
		DataCategory: unquote(f.category),
		Query:        unquote(f.query),
		TokenID:      unquote(f.tokenID),
	}
	if f.requester {
		e.Requester = &Requester{DID: unquote(f.did), URA: unquote(f.ura)}
	}
	if f.employee {
		e.Employee = &Employee{UZI: unquote(f.uzi), Role: unquote(f.role)}
	}
	if f.basis {
		e.Basis = &Basis{ReferralGrant: unquote(f.referral), BreakTheGlass: f.glass}
		for _, id := range f.consentIDs {
			e.Basis.ConsentIDs = append(e.Basis.ConsentIDs, unquote(id))
		}
	}
	// The scanner accepts only canonical bytes; re-encoding states the contract itself, so
	// that ParseEntry never returns an entry whose encoding differs from line.
	b, err := e.Marshal()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEntry, err)
	}
	if !bytes.Equal(b, line) {
		return nil, fmt.Errorf("%w: %w: re-encoding differs", ErrEntry, ErrNotCanonical)
	}
	return e, nil
}

// unquote decodes the raw content of a string the scanner accepted: only the escapes
// canonicalEscape allows can occur.
func unquote(raw []byte) string {
	i := bytes.IndexByte(raw, '\\')
	if i < 0 {
		return string(raw)
	}
	out := make([]byte, 0, len(raw))
	for i >= 0 {
		out = append(out, raw[:i]...)
		switch c := raw[i+1]; c {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			var r rune
			for _, h := range raw[i+2 : i+6] {
				r = r<<4 | rune(lowerHex(h))
			}
			out = utf8.AppendRune(out, r)
			raw = raw[i+6:]
			i = bytes.IndexByte(raw, '\\')
			continue
		default: // '"' and '\\'
			out = append(out, c)
		}
		raw = raw[i+2:]
		i = bytes.IndexByte(raw, '\\')
	}
	return string(append(out, raw...))
}
