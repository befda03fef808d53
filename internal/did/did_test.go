package did

import (
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	p2pcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/mod/sumdb/note"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/store"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

type org struct {
	sig, enc *crypto.PrivateKey
	genesis  []byte
	id       string
}

func newKeys(t testing.TB) (*crypto.PrivateKey, *crypto.PrivateKey) {
	t.Helper()
	sig, enc, err := GenerateKeys()
	if err != nil {
		t.Fatalf("GenerateKeys: %v", err)
	}
	return sig, enc
}

func newOrg(t testing.TB) *org {
	t.Helper()
	sig, enc := newKeys(t)
	g, id, err := NewGenesis(sig, enc.Public(), t0)
	if err != nil {
		t.Fatalf("NewGenesis: %v", err)
	}
	return &org{sig: sig, enc: enc, genesis: g, id: id}
}

func peerID(t testing.TB) string {
	t.Helper()
	k, _, err := p2pcrypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatalf("GenerateEd25519Key: %v", err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatalf("IDFromPrivateKey: %v", err)
	}
	return id.String()
}

func newRegistry(t testing.TB) (*Registry, *store.DB) {
	t.Helper()
	db, err := store.Open(store.Config{InMemory: true})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	r, err := New(Config{Now: func() time.Time { return t0.Add(24 * time.Hour) }}, db)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return r, db
}

func TestGenesisDerivesDID(t *testing.T) {
	o := newOrg(t)
	if err := ValidateDID(o.id); err != nil {
		t.Fatalf("ValidateDID(%s): %v", o.id, err)
	}
	if got := DIDFromGenesis(o.genesis); got != o.id {
		t.Fatalf("DIDFromGenesis = %s, want %s", got, o.id)
	}
	st, _, err := Apply(nil, o.genesis, t0)
	if err != nil {
		t.Fatalf("Apply(genesis): %v", err)
	}
	if st.DID != o.id || st.Seq != 0 || !st.Current().SigningKey.Equal(o.sig.Public()) {
		t.Fatalf("state after genesis = %+v", st)
	}
}

func TestSignatureBeforeRotationStillVerifies(t *testing.T) {
	ctx := t.Context()
	r, _ := newRegistry(t)
	o := newOrg(t)
	st, added, err := r.AddEvent(ctx, o.genesis)
	if err != nil || !added {
		t.Fatalf("AddEvent(genesis) = %v, %v", added, err)
	}
	signedAt := t0.Add(time.Hour)
	sigBefore, err := crypto.Sign(o.sig, []byte("signed before the rotation"), crypto.Header{Type: "test"})
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	newSig, newEnc := newKeys(t)
	rot, err := NewRotate(o.sig, st, newSig.Public(), newEnc.Public(), t0.Add(2*time.Hour))
	if err != nil {
		t.Fatalf("NewRotate: %v", err)
	}
	if _, _, err := r.AddEvent(ctx, rot); err != nil {
		t.Fatalf("AddEvent(rotate): %v", err)
	}
	key, err := r.KeyByID(ctx, o.id, o.sig.KID(), signedAt)
	if err != nil {
		t.Fatalf("KeyByID(old key at signing time): %v", err)
	}
	if _, _, err := crypto.Verify(sigBefore, key); err != nil {
		t.Fatalf("Verify(signature before rotation): %v", err)
	}
	if _, err := r.KeyByID(ctx, o.id, o.sig.KID(), t0.Add(3*time.Hour)); !errors.Is(err, ErrNoKey) {
		t.Fatalf("KeyByID(old key after rotation) = %v, want ErrNoKey", err)
	}
	if _, err := r.KeyByID(ctx, o.id, newSig.KID(), t0.Add(3*time.Hour)); err != nil {
		t.Fatalf("KeyByID(new key): %v", err)
	}
	if _, err := r.KeyByID(ctx, o.id, newSig.KID(), t0.Add(time.Hour)); !errors.Is(err, ErrNoKey) {
		t.Fatalf("KeyByID(new key before rotation) = %v, want ErrNoKey", err)
	}
}

func TestApplyRefusesBadEvents(t *testing.T) {
	o := newOrg(t)
	st, _, err := Apply(nil, o.genesis, t0)
	if err != nil {
		t.Fatalf("Apply(genesis): %v", err)
	}
	newSig, newEnc := newKeys(t)
	good, err := NewRotate(o.sig, st, newSig.Public(), newEnc.Public(), t0.Add(time.Hour))
	if err != nil {
		t.Fatalf("NewRotate: %v", err)
	}
	forged, _ := NewRotate(newSig, st, newSig.Public(), newEnc.Public(), t0.Add(time.Hour))
	stale := *st
	stale.Head = EventHash([]byte("not the head"))
	wrongPrev, _ := NewRotate(o.sig, &stale, newSig.Public(), newEnc.Public(), t0.Add(time.Hour))
	backdated, _ := NewRotate(o.sig, st, newSig.Public(), newEnc.Public(), t0.Add(-time.Hour))
	future, _ := NewRotate(o.sig, st, newSig.Public(), newEnc.Public(), t0.Add(48*time.Hour))
	sameKey, _ := NewRotate(o.sig, st, o.sig.Public(), newEnc.Public(), t0.Add(time.Hour))
	parts := strings.Split(string(good), ".")
	tampered := []byte(parts[0] + "." + parts[1][:len(parts[1])-2] + "AA." + parts[2])

	tests := []struct {
		name string
		ev   []byte
		want error
	}{
		{"signed by the new key, not the current one", forged, ErrInvalid},
		{"prev names another event", wrongPrev, ErrInvalid},
		{"time before the previous event", backdated, ErrInvalid},
		{"time in the future", future, ErrInvalid},
		{"rotate to a key used before", sameKey, ErrInvalid},
		{"tampered payload", tampered, nil},
		{"garbage", []byte("not.a.jws"), ErrMalformed},
		{"oversized", []byte(strings.Repeat("a", MaxEventSize+1)), ErrMalformed},
		{"a second genesis", o.genesis, ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Apply(st, tc.ev, t0.Add(2*time.Hour))
			if err == nil {
				t.Fatalf("Apply accepted it")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Apply = %v, want %v", err, tc.want)
			}
		})
	}
	if _, _, err := Apply(st, good, t0.Add(2*time.Hour)); err != nil {
		t.Fatalf("Apply(good rotate): %v", err)
	}
}

