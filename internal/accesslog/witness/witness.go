package witness

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/schakel-health/schakel/internal/accesslog/verify"
	"github.com/schakel-health/schakel/internal/store"
)

// Errors returned by this package, wrapped with context; compare with errors.Is.
var (
	// ErrConfig reports an invalid Config or constructor argument.
	ErrConfig = errors.New("invalid witness configuration")
	// ErrInvalid reports a checkpoint that is not a checkpoint of the log asked about: too
	// large, malformed, not signed by the log's key, or of another origin. Nothing is stored.
	ErrInvalid = errors.New("invalid checkpoint")
	// ErrStale reports a checkpoint smaller than the latest one the witness cosigned for that
	// log. A witness only moves forward; nothing is stored.
	ErrStale = errors.New("stale checkpoint")
	// ErrForked reports a log that signed two checkpoints no single append-only log can have
	// signed. The witness keeps the evidence (Forks) and never cosigns that log again; Observe
	// returns it as a *ForkError.
	ErrForked = errors.New("log forked")
	// ErrProof reports that the consistency proof could not be obtained. It says nothing about
	// the log; nothing is stored and the checkpoint may be observed again.
	ErrProof = errors.New("consistency proof unavailable")
	// ErrNotFound reports an origin the witness does not follow, or a tree size it has no
	// cosigned checkpoint of.
	ErrNotFound = errors.New("not found")
	// ErrCorrupt reports storage that does not hold what this package wrote.
	ErrCorrupt = errors.New("witness storage corrupt")
)

// ns holds every key of this package (see the kind constants).
var ns = store.MustNamespace("witness")

// Keys in ns. An origin never contains a 0x00 byte (a note key name has no control
// characters), so the byte ends the origin in a checkpoint key and no origin's keys are a
// prefix of another's.
const (
	kindCheckpoint = 'c' // 'c' origin 0x00 size (u64 big-endian) → the cosigned note
	kindCount      = 'n' // 'n' origin → u64 big-endian: how many checkpoints of origin are kept
	kindFork       = 'f' // 'f' origin → the fork's evidence, forkRecord as JSON
)

// Limits on input.
const (
	// maxOriginSize bounds an origin, as the access log does: "schakel.nl/log/" and a DID
	// suffix take about 60 bytes.
	maxOriginSize = 255
	// maxProofHashes bounds a consistency proof: one between trees of fewer than 2^63 leaves
	// has at most about 2×63 hashes, and far fewer in practice.
	maxProofHashes = 128
	// maxSignatures bounds the signature lines of a stored note: the log's, this witness's and
	// the other witnesses' cosignatures. note.Open refuses more than 100.
	maxSignatures = 32
)

// Config configures a Witness. The zero value of every field means its default.
type Config struct {
	// Name is the witness's name on its cosignature lines, such as its organisation's log
	// origin. It MUST equal the signer's name; empty means the signer's name.
	Name string

	// Now dates fork evidence. nil means time.Now. Cosignatures are dated by the signer's
	// own clock (NewCosigner).
	Now func() time.Time

	// History is how many cosigned checkpoints of each followed log are kept, the latest
	// included, for Cosigned and AddCosignatures; the oldest is deleted when a new one is
	// stored. Larger: an exporter finds every witness's cosignatures on older checkpoints too,
	// at about 0.5 KiB per checkpoint per log. Smaller: less storage, and only recent
	// checkpoints can collect cosignatures. 0 means 1024: nearly three hours of a log that
	// makes a checkpoint every 10 s.
	History int
}

const defaultHistory = 1024

// DefaultConfig returns the defaults, with Name left to the signer's.
func DefaultConfig() Config {
	return Config{Now: time.Now, History: defaultHistory}
}

// Witness watches other organisations' access logs: it cosigns each new checkpoint that is
// consistent with the previous one it saw, and keeps the evidence of a fork. Its state lives
// in the store, so a forked log stays forked across restarts. It is safe for concurrent use;
// calls about one log run one at a time. At most one Witness may use a store.DB.
type Witness struct {
	cfg    Config
	db     *store.DB
	signer note.Signer
	locks  originLocks
}

