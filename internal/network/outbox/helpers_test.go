package outbox

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/store"
)

// org is a test organisation with its signing and key-agreement keys.
type org struct {
	did string
	sig *crypto.PrivateKey
	agr *crypto.PrivateKey
}

func newOrg(tb testing.TB, did string) *org {
	tb.Helper()
	sig, err := crypto.GenerateKey(crypto.Ed25519, crypto.UseSign)
	if err != nil {
		tb.Fatalf("GenerateKey: %v", err)
	}
	agr, err := crypto.GenerateKey(crypto.P256, crypto.UseEnc)
	if err != nil {
		tb.Fatalf("GenerateKey: %v", err)
	}
	return &org{did: did, sig: sig, agr: agr}
}

// resolverOf resolves the signing keys of orgs, whatever the time.
func resolverOf(orgs ...*org) Resolver {
	return func(_ context.Context, did, kid string, _ time.Time) (*crypto.PublicKey, error) {
		for _, o := range orgs {
			if o.did == did && o.sig.KID() == kid {
				return o.sig.Public(), nil
			}
		}
		return nil, fmt.Errorf("no key %s for %s", kid, did)
	}
}

// sealRaw builds a message from claims of the test's choosing, signed by signer under kid with
// typ and encrypted to to: what a careless or hostile sender could produce.
func sealRaw(tb testing.TB, c any, signer *crypto.PrivateKey, kid, typ string, to *crypto.PublicKey, id, from, toDID string) *Message {
	tb.Helper()
	payload, err := json.Marshal(c)
	if err != nil {
		tb.Fatalf("Marshal: %v", err)
	}
	jws, err := crypto.Sign(signer, payload, crypto.Header{Type: typ, KID: kid})
	if err != nil {
		tb.Fatalf("Sign: %v", err)
	}
	jwe, err := crypto.Encrypt(jws, to)
	if err != nil {
		tb.Fatalf("Encrypt: %v", err)
	}
	return &Message{ID: id, From: from, To: toDID, Payload: jwe}
}

func mustID(tb testing.TB) string {
	tb.Helper()
	id, err := newID()
	if err != nil {
		tb.Fatalf("newID: %v", err)
	}
	return id
}

func memStore(tb testing.TB) *store.DB {
	tb.Helper()
	db, err := store.Open(store.Config{InMemory: true})
	if err != nil {
		tb.Fatalf("store.Open: %v", err)
	}
	tb.Cleanup(func() { _ = db.Close() })
	return db
}

// countKeys returns the number of keys in ns.
func countKeys(tb testing.TB, db *store.DB, ns store.Namespace) int {
	tb.Helper()
	n := 0
	err := db.View(context.Background(), func(tx *store.Txn) error {
		return tx.Iterate(ns, nil, store.IterOptions{KeysOnly: true}, func(_, _ []byte) error {
			n++
			return nil
		})
	})
	if err != nil {
		tb.Fatalf("View: %v", err)
	}
	return n
}

// testLogger writes to the test's output, shown only for a failing or verbose test.
func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
