// Package store owns the node's single badger database: namespaced keys, transactions,
// group-committed batched writes, TTL entries and the on-disk format version.
//
// Open returns a [DB]; subsystems read and write through [DB.View], [DB.Update] and, on hot paths,
// [DB.Write], which funnels every concurrent [Batch] through one committer goroutine so that a single
// fsync covers many writes. Every key lives in a [Namespace] owned by one subsystem.
//
// Imported by the internal/* subsystems and by node. It MUST NOT be imported by
// internal/accesslog/verify, which stands alone without storage.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Errors returned by this package. Callers MUST test for them with errors.Is: apart from
// ErrNotFound, which Txn.Get returns as is, they arrive wrapped with context.
var (
	// ErrNotFound reports that a key does not exist (or has expired).
	ErrNotFound = errors.New("not found")
	// ErrFormatVersion reports that the database on disk was written in a format this code does
	// not read. The message names the version found, the version expected and the directory.
	ErrFormatVersion = errors.New("unsupported storage format version")
	// ErrClosed reports a call on a DB after Close began.
	ErrClosed = errors.New("store closed")
	// ErrConflict reports that Update gave up after its retries on transaction conflicts.
	ErrConflict = errors.New("transaction conflict")
	// ErrTooLarge reports a value above Config.MaxValueSize, a key above badger's key limit, or a
	// single batch or transaction too large for one badger transaction. Nothing is written.
	ErrTooLarge = errors.New("value too large")
	// ErrNoSpace reports a write refused because the filesystem of the data directory has less
	// free space than Config.MinFreeSpace. Nothing is written; writes succeed again once space is
	// freed. The message gives the free space and the reserve.
	ErrNoSpace = errors.New("not enough free disk space")
)

// FormatVersion is the on-disk format this code reads and writes. It is stored under a reserved
// key in the "meta" namespace at first open; Open refuses a database with another version.
const FormatVersion = 1

const (
	defaultMaxValueSize = 1 << 20
	// maxMaxValueSize bounds Config.MaxValueSize well below badger's value log file size (1 GiB),
	// the hard limit for one value.
	maxMaxValueSize = 256 << 20

	// maxInMemoryValueThreshold is badger's largest ValueThreshold, which in memory bounds
	// every value.
	maxInMemoryValueThreshold = 1 << 20

	defaultMemTableSize         = 16 << 20
	defaultInMemoryMemTableSize = 8 << 20
	minMemTableSize             = 1 << 20

	// maxKeySize is badger's limit on a key, namespace prefix included.
	maxKeySize = 65000

	// blockCacheSize is the on-disk block cache. badger needs one because tables are
	// Snappy-compressed; 16 MiB keeps hot blocks of a modest node in memory without the 256 MiB
	// badger default.
	blockCacheSize = 16 << 20

	// updateRetries is how many times Update re-runs fn after a conflict before giving up.
	updateRetries = 8
	// updateBackoff scales the random pause before each retry: at most 100µs after the first
	// conflict, doubling up to 6.4ms.
	updateBackoff = 50 * time.Microsecond
)

