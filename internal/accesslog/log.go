package accesslog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/schakel-health/schakel/internal/accesslog/verify"
	"github.com/schakel-health/schakel/internal/store"
)

// OriginPrefix starts every log's origin: "schakel.nl/log/" followed by the organisation's DID
// without "did:schakel:" (docs/ACCESSLOG.md).
const OriginPrefix = "schakel.nl/log/"

// Origin returns the origin of the access log of the organisation orgDID, a did:schakel
// identifier.
func Origin(orgDID string) (string, error) {
	id, ok := strings.CutPrefix(orgDID, "did:schakel:")
	if !ok || id == "" {
		return "", fmt.Errorf("accesslog: origin of %q: %w: not a did:schakel identifier", truncate(orgDID), ErrConfig)
	}
	o := OriginPrefix + id
	if err := checkOrigin(o); err != nil {
		return "", fmt.Errorf("accesslog: origin of %q: %w", truncate(orgDID), err)
	}
	return o, nil
}

// checkOrigin requires OriginPrefix, a non-empty rest and a valid signed-note key name (UTF-8
// without white space or '+'), since the origin is also the checkpoint key's name.
func checkOrigin(o string) error {
	rest, ok := strings.CutPrefix(o, OriginPrefix)
	switch {
	case !ok || rest == "":
		return fmt.Errorf("%w: origin %q does not start with %q and an identifier", ErrConfig, truncate(o), OriginPrefix)
	case len(o) > maxOriginSize:
		return fmt.Errorf("%w: origin of %d bytes exceeds %d", ErrConfig, len(o), maxOriginSize)
	case !utf8.ValidString(o) || strings.ContainsRune(o, '+') || strings.IndexFunc(o, unicode.IsSpace) >= 0 ||
		strings.IndexFunc(o, unicode.IsControl) >= 0:
		return fmt.Errorf("%w: origin %q is not a valid note key name", ErrConfig, truncate(o))
	}
	return nil
}

// Receipt is what Append returns once the entry is durable.
type Receipt struct {
	// Index is the entry's position in the log, from 0; the tree that includes it has at least
	// Index+1 leaves.
	Index int64
	// PatientSeq is the entry's per-patient sequence number, 0 when it names no patient.
	PatientSeq uint64
	// Time is the entry's time as recorded.
	Time string
	// LeafHash is the entry's RFC 6962 leaf hash, SHA-256(0x00 ‖ Entry).
	LeafHash tlog.Hash
	// Entry is the entry's bytes as stored: its canonical encoding and leaf data.
	Entry []byte
}

// request is one Append waiting for the committer.
type request struct {
	e       verify.Entry // a copy of the caller's entry, deep unless spliced; the committer fills the log's fields
	t       time.Time    // the caller's time, zero when the log dates the entry
	cost    txnCost      // upper bound of what the entry adds to a badger transaction
	tmpl    template     // the entry encoded by prepare, when spliced
	spliced bool
	with    *store.Batch // writes committed in the entry's transaction, or nil
	at      time.Time    // when Append was called: with's TTLs count from it
	state   atomic.Int32
	res     Receipt
	err     error
	done    chan struct{} // closed once res and err are set
}

