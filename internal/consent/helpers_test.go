package consent

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/schakel-health/schakel/internal/store"
)

// Organisations and pseudonyms of the tests. patV1 and patV2 are one patient's pseudonyms under
// two secret versions; patOther is someone else.
const (
	gp          = "did:schakel:huisarts-jansen"
	gpOld       = "did:schakel:huisarts-de-vries" // gp's predecessor
	hospital    = "did:schakel:ziekenhuis-noord"
	hospitalOld = "did:schakel:ziekenhuis-oud" // hospital's predecessor
	pharmacy    = "did:schakel:apotheek-centrum"
	portal      = "did:schakel:portaal"
	patV2       = "v2.Qm9vbGVhbi1wc2V1ZG9ueW0tb2YtYS1wYXRpZW50LXYy"
	patV1       = "v1.T2xkLXBzZXVkb255bS1vZi10aGUtc2FtZS1wYXRpZW50"
	patOther    = "v2.U29tZWJvZHktZWxzZS1lbnRpcmVseS1hbm90aGVyLXBh"
)

// t0 is the tests' "now".
var t0 = time.Date(2030, 3, 1, 10, 0, 0, 0, time.UTC)

// born returns the date of birth of someone who is years old (and a few days) at t0.
func born(years int) time.Time {
	return time.Date(t0.Year()-years, t0.Month(), t0.Day(), 0, 0, 0, 0, time.UTC).AddDate(0, 0, -10)
}

// adultConsent is a valid desk permit of an adult for every category to any care provider.
func adultConsent() Consent {
	return Consent{
		Custodian:        gp,
		Patient:          patV2,
		Decision:         DecisionPermit,
		Basis:            "WGBO art. 7:457, mondeling aan de balie",
		Grantee:          Grantee{Any: true},
		DataCategories:   []string{Wildcard},
		Purposes:         []string{"TREAT"},
		Grantors:         []GrantorRole{GrantorSelf},
		PatientBirthDate: born(40),
		Channel:          ChannelDesk,
		Assurance:        AssuranceHigh,
	}
}

// fixture is a Store over an in-memory DB with a settable clock, recording the hook calls.
type fixture struct {
	t       *testing.T
	db      *store.DB
	s       *Store
	now     time.Time
	changes []change
	grants  []grantChange
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	db, err := store.Open(store.Config{InMemory: true})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return newFixtureOn(t, db)
}

func newFixtureOn(t *testing.T, db *store.DB) *fixture {
	t.Helper()
	f := &fixture{t: t, db: db, now: t0}
	s, err := New(Config{
		Now: func() time.Time { return f.now },
		OnChange: func(before *Consent, after Consent, done *store.Batch) error {
			f.changes = append(f.changes, change{before: before, after: after})
			return db.Write(context.Background(), done)
		},
		OnGrantChange: func(before *Grant, after Grant) { f.grants = append(f.grants, grantChange{before, after}) },
	}, db)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.s = s
	return f
}

func (f *fixture) record(c Consent) Consent {
	f.t.Helper()
	got, err := f.s.Record(context.Background(), c)
	if err != nil {
		f.t.Fatalf("Record: %v", err)
	}
	return got
}

func (f *fixture) get(id string) Consent {
	f.t.Helper()
	got, err := f.s.Get(context.Background(), id)
	if err != nil {
		f.t.Fatalf("Get(%s): %v", id, err)
	}
	return got
}

// dump returns every key and value in the namespace, to show that a refused call wrote nothing.
func (f *fixture) dump() string {
	f.t.Helper()
	var b bytes.Buffer
	err := f.db.View(context.Background(), func(tx *store.Txn) error {
		return tx.Iterate(ns, nil, store.IterOptions{}, func(k, v []byte) error {
			fmt.Fprintf(&b, "%q=%q\n", k, v)
			return nil
		})
	})
	if err != nil {
		f.t.Fatalf("dump: %v", err)
	}
	return b.String()
}
