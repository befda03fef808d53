package store

import (
	"errors"
	"runtime"
	"strings"
	"testing"
)

// full is a reserve of free space no filesystem meets: it stands for a full disk.
const full = 1 << 62

// TestMinFreeSpace checks that writes are refused, with nothing written, while the filesystem has
// less free space than the reserve, that reads and read-only updates go on, and that the check
// can be turned off and does not apply in memory.
func TestMinFreeSpace(t *testing.T) {
	if _, ok := freeSpace(t.TempDir()); !ok {
		t.Skipf("free space cannot be read on %s", runtime.GOOS)
	}
	ns := MustNamespace("space")
	for _, tc := range []struct {
		name    string
		cfg     Config
		minFree int64 // set after Open: the disk fills up while the node runs
		refused bool
	}{
		{"reserve above the free space", Config{}, full, true},
		{"check off", Config{MinFreeSpace: -1}, -1, false},
		{"in memory", Config{InMemory: true, MinFreeSpace: full}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			if !cfg.InMemory {
				cfg.Dir = t.TempDir()
			}
			db, err := Open(cfg)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer func() {
				db.minFree = -1 // space again, for a full close
				db.Close()
			}()
			if !cfg.InMemory {
				db.minFree = tc.minFree
			}
			check := func(call string, err error) {
				t.Helper()
				switch {
				case tc.refused && !errors.Is(err, ErrNoSpace):
					t.Errorf("%s = %v, want ErrNoSpace", call, err)
				case tc.refused && !strings.Contains(err.Error(), "below the reserve of"):
					t.Errorf("%s = %v, want the free space and the reserve named", call, err)
				case !tc.refused && err != nil:
					t.Errorf("%s: %v", call, err)
				}
			}
			check("CheckSpace", db.CheckSpace())
			var b Batch
			b.Set(ns, []byte("written"), []byte("by Write"))
			check("Write", db.Write(t.Context(), &b))
			check("Update", db.Update(t.Context(), func(tx *Txn) error { return tx.Set(ns, []byte("updated"), []byte("by Update")) }))
			check("Update(Delete)", db.Update(t.Context(), func(tx *Txn) error { return tx.Delete(ns, []byte("written")) }))
			// An Update that only reads commits nothing and is never refused.
			if err := db.Update(t.Context(), func(tx *Txn) error { _, err := tx.Has(ns, []byte("written")); return err }); err != nil {
				t.Errorf("read-only Update: %v", err)
			}
			// Write then Update add a key each and the delete removes the first: one when they
			// all went through, none when they were refused.
			if got, want := countKeys(t, db, ns), map[bool]int{true: 0, false: 1}[tc.refused]; got != want {
				t.Errorf("%d keys stored, want %d", got, want)
			}
		})
	}
}

// TestNoSpaceOpenClose checks that Open refuses a directory whose filesystem is below the reserve
// and that Close on a full disk leaves badger open, losing nothing: what was written is there at
// the next Open.
func TestNoSpaceOpenClose(t *testing.T) {
	dir := t.TempDir()
	if _, ok := freeSpace(dir); !ok {
		t.Skipf("free space cannot be read on %s", runtime.GOOS)
	}
	ns := MustNamespace("space")
	db := openDir(t, dir)
	mustWrite(t, db, func(b *Batch) { b.Set(ns, []byte("k"), []byte("v")) })
	db.minFree = full
	if err := db.Close(); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Close on a full disk = %v, want ErrNoSpace", err)
	}
	// What the node's process exit does: the directory lock goes with badger.
	if err := db.bdb.Close(); err != nil {
		t.Fatalf("badger Close: %v", err)
	}
	if _, err := Open(Config{Dir: dir, MinFreeSpace: full}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Open on a full disk = %v, want ErrNoSpace", err)
	}
	db = openDir(t, dir)
	defer db.Close()
	if n := countKeys(t, db, ns); n != 1 {
		t.Fatalf("%d keys after the reopen, want the 1 written", n)
	}
}

func countKeys(t *testing.T, db *DB, ns Namespace) int {
	t.Helper()
	n := 0
	if err := db.View(t.Context(), func(tx *Txn) error {
		return tx.Iterate(ns, nil, IterOptions{}, func(_, _ []byte) error { n++; return nil })
	}); err != nil {
		t.Fatalf("Iterate: %v", err)
	}
	return n
}