// Log is one organisation's access log. It is safe for concurrent use.
type Log struct {
	cfg    Config
	db     *store.DB
	bdb    *badger.DB
	signer note.Signer
	vkey   string
	origin string
	logger *slog.Logger
	k      keys // keys within the namespace, for store transactions
	fk     keys // the same keys with the namespace prefix, for badger
	budget txnCost
	reg    openKey
	sp     splicer

	mu      sync.Mutex
	queue   []*request
	space   chan struct{} // when not nil, closed once the committer takes from a full queue
	started bool
	closing bool
	wake    chan struct{} // buffered 1: the queue has requests
	stop    chan struct{} // closed when closing begins
	stopped chan struct{} // closed when the committer has drained and exited

	// writeMu guards st, the committed state, and failErr. Checkpoints made outside the
	// committer's groups hold it while they write.
	writeMu sync.Mutex
	st      state
	failErr error
	failed  atomic.Bool
	// patients caches committed per-patient counters, so most appends need no read. Only the
	// committer uses it.
	patients map[string]uint64
	// hashes caches the upper levels of the tree for proofs.
	hashes *hashCache
	// size is the committed tree size, for readers.
	size atomic.Int64
	// groups counts the group transactions committed.
	groups atomic.Int64
	// testHookGroup, when set before Start, runs in the committer before each group is
	// written, with the number of requests in it.
	testHookGroup func(n int)

	closeOnce sync.Once
	closeErr  error
}

// maxCachedPatients bounds Log.patients; past it the cache is emptied and refilled on demand.
const maxCachedPatients = 1 << 16

// openKey names a log on a store; openLogs holds the logs open, so that two committers never
// write one log.
type openKey struct {
	db     *store.DB
	origin string
}

var openLogs = struct {
	sync.Mutex
	m map[openKey]bool
}{m: map[openKey]bool{}}

// New opens the access log with the given origin in db, reading its head and nothing else. signer
// signs checkpoints: its name MUST be origin, and vkey MUST be its note verifier key
// ("<origin>+<hash>+<base64>", as crypto.PublicKey.NoteVerifierKey returns), which Export writes
// for auditors. New starts no goroutine; Start does. Only one Log per origin may be open on a
// store at a time (ErrInUse). A nil logger means slog.Default().
func New(cfg Config, db *store.DB, signer note.Signer, vkey, origin string, logger *slog.Logger) (*Log, error) {
	cfg, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	if db == nil || signer == nil {
		return nil, fmt.Errorf("accesslog: new: %w: nil store or signer", ErrConfig)
	}
	if err := checkOrigin(origin); err != nil {
		return nil, fmt.Errorf("accesslog: new: %w", err)
	}
	if err := checkKeys(signer, vkey, origin); err != nil {
		return nil, fmt.Errorf("accesslog: new %s: %w", origin, err)
	}
	if logger == nil {
		logger = slog.Default()
	}
	l := &Log{
		cfg:      cfg,
		db:       db,
		bdb:      db.Badger(),
		signer:   signer,
		vkey:     vkey,
		origin:   origin,
		logger:   logger.With(slog.String("component", "accesslog"), slog.String("origin", origin)),
		k:        newKeys(origin),
		fk:       keys{log: ns.Key(newKeys(origin).log)},
		reg:      openKey{db: db, origin: origin},
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		stopped:  make(chan struct{}),
		patients: map[string]uint64{},
		hashes:   newHashCache(cfg.ProofCacheBytes),
	}
	l.budget = l.txnBudget()
	if l.sp = newSplicer(origin); !l.sp.ok {
		l.logger.Warn("entry splicing does not reproduce verify.Entry.Marshal; encoding in the committer")
	}
	st, err := l.load(context.Background())
	if err != nil {
		return nil, fmt.Errorf("accesslog: new %s: %w", origin, err)
	}
	l.st = st
	l.size.Store(st.size)
	openLogs.Lock()
	defer openLogs.Unlock()
	if openLogs.m[l.reg] {
		return nil, fmt.Errorf("accesslog: new %s: %w on this store", origin, ErrInUse)
	}
	openLogs.m[l.reg] = true
	return l, nil
}

