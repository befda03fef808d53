package vc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/did"
	"github.com/schakel-health/schakel/internal/store"
)

var t0 = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

// party is an organisation or register with its keys, known to the fixture's DID registry.
type party struct {
	id   string
	sig  *crypto.PrivateKey
	enc  *crypto.PrivateKey
	list *StatusListState
}

type fixture struct {
	t     testing.TB
	db    *store.DB
	dids  *did.Registry
	s     *Store
	now   time.Time
	reg   *party // the trusted register
	rogue *party // a register nobody trusts
}

func newParty(t testing.TB, dids *did.Registry, at time.Time) *party {
	t.Helper()
	sig, enc, err := did.GenerateKeys()
	if err != nil {
		t.Fatalf("GenerateKeys: %v", err)
	}
	g, id, err := did.NewGenesis(sig, enc.Public(), at)
	if err != nil {
		t.Fatalf("NewGenesis: %v", err)
	}
	if _, _, err := dids.AddEvent(context.Background(), g); err != nil {
		t.Fatalf("AddEvent: %v", err)
	}
	return &party{id: id, sig: sig, enc: enc, list: NewStatusListState(id, 1)}
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	db, err := store.Open(store.Config{InMemory: true})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	f := &fixture{t: t, db: db, now: t0.Add(time.Hour)}
	clock := func() time.Time { return f.now }
	if f.dids, err = did.New(did.Config{Now: clock}, db); err != nil {
		t.Fatalf("did.New: %v", err)
	}
	f.reg = newParty(t, f.dids, t0)
	f.rogue = newParty(t, f.dids, t0)
	if f.s, err = NewStore(StoreConfig{Anchors: TrustAnchors{OrganizationCredential: {f.reg.id}}, Now: clock}, db, f.dids); err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	for _, p := range []*party{f.reg, f.rogue} {
		f.publishList(p, t0)
	}
	return f
}

func (f *fixture) publishList(p *party, at time.Time) []byte {
	f.t.Helper()
	list, _, err := p.list.Issue(p.sig, at)
	if err != nil {
		f.t.Fatalf("StatusListState.Issue: %v", err)
	}
	if _, _, err := f.s.Add(context.Background(), list); err != nil {
		f.t.Fatalf("Add(status list): %v", err)
	}
	return list
}

// orgCredential issues an OrganizationCredential from issuer to subject without storing it.
func (f *fixture) orgCredential(issuer *party, subject, name string, at time.Time, validity time.Duration) []byte {
	f.t.Helper()
	entry, err := issuer.list.Allocate()
	if err != nil {
		f.t.Fatalf("Allocate: %v", err)
	}
	compact, _, err := Issue(issuer.sig, Request{
		Kind: OrganizationCredential, Issuer: issuer.id, IssuedAt: at, ValidUntil: at.Add(validity), Status: entry,
		Organization: &Organization{ID: subject, Name: name, URA: "01234567", Type: "Z3", City: "Utrecht"},
	})
	if err != nil {
		f.t.Fatalf("Issue: %v", err)
	}
	return compact
}

