package accesslog

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/accesslog/verify"
	"github.com/schakel-health/schakel/internal/store"
)

const testOrigin = OriginPrefix + "test"

// logKey is a log's checkpoint key pair.
type logKey struct {
	priv   *crypto.PrivateKey
	signer note.Signer
	vkey   string
}

func newLogKey(t testing.TB, origin string) logKey {
	t.Helper()
	priv, err := crypto.GenerateKey(crypto.Ed25519, crypto.UseSign)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	return keyFor(t, priv, origin)
}

func keyFor(t testing.TB, priv *crypto.PrivateKey, origin string) logKey {
	t.Helper()
	signer, err := priv.NoteSigner(origin)
	if err != nil {
		t.Fatalf("NoteSigner: %v", err)
	}
	vkey, err := priv.Public().NoteVerifierKey(origin)
	if err != nil {
		t.Fatalf("NoteVerifierKey: %v", err)
	}
	return logKey{priv: priv, signer: signer, vkey: vkey}
}

func memDB(t testing.TB) *store.DB {
	t.Helper()
	db, err := store.Open(store.Config{InMemory: true})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func diskDB(t testing.TB, dir string) *store.DB {
	t.Helper()
	db, err := store.Open(store.Config{Dir: dir})
	if err != nil {
		t.Fatalf("store.Open(%s): %v", dir, err)
	}
	return db
}

// openLog opens and starts a log; the cleanup closes it.
func openLog(t testing.TB, cfg Config, db *store.DB, origin string, key logKey) *Log {
	t.Helper()
	l, err := New(cfg, db, key.signer, key.vkey, origin, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := l.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { l.Close(t.Context()) })
	return l
}

// pseudonym returns a well-formed pseudonym for patient n under key version v.
func pseudonym(v, n int) string {
	sum := sha256.Sum256([]byte(strconv.Itoa(n)))
	return fmt.Sprintf("v%d.%s", v, base64.RawURLEncoding.EncodeToString(sum[:]))
}

// sampleEntry returns a realistic entry (about 300 bytes once the log has filled it in) about
// patient, or about no patient when patient is empty.
func sampleEntry(n int, patient string) *verify.Entry {
	e := &verify.Entry{
		Event:        verify.EventAccessDecision,
		Action:       "token-request",
		Outcome:      verify.OutcomeGranted,
		Requester:    &verify.Requester{DID: "did:schakel:7Xq3yvC9KzbR1d", URA: "12345678"},
		Employee:     &verify.Employee{UZI: "900012345", Role: "01.015"},
		Purpose:      "TREAT",
		Patient:      patient,
		DataCategory: "medication",
		TokenID:      fmt.Sprintf("tok-%08d", n),
	}
	if n%3 == 0 {
		e.Outcome, e.Reason = verify.OutcomeRefused, "no consent"
	}
	return e
}

// dumpDB returns every key and value in the database, for byte-for-byte comparison.
func dumpDB(t testing.TB, db *store.DB) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := db.Badger().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[string(it.Item().KeyCopy(nil))] = string(v)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	return out
}

func sameDump(t testing.TB, before, after map[string]string) {
	t.Helper()
	if len(before) != len(after) {
		t.Fatalf("storage changed: %d keys before, %d after", len(before), len(after))
	}
	for k, v := range before {
		if after[k] != v {
			t.Fatalf("storage changed at key %q", k)
		}
	}
}

// memTree recomputes an RFC 6962 tree from entry bytes with tlog, independently of the log's
// storage.
type memTree struct{ hashes []tlog.Hash }

func (m *memTree) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x >= int64(len(m.hashes)) {
			return nil, fmt.Errorf("hash %d not stored", x)
		}
		out[i] = m.hashes[x]
	}
	return out, nil
}

func newMemTree(t testing.TB, lines [][]byte) *memTree {
	t.Helper()
	m := &memTree{}
	for i, line := range lines {
		hs, err := tlog.StoredHashes(int64(i), line, m)
		if err != nil {
			t.Fatalf("StoredHashes(%d): %v", i, err)
		}
		m.hashes = append(m.hashes, hs...)
	}
	return m
}

func (m *memTree) root(t testing.TB, size int64) tlog.Hash {
	t.Helper()
	h, err := tlog.TreeHash(size, m)
	if err != nil {
		t.Fatalf("TreeHash(%d): %v", size, err)
	}
	return h
}

// checkpoint is an opened checkpoint.
type checkpoint struct {
	size int64
	root tlog.Hash
}

// openCheckpoint verifies a signed checkpoint with vkey and parses its body.
func openCheckpoint(t testing.TB, msg []byte, vkey, origin string) checkpoint {
	t.Helper()
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatalf("note.NewVerifier: %v", err)
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		t.Fatalf("note.Open(%q): %v", msg, err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) != 4 || lines[0] != origin || lines[3] != "" {
		t.Fatalf("checkpoint body %q: want origin %s, size, root", n.Text, origin)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		t.Fatalf("checkpoint size %q: %v", lines[1], err)
	}
	raw, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(raw) != tlog.HashSize {
		t.Fatalf("checkpoint root %q: %v", lines[2], err)
	}
	return checkpoint{size: size, root: tlog.Hash(raw)}
}

