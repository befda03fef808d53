package witness

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/schakel-health/schakel/internal/accesslog/verify"
	"github.com/schakel-health/schakel/internal/store"
)

// fuzzSeed returns the 32-byte seed b, b+1, …: the fuzz test's keys are fixed, so that the
// signed checkpoints in its seed corpus stay valid.
func fuzzSeed(b byte) []byte {
	s := make([]byte, 32)
	for i := range s {
		s[i] = b + byte(i)
	}
	return s
}

// FuzzObserve feeds arbitrary bytes to Observe, after the witness cosigned the log's checkpoint
// of size 5, and checks that it never panics, that what it cosigns is a checkpoint the log
// signed and that is consistent with the log (the fuzzer cannot sign as the log, so it can
// only replay the log's own checkpoints), that it never reports a fork (which takes two
// contradicting checkpoints signed by the log), and that whatever it refuses leaves storage as
// it was.
func FuzzObserve(f *testing.F) {
	if _, err := os.Stat("testdata/fuzz/FuzzObserve"); err != nil {
		f.Fatalf("seed corpus: %v", err)
	}
	l := newMemLogKey(f, testOrigin, seedKey(f, fuzzSeed(1))).grow(12, "a")
	c, err := NewCosigner(witnessName, seedKey(f, fuzzSeed(2)), fixedNow)
	if err != nil {
		f.Fatalf("NewCosigner: %v", err)
	}
	cv := cosignatureVerifier(f, c.VerifierKey())
	db := openDB(f, "")
	// memLog reports to f, which the fuzz function MUST NOT use: compute what it needs here.
	base := l.checkpoint(5)
	var roots [13]tlog.Hash
	for i := range roots {
		roots[i] = l.root(int64(i))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		err := db.Update(t.Context(), func(tx *store.Txn) error {
			var keys [][]byte
			if err := tx.Iterate(ns, nil, store.IterOptions{KeysOnly: true}, func(k, _ []byte) error {
				keys = append(keys, k)
				return nil
			}); err != nil {
				return err
			}
			for _, k := range keys {
				if err := tx.Delete(ns, k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("reset: %v", err)
		}
		w := newWitness(t, db, c, Config{})
		if _, err := w.Observe(t.Context(), testOrigin, l.verifier, base, l.proof(nil)); err != nil {
			t.Fatalf("Observe(5): %v", err)
		}
		before := dump(t, db)
		out, err := w.Observe(t.Context(), testOrigin, l.verifier, msg, l.proof(nil))
		switch {
		case err == nil:
			cp, err := verify.OpenCheckpoint(msg, l.verifier)
			if err != nil {
				t.Fatalf("Observe cosigned %q, which does not open: %v", msg, err)
			}
			if cp.Size < 5 || cp.Size > 12 || cp.Root != roots[cp.Size] {
				t.Fatalf("Observe cosigned %+v, not a checkpoint of the log from size 5", cp)
			}
			names := opened(t, out, l.verifier, cv)
			body, _, _ := bytes.Cut(msg, []byte("\n\n"))
			if len(names) != 2 || !bytes.HasPrefix(out, append(body, '\n', '\n')) {
				t.Fatalf("Observe returned %q for %q", out, msg)
			}
		case errors.Is(err, ErrForked):
			t.Fatalf("Observe(%q) reported a fork: %v", msg, err)
		default:
			sameDump(t, "a refused Observe", before, dump(t, db))
		}
	})
}