// New returns a Witness that keeps its state in db and cosigns with signer, which MUST make
// C2SP tlog-cosignature/v1 signatures (a *Cosigner). It starts nothing and writes nothing.
func New(cfg Config, db *store.DB, signer note.Signer) (*Witness, error) {
	switch {
	case db == nil:
		return nil, fmt.Errorf("witness: %w: no store", ErrConfig)
	case signer == nil:
		return nil, fmt.Errorf("witness: %w: no signer", ErrConfig)
	case cfg.Name == "":
		cfg.Name = signer.Name()
	}
	if cfg.Name != signer.Name() {
		return nil, fmt.Errorf("witness: %w: name %q, but the signer's is %q", ErrConfig, cfg.Name, signer.Name())
	}
	if cfg.History < 0 {
		return nil, fmt.Errorf("witness: %w: History %d is negative", ErrConfig, cfg.History)
	}
	if cfg.History == 0 {
		cfg.History = defaultHistory
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Witness{cfg: cfg, db: db, signer: signer, locks: originLocks{m: map[string]*originLock{}}}, nil
}

// Fork is the evidence that a log forked: two checkpoints signed by the log's key that no
// append-only log can both have signed.
type Fork struct {
	Origin string
	// A is the checkpoint the witness had cosigned, as stored (the log's signature and the
	// cosignatures); B is the one that contradicts it, with the log's signature only.
	A, B []byte
	// Proof is the consistency proof from A to B that did not verify, when that is how the
	// fork showed; empty when A and B have the same size and different roots, which needs no
	// proof.
	Proof []tlog.Hash
	// Reason says what contradicts what.
	Reason string
	// Detected is when the witness found it.
	Detected time.Time
}

// ForkError is the error for a forked log: it wraps ErrForked and carries the evidence, so the
// caller can raise the alarm and pass the evidence on.
type ForkError struct{ Fork Fork }

func (e *ForkError) Error() string {
	return fmt.Sprintf("witness: log %s forked: %s (detected %s)", e.Fork.Origin, e.Fork.Reason, e.Fork.Detected.Format(time.RFC3339))
}

// Unwrap makes errors.Is(err, ErrForked) hold.
func (e *ForkError) Unwrap() error { return ErrForked }

// ProofFunc fetches the RFC 6962 consistency proof from the log's tree of oldSize entries to
// its tree of newSize entries, 1 ≤ oldSize < newSize, as accesslog.Log.ConsistencyProof makes
// it. Its error means the proof could not be had (the log is unreachable, the context ended);
// a proof that does not verify is the log's fault.
type ProofFunc func(ctx context.Context, oldSize, newSize int64) (tlog.TreeProof, error)

// Observe checks a new checkpoint of the log origin, signed by the log's key logVerifier, and
// cosigns it when it is consistent with every checkpoint the witness cosigned before. It
// returns the note with the log's signature and this witness's cosignature (and the other
// witnesses' cosignatures AddCosignatures recorded); other signature lines of signedCheckpoint
// are dropped. logVerifier MUST come from a source the caller trusts, such as the
// organisation's DID document, and its name MUST be origin.
//
// Against the latest checkpoint the witness cosigned for origin:
//   - none (the first it sees): cosigned without a proof; the witness trusts the first one.
//   - the same checkpoint: the stored note is returned again, with its original cosignature.
//   - the same size, another root: a fork.
//   - smaller: ErrStale; a fork if the witness kept a checkpoint of that size with another root.
//   - larger: proof fetches the consistency proof from the latest (none is needed from the
//     empty tree); if it does not verify, a fork. An error from proof is returned wrapped in
//     ErrProof, and nothing changes.
//
// On a fork the witness stores the evidence, marks the log forked, and returns a *ForkError;
// from then on, also after a restart, every Observe of that log returns the first evidence.
// An invalid checkpoint (ErrInvalid) changes nothing.
//
// Two checkpoints of one size with different roots prove a fork by themselves. A proof that
// does not verify proves only that whoever served it could not show consistency: the evidence
// keeps it, and an honest log could refute it with a valid proof. proof MUST therefore ask the
// log's own node, over a channel that authenticates it, so that nobody else can make the
// witness give up on an honest log.
func (w *Witness) Observe(ctx context.Context, origin string, logVerifier note.Verifier, signedCheckpoint []byte, proof ProofFunc) ([]byte, error) {
	if err := checkOrigin(origin); err != nil {
		return nil, fmt.Errorf("witness: observe: %w", err)
	}
	if logVerifier == nil || logVerifier.Name() != origin {
		return nil, fmt.Errorf("witness: observe %s: %w: the log key MUST be named after the origin", origin, ErrInvalid)
	}
	c, n, err := verify.OpenCheckpointNote(signedCheckpoint, logVerifier)
	if err != nil {
		return nil, fmt.Errorf("witness: observe %s: %w: %w", origin, ErrInvalid, err)
	}
	// Keep the log's signature only: the other lines are unverified here.
	logSigned, err := note.Sign(&note.Note{Text: n.Text, Sigs: n.Sigs})
	if err != nil {
		return nil, fmt.Errorf("witness: observe %s: %w: %w", origin, ErrInvalid, err)
	}
	unlock, err := w.locks.lock(ctx, origin)
	if err != nil {
		return nil, fmt.Errorf("witness: observe %s: %w", origin, err)
	}
	defer unlock()

	st, err := w.load(ctx, origin, c.Size)
	if err != nil {
		return nil, fmt.Errorf("witness: observe %s: %w", origin, err)
	}
	if st.fork != nil {
		return nil, &ForkError{Fork: *st.fork}
	}
	if st.latest != nil {
		old := st.latest.cp
		switch {
		case c.Size == old.Size && c.Root == old.Root:
			return st.latest.note, nil
		case c.Size == old.Size:
			return nil, w.fork(ctx, origin, st.latest.note, logSigned, nil, fmt.Sprintf("two checkpoints of size %d with different roots", c.Size))
		case c.Size < old.Size:
			if st.atSize != nil && st.atSize.cp.Root != c.Root {
				return nil, w.fork(ctx, origin, st.atSize.note, logSigned, nil, fmt.Sprintf("two checkpoints of size %d with different roots", c.Size))
			}
			return nil, fmt.Errorf("witness: observe %s: %w: size %d, but size %d was cosigned", origin, ErrStale, c.Size, old.Size)
		}
		if old.Size > 0 {
			if proof == nil {
				return nil, fmt.Errorf("witness: observe %s: %w: no proof function", origin, ErrProof)
			}
			p, err := proof(ctx, old.Size, c.Size)
			if err != nil {
				return nil, fmt.Errorf("witness: observe %s: %w (from size %d to %d): %w", origin, ErrProof, old.Size, c.Size, err)
			}
			if len(p) > maxProofHashes {
				return nil, w.fork(ctx, origin, st.latest.note, logSigned, nil,
					fmt.Sprintf("the log's consistency proof from size %d to %d has %d hashes, more than any such proof", old.Size, c.Size, len(p)))
			}
			if err := tlog.CheckTree(p, c.Size, c.Root, old.Size, old.Root); err != nil {
				return nil, w.fork(ctx, origin, st.latest.note, logSigned, p,
					fmt.Sprintf("the log's consistency proof from size %d to %d does not verify: %v", old.Size, c.Size, err))
			}
		}
	}
	cosigned, err := note.Sign(&note.Note{Text: n.Text, Sigs: n.Sigs}, w.signer)
	if err != nil {
		return nil, fmt.Errorf("witness: observe %s: cosign: %w", origin, err)
	}
	if err := w.store(ctx, origin, c.Size, cosigned); err != nil {
		return nil, fmt.Errorf("witness: observe %s: %w", origin, err)
	}
	return cosigned, nil
}

// stored is a checkpoint note the witness stored, parsed.
type stored struct {
	note []byte
	cp   verify.Checkpoint
}

// logState is what Observe needs to know about a log.
type logState struct {
	fork   *Fork
	latest *stored // the latest cosigned checkpoint
	atSize *stored // the cosigned checkpoint of the size observed, if kept
}

func (w *Witness) load(ctx context.Context, origin string, size int64) (logState, error) {
	var st logState
	err := w.db.View(ctx, func(tx *store.Txn) error {
		var err error
		if st.fork, err = readFork(tx, origin); err != nil {
			return err
		}
		if st.latest, err = latest(tx, origin); err != nil {
			return err
		}
		b, err := getIfAny(tx, checkpointKey(origin, size))
		if err != nil || b == nil {
			return err
		}
		s, err := parseStored(b)
		st.atSize = &s
		return err
	})
	return st, err
}

// latest returns the latest stored checkpoint of origin, or nil.
func latest(tx *store.Txn, origin string) (*stored, error) {
	var out *stored
	err := tx.Iterate(ns, checkpointPrefix(origin), store.IterOptions{Reverse: true, Limit: 1}, func(_, v []byte) error {
		s, err := parseStored(v)
		out = &s
		return err
	})
	return out, err
}

func parseStored(b []byte) (stored, error) {
	n, err := verify.SplitNote(b)
	if err != nil {
		return stored{}, fmt.Errorf("%w: stored checkpoint: %w", ErrCorrupt, err)
	}
	c, err := verify.ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return stored{}, fmt.Errorf("%w: stored checkpoint: %w", ErrCorrupt, err)
	}
	return stored{note: b, cp: c}, nil
}