// checkEntries checks lines as docs/ACCESSLOG.md requires: canonical entries, dense indexes from
// 0, one origin, prev chaining, non-decreasing times, per-patient sequence numbers 1, 2, 3, ….
// It returns the decoded entries.
func checkEntries(t testing.TB, lines [][]byte, origin string) []verify.Entry {
	t.Helper()
	out := make([]verify.Entry, len(lines))
	seqs := map[string]uint64{}
	var prevTime string
	for i, line := range lines {
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		e := &out[i]
		if err := dec.Decode(e); err != nil {
			t.Fatalf("entry %d: decode: %v", i, err)
		}
		b, err := e.Marshal()
		if err != nil || !bytes.Equal(b, line) {
			t.Fatalf("entry %d is not canonical: %s", i, line)
		}
		if e.V != verify.Version || e.Origin != origin || e.Index != uint64(i) {
			t.Fatalf("entry %d: v %d origin %q index %d, want %d %q %d", i, e.V, e.Origin, e.Index, verify.Version, origin, i)
		}
		wantPrev := ""
		if i > 0 {
			h := sha256.Sum256(lines[i-1])
			wantPrev = base64.StdEncoding.EncodeToString(h[:])
		}
		if e.Prev != wantPrev {
			t.Fatalf("entry %d: prev %q, want %q", i, e.Prev, wantPrev)
		}
		if _, err := parseTime(e.Time); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if e.Time < prevTime {
			t.Fatalf("entry %d: time %s before the previous entry's %s", i, e.Time, prevTime)
		}
		prevTime = e.Time
		if (e.Patient == "") != (e.PatientSeq == 0) {
			t.Fatalf("entry %d: patient %q with patientSeq %d", i, e.Patient, e.PatientSeq)
		}
		if e.Patient != "" {
			seqs[e.Patient]++
			if e.PatientSeq != seqs[e.Patient] {
				t.Fatalf("entry %d: patientSeq %d, want %d", i, e.PatientSeq, seqs[e.Patient])
			}
		}
	}
	return out
}

// export exports l to a fresh directory and returns the entry lines, the checkpoints by file
// name and the vkey file.
type exported struct {
	lines       [][]byte
	checkpoints map[int64][]byte
	vkey        string
}

func exportLog(t testing.TB, l *Log) exported {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "export")
	if err := l.Export(t.Context(), dir); err != nil {
		t.Fatalf("Export: %v", err)
	}
	x := readExport(t, dir)
	// The auditor's verifier accepts every export.
	rep, err := verify.VerifyExport(t.Context(), dir, verify.Options{})
	if err != nil {
		t.Fatalf("verify.VerifyExport: %v", err)
	}
	if rep.Entries != int64(len(x.lines)) || rep.Origin != l.Origin() || rep.Latest.Size != rep.Entries {
		t.Fatalf("verify.VerifyExport = %+v, want %d entries of %s, all checkpointed", rep, len(x.lines), l.Origin())
	}
	return x
}

func readExport(t testing.TB, dir string) exported {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, verify.EntriesFile))
	if err != nil {
		t.Fatalf("read entries: %v", err)
	}
	var x exported
	if len(raw) > 0 {
		if raw[len(raw)-1] != '\n' {
			t.Fatalf("entries.jsonl does not end with a newline")
		}
		x.lines = bytes.Split(raw[:len(raw)-1], []byte("\n"))
	}
	vkey, err := os.ReadFile(filepath.Join(dir, verify.VerifierKeyFile))
	if err != nil {
		t.Fatalf("read vkey: %v", err)
	}
	v, ok := strings.CutSuffix(string(vkey), "\n")
	if !ok || strings.Contains(v, "\n") {
		t.Fatalf("vkey file %q is not one line", vkey)
	}
	x.vkey = v
	ents, err := os.ReadDir(filepath.Join(dir, verify.CheckpointsDir))
	if err != nil {
		t.Fatalf("read checkpoints: %v", err)
	}
	x.checkpoints = map[int64][]byte{}
	for _, e := range ents {
		size, err := strconv.ParseInt(e.Name(), 10, 64)
		if err != nil {
			t.Fatalf("checkpoint file %q: %v", e.Name(), err)
		}
		x.checkpoints[size], err = os.ReadFile(filepath.Join(dir, verify.CheckpointsDir, e.Name()))
		if err != nil {
			t.Fatalf("read checkpoint: %v", err)
		}
	}
	return x
}

// checkExport checks an export completely: entries, every checkpoint's signature, origin and
// root against the tree recomputed from the lines, and that a checkpoint covers every line.
func checkExport(t testing.TB, x exported, origin string) []verify.Entry {
	t.Helper()
	entries := checkEntries(t, x.lines, origin)
	tree := newMemTree(t, x.lines)
	if x.checkpoints[int64(len(x.lines))] == nil {
		t.Fatalf("no checkpoint covers all %d entries (have %d checkpoints)", len(x.lines), len(x.checkpoints))
	}
	for size, msg := range x.checkpoints {
		c := openCheckpoint(t, msg, x.vkey, origin)
		if c.size != size || c.size > int64(len(x.lines)) {
			t.Fatalf("checkpoint file %d holds size %d of %d entries", size, c.size, len(x.lines))
		}
		if want := tree.root(t, c.size); c.root != want {
			t.Fatalf("checkpoint %d: root %s, recomputed %s", size, c.root, want)
		}
	}
	return entries
}

// fixedClock returns a clock that starts at a fixed time and advances a microsecond per call,
// so that two logs fed the same appends write the same bytes.
func fixedClock() func() time.Time {
	var mu sync.Mutex
	t := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Microsecond)
		return t
	}
}
