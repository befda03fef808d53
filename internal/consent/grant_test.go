package consent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func newGrant() Grant {
	return Grant{Custodian: gp, Grantee: hospital, Patient: patV2, DataCategories: summary,
		Resources: []string{"DocumentReference/123", "Observation/abc-1"}, Purpose: "TREAT",
		ValidUntil: t0.Add(14 * 24 * time.Hour)}
}

// TestGrants checks adding, reading and revoking referral grants.
func TestGrants(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	g, err := f.s.AddGrant(ctx, newGrant())
	if err != nil {
		t.Fatalf("AddGrant: %v", err)
	}
	if !strings.HasPrefix(g.ID, "urn:uuid:") || !g.ValidFrom.Equal(t0) || !g.Created.Equal(t0) || g.Revoked {
		t.Fatalf("AddGrant = %+v, want an id, valid from now", g)
	}
	if got, err := f.s.Grant(ctx, g.ID); err != nil || !slices.Equal(got.Resources, g.Resources) || got.ID != g.ID {
		t.Fatalf("Grant = %+v, %v; want %+v", got, err, g)
	}
	named := newGrant()
	named.ID = "urn:uuid:credential-7"
	if _, err := f.s.AddGrant(ctx, named); err != nil {
		t.Fatalf("AddGrant(with id): %v", err)
	}
	if _, err := f.s.AddGrant(ctx, named); !errors.Is(err, ErrExists) {
		t.Fatalf("AddGrant(same id) = %v, want ErrExists", err)
	}
	f.now = t0.Add(time.Hour)
	revoked, err := f.s.RevokeGrant(ctx, g.ID)
	if err != nil || !revoked.Revoked {
		t.Fatalf("RevokeGrant = %+v, %v", revoked, err)
	}
	if got, _ := f.s.Grant(ctx, g.ID); !got.Revoked {
		t.Fatal("revocation not stored")
	}
	if _, err := f.s.RevokeGrant(ctx, g.ID); !errors.Is(err, ErrState) {
		t.Fatalf("RevokeGrant(again) = %v, want ErrState", err)
	}
	if _, err := f.s.Grant(ctx, "urn:uuid:unknown"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Grant(unknown) = %v, want ErrNotFound", err)
	}
	if len(f.grants) != 3 || f.grants[0].before != nil || f.grants[2].before == nil || !f.grants[2].after.Revoked {
		t.Fatalf("OnGrantChange saw %d changes, want add, add, revoke", len(f.grants))
	}

	// The stored grant decides as the one in memory does.
	stored, _ := f.s.Grant(ctx, named.ID)
	req := baseRequest()
	req.DataCategory, req.Time = "gp-professional-summary", f.now
	if got := DefaultPolicy().Decide(req, nil, &stored); !got.Permit || got.GrantID != named.ID {
		t.Fatalf("Decide(stored grant) = %+v, want permitted by it", got)
	}
}

