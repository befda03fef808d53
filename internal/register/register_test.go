package register

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/schakel-health/schakel/internal/did"
	"github.com/schakel-health/schakel/internal/store"
	"github.com/schakel-health/schakel/internal/vc"
)

func TestRegisterIssueRevokeReopen(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "reg")
	now := time.Now()
	r, err := Init(ctx, dir, "Register Zorgaanbieders", now)
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	if _, err := Init(ctx, dir, "again", now); !errors.Is(err, ErrExists) {
		t.Fatalf("Init twice = %v, want ErrExists", err)
	}
	fi, err := os.Stat(filepath.Join(dir, stateFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}

	// A node that trusts the register verifies what it issues.
	db, err := store.Open(store.Config{InMemory: true})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	defer db.Close()
	dids, _ := did.New(did.Config{}, db)
	creds, err := vc.NewStore(vc.StoreConfig{Anchors: vc.TrustAnchors{vc.OrganizationCredential: {r.DID()}}}, db, dids)
	if err != nil {
		t.Fatalf("vc.NewStore: %v", err)
	}
	for _, ev := range r.st.Events {
		if _, _, err := dids.AddEvent(ctx, []byte(ev)); err != nil {
			t.Fatalf("AddEvent: %v", err)
		}
	}
	submit := func(docs ...string) error {
		for _, d := range docs {
			if _, _, err := creds.Add(ctx, []byte(d)); err != nil {
				return err
			}
		}
		return nil
	}
	c, err := r.Issue(ctx, vc.Organization{ID: r.DID(), Name: "Huisartsenpraktijk Jansen", URA: "01234567", Type: "Z3", City: "Utrecht"}, 24*time.Hour, now)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	if err := submit(r.st.StatusJWT, string(c.JWT)); err != nil {
		t.Fatalf("submit: %v", err)
	}
	if _, err := creds.Verifier().Verify(ctx, c.JWT); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if _, err := r.Issue(ctx, vc.Organization{ID: r.DID(), Name: "X", URA: "123", Type: "Z3", City: "Utrecht"}, time.Hour, now); !errors.Is(err, vc.ErrMalformed) {
		t.Fatalf("Issue(bad URA) = %v, want ErrMalformed", err)
	}

	// State survives reopening: the revocation finds the credential issued before.
	r2, err := Open(dir)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if r2.DID() != r.DID() {
		t.Fatalf("reopened DID %s, want %s", r2.DID(), r.DID())
	}
	if _, err := r2.Revoke(ctx, "urn:uuid:unknown", now); !errors.Is(err, vc.ErrNotFound) {
		t.Fatalf("Revoke(unknown) = %v, want ErrNotFound", err)
	}
	list, err := r2.Revoke(ctx, c.ID, now.Add(time.Second))
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if err := submit(string(list)); err != nil {
		t.Fatalf("submit status list: %v", err)
	}
	if _, err := creds.Verifier().Verify(ctx, c.JWT); !errors.Is(err, vc.ErrRevoked) {
		t.Fatalf("Verify after revocation = %v, want ErrRevoked", err)
	}
	if _, err := Open(t.TempDir()); err == nil {
		t.Fatalf("Open of an empty directory succeeded")
	}
}
