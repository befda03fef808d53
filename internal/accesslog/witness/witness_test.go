package witness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/schakel-health/schakel/internal/accesslog"
	"github.com/schakel-health/schakel/internal/accesslog/verify"
	"github.com/schakel-health/schakel/internal/store"
)

func TestObserveGrowingLog(t *testing.T) {
	db := openDB(t, "")
	c, cv := newCosigner(t, witnessName)
	w := newWitness(t, db, c, Config{})
	l := newMemLog(t, testOrigin).grow(7, "a")
	ctx := t.Context()
	var calls int

	first, err := w.Observe(ctx, testOrigin, l.verifier, l.checkpoint(3), l.proof(&calls))
	if err != nil {
		t.Fatalf("Observe(3): %v", err)
	}
	if calls != 0 {
		t.Fatalf("Observe(3) fetched %d proofs for the first checkpoint, want 0", calls)
	}
	if names := opened(t, first, l.verifier, cv); !slices.Equal(names, []string{testOrigin, witnessName}) {
		t.Fatalf("Observe(3) returned a note signed by %v", names)
	}

	second, err := w.Observe(ctx, testOrigin, l.verifier, l.checkpoint(7), l.proof(&calls))
	if err != nil {
		t.Fatalf("Observe(7): %v", err)
	}
	if calls != 1 {
		t.Fatalf("Observe(7) fetched %d proofs, want 1", calls)
	}
	opened(t, second, l.verifier, cv)

	again, err := w.Observe(ctx, testOrigin, l.verifier, l.checkpoint(7), l.proof(&calls))
	if err != nil || !bytes.Equal(again, second) {
		t.Fatalf("Observe(7) again = %q, %v; want the stored note %q", again, err, second)
	}
	if calls != 1 {
		t.Fatalf("Observe(7) again fetched a proof")
	}

	before := dump(t, db)
	if _, err := w.Observe(ctx, testOrigin, l.verifier, l.checkpoint(3), l.proof(&calls)); !errors.Is(err, ErrStale) {
		t.Fatalf("Observe(3) after 7: %v, want ErrStale", err)
	}
	if _, err := w.Observe(ctx, testOrigin, l.verifier, l.checkpoint(5), l.proof(&calls)); !errors.Is(err, ErrStale) {
		t.Fatalf("Observe(5) after 7: %v, want ErrStale", err)
	}
	sameDump(t, "a stale Observe", before, dump(t, db))

	if got, err := w.Latest(ctx, testOrigin); err != nil || !bytes.Equal(got, second) {
		t.Fatalf("Latest = %q, %v; want %q", got, err, second)
	}
	if got, err := w.Cosigned(ctx, testOrigin, 3); err != nil || !bytes.Equal(got, first) {
		t.Fatalf("Cosigned(3) = %q, %v; want %q", got, err, first)
	}
	if _, err := w.Cosigned(ctx, testOrigin, 5); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Cosigned(5): %v, want ErrNotFound", err)
	}
	if _, err := w.Latest(ctx, "schakel.nl/log/other"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Latest of an unknown log: %v, want ErrNotFound", err)
	}
	if got, err := w.Followed(ctx); err != nil || !slices.Equal(got, []string{testOrigin}) {
		t.Fatalf("Followed = %q, %v", got, err)
	}
	if forks, err := w.Forks(ctx); err != nil || len(forks) != 0 {
		t.Fatalf("Forks = %v, %v; want none", forks, err)
	}
}

func TestObserveFromEmptyTree(t *testing.T) {
	c, _ := newCosigner(t, witnessName)
	w := newWitness(t, openDB(t, ""), c, Config{})
	l := newMemLog(t, testOrigin).grow(4, "a")
	if _, err := w.Observe(t.Context(), testOrigin, l.verifier, l.checkpoint(0), nil); err != nil {
		t.Fatalf("Observe(0): %v", err)
	}
	// The empty tree is a prefix of every tree: no proof is needed, so nil will do.
	if _, err := w.Observe(t.Context(), testOrigin, l.verifier, l.checkpoint(4), nil); err != nil {
		t.Fatalf("Observe(4) after 0: %v", err)
	}
}