// checkKeys requires that signer is named origin and that vkey is its verifier key: a probe
// message signed by signer verifies under vkey.
func checkKeys(signer note.Signer, vkey, origin string) error {
	if signer.Name() != origin {
		return fmt.Errorf("%w: signer named %q, want the origin", ErrConfig, truncate(signer.Name()))
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return fmt.Errorf("%w: verifier key: %v", ErrConfig, err)
	}
	if v.Name() != origin || v.KeyHash() != signer.KeyHash() {
		return fmt.Errorf("%w: verifier key %s+%08x does not name the signer %s+%08x", ErrConfig,
			truncate(v.Name()), v.KeyHash(), origin, signer.KeyHash())
	}
	probe := []byte("schakel access log key check\n")
	sig, err := signer.Sign(probe)
	if err != nil {
		return fmt.Errorf("%w: signer: %v", ErrConfig, err)
	}
	if !v.Verify(probe, sig) {
		return fmt.Errorf("%w: verifier key does not verify the signer's signature", ErrConfig)
	}
	return nil
}

// load reads the head and the latest checkpoint's size: two lookups, whatever the log's length.
func (l *Log) load(ctx context.Context) (state, error) {
	st := state{ckptSize: -1}
	err := l.db.View(ctx, func(tx *store.Txn) error {
		b, err := tx.Get(ns, l.k.head())
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		default:
			if st.head, err = decodeHead(b); err != nil {
				return err
			}
		}
		return tx.Iterate(ns, l.k.checkpointPrefix(), store.IterOptions{Reverse: true, KeysOnly: true, Limit: 1},
			func(key, _ []byte) error {
				size, err := sizeFromKey(key)
				st.ckptSize = size
				return err
			})
	})
	if err != nil {
		return st, err
	}
	switch {
	case st.size == 0:
		st.origin = l.origin
	case st.origin != l.origin:
		return st, fmt.Errorf("%w: the head under this log's id belongs to %q", ErrCorrupt, truncate(st.origin))
	default:
		st.lastT, _ = parseTime(st.lastTime)
	}
	st.stored = tlog.StoredHashCount(st.size)
	if st.ckptSize > st.size {
		return st, fmt.Errorf("%w: checkpoint of size %d beyond the head's size %d", ErrCorrupt, st.ckptSize, st.size)
	}
	return st, nil
}

// sizeFromKey returns the u64 at the end of a checkpoint or entry key.
func sizeFromKey(key []byte) (int64, error) {
	if len(key) < 8 {
		return 0, fmt.Errorf("%w: key %x", ErrCorrupt, key)
	}
	n := binary.BigEndian.Uint64(key[len(key)-8:])
	if n > 1<<62 {
		return 0, fmt.Errorf("%w: key %x", ErrCorrupt, key)
	}
	return int64(n), nil
}

// Origin returns the log's origin.
func (l *Log) Origin() string { return l.origin }

// VerifierKey returns the note verifier key of the log's checkpoints.
func (l *Log) VerifierKey() string { return l.vkey }

// Size returns the number of entries committed.
func (l *Log) Size() int64 { return l.size.Load() }

// Start starts the committer. It ends when Close is called or ctx ends, after committing every
// queued append and making a final checkpoint. Start after Close returns ErrClosed; a second
// Start does nothing.
func (l *Log) Start(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return fmt.Errorf("accesslog: start %s: %w", l.origin, ErrClosed)
	}
	if l.started {
		return nil
	}
	l.started = true
	go l.newCommitter().run(ctx)
	return nil
}

// Close stops accepting appends (they return ErrClosed), waits until every queued append is
// committed and acknowledged, makes a checkpoint of the final size if the latest does not cover
// it, and releases the origin for another New. Every Append that returned without error is then
// durable and covered by a checkpoint. Close is idempotent and safe to call concurrently; if ctx
// ends first it returns ctx's error while the drain goes on, and a later Close waits again. Close
// MUST return before the store is closed.
func (l *Log) Close(ctx context.Context) error {
	l.beginClose()
	l.mu.Lock()
	started := l.started
	l.mu.Unlock()
	if started {
		select {
		case <-l.stopped:
		case <-ctx.Done():
			return fmt.Errorf("accesslog: close %s: %w", l.origin, ctx.Err())
		}
	}
	l.closeOnce.Do(func() {
		if !started {
			l.closeErr = l.finalCheckpoint()
		}
		openLogs.Lock()
		delete(openLogs.m, l.reg)
		openLogs.Unlock()
	})
	return l.closeErr
}

