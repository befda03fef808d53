package consent

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/schakel-health/schakel/internal/store"
)

func onlineRequest() Consent {
	c := adultConsent()
	c.Channel, c.Assurance, c.RequestedBy, c.RequestID = ChannelOnline, AssuranceSubstantial, portal, "req-42"
	return c
}

// TestLifecycle walks a consent through record, request, process, reject and revoke.
func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)

	desk := f.record(adultConsent())
	if desk.Status != StatusActive || !strings.HasPrefix(desk.ID, "urn:uuid:") || !desk.Created.Equal(t0) || !desk.ValidFrom.Equal(t0) {
		t.Fatalf("Record = %+v, want an active urn:uuid record created and valid from now", desk)
	}
	if got := f.get(desk.ID); !reflect.DeepEqual(got, desk) {
		t.Fatalf("Get = %+v, want what Record returned %+v", got, desk)
	}

	f.now = t0.Add(time.Hour)
	req := onlineRequest()
	req.DataCategories = medication
	pending, err := f.s.Request(ctx, req)
	if err != nil {
		t.Fatalf("Request: %v", err)
	}
	if pending.Status != StatusPending || pending.RequestedBy != portal || pending.RequestID != "req-42" {
		t.Fatalf("Request = %+v, want pending with the portal's request", pending)
	}
	if _, err := f.s.Revoke(ctx, pending.ID, ""); !errors.Is(err, ErrState) {
		t.Fatalf("Revoke(pending) = %v, want ErrState", err)
	}
	f.now = t0.Add(2 * time.Hour)
	accepted, err := f.s.Process(ctx, pending.ID, Accept, "")
	if err != nil {
		t.Fatalf("Process(Accept): %v", err)
	}
	if accepted.Status != StatusActive || !accepted.Updated.Equal(f.now) || accepted.Supersedes != "" {
		t.Fatalf("Process(Accept) = %+v, want active, updated now, superseding nothing (other scope)", accepted)
	}
	if _, err := f.s.Process(ctx, pending.ID, Accept, ""); !errors.Is(err, ErrState) {
		t.Fatalf("Process(active) = %v, want ErrState", err)
	}

	other, err := f.s.Request(ctx, onlineRequest())
	if err != nil {
		t.Fatalf("Request: %v", err)
	}
	if _, err := f.s.Process(ctx, other.ID, Reject, ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Process(Reject) without reason = %v, want ErrInvalid", err)
	}
	rejected, err := f.s.Process(ctx, other.ID, Reject, "gegevens komen niet overeen met het dossier")
	if err != nil {
		t.Fatalf("Process(Reject): %v", err)
	}
	if rejected.Status != StatusRejected || rejected.Reason == "" {
		t.Fatalf("Process(Reject) = %+v, want rejected with its reason", rejected)
	}
	if f.get(desk.ID).Status != StatusActive {
		t.Fatal("a rejected request superseded the desk consent")
	}

	revoked, err := f.s.Revoke(ctx, desk.ID, "patient trekt toestemming in")
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if revoked.Status != StatusRevoked || f.get(desk.ID).Status != StatusRevoked {
		t.Fatalf("Revoke = %+v, want revoked, stored", revoked)
	}
	if _, err := f.s.Revoke(ctx, desk.ID, ""); !errors.Is(err, ErrState) {
		t.Fatalf("Revoke(revoked) = %v, want ErrState", err)
	}
	if _, err := f.s.Get(ctx, "urn:uuid:00000000-0000-4000-8000-000000000000"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(unknown) = %v, want ErrNotFound", err)
	}

	// The decision follows the store: the revoked desk consent no longer permits, the accepted
	// medication consent does.
	recs, err := f.s.ForPatient(ctx, []string{gp}, []string{patV2})
	if err != nil {
		t.Fatalf("ForPatient: %v", err)
	}
	req2 := baseRequest()
	req2.Time = f.now
	if got := DefaultPolicy().Decide(req2, recs, nil); !got.Permit || got.ConsentID != accepted.ID {
		t.Errorf("Decide(medication) = %+v, want permitted by %s", got, accepted.ID)
	}
	req2.DataCategory = "gp-professional-summary"
	if got := DefaultPolicy().Decide(req2, recs, nil); got.Permit || got.Reason != ReasonConsentRevoked {
		t.Errorf("Decide(summary) = %+v, want refused consent-revoked", got)
	}
}