// store keeps the cosigned note of size as origin's latest and deletes the oldest kept ones
// beyond Config.History. The transaction only writes values computed before it and counts
// afresh, so a retried Update does the same.
func (w *Witness) store(ctx context.Context, origin string, size int64, cosigned []byte) error {
	return w.db.Update(ctx, func(tx *store.Txn) error {
		count, err := keptCount(tx, origin)
		if err != nil {
			return err
		}
		if err := tx.Set(ns, checkpointKey(origin, size), cosigned); err != nil {
			return err
		}
		count++
		if excess := count - int64(w.cfg.History); excess > 0 {
			var old [][]byte
			err := tx.Iterate(ns, checkpointPrefix(origin), store.IterOptions{KeysOnly: true, Limit: int(excess)}, func(k, _ []byte) error {
				old = append(old, k)
				return nil
			})
			if err != nil {
				return err
			}
			for _, k := range old {
				if err := tx.Delete(ns, k); err != nil {
					return err
				}
			}
			count -= int64(len(old))
		}
		return tx.Set(ns, countKey(origin), binary.BigEndian.AppendUint64(nil, uint64(count)))
	})
}

// getIfAny returns the value of key in ns, or nil when there is none.
func getIfAny(tx *store.Txn, key []byte) ([]byte, error) {
	b, err := tx.Get(ns, key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	return b, err
}

func keptCount(tx *store.Txn, origin string) (int64, error) {
	b, err := getIfAny(tx, countKey(origin))
	switch {
	case err != nil || b == nil:
		return 0, err
	case len(b) != 8:
		return 0, fmt.Errorf("%w: count of %s is %d bytes", ErrCorrupt, origin, len(b))
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

// fork records the evidence that origin forked, unless evidence is already stored, and returns
// the stored evidence as a *ForkError.
func (w *Witness) fork(ctx context.Context, origin string, a, b []byte, proof tlog.TreeProof, reason string) error {
	f := Fork{Origin: origin, A: a, B: b, Proof: proof, Reason: reason, Detected: w.cfg.Now().UTC()}
	var kept *Fork
	err := w.db.Update(ctx, func(tx *store.Txn) error {
		var err error
		if kept, err = readFork(tx, origin); err != nil || kept != nil {
			return err
		}
		kept = &f
		return tx.Set(ns, forkKey(origin), encodeFork(f))
	})
	if err != nil {
		return fmt.Errorf("witness: record fork of %s (%s): %w", origin, reason, err)
	}
	return &ForkError{Fork: *kept}
}

// readFork returns the fork evidence stored for origin, or nil.
func readFork(tx *store.Txn, origin string) (*Fork, error) {
	b, err := getIfAny(tx, forkKey(origin))
	if err != nil || b == nil {
		return nil, err
	}
	f, err := decodeFork(b)
	return &f, err
}

// forkRecord is a Fork as stored: JSON, with a format version.
type forkRecord struct {
	V        int       `json:"v"`
	Origin   string    `json:"origin"`
	A        []byte    `json:"a"`
	B        []byte    `json:"b"`
	Proof    [][]byte  `json:"proof,omitempty"`
	Reason   string    `json:"reason"`
	Detected time.Time `json:"detected"`
}

const forkFormat = 1

func encodeFork(f Fork) []byte {
	r := forkRecord{V: forkFormat, Origin: f.Origin, A: f.A, B: f.B, Reason: f.Reason, Detected: f.Detected}
	for _, h := range f.Proof {
		r.Proof = append(r.Proof, h[:])
	}
	b, _ := json.Marshal(r) // cannot fail: every field encodes
	return b
}

func decodeFork(b []byte) (Fork, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var r forkRecord
	if err := dec.Decode(&r); err != nil {
		return Fork{}, fmt.Errorf("%w: fork record: %v", ErrCorrupt, err)
	}
	if r.V != forkFormat {
		return Fork{}, fmt.Errorf("%w: fork record format %d, this build reads %d", ErrCorrupt, r.V, forkFormat)
	}
	f := Fork{Origin: r.Origin, A: r.A, B: r.B, Reason: r.Reason, Detected: r.Detected}
	for _, h := range r.Proof {
		if len(h) != len(tlog.Hash{}) {
			return Fork{}, fmt.Errorf("%w: fork record: proof hash of %d bytes", ErrCorrupt, len(h))
		}
		f.Proof = append(f.Proof, tlog.Hash(h))
	}
	return f, nil
}

// AddCosignatures records other witnesses' cosignatures of a checkpoint this witness cosigned:
// each signature line of signedNote whose name and key hash match one of verifiers, and which
// that verifier accepts for the note's text, is added to the stored note of that size, so that
// Cosigned and Latest return it with every cosignature known. Lines already there (by the same
// name and key hash), by unknown keys or that do not verify are skipped; a note carries at most
// 32 signature lines. verifiers SHOULD be the cosignature verifiers
// (verify.NewCosignatureVerifier) of the witnesses the log's policy names. It returns how many
// lines it added.
//
// The note's body MUST be that of a checkpoint the witness cosigned and still keeps:
// otherwise ErrNotFound, or ErrInvalid when a kept checkpoint of that size has another body
// (which Observe would then report as a fork, if the log signed it).
func (w *Witness) AddCosignatures(ctx context.Context, origin string, signedNote []byte, verifiers []note.Verifier) (int, error) {
	if err := checkOrigin(origin); err != nil {
		return 0, fmt.Errorf("witness: add cosignatures: %w", err)
	}
	n, err := verify.SplitNote(signedNote)
	if err != nil {
		return 0, fmt.Errorf("witness: add cosignatures of %s: %w: %w", origin, ErrInvalid, err)
	}
	c, err := verify.ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return 0, fmt.Errorf("witness: add cosignatures of %s: %w: %w", origin, ErrInvalid, err)
	}
	if c.Origin != origin {
		return 0, fmt.Errorf("witness: add cosignatures of %s: %w: the checkpoint is of %s", origin, ErrInvalid, c.Origin)
	}
	var valid []note.Signature
	for _, s := range n.UnverifiedSigs {
		if verifies(verifiers, n.Text, s) {
			valid = append(valid, s)
		}
	}
	if len(valid) == 0 {
		return 0, nil
	}
	unlock, err := w.locks.lock(ctx, origin)
	if err != nil {
		return 0, fmt.Errorf("witness: add cosignatures of %s: %w", origin, err)
	}
	defer unlock()

	var added int
	err = w.db.Update(ctx, func(tx *store.Txn) error {
		added = 0
		key := checkpointKey(origin, c.Size)
		old, err := tx.Get(ns, key)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%w: no cosigned checkpoint of size %d kept", ErrNotFound, c.Size)
		}
		if err != nil {
			return err
		}
		merged, k, err := merge(old, n.Text, valid)
		if err != nil || k == 0 {
			return err
		}
		added = k
		return tx.Set(ns, key, merged)
	})
	if err != nil {
		return 0, fmt.Errorf("witness: add cosignatures of %s: %w", origin, err)
	}
	return added, nil
}

// verifies reports whether s is a signature line by one of verifiers that verifies for text.
func verifies(verifiers []note.Verifier, text string, s note.Signature) bool {
	for _, v := range verifiers {
		if v == nil || v.Name() != s.Name || v.KeyHash() != s.Hash {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(s.Base64)
		return err == nil && len(raw) > 4 && v.Verify([]byte(text), raw[4:])
	}
	return false
}

// merge returns the stored note old with the lines of add that it lacks, and how many it
// added, within maxSignatures lines and verify.MaxCheckpointSize bytes.
func merge(old []byte, text string, add []note.Signature) ([]byte, int, error) {
	n, err := verify.SplitNote(old)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: stored checkpoint: %w", ErrCorrupt, err)
	}
	if n.Text != text {
		return nil, 0, fmt.Errorf("%w: the checkpoint kept at this size has another body", ErrInvalid)
	}
	type id struct {
		name string
		hash uint32
	}
	have := map[id]bool{}
	for _, s := range n.UnverifiedSigs {
		have[id{s.Name, s.Hash}] = true
	}
	size, added := len(old), 0
	for _, s := range add {
		line := len("— \n") + len(s.Name) + 1 + len(s.Base64)
		if have[id{s.Name, s.Hash}] || len(n.UnverifiedSigs) >= maxSignatures || size+line > verify.MaxCheckpointSize {
			continue
		}
		have[id{s.Name, s.Hash}] = true
		n.UnverifiedSigs = append(n.UnverifiedSigs, s)
		size += line
		added++
	}
	if added == 0 {
		return nil, 0, nil
	}
	merged, err := note.Sign(n)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: merge: %w", ErrInvalid, err)
	}
	return merged, added, nil
}