// TestObserveAccessLog witnesses a real access log, with the proofs it serves, and checks that
// an export with the witness's cosignature meets a cosignature policy in verify.
func TestObserveAccessLog(t *testing.T) {
	ctx := t.Context()
	db := openDB(t, "")
	origin := accesslog.OriginPrefix + "witnessed"
	signer, vkey, logVerifier := logKey(t, origin, generateKey(t))
	l, err := accesslog.New(accesslog.Config{CheckpointEvery: 1 << 20}, db, signer, vkey, origin, nil)
	if err != nil {
		t.Fatalf("accesslog.New: %v", err)
	}
	if err := l.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer l.Close(ctx)
	c, _ := newCosigner(t, witnessName)
	w := newWitness(t, db, c, Config{})
	proof := func(ctx context.Context, oldSize, newSize int64) (tlog.TreeProof, error) {
		return l.ConsistencyProof(ctx, oldSize, newSize)
	}
	for round, n := range []int{3, 10, 1} {
		for i := range n {
			e := &verify.Entry{Event: verify.EventAccessDecision, Action: "token-request", Outcome: verify.OutcomeGranted, TokenID: fmt.Sprintf("t-%d-%d", round, i)}
			if _, err := l.Append(ctx, e); err != nil {
				t.Fatalf("Append: %v", err)
			}
		}
		size, err := l.CheckpointNow(ctx)
		if err != nil {
			t.Fatalf("CheckpointNow: %v", err)
		}
		msg, err := l.Checkpoint(ctx, size)
		if err != nil {
			t.Fatalf("Checkpoint(%d): %v", size, err)
		}
		if _, err := w.Observe(ctx, origin, logVerifier, msg, proof); err != nil {
			t.Fatalf("Observe(%d): %v", size, err)
		}
	}

	dir := filepath.Join(t.TempDir(), "export")
	if err := l.Export(ctx, dir); err != nil {
		t.Fatalf("Export: %v", err)
	}
	policy := verify.Options{Witnesses: []string{c.VerifierKey()}, MinCosignatures: 1}
	if _, err := verify.VerifyExport(ctx, dir, policy); !errors.Is(err, verify.ErrInvalid) {
		t.Fatalf("VerifyExport before the cosignature is attached: %v, want ErrInvalid", err)
	}
	cosigned, err := w.Cosigned(ctx, origin, 14)
	if err != nil {
		t.Fatalf("Cosigned(14): %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, verify.CheckpointsDir, "14"), cosigned, 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := verify.VerifyExport(ctx, dir, policy)
	if err != nil || rep.Cosignatures != 1 || rep.Entries != 14 {
		t.Fatalf("VerifyExport = %+v, %v; want 14 entries and 1 cosignature", rep, err)
	}
}

func TestObserveForkSameSize(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	c, cv := newCosigner(t, witnessName)
	w := newWitness(t, db, c, Config{})
	honest := newMemLog(t, testOrigin).grow(8, "a")
	forked := honest.fork(3).grow(5, "b") // same key, entries 3 and 4 rewritten
	ctx := t.Context()

	a, err := w.Observe(ctx, testOrigin, honest.verifier, honest.checkpoint(5), honest.proof(nil))
	if err != nil {
		t.Fatalf("Observe(honest 5): %v", err)
	}
	b := forked.checkpoint(5)
	_, err = w.Observe(ctx, testOrigin, forked.verifier, b, forked.proof(nil))
	var fe *ForkError
	if !errors.As(err, &fe) || !errors.Is(err, ErrForked) {
		t.Fatalf("Observe(forked 5): %v, want a *ForkError", err)
	}
	want := Fork{Origin: testOrigin, A: a, B: b, Reason: "two checkpoints of size 5 with different roots", Detected: testClock}
	checkFork(t, fe.Fork, want)
	opened(t, fe.Fork.A, honest.verifier, cv)
	opened(t, fe.Fork.B, honest.verifier)

	// Refused from now on, also the honest log's next checkpoint, also after a restart.
	if _, err := w.Observe(ctx, testOrigin, honest.verifier, honest.checkpoint(8), honest.proof(nil)); !errors.Is(err, ErrForked) {
		t.Fatalf("Observe(honest 8) after the fork: %v, want ErrForked", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	db = openDB(t, dir)
	w = newWitness(t, db, c, Config{})
	_, err = w.Observe(ctx, testOrigin, honest.verifier, honest.checkpoint(8), honest.proof(nil))
	if !errors.As(err, &fe) {
		t.Fatalf("Observe(honest 8) after reopening: %v, want a *ForkError", err)
	}
	checkFork(t, fe.Fork, want)
	forks, err := w.Forks(ctx)
	if err != nil || len(forks) != 1 {
		t.Fatalf("Forks = %v, %v; want one", forks, err)
	}
	checkFork(t, forks[0], want)
	if got, err := w.Latest(ctx, testOrigin); err != nil || !bytes.Equal(got, a) {
		t.Fatalf("Latest after the fork = %q, %v; want the last cosigned %q", got, err, a)
	}
}

func checkFork(t testing.TB, got, want Fork) {
	t.Helper()
	if got.Origin != want.Origin || !bytes.Equal(got.A, want.A) || !bytes.Equal(got.B, want.B) ||
		got.Reason != want.Reason || !got.Detected.Equal(want.Detected) || !slices.Equal(got.Proof, want.Proof) {
		t.Fatalf("fork = %+v\nwant %+v", got, want)
	}
}

func TestObserveForkByProof(t *testing.T) {
	honest := newMemLog(t, testOrigin).grow(9, "a")
	forked := honest.fork(3).grow(9, "b")
	badHash := func(ctx context.Context, oldSize, newSize int64) (tlog.TreeProof, error) {
		p, err := honest.proof(nil)(ctx, oldSize, newSize)
		if len(p) > 0 {
			p[0][0] ^= 1
		}
		return p, err
	}
	tooLong := func(context.Context, int64, int64) (tlog.TreeProof, error) {
		return make(tlog.TreeProof, maxProofHashes+1), nil
	}
	tests := []struct {
		name      string
		next      []byte // the checkpoint observed after honest size 5
		proof     ProofFunc
		wantProof bool // the evidence holds the proof
		reason    string
	}{
		{"rewritten log, its own proof", forked.checkpoint(9), forked.proof(nil), true,
			"the log's consistency proof from size 5 to 9 does not verify: "},
		{"rewritten log, the honest log's proof", forked.checkpoint(9), honest.proof(nil), true,
			"the log's consistency proof from size 5 to 9 does not verify: "},
		{"consistent checkpoint, a proof with a changed hash", honest.checkpoint(8), badHash, true,
			"the log's consistency proof from size 5 to 8 does not verify: "},
		{"proof longer than any", honest.checkpoint(8), tooLong, false,
			"the log's consistency proof from size 5 to 8 has 129 hashes, more than any such proof"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newCosigner(t, witnessName)
			w := newWitness(t, openDB(t, ""), c, Config{})
			a, err := w.Observe(t.Context(), testOrigin, honest.verifier, honest.checkpoint(5), nil)
			if err != nil {
				t.Fatalf("Observe(5): %v", err)
			}
			_, err = w.Observe(t.Context(), testOrigin, honest.verifier, tc.next, tc.proof)
			var fe *ForkError
			if !errors.As(err, &fe) {
				t.Fatalf("Observe: %v, want a *ForkError", err)
			}
			f := fe.Fork
			b, _, _ := bytes.Cut(tc.next, []byte("\n\n"))
			if !bytes.Equal(f.A, a) || !bytes.HasPrefix(f.B, b) || len(f.Reason) < len(tc.reason) || f.Reason[:len(tc.reason)] != tc.reason {
				t.Fatalf("fork = %+v", f)
			}
			if (len(f.Proof) > 0) != tc.wantProof {
				t.Fatalf("fork proof %v, want one: %v", f.Proof, tc.wantProof)
			}
			if _, err := w.Observe(t.Context(), testOrigin, honest.verifier, honest.checkpoint(8), honest.proof(nil)); !errors.Is(err, ErrForked) {
				t.Fatalf("Observe after the fork: %v, want ErrForked", err)
			}
		})
	}
}

// TestObserveForkAgainstHistory shows that a smaller checkpoint contradicting one the witness
// kept is a fork, not merely stale.
func TestObserveForkAgainstHistory(t *testing.T) {
	honest := newMemLog(t, testOrigin).grow(8, "a")
	forked := honest.fork(1).grow(3, "b")
	c, _ := newCosigner(t, witnessName)
	w := newWitness(t, openDB(t, ""), c, Config{})
	ctx := t.Context()
	a, err := w.Observe(ctx, testOrigin, honest.verifier, honest.checkpoint(3), nil)
	if err != nil {
		t.Fatalf("Observe(3): %v", err)
	}
	if _, err := w.Observe(ctx, testOrigin, honest.verifier, honest.checkpoint(8), honest.proof(nil)); err != nil {
		t.Fatalf("Observe(8): %v", err)
	}
	if _, err := w.Observe(ctx, testOrigin, honest.verifier, honest.checkpoint(3), nil); !errors.Is(err, ErrStale) {
		t.Fatalf("Observe(3) again: %v, want ErrStale", err)
	}
	_, err = w.Observe(ctx, testOrigin, honest.verifier, forked.checkpoint(3), nil)
	var fe *ForkError
	if !errors.As(err, &fe) || !bytes.Equal(fe.Fork.A, a) || !bytes.Equal(fe.Fork.B, forked.checkpoint(3)) {
		t.Fatalf("Observe(forked 3): %v, want a fork against the kept checkpoint of size 3", err)
	}
}

func TestObserveProofUnavailable(t *testing.T) {
	db := openDB(t, "")
	c, _ := newCosigner(t, witnessName)
	w := newWitness(t, db, c, Config{})
	l := newMemLog(t, testOrigin).grow(8, "a")
	if _, err := w.Observe(t.Context(), testOrigin, l.verifier, l.checkpoint(5), nil); err != nil {
		t.Fatalf("Observe(5): %v", err)
	}
	before := dump(t, db)
	unreachable := errors.New("peer unreachable")
	for _, p := range []ProofFunc{
		nil,
		func(context.Context, int64, int64) (tlog.TreeProof, error) { return nil, unreachable },
	} {
		if _, err := w.Observe(t.Context(), testOrigin, l.verifier, l.checkpoint(8), p); !errors.Is(err, ErrProof) || errors.Is(err, ErrForked) {
			t.Fatalf("Observe(8) without a proof: %v, want ErrProof", err)
		}
	}
	sameDump(t, "Observe without a proof", before, dump(t, db))
	if _, err := w.Observe(t.Context(), testOrigin, l.verifier, l.checkpoint(8), l.proof(nil)); err != nil {
		t.Fatalf("Observe(8) with the proof: %v", err)
	}
}

func TestObserveInvalid(t *testing.T) {
	l := newMemLog(t, testOrigin).grow(8, "a")
	impostor := newMemLog(t, testOrigin).grow(8, "a") // same origin, another key
	other := newMemLog(t, "schakel.nl/log/other").grow(8, "a")
	good := l.checkpoint(8)
	body, _, _ := bytes.Cut(good, []byte("\n\n"))
	withBody := func(text string) []byte {
		msg, err := note.Sign(&note.Note{Text: text}, l.signer)
		if err != nil {
			t.Fatalf("note.Sign: %v", err)
		}
		return msg
	}
	tests := []struct {
		name     string
		origin   string
		verifier note.Verifier
		msg      []byte
	}{
		{"signed by another key", testOrigin, l.verifier, impostor.checkpoint(8)},
		{"another log's checkpoint", testOrigin, l.verifier, other.checkpoint(8)},
		{"origin asked differs from the log key's", "schakel.nl/log/other", l.verifier, good},
		{"origin asked differs, with that log's key", "schakel.nl/log/other", other.verifier, good},
		{"no verifier", testOrigin, nil, good},
		{"empty origin", "", l.verifier, good},
		{"origin too long", string(make([]byte, 300)), l.verifier, good},
		{"extension line", testOrigin, l.verifier, withBody(string(body) + "\nextra\n")},
		{"not a checkpoint", testOrigin, l.verifier, withBody("hello\n")},
		{"body changed after signing", testOrigin, l.verifier, bytes.Replace(good, []byte("\n8\n"), []byte("\n9\n"), 1)},
		{"no signature block", testOrigin, l.verifier, append(body, '\n')},
		{"too large", testOrigin, l.verifier, append(bytes.Repeat([]byte("x"), verify.MaxCheckpointSize), good...)},
		{"empty", testOrigin, l.verifier, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db := openDB(t, "")
			c, _ := newCosigner(t, witnessName)
			w := newWitness(t, db, c, Config{})
			if _, err := w.Observe(t.Context(), testOrigin, l.verifier, l.checkpoint(5), nil); err != nil {
				t.Fatalf("Observe(5): %v", err)
			}
			before := dump(t, db)
			if _, err := w.Observe(t.Context(), tc.origin, tc.verifier, tc.msg, l.proof(nil)); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Observe: %v, want ErrInvalid", err)
			}
			sameDump(t, "an invalid Observe", before, dump(t, db))
		})
	}
}

// TestObserveDropsUnverifiedLines shows that lines the witness cannot check do not travel on
// with its cosignature.
func TestObserveDropsUnverifiedLines(t *testing.T) {
	l := newMemLog(t, testOrigin).grow(5, "a")
	stranger, _ := newCosigner(t, "witness.example/stranger")
	c, cv := newCosigner(t, witnessName)
	w := newWitness(t, openDB(t, ""), c, Config{})
	got, err := w.Observe(t.Context(), testOrigin, l.verifier, l.checkpoint(5, stranger), nil)
	if err != nil {
		t.Fatalf("Observe: %v", err)
	}
	n, err := verify.SplitNote(got)
	if err != nil || len(n.UnverifiedSigs) != 2 {
		t.Fatalf("Observe returned %q, want the log's signature and the cosignature only", got)
	}
	opened(t, got, l.verifier, cv)
}

func TestAddCosignatures(t *testing.T) {
	ctx := t.Context()
	l := newMemLog(t, testOrigin).grow(8, "a")
	c1, cv1 := newCosigner(t, "witness.example/w1")
	c2, cv2 := newCosigner(t, "witness.example/w2")
	c3, cv3 := newCosigner(t, "witness.example/w3")
	w1 := newWitness(t, openDB(t, ""), c1, Config{})
	w2 := newWitness(t, openDB(t, ""), c2, Config{})
	w3 := newWitness(t, openDB(t, ""), c3, Config{})
	observe := func(w *Witness, size int64) []byte {
		t.Helper()
		msg, err := w.Observe(ctx, testOrigin, l.verifier, l.checkpoint(size), l.proof(nil))
		if err != nil {
			t.Fatalf("Observe(%d): %v", size, err)
		}
		return msg
	}
	observe(w1, 5)
	by2 := observe(w2, 5)
	by3 := observe(w3, 5)
	observe(w1, 8)
	peers := []note.Verifier{cv2, cv3}

	// A cosignature of size 5, which is no longer w1's latest, by a known witness.
	if n, err := w1.AddCosignatures(ctx, testOrigin, by2, peers); err != nil || n != 1 {
		t.Fatalf("AddCosignatures(w2's) = %d, %v; want 1", n, err)
	}
	// Again: already there.
	if n, err := w1.AddCosignatures(ctx, testOrigin, by2, peers); err != nil || n != 0 {
		t.Fatalf("AddCosignatures(w2's) again = %d, %v; want 0", n, err)
	}
	// By a witness the caller does not name: skipped.
	if n, err := w1.AddCosignatures(ctx, testOrigin, by3, []note.Verifier{cv2}); err != nil || n != 0 {
		t.Fatalf("AddCosignatures(w3's) without w3's key = %d, %v; want 0", n, err)
	}
	// A forged line under w3's name and key hash: skipped.
	forged := newCosignerNamed(t, "witness.example/w3", c3.KeyHash())
	if n, err := w1.AddCosignatures(ctx, testOrigin, l.checkpoint(5, forged), peers); err != nil || n != 0 {
		t.Fatalf("AddCosignatures(forged) = %d, %v; want 0", n, err)
	}
	merged, err := w1.Cosigned(ctx, testOrigin, 5)
	if err != nil {
		t.Fatalf("Cosigned(5): %v", err)
	}
	if names := opened(t, merged, l.verifier, cv1, cv2, cv3); !slices.Equal(names, []string{testOrigin, "witness.example/w1", "witness.example/w2"}) {
		t.Fatalf("Cosigned(5) is signed by %v", names)
	}
	ws, _ := verify.ParseWitnesses([]string{c1.VerifierKey(), c2.VerifierKey(), c3.VerifierKey()})
	n, _ := verify.SplitNote(merged)
	if got := ws.Count(n.Text, n.UnverifiedSigs); got != 2 {
		t.Fatalf("Count(Cosigned(5)) = %d, want 2", got)
	}

	// Onto the latest: Observe of the same checkpoint then returns every cosignature.
	if n, err := w1.AddCosignatures(ctx, testOrigin, observe(w3, 8), peers); err != nil || n != 1 {
		t.Fatalf("AddCosignatures(w3's 8) = %d, %v; want 1", n, err)
	}
	latest := observe(w1, 8)
	if names := opened(t, latest, l.verifier, cv1, cv2, cv3); !slices.Equal(names, []string{testOrigin, "witness.example/w1", "witness.example/w3"}) {
		t.Fatalf("Observe(8) after AddCosignatures is signed by %v", names)
	}

	// Checkpoints w1 did not cosign, or with another body, or of another log.
	if _, err := w1.AddCosignatures(ctx, testOrigin, observe(w2, 7), peers); !errors.Is(err, ErrNotFound) {
		t.Fatalf("AddCosignatures(size 7) = %v, want ErrNotFound", err)
	}
	forkedL := l.fork(2).grow(8, "b")
	other, err := note.Sign(&note.Note{Text: string(verify.FormatCheckpoint(testOrigin, 8, forkedL.root(8)))}, c2)
	if err != nil {
		t.Fatalf("note.Sign: %v", err)
	}
	if _, err := w1.AddCosignatures(ctx, testOrigin, other, peers); !errors.Is(err, ErrInvalid) {
		t.Fatalf("AddCosignatures(another body) = %v, want ErrInvalid", err)
	}
	if _, err := w1.AddCosignatures(ctx, "schakel.nl/log/other", by2, peers); !errors.Is(err, ErrInvalid) {
		t.Fatalf("AddCosignatures(another origin) = %v, want ErrInvalid", err)
	}
	if _, err := w1.AddCosignatures(ctx, testOrigin, []byte("garbage"), peers); !errors.Is(err, ErrInvalid) {
		t.Fatalf("AddCosignatures(garbage) = %v, want ErrInvalid", err)
	}
}

// newCosignerNamed returns a signer that claims name and hash but signs with a key of its own.
func newCosignerNamed(t testing.TB, name string, hash uint32) note.Signer {
	c, _ := newCosigner(t, name)
	return fakeHash{c, hash}
}

type fakeHash struct {
	*Cosigner
	hash uint32
}

func (f fakeHash) KeyHash() uint32 { return f.hash }

func TestAddCosignaturesBounded(t *testing.T) {
	ctx := t.Context()
	l := newMemLog(t, testOrigin).grow(5, "a")
	c, _ := newCosigner(t, witnessName)
	w := newWitness(t, openDB(t, ""), c, Config{})
	if _, err := w.Observe(ctx, testOrigin, l.verifier, l.checkpoint(5), nil); err != nil {
		t.Fatalf("Observe: %v", err)
	}
	var signers []note.Signer
	var verifiers []note.Verifier
	for i := range 40 {
		s, v := newCosigner(t, "witness.example/w"+strconv.Itoa(i))
		signers, verifiers = append(signers, s), append(verifiers, v)
	}
	n, err := w.AddCosignatures(ctx, testOrigin, l.checkpoint(5, signers...), verifiers)
	if err != nil || n != maxSignatures-2 {
		t.Fatalf("AddCosignatures of 40 = %d, %v; want %d", n, err, maxSignatures-2)
	}
	got, _ := w.Latest(ctx, testOrigin)
	if sn, err := verify.SplitNote(got); err != nil || len(sn.UnverifiedSigs) != maxSignatures {
		t.Fatalf("Latest has %d lines, %v; want %d", len(sn.UnverifiedSigs), err, maxSignatures)
	}
}

func TestHistory(t *testing.T) {
	ctx := t.Context()
	l := newMemLog(t, testOrigin).grow(6, "a")
	c, _ := newCosigner(t, witnessName)
	w := newWitness(t, openDB(t, ""), c, Config{History: 2})
	for size := int64(1); size <= 6; size++ {
		if _, err := w.Observe(ctx, testOrigin, l.verifier, l.checkpoint(size), l.proof(nil)); err != nil {
			t.Fatalf("Observe(%d): %v", size, err)
		}
	}
	for size := int64(1); size <= 6; size++ {
		_, err := w.Cosigned(ctx, testOrigin, size)
		if kept := size >= 5; kept != (err == nil) || !kept && !errors.Is(err, ErrNotFound) {
			t.Fatalf("Cosigned(%d): %v; kept: %v", size, err, kept)
		}
	}
}

func TestNewInvalid(t *testing.T) {
	c, _ := newCosigner(t, witnessName)
	db := openDB(t, "")
	tests := []struct {
		name   string
		cfg    Config
		db     *store.DB
		signer note.Signer
	}{
		{"no store", Config{}, nil, c},
		{"no signer", Config{}, db, nil},
		{"name not the signer's", Config{Name: "witness.example/other"}, db, c},
		{"negative history", Config{History: -1}, db, c},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg, tc.db, tc.signer); !errors.Is(err, ErrConfig) {
				t.Fatalf("New: %v, want ErrConfig", err)
			}
		})
	}
}

