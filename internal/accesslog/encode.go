package accesslog

import (
	"bytes"
	"encoding/base64"
	"strconv"

	"github.com/schakel-health/schakel/internal/accesslog/verify"
)

// An entry's bytes are exactly what verify.Entry.Marshal produces (docs/ACCESSLOG.md). Encoding
// with encoding/json is the most expensive step of an append, and the committer works through its
// group one entry at a time while the disk waits, because each entry's prev is the hash of the
// entry before. So prepare encodes each entry once, in the appender's own goroutine, with the
// fields the log assigns set to fixed placeholders, and the committer splices the real index,
// prev, time and patientSeq into that encoding. The members the log assigns come first (v,
// origin, index, prev, time) or right after patient (patientSeq), and their values need no JSON
// escaping (digits, base64, the time layout), so the splice is a concatenation.
//
// New checks the splice against Marshal on sample entries that exercise every member and JSON's
// escaping; should they ever differ (the Entry type changed), the log encodes with Marshal in the
// committer instead, and logs a warning.

// template is an entry encoded by prepare, cut where the committer splices.
type template struct {
	before []byte // the members after time, up to and including patient (all of them without patient)
	after  []byte // the members after patient
}

// splicer holds a log's fixed encoding parts.
type splicer struct {
	ok          bool   // the splice matched Marshal at New
	head        []byte // `{"v":1,"origin":<origin>,"index":`
	placeholder []byte // head + `0,"prev":"","time":"<placeholderTime>"`, as prepare's encoding starts
}

func newSplicer(origin string) splicer {
	e := verify.Entry{V: verify.Version, Origin: origin, Time: placeholderTime}
	b, err := e.Marshal()
	if err != nil {
		return splicer{}
	}
	tail := []byte(`0,"prev":"","time":"` + placeholderTime + `"`)
	i := bytes.Index(b, tail)
	if i < 0 {
		return splicer{}
	}
	s := splicer{head: b[:i:i], placeholder: b[: i+len(tail) : i+len(tail)]}
	s.ok = s.matches(origin)
	return s
}

// cut splits prepare's encoding b of an entry about patient into a template; ok is false when b
// does not have the expected shape.
func (s *splicer) cut(b []byte, patient string) (template, bool) {
	if len(s.placeholder) == 0 || !bytes.HasPrefix(b, s.placeholder) {
		return template{}, false
	}
	rest := b[len(s.placeholder):]
	if patient == "" {
		return template{before: rest}, true
	}
	// Inside a JSON string every '"' is escaped, so this sequence occurs only as the member.
	marker := `,"patient":"` + patient + `"`
	i := bytes.Index(rest, []byte(marker))
	if i < 0 {
		return template{}, false
	}
	i += len(marker)
	return template{before: rest[:i:i], after: rest[i:]}, true
}

// splice appends the entry's bytes to dst. prev is the previous entry's hash, ignored at index 0.
func (s *splicer) splice(dst []byte, t *template, index int64, prev *[32]byte, time string, patientSeq uint64) []byte {
	dst = append(dst, s.head...)
	dst = strconv.AppendInt(dst, index, 10)
	dst = append(dst, `,"prev":"`...)
	if index > 0 {
		dst = base64.StdEncoding.AppendEncode(dst, prev[:])
	}
	dst = append(dst, `","time":"`...)
	dst = append(dst, time...)
	dst = append(dst, '"')
	dst = append(dst, t.before...)
	if patientSeq > 0 {
		dst = append(dst, `,"patientSeq":`...)
		dst = strconv.AppendUint(dst, patientSeq, 10)
	}
	return append(dst, t.after...)
}

// spliceSamples are entries that exercise every member, nested objects and JSON's escaping.
func spliceSamples() []verify.Entry {
	full := verify.Entry{
		Event: verify.EventAccessDecision, Action: "token-request", Outcome: verify.OutcomeRefused,
		Reason:     `no "consent" <b>&amp;</b> \ é ` + "\u2028\u2029\t\x01",
		Requester:  &verify.Requester{DID: "did:schakel:x<y>", URA: "12345678"},
		Employee:   &verify.Employee{UZI: "900012345", Role: "01.015"},
		OnBehalfOf: "a&b", PeerID: "12D3KooW", Purpose: "TREAT",
		Patient:      "v12.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		DataCategory: "medication", Query: `Patient?identifier="x"`,
		Basis:   &verify.Basis{ConsentIDs: []string{"c1", `c"2`}, ReferralGrant: "g", BreakTheGlass: true},
		TokenID: "tok",
	}
	noPatient := full
	noPatient.Patient = ""
	lastPatient := verify.Entry{Event: verify.EventLogRead, Action: "search", Outcome: verify.OutcomeGranted,
		Patient: "v1.AAAAAAAAAAAAAAAAAAAAAA"}
	minimal := verify.Entry{Event: verify.EventDataAccess, Action: "read", Outcome: verify.OutcomeGranted}
	return []verify.Entry{full, noPatient, lastPatient, minimal}
}

// matches reports whether splicing reproduces Marshal on the samples.
func (s *splicer) matches(origin string) bool {
	var last [32]byte
	for i := range last {
		last[i] = byte(i * 7)
	}
	for _, e := range spliceSamples() {
		p := e
		p.V, p.Origin, p.Time = verify.Version, origin, placeholderTime
		b, err := p.Marshal()
		if err != nil {
			return false
		}
		t, ok := s.cut(b, e.Patient)
		if !ok {
			return false
		}
		for _, index := range []int64{0, 1, 12345678901} {
			want := e
			want.V, want.Origin, want.Index, want.Time = verify.Version, origin, uint64(index), "2026-11-23T10:00:00.123456789Z"
			if index > 0 {
				want.Prev = base64.StdEncoding.EncodeToString(last[:])
			}
			if e.Patient != "" {
				want.PatientSeq = uint64(index + 1)
			}
			w, err := want.Marshal()
			if err != nil {
				return false
			}
			if got := s.splice(nil, &t, index, &last, want.Time, want.PatientSeq); !bytes.Equal(got, w) {
				return false
			}
		}
	}
	return true
}
