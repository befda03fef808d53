package accesslog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/schakel-health/schakel/internal/store"
)

// storeReader reads committed stored hashes for proofs: the upper levels from the log's hash
// cache, the rest from a read transaction, caching what it reads.
type storeReader struct {
	tx    *store.Txn
	k     keys
	cache *hashCache
}

// ReadHashes implements tlog.HashReader.
func (r storeReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		level, n := tlog.SplitStoredHashIndex(idx)
		if h, ok := r.cache.get(level, n); ok {
			out[i] = h
			continue
		}
		key, off := r.k.hashRow(idx)
		row, err := r.tx.Get(ns, key)
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("%w: stored hash %d missing", ErrCorrupt, idx)
		}
		if err != nil {
			return nil, err
		}
		if out[i], err = hashAt(row, off, idx); err != nil {
			return nil, err
		}
		r.cache.put(level, n, out[i])
	}
	return out, nil
}

// Entries returns the bytes of entries start to end−1. It requires 0 ≤ start ≤ end ≤ Size() and
// at most Config.MaxReadEntries entries; otherwise ErrRange.
func (l *Log) Entries(ctx context.Context, start, end int64) ([][]byte, error) {
	size := l.size.Load()
	if start < 0 || start > end || end > size || end-start > int64(l.cfg.MaxReadEntries) {
		return nil, fmt.Errorf("accesslog: entries [%d, %d) of %s (size %d, at most %d at once): %w",
			start, end, l.origin, size, l.cfg.MaxReadEntries, ErrRange)
	}
	out := make([][]byte, 0, end-start)
	if start == end {
		return out, nil
	}
	err := l.db.View(ctx, func(tx *store.Txn) error {
		return tx.Iterate(ns, l.k.entryPrefix(), store.IterOptions{Seek: l.k.entry(start), Limit: int(end - start)},
			func(key, value []byte) error {
				want := start + int64(len(out))
				if got, err := sizeFromKey(key); err != nil || got != want {
					return fmt.Errorf("%w: entry %d missing", ErrCorrupt, want)
				}
				out = append(out, value)
				return nil
			})
	})
	if err == nil && int64(len(out)) != end-start {
		err = fmt.Errorf("%w: entry %d missing", ErrCorrupt, start+int64(len(out)))
	}
	if err != nil {
		return nil, fmt.Errorf("accesslog: entries [%d, %d) of %s: %w", start, end, l.origin, err)
	}
	return out, nil
}

// PatientEntries returns, in log order, the entries about any of the given patient pseudonyms.
// Callers pass every version of a patient's pseudonym (crypto.Pseudonymizer.All), so that entries
// made before a key rotation are found. Each pseudonym's entries are found through its own rows,
// written with the entries; the cost follows the number of entries returned, not the log.
func (l *Log) PatientEntries(ctx context.Context, pseudonyms []string) ([][]byte, error) {
	for _, p := range pseudonyms {
		if err := checkPseudonym(p); err != nil {
			return nil, fmt.Errorf("accesslog: patient entries of %s: %w: %v", l.origin, ErrInvalidEntry, err)
		}
	}
	var out [][]byte
	err := l.db.View(ctx, func(tx *store.Txn) error {
		var indexes []uint64
		for _, p := range slices.Compact(slices.Sorted(slices.Values(pseudonyms))) {
			prefix := l.k.counter(patientID(p))
			err := tx.Iterate(ns, prefix, store.IterOptions{}, func(key, value []byte) error {
				if len(key) == len(prefix) {
					return nil // the counter
				}
				if len(value) != 8 {
					return fmt.Errorf("%w: patient row %x", ErrCorrupt, key)
				}
				indexes = append(indexes, binary.BigEndian.Uint64(value))
				return nil
			})
			if err != nil {
				return err
			}
		}
		slices.Sort(indexes)
		indexes = slices.Compact(indexes)
		out = make([][]byte, 0, len(indexes))
		for _, i := range indexes {
			if i > 1<<62 {
				return fmt.Errorf("%w: patient row names index %d", ErrCorrupt, i)
			}
			b, err := tx.Get(ns, l.k.entry(int64(i)))
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("%w: entry %d of a patient row missing", ErrCorrupt, i)
			}
			if err != nil {
				return err
			}
			out = append(out, b)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("accesslog: patient entries of %s: %w", l.origin, err)
	}
	return out, nil
}

// InclusionProof returns the RFC 6962 audit path that the tree of treeSize entries contains entry
// index, for tlog.CheckRecord against that tree's root (a checkpoint's). It requires
// 0 ≤ index < treeSize ≤ Size(); otherwise ErrRange.
func (l *Log) InclusionProof(ctx context.Context, index, treeSize int64) (tlog.RecordProof, error) {
	if size := l.size.Load(); index < 0 || index >= treeSize || treeSize > size {
		return nil, fmt.Errorf("accesslog: inclusion proof of %d in %d of %s (size %d): %w", index, treeSize, l.origin, size, ErrRange)
	}
	var p tlog.RecordProof
	err := l.db.View(ctx, func(tx *store.Txn) error {
		var err error
		p, err = tlog.ProveRecord(treeSize, index, storeReader{tx: tx, k: l.k, cache: l.hashes})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("accesslog: inclusion proof of %d in %d of %s: %w", index, treeSize, l.origin, err)
	}
	return p, nil
}

// ConsistencyProof returns the RFC 6962 consistency proof that the tree of newSize entries
// extends the tree of oldSize entries, for tlog.CheckTree against both roots. It requires
// 1 ≤ oldSize ≤ newSize ≤ Size(); otherwise ErrRange.
func (l *Log) ConsistencyProof(ctx context.Context, oldSize, newSize int64) (tlog.TreeProof, error) {
	if size := l.size.Load(); oldSize < 1 || oldSize > newSize || newSize > size {
		return nil, fmt.Errorf("accesslog: consistency proof of %d to %d of %s (size %d): %w", oldSize, newSize, l.origin, size, ErrRange)
	}
	var p tlog.TreeProof
	err := l.db.View(ctx, func(tx *store.Txn) error {
		var err error
		p, err = tlog.ProveTree(newSize, oldSize, storeReader{tx: tx, k: l.k, cache: l.hashes})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("accesslog: consistency proof of %d to %d of %s: %w", oldSize, newSize, l.origin, err)
	}
	return p, nil
}