// TestGrantValidate checks the limits of a referral grant.
func TestGrantValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Grant)
		msg    string
	}{
		{"open-ended", func(g *Grant) { g.ValidUntil = time.Time{} }, "validUntil is required"},
		{"longer than 30 days", func(g *Grant) { g.ValidUntil = t0.Add(MaxGrantLifetime + time.Second) }, "longer than the 30 days"},
		{"30 days counted from validFrom", func(g *Grant) {
			g.ValidFrom, g.ValidUntil = t0.Add(24*time.Hour), t0.Add(24*time.Hour+MaxGrantLifetime+time.Minute)
		}, "longer than the 30 days"},
		{"ended already", func(g *Grant) { g.ValidFrom, g.ValidUntil = t0.Add(-48*time.Hour), t0.Add(-time.Hour) }, "ended"},
		{"backwards", func(g *Grant) { g.ValidFrom = t0.Add(15 * 24 * time.Hour) }, "not after validFrom"},
		{"grantee not a DID", func(g *Grant) { g.Grantee = "ziekenhuis" }, "grantee"},
		{"to itself", func(g *Grant) { g.Grantee = gp }, "itself"},
		{"no category", func(g *Grant) { g.DataCategories = nil }, "data categor"},
		{"wildcard purpose", func(g *Grant) { g.Purpose = Wildcard }, "purpose"},
		{"bad resource", func(g *Grant) { g.Resources = []string{"documentreference/1"} }, "resource 0"},
		{"resource without id", func(g *Grant) { g.Resources = []string{"Patient/"} }, "resource 0"},
		{"resource holding a BSN", func(g *Grant) { g.Resources = []string{"Patient/" + bsn} }, "resource 0"},
		{"too many resources", func(g *Grant) { g.Resources = slices.Repeat([]string{"Observation/1"}, 65) }, "resources"},
		{"revoked already", func(g *Grant) { g.Revoked = true }, "revoked"},
		{"id with a BSN", func(g *Grant) { g.ID = "grant-" + bsn }, "grant id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGrant()
			tt.change(&g)
			err := g.validate(t0)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("validate = %v, want ErrInvalid saying %q", err, tt.msg)
			}
			if strings.Contains(err.Error(), bsn) {
				t.Errorf("validate = %q repeats the BSN", err)
			}
		})
	}
	g := newGrant()
	g.ValidUntil = t0.Add(MaxGrantLifetime)
	if err := g.validate(t0); err != nil {
		t.Fatalf("validate(exactly 30 days): %v", err)
	}
}

// TestSuccession checks transitive predecessors, cycles and idempotence.
func TestSuccession(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	a, b, c, d := "did:schakel:a", "did:schakel:b", "did:schakel:c", "did:schakel:d"
	for _, s := range [][2]string{{a, b}, {b, c}, {d, c}, {a, b}} {
		if err := f.s.AddSuccession(ctx, s[0], s[1]); err != nil {
			t.Fatalf("AddSuccession(%s, %s): %v", s[0], s[1], err)
		}
	}
	got, err := f.s.Custodians(ctx, c)
	if err != nil {
		t.Fatalf("Custodians: %v", err)
	}
	if got[0] != c || !sameSet(got[1:], []string{a, b, d}) || len(got) != 4 {
		t.Fatalf("Custodians(c) = %q, want c then a, b, d", got)
	}
	if p, err := f.s.Predecessors(ctx, a); err != nil || len(p) != 0 {
		t.Fatalf("Predecessors(a) = %q, %v; want none", p, err)
	}
	for _, s := range [][2]string{{c, a}, {b, a}, {c, b}} {
		if err := f.s.AddSuccession(ctx, s[0], s[1]); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "cycle") {
			t.Errorf("AddSuccession(%s, %s) = %v, want a refused cycle", s[0], s[1], err)
		}
	}
	if _, err := f.s.Predecessors(ctx, "not a did"); !errors.Is(err, ErrInvalid) {
		t.Errorf("Predecessors(bad) = %v, want ErrInvalid", err)
	}
}

// TestSuccessionBound checks that an organisation cannot gather more than maxPredecessors.
func TestSuccessionBound(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	hub := "did:schakel:hub"
	for i := range maxPredecessors {
		if err := f.s.AddSuccession(ctx, fmt.Sprintf("did:schakel:practice-%d", i), hub); err != nil {
			t.Fatalf("AddSuccession %d: %v", i, err)
		}
	}
	if err := f.s.AddSuccession(ctx, "did:schakel:one-too-many", hub); !errors.Is(err, ErrInvalid) {
		t.Fatalf("AddSuccession beyond the bound = %v, want ErrInvalid", err)
	}
	got, err := f.s.Custodians(ctx, hub)
	if err != nil || len(got) != maxPredecessors+1 {
		t.Fatalf("Custodians = %d, %v; want %d", len(got), err, maxPredecessors+1)
	}
	if _, err := f.s.ForPatient(ctx, got, []string{patV2}); err != nil {
		t.Fatalf("ForPatient(all custodians): %v", err)
	}
}