func (f *fixture) dump() string {
	f.t.Helper()
	var b strings.Builder
	err := f.db.View(context.Background(), func(tx *store.Txn) error {
		for _, ns := range []store.Namespace{nsVC, nsDir} {
			if err := tx.Iterate(ns, nil, store.IterOptions{}, func(k, v []byte) error {
				fmt.Fprintf(&b, "%s %q=%q\n", ns.Name(), k, v)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		f.t.Fatalf("dump: %v", err)
	}
	return b.String()
}

func TestOrganizationCredentialLifecycle(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t)
	gp := newParty(t, f.dids, t0)
	oc := f.orgCredential(f.reg, gp.id, "Huisartsenpraktijk Jansen", t0.Add(time.Minute), 365*24*time.Hour)
	c, added, err := f.s.Add(ctx, oc)
	if err != nil || !added {
		t.Fatalf("Add(organisation credential) = %v, %v", added, err)
	}
	if c.Kind != OrganizationCredential || c.Subject != gp.id || c.Organization.Name != "Huisartsenpraktijk Jansen" {
		t.Fatalf("Add returned %+v", c)
	}
	if _, added, err := f.s.Add(ctx, oc); err != nil || added {
		t.Fatalf("Add(same again) = %v, %v; want not added, no error", added, err)
	}
	if _, err := f.s.Verifier().Verify(ctx, oc); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	es, err := f.s.Search(ctx, Query{Name: "jans*"})
	if err != nil || len(es) != 1 || es[0].DID != gp.id {
		t.Fatalf("Search(jans*) = %+v, %v", es, err)
	}

	// The register revokes it: verification fails and the directory drops it.
	if err := f.reg.list.Revoke(c.Status); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	f.publishList(f.reg, t0.Add(2*time.Minute))
	if _, err := f.s.Verifier().Verify(ctx, oc); !errors.Is(err, ErrRevoked) {
		t.Fatalf("Verify(revoked) = %v, want ErrRevoked", err)
	}
	if es, err := f.s.Search(ctx, Query{Name: "jans*"}); err != nil || len(es) != 0 {
		t.Fatalf("Search after revocation = %+v, %v; want none", es, err)
	}
	// An older list (before the revocation) is a rollback and is refused.
	old := NewStatusListState(f.reg.id, 1)
	stale, _, err := old.Issue(f.reg.sig, t0.Add(3*time.Minute))
	if err != nil {
		t.Fatalf("Issue(stale list): %v", err)
	}
	if _, _, err := f.s.Add(ctx, stale); !errors.Is(err, ErrRollback) {
		t.Fatalf("Add(list clearing a revocation) = %v, want ErrRollback", err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t)
	gp := newParty(t, f.dids, t0)
	good := f.orgCredential(f.reg, gp.id, "Huisartsenpraktijk Jansen", t0.Add(time.Minute), 365*24*time.Hour)
	untrusted := f.orgCredential(f.rogue, gp.id, "Huisartsenpraktijk Jansen", t0.Add(time.Minute), 365*24*time.Hour)
	expired := f.orgCredential(f.reg, gp.id, "Huisartsenpraktijk Jansen", t0.Add(time.Minute), 30*time.Minute)
	future := f.orgCredential(f.reg, gp.id, "Huisartsenpraktijk Jansen", t0.Add(48*time.Hour), 24*time.Hour)
	parts := strings.Split(string(good), ".")
	p := []byte(parts[1])
	p[len(p)/2] ^= 1
	tampered := []byte(parts[0] + "." + string(p) + "." + parts[2])
	// A service registration issued by someone other than its subject.
	entry, _ := f.reg.list.Allocate()
	_, _, notSelf := Issue(f.reg.sig, Request{Kind: ServiceRegistrationCredential, Issuer: f.reg.id, IssuedAt: t0, ValidUntil: t0.Add(time.Hour), Status: entry,
		Service: &Service{ID: gp.id, Endpoints: []Endpoint{{Type: "fhir", URL: "https://gp.example/fhir"}}}})
	if notSelf == nil {
		t.Fatalf("Issue accepted a service registration for another subject")
	}
	// A credential whose issuer is unknown to the node.
	stranger := newParty(t, mustRegistry(t), t0)
	unknown, _, _ := Issue(stranger.sig, Request{Kind: OrganizationCredential, Issuer: stranger.id, IssuedAt: t0, ValidUntil: t0.Add(time.Hour),
		Status:       &StatusEntry{ID: stranger.id + "/status/1#5", Type: "BitstringStatusListEntry", StatusPurpose: "revocation", StatusListIndex: "5", StatusListCredential: stranger.id + "/status/1"},
		Organization: &Organization{ID: gp.id, Name: "X", URA: "01234567", Type: "Z3", City: "Utrecht"}})
	hs256 := []byte("eyJhbGciOiJIUzI1NiIsInR5cCI6InZjK2p3dCJ9.e30.c2ln")
	none := []byte("eyJhbGciOiJub25lIiwidHlwIjoidmMrand0In0.e30.")

	tests := []struct {
		name string
		jwt  []byte
		want error
	}{
		{"issuer not a trusted register", untrusted, ErrUntrusted},
		{"expired", expired, ErrExpired},
		{"not yet valid", future, ErrNotYetValid},
		{"tampered payload", tampered, errTampered},
		{"issuer unknown", unknown, did.ErrUnknownDID},
		{"alg HS256", hs256, crypto.ErrAlgorithm},
		{"alg none", none, crypto.ErrAlgorithm},
		{"oversized", []byte(strings.Repeat("A", MaxSize+1)), ErrTooLarge},
		{"garbage", []byte("garbage"), ErrMalformed},
	}
	before := f.dump()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := f.s.Verifier().Verify(ctx, tc.jwt); !isErr(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
			if _, _, err := f.s.Add(ctx, tc.jwt); !isErr(err, tc.want) {
				t.Fatalf("Add = %v, want %v", err, tc.want)
			}
		})
	}
	if after := f.dump(); after != before {
		t.Fatalf("refused credentials changed storage:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// errTampered stands for either way a changed payload is refused: it no longer parses, or its
// signature no longer verifies.
var errTampered = errors.New("tampered")

func isErr(err, want error) bool {
	if want == errTampered {
		return errors.Is(err, crypto.ErrSignature) || errors.Is(err, ErrMalformed)
	}
	return errors.Is(err, want)
}

func mustRegistry(t *testing.T) *did.Registry {
	t.Helper()
	db, err := store.Open(store.Config{InMemory: true})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	r, err := did.New(did.Config{}, db)
	if err != nil {
		t.Fatalf("did.New: %v", err)
	}
	return r
}

func TestServiceRegistrationSurvivesRotation(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t)
	gp := newParty(t, f.dids, t0)
	if _, _, err := f.s.Add(ctx, f.orgCredential(f.reg, gp.id, "Huisartsenpraktijk Jansen", t0.Add(time.Minute), 365*24*time.Hour)); err != nil {
		t.Fatalf("Add(organisation credential): %v", err)
	}
	f.now = t0.Add(10 * time.Minute)
	src, err := f.s.IssueAs(ctx, gp.sig, Request{Kind: ServiceRegistrationCredential, Issuer: gp.id, IssuedAt: f.now, ValidUntil: f.now.Add(24 * time.Hour),
		Service: &Service{ID: gp.id, Endpoints: []Endpoint{{Type: "fhir", URL: "https://jansen.example/fhir"}}, DataCategories: []string{"medication"}, Purposes: []string{"TREAT"}}})
	if err != nil {
		t.Fatalf("IssueAs: %v", err)
	}
	st, err := f.dids.Resolve(ctx, gp.id)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	newSig, newEnc, err := did.GenerateKeys()
	if err != nil {
		t.Fatalf("GenerateKeys: %v", err)
	}
	f.now = t0.Add(20 * time.Minute)
	rot, err := did.NewRotate(gp.sig, st, newSig.Public(), newEnc.Public(), f.now)
	if err != nil {
		t.Fatalf("NewRotate: %v", err)
	}
	if _, _, err := f.dids.AddEvent(ctx, rot); err != nil {
		t.Fatalf("AddEvent(rotate): %v", err)
	}
	f.now = t0.Add(30 * time.Minute)
	if _, err := f.s.Verifier().Verify(ctx, src.JWT); err != nil {
		t.Fatalf("Verify(registration signed before rotation): %v", err)
	}
	// The old key can no longer issue: a registration it signs now does not verify.
	late, _, err := Issue(gp.sig, Request{Kind: ServiceRegistrationCredential, Issuer: gp.id, IssuedAt: f.now, ValidUntil: f.now.Add(time.Hour), Status: src.Status, Service: src.Service})
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	if _, err := f.s.Verifier().Verify(ctx, late); !errors.Is(err, did.ErrNoKey) {
		t.Fatalf("Verify(signed by the old key after rotation) = %v, want ErrNoKey", err)
	}
	es, err := f.s.Search(ctx, Query{Name: "Huisartsenpraktijk Jansen"})
	if err != nil || len(es) != 1 || es[0].Service == nil || es[0].Service.Endpoints[0].URL != "https://jansen.example/fhir" {
		t.Fatalf("Search = %+v, %v; want the GP with its endpoint", es, err)
	}
	// Revocation by the hosted issuer.
	if _, _, err := f.s.RevokeAs(ctx, newSig, gp.id, src.ID, f.now); err != nil {
		t.Fatalf("RevokeAs: %v", err)
	}
	if _, err := f.s.Verifier().Verify(ctx, src.JWT); !errors.Is(err, ErrRevoked) {
		t.Fatalf("Verify(revoked registration) = %v, want ErrRevoked", err)
	}
	if es, _ := f.s.Search(ctx, Query{Name: "jansen"}); len(es) != 1 || es[0].Service != nil {
		t.Fatalf("Search after revoking the registration = %+v; want the GP without service", es)
	}
}

func TestSearch(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t)
	orgs := []struct{ name, ura, typ, city string }{
		{"Huisartsenpraktijk Jansen", "00000001", "Z3", "Utrecht"},
		{"Janssens Apotheek", "00000002", "J8", "Utrecht"},
		{"Janssen-de Hoogh Huisartsen", "00000003", "Z3", "Zwolle"},
		{"Jänsch Ziekenhuis", "00000004", "V6", "Den Haag"},
		{"Ziekenhuis Rijnstad", "00000005", "V6", "Arnhem"},
		{"Apotheek De Jansbrug", "00000006", "J8", "’s-Hertogenbosch"},
	}
	dids := map[string]string{}
	for _, o := range orgs {
		p := newParty(t, f.dids, t0)
		dids[o.name] = p.id
		entry, _ := f.reg.list.Allocate()
		oc, _, err := Issue(f.reg.sig, Request{Kind: OrganizationCredential, Issuer: f.reg.id, IssuedAt: t0.Add(time.Minute), ValidUntil: t0.Add(48 * time.Hour), Status: entry,
			Organization: &Organization{ID: p.id, Name: o.name, URA: o.ura, Type: o.typ, City: o.city}})
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		if _, _, err := f.s.Add(ctx, oc); err != nil {
			t.Fatalf("Add(%s): %v", o.name, err)
		}
	}
	tests := []struct {
		name  string
		q     Query
		want  []string
		error error
	}{
		{"trailing wildcard, any word", Query{Name: "jans*"}, []string{"Apotheek De Jansbrug", "Huisartsenpraktijk Jansen", "Janssen-de Hoogh Huisartsen", "Janssens Apotheek", "Jänsch Ziekenhuis"}, nil},
		{"case and accents folded", Query{Name: "JÄNS*"}, []string{"Apotheek De Jansbrug", "Huisartsenpraktijk Jansen", "Janssen-de Hoogh Huisartsen", "Janssens Apotheek", "Jänsch Ziekenhuis"}, nil},
		{"accented name found without accent", Query{Name: "jansch*"}, []string{"Jänsch Ziekenhuis"}, nil},
		{"whole word", Query{Name: "jansen"}, []string{"Huisartsenpraktijk Jansen"}, nil},
		{"word after a hyphen", Query{Name: "de hoogh*"}, []string{"Janssen-de Hoogh Huisartsen"}, nil},
		{"whole word in the middle", Query{Name: "hoogh"}, []string{"Janssen-de Hoogh Huisartsen"}, nil},
		{"part of a word is no match without *", Query{Name: "jans"}, nil, nil},
		{"by URA", Query{URA: "00000005"}, []string{"Ziekenhuis Rijnstad"}, nil},
		{"by type", Query{Type: "J8"}, []string{"Apotheek De Jansbrug", "Janssens Apotheek"}, nil},
		{"by city", Query{City: "utrecht"}, []string{"Huisartsenpraktijk Jansen", "Janssens Apotheek"}, nil},
		{"name and type", Query{Name: "jans*", Type: "Z3"}, []string{"Huisartsenpraktijk Jansen", "Janssen-de Hoogh Huisartsen"}, nil},
		{"limit", Query{Name: "jans*", Limit: 2}, nil, nil},
		{"no match", Query{Name: "xyz*"}, nil, nil},
		{"wildcard inside", Query{Name: "ja*s"}, nil, ErrInvalidQuery},
		{"only a wildcard", Query{Name: "*"}, nil, ErrInvalidQuery},
		{"empty query", Query{}, nil, ErrInvalidQuery},
		{"limit too large", Query{Name: "a*", Limit: MaxLimit + 1}, nil, ErrInvalidQuery},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			es, err := f.s.Search(ctx, tc.q)
			if !errors.Is(err, tc.error) {
				t.Fatalf("Search(%+v) error = %v, want %v", tc.q, err, tc.error)
			}
			if tc.error != nil {
				return
			}
			if tc.q.Limit != 0 {
				if len(es) != tc.q.Limit {
					t.Fatalf("Search(%+v) = %d entries, want %d", tc.q, len(es), tc.q.Limit)
				}
				return
			}
			var got []string
			for _, e := range es {
				got = append(got, e.Organization.Name)
				if dids[e.Organization.Name] != e.DID {
					t.Fatalf("entry %s has DID %s", e.Organization.Name, e.DID)
				}
			}
			sortStrings(got)
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("Search(%+v) = %q, want %q", tc.q, got, tc.want)
			}
		})
	}
	// Expired organisation credentials leave the results.
	f.now = t0.Add(72 * time.Hour)
	if es, err := f.s.Search(ctx, Query{Name: "jans*"}); err != nil || len(es) != 0 {
		t.Fatalf("Search after expiry = %d entries, %v; want none", len(es), err)
	}
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func TestStatusListBits(t *testing.T) {
	b := NewBits(StatusListSize)
	for _, i := range []int{0, 7, 8, 131071} {
		b.Set(i)
	}
	got, err := DecodeBits(b.Encode())
	if err != nil {
		t.Fatalf("DecodeBits: %v", err)
	}
	for _, i := range []int{0, 7, 8, 131071} {
		if !got.Get(i) {
			t.Fatalf("bit %d lost in round trip", i)
		}
	}
	if got.Get(1) || got.Get(131070) {
		t.Fatalf("round trip set bits that were not set")
	}
	if _, err := DecodeBits(NewBits(1024).Encode()); !errors.Is(err, ErrMalformed) {
		t.Fatalf("DecodeBits(short list) = %v, want ErrMalformed", err)
	}
	if _, err := DecodeBits(NewBits(MaxStatusListSize + 8).Encode()); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("DecodeBits(huge list) = %v, want ErrTooLarge", err)
	}
	s := NewStatusListState("did:schakel:x", 1)
	seen := map[string]bool{}
	for range 1000 {
		e, err := s.Allocate()
		if err != nil {
			t.Fatalf("Allocate: %v", err)
		}
		if seen[e.StatusListIndex] {
			t.Fatalf("Allocate handed out index %s twice", e.StatusListIndex)
		}
		seen[e.StatusListIndex] = true
	}
}
