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
	k := replayKey(scope, owner, id)
	c.mu.Lock()
	if _, busy := c.pending[k]; busy {
		c.mu.Unlock()
		return fmt.Errorf("%w: jti %q of %s", ErrReplay, clip(id), clip(owner))
	}
	c.pending[k] = struct{}{}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, k)
		c.mu.Unlock()
	}()

	var seen bool
	err := c.db.View(ctx, func(tx *store.Txn) error {
		var err error
		seen, err = tx.Has(replayNS, k[:])
		return err
	})
	if err != nil {
		return fmt.Errorf("replay cache: %w", err)
	}
	if seen {
		return fmt.Errorf("%w: jti %q of %s", ErrReplay, clip(id), clip(owner))
	}
	var b store.Batch
	b.SetTTL(replayNS, k[:], []byte{1}, max(ttl, time.Second))
	if err := c.db.Write(ctx, &b); err != nil {
		return fmt.Errorf("replay cache: %w", err)
	}
	return nil
}
