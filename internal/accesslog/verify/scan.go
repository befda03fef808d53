package verify

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math/bits"
	"time"
	"unicode/utf8"
)

// fields holds one scanned entry as slices of its line: each string member is its raw, still
// escaped content between the quotes. Because the line was checked to be canonical, equal raw
// slices mean equal strings, so the verifier compares and keys maps on them without decoding.
type fields struct {
	v          int64
	origin     []byte
	index      uint64
	prev       []byte
	time       []byte
	event      []byte
	action     []byte
	outcome    []byte
	reason     []byte
	requester  bool
	did, ura   []byte
	employee   bool
	uzi, role  []byte
	onBehalfOf []byte
	peerID     []byte
	purpose    []byte
	patient    []byte
	patientSeq uint64
	category   []byte
	query      []byte
	basis      bool
	consentIDs [][]byte
	referral   []byte
	glass      bool
	tokenID    []byte

	// Derived by scanEntry's semantic checks.
	prevHash [32]byte // decoded prev, when index > 0
	sec      int64    // time as Unix seconds
	nsec     int32    // and nanoseconds
}

// scanner reads one entry in its canonical layout. Every deviation from the bytes encoding/json
// would produce is an error, so scanning accepts exactly the lines ParseEntry accepts without
// building an Entry.
type scanner struct {
	b   []byte
	p   int
	err error
}

// fail records the first error, naming the byte offset where the layout broke.
func (s *scanner) fail(format string, args ...any) {
	if s.err == nil {
		s.err = fmt.Errorf("%w: %w: byte %d: %s", ErrEntry, ErrNotCanonical, s.p, fmt.Sprintf(format, args...))
	}
}

// lit consumes lit, which MUST be next.
func (s *scanner) lit(lit string) {
	if s.err != nil {
		return
	}
	if len(s.b)-s.p < len(lit) || string(s.b[s.p:s.p+len(lit)]) != lit {
		s.fail("want %q%s", lit, s.found())
		return
	}
	s.p += len(lit)
}

// found describes what is at the current position, for error messages.
func (s *scanner) found() string {
	if s.p >= len(s.b) {
		return ", found end of entry"
	}
	if s.b[s.p] == ',' && s.p+1 < len(s.b) && s.b[s.p+1] == '"' {
		if end := bytes.IndexByte(s.b[s.p+2:], '"'); end >= 0 && end <= 64 {
			return fmt.Sprintf(", found member %q (unknown, repeated or out of order)", s.b[s.p+2:s.p+2+end])
		}
	}
	return fmt.Sprintf(", found %q", s.b[s.p:min(s.p+8, len(s.b))])
}

// opt consumes lit and reports true when it is next; it is how omitempty members are found.
func (s *scanner) opt(lit string) bool {
	if s.err != nil || len(s.b)-s.p < len(lit) || string(s.b[s.p:s.p+len(lit)]) != lit {
		return false
	}
	s.p += len(lit)
	return true
}

// strSafe marks the ASCII bytes encoding/json writes unescaped (with HTML escaping on): every
// printable byte except '"', '\\', '<', '>' and '&'.
var strSafe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = true
	}
	for _, c := range `"\<>&` {
		t[c] = false
	}
	return t
}()

