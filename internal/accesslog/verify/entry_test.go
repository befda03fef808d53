package verify

import (
	"bytes"
	"errors"
	"math/bits"
	"reflect"
	"strings"
	"testing"
)

const testPrev = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="

// fullEntry has every member, with strings that need each kind of escape.
func fullEntry() *Entry {
	return &Entry{
		V: 1, Origin: testOrigin, Index: 7, Prev: testPrev, Time: "2026-11-23T10:00:00.123456789Z",
		Event: EventAccessDecision, Action: "token-request", Outcome: OutcomeRefused,
		Reason:       "quote \" backslash \\ newline \n tab \t nul \x00 del \x7f <b> & é \u2028 \u2029 \ufffd",
		Requester:    &Requester{DID: "did:schakel:HnhmxRCfgArpegkCz6HY4iKGSXfZjYz6USvLRzPWuA3E", URA: "87654321"},
		Employee:     &Employee{UZI: "900012345", Role: "01.015"},
		OnBehalfOf:   "J. Jansen-de Hoogh",
		PeerID:       "12D3KooWQz4nxJ5V1NfvsgCkF9hRhrSbn7XU4tJ4fQWZ1Ly8vvH1",
		Purpose:      "TREAT",
		Patient:      "v1.3q2-7wABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghi",
		PatientSeq:   12,
		DataCategory: "medication",
		Query:        "MedicationRequest?status=active&_count=50",
		Basis:        &Basis{ConsentIDs: []string{"c-1", ""}, ReferralGrant: "g-9", BreakTheGlass: true},
		TokenID:      "t-42",
	}
}

func minimalEntry() *Entry {
	return &Entry{V: 1, Origin: testOrigin, Time: "2026-11-23T10:00:00.000000000Z", Event: EventLogRead, Action: "", Outcome: OutcomeGranted}
}

func marshal(t testing.TB, e *Entry) string {
	t.Helper()
	b, err := e.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	return string(b)
}

func TestParseEntryValid(t *testing.T) {
	tests := []struct {
		name string
		e    func(e *Entry)
	}{
		{"every member and escape", nil},
		{"time on a whole second", func(e *Entry) { e.Time = "2026-11-23T10:00:00.000000000Z" }},
		{"time with trailing zeros", func(e *Entry) { e.Time = "2026-11-23T10:00:00.500000000Z" }},
		{"earliest time", func(e *Entry) { e.Time = "0000-01-01T00:00:00.000000000Z" }},
		{"latest time", func(e *Entry) { e.Time = "9999-12-31T23:59:59.999999999Z" }},
		{"leap day", func(e *Entry) { e.Time = "2028-02-29T23:59:59.000000001Z" }},
		{"empty basis", func(e *Entry) { e.Basis = &Basis{} }},
		{"break the glass only", func(e *Entry) { e.Basis = &Basis{BreakTheGlass: true} }},
		{"referral grant only", func(e *Entry) { e.Basis = &Basis{ReferralGrant: "g"} }},
		{"empty requester DID", func(e *Entry) { e.Requester = &Requester{} }},
		{"empty employee", func(e *Entry) { e.Employee = &Employee{} }},
		{"no optional members", func(e *Entry) { *e = *minimalEntry(); e.Index, e.Prev = 3, testPrev }},
		{"string of MaxStringSize bytes", func(e *Entry) { e.Query = strings.Repeat("é", MaxStringSize/2) }},
		{"large index", func(e *Entry) { e.Index = 1<<64 - 1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := fullEntry()
			if tc.e != nil {
				tc.e(e)
			}
			line := []byte(marshal(t, e))
			got, err := ParseEntry(line)
			if err != nil {
				t.Fatalf("ParseEntry(%s): %v", line, err)
			}
			if !reflect.DeepEqual(got, e) {
				t.Fatalf("ParseEntry(%s) = %+v, want %+v", line, got, e)
			}
			if _, err := referenceParse(line); err != nil {
				t.Fatalf("referenceParse(%s): %v (the test's entry is wrong)", line, err)
			}
		})
	}
}

