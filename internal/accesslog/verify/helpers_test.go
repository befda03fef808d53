package verify

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const testOrigin = "schakel.nl/log/77cRknNkoWRj6QkGT1hh2Yd6uuifDyNZAzrWVrA2J2Qw"

// testKey returns a note signer and verifier key for name, derived from seed so that exports
// built from the same seed are byte for byte the same.
func testKey(t testing.TB, name string, seed uint64) (note.Signer, string) {
	t.Helper()
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	skey, vkey, err := note.GenerateKey(rand.NewChaCha8(s), name)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatalf("NewSigner: %v", err)
	}
	return signer, vkey
}

// testLog builds an export: realistic entries, chained, with per-patient sequences, and
// checkpoints whose roots come from tlog's own stored-hash tree (not this package's frontier).
type testLog struct {
	tb       testing.TB
	origin   string
	signer   note.Signer
	vkey     string
	patients int
	compact  bool // entries of about 300 bytes: fewer members, as in the performance goal
	lines    [][]byte
	hashes   []tlog.Hash // tlog's stored hashes of the tree
	prev     [32]byte
	seqs     map[string]uint64
}

func newTestLog(tb testing.TB, seed uint64) *testLog {
	signer, vkey := testKey(tb, testOrigin, seed)
	return &testLog{tb: tb, origin: testOrigin, signer: signer, vkey: vkey, seqs: map[string]uint64{}}
}

var testEpoch = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

// pseudonym returns the keyed pseudonym of test patient p.
func pseudonym(p int) string {
	h := sha256.Sum256([]byte("patient " + strconv.Itoa(p)))
	return "v1." + base64.RawURLEncoding.EncodeToString(h[:])
}

// next returns entry i as the log would write it, before Index, Prev and Origin are set: a mix
// of decisions, data accesses, refusals, consent changes and log reads of about 520 bytes, or,
// when l.compact is set, data accesses and refusals of about 300 bytes.
func (l *testLog) next(i int) *Entry {
	x := uint64(i)*0x9e3779b97f4a7c15 + 1
	x ^= x >> 29
	// Times advance by a quarter second and a varying part of a millisecond; some fall on
	// whole seconds or quarters.
	ts := testEpoch.Add(time.Duration(i) * 250 * time.Millisecond)
	if i%7 != 3 && i%7 != 5 {
		ts = ts.Add(time.Duration(x % 1e6))
	}
	e := &Entry{V: Version, Time: ts.Format(TimeLayout)}
	if l.compact {
		switch x % 4 {
		case 0:
			e.Event, e.Action, e.Outcome, e.Reason = EventAccessDecision, "token-request", OutcomeRefused, "no consent"
		case 1, 2:
			e.Event, e.Action, e.Outcome = EventDataAccess, "read", OutcomeGranted
		default:
			e.Event, e.Action, e.Outcome, e.Purpose = EventLogRead, "search", OutcomeGranted, "TREAT"
			return e
		}
		p := pseudonym(int(x>>8) % max(1, l.patients))
		l.seqs[p]++
		e.Patient, e.PatientSeq = p, l.seqs[p]
		return e
	}
	requester := &Requester{DID: "did:schakel:HnhmxRCfgArpegkCz6HY4iKGSXfZjYz6USvLRzPWuA3E", URA: "87654321"}
	employee := &Employee{UZI: "9000" + strconv.Itoa(10000+int(x%90000)), Role: "01.015"}
	switch x % 8 {
	case 0, 1, 2:
		e.Event, e.Action, e.Outcome = EventAccessDecision, "token-request", OutcomeGranted
		e.Requester, e.Employee, e.Purpose, e.DataCategory = requester, employee, "TREAT", "medication"
		e.Basis = &Basis{ConsentIDs: []string{"c-" + strconv.FormatUint(x%100000, 36)}}
		e.TokenID = "t-" + strconv.FormatUint(x, 36)
	case 3, 4:
		e.Event, e.Action, e.Outcome = EventDataAccess, "read", OutcomeGranted
		e.Requester, e.Employee, e.DataCategory = requester, employee, "medication"
		e.Query = "MedicationRequest?status=active&_count=50"
		e.TokenID = "t-" + strconv.FormatUint(x-1, 36)
	case 5:
		e.Event, e.Action, e.Outcome = EventAccessDecision, "token-request", OutcomeRefused
		e.Reason = "no consent recorded for this organisation"
		e.Requester, e.Employee, e.Purpose = requester, employee, "TREAT"
		e.OnBehalfOf = "É. Jansen-de Hoogh <huisarts>"
	case 6:
		e.Event, e.Action, e.Outcome = EventConsentChange, "record", OutcomeGranted
		e.Basis = &Basis{ConsentIDs: []string{"c-" + strconv.FormatUint(x%100000, 36)}, BreakTheGlass: x%3 == 0}
	default:
		e.Event, e.Action, e.Outcome = EventLogRead, "search", OutcomeGranted
		e.Requester = &Requester{DID: requester.DID}
		return e // about no patient
	}
	p := pseudonym(int(x>>8) % max(1, l.patients))
	l.seqs[p]++
	e.Patient, e.PatientSeq = p, l.seqs[p]
	return e
}

