package store

import (
	"slices"
	"testing"
	"time"
)

func TestDigestAndDiff(t *testing.T) {
	ctx := t.Context()
	a, b := MustNamespace("a"), MustNamespace("ab")
	fill := func(db *DB) {
		mustWrite(t, db, func(bt *Batch) {
			bt.Set(a, []byte("k1"), []byte("v1"))
			bt.Set(a, []byte("k2"), []byte("v2"))
			bt.Set(b, []byte("k1"), []byte("v1"))
		})
	}
	x, y := openMem(t, Config{}), openMem(t, Config{})
	fill(x)
	fill(y)
	dx, nx, err := x.Digest(ctx)
	if err != nil {
		t.Fatalf("Digest: %v", err)
	}
	dy, ny, err := y.Digest(ctx)
	if err != nil {
		t.Fatalf("Digest: %v", err)
	}
	// Three keys and the format version.
	if dx != dy || nx != 4 || ny != 4 {
		t.Fatalf("Digest of equal contents = %x (%d keys), %x (%d keys); want equal, 4 keys", dx, nx, dy, ny)
	}
	before, err := x.Snapshot(ctx)
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if len(before) != 4 {
		t.Fatalf("Snapshot holds %d keys, want 4", len(before))
	}
	if d := before.Diff(before); len(d) != 0 {
		t.Fatalf("Diff of a snapshot with itself = %v", d)
	}

	// Each kind of change alters what it must: the digest for content, the snapshot for every
	// write, a rewrite of the same value included.
	tests := []struct {
		name   string
		write  func(bt *Batch)
		digest bool // whether the digest changes
		want   []string
	}{
		{"value changed", func(bt *Batch) { bt.Set(a, []byte("k1"), []byte("v1'")) }, true, []string{`~ a/"k1"`}},
		{"key added", func(bt *Batch) { bt.Set(b, []byte("k2"), nil) }, true, []string{`+ ab/"k2"`}},
		{"key deleted", func(bt *Batch) { bt.Delete(a, []byte("k2")) }, true, []string{`- a/"k2"`}},
		{"expiry set", func(bt *Batch) { bt.SetTTL(b, []byte("k1"), []byte("v1"), time.Hour) }, true, []string{`~ ab/"k1"`}},
		{"same value written again", func(bt *Batch) { bt.Set(a, []byte("k1"), []byte("v1")) }, false, []string{`= a/"k1"`}},
		{"key and value swapped across the boundary", func(bt *Batch) {
			bt.Delete(a, []byte("k1"))
			bt.Set(a, []byte("k1v"), []byte("1"))
		}, true, []string{`- a/"k1"`, `+ a/"k1v"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db := openMem(t, Config{})
			fill(db)
			d0, _, err := db.Digest(ctx)
			if err != nil {
				t.Fatalf("Digest: %v", err)
			}
			s0, err := db.Snapshot(ctx)
			if err != nil {
				t.Fatalf("Snapshot: %v", err)
			}
			mustWrite(t, db, tc.write)
			d1, _, err := db.Digest(ctx)
			if err != nil {
				t.Fatalf("Digest: %v", err)
			}
			s1, err := db.Snapshot(ctx)
			if err != nil {
				t.Fatalf("Snapshot: %v", err)
			}
			if (d0 != d1) != tc.digest {
				t.Errorf("digest changed = %v, want %v", d0 != d1, tc.digest)
			}
			var got []string
			for _, c := range s0.Diff(s1) {
				got = append(got, c.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Diff = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDigestPersists(t *testing.T) {
	dir := t.TempDir()
	db := openDir(t, dir)
	mustWrite(t, db, func(bt *Batch) { bt.Set(MustNamespace("x"), []byte("k"), []byte("v")) })
	before, n, err := db.Digest(t.Context())
	if err != nil {
		t.Fatalf("Digest: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, _, err := db.Digest(t.Context()); err == nil {
		t.Fatal("Digest after Close succeeded")
	}
	db = openDir(t, dir)
	defer db.Close()
	after, m, err := db.Digest(t.Context())
	if err != nil {
		t.Fatalf("Digest: %v", err)
	}
	if before != after || n != m {
		t.Fatalf("Digest across a reopen: %x (%d keys) then %x (%d keys)", before, n, after, m)
	}
}
