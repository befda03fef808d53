package reconcile

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/schakel-health/schakel/internal/store"
)

// ns holds the index: the summary rows of every level, the items, and the layout version.
var ns = store.MustNamespace("recon")

// Levels of the summary hierarchy. A node at level L is identified by the first prefixLen[L]
// bytes of the keys under it; its children are the nodes at level L+1 (or, under a leaf node,
// the items) that share that prefix.
const (
	leafLevel = 5 // second + first id byte; its children are items
	itemLevel = 6 // not a summary level: the item rows themselves
)

// prefixLen is the key prefix of each level: the root (whole set), time/2^24 s (about 194 days),
// time/2^16 s (about 18 h), time/2^8 s (256 s), the second, and the second with the first id
// byte. The upper levels follow time because documents arrive roughly in time order, so recent
// buckets are where peers differ; the last level splits a second by id so that a bulk publish
// (many documents in one second) still leaves leaf buckets 256 times smaller.
var prefixLen = [itemLevel + 1]int{0, 5, 6, 7, 8, 9, keySize}

// layoutVersion is the version of the row layout below; NewIndex refuses any other.
const layoutVersion = 1

// versionKey cannot collide with a row: row keys start with a level byte (0 to 6).
var versionKey = []byte("version")

// rowValueSize is the value of a summary row: count (8 bytes big-endian) || sum (32 bytes).
const rowValueSize = 8 + 32

// Errors returned by this package, wrapped with context; test for them with errors.Is.
var (
	// ErrMalformed reports a message that does not follow the encoding or its bounds, or a
	// request that asks about a range the index hierarchy does not align with.
	ErrMalformed = errors.New("malformed reconciliation message")
	// ErrInconsistent reports an answer that does not fit the question it answers: ranges that
	// were not asked about, a split that makes no progress, a list of ids that contradicts what
	// was sent. An honest peer never sends one, whatever its data.
	ErrInconsistent = errors.New("reconciliation answer inconsistent with the question")
	// ErrCorrupt reports summary rows that disagree with the items they summarise.
	ErrCorrupt = errors.New("reconciliation index corrupt")
	// ErrSession reports a Session method called out of order.
	ErrSession = errors.New("reconciliation session misuse")
)

// Index is the node's reconciliation index: the set of items it holds with precomputed range
// summaries, kept in the store next to the documents. It is safe for concurrent use.
type Index struct {
	db *store.DB
}