// Config configures a DB. The zero value of every field means its default; DefaultConfig spells
// the defaults out.
type Config struct {
	// Dir is the data directory for badger's files. Required unless InMemory; ignored when
	// InMemory. Only one DB may have a directory open at a time (badger holds a lock file).
	Dir string

	// InMemory runs badger without files, for tests. Nothing survives Close and SyncWrites has
	// no effect.
	InMemory bool

	// SyncWrites makes every acknowledged write durable: badger fsyncs its logs before a commit
	// returns, so no acknowledged Write or Update is lost across kill -9 or power loss. nil means
	// true. Turning it off trades that guarantee for throughput; Write already amortises one
	// fsync over every batch in a group, so the gain is small where writes are concurrent.
	SyncWrites *bool

	// MaxValueSize is the largest value Set accepts, in bytes; larger values fail with
	// ErrTooLarge and nothing is written. 0 means 1 MiB; at most 256 MiB on disk. Larger values
	// cost memory in every group that carries them, and values above badger's value threshold
	// (1 MiB with the default MemTableSize, less with a small one) go to its value log, whose
	// space this package does not reclaim. In memory badger holds no value of 1 MiB or more, so
	// there the limit is at most 1 MiB − 1 byte (a larger MaxValueSize is refused) and a large
	// one needs a larger MemTableSize.
	MaxValueSize int

	// Logger receives badger's log lines (badger Info and Debug → slog Debug, Warning → Warn,
	// Error → Error) with attribute component=badger. nil means slog.Default() at Open.
	Logger *slog.Logger

	// MemTableSize is the size in bytes of one badger memtable. 0 means 16 MiB on disk and
	// 8 MiB in memory (larger if MaxValueSize needs it); at least 1 MiB. badger keeps up to
	// three memtables on disk (two in memory), each allocating about 1.3 × MemTableSize, and
	// limits one transaction to 15% of it (2.4 MiB by default): a write group larger than that
	// is split into several transactions, each with its own fsync. Larger: fewer L0 flushes and
	// fewer splits, more memory per DB. The defaults suit a 2-core node and tests that open many
	// in-memory DBs; in memory every value lives in the memtable, so MemTableSize must be at
	// least about 7 × MaxValueSize.
	MemTableSize int64

	// MinFreeSpace is the free space, in bytes, that writes leave on the filesystem of Dir: while
	// less is free, every write fails with ErrNoSpace before badger sees it. badger writes its
	// logs and tables through memory maps, so a write the filesystem cannot back is no error but
	// a SIGBUS that kills the process; the reserve keeps room for what badger writes on its own
	// (the rest of the current memtable's log, memtable flushes, compactions). 0 means
	// 4 × MemTableSize (64 MiB by default); negative turns the check off. Ignored in memory.
	MinFreeSpace int64
}

// DefaultConfig returns the defaults with Dir unset. MemTableSize stays zero because its default
// depends on InMemory.
func DefaultConfig() Config {
	on := true
	return Config{
		SyncWrites:   &on,
		MaxValueSize: defaultMaxValueSize,
		Logger:       slog.Default(),
	}
}

