package vc

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/schakel-health/schakel/internal/store"
)

// TestOnChange checks that stored credentials and replaced status lists are reported inside the
// storing transaction, and that a failing hook leaves nothing stored.
func TestOnChange(t *testing.T) {
	f := newFixture(t)
	var added, removed []string
	fail := false
	s, err := NewStore(StoreConfig{Anchors: TrustAnchors{OrganizationCredential: {f.reg.id}}, Now: func() time.Time { return f.now },
		OnChange: func(tx *store.Txn, doc []byte, issued time.Time, rm bool) error {
			if fail {
				return errors.New("hook failed")
			}
			if rm {
				removed = append(removed, string(doc))
			} else {
				added = append(added, string(doc))
			}
			return nil
		}}, f.db, f.dids)
	if err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	f.s = s
	// The fixture stored this list already: storing it again is no change.
	l1 := f.publishList(f.reg, t0)
	org := f.orgCredential(f.reg, f.rogue.id, "Huisartsenpraktijk Jansen", t0, 24*time.Hour)
	if _, _, err := s.Add(context.Background(), org); err != nil {
		t.Fatalf("Add: %v", err)
	}
	if _, _, err := s.Add(context.Background(), org); err != nil {
		t.Fatalf("Add(again): %v", err)
	}
	l2 := f.publishList(f.reg, t0.Add(time.Minute))
	if want := []string{string(org), string(l2)}; !equal(added, want) {
		t.Fatalf("added = %d documents, want %d", len(added), len(want))
	}
	if want := []string{string(l1)}; !equal(removed, want) {
		t.Fatalf("removed = %d documents, want the first status list", len(removed))
	}

	fail = true
	before := f.dump()
	other := f.orgCredential(f.reg, f.reg.id, "Apotheek", t0, 24*time.Hour)
	if _, _, err := s.Add(context.Background(), other); err == nil {
		t.Fatal("Add with a failing hook succeeded")
	}
	if after := f.dump(); after != before {
		t.Fatal("a failed hook left a trace in storage")
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestAddMany checks that a batch stores what verifies in one go, reports what does not, and
// matches what Add would store.
func TestAddMany(t *testing.T) {
	f := newFixture(t)
	good1 := f.orgCredential(f.reg, f.rogue.id, "Huisartsenpraktijk Jansen", t0, 24*time.Hour)
	good2 := f.orgCredential(f.reg, f.reg.id, "Apotheek Janssens", t0, 24*time.Hour)
	untrusted := f.orgCredential(f.rogue, f.reg.id, "Zorgverzekeraar", t0, 24*time.Hour)
	tampered := append([]byte(nil), good2...)
	tampered[len(tampered)-3] ^= 1
	list := f.publishList(f.reg, t0.Add(time.Minute))
	res := f.s.AddMany(context.Background(), [][]byte{good1, untrusted, list, tampered, good2, []byte("junk"), good1})
	want := []struct {
		added bool
		ok    bool
	}{{true, true}, {false, false}, {false, true}, {false, false}, {true, true}, {false, false}, {false, true}}
	for i, w := range want {
		if res[i].Added != w.added || (res[i].Err == nil) != w.ok {
			t.Errorf("result %d = added %v, err %v; want added %v, ok %v", i, res[i].Added, res[i].Err, w.added, w.ok)
		}
	}
	for _, d := range [][]byte{good1, good2} {
		c, err := Parse(d)
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if _, err := f.s.Get(context.Background(), c.ID); err != nil {
			t.Fatalf("Get(%s): %v", c.ID, err)
		}
	}
	if !errors.Is(res[1].Err, ErrUntrusted) {
		t.Errorf("untrusted credential: %v", res[1].Err)
	}
}
