package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Batch is a set of writes that Write applies atomically: all of them or none. The zero value is
// an empty batch. Later writes to a key override earlier ones, within a batch and across batches
// in the order their Writes were taken. A Batch MUST NOT be changed while a Write of it runs.
type Batch struct {
	ops []op
	// err records the first misuse (zero namespace, non-positive TTL); Write returns it.
	err error
}

type op struct {
	key   []byte // full key, namespace prefix included
	value []byte
	ttl   time.Duration // 0: no expiry
	del   bool
}

// Set writes key in ns. The value is copied, so the caller may reuse it at once.
func (b *Batch) Set(ns Namespace, key, value []byte) {
	b.add(ns, op{key: ns.Key(key), value: bytes.Clone(value)})
}

// SetTTL writes key in ns to expire ttl after the Write call; ttl MUST be positive. The entry
// lives at least ttl and less than ttl plus one second (badger's expiry is in whole seconds).
func (b *Batch) SetTTL(ns Namespace, key, value []byte, ttl time.Duration) {
	if ttl <= 0 && b.err == nil {
		b.err = fmt.Errorf("store: write: set %s key %x: TTL %v is not positive", ns.Name(), key, ttl)
	}
	b.add(ns, op{key: ns.Key(key), value: bytes.Clone(value), ttl: ttl})
}

// Delete removes key from ns.
func (b *Batch) Delete(ns Namespace, key []byte) {
	b.add(ns, op{key: ns.Key(key), del: true})
}

func (b *Batch) add(ns Namespace, o op) {
	if ns.prefix == "" && b.err == nil {
		b.err = fmt.Errorf("store: write: %w", errZeroNamespace)
	}
	b.ops = append(b.ops, o)
}

// Len returns the number of writes in the batch.
func (b *Batch) Len() int { return len(b.ops) }

// checkOp refuses what badger would refuse only at commit time, where one bad write would fail
// a whole group.
func (db *DB) checkOp(o op) error {
	if len(o.value) > db.maxValueSize {
		return fmt.Errorf("%s key %x: value of %d bytes exceeds MaxValueSize %d: %w",
			nsName(o.key), userKey(o.key), len(o.value), db.maxValueSize, ErrTooLarge)
	}
	if len(o.key) > maxKeySize {
		return fmt.Errorf("%s key of %d bytes exceeds %d with its namespace: %w",
			nsName(o.key), len(o.key), maxKeySize, ErrTooLarge)
	}
	return nil
}

// writeReq is one Write waiting for the committer.
type writeReq struct {
	ops []op
	// at is when Write was called; TTLs count from it.
	at   time.Time
	done chan error // buffered 1; receives the result once
}