func TestParseEntryInvalid(t *testing.T) {
	full := marshal(t, fullEntry())
	min := marshal(t, minimalEntry())
	replace := func(s, old, new string) string {
		if !strings.Contains(s, old) {
			t.Fatalf("test entry lacks %q", old)
		}
		return strings.Replace(s, old, new, 1)
	}
	tests := []struct {
		name string
		line string
		want error
	}{
		{"space after a colon", replace(full, `"v":1`, `"v": 1`), ErrNotCanonical},
		{"space between members", replace(full, `,"origin"`, ` ,"origin"`), ErrNotCanonical},
		{"trailing newline", full + "\n", ErrNotCanonical},
		{"trailing CR", full + "\r", ErrNotCanonical},
		{"pretty printed", replace(full, `{"v"`, "{\n  \"v\""), ErrNotCanonical},
		{"members out of order", replace(min, `"event":"log-read","action":""`, `"action":"","event":"log-read"`), ErrNotCanonical},
		{"unknown member", replace(full, `,"tokenId"`, `,"extra":1,"tokenId"`), ErrNotCanonical},
		{"repeated member", replace(full, `,"tokenId":"t-42"`, `,"tokenId":"t-42","tokenId":"t-43"`), ErrNotCanonical},
		{"member name in other case", replace(full, `"tokenId"`, `"tokenID"`), ErrNotCanonical},
		{"empty omitempty string", replace(min, `}`, `,"reason":""}`), ErrNotCanonical},
		{"zero patientSeq", replace(full, `"patientSeq":12`, `"patientSeq":0`), ErrNotCanonical},
		{"null member", replace(min, `}`, `,"requester":null}`), ErrNotCanonical},
		{"empty consentIds", replace(full, `"consentIds":["c-1",""],`, `"consentIds":[],`), ErrNotCanonical},
		{"breakTheGlass false", replace(full, `"breakTheGlass":true`, `"breakTheGlass":false`), ErrNotCanonical},
		{"leading zero", replace(full, `"index":7`, `"index":07`), ErrNotCanonical},
		{"fraction in a number", replace(full, `"v":1`, `"v":1.0`), ErrNotCanonical},
		{"exponent", replace(full, `"index":7`, `"index":7e0`), ErrNotCanonical},
		{"negative index", replace(full, `"index":7`, `"index":-7`), ErrNotCanonical},
		{"minus zero version", replace(full, `"v":1`, `"v":-0`), ErrNotCanonical},
		{"index beyond uint64", replace(full, `"index":7`, `"index":18446744073709551616`), ErrNotCanonical},
		{"string as number", replace(full, `"index":7`, `"index":"7"`), ErrNotCanonical},
		{"escaped slash", replace(full, `"t-42"`, `"t\/42"`), ErrNotCanonical},
		{"escaped letter", replace(full, `"t-42"`, `"\u0074-42"`), ErrNotCanonical},
		{"escaped non-ASCII", replace(full, `é`, `\u00e9`), ErrNotCanonical},
		{"upper-case hex escape", replace(full, `\u0000`, `\u0000\u001F`), ErrNotCanonical},
		{"long form of a short escape", replace(full, `\n`, `\u000a`), ErrNotCanonical},
		{"raw <", replace(full, `\u003cb\u003e`, `<b>`), ErrNotCanonical},
		{"raw &", replace(full, `\u0026 é`, `& é`), ErrNotCanonical},
		{"raw control character", replace(full, `\t`, "\t"), ErrNotCanonical},
		{"raw U+2028", replace(full, `\u2028`, "\u2028"), ErrNotCanonical},
		{"escaped replacement character", replace(full, "\ufffd", `\ufffd`), ErrNotCanonical},
		{"invalid UTF-8", replace(full, "é", "\xe9"), ErrNotCanonical},
		{"unterminated string", full[:len(full)-5], ErrNotCanonical},
		{"empty line", "", ErrNotCanonical},
		{"array", "[" + full + "]", ErrNotCanonical},
		{"version 2", replace(full, `"v":1`, `"v":2`), ErrVersion},
		{"version 0", replace(full, `"v":1`, `"v":0`), ErrVersion},
		{"longer than MaxEntrySize", replace(full, `"t-42"`, `"`+strings.Repeat("a", MaxEntrySize)+`"`), ErrTooLarge},
		{"string longer than MaxStringSize", replace(full, `"t-42"`, `"`+strings.Repeat("a", MaxStringSize+1)+`"`), ErrTooLarge},
		{"escapes count decoded", replace(full, `"t-42"`, `"`+strings.Repeat(`\u2028`, MaxStringSize/3+1)+`"`), ErrTooLarge},
		{"unknown event", replace(full, EventAccessDecision, "access"), ErrEntry},
		{"unknown outcome", replace(full, OutcomeRefused, "denied"), ErrEntry},
		{"patient without patientSeq", replace(full, `,"patientSeq":12`, ``), ErrEntry},
		{"patientSeq without patient", replace(full, `"patient":"v1.3q2-7wABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghi",`, ``), ErrEntry},
		{"empty origin", replace(full, testOrigin, ""), ErrEntry},
		{"prev on entry 0", replace(full, `"index":7`, `"index":0`), ErrEntry},
		{"no prev after entry 0", replace(full, testPrev, ""), ErrEntry},
		{"prev not base64", replace(full, testPrev, strings.Repeat("!", 44)), ErrEntry},
		{"prev unpadded", replace(full, testPrev, strings.TrimSuffix(testPrev, "=")), ErrEntry},
		{"prev with stray bits", replace(full, testPrev, strings.Replace(testPrev, "FU=", "FV=", 1)), ErrEntry},
		{"prev of 33 bytes", replace(full, testPrev, testPrev[:43]+"AAAA"), ErrEntry},
		{"time with offset", replace(full, `00.123456789Z`, `00.123456789+00:00`), ErrEntry},
		{"time with a short fraction", replace(full, `00.123456789Z`, `00.12345678Z`), ErrEntry},
		{"time without fraction", replace(full, `00.123456789Z`, `00Z`), ErrEntry},
		{"time in RFC3339Nano's short form", replace(full, `00.123456789Z`, `00.5Z`), ErrEntry},
		{"time with a sign in the fraction", replace(full, `00.123456789Z`, `00.-23456789Z`), ErrEntry},
		{"time on 31 April", replace(full, `2026-11-23`, `2026-04-31`), ErrEntry},
		{"time on 29 February of a common year", replace(full, `2026-11-23`, `2100-02-29`), ErrEntry},
		{"time in month 13", replace(full, `2026-11-23`, `2026-13-01`), ErrEntry},
		{"time with ten digits", replace(full, `00.123456789Z`, `00.1234567891Z`), ErrEntry},
		{"time lower-case z", replace(full, `00.123456789Z`, `00.123456789z`), ErrEntry},
		{"time on 30 February", replace(full, `2026-11-23`, `2026-02-30`), ErrEntry},
		{"time with leap second", replace(full, `10:00:00.`, `23:59:60.`), ErrEntry},
		{"time with hour 24", replace(full, `10:00:00.`, `24:00:00.`), ErrEntry},
		{"time without seconds", replace(full, `10:00:00.123456789Z`, `10:00Z`), ErrEntry},
		{"date only", replace(full, `2026-11-23T10:00:00.123456789Z`, `2026-11-23`), ErrEntry},
		{"time with a comma", replace(full, `00.123456789Z`, `00,123456789Z`), ErrEntry},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := ParseEntry([]byte(tc.line))
			if err == nil {
				t.Fatalf("ParseEntry(%q) = %+v, want an error", tc.line, e)
			}
			if !errors.Is(err, ErrEntry) || !errors.Is(err, tc.want) {
				t.Fatalf("ParseEntry(%q) = %v, want errors.Is %v", tc.line, err, tc.want)
			}
			if _, ref := referenceParse([]byte(tc.line)); ref == nil {
				t.Fatalf("referenceParse(%q) accepts it: the case is wrong", tc.line)
			}
		})
	}
}