// add appends e, after setting Index, Prev and Origin, then mutate (which may break them).
func (l *testLog) add(e *Entry, mutate func(e *Entry)) []byte {
	l.tb.Helper()
	i := len(l.lines)
	e.Index, e.Origin = uint64(i), l.origin
	e.Prev = ""
	if i > 0 {
		e.Prev = base64.StdEncoding.EncodeToString(l.prev[:])
	}
	if mutate != nil {
		mutate(e)
	}
	b, err := e.Marshal()
	if err != nil {
		l.tb.Fatalf("Marshal entry %d: %v", i, err)
	}
	l.addLine(b)
	return b
}

// addLine appends raw bytes as the next line.
func (l *testLog) addLine(b []byte) {
	l.tb.Helper()
	hs, err := tlog.StoredHashes(int64(len(l.lines)), b, l)
	if err != nil {
		l.tb.Fatalf("StoredHashes: %v", err)
	}
	l.hashes = append(l.hashes, hs...)
	l.lines = append(l.lines, b)
	l.prev = sha256.Sum256(b)
}

// ReadHashes makes testLog the tlog.HashReader of its own tree.
func (l *testLog) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x >= int64(len(l.hashes)) {
			return nil, errors.New("hash not stored")
		}
		out[i] = l.hashes[x]
	}
	return out, nil
}

// root returns tlog's root of the first n lines.
func (l *testLog) root(n int64) tlog.Hash {
	l.tb.Helper()
	h, err := tlog.TreeHash(n, l)
	if err != nil {
		l.tb.Fatalf("TreeHash(%d): %v", n, err)
	}
	return h
}

// checkpoint returns the signed checkpoint of the first n lines, signed by signers (the log's
// own signer when none are given).
func (l *testLog) checkpoint(n int64, signers ...note.Signer) []byte {
	l.tb.Helper()
	return l.signedCheckpoint(n, l.root(n), signers...)
}