// str scans a JSON string in encoding/json's canonical form and returns its raw content. The
// accepted escapes are exactly those encoding/json writes: \" \\ \b \f \n \r \t, \u00XX in lower
// case for the other control characters, \u003c \u003e \u0026 for < > &, and \u2028 \u2029; all
// other characters appear as valid UTF-8. The decoded length is limited to MaxStringSize.
func (s *scanner) str(member string) []byte {
	if s.err != nil {
		return nil
	}
	if s.p >= len(s.b) || s.b[s.p] != '"' {
		s.fail("%s: want a string%s", member, s.found())
		return nil
	}
	s.p++
	start := s.p
	n := 0 // decoded length
	b := s.b
	for p := s.p; ; {
		if p+8 <= len(b) {
			// Skip plain bytes eight at a time, up to the first byte that needs a look.
			bad := notPlain(binary.LittleEndian.Uint64(b[p:]))
			k := bits.TrailingZeros64(bad) >> 3
			p += k
			n += k
			if bad == 0 {
				continue
			}
		}
		if p >= len(b) {
			s.p = p
			s.fail("%s: unterminated string", member)
			return nil
		}
		c := b[p]
		if c < utf8.RuneSelf {
			if strSafe[c] {
				p++
				n++
				continue
			}
			switch c {
			case '"':
				s.p = p + 1
				if n > MaxStringSize {
					s.p = start
					s.err = fmt.Errorf("%w: %w: %s: %d bytes exceeds %d", ErrEntry, ErrTooLarge, member, n, MaxStringSize)
					return nil
				}
				return b[start:p]
			case '\\':
				size, ok := canonicalEscape(b[p:])
				if !ok {
					s.p = p
					s.fail("%s: escape %q is not how encoding/json writes it", member, b[p:min(p+6, len(b))])
					return nil
				}
				p += size
				if size == 6 && b[p-4] == '2' {
					n += 3 // U+2028 and U+2029 are three bytes in UTF-8
				} else {
					n++
				}
				continue
			default:
				s.p = p
				s.fail("%s: byte %#02x must be escaped", member, c)
				return nil
			}
		}
		r, size := utf8.DecodeRune(b[p:])
		if r == utf8.RuneError && size == 1 {
			s.p = p
			s.fail("%s: invalid UTF-8", member)
			return nil
		}
		if r == '\u2028' || r == '\u2029' {
			s.p = p
			s.fail("%s: U+%04X must be escaped", member, r)
			return nil
		}
		p += size
		n += size
	}
}

// notPlain returns, for the eight bytes of w in little-endian order, a mask whose lowest set
// bit is the high bit of the first byte that is not strSafe: below 0x20 or above 0x7f, or one
// of '"', '\\', '<', '>' and '&'. It is zero when all eight are plain. (Bit Twiddling Hacks,
// "Determine if a word has a byte less than n" and "has a zero byte": borrows can mark bytes
// after a marked one, never before it.)
func notPlain(w uint64) uint64 {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	q := w ^ '"'*ones
	bs := w ^ '\\'*ones
	lt := w ^ '<'*ones
	gt := w ^ '>'*ones
	amp := w ^ '&'*ones
	return ((w-0x20*ones)&^w | w | (q-ones)&^q | (bs-ones)&^bs | (lt-ones)&^lt | (gt-ones)&^gt | (amp-ones)&^amp) & high
}

// canonicalEscape reports the length of the escape sequence at the start of b (which starts
// with a backslash) and whether encoding/json would write it.
func canonicalEscape(b []byte) (int, bool) {
	if len(b) < 2 {
		return 0, false
	}
	switch b[1] {
	case '"', '\\', 'b', 'f', 'n', 'r', 't':
		return 2, true
	case 'u':
		if len(b) < 6 {
			return 0, false
		}
		switch string(b[2:6]) {
		case "003c", "003e", "0026", "2028", "2029":
			return 6, true
		}
		if b[2] != '0' || b[3] != '0' {
			return 0, false
		}
		hi, lo := lowerHex(b[4]), lowerHex(b[5])
		if hi < 0 || hi > 1 || lo < 0 {
			return 0, false
		}
		switch c := hi<<4 | lo; c {
		case '\b', '\f', '\n', '\r', '\t':
			return 0, false // written as the short escape
		}
		return 6, true
	}
	return 0, false
}

func lowerHex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	}
	return -1
}

// nonEmpty scans an omitempty string member, which encoding/json leaves out when it is empty.
func (s *scanner) nonEmpty(member string) []byte {
	p := s.p
	v := s.str(member)
	if s.err == nil && len(v) == 0 {
		s.p = p
		s.fail("%s: empty, so it must be left out", member)
	}
	return v
}

// uint scans a decimal number without sign, leading zeros, fraction or exponent.
func (s *scanner) uint(member string) uint64 {
	if s.err != nil {
		return 0
	}
	b, p := s.b, s.p
	if p >= len(b) || b[p] < '0' || b[p] > '9' {
		s.fail("%s: want a non-negative integer%s", member, s.found())
		return 0
	}
	if b[p] == '0' {
		s.p++
		if s.p < len(b) && '0' <= b[s.p] && b[s.p] <= '9' {
			s.fail("%s: leading zero", member)
		}
		return 0
	}
	var v uint64
	for ; p < len(b) && '0' <= b[p] && b[p] <= '9'; p++ {
		d := uint64(b[p] - '0')
		if v > (1<<64-1-d)/10 {
			s.fail("%s: out of range", member)
			return 0
		}
		v = v*10 + d
	}
	s.p = p
	return v
}

