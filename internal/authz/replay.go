package authz

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/schakel-health/schakel/internal/store"
)

// replayNS holds one key per used identifier, SHA-256 of its scope and id, expiring with it.
var replayNS = store.MustNamespace("authz-replay")

// Replay scopes: an assertion's jti is unique per issuer (RFC 7523 §3 item 7), a DPoP proof's per
// key (RFC 9449 §11.1), so neither can block the other's identifiers.
const (
	scopeAssertion = "assertion"
	scopeDPoP      = "dpop"
)

// ReplayCache remembers which one-time identifiers (assertion and DPoP jti) have been used, until
// they would expire anyway. It is persistent: entries live in the node's badger store with a TTL,
// so a replay is caught across restarts too. It is safe for concurrent use and starts no
// goroutines.
//
// A check-and-set is atomic: a short in-process reservation makes concurrent uses of one
// identifier see each other, and badger (which one process at a time opens) makes earlier uses,
// before a restart included, visible. The write goes through store.DB.Write, so concurrent uses
// share one fsync (group commit) instead of paying one each as db.Update would.
type ReplayCache struct {
	db *store.DB

	mu sync.Mutex
	// pending holds the keys whose check-and-set is in progress: checked absent, write not yet
	// durable. Once the write is durable the key is found in badger instead.
	pending map[[32]byte]struct{}
}

// NewReplayCache returns a ReplayCache over db, under the "authz-replay" namespace. One cache
// per db: two caches over one db would not see each other's pending uses.
func NewReplayCache(db *store.DB) (*ReplayCache, error) {
	if db == nil {
		return nil, errors.New("new replay cache: nil store")
	}
	return &ReplayCache{db: db, pending: make(map[[32]byte]struct{})}, nil
}

// replayKey is SHA-256 over the length-prefixed scope, owner and id, so that no two triples share
// a key and hostile ids cannot make keys long.
func replayKey(scope, owner, id string) [32]byte {
	h := sha256.New()
	for _, s := range [...]string{scope, owner, id} {
		var n [binary.MaxVarintLen64]byte
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(s)))])
		h.Write([]byte(s))
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// use records that id, issued by owner, was used in scope, to be remembered for ttl (at least
// one second). It returns an error wrapping ErrReplay if it was used before and has not yet
// expired, or a storage error, which wraps none of this package's classes: the caller then
// refuses with server_error. Only a nil error means the use was recorded durably.
func (c *ReplayCache) use(ctx context.Context, scope, owner, id string, ttl time.Duration) error {
	r, err := c.reserve(ctx, scope, owner, id, ttl)
	if err != nil {
		return err
	}
	defer r.Release()
	var b store.Batch
	r.Record(&b)
	if err := c.db.Write(ctx, &b); err != nil {
		return fmt.Errorf("replay cache: %w", err)
	}
	return nil
}

// A Reservation is a use of a one-time identifier that was checked unused and is held against
// concurrent uses, but is not yet recorded: its holder writes Record's write in a transaction of
// its own (the node, in the access-log entry of the decision) and then calls Release. A use whose
// write never became durable is not remembered, so the identifier may be presented again; that
// is safe because nothing was answered on it.
type Reservation struct {
	c    *ReplayCache
	k    [32]byte
	ttl  time.Duration
	once sync.Once
}

// Record adds the write that remembers the use to b.
func (r *Reservation) Record(b *store.Batch) {
	b.SetTTL(replayNS, r.k[:], []byte{1}, max(r.ttl, time.Second))
}

// Release ends the reservation; call it once Record's write is durable or was abandoned. It is
// idempotent.
func (r *Reservation) Release() {
	if r == nil {
		return
	}
	r.once.Do(func() {
		r.c.mu.Lock()
		delete(r.c.pending, r.k)
		r.c.mu.Unlock()
	})
}

// reserve checks that id, issued by owner, is unused in scope and holds it against concurrent
// uses. It fails like use.
func (c *ReplayCache) reserve(ctx context.Context, scope, owner, id string, ttl time.Duration) (*Reservation, error) {
	k := replayKey(scope, owner, id)
	c.mu.Lock()
	if _, busy := c.pending[k]; busy {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: jti %q of %s", ErrReplay, clip(id), clip(owner))
	}
	c.pending[k] = struct{}{}
	c.mu.Unlock()
	r := &Reservation{c: c, k: k, ttl: ttl}
	var seen bool
	err := c.db.View(ctx, func(tx *store.Txn) error {
		var err error
		seen, err = tx.Has(replayNS, k[:])
		return err
	})
	if err != nil {
		r.Release()
		return nil, fmt.Errorf("replay cache: %w", err)
	}
	if seen {
		r.Release()
		return nil, fmt.Errorf("%w: jti %q of %s", ErrReplay, clip(id), clip(owner))
	}
	return r, nil
}