// Write applies b atomically through the group committer and returns once b is durable (with
// SyncWrites on) and visible to later transactions.
//
// A single committer goroutine takes every batch queued while the previous group was being
// written — there is no timer: a group is whatever arrived during the previous commit — writes
// them all in one badger transaction, so that one fsync covers the group, and then acknowledges
// each batch with the result. Only if badger finds the group too large for one transaction is it
// split, always between batches.
//
// A batch with a value above MaxValueSize fails with ErrTooLarge before anything is queued; so
// does a batch too large for one badger transaction by itself, which the committer refuses alone.
// If ctx is cancelled before the committer takes the batch, Write returns ctx.Err() and nothing
// is written; once taken, Write waits for the result. An empty batch returns nil at once. After
// Close has begun, Write returns ErrClosed. While the data directory's filesystem is below
// Config.MinFreeSpace, every batch of a group fails with ErrNoSpace and nothing is written.
func (db *DB) Write(ctx context.Context, b *Batch) error {
	if err := db.enter(); err != nil {
		return err
	}
	defer db.active.Done()
	if err := ctx.Err(); err != nil {
		return err
	}
	if b == nil {
		return nil
	}
	if b.err != nil {
		return b.err
	}
	if len(b.ops) == 0 {
		return nil
	}
	for _, o := range b.ops {
		if err := db.checkOp(o); err != nil {
			return fmt.Errorf("store: write: %w", err)
		}
	}
	req := &writeReq{ops: b.ops, at: time.Now(), done: make(chan error, 1)}
	// reqs is unbuffered: a completed send is the committer taking the batch.
	select {
	case db.reqs <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-req.done
}

// commitLoop is the committer. It runs from Open until Close, which closes stop only once no
// Write can send any more.
func (db *DB) commitLoop() {
	defer close(db.committerDone)
	var group []*writeReq
	for {
		select {
		case r := <-db.reqs:
			group = append(group[:0], r)
		case <-db.stop:
			return
		}
		// Take every batch already waiting, without blocking: those queued during the previous
		// commit.
	drain:
		for {
			select {
			case r := <-db.reqs:
				group = append(group, r)
			default:
				break drain
			}
		}
		if db.testHookGroup != nil {
			db.testHookGroup(len(group))
		}
		db.commitGroup(group)
		clear(group)
		// Let the writers just acknowledged run before the next drain. Without this yield they
		// cannot queue again until the group after next, and the writers split into two cohorts
		// that alternate: at 64 writers on 2 cores groups held 32 writes, with it about 45, so
		// each fsync carries about 40% more writes. The cost is that a committer sharing its
		// cores with CPU-bound goroutines may wait for one of them before the next group.
		runtime.Gosched()
	}
}

// commitGroup writes group in as few badger transactions as badger allows — one unless it
// reports ErrTxnTooBig — never splitting a batch, and acknowledges every batch with the result of
// the transaction that carried it.
func (db *DB) commitGroup(group []*writeReq) {
	if err := db.CheckSpace(); err != nil {
		ack(group, fmt.Errorf("store: write: %w", err))
		return
	}
	for start := 0; start < len(group); {
		txn := db.bdb.NewTransaction(true)
		n, addErr := addBatches(txn, group[start:])
		end := start + n
		if addErr != nil && n > 0 {
			// txn holds part of group[end]; rebuild it from whole batches only. They fitted a
			// moment ago, so this cannot fail short of a badger bug, which then fails them all.
			txn.Discard()
			txn = db.bdb.NewTransaction(true)
			if _, err := addBatches(txn, group[start:end]); err != nil {
				txn.Discard()
				ack(group[start:end], fmt.Errorf("store: write: rebuild group: %w", err))
				start = end
				continue
			}
		}
		if n > 0 {
			err := txn.Commit()
			db.groups.Add(1)
			if err != nil {
				err = fmt.Errorf("store: write: commit: %w", err)
			}
			ack(group[start:end], err)
		} else {
			txn.Discard()
		}
		if addErr != nil {
			if errors.Is(addErr, badger.ErrTxnTooBig) {
				if n > 0 {
					// group[end] starts the next transaction.
					start = end
					continue
				}
				addErr = fmt.Errorf("store: write: batch of %d writes does not fit in one transaction: %w: %w",
					len(group[end].ops), ErrTooLarge, addErr)
			} else {
				addErr = fmt.Errorf("store: write: %w", addErr)
			}
			ack(group[end:end+1], addErr)
			end++
		}
		start = end
	}
}

// addBatches adds whole batches from group to txn until one fails, and returns how many were
// added and the error of the one that failed (which txn then holds in part).
func addBatches(txn *badger.Txn, group []*writeReq) (int, error) {
	for i, r := range group {
		for _, o := range r.ops {
			var err error
			switch {
			case o.del:
				err = txn.Delete(o.key)
			case o.ttl > 0:
				e := badger.NewEntry(o.key, o.value)
				e.ExpiresAt = expiresAt(r.at, o.ttl)
				err = txn.SetEntry(e)
			default:
				err = txn.SetEntry(badger.NewEntry(o.key, o.value))
			}
			if err != nil {
				return i, err
			}
		}
	}
	return len(group), nil
}

func ack(reqs []*writeReq, err error) {
	for _, r := range reqs {
		r.done <- err
	}
}

// Check returns the error Write would return for b without writing it: a misuse recorded while
// b was built or a write larger than db allows. A nil b passes.
func (db *DB) Check(b *Batch) error {
	if b == nil {
		return nil
	}
	if b.err != nil {
		return b.err
	}
	for _, o := range b.ops {
		if err := db.checkOp(o); err != nil {
			return fmt.Errorf("store: write: %w", err)
		}
	}
	return nil
}

// Cost returns an upper bound of what b adds to a badger transaction, counted as badger counts
// (Txn.checkSize): bytes of keys, values and per-write overhead, and the number of writes.
func (b *Batch) Cost() (bytes, count int64) {
	for _, o := range b.ops {
		bytes += int64(len(o.key) + len(o.value) + 14)
	}
	return bytes, int64(len(b.ops))
}

// AddTo adds b's writes to txn, their TTLs counted from at. It is for code that writes its own
// badger transactions and needs b committed atomically with them; db.Check(b) first, since a
// write badger refuses at commit fails the whole transaction.
func (b *Batch) AddTo(txn *badger.Txn, at time.Time) error {
	if b == nil {
		return nil
	}
	if b.err != nil {
		return b.err
	}
	_, err := addBatches(txn, []*writeReq{{ops: b.ops, at: at}})
	return err
}