// int scans a decimal integer as encoding/json writes an int: an optional minus, no leading zeros.
func (s *scanner) int(member string) int64 {
	if s.err != nil {
		return 0
	}
	neg := s.opt("-")
	at := s.p
	u := s.uint(member)
	switch {
	case s.err != nil:
		return 0
	case neg && u == 0:
		s.p = at
		s.fail("%s: -0", member)
		return 0
	case !neg && u > 1<<63-1, neg && u > 1<<63:
		s.p = at
		s.fail("%s: out of range", member)
		return 0
	case neg:
		return -int64(u-1) - 1
	}
	return int64(u)
}

// Member prefixes in the canonical order (the order of Entry's fields).
const (
	mOrigin       = `,"origin":`
	mIndex        = `,"index":`
	mPrev         = `,"prev":`
	mTime         = `,"time":`
	mEvent        = `,"event":`
	mAction       = `,"action":`
	mOutcome      = `,"outcome":`
	mReason       = `,"reason":`
	mRequester    = `,"requester":{"did":`
	mURA          = `,"ura":`
	mEmployee     = `,"employee":{"uzi":`
	mRole         = `,"role":`
	mOnBehalfOf   = `,"onBehalfOf":`
	mPeerID       = `,"peerId":`
	mPurpose      = `,"purpose":`
	mPatient      = `,"patient":`
	mPatientSeq   = `,"patientSeq":`
	mDataCategory = `,"dataCategory":`
	mQuery        = `,"query":`
	mBasis        = `,"basis":{`
	mTokenID      = `,"tokenId":`
)

// scanEntry checks that line is a canonical version-1 entry and fills f. It accepts exactly the
// lines ParseEntry accepts; the verifier uses it because it builds no strings.
func scanEntry(line []byte, f *fields) error {
	if len(line) > MaxEntrySize {
		return fmt.Errorf("%w: %w: %d bytes exceeds %d", ErrEntry, ErrTooLarge, len(line), MaxEntrySize)
	}
	consentIDs := f.consentIDs[:0]
	*f = fields{consentIDs: consentIDs}
	s := scanner{b: line}
	s.lit(`{"v":`)
	f.v = s.int("v")
	s.lit(mOrigin)
	f.origin = s.str("origin")
	s.lit(mIndex)
	f.index = s.uint("index")
	s.lit(mPrev)
	f.prev = s.str("prev")
	s.lit(mTime)
	f.time = s.str("time")
	s.lit(mEvent)
	f.event = s.str("event")
	s.lit(mAction)
	f.action = s.str("action")
	s.lit(mOutcome)
	f.outcome = s.str("outcome")
	if s.opt(mReason) {
		f.reason = s.nonEmpty("reason")
	}
	if s.opt(mRequester) {
		f.requester = true
		f.did = s.str("requester.did")
		if s.opt(mURA) {
			f.ura = s.nonEmpty("requester.ura")
		}
		s.lit("}")
	}
	if s.opt(mEmployee) {
		f.employee = true
		f.uzi = s.str("employee.uzi")
		s.lit(mRole)
		f.role = s.str("employee.role")
		s.lit("}")
	}
	if s.opt(mOnBehalfOf) {
		f.onBehalfOf = s.nonEmpty("onBehalfOf")
	}
	if s.opt(mPeerID) {
		f.peerID = s.nonEmpty("peerId")
	}
	if s.opt(mPurpose) {
		f.purpose = s.nonEmpty("purpose")
	}
	if s.opt(mPatient) {
		f.patient = s.nonEmpty("patient")
	}
	if s.opt(mPatientSeq) {
		at := s.p
		if f.patientSeq = s.uint("patientSeq"); s.err == nil && f.patientSeq == 0 {
			s.p = at
			s.fail("patientSeq: 0, so it must be left out")
		}
	}
	if s.opt(mDataCategory) {
		f.category = s.nonEmpty("dataCategory")
	}
	if s.opt(mQuery) {
		f.query = s.nonEmpty("query")
	}
	if s.opt(mBasis) {
		f.basis = true
		sep := ""
		if s.opt(`"consentIds":[`) {
			for {
				f.consentIDs = append(f.consentIDs, s.str("basis.consentIds"))
				if !s.opt(",") {
					break
				}
			}
			s.lit("]")
			sep = ","
		}
		if s.opt(sep + `"referralGrant":`) {
			f.referral = s.nonEmpty("basis.referralGrant")
			sep = ","
		}
		if s.opt(sep + `"breakTheGlass":true`) {
			f.glass = true
		}
		s.lit("}")
	}
	if s.opt(mTokenID) {
		f.tokenID = s.nonEmpty("tokenId")
	}
	s.lit("}")
	if s.err == nil && s.p != len(line) {
		s.fail("trailing bytes after the entry")
	}
	if s.err != nil {
		return s.err
	}
	return f.check()
}