// resolve validates c and fills in defaults. It has no side effects.
func (c Config) resolve() (Config, error) {
	if !c.InMemory && c.Dir == "" {
		return c, errors.New("store: config: Dir is required unless InMemory")
	}
	if c.InMemory {
		c.Dir = ""
	}
	if c.SyncWrites == nil {
		on := true
		c.SyncWrites = &on
	}
	switch {
	case c.MaxValueSize < 0:
		return c, fmt.Errorf("store: config: MaxValueSize %d is negative", c.MaxValueSize)
	case c.MaxValueSize == 0:
		c.MaxValueSize = defaultMaxValueSize
	case c.MaxValueSize > maxMaxValueSize:
		return c, fmt.Errorf("store: config: MaxValueSize %d exceeds %d", c.MaxValueSize, maxMaxValueSize)
	}
	if c.InMemory && c.MaxValueSize > maxInMemoryValueThreshold {
		return c, fmt.Errorf("store: config: in memory, MaxValueSize %d exceeds %d", c.MaxValueSize, maxInMemoryValueThreshold)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	// In memory a value is never moved to the value log, so one value plus the largest key must
	// fit in badger's per-transaction limit of 15% of the memtable.
	minInMemory := (int64(c.valueLimit())+maxKeySize+64)*100/15 + 1
	switch {
	case c.MemTableSize < 0:
		return c, fmt.Errorf("store: config: MemTableSize %d is negative", c.MemTableSize)
	case c.MemTableSize == 0 && c.InMemory:
		c.MemTableSize = max(defaultInMemoryMemTableSize, minInMemory)
	case c.MemTableSize == 0:
		c.MemTableSize = defaultMemTableSize
	case c.MemTableSize < minMemTableSize:
		return c, fmt.Errorf("store: config: MemTableSize %d is below %d", c.MemTableSize, minMemTableSize)
	case c.InMemory && c.MemTableSize < minInMemory:
		return c, fmt.Errorf("store: config: in memory, MemTableSize %d cannot hold a value of MaxValueSize %d; need at least %d",
			c.MemTableSize, c.MaxValueSize, minInMemory)
	}
	switch {
	case c.InMemory || c.MinFreeSpace < 0:
		c.MinFreeSpace = -1
	case c.MinFreeSpace == 0:
		c.MinFreeSpace = 4 * c.MemTableSize
	}
	return c, nil
}

// valueLimit is the largest value a DB opened with the resolved Config accepts.
func (c Config) valueLimit() int {
	if c.InMemory {
		// badger admits a value equal to its value threshold in memory but then needs a value
		// log pointer it never made; keep values strictly below the threshold.
		return min(c.MaxValueSize, maxInMemoryValueThreshold-1)
	}
	return c.MaxValueSize
}

// badgerOptions maps a resolved Config onto badger's options.
func (c Config) badgerOptions() badger.Options {
	var opt badger.Options
	if c.InMemory {
		// Uncompressed in-memory tables need no block cache.
		opt = badger.DefaultOptions("").
			WithInMemory(true).
			WithCompression(options.None).
			WithBlockCacheSize(0).
			WithNumMemtables(2)
	} else {
		opt = badger.DefaultOptions(c.Dir).
			WithSyncWrites(*c.SyncWrites).
			WithBlockCacheSize(blockCacheSize).
			WithNumMemtables(3)
	}
	// Values below ValueThreshold live in the LSM tree, where compaction reclaims them once
	// overwritten or deleted; larger ones go to the value log, which only value-log GC reclaims
	// and nothing here runs. So the threshold is badger's maximum (1 MiB) unless the memtable is
	// small: badger refuses one above its per-transaction limit (15% of the memtable). In memory
	// the threshold is also the value size limit.
	valueThreshold := min(int64(maxInMemoryValueThreshold), c.MemTableSize*15/100/2)
	if c.InMemory {
		valueThreshold = int64(c.valueLimit()) + 1
	}
	return opt.
		WithMemTableSize(c.MemTableSize).
		WithValueThreshold(valueThreshold).
		WithNumCompactors(2).
		WithMetricsEnabled(false).
		WithLogger(slogLogger{l: c.Logger})
}

// DB is the node's database. It is safe for concurrent use. Open starts its committer goroutine;
// Close stops it.
type DB struct {
	bdb          *badger.DB
	maxValueSize int
	dir          string
	// minFree is the resolved Config.MinFreeSpace, negative when the check is off.
	minFree int64

	reqs          chan *writeReq
	stop          chan struct{}
	committerDone chan struct{}

	mu     sync.Mutex
	closed bool
	// active counts View, Update, Write and Sync calls in flight; Close waits for it.
	active sync.WaitGroup

	closeOnce sync.Once
	closeErr  error

	// groups counts the badger transactions the committer has committed.
	groups atomic.Int64
	// testHookGroup, when set before the first Write, runs in the committer before each group
	// is written, with the number of batches in it.
	testHookGroup func(batches int)
}

// metaNS is the reserved namespace for the store's own keys.
var metaNS = Namespace{prefix: "meta\x00"}

var formatVersionKey = metaNS.Key([]byte("format-version"))

// Open validates cfg, opens badger, checks or records FormatVersion and starts the committer. It
// fails with ErrNoSpace, opening nothing, when the filesystem of Dir is below
// Config.MinFreeSpace.
func Open(cfg Config) (*DB, error) {
	cfg, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	where := cfg.Dir
	if cfg.InMemory {
		where = "(in memory)"
	}
	// badger flushes the memtables left in its logs as it opens, into tables written through
	// memory maps: on a full filesystem that is a SIGBUS, so a node short of space does not start.
	if err := spaceErr(cfg.Dir, cfg.MinFreeSpace); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", where, err)
	}
	bdb, err := badger.Open(cfg.badgerOptions())
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", where, err)
	}
	if err := checkFormatVersion(bdb, where); err != nil {
		_ = bdb.Close()
		return nil, err
	}
	db := &DB{
		bdb:           bdb,
		maxValueSize:  cfg.valueLimit(),
		dir:           cfg.Dir,
		minFree:       cfg.MinFreeSpace,
		reqs:          make(chan *writeReq),
		stop:          make(chan struct{}),
		committerDone: make(chan struct{}),
	}
	go db.commitLoop()
	return db, nil
}

