// Package storetest helps tests show that refused input leaves a store unchanged.
package storetest

import (
	"testing"

	"github.com/schakel-health/schakel/internal/store"
)

// Watcher tells a test whether a store still holds what it held when the watch began.
type Watcher struct{ w *store.Watch }

// Watch begins watching db (store.DB.Watch); it fails t if the store cannot be read.
func Watch(t testing.TB, db *store.DB) *Watcher {
	t.Helper()
	w, err := db.Watch(t.Context())
	if err != nil {
		t.Fatalf("watch store: %v", err)
	}
	return &Watcher{w}
}

// Unchanged reports whether the store holds what it held when the watch began.
func (w *Watcher) Unchanged(t testing.TB) bool {
	t.Helper()
	ok, err := w.w.Unchanged(t.Context())
	if err != nil {
		t.Fatalf("read store: %v", err)
	}
	return ok
}