// signedCheckpoint signs a checkpoint of size n and root.
func (l *testLog) signedCheckpoint(n int64, root tlog.Hash, signers ...note.Signer) []byte {
	l.tb.Helper()
	if len(signers) == 0 {
		signers = []note.Signer{l.signer}
	}
	msg, err := note.Sign(&note.Note{Text: string(FormatCheckpoint(l.origin, n, root))}, signers...)
	if err != nil {
		l.tb.Fatalf("note.Sign: %v", err)
	}
	return msg
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

// build appends n entries, applying mutate (if not nil) to each.
func (l *testLog) build(n int, mutate func(i int, e *Entry)) *testLog {
	if l.patients == 0 {
		l.patients = max(1, n/8)
	}
	for i := range n {
		e := l.next(len(l.lines))
		var m func(*Entry)
		if mutate != nil {
			m = func(e *Entry) { mutate(i, e) }
		}
		l.add(e, m)
	}
	return l
}

// write writes the export to dir with checkpoints every `every` entries and at the end.
func (l *testLog) write(dir string, every int) {
	l.tb.Helper()
	var sizes []int64
	for s := every; s < len(l.lines); s += every {
		sizes = append(sizes, int64(s))
	}
	l.writeSizes(dir, append(sizes, int64(len(l.lines))))
}

func (l *testLog) writeSizes(dir string, sizes []int64) {
	l.tb.Helper()
	if err := os.MkdirAll(filepath.Join(dir, CheckpointsDir), 0o755); err != nil {
		l.tb.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, EntriesFile))
	if err != nil {
		l.tb.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for _, b := range l.lines {
		w.Write(b)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		l.tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		l.tb.Fatal(err)
	}
	for _, s := range sizes {
		writeFile(l.tb, filepath.Join(dir, CheckpointsDir, strconv.FormatInt(s, 10)), l.checkpoint(s))
	}
	writeFile(l.tb, filepath.Join(dir, VerifierKeyFile), []byte(l.vkey+"\n"))
}

func writeFile(tb testing.TB, path string, b []byte) {
	tb.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		tb.Fatal(err)
	}
}

func readFile(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// copyDir copies an export directory.
func copyDir(tb testing.TB, src, dst string) {
	tb.Helper()
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		tb.Fatalf("CopyFS: %v", err)
	}
}

// referenceParse is the definition docs/ACCESSLOG.md gives, written with encoding/json: decode
// strictly, re-encode, compare, then the rules on values. The scanner must agree with it.
func referenceParse(line []byte) (*Entry, error) {
	if len(line) > MaxEntrySize {
		return nil, errors.New("too large")
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	var e Entry
	if err := dec.Decode(&e); err != nil {
		return nil, err
	}
	b, err := e.Marshal()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(b, line) {
		return nil, errors.New("not canonical")
	}
	strs := []string{e.Origin, e.Prev, e.Time, e.Event, e.Action, e.Outcome, e.Reason, e.OnBehalfOf, e.PeerID, e.Purpose, e.Patient, e.DataCategory, e.Query, e.TokenID}
	if e.Requester != nil {
		strs = append(strs, e.Requester.DID, e.Requester.URA)
	}
	if e.Employee != nil {
		strs = append(strs, e.Employee.UZI, e.Employee.Role)
	}
	if e.Basis != nil {
		strs = append(strs, e.Basis.ReferralGrant)
		strs = append(strs, e.Basis.ConsentIDs...)
	}
	for _, s := range strs {
		if len(s) > MaxStringSize {
			return nil, errors.New("string too large")
		}
	}
	if e.V != 1 {
		return nil, errors.New("version")
	}
	if e.Origin == "" {
		return nil, errors.New("origin")
	}
	if e.Index == 0 && e.Prev != "" {
		return nil, errors.New("prev of entry 0")
	}
	if e.Index != 0 {
		h, err := base64.StdEncoding.DecodeString(e.Prev)
		if err != nil || len(h) != 32 || base64.StdEncoding.EncodeToString(h) != e.Prev {
			return nil, errors.New("prev")
		}
	}
	ts, err := time.Parse(time.RFC3339Nano, e.Time)
	if err != nil || ts.UTC().Format("2006-01-02T15:04:05.000000000Z") != e.Time {
		return nil, fmt.Errorf("time %q", e.Time)
	}
	switch e.Event {
	case EventAccessDecision, EventDataAccess, EventConsentChange, EventLogRead:
	default:
		return nil, errors.New("event")
	}
	switch e.Outcome {
	case OutcomeGranted, OutcomeRefused:
	default:
		return nil, errors.New("outcome")
	}
	if (e.Patient == "") != (e.PatientSeq == 0) {
		return nil, errors.New("patient")
	}
	return &e, nil
}