// checkFormatVersion records FormatVersion in an empty database and otherwise requires the
// recorded version to equal it. A database with data but no version is refused: it was not
// written by this package.
func checkFormatVersion(bdb *badger.DB, where string) error {
	err := bdb.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(formatVersionKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			it := txn.NewIterator(badger.IteratorOptions{})
			it.Rewind()
			empty := !it.Valid()
			it.Close()
			if !empty {
				return fmt.Errorf("database holds data but no format version, this build reads version %d: %w",
					FormatVersion, ErrFormatVersion)
			}
			return txn.Set(formatVersionKey, []byte(strconv.Itoa(FormatVersion)))
		}
		if err != nil {
			return err
		}
		raw, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		v, err := strconv.ParseUint(string(raw), 10, 32)
		if err != nil {
			return fmt.Errorf("version %q on disk is not a number, this build reads version %d: %w",
				raw, FormatVersion, ErrFormatVersion)
		}
		if v != FormatVersion {
			return fmt.Errorf("version %d on disk, this build reads version %d: %w",
				v, FormatVersion, ErrFormatVersion)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: open %s: format version: %w", where, err)
	}
	return nil
}

// enter registers a call in flight, or returns ErrClosed once Close has begun. A successful enter
// MUST be paired with db.active.Done().
func (db *DB) enter() error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed {
		return ErrClosed
	}
	db.active.Add(1)
	return nil
}

// Close stops accepting calls (they return ErrClosed), waits for the View, Update, Write and Sync
// calls in flight — queued Writes are committed and acknowledged — then stops the committer and
// closes badger. It is idempotent and safe to call concurrently; every call returns the first
// call's result. Close MUST NOT be called from inside a View or Update function: it would wait for
// itself.
//
// When the filesystem is below Config.MinFreeSpace, Close leaves badger open and returns an
// error wrapping ErrNoSpace: badger's close flushes the memtable into a table written through a
// memory map, which a full filesystem turns into a SIGBUS. Nothing acknowledged is lost: the
// memtable's writes are in badger's log, which the next Open replays. The directory stays locked
// until the process exits.
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		db.mu.Lock()
		db.closed = true
		db.mu.Unlock()
		db.active.Wait()
		close(db.stop)
		<-db.committerDone
		if err := spaceErr(db.dir, db.minFree); err != nil {
			db.closeErr = fmt.Errorf("store: close: badger left open, its log is replayed at the next start: %w", err)
			return
		}
		if err := db.bdb.Close(); err != nil {
			db.closeErr = fmt.Errorf("store: close: %w", err)
		}
	})
	return db.closeErr
}

// Badger returns the underlying badger database, for subsystems that need raw access (such as the
// access log's own group commit). Callers MUST build every key with Namespace.Key of a namespace
// they own, MUST NOT touch the "meta" namespace, MUST NOT close it, and MUST NOT use it after
// Close returns.
func (db *DB) Badger() *badger.DB {
	return db.bdb
}