// TestSupersede checks that a consent of the same scope replaces the active one in the same
// transaction, and one of another scope does not.
func TestSupersede(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	first := f.record(adultConsent())

	f.now = t0.Add(time.Minute)
	objection := adultConsent()
	objection.Decision = DecisionObjection
	objection.Purposes = []string{"TREAT"} // same set
	second := f.record(objection)
	if second.Supersedes != first.ID {
		t.Fatalf("Record(same scope).Supersedes = %q, want %q", second.Supersedes, first.ID)
	}
	old := f.get(first.ID)
	if old.Status != StatusSuperseded || old.SupersededBy != second.ID || !old.Updated.Equal(f.now) {
		t.Fatalf("superseded record = %+v, want superseded by %s at %s", old, second.ID, f.now)
	}

	narrower := adultConsent()
	narrower.DataCategories = medication
	third := f.record(narrower)
	if third.Supersedes != "" || f.get(second.ID).Status != StatusActive {
		t.Fatal("a consent of another scope superseded one")
	}
	otherGrantee := adultConsent()
	otherGrantee.Grantee = typeV6
	if c := f.record(otherGrantee); c.Supersedes != "" {
		t.Fatal("a consent for another grantee superseded one")
	}
	otherPatient := adultConsent()
	otherPatient.Patient = patOther
	if c := f.record(otherPatient); c.Supersedes != "" {
		t.Fatal("another patient's consent superseded one")
	}

	// Accepting a request supersedes too.
	req := onlineRequest()
	req.DataCategories = medication
	pending, err := f.s.Request(ctx, req)
	if err != nil {
		t.Fatalf("Request: %v", err)
	}
	if f.get(third.ID).Status != StatusActive {
		t.Fatal("a pending request superseded a consent before it was accepted")
	}
	accepted, err := f.s.Process(ctx, pending.ID, Accept, "")
	if err != nil {
		t.Fatalf("Process: %v", err)
	}
	if accepted.Supersedes != third.ID || f.get(third.ID).Status != StatusSuperseded {
		t.Fatalf("Process(Accept).Supersedes = %q, want %q superseded", accepted.Supersedes, third.ID)
	}

	active, err := f.s.List(ctx, gp, StatusActive, 0)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	var scopes []string
	for _, c := range active {
		if c.Patient == patV2 {
			scopes = append(scopes, c.Grantee.OrgType+strings.Join(c.DataCategories, ","))
		}
	}
	if want := []string{"*", "V6*", "medication"}; !sameSet(scopes, want) || len(scopes) != len(want) {
		t.Errorf("active scopes = %q, want one active consent per scope %q", scopes, want)
	}
}

// TestSupersedeAcrossSuccession checks that a consent recorded at a successor replaces the one of
// the same scope recorded at its predecessor.
func TestSupersedeAcrossSuccession(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	old := adultConsent()
	old.Custodian = gpOld
	first := f.record(old)
	if err := f.s.AddSuccession(ctx, gpOld, gp); err != nil {
		t.Fatalf("AddSuccession: %v", err)
	}
	f.now = t0.Add(time.Minute)
	second := f.record(adultConsent())
	if second.Supersedes != first.ID || f.get(first.ID).Status != StatusSuperseded {
		t.Fatalf("Record at the successor supersedes %q, want %q", second.Supersedes, first.ID)
	}
}