// TestObserveConcurrent observes one log's checkpoints from many goroutines in any order: the
// witness ends at the largest, without a fork, and each call either cosigns or is stale.
func TestObserveConcurrent(t *testing.T) {
	ctx := t.Context()
	l := newMemLog(t, testOrigin).grow(32, "a")
	c, _ := newCosigner(t, witnessName)
	w := newWitness(t, openDB(t, ""), c, Config{})
	msgs := make([][]byte, 33)
	for i := range msgs {
		msgs[i] = l.checkpoint(int64(i))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8*len(msgs))
	for g := range 8 {
		wg.Go(func() {
			for i := range msgs {
				size := (i*7 + g*5) % len(msgs)
				if _, err := w.Observe(ctx, testOrigin, l.verifier, msgs[size], l.proof(nil)); err != nil && !errors.Is(err, ErrStale) {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Observe: %v", err)
	}
	got, err := w.Latest(ctx, testOrigin)
	if err != nil {
		t.Fatalf("Latest: %v", err)
	}
	if c, err := verify.OpenCheckpoint(got, l.verifier); err != nil || c.Size != 32 {
		t.Fatalf("Latest = %+v, %v; want size 32", c, err)
	}
	if len(w.locks.m) != 0 {
		t.Fatalf("%d origin locks left", len(w.locks.m))
	}
}
