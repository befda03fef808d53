package verify

import (
	"math/rand/v2"
	"strconv"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// TestFrontierRoot compares the frontier's root with tlog.TreeHash after every append, the
// leaves appended in compact ranges cut at random places as the workers cut them.
func TestFrontierRoot(t *testing.T) {
	const n = 300
	l := &testLog{tb: t}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range n {
		l.addLine([]byte("leaf " + strconv.Itoa(i)))
	}
	tests := []struct {
		name string
		cut  func(i int) bool // start a new range before leaf i
	}{
		{"one range", func(int) bool { return false }},
		{"every leaf", func(int) bool { return true }},
		{"every 7", func(i int) bool { return i%7 == 0 }},
		{"powers of two", func(i int) bool { return i&(i-1) == 0 }},
		{"random", func(int) bool { return rng.IntN(5) == 0 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var f frontier
			if got, want := f.root(), l.root(0); got != want {
				t.Fatalf("root of the empty tree: %v, want %v", got, want)
			}
			var r rangeHasher
			flush := func() {
				for _, nd := range r.nodes {
					f.appendNode(nd)
				}
			}
			r.reset(0)
			for i := range n {
				if i > 0 && tc.cut(i) {
					flush()
					if got, want := f.root(), l.root(int64(i)); got != want {
						t.Fatalf("root(%d) = %v, want tlog.TreeHash %v", i, got, want)
					}
					r.reset(int64(i))
				}
				r.appendLeaf(tlog.RecordHash(l.lines[i]))
			}
			flush()
			if f.size != n {
				t.Fatalf("frontier size %d, want %d", f.size, n)
			}
			if got, want := f.root(), l.root(n); got != want {
				t.Fatalf("root(%d) = %v, want tlog.TreeHash %v", n, got, want)
			}
		})
	}
}