// TestOnChange checks that every change is reported once, after commit, in order, and that the
// generation moves with it.
func TestOnChange(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	var seen []string
	f.s.onChange = func(before *Consent, after Consent, done *store.Batch) error {
		// The change is committed: a fresh read sees it.
		got, err := f.s.Get(ctx, after.ID)
		if err != nil || got.Status != after.Status {
			t.Errorf("OnChange before commit: Get = %v, %v", got.Status, err)
		}
		b := "nil"
		if before != nil {
			b = string(before.Status)
		}
		seen = append(seen, b+">"+string(after.Status))
		return f.db.Write(ctx, done)
	}
	gen := f.s.Generation()
	step := func(name string, fn func() error, want ...string) {
		t.Helper()
		seen = nil
		err := fn()
		if len(want) == 0 {
			if err == nil {
				t.Fatalf("%s succeeded, want an error", name)
			}
			if f.s.Generation() != gen {
				t.Fatalf("%s failed but moved the generation", name)
			}
		} else {
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if f.s.Generation() <= gen {
				t.Fatalf("%s did not move the generation", name)
			}
			gen = f.s.Generation()
		}
		if !slices.Equal(seen, want) {
			t.Fatalf("%s reported %q, want %q", name, seen, want)
		}
	}
	var a, b, p Consent
	var err error
	step("Record", func() error { a, err = f.s.Record(ctx, adultConsent()); return err }, "nil>active")
	step("Record same scope", func() error { b, err = f.s.Record(ctx, adultConsent()); return err }, "nil>active", "active>superseded")
	step("Request", func() error { p, err = f.s.Request(ctx, onlineRequest()); return err }, "nil>pending")
	step("Process", func() error { _, err = f.s.Process(ctx, p.ID, Accept, ""); return err }, "pending>active", "active>superseded")
	step("Revoke", func() error { _, err = f.s.Revoke(ctx, p.ID, ""); return err }, "active>revoked")
	step("Revoke again", func() error { _, err = f.s.Revoke(ctx, p.ID, ""); return err })
	step("Revoke superseded", func() error { _, err = f.s.Revoke(ctx, a.ID, ""); return err })
	step("Process active", func() error { _, err = f.s.Process(ctx, b.ID, Reject, "nee"); return err })
	step("Record invalid", func() error { c := adultConsent(); c.Grantors = nil; _, err = f.s.Record(ctx, c); return err })
	seen = nil
	if err := f.s.AddSuccession(ctx, gpOld, gp); err != nil {
		t.Fatalf("AddSuccession: %v", err)
	}
	if f.s.Generation() <= gen || len(seen) != 0 {
		t.Fatalf("AddSuccession: generation %d (was %d), consent changes %q; want a new generation and none", f.s.Generation(), gen, seen)
	}
}

// TestBadInputChangesNothing checks that every refused call leaves storage, hooks and generation
// as they were.
func TestBadInputChangesNothing(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	active := f.record(adultConsent())
	pending, err := f.s.Request(ctx, onlineRequest())
	if err != nil {
		t.Fatalf("Request: %v", err)
	}
	before, gen, hooks := f.dump(), f.s.Generation(), len(f.changes)
	withID := adultConsent()
	withID.ID = "urn:uuid:mine"
	withStatus := adultConsent()
	withStatus.Status = StatusActive
	teen := adultConsent()
	teen.PatientBirthDate = born(14)
	desk := adultConsent()
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"Record with id", func() error { _, err := f.s.Record(ctx, withID); return err }, ErrInvalid},
		{"Record with status", func() error { _, err := f.s.Record(ctx, withStatus); return err }, ErrInvalid},
		{"Record breaking the grantor rules", func() error { _, err := f.s.Record(ctx, teen); return err }, ErrGrantor},
		{"Request from the desk", func() error { _, err := f.s.Request(ctx, desk); return err }, ErrInvalid},
		{"Request without portal", func() error {
			c := onlineRequest()
			c.RequestedBy = ""
			_, err := f.s.Request(ctx, c)
			return err
		}, ErrInvalid},
		{"Process unknown", func() error { _, err := f.s.Process(ctx, "urn:uuid:nope", Accept, ""); return err }, ErrNotFound},
		{"Process with a bad verdict", func() error { _, err := f.s.Process(ctx, pending.ID, 7, ""); return err }, ErrInvalid},
		{"Process with a BSN in the reason", func() error { _, err := f.s.Process(ctx, pending.ID, Reject, "bsn "+bsn); return err }, ErrInvalid},
		{"Process active", func() error { _, err := f.s.Process(ctx, active.ID, Accept, ""); return err }, ErrState},
		{"Revoke pending", func() error { _, err := f.s.Revoke(ctx, pending.ID, ""); return err }, ErrState},
		{"Revoke with an oversized reason", func() error { _, err := f.s.Revoke(ctx, active.ID, strings.Repeat("r", 513)); return err }, ErrInvalid},
		{"Get with a bad id", func() error { _, err := f.s.Get(ctx, "a b"); return err }, ErrInvalid},
		{"Get a BSN", func() error { _, err := f.s.Get(ctx, bsn); return err }, ErrInvalid},
		{"Revoke a BSN", func() error { _, err := f.s.Revoke(ctx, "urn:"+bsn, ""); return err }, ErrInvalid},
		{"Grant a BSN", func() error { _, err := f.s.Grant(ctx, bsn); return err }, ErrInvalid},
		{"AddGrant too long", func() error {
			_, err := f.s.AddGrant(ctx, Grant{Custodian: gp, Grantee: hospital, Patient: patV2, DataCategories: summary,
				Purpose: "TREAT", ValidUntil: t0.Add(31 * 24 * time.Hour)})
			return err
		}, ErrInvalid},
		{"AddSuccession to itself", func() error { return f.s.AddSuccession(ctx, gp, gp) }, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, tt.want) {
				t.Fatalf("%s = %v, want %v", tt.name, err, tt.want)
			}
			if strings.Contains(err.Error(), bsn) {
				t.Errorf("%s = %q repeats the BSN", tt.name, err)
			}
			if f.dump() != before || f.s.Generation() != gen || len(f.changes) != hooks || len(f.grants) != 0 {
				t.Fatalf("%s changed something", tt.name)
			}
		})
	}
}