func TestRegistryReplayForkAndNoTrace(t *testing.T) {
	ctx := t.Context()
	r, db := newRegistry(t)
	o := newOrg(t)
	st, _, err := r.AddEvent(ctx, o.genesis)
	if err != nil {
		t.Fatalf("AddEvent(genesis): %v", err)
	}
	if _, added, err := r.AddEvent(ctx, o.genesis); err != nil || added {
		t.Fatalf("AddEvent(genesis again) = %v, %v; want not added, no error", added, err)
	}
	s1, e1 := newKeys(t)
	s2, e2 := newKeys(t)
	rotA, _ := NewRotate(o.sig, st, s1.Public(), e1.Public(), t0.Add(time.Hour))
	rotB, _ := NewRotate(o.sig, st, s2.Public(), e2.Public(), t0.Add(time.Hour))
	if _, _, err := r.AddEvent(ctx, rotA); err != nil {
		t.Fatalf("AddEvent(rotA): %v", err)
	}
	before := dump(t, db)
	if _, _, err := r.AddEvent(ctx, rotB); !errors.Is(err, ErrFork) {
		t.Fatalf("AddEvent(conflicting rotate) = %v, want ErrFork", err)
	}
	other := newOrg(t)
	st2, _, _ := Apply(nil, other.genesis, t0)
	orphan, _ := NewRotate(other.sig, st2, s2.Public(), e2.Public(), t0.Add(time.Hour))
	if _, _, err := r.AddEvent(ctx, orphan); !errors.Is(err, ErrUnknownDID) {
		t.Fatalf("AddEvent(rotate of unknown DID) = %v, want ErrUnknownDID", err)
	}
	if after := dump(t, db); after != before {
		t.Fatalf("refused events changed storage")
	}
	evs, err := r.Events(ctx, o.id)
	if err != nil || len(evs) != 2 {
		t.Fatalf("Events = %d, %v; want 2", len(evs), err)
	}
	deact, _ := NewDeactivate(s1, mustResolve(t, r, o.id), t0.Add(2*time.Hour))
	if _, _, err := r.AddEvent(ctx, deact); err != nil {
		t.Fatalf("AddEvent(deactivate): %v", err)
	}
	if _, err := r.KeyByID(ctx, o.id, s1.KID(), t0.Add(3*time.Hour)); !errors.Is(err, ErrDeactivated) {
		t.Fatalf("KeyByID after deactivation = %v, want ErrDeactivated", err)
	}
	if _, err := r.KeyByID(ctx, o.id, s1.KID(), t0.Add(90*time.Minute)); err != nil {
		t.Fatalf("KeyByID before deactivation: %v", err)
	}
}

func mustResolve(t *testing.T, r *Registry, id string) *State {
	t.Helper()
	st, err := r.Resolve(t.Context(), id)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	return st
}

// dump renders every key and value of the store, to compare storage before and after.
func dump(t *testing.T, db *store.DB) string {
	t.Helper()
	var b strings.Builder
	err := db.View(t.Context(), func(tx *store.Txn) error {
		return tx.Iterate(ns, nil, store.IterOptions{}, func(k, v []byte) error {
			b.Write(k)
			b.WriteByte('=')
			b.Write(v)
			b.WriteByte('\n')
			return nil
		})
	})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	return b.String()
}