// Latest returns the latest checkpoint the witness cosigned for origin, with every cosignature
// it knows, or ErrNotFound if it follows no log of that origin. A forked log's latest is the
// last one cosigned before the fork.
func (w *Witness) Latest(ctx context.Context, origin string) ([]byte, error) {
	if err := checkOrigin(origin); err != nil {
		return nil, fmt.Errorf("witness: latest: %w", err)
	}
	var out *stored
	err := w.db.View(ctx, func(tx *store.Txn) error {
		var err error
		out, err = latest(tx, origin)
		return err
	})
	switch {
	case err != nil:
		return nil, fmt.Errorf("witness: latest of %s: %w", origin, err)
	case out == nil:
		return nil, fmt.Errorf("witness: latest of %s: %w", origin, ErrNotFound)
	}
	return out.note, nil
}

// Cosigned returns the cosigned checkpoint of origin of the given tree size, with every
// cosignature the witness knows, for an exporter that attaches them to its checkpoints; or
// ErrNotFound when the witness did not cosign one of that size or no longer keeps it
// (Config.History).
func (w *Witness) Cosigned(ctx context.Context, origin string, size int64) ([]byte, error) {
	if err := checkOrigin(origin); err != nil {
		return nil, fmt.Errorf("witness: cosigned: %w", err)
	}
	var out []byte
	err := w.db.View(ctx, func(tx *store.Txn) error {
		var err error
		out, err = tx.Get(ns, checkpointKey(origin, size))
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("witness: checkpoint %d of %s: %w", size, origin, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("witness: checkpoint %d of %s: %w", size, origin, err)
	}
	return out, nil
}

// Followed returns the origins of the logs the witness has cosigned a checkpoint of, in
// byte order.
func (w *Witness) Followed(ctx context.Context) ([]string, error) {
	var out []string
	err := w.db.View(ctx, func(tx *store.Txn) error {
		return tx.Iterate(ns, []byte{kindCount}, store.IterOptions{KeysOnly: true}, func(k, _ []byte) error {
			out = append(out, string(k[1:]))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("witness: followed logs: %w", err)
	}
	return out, nil
}

// Forks returns the evidence of every fork the witness found, by origin.
func (w *Witness) Forks(ctx context.Context) ([]Fork, error) {
	var out []Fork
	err := w.db.View(ctx, func(tx *store.Txn) error {
		return tx.Iterate(ns, []byte{kindFork}, store.IterOptions{}, func(_, v []byte) error {
			f, err := decodeFork(v)
			out = append(out, f)
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("witness: forks: %w", err)
	}
	return out, nil
}

func checkOrigin(origin string) error {
	if origin == "" || len(origin) > maxOriginSize || strings.IndexByte(origin, 0) >= 0 {
		return fmt.Errorf("%w: origin %q: want 1 to %d bytes without NUL", ErrInvalid, origin, maxOriginSize)
	}
	return nil
}

func checkpointPrefix(origin string) []byte {
	k := make([]byte, 0, 1+len(origin)+1+8)
	k = append(k, kindCheckpoint)
	k = append(k, origin...)
	return append(k, 0)
}

func checkpointKey(origin string, size int64) []byte {
	return binary.BigEndian.AppendUint64(checkpointPrefix(origin), uint64(size))
}

func countKey(origin string) []byte { return append([]byte{kindCount}, origin...) }
func forkKey(origin string) []byte  { return append([]byte{kindFork}, origin...) }

// originLocks serialises the calls about one origin, so that the state Observe reads is still
// the state when it writes, even while it waits for a proof from the network. Waiting ends
// with the caller's context. An origin's lock is dropped when nobody holds or waits for it.
type originLocks struct {
	mu sync.Mutex
	m  map[string]*originLock
}

type originLock struct {
	ch   chan struct{} // holds a token while locked
	refs int           // holders and waiters
}

func (l *originLocks) lock(ctx context.Context, origin string) (unlock func(), err error) {
	l.mu.Lock()
	e := l.m[origin]
	if e == nil {
		e = &originLock{ch: make(chan struct{}, 1)}
		l.m[origin] = e
	}
	e.refs++
	l.mu.Unlock()
	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; l.release(origin, e) }, nil
	case <-ctx.Done():
		l.release(origin, e)
		return nil, ctx.Err()
	}
}

func (l *originLocks) release(origin string, e *originLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.refs--; e.refs == 0 {
		delete(l.m, origin)
	}
}