// TestForPatient checks the lookup: every pseudonym version and custodian given, nothing else.
func TestForPatient(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	var want []string
	add := func(cust, pat string, keep bool) {
		c := adultConsent()
		c.Custodian, c.Patient = cust, pat
		c.Grantee = Grantee{Org: "did:schakel:org-" + cust[12:] + pat[:2]} // distinct scopes
		got := f.record(c)
		if keep {
			want = append(want, got.ID)
		}
	}
	add(gp, patV2, true)
	add(gp, patV1, true) // recorded before the pseudonym secret was rotated
	add(gpOld, patV1, true)
	add(gp, patOther, false)
	add(pharmacy, patV2, false)
	// A custodian whose DID extends gp's must not match gp's prefix.
	add(gp+"x", patV2, false)

	got, err := f.s.ForPatient(ctx, []string{gp, gpOld, gp}, []string{patV2, patV1, patV2})
	if err != nil {
		t.Fatalf("ForPatient: %v", err)
	}
	var ids []string
	for _, c := range got {
		ids = append(ids, c.ID)
	}
	if !sameSet(ids, want) || len(ids) != len(want) {
		t.Fatalf("ForPatient = %d records %q, want %q", len(ids), ids, want)
	}
	only, err := f.s.ForPatient(ctx, []string{gp}, []string{patV2})
	if err != nil || len(only) != 1 || only[0].ID != want[0] {
		t.Fatalf("ForPatient(current pseudonym only) = %d records, %v; want the one under it", len(only), err)
	}
	for _, bad := range []struct {
		name       string
		cust, pseu []string
	}{
		{"no custodian", nil, []string{patV2}},
		{"no pseudonym", []string{gp}, nil},
		{"bad custodian", []string{"gp"}, []string{patV2}},
		{"too many pseudonyms", []string{gp}, make([]string, 65)},
	} {
		if _, err := f.s.ForPatient(ctx, bad.cust, bad.pseu); !errors.Is(err, ErrInvalid) {
			t.Errorf("ForPatient(%s) = %v, want ErrInvalid", bad.name, err)
		}
	}
}