// TestScanAgreesWithReference runs scanner and reference over every entry the test log writes.
func TestScanAgreesWithReference(t *testing.T) {
	l := newTestLog(t, 1).build(500, nil)
	var f fields
	for i, line := range l.lines {
		if err := scanEntry(line, &f); err != nil {
			t.Fatalf("scanEntry(entry %d %s): %v", i, line, err)
		}
		if _, err := referenceParse(line); err != nil {
			t.Fatalf("referenceParse(entry %d %s): %v", i, line, err)
		}
	}
}

// FuzzParseEntry: no panic; the scanner and the encoding/json definition accept the same
// lines; an accepted entry re-encodes to exactly its input.
func FuzzParseEntry(f *testing.F) {
	f.Add([]byte(marshal(f, fullEntry())))
	f.Add([]byte(marshal(f, minimalEntry())))
	l := newTestLog(f, 1).build(8, nil)
	for _, line := range l.lines {
		f.Add(line)
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		e, err := ParseEntry(line)
		ref, refErr := referenceParse(line)
		if (err == nil) != (refErr == nil) {
			t.Fatalf("ParseEntry(%q) error %v, reference error %v", line, err, refErr)
		}
		var f fields
		if scanErr := scanEntry(line, &f); (scanErr == nil) != (err == nil) {
			t.Fatalf("scanEntry(%q) error %v, ParseEntry error %v", line, scanErr, err)
		}
		if err != nil {
			if !errors.Is(err, ErrEntry) {
				t.Fatalf("ParseEntry(%q) error %v does not wrap ErrEntry", line, err)
			}
			return
		}
		b, err := e.Marshal()
		if err != nil || !bytes.Equal(b, line) {
			t.Fatalf("Marshal(ParseEntry(%q)) = %q, %v", line, b, err)
		}
		if !reflect.DeepEqual(e, ref) {
			t.Fatalf("ParseEntry(%q) = %+v, reference %+v", line, e, ref)
		}
	})
}

// TestNotPlain checks the eight-byte test against the byte table: for every byte value at every
// position of an otherwise plain word, and for words with two bytes that need a look.
func TestNotPlain(t *testing.T) {
	word := func(b []byte) uint64 {
		var w uint64
		for i := 7; i >= 0; i-- {
			w = w<<8 | uint64(b[i])
		}
		return w
	}
	first := func(b []byte) int {
		for i, c := range b {
			if c >= 0x80 || !strSafe[c] {
				return i
			}
		}
		return 8
	}
	check := func(b []byte) {
		t.Helper()
		got := bits.TrailingZeros64(notPlain(word(b))) >> 3
		if want := first(b); got != want {
			t.Fatalf("notPlain(%q): first byte %d, want %d", b, got, want)
		}
	}
	for pos := range 8 {
		for c := range 256 {
			b := []byte("abcdefgh")
			b[pos] = byte(c)
			check(b)
			for pos2 := pos + 1; pos2 < 8; pos2++ {
				for _, c2 := range []byte{0, 0x1f, '"', '\\', '<', '>', '&', 0x80, 0xff, 0x20, 0x7f} {
					b2 := bytes.Clone(b)
					b2[pos2] = c2
					check(b2)
				}
			}
		}
	}
}
