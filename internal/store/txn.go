package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// ErrStop, returned by an Iterate callback, ends the iteration; Iterate then returns nil.
var ErrStop = errors.New("stop iteration")

// Txn is a transaction over namespaced keys, valid only inside the View or Update function it was
// passed to. A Txn is not safe for concurrent use.
type Txn struct {
	ctx       context.Context
	tx        *badger.Txn
	db        *DB
	committed []func()
	// wrote records a Set or Delete, so that Update checks the free space only for commits that
	// write.
	wrote bool
}

// Context returns the context the transaction runs under.
func (t *Txn) Context() context.Context { return t.ctx }

// OnCommit registers f to run once this transaction has committed durably, in the goroutine
// that called Update, before Update returns; not at all when the attempt fails or conflicts (a
// retry runs the Update function again, which registers again). It is for effects outside the
// store that must follow a write, never precede it, such as announcing a stored document.
func (t *Txn) OnCommit(f func()) { t.committed = append(t.committed, f) }

// Get returns a copy of the value of key in ns. It returns ErrNotFound, unwrapped, when the key
// does not exist, was deleted or has expired. An empty value may come back as nil.
func (t *Txn) Get(ns Namespace, key []byte) ([]byte, error) {
	item, err := t.get(ns, key)
	if err != nil {
		return nil, err
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return nil, fmt.Errorf("store: get %s key %x: %w", ns.Name(), key, err)
	}
	return v, nil
}

