package did

import (
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/schakel-health/schakel/internal/store"
)

type change struct {
	doc     string
	issued  time.Time
	removed bool
}

// TestOnChange checks that every stored event and document, and every document replaced, is
// reported inside the storing transaction, and that a failing hook stores nothing.
func TestOnChange(t *testing.T) {
	ctx := t.Context()
	db, err := store.Open(store.Config{InMemory: true})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	var got []change
	fail := false
	r, err := New(Config{Now: func() time.Time { return t0.Add(24 * time.Hour) }, OnChange: func(tx *store.Txn, doc []byte, issued time.Time, removed bool) error {
		if fail {
			return errors.New("hook failed")
		}
		got = append(got, change{string(doc), issued, removed})
		return nil
	}}, db)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	o := newOrg(t)
	st, _, err := r.AddEvent(ctx, o.genesis)
	if err != nil {
		t.Fatalf("AddEvent: %v", err)
	}
	if _, _, err := r.AddEvent(ctx, o.genesis); err != nil {
		t.Fatalf("AddEvent(again): %v", err)
	}
	d1, _, _ := NewDocument(o.sig, st, Binding{PeerIDs: []string{peerID(t)}}, t0.Add(time.Minute))
	d2, _, _ := NewDocument(o.sig, st, Binding{PeerIDs: []string{peerID(t)}}, t0.Add(2*time.Minute))
	for _, d := range [][]byte{d1, d2, d1} {
		if _, _, err := r.PutDocument(ctx, d); err != nil {
			t.Fatalf("PutDocument: %v", err)
		}
	}
	want := []change{
		{string(o.genesis), t0, false},
		{string(d1), t0.Add(time.Minute), false},
		{string(d1), t0.Add(time.Minute), true},
		{string(d2), t0.Add(2 * time.Minute), false},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d changes, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].doc != want[i].doc || !got[i].issued.Equal(want[i].issued) || got[i].removed != want[i].removed {
			t.Errorf("change %d = %+v, want %+v", i, got[i], want[i])
		}
	}

	fail = true
	s1, e1 := newKeys(t)
	rot, _ := NewRotate(o.sig, st, s1.Public(), e1.Public(), t0.Add(time.Hour))
	if _, _, err := r.AddEvent(ctx, rot); err == nil {
		t.Fatal("AddEvent with a failing hook succeeded")
	}
	if cur, err := r.Resolve(ctx, o.id); err != nil || cur.Seq != st.Seq {
		t.Fatalf("after a failed hook the state moved: %v, %v", cur, err)
	}
}

// TestDocumentWitnessKey checks that a DID document carries the hosting node's cosignature key and
// refuses one that is not a cosignature verifier key.
func TestDocumentWitnessKey(t *testing.T) {
	o := newOrg(t)
	st, _, err := Apply(nil, o.genesis, t0)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	good := "schakel.nl/witness/x+01020304+" + base64.StdEncoding.EncodeToString(append([]byte{0x04}, make([]byte, 32)...))
	doc, d, err := NewDocument(o.sig, st, Binding{PeerIDs: []string{peerID(t)}, WitnessKey: good}, t0)
	if err != nil {
		t.Fatalf("NewDocument: %v", err)
	}
	if d.WitnessKey() != good {
		t.Fatalf("WitnessKey = %q", d.WitnessKey())
	}
	if v, err := VerifyDocument(doc, st); err != nil || v.WitnessKey() != good {
		t.Fatalf("VerifyDocument = %v, %v", v, err)
	}
	for _, bad := range []string{
		"no-plus-signs",
		"name+0102030+" + base64.StdEncoding.EncodeToString(append([]byte{0x04}, make([]byte, 32)...)),
		"name+01020304+" + base64.StdEncoding.EncodeToString(append([]byte{0x01}, make([]byte, 32)...)),
		"name+01020304+" + base64.StdEncoding.EncodeToString(make([]byte, 20)),
	} {
		if _, _, err := NewDocument(o.sig, st, Binding{PeerIDs: []string{peerID(t)}, WitnessKey: bad}, t0); !errors.Is(err, ErrDocument) {
			t.Errorf("NewDocument(witness key %q) = %v, want ErrDocument", bad, err)
		}
	}
}