func TestDocument(t *testing.T) {
	ctx := t.Context()
	r, _ := newRegistry(t)
	o := newOrg(t)
	st, _, err := r.AddEvent(ctx, o.genesis)
	if err != nil {
		t.Fatalf("AddEvent: %v", err)
	}
	pid := peerID(t)
	doc, _, err := NewDocument(o.sig, st, Binding{PeerIDs: []string{pid}}, t0.Add(time.Minute))
	if err != nil {
		t.Fatalf("NewDocument: %v", err)
	}
	got, stored, err := r.PutDocument(ctx, doc)
	if err != nil || !stored {
		t.Fatalf("PutDocument = %v, %v", stored, err)
	}
	if p := got.PeerIDs(); len(p) != 1 || p[0] != pid {
		t.Fatalf("PeerIDs = %v, want [%s]", p, pid)
	}
	if len(got.KeyAgreement) != 1 || !strings.HasPrefix(got.KeyAgreement[0], o.id+"#") {
		t.Fatalf("KeyAgreement = %v", got.KeyAgreement)
	}

	other := newOrg(t)
	if _, _, err := NewDocument(other.sig, st, Binding{PeerIDs: []string{pid}}, t0); !errors.Is(err, ErrDocument) {
		t.Fatalf("NewDocument with a foreign key = %v, want ErrDocument", err)
	}
	if _, _, err := NewDocument(o.sig, st, Binding{PeerIDs: []string{"not-a-peer-id"}}, t0); !errors.Is(err, ErrDocument) {
		t.Fatalf("NewDocument with a bad peer id = %v, want ErrDocument", err)
	}
	// After a rotation a document signed by the old key is stale.
	s1, e1 := newKeys(t)
	rot, _ := NewRotate(o.sig, st, s1.Public(), e1.Public(), t0.Add(time.Hour))
	before := st
	st, _, err = r.AddEvent(ctx, rot)
	if err != nil {
		t.Fatalf("AddEvent(rotate): %v", err)
	}
	if _, err := VerifyDocument(doc, st); !errors.Is(err, ErrSuperseded) {
		t.Fatalf("VerifyDocument(stale) = %v, want ErrSuperseded", err)
	}
	fresh, _, err := NewDocument(s1, st, Binding{PeerIDs: []string{pid}}, t0.Add(2*time.Hour))
	if err != nil {
		t.Fatalf("NewDocument(after rotation): %v", err)
	}
	// A node that has not seen the rotation yet holds the new document for later, not refuses it.
	if _, err := VerifyDocument(fresh, before); !errors.Is(err, ErrEventAhead) {
		t.Fatalf("VerifyDocument(before the rotation arrived) = %v, want ErrEventAhead", err)
	}
	if _, stored, err := r.PutDocument(ctx, fresh); err != nil || !stored {
		t.Fatalf("PutDocument(fresh) = %v, %v", stored, err)
	}
}

func TestEventSigningKeyMustBeEd25519(t *testing.T) {
	sig, err := crypto.GenerateKey(crypto.P256, crypto.UseSign)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	_, enc := newKeys(t)
	g, _, err := NewGenesis(sig, enc.Public(), t0)
	if err != nil {
		t.Fatalf("NewGenesis: %v", err)
	}
	if _, _, err := Apply(nil, g, t0); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Apply(genesis with an ES256 key) = %v, want ErrMalformed", err)
	}
}

func TestDocumentPublishesLog(t *testing.T) {
	o := newOrg(t)
	st, _, err := Apply(nil, o.genesis, t0)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	pid := peerID(t)
	_, vkey, err := note.GenerateKey(rand.Reader, "schakel.nl/log/test")
	if err != nil {
		t.Fatalf("note.GenerateKey: %v", err)
	}
	tests := []struct {
		name    string
		b       Binding
		wantErr bool
	}{
		{"origin and key", Binding{PeerIDs: []string{pid}, LogOrigin: "schakel.nl/log/test", LogKey: vkey}, false},
		{"key named after another origin", Binding{PeerIDs: []string{pid}, LogOrigin: "schakel.nl/log/other", LogKey: vkey}, true},
		{"origin without key", Binding{PeerIDs: []string{pid}, LogOrigin: "schakel.nl/log/test"}, true},
		{"not a key", Binding{PeerIDs: []string{pid}, LogOrigin: "schakel.nl/log/test", LogKey: "nonsense"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			compact, _, err := NewDocument(o.sig, st, tc.b, t0)
			if tc.wantErr {
				if !errors.Is(err, ErrDocument) {
					t.Fatalf("NewDocument = %v, want ErrDocument", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewDocument: %v", err)
			}
			doc, err := VerifyDocument(compact, st)
			if err != nil {
				t.Fatalf("VerifyDocument: %v", err)
			}
			if origin, key, ok := doc.Log(); !ok || origin != tc.b.LogOrigin || key != tc.b.LogKey {
				t.Fatalf("Log() = %q, %q, %v", origin, key, ok)
			}
		})
	}
}
