package reconcile

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/schakel-health/schakel/internal/store"
)

// change runs op (Index.Add or Index.Remove) on it in its own transaction.
func change(t *testing.T, idx *Index, it Item, op func(*Index, *store.Txn, Item) (bool, error)) bool {
	t.Helper()
	var changed bool
	err := idx.db.Update(t.Context(), func(tx *store.Txn) error {
		var err error
		changed, err = op(idx, tx, it)
		return err
	})
	if err != nil {
		t.Fatalf("change of %d/%x: %v", it.Time, it.ID[:4], err)
	}
	return changed
}

func add(t *testing.T, idx *Index, it Item) bool    { return change(t, idx, it, (*Index).Add) }
func remove(t *testing.T, idx *Index, it Item) bool { return change(t, idx, it, (*Index).Remove) }

func count(t *testing.T, idx *Index) uint64 {
	t.Helper()
	n, err := idx.Count(t.Context())
	if err != nil {
		t.Fatalf("Count: %v", err)
	}
	return n
}

// dump returns every row of the index, to compare states.
func dump(t *testing.T, idx *Index) map[string]string {
	t.Helper()
	rows := map[string]string{}
	err := idx.db.View(t.Context(), func(tx *store.Txn) error {
		return tx.Iterate(ns, nil, store.IterOptions{}, func(k, v []byte) error {
			rows[string(k)] = string(v)
			return nil
		})
	})
	if err != nil {
		t.Fatalf("View: %v", err)
	}
	return rows
}