// check applies the rules of docs/ACCESSLOG.md that go beyond the encoding.
func (f *fields) check() error {
	if f.v != Version {
		return fmt.Errorf("%w: %w: v is %d, want %d", ErrEntry, ErrVersion, f.v, Version)
	}
	if len(f.origin) == 0 {
		return fmt.Errorf("%w: empty origin", ErrEntry)
	}
	switch {
	case f.index == 0 && len(f.prev) != 0:
		return fmt.Errorf("%w: prev of entry 0 must be empty", ErrEntry)
	case f.index != 0 && !decodeHash(f.prev, &f.prevHash):
		return fmt.Errorf("%w: prev %q is not a base64 SHA-256 hash", ErrEntry, f.prev)
	}
	var ok bool
	if f.sec, f.nsec, ok = parseTime(f.time); !ok {
		return fmt.Errorf("%w: time %q is not RFC 3339 in UTC with nine fractional digits (%s)", ErrEntry, f.time, TimeLayout)
	}
	switch string(f.event) {
	case EventAccessDecision, EventDataAccess, EventConsentChange, EventLogRead:
	default:
		return fmt.Errorf("%w: unknown event %q", ErrEntry, f.event)
	}
	switch string(f.outcome) {
	case OutcomeGranted, OutcomeRefused:
	default:
		return fmt.Errorf("%w: unknown outcome %q", ErrEntry, f.outcome)
	}
	if (len(f.patient) == 0) != (f.patientSeq == 0) {
		return fmt.Errorf("%w: patient and patientSeq must appear together", ErrEntry)
	}
	return nil
}

// decodeHash decodes a padded standard base64 SHA-256 hash. Strict decoding of exactly 44
// characters makes the encoding unique, so comparing decoded hashes compares the strings.
func decodeHash(b []byte, h *[32]byte) bool {
	if len(b) != 44 {
		return false
	}
	var buf [33]byte
	n, err := base64.StdEncoding.Strict().Decode(buf[:], b)
	if err != nil || n != 32 {
		return false
	}
	copy(h[:], buf[:32])
	return true
}

// parseTime parses a time in TimeLayout, the exact output of t.UTC().Format(TimeLayout):
// YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ with a valid date and time of day; leap seconds are refused,
// as time.Parse refuses them.
func parseTime(b []byte) (sec int64, nsec int32, ok bool) {
	if len(b) != len(TimeLayout) || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' || b[19] != '.' || b[29] != 'Z' {
		return 0, 0, false
	}
	num := func(i, n int) int {
		v := 0
		for _, c := range b[i : i+n] {
			if c < '0' || c > '9' {
				return -1
			}
			v = v*10 + int(c-'0')
		}
		return v
	}
	year, month, day := num(0, 4), num(5, 2), num(8, 2)
	hour, minute, second, frac := num(11, 2), num(14, 2), num(17, 2), num(20, 9)
	if year < 0 || month < 1 || month > 12 || day < 1 || hour < 0 || hour > 23 || minute < 0 || minute > 59 || second < 0 || second > 59 || frac < 0 {
		return 0, 0, false
	}
	if day > daysIn(time.Month(month), year) {
		return 0, 0, false
	}
	return time.Date(year, time.Month(month), day, hour, minute, second, 0, time.UTC).Unix(), int32(frac), true
}

func daysIn(m time.Month, year int) int {
	if m == time.February {
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	}
	return 30 + int((m+m/8)&1)
}