func (l *Log) beginClose() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closing {
		l.closing = true
		close(l.stop)
	}
}

// finalCheckpoint makes a checkpoint of the committed size unless one exists.
func (l *Log) finalCheckpoint() error {
	if _, err := l.makeCheckpoint(1); err != nil {
		return fmt.Errorf("accesslog: close %s: final checkpoint: %w", l.origin, err)
	}
	return nil
}

// Append records e and returns once it is durable: written with the entries before it, in one
// fsynced transaction with its hashes and per-patient rows. The caller fills the content fields
// (event, action, outcome, requester, patient, ...); the log assigns v, origin, index, prev,
// patientSeq and, when e.Time is empty, the time. A time the caller sets MUST be RFC 3339 UTC
// with nine fractional digits and not before the previous entry's. e is not modified.
//
// An invalid entry fails with ErrInvalidEntry and nothing is queued. If ctx ends before the
// committer takes the entry, Append returns ctx's error and the entry is not written; once taken,
// Append waits for the result. When the queue holds Config.MaxQueue appends, Append waits for
// room.
func (l *Log) Append(ctx context.Context, e *verify.Entry) (Receipt, error) {
	return l.AppendWith(ctx, e, nil)
}

// AppendWith is Append with more writes, with, committed in the entry's transaction: both are
// durable or neither is. A node records the use of a token request's one-time identifier this
// way, with the decision it led to, for one fsync instead of two. A with that store.DB.Write
// would refuse fails the append before anything is queued. with MUST NOT change until
// AppendWith returns.
func (l *Log) AppendWith(ctx context.Context, e *verify.Entry, with *store.Batch) (Receipt, error) {
	if err := ctx.Err(); err != nil {
		return Receipt{}, fmt.Errorf("accesslog: append: %w", err)
	}
	r, err := l.prepare(e)
	if err != nil {
		return Receipt{}, fmt.Errorf("accesslog: append: %w", err)
	}
	if with != nil && with.Len() > 0 {
		if err := l.db.Check(with); err != nil {
			return Receipt{}, fmt.Errorf("accesslog: append: %w", err)
		}
		bytes, count := with.Cost()
		r.cost = r.cost.add(txnCost{bytes: bytes, count: count})
		if !r.cost.within(l.budget) {
			return Receipt{}, fmt.Errorf("accesslog: append: %w: %d more writes of %d bytes do not fit in one transaction", ErrInvalidEntry, count, bytes)
		}
		r.with, r.at = with, time.Now()
	}
	for queued := false; !queued; {
		l.mu.Lock()
		switch {
		case l.closing:
			l.mu.Unlock()
			return Receipt{}, fmt.Errorf("accesslog: append: %w", ErrClosed)
		case !l.started:
			l.mu.Unlock()
			return Receipt{}, fmt.Errorf("accesslog: append: %w", ErrNotStarted)
		case l.failed.Load():
			l.mu.Unlock()
			return Receipt{}, fmt.Errorf("accesslog: append: %w", ErrFailed)
		case len(l.queue) < l.cfg.MaxQueue:
			l.queue = append(l.queue, r)
			queued = true
			l.mu.Unlock()
			continue
		}
		if l.space == nil {
			l.space = make(chan struct{})
		}
		space := l.space
		l.mu.Unlock()
		select {
		case <-space:
		case <-l.stop:
		case <-ctx.Done():
			return Receipt{}, fmt.Errorf("accesslog: append: %w", ctx.Err())
		}
	}
	select {
	case l.wake <- struct{}{}:
	default:
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqQueued, reqAbandoned) {
			return Receipt{}, fmt.Errorf("accesslog: append: %w", ctx.Err())
		}
		<-r.done
	}
	return r.res, r.err
}