func TestAddRemoveIdempotent(t *testing.T) {
	idx := openIndex(t)
	rng := rand.New(rand.NewPCG(1, 2))
	// Items that share buckets at every level, and items far apart.
	items := slices.Concat(randItems(rng, 50, oneSecond), randItems(rng, 50, oneYear), randItems(rng, 20, years))
	items = append(items, Item{}, Item{Time: ^uint64(0), ID: maxKey.item().ID})

	for i, it := range items {
		if !add(t, idx, it) {
			t.Fatalf("Add of new item %d = false", i)
		}
	}
	checkRows(t, idx)
	before := dump(t, idx)
	for i, it := range items {
		if add(t, idx, it) {
			t.Fatalf("Add of held item %d = true", i)
		}
	}
	if after := dump(t, idx); !mapsEqual(before, after) {
		t.Fatalf("Add of held items changed the rows")
	}
	if got := count(t, idx); got != uint64(len(items)) {
		t.Fatalf("Count = %d, want %d", got, len(items))
	}

	absent := Item{Time: items[0].Time, ID: [32]byte{1, 2, 3}}
	if remove(t, idx, absent) {
		t.Fatalf("Remove of an absent item = true")
	}
	if after := dump(t, idx); !mapsEqual(before, after) {
		t.Fatalf("Remove of an absent item changed the rows")
	}

	// Remove half, twice each, checking the rows after each pass.
	for i, it := range items[:len(items)/2] {
		if !remove(t, idx, it) {
			t.Fatalf("Remove of held item %d = false", i)
		}
		if remove(t, idx, it) {
			t.Fatalf("second Remove of item %d = true", i)
		}
	}
	checkRows(t, idx)
	if got, want := count(t, idx), uint64(len(items)-len(items)/2); got != want {
		t.Fatalf("Count = %d, want %d", got, want)
	}
	for _, it := range items[len(items)/2:] {
		remove(t, idx, it)
	}
	if got := count(t, idx); got != 0 {
		t.Fatalf("Count after removing all = %d", got)
	}
	if rows := dump(t, idx); len(rows) != 1 {
		t.Fatalf("%d rows left after removing every item, want only the version", len(rows))
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestAddInRetriedTransaction(t *testing.T) {
	// store.Update runs its function again after a conflict: the Add of the conflicting attempt
	// must leave nothing, and the retry must add the item once.
	idx := openIndex(t)
	it := Item{Time: 1_750_000_000, ID: [32]byte{9}}
	other := Item{Time: 1_750_000_001, ID: [32]byte{8}}
	attempts := 0
	err := idx.db.Update(t.Context(), func(tx *store.Txn) error {
		attempts++
		if _, err := idx.Add(tx, it); err != nil {
			return err
		}
		if attempts == 1 {
			// A concurrent writer commits to the rows this attempt read.
			add(t, idx, other)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if attempts < 2 {
		t.Fatalf("Update ran its function %d times, want a retry after the conflict", attempts)
	}
	if got := count(t, idx); got != 2 {
		t.Fatalf("Count = %d, want 2", got)
	}
	checkRows(t, idx)
}

func TestHasAndItems(t *testing.T) {
	idx := openIndex(t)
	rng := rand.New(rand.NewPCG(3, 4))
	items := randItems(rng, 300, oneSecond)
	addItems(t, idx, items)
	slices.SortFunc(items, Item.Compare)
	err := idx.db.View(t.Context(), func(tx *store.Txn) error {
		for _, it := range items[:10] {
			if ok, err := idx.Has(tx, it); err != nil || !ok {
				t.Fatalf("Has(held) = %v, %v", ok, err)
			}
		}
		if ok, err := idx.Has(tx, Item{Time: 5}); err != nil || ok {
			t.Fatalf("Has(absent) = %v, %v", ok, err)
		}
		// The items of one leaf bucket: one second, one first id byte.
		b := items[0].ID[0]
		lo := Item{Time: items[0].Time, ID: [32]byte{b}}
		hi := Item{Time: items[0].Time, ID: maxKey.item().ID}
		hi.ID[0] = b
		var got []Item
		if err := idx.Items(tx, lo, hi, func(it Item) error {
			got = append(got, it)
			return nil
		}); err != nil {
			t.Fatalf("Items: %v", err)
		}
		var want []Item
		for _, it := range items {
			if it.ID[0] == b {
				want = append(want, it)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("Items of leaf bucket %x = %d items, want %d", b, len(got), len(want))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("View: %v", err)
	}
}

func TestLoadMatchesAdd(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	items := slices.Concat(randItems(rng, 400, oneSecond), randItems(rng, 400, oneYear))
	a, b := openIndex(t), openIndex(t)
	addItems(t, a, items)
	load(t, b, items)
	checkRows(t, a)
	if !mapsEqual(dump(t, a), dump(t, b)) {
		t.Fatalf("load wrote other rows than Add")
	}
}

func TestCheckRowsDetectsCorruption(t *testing.T) {
	// The consistency check must be able to fail, or the tests that rely on it prove nothing.
	idx := openIndex(t)
	it := Item{Time: 1_750_000_000, ID: [32]byte{7}}
	add(t, idx, it)
	k := it.key()
	err := idx.db.Update(t.Context(), func(tx *store.Txn) error {
		return tx.Set(ns, rowKey(3, &k), encodeRow(&acc{count: 2}))
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	ft := &fakeTB{TB: t}
	func() {
		defer func() { _ = recover() }()
		checkRows(ft, idx)
	}()
	if !ft.failed {
		t.Fatalf("checkRows accepted a corrupted row")
	}
}

// fakeTB records a failure instead of failing the test.
type fakeTB struct {
	testing.TB
	failed bool
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(string, ...any) {
	f.failed = true
	panic("fatal")
}

func TestNewIndexVersion(t *testing.T) {
	db, err := store.Open(store.Config{InMemory: true})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	defer db.Close()
	if _, err := NewIndex(db); err != nil {
		t.Fatalf("NewIndex: %v", err)
	}
	if _, err := NewIndex(db); err != nil {
		t.Fatalf("second NewIndex: %v", err)
	}
	if err := db.Update(context.Background(), func(tx *store.Txn) error {
		return tx.Set(ns, versionKey, []byte{2})
	}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if _, err := NewIndex(db); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("NewIndex over layout 2 = %v, want ErrCorrupt", err)
	}
}

func TestSumArithmetic(t *testing.T) {
	var s sum
	one := [32]byte{31: 1}
	s.sub(&one) // 0 - 1 wraps to 2^256 - 1
	if !bytes.Equal(s[:], maxKey[:32]) {
		t.Fatalf("0-1 = %x, want all ones", s)
	}
	s.add(&one)
	if s != (sum{}) {
		t.Fatalf("(0-1)+1 = %x, want 0", s)
	}
	carry := [32]byte{31: 0xff}
	s.add(&carry)
	s.add(&one)
	if want := (sum{30: 1}); s != want {
		t.Fatalf("0xff+1 = %x, want carry into byte 30", s)
	}
}
