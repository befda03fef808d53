package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"slices"
	"strconv"

	"github.com/dgraph-io/badger/v4"
)

// Digest returns the SHA-256 of every live key of the database, in key order, each with its value
// and expiry, and the number of keys. Two databases, or one database at two moments, have the same
// digest exactly when they hold the same keys with the same values and expiries: it is how tests
// show that refused input changed nothing. Expired and deleted keys are not live; the "meta"
// namespace is included.
//
// Each key contributes len(key), key, len(value), value and its expiry (0 for none), lengths and
// expiry as 8-byte big-endian integers, so that no two different contents hash alike. Digest reads
// one snapshot and costs a read of the whole database.
func (db *DB) Digest(ctx context.Context) ([32]byte, int, error) {
	var sum [32]byte
	h := sha256.New()
	n := 0
	err := db.scan(ctx, func(item *badger.Item) error {
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		writeField(h, item.Key())
		writeField(h, v)
		var exp [8]byte
		binary.BigEndian.PutUint64(exp[:], item.ExpiresAt())
		h.Write(exp[:])
		n++
		return nil
	})
	if err != nil {
		return sum, 0, fmt.Errorf("store: digest: %w", err)
	}
	h.Sum(sum[:0])
	return sum, n, nil
}

func writeField(h hash.Hash, b []byte) {
	var l [8]byte
	binary.BigEndian.PutUint64(l[:], uint64(len(b)))
	h.Write(l[:])
	h.Write(b)
}

// KeyState is what a Snapshot records of one key.
type KeyState struct {
	// Value is the SHA-256 of the value.
	Value [32]byte
	// ExpiresAt is the expiry in Unix seconds, 0 for none.
	ExpiresAt uint64
	// Version is the commit timestamp of the write that set the key: a key written again with
	// the same value gets a new one.
	Version uint64
}

// Snapshot records every live key of a database at one moment, by full key (namespace prefix
// included). Comparing two snapshots with Diff names the keys that changed between them, and
// also the keys written again with the same value, which a digest cannot see.
type Snapshot map[string]KeyState

// Snapshot reads every live key of the database in one snapshot.
func (db *DB) Snapshot(ctx context.Context) (Snapshot, error) {
	s := Snapshot{}
	err := db.scan(ctx, func(item *badger.Item) error {
		var ks KeyState
		err := item.Value(func(v []byte) error {
			ks.Value = sha256.Sum256(v)
			return nil
		})
		if err != nil {
			return err
		}
		ks.ExpiresAt, ks.Version = item.ExpiresAt(), item.Version()
		s[string(item.Key())] = ks
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: snapshot: %w", err)
	}
	return s, nil
}

// scan calls fn for every live key in key order, in one read-only badger transaction.
func (db *DB) scan(ctx context.Context, fn func(item *badger.Item) error) error {
	if err := db.enter(); err != nil {
		return err
	}
	defer db.active.Done()
	if err := ctx.Err(); err != nil {
		return err
	}
	txn := db.bdb.NewTransaction(false)
	defer txn.Discard()
	it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100})
	defer it.Close()
	n := 0
	for it.Rewind(); it.Valid(); it.Next() {
		if n%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		n++
		if err := fn(it.Item()); err != nil {
			return err
		}
	}
	return nil
}

// ChangeKind says how a key differs between two snapshots.
type ChangeKind int

// Kinds of Change.
const (
	// Added: the key is live only in the later snapshot.
	Added ChangeKind = iota + 1
	// Removed: the key is live only in the earlier snapshot (deleted or expired).
	Removed
	// Modified: the value or the expiry differs.
	Modified
	// Rewritten: value and expiry are the same, but the key was written again in between.
	Rewritten
)

// String returns the kind's one-character mark: "+", "-", "~" or "=".
func (k ChangeKind) String() string {
	switch k {
	case Added:
		return "+"
	case Removed:
		return "-"
	case Modified:
		return "~"
	case Rewritten:
		return "="
	}
	return "?"
}

// Change is one key that differs between two snapshots.
type Change struct {
	// Key is the full key, namespace prefix included.
	Key  []byte
	Kind ChangeKind
}

// Namespace returns the name of the namespace the key lives in.
func (c Change) Namespace() string { return nsName(c.Key) }

// String returns the kind's mark, the namespace and the key within it, quoted, such as
// `+ vc/"urn:uuid:…"`.
func (c Change) String() string {
	return c.Kind.String() + " " + c.Namespace() + "/" + strconv.Quote(string(userKey(c.Key)))
}

// Diff returns the keys that differ from s to later, in key order. An empty result means the
// database was not written in between, not even with the values it already held.
func (s Snapshot) Diff(later Snapshot) []Change {
	var out []Change
	for k, a := range s {
		b, ok := later[k]
		switch {
		case !ok:
			out = append(out, Change{Key: []byte(k), Kind: Removed})
		case a.Value != b.Value || a.ExpiresAt != b.ExpiresAt:
			out = append(out, Change{Key: []byte(k), Kind: Modified})
		case a.Version != b.Version:
			out = append(out, Change{Key: []byte(k), Kind: Rewritten})
		}
	}
	for k := range later {
		if _, ok := s[k]; !ok {
			out = append(out, Change{Key: []byte(k), Kind: Added})
		}
	}
	slices.SortFunc(out, func(a, b Change) int { return bytes.Compare(a.Key, b.Key) })
	return out
}

// Watch tells whether a database still holds what it held when the watch began. While nothing
// has been committed since, a check reads only badger's commit version; otherwise it takes a
// Digest. Fuzz targets check thousands of inputs, most of which write nothing.
type Watch struct {
	db      *DB
	version uint64
	sum     [32]byte
}

// Watch begins a watch over db's current contents.
func (db *DB) Watch(ctx context.Context) (*Watch, error) {
	v := db.bdb.MaxVersion()
	sum, _, err := db.Digest(ctx)
	if err != nil {
		return nil, err
	}
	return &Watch{db: db, version: v, sum: sum}, nil
}

// Unchanged reports whether the database holds the same keys, values and expiries as when the
// watch began. Keys rewritten with what they held count as unchanged.
func (w *Watch) Unchanged(ctx context.Context) (bool, error) {
	v := w.db.bdb.MaxVersion()
	if v == w.version {
		return true, nil
	}
	sum, _, err := w.db.Digest(ctx)
	if err != nil || sum != w.sum {
		return false, err
	}
	w.version = v
	return true, nil
}
