package accesslog

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/schakel-health/schakel/internal/accesslog/verify"
)

// spliceFor encodes e as prepare does and splices in the given values.
func spliceFor(t testing.TB, s *splicer, origin string, e verify.Entry, index int64, prev [32]byte, time string, seq uint64) ([]byte, bool) {
	t.Helper()
	p := e
	p.V, p.Origin, p.Time = verify.Version, origin, placeholderTime
	b, err := p.Marshal()
	if err != nil {
		return nil, false
	}
	tmpl, ok := s.cut(b, e.Patient)
	if !ok {
		t.Fatalf("cut(%s) failed", b)
	}
	return s.splice(nil, &tmpl, index, &prev, time, seq), true
}

func TestSpliceMatchesMarshal(t *testing.T) {
	var prev [32]byte
	for i := range prev {
		prev[i] = byte(255 - i)
	}
	tests := []struct {
		name   string
		origin string
		e      verify.Entry
		index  int64
		seq    uint64
	}{
		{name: "first entry", origin: testOrigin, e: *sampleEntry(1, pseudonym(1, 1)), index: 0, seq: 1},
		{name: "no patient", origin: testOrigin, e: *sampleEntry(3, ""), index: 7},
		{name: "large index", origin: testOrigin, e: *sampleEntry(2, pseudonym(3, 9)), index: 1<<62 + 3, seq: 1 << 40},
		{name: "origin needing escapes", origin: OriginPrefix + "a<b>&c", e: *sampleEntry(4, pseudonym(1, 2)), index: 12, seq: 2},
		{name: "patient last", origin: testOrigin, e: verify.Entry{Event: verify.EventLogRead, Action: "search",
			Outcome: verify.OutcomeGranted, Patient: pseudonym(1, 5)}, index: 99, seq: 3},
		{name: "patient string in a value", origin: testOrigin, e: verify.Entry{Event: verify.EventDataAccess, Action: "read",
			Outcome: verify.OutcomeGranted, Reason: `,"patient":"` + pseudonym(1, 6) + `"`, Patient: pseudonym(1, 6)}, index: 5, seq: 4},
	}
	for i, e := range spliceSamples() {
		tests = append(tests, struct {
			name   string
			origin string
			e      verify.Entry
			index  int64
			seq    uint64
		}{name: "sample " + string(rune('a'+i)), origin: testOrigin, e: e, index: int64(i) * 1000, seq: uint64(i)})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSplicer(tt.origin)
			if !s.ok {
				t.Fatalf("newSplicer(%q): splicing does not match Marshal", tt.origin)
			}
			if tt.e.Patient == "" {
				tt.seq = 0
			}
			got, ok := spliceFor(t, &s, tt.origin, tt.e, tt.index, prev, "2026-11-23T10:00:00.000000001Z", tt.seq)
			if !ok {
				t.Fatalf("Marshal failed")
			}
			want := tt.e
			want.V, want.Origin, want.Index, want.Time, want.PatientSeq = verify.Version, tt.origin, uint64(tt.index), "2026-11-23T10:00:00.000000001Z", tt.seq
			if tt.index > 0 {
				want.Prev = base64.StdEncoding.EncodeToString(prev[:])
			}
			w, err := want.Marshal()
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			if !bytes.Equal(got, w) {
				t.Fatalf("splice = %s\nMarshal = %s", got, w)
			}
		})
	}
}

// TestMarshalFallback checks that a log that cannot splice writes the same bytes by encoding in
// the committer.
func TestMarshalFallback(t *testing.T) {
	key := newLogKey(t, testOrigin)
	var logs [2][][]byte
	for i, splice := range []bool{true, false} {
		l, err := New(Config{Now: fixedClock()}, memDB(t), key.signer, key.vkey, testOrigin, nil)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		l.sp.ok = splice
		if err := l.Start(t.Context()); err != nil {
			t.Fatalf("Start: %v", err)
		}
		for j, e := range append(spliceSamples(), *sampleEntry(1, pseudonym(1, 1)), *sampleEntry(2, pseudonym(1, 1))) {
			r, err := l.Append(t.Context(), &e)
			if err != nil {
				t.Fatalf("Append(%d): %v", j, err)
			}
			logs[i] = append(logs[i], r.Entry)
		}
		checkExport(t, exportLog(t, l), testOrigin)
		l.Close(t.Context())
	}
	for j := range logs[0] {
		if !bytes.Equal(logs[0][j], logs[1][j]) {
			t.Fatalf("entry %d: spliced %s\nencoded %s", j, logs[0][j], logs[1][j])
		}
	}
}

// FuzzSplice checks, for arbitrary field values, that splicing reproduces Marshal whenever
// prepare accepts the entry.
func FuzzSplice(f *testing.F) {
	f.Add("token-request", "no consent", `Patient?x="<y>"&z`, "TREAT", "v1.AAAAAAAAAAAAAAAAAAAAAA", int64(5), uint64(3))
	f.Add("read", "\u2028\x00\\", "", "", "", int64(0), uint64(0))
	key := newLogKey(f, testOrigin)
	l, err := New(Config{}, memDB(f), key.signer, key.vkey, testOrigin, nil)
	if err != nil {
		f.Fatalf("New: %v", err)
	}
	f.Fuzz(func(t *testing.T, action, reason, query, purpose, patient string, index int64, seq uint64) {
		if index < 0 {
			index = -(index + 1)
		}
		if patient == "" || seq == 0 {
			patient, seq = "", 0
		}
		e := verify.Entry{Event: verify.EventDataAccess, Action: action, Outcome: verify.OutcomeRefused,
			Reason: reason, Query: query, Purpose: purpose, Patient: patient,
			Basis: &verify.Basis{ConsentIDs: []string{reason + "x"}}}
		r, err := l.prepare(&e)
		if err != nil {
			return
		}
		if !r.spliced {
			t.Fatalf("prepare accepted %+v but cannot splice it", e)
		}
		var prev [32]byte
		copy(prev[:], strings.Repeat(action, 32))
		got := l.sp.splice(nil, &r.tmpl, index, &prev, "2026-11-23T10:00:00.000000001Z", seq)
		want := e
		want.V, want.Origin, want.Index, want.Time, want.PatientSeq = verify.Version, testOrigin, uint64(index), "2026-11-23T10:00:00.000000001Z", seq
		if index > 0 {
			want.Prev = base64.StdEncoding.EncodeToString(prev[:])
		}
		w, err := want.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		if !bytes.Equal(got, w) {
			t.Fatalf("splice = %s\nMarshal = %s", got, w)
		}
	})
}

// FuzzDecodeHead checks that any stored head either decodes and encodes back to the same bytes
// or is refused as corrupt, without panicking.
func FuzzDecodeHead(f *testing.F) {
	var last [32]byte
	last[3] = 9
	f.Add(head{size: 7, last: last, lastTime: "2026-11-23T10:00:00.000000001Z", origin: testOrigin}.encode())
	f.Add(head{origin: testOrigin}.encode())
	f.Add([]byte{headFormat})
	f.Add([]byte{2, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeHead(b)
		if err != nil {
			return
		}
		if got := h.encode(); !bytes.Equal(got, b) {
			t.Fatalf("decodeHead(%x) re-encodes as %x", b, got)
		}
	})
}
