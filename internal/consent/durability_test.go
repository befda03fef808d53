package consent

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/schakel-health/schakel/internal/store"
)

// TestConcurrentRecords checks that concurrent records of one scope leave exactly one active.
func TestConcurrentRecords(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if _, err := f.s.Record(ctx, adultConsent()); err != nil {
				t.Errorf("Record: %v", err)
			}
		})
	}
	wg.Wait()
	recs, err := f.s.ForPatient(ctx, []string{gp}, []string{patV2})
	if err != nil {
		t.Fatalf("ForPatient: %v", err)
	}
	n := 0
	for _, c := range recs {
		if c.Status == StatusActive {
			n++
		}
	}
	if len(recs) != 16 || n != 1 {
		t.Fatalf("%d records, %d active; want 16 and 1", len(recs), n)
	}
}

// TestPersistence checks that records, grants and successions survive closing and reopening a
// database on disk.
func TestPersistence(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := store.Open(store.Config{Dir: dir})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	f := newFixtureOn(t, db)
	kept := f.record(adultConsent())
	revoked := adultConsent()
	revoked.DataCategories = medication
	gone := f.record(revoked)
	gone, err = f.s.Revoke(ctx, gone.ID, "")
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	g, err := f.s.AddGrant(ctx, *referral(func(g *Grant) { g.ID, g.ValidFrom, g.ValidUntil = "", time.Time{}, t0.Add(time.Hour) }))
	if err != nil {
		t.Fatalf("AddGrant: %v", err)
	}
	if err := f.s.AddSuccession(ctx, gpOld, gp); err != nil {
		t.Fatalf("AddSuccession: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	db, err = store.Open(store.Config{Dir: dir})
	if err != nil {
		t.Fatalf("store.Open again: %v", err)
	}
	defer db.Close()
	f = newFixtureOn(t, db)
	recs, err := f.s.ForPatient(ctx, []string{gp}, []string{patV2})
	if err != nil {
		t.Fatalf("ForPatient: %v", err)
	}
	slices.SortFunc(recs, func(a, b Consent) int { return strings.Compare(a.ID, b.ID) })
	want := []Consent{kept, gone}
	slices.SortFunc(want, func(a, b Consent) int { return strings.Compare(a.ID, b.ID) })
	if !reflect.DeepEqual(recs, want) {
		t.Fatalf("after reopen ForPatient = %+v, want %+v", recs, want)
	}
	if got, err := f.s.Grant(ctx, g.ID); err != nil || !reflect.DeepEqual(got, g) {
		t.Fatalf("after reopen Grant = %+v, %v; want %+v", got, err, g)
	}
	if got, err := f.s.Custodians(ctx, gp); err != nil || !slices.Equal(got, []string{gp, gpOld}) {
		t.Fatalf("after reopen Custodians = %q, %v", got, err)
	}
	if pending, err := f.s.List(ctx, gp, StatusRevoked, 0); err != nil || len(pending) != 1 || pending[0].ID != gone.ID {
		t.Fatalf("after reopen List(revoked) = %d, %v", len(pending), err)
	}
}
