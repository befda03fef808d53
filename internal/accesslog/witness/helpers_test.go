package witness

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/accesslog/verify"
	"github.com/schakel-health/schakel/internal/store"
)

const (
	testOrigin  = "schakel.nl/log/test"
	witnessName = "schakel.nl/log/witness"
)

// testClock is the witnesses' fixed clock: cosignatures and fork evidence are dated by it.
var testClock = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return testClock }

// openDB opens a store in dir, or in memory when dir is empty; the test's cleanup closes it
// (again, for a test that closed it itself to reopen it).
func openDB(t testing.TB, dir string) *store.DB {
	t.Helper()
	db, err := store.Open(store.Config{Dir: dir, InMemory: dir == ""})
	if err != nil {
		t.Fatalf("store.Open(%q): %v", dir, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func generateKey(t testing.TB) *crypto.PrivateKey {
	t.Helper()
	k, err := crypto.GenerateKey(crypto.Ed25519, crypto.UseSign)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	return k
}

// seedKey returns the Ed25519 key whose seed is seed.
func seedKey(t testing.TB, seed []byte) *crypto.PrivateKey {
	t.Helper()
	pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	jwk, _ := json.Marshal(map[string]string{
		"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
		"x": base64.RawURLEncoding.EncodeToString(pub), "d": base64.RawURLEncoding.EncodeToString(seed),
	})
	k, err := crypto.ParsePrivateKey(jwk)
	if err != nil {
		t.Fatalf("ParsePrivateKey: %v", err)
	}
	return k
}

// newCosigner returns a cosigner named name with a new key and the fixed clock, and the
// verifier of its cosignatures.
func newCosigner(t testing.TB, name string) (*Cosigner, note.Verifier) {
	t.Helper()
	c, err := NewCosigner(name, generateKey(t), fixedNow)
	if err != nil {
		t.Fatalf("NewCosigner: %v", err)
	}
	return c, cosignatureVerifier(t, c.VerifierKey())
}

func cosignatureVerifier(t testing.TB, vkey string) note.Verifier {
	t.Helper()
	v, err := verify.NewCosignatureVerifier(vkey)
	if err != nil {
		t.Fatalf("NewCosignatureVerifier(%q): %v", vkey, err)
	}
	return v
}

func newWitness(t testing.TB, db *store.DB, signer note.Signer, cfg Config) *Witness {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = fixedNow
	}
	w, err := New(cfg, db, signer)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return w
}

// memLog is a log kept in memory with tlog: its records, their stored hashes, and its
// checkpoint key. Two memLogs with the same key and different records are a forked log.
type memLog struct {
	tb       testing.TB
	origin   string
	signer   note.Signer
	verifier note.Verifier
	records  [][]byte
	hashes   []tlog.Hash
}

func newMemLog(t testing.TB, origin string) *memLog {
	t.Helper()
	return newMemLogKey(t, origin, generateKey(t))
}

// newMemLogKey returns an empty log that signs its checkpoints with k.
func newMemLogKey(t testing.TB, origin string, k *crypto.PrivateKey) *memLog {
	t.Helper()
	signer, _, v := logKey(t, origin, k)
	return &memLog{tb: t, origin: origin, signer: signer, verifier: v}
}

// logKey returns the checkpoint signer, verifier key and verifier of a log's key k.
func logKey(t testing.TB, origin string, k *crypto.PrivateKey) (note.Signer, string, note.Verifier) {
	t.Helper()
	signer, err := k.NoteSigner(origin)
	if err != nil {
		t.Fatalf("NoteSigner: %v", err)
	}
	vkey, err := k.Public().NoteVerifierKey(origin)
	if err != nil {
		t.Fatalf("NoteVerifierKey: %v", err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatalf("note.NewVerifier: %v", err)
	}
	return signer, vkey, v
}

// fork returns a log with the same key and the first n records of l.
func (l *memLog) fork(n int) *memLog {
	f := &memLog{tb: l.tb, origin: l.origin, signer: l.signer, verifier: l.verifier}
	for _, r := range l.records[:n] {
		f.append(string(r))
	}
	return f
}

func (l *memLog) append(record string) {
	l.tb.Helper()
	hs, err := tlog.StoredHashes(int64(len(l.records)), []byte(record), l)
	if err != nil {
		l.tb.Fatalf("StoredHashes: %v", err)
	}
	l.hashes = append(l.hashes, hs...)
	l.records = append(l.records, []byte(record))
}

// grow appends records until the log has n, each tagged with tag.
func (l *memLog) grow(n int, tag string) *memLog {
	for i := len(l.records); i < n; i++ {
		l.append(fmt.Sprintf("%s record %d", tag, i))
	}
	return l
}

func (l *memLog) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x >= int64(len(l.hashes)) {
			return nil, fmt.Errorf("hash %d not stored", x)
		}
		out[i] = l.hashes[x]
	}
	return out, nil
}

func (l *memLog) root(size int64) tlog.Hash {
	l.tb.Helper()
	h, err := tlog.TreeHash(size, l)
	if err != nil {
		l.tb.Fatalf("TreeHash(%d): %v", size, err)
	}
	return h
}

// checkpoint returns the checkpoint of the first size records, signed by the log and then by
// extra signers.
func (l *memLog) checkpoint(size int64, extra ...note.Signer) []byte {
	l.tb.Helper()
	msg, err := note.Sign(&note.Note{Text: string(verify.FormatCheckpoint(l.origin, size, l.root(size)))}, append([]note.Signer{l.signer}, extra...)...)
	if err != nil {
		l.tb.Fatalf("note.Sign: %v", err)
	}
	return msg
}

// proof serves consistency proofs of the log, counting them.
func (l *memLog) proof(calls *int) ProofFunc {
	return func(_ context.Context, oldSize, newSize int64) (tlog.TreeProof, error) {
		if calls != nil {
			*calls++
		}
		return tlog.ProveTree(newSize, oldSize, l)
	}
}

// dump returns every key and value of the witness namespace.
func dump(t testing.TB, db *store.DB) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := db.View(t.Context(), func(tx *store.Txn) error {
		return tx.Iterate(ns, nil, store.IterOptions{}, func(k, v []byte) error {
			out[string(k)] = string(v)
			return nil
		})
	})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	return out
}

func sameDump(t testing.TB, what string, before, after map[string]string) {
	t.Helper()
	if len(before) != len(after) {
		t.Fatalf("%s changed storage: %d keys before, %d after", what, len(before), len(after))
	}
	for k, v := range before {
		if after[k] != v {
			t.Fatalf("%s changed storage at key %q", what, k)
		}
	}
}

// opened opens a cosigned note with the log's verifier and the cosignature verifiers, and
// returns the names of its verified signatures.
func opened(t testing.TB, msg []byte, verifiers ...note.Verifier) []string {
	t.Helper()
	n, err := note.Open(msg, note.VerifierList(verifiers...))
	if err != nil {
		t.Fatalf("note.Open(%q): %v", msg, err)
	}
	var names []string
	for _, s := range n.Sigs {
		names = append(names, s.Name)
	}
	return names
}