// CheckSpace returns an error wrapping ErrNoSpace when the filesystem of the data directory has
// less free space than Config.MinFreeSpace, and nil otherwise: always in memory, with the check
// off, and where the free space cannot be read. Write and Update call it before each commit that
// writes; code that commits its own badger transactions (see Badger) MUST call it before each
// commit too. It costs one statfs call.
func (db *DB) CheckSpace() error {
	if err := spaceErr(db.dir, db.minFree); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// spaceErr returns an error wrapping ErrNoSpace when the filesystem of dir has less than min
// bytes free; a negative min, or free space that cannot be read, passes.
func spaceErr(dir string, min int64) error {
	if min < 0 {
		return nil
	}
	free, ok := freeSpace(dir)
	if !ok || free >= min {
		return nil
	}
	return fmt.Errorf("%.1f MiB free on the data directory's filesystem, below the reserve of %.1f MiB: %w",
		float64(free)/(1<<20), float64(min)/(1<<20), ErrNoSpace)
}

// Sync fsyncs badger's logs. Writes are already durable when they return if SyncWrites is on;
// Sync is for configurations that turn it off. It is a no-op in memory.
func (db *DB) Sync() error {
	if err := db.enter(); err != nil {
		return err
	}
	defer db.active.Done()
	if err := db.bdb.Sync(); err != nil {
		return fmt.Errorf("store: sync: %w", err)
	}
	return nil
}

// View runs fn in a read-only snapshot transaction. The Txn MUST NOT be used after fn returns.
func (db *DB) View(ctx context.Context, fn func(tx *Txn) error) error {
	if err := db.enter(); err != nil {
		return err
	}
	defer db.active.Done()
	if err := ctx.Err(); err != nil {
		return err
	}
	btx := db.bdb.NewTransaction(false)
	defer btx.Discard()
	return fn(&Txn{ctx: ctx, tx: btx, db: db})
}

// Update runs fn in one read-write badger transaction and commits it (fsynced when SyncWrites is
// on). When the commit conflicts with a concurrent write to a key fn read, Update runs fn again
// in a fresh transaction after a short random pause, up to 8 more times, then returns
// ErrConflict; fn MUST therefore have no effects outside the Txn. An error from fn discards the
// transaction and is returned as is. A commit that writes fails with ErrNoSpace, writing nothing,
// while the data directory's filesystem is below Config.MinFreeSpace. Each Update costs its own
// fsync: hot paths with many concurrent small writes use Write instead.
func (db *DB) Update(ctx context.Context, fn func(tx *Txn) error) error {
	if err := db.enter(); err != nil {
		return err
	}
	defer db.active.Done()
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := db.updateOnce(ctx, fn)
		if !errors.Is(err, badger.ErrConflict) {
			return err
		}
		if attempt > updateRetries {
			return fmt.Errorf("store: update: %d attempts conflicted: %w", attempt, ErrConflict)
		}
		// Transactions that conflicted once tend to collide again if they retry in lockstep; a
		// short random pause, growing with each attempt, spreads them out.
		pause := time.NewTimer(rand.N(updateBackoff << min(attempt, 6)))
		select {
		case <-ctx.Done():
			pause.Stop()
			return ctx.Err()
		case <-pause.C:
		}
	}
}

// updateOnce runs one attempt of Update. It returns badger.ErrConflict unwrapped when the commit
// conflicted.
func (db *DB) updateOnce(ctx context.Context, fn func(tx *Txn) error) error {
	btx := db.bdb.NewTransaction(true)
	defer btx.Discard()
	tx := &Txn{ctx: ctx, tx: btx, db: db}
	if err := fn(tx); err != nil {
		return err
	}
	if tx.wrote {
		if err := db.CheckSpace(); err != nil {
			return fmt.Errorf("store: update: %w", err)
		}
	}
	err := btx.Commit()
	if err == nil {
		for _, f := range tx.committed {
			f()
		}
		return nil
	}
	if errors.Is(err, badger.ErrConflict) {
		return err
	}
	return fmt.Errorf("store: update: commit: %w", err)
}