// Has reports whether key exists in ns, without reading its value.
func (t *Txn) Has(ns Namespace, key []byte) (bool, error) {
	_, err := t.get(ns, key)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (t *Txn) get(ns Namespace, key []byte) (*badger.Item, error) {
	if ns.prefix == "" {
		return nil, fmt.Errorf("store: get: %w", errZeroNamespace)
	}
	item, err := t.tx.Get(ns.Key(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: get %s key %x: %w", ns.Name(), key, err)
	}
	return item, nil
}

// Set writes key in ns; in a View transaction it fails. The value is copied, so the caller may
// reuse it at once. A value above Config.MaxValueSize, or a transaction grown beyond what badger
// commits at once, fails with ErrTooLarge.
func (t *Txn) Set(ns Namespace, key, value []byte) error {
	return t.set(ns, key, value, 0)
}

// SetTTL writes key in ns to expire after ttl, which MUST be positive. badger stores expiry in
// whole seconds; the entry lives at least ttl and less than ttl plus one second.
func (t *Txn) SetTTL(ns Namespace, key, value []byte, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("store: set %s key %x: TTL %v is not positive", ns.Name(), key, ttl)
	}
	return t.set(ns, key, value, ttl)
}

func (t *Txn) set(ns Namespace, key, value []byte, ttl time.Duration) error {
	if ns.prefix == "" {
		return fmt.Errorf("store: set: %w", errZeroNamespace)
	}
	k := ns.Key(key)
	if err := t.db.checkOp(op{key: k, value: value}); err != nil {
		return fmt.Errorf("store: set: %w", err)
	}
	e := badger.NewEntry(k, bytes.Clone(value))
	if ttl > 0 {
		e.ExpiresAt = expiresAt(time.Now(), ttl)
	}
	if err := t.tx.SetEntry(e); err != nil {
		return txnWriteErr("set", ns, key, err)
	}
	t.wrote = true
	return nil
}

// Delete removes key from ns; deleting a missing key is not an error. In a View transaction it
// fails.
func (t *Txn) Delete(ns Namespace, key []byte) error {
	if ns.prefix == "" {
		return fmt.Errorf("store: delete: %w", errZeroNamespace)
	}
	if err := t.tx.Delete(ns.Key(key)); err != nil {
		return txnWriteErr("delete", ns, key, err)
	}
	t.wrote = true
	return nil
}

func txnWriteErr(what string, ns Namespace, key []byte, err error) error {
	if errors.Is(err, badger.ErrTxnTooBig) {
		return fmt.Errorf("store: %s %s key %x: transaction too large: %w: %w", what, ns.Name(), key, ErrTooLarge, err)
	}
	return fmt.Errorf("store: %s %s key %x: %w", what, ns.Name(), key, err)
}

// expiresAt returns badger's expiry, in Unix seconds, for an entry written at now to live ttl.
// It rounds up, so the entry lives at least ttl: badger treats an entry as expired once the
// current Unix second reaches its expiry, and its own Entry.WithTTL rounds down, which can let a
// one-second entry vanish at once.
func expiresAt(now time.Time, ttl time.Duration) uint64 {
	end := now.Add(ttl)
	s := end.Unix()
	if end.Nanosecond() > 0 {
		s++
	}
	return uint64(s)
}

// IterOptions shape an Iterate call. The zero value visits every key with the prefix in
// ascending order, with values.
type IterOptions struct {
	// Reverse visits keys in descending order.
	Reverse bool
	// KeysOnly skips reading values; fn gets a nil value.
	KeysOnly bool
	// Seek, when not nil, is the key (without namespace) to start at: the first key at or after
	// it, or at or before it when Reverse. Keys outside the prefix are never visited, whatever
	// Seek says.
	Seek []byte
	// Limit stops after this many keys; 0 means no limit.
	Limit int
}

// ctxCheckEvery is how many keys Iterate visits between checks of the transaction's context.
const ctxCheckEvery = 64

// Iterate visits the keys in ns that start with prefix, in key order (or reverse), calling fn
// with the key without the namespace prefix and a copy of the value; both are fn's to keep. fn
// returning ErrStop ends the iteration and Iterate returns nil; any other error from fn is
// returned as is. Iterate returns the context's error if the View or Update context is cancelled
// during a long iteration.
func (t *Txn) Iterate(ns Namespace, prefix []byte, opt IterOptions, fn func(key, value []byte) error) error {
	if ns.prefix == "" {
		return fmt.Errorf("store: iterate: %w", errZeroNamespace)
	}
	full := ns.Key(prefix)
	bopt := badger.IteratorOptions{
		Reverse:        opt.Reverse,
		PrefetchValues: !opt.KeysOnly,
		PrefetchSize:   100,
	}
	if opt.Limit > 0 && opt.Limit < bopt.PrefetchSize {
		bopt.PrefetchSize = max(opt.Limit, 2)
	}
	var start []byte
	if !opt.Reverse {
		// Forward, badger's Prefix option both narrows the tables read and ends iteration at
		// the first key without the prefix; the start must not lie before the prefix.
		bopt.Prefix = full
		start = full
		if opt.Seek != nil {
			if s := ns.Key(opt.Seek); bytes.Compare(s, full) > 0 {
				start = s
			}
		}
	} else {
		// Reverse, badger's Seek lands on the greatest key at or before the start. Seeking to
		// prefix+0xFF would miss keys that continue with 0xFF bytes, so seek to the prefix's
		// end: the least key greater than every key with the prefix. Prefix stays unset,
		// because badger would end iteration at once if it landed on that end key itself.
		start = prefixEnd(full)
		if opt.Seek != nil {
			if s := ns.Key(opt.Seek); start == nil || bytes.Compare(s, start) < 0 {
				start = s
			}
		}
	}
	it := t.tx.NewIterator(bopt)
	defer it.Close()
	it.Seek(start)
	if opt.Reverse {
		// Step off keys after the prefix's range (only the end key itself can be there).
		for it.Valid() && bytes.Compare(it.Item().Key(), full) > 0 && !bytes.HasPrefix(it.Item().Key(), full) {
			it.Next()
		}
	}
	strip := len(ns.prefix)
	for n := 0; it.ValidForPrefix(full); it.Next() {
		if n%ctxCheckEvery == 0 {
			if err := t.ctx.Err(); err != nil {
				return err
			}
		}
		item := it.Item()
		var value []byte
		if !opt.KeysOnly {
			var err error
			if value, err = item.ValueCopy(nil); err != nil {
				return fmt.Errorf("store: iterate %s: read value of %x: %w", ns.Name(), item.Key()[strip:], err)
			}
		}
		if err := fn(item.KeyCopy(nil)[strip:], value); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
		n++
		if opt.Limit > 0 && n >= opt.Limit {
			return nil
		}
	}
	return nil
}

// prefixEnd returns the least key greater than every key that starts with p, or nil when there is
// none (p empty or all 0xFF).
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xFF {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