// TestList checks the operators' listing: per status, oldest first, limited.
func TestList(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	var pending []string
	for i := range 5 {
		f.now = t0.Add(time.Duration(i) * time.Minute)
		c, err := f.s.Request(ctx, onlineRequest())
		if err != nil {
			t.Fatalf("Request: %v", err)
		}
		pending = append(pending, c.ID)
	}
	active := f.record(adultConsent())
	got, err := f.s.List(ctx, gp, StatusPending, 3)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if ids := idsOf(got); !slices.Equal(ids, pending[:3]) {
		t.Fatalf("List(pending, 3) = %q, want the three oldest %q", ids, pending[:3])
	}
	if _, err := f.s.Process(ctx, pending[0], Reject, "onbekende patiënt"); err != nil {
		t.Fatalf("Process: %v", err)
	}
	everything, err := f.s.List(ctx, gp, "", 0)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if want := append(append(slices.Clone(pending[1:]), active.ID), pending[0]); !slices.Equal(idsOf(everything), want) {
		t.Fatalf("List(all) = %q, want pending, active, rejected: %q", idsOf(everything), want)
	}
	if other, err := f.s.List(ctx, pharmacy, "", 0); err != nil || len(other) != 0 {
		t.Fatalf("List(other custodian) = %d, %v; want none", len(other), err)
	}
	for _, limit := range []int{-1, 1001} {
		if _, err := f.s.List(ctx, gp, StatusActive, limit); !errors.Is(err, ErrInvalid) {
			t.Errorf("List(limit %d) = %v, want ErrInvalid", limit, err)
		}
	}
	if _, err := f.s.List(ctx, gp, "gone", 1); !errors.Is(err, ErrInvalid) {
		t.Errorf("List(unknown status) = %v, want ErrInvalid", err)
	}
}

func idsOf(cs []Consent) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

// TestLogUnlogged checks that a change whose OnChange fails is committed, reported as
// ErrNotLogged, keeps its mark, and is reported again by LogUnlogged, in commit order, until an
// OnChange commits its done batch; then the marks are gone.
func TestLogUnlogged(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	failing := errors.New("log closed")
	var seen []string
	fail := true
	f.s.onChange = func(before *Consent, after Consent, done *store.Batch) error {
		seen = append(seen, after.ID+":"+string(after.Status))
		if fail {
			return failing
		}
		return f.db.Write(ctx, done)
	}
	a, err := f.s.Record(ctx, adultConsent())
	if !errors.Is(err, ErrNotLogged) || !errors.Is(err, failing) {
		t.Fatalf("Record with a failing log = %v, want ErrNotLogged wrapping the log's error", err)
	}
	if got := f.get(a.ID); got.Status != StatusActive {
		t.Fatalf("the change did not commit: %s", got.Status)
	}
	b, err := f.s.Record(ctx, adultConsent()) // supersedes a: two changes, one transaction
	if !errors.Is(err, ErrNotLogged) {
		t.Fatalf("second Record = %v, want ErrNotLogged", err)
	}
	want := []string{a.ID + ":active", b.ID + ":active", a.ID + ":superseded"}
	if !slices.Equal(seen, want) {
		t.Fatalf("OnChange saw %q, want %q", seen, want)
	}

	// A new Store over the same data (a restart) reports every unlogged change again, in order.
	seen = nil
	n, err := f.s.LogUnlogged(ctx)
	if n != 3 || !errors.Is(err, ErrNotLogged) || !slices.Equal(seen, want) {
		t.Fatalf("LogUnlogged with the log still failing = %d, %v, saw %q; want 3, ErrNotLogged, %q", n, err, seen, want)
	}
	fail = false
	seen = nil
	if n, err := f.s.LogUnlogged(ctx); n != 3 || err != nil || !slices.Equal(seen, want) {
		t.Fatalf("LogUnlogged = %d, %v, saw %q; want 3, nil, %q", n, err, seen, want)
	}
	seen = nil
	if n, err := f.s.LogUnlogged(ctx); n != 0 || err != nil || len(seen) != 0 {
		t.Fatalf("LogUnlogged after the entries were written = %d, %v, saw %q; want nothing", n, err, seen)
	}
	if d := f.dump(); strings.Contains(d, `"u/`) {
		t.Fatalf("marks left after logging:\n%s", d)
	}
}