// NewIndex returns the index kept in db, recording the layout version in an empty index and
// refusing an index written with another layout.
func NewIndex(db *store.DB) (*Index, error) {
	if db == nil {
		return nil, errors.New("reconcile: new index: nil store")
	}
	want := []byte{layoutVersion}
	err := db.Update(context.Background(), func(tx *store.Txn) error {
		v, err := tx.Get(ns, versionKey)
		if errors.Is(err, store.ErrNotFound) {
			var rows bool
			err := tx.Iterate(ns, nil, store.IterOptions{KeysOnly: true, Limit: 1}, func(_, _ []byte) error {
				rows = true
				return nil
			})
			if err != nil {
				return err
			}
			if rows {
				return fmt.Errorf("rows without a layout version: %w", ErrCorrupt)
			}
			return tx.Set(ns, versionKey, want)
		}
		if err != nil {
			return err
		}
		if !bytes.Equal(v, want) {
			return fmt.Errorf("layout version %x, this build reads %x: %w", v, want, ErrCorrupt)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reconcile: new index: %w", err)
	}
	return &Index{db: db}, nil
}

// rowKey returns the row of the level-l node containing k (for itemLevel, the item row of k).
func rowKey(l int, k *key) []byte {
	b := make([]byte, 1+prefixLen[l])
	b[0] = byte(l)
	copy(b[1:], k[:prefixLen[l]])
	return b
}

func decodeRow(v []byte) (acc, error) {
	if len(v) != rowValueSize {
		return acc{}, fmt.Errorf("summary row of %d bytes: %w", len(v), ErrCorrupt)
	}
	a := acc{count: binary.BigEndian.Uint64(v)}
	copy(a.sum[:], v[8:])
	return a, nil
}

func encodeRow(a *acc) []byte {
	v := make([]byte, rowValueSize)
	binary.BigEndian.PutUint64(v, a.count)
	copy(v[8:], a.sum[:])
	return v
}

// Add records it as held, inside tx, which MUST be the transaction that stores the document so
// that the summaries never disagree with the documents. It updates one summary row per level.
// Adding an item already held changes nothing and reports false.
//
// Every Add reads and writes the rows of the upper levels, so concurrent transactions that add
// items conflict there and store.DB.Update retries them; writers of many items should add them
// in one transaction.
func (x *Index) Add(tx *store.Txn, it Item) (added bool, err error) {
	return apply(tx, it, rowAdd)
}

// Remove records it as no longer held, inside the transaction that deletes the document.
// Removing an item not held changes nothing and reports false.
func (x *Index) Remove(tx *store.Txn, it Item) (removed bool, err error) {
	return apply(tx, it, rowRemove)
}

// rowOp is what Add or Remove does to the item's row and to each summary row above it.
type rowOp int

const (
	rowAdd rowOp = iota
	rowRemove
)

func (op rowOp) String() string {
	if op == rowAdd {
		return "add"
	}
	return "remove"
}

// apply does op for it unless the index already reflects it, and reports whether it changed
// anything.
func apply(tx *store.Txn, it Item, op rowOp) (bool, error) {
	k := it.key()
	ik := rowKey(itemLevel, &k)
	held, err := tx.Has(ns, ik)
	if err != nil || held == (op == rowAdd) {
		return false, wrapItem(op, it, err)
	}
	if op == rowAdd {
		err = tx.Set(ns, ik, nil)
	} else {
		err = tx.Delete(ns, ik)
	}
	for l := 0; l <= leafLevel && err == nil; l++ {
		err = updateRow(tx, l, &k, op)
	}
	if err != nil {
		return false, wrapItem(op, it, err)
	}
	return true, nil
}

func wrapItem(op fmt.Stringer, it Item, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("reconcile: %s item %d/%x: %w", op, it.Time, it.ID, err)
}

// updateRow adds the item with key k to, or subtracts it from, its level-l row. A row that
// reaches count 0 is deleted, so that iterating a level visits only non-empty nodes.
func updateRow(tx *store.Txn, l int, k *key, op rowOp) error {
	rk := rowKey(l, k)
	var a acc
	v, err := tx.Get(ns, rk)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if op == rowRemove {
			return fmt.Errorf("level %d row missing under a held item: %w", l, ErrCorrupt)
		}
	case err != nil:
		return err
	default:
		if a, err = decodeRow(v); err != nil {
			return err
		}
	}
	id := (*[32]byte)(k[8:])
	if op == rowAdd {
		a.addItem(id)
		return tx.Set(ns, rk, encodeRow(&a))
	}
	if a.count == 0 {
		return fmt.Errorf("level %d row with count 0: %w", l, ErrCorrupt)
	}
	a.count--
	a.sum.sub(id)
	if a.count == 0 {
		return tx.Delete(ns, rk)
	}
	return tx.Set(ns, rk, encodeRow(&a))
}

// Has reports whether the index holds it.
func (x *Index) Has(tx *store.Txn, it Item) (bool, error) {
	k := it.key()
	ok, err := tx.Has(ns, rowKey(itemLevel, &k))
	if err != nil {
		return false, fmt.Errorf("reconcile: has item %d/%x: %w", it.Time, it.ID, err)
	}
	return ok, nil
}

// Count returns the number of items held.
func (x *Index) Count(ctx context.Context) (uint64, error) {
	var n uint64
	err := x.db.View(ctx, func(tx *store.Txn) error {
		r := reader{tx: tx}
		a, err := r.row(0, &key{})
		n = a.count
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("reconcile: count: %w", err)
	}
	return n, nil
}

// Items calls fn for every held item from lo to hi inclusive, in order; fn returning
// store.ErrStop ends the walk early. The items under one leaf bucket (one second and first id
// byte b) are those from Item{Time: t, ID: [b, 0, …]} to Item{Time: t, ID: [b, 0xff, …]}.
func (x *Index) Items(tx *store.Txn, lo, hi Item, fn func(Item) error) error {
	r := reader{tx: tx}
	l, h := lo.key(), hi.key()
	if h.less(l) {
		return nil
	}
	return r.items(&l, &h, fn)
}

// reader reads summaries and items inside one transaction and counts the rows it reads, so
// that the work one message causes can be bounded.
type reader struct {
	tx    *store.Txn
	reads int
}

// row returns the summary of the level-l node containing k; an absent row is an empty node.
func (r *reader) row(l int, k *key) (acc, error) {
	r.reads++
	v, err := r.tx.Get(ns, rowKey(l, k))
	if errors.Is(err, store.ErrNotFound) {
		return acc{}, nil
	}
	if err != nil {
		return acc{}, err
	}
	return decodeRow(v)
}

// items calls fn for every item in [lo, hi].
func (r *reader) items(lo, hi *key, fn func(Item) error) error {
	cp := commonPrefix(lo, hi)
	prefix := append([]byte{itemLevel}, lo[:cp]...)
	end := rowKey(itemLevel, hi)
	return r.tx.Iterate(ns, prefix, store.IterOptions{KeysOnly: true, Seek: rowKey(itemLevel, lo)},
		func(k, _ []byte) error {
			if bytes.Compare(k, end) > 0 {
				return store.ErrStop
			}
			if len(k) != 1+keySize {
				return fmt.Errorf("item row of %d bytes: %w", len(k), ErrCorrupt)
			}
			r.reads++
			return fn(key(k[1:]).item())
		})
}

// itemList returns the items in [lo, hi].
func (r *reader) itemList(lo, hi *key) ([]Item, error) {
	var out []Item
	err := r.items(lo, hi, func(it Item) error {
		out = append(out, it)
		return nil
	})
	return out, err
}

// span returns the level of the deepest node containing both lo and hi (lo <= hi), and whether
// [lo, hi] is aligned with the hierarchy: a run of whole children of that node. Every range in
// a request or a split MUST be aligned, which bounds the work of summarising it by the number
// of children of one node.
func span(lo, hi *key) (level int, aligned bool) {
	l := 0
	for l < leafLevel && bytes.Equal(lo[:prefixLen[l+1]], hi[:prefixLen[l+1]]) {
		l++
	}
	if l == leafLevel {
		return l, true
	}
	c := prefixLen[l+1]
	return l, allBytes(lo[c:], 0) && allBytes(hi[c:], 0xff)
}

// wholeNode reports whether [lo, hi], aligned under a level-l node, is that entire node.
func wholeNode(l int, lo, hi *key) bool {
	p := prefixLen[l]
	return allBytes(lo[p:], 0) && allBytes(hi[p:], 0xff)
}

// piece is one child in a run: a summary node (level <= leafLevel) or an item (itemLevel), with
// the first and last key it can contain.
type piece struct {
	level  int
	lo, hi key
	acc    acc
}

// children calls fn, in order, for every non-empty child of the level-l node containing lo whose
// slot lies in [lo, hi].
func (r *reader) children(l int, lo, hi *key, fn func(piece) error) error {
	cl := l + 1
	if cl == itemLevel {
		return r.items(lo, hi, func(it Item) error {
			k := it.key()
			return fn(piece{level: itemLevel, lo: k, hi: k, acc: acc{count: 1, sum: sum(it.ID)}})
		})
	}
	seek := rowKey(cl, lo)
	end := rowKey(cl, hi)
	parent := seek[:1+prefixLen[l]]
	// A run holds at most one child per slot; saying so keeps the iterator from prefetching
	// rows past the run, which for short runs is most of the cost.
	slots := slot(hi[prefixLen[l]:prefixLen[cl]]) - slot(lo[prefixLen[l]:prefixLen[cl]]) + 1
	opt := store.IterOptions{Seek: seek}
	if slots <= 1<<16 {
		opt.Limit = int(slots)
	}
	return r.tx.Iterate(ns, parent, opt, func(k, v []byte) error {
		if bytes.Compare(k, end) > 0 {
			return store.ErrStop
		}
		if len(k) != 1+prefixLen[cl] {
			return fmt.Errorf("level %d row key of %d bytes: %w", cl, len(k), ErrCorrupt)
		}
		r.reads++
		a, err := decodeRow(v)
		if err != nil {
			return err
		}
		p := piece{level: cl, acc: a}
		copy(p.lo[:], k[1:])
		p.hi = p.lo
		for i := prefixLen[cl]; i < keySize; i++ {
			p.hi[i] = 0xff
		}
		return fn(p)
	})
}

// slot returns the number of a child within its parent: the bytes its prefix adds, at most 5.
func slot(b []byte) uint64 {
	var v uint64
	for _, x := range b {
		v = v<<8 | uint64(x)
	}
	return v
}

// summary returns the summary of the aligned range [lo, hi]: one row when it is a whole node,
// otherwise the sum over the children in the run.
func (r *reader) summary(lo, hi *key) (acc, error) {
	l, ok := span(lo, hi)
	if !ok {
		return acc{}, fmt.Errorf("range %x..%x not aligned with the index: %w", lo[:], hi[:], ErrMalformed)
	}
	if wholeNode(l, lo, hi) {
		return r.row(l, lo)
	}
	var a acc
	err := r.children(l, lo, hi, func(p piece) error {
		a.merge(&p.acc)
		return nil
	})
	return a, err
}
