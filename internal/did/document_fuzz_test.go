package did

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/store"
	"github.com/schakel-health/schakel/internal/store/storetest"
)

// docFixture is a registry holding an organisation's genesis and its first DID document, and a
// newer document of it that the registry does not hold yet.
type docFixture struct {
	r     *Registry
	db    *store.DB
	sig   *crypto.PrivateKey
	st    *State
	held  []byte // stored
	newer []byte // valid, not stored
	state *storetest.Watcher
}

func newDocFixture(t testing.TB) *docFixture {
	t.Helper()
	ctx := context.Background()
	r, db := newRegistry(t)
	o := newOrg(t)
	if _, _, err := r.AddEvent(ctx, o.genesis); err != nil {
		t.Fatalf("AddEvent: %v", err)
	}
	st, err := r.Resolve(ctx, o.id)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	_, vkey, err := note.GenerateKey(rand.Reader, "schakel.nl/log/fuzz")
	if err != nil {
		t.Fatalf("note.GenerateKey: %v", err)
	}
	witness := "witness.example+0a1b2c3d+" + base64.StdEncoding.EncodeToString(append([]byte{0x04}, make([]byte, 32)...))
	held, _, err := NewDocument(o.sig, st, Binding{PeerIDs: []string{peerID(t)}}, t0.Add(time.Minute))
	if err != nil {
		t.Fatalf("NewDocument: %v", err)
	}
	if _, stored, err := r.PutDocument(ctx, held); err != nil || !stored {
		t.Fatalf("PutDocument = %v, %v", stored, err)
	}
	b := Binding{PeerIDs: []string{peerID(t), peerID(t)}, LogOrigin: "schakel.nl/log/fuzz", LogKey: vkey, WitnessKey: witness}
	newer, _, err := NewDocument(o.sig, st, b, t0.Add(2*time.Minute))
	if err != nil {
		t.Fatalf("NewDocument: %v", err)
	}
	return &docFixture{r: r, db: db, sig: o.sig, st: st, held: held, newer: newer, state: storetest.Watch(t, db)}
}

// reissue signs again the document d describes: Ed25519 is deterministic, so a verified document
// round-trips to its own bytes.
func (fx *docFixture) reissue(t testing.TB, d *Document) []byte {
	t.Helper()
	origin, vkey, _ := d.Log()
	out, _, err := NewDocument(fx.sig, fx.st, Binding{PeerIDs: d.PeerIDs(), LogOrigin: origin, LogKey: vkey, WitnessKey: d.WitnessKey()}, time.Unix(d.Updated, 0))
	if err != nil {
		t.Fatalf("NewDocument(verified document): %v", err)
	}
	return out
}

// check feeds in to VerifyDocument and PutDocument and checks what FuzzVerifyDocument says of it.
func (fx *docFixture) check(t *testing.T, in []byte) {
	t.Helper()
	doc, err := VerifyDocument(in, fx.st)
	if len(in) > MaxDocumentSize && !errors.Is(err, ErrDocument) {
		t.Fatalf("VerifyDocument(%d bytes) = %v, want ErrDocument", len(in), err)
	}
	if err == nil {
		if !bytes.Equal(in, fx.newer) && !bytes.Equal(in, fx.held) {
			t.Fatalf("VerifyDocument accepted a document nobody signed: %q", in)
		}
		payload, _, err := crypto.ParseUnverified(in)
		if err != nil {
			t.Fatalf("ParseUnverified(verified document): %v", err)
		}
		if again, err := json.Marshal(doc); err != nil || !bytes.Equal(again, payload) {
			t.Fatalf("the verified payload does not re-encode to itself: %v\n got %s\nwant %s", err, again, payload)
		}
		if !bytes.Equal(fx.reissue(t, doc), in) {
			t.Fatal("signing the verified document again does not give it back")
		}
		return // storing the newer document would change what the next input meets
	}
	if _, stored, err := fx.r.PutDocument(context.Background(), in); err == nil || stored {
		t.Fatalf("PutDocument took what VerifyDocument refused: %v, %v", stored, err)
	} else if len(in) > MaxDocumentSize && !errors.Is(err, ErrDocument) {
		t.Fatalf("PutDocument(%d bytes) = %v, want ErrDocument", len(in), err)
	}
	if !fx.state.Unchanged(t) {
		t.Fatal("a refused DID document changed the store")
	}
}

// FuzzVerifyDocument feeds arbitrary bytes as a DID document of a known organisation. Properties:
// no panic; input over MaxDocumentSize is refused (ErrDocument) by VerifyDocument and PutDocument
// alike; what verifies is one of the two documents the organisation signed, its payload is the
// JSON encoding of the Document returned (nothing in it is ignored), and signing that Document
// again gives the input back; what VerifyDocument refuses, PutDocument refuses too and leaves the
// store unchanged.
func FuzzVerifyDocument(f *testing.F) {
	fx := newDocFixture(f)
	f.Add(fx.newer)
	f.Add(fx.held)
	f.Add(flipByte(fx.newer, len(fx.newer)/2))
	f.Add([]byte("eyJhbGciOiJFZERTQSIsInR5cCI6ImRpZC1kb2N1bWVudCtqd3QifQ.e30.AA"))
	f.Fuzz(fx.check)
}

// TestDocumentTooLarge: a valid DID document with bytes appended past MaxDocumentSize is refused
// for its size, before it is parsed, by VerifyDocument and PutDocument alike (too large to seed
// the fuzzing engine with: it spends its time minimising large inputs).
func TestDocumentTooLarge(t *testing.T) {
	fx := newDocFixture(t)
	huge := append(bytes.Clone(fx.newer), make([]byte, MaxDocumentSize)...)
	fx.check(t, huge)
	if _, err := VerifyDocument(huge, fx.st); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("VerifyDocument(%d bytes) = %v, want refused for its size", len(huge), err)
	}
	if _, _, err := fx.r.PutDocument(t.Context(), huge); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("PutDocument(%d bytes) = %v, want refused for its size", len(huge), err)
	}
}

// FuzzDocumentTampered changes one byte of a valid DID document the registry does not hold yet.
// Properties: the document itself verifies and round-trips (signing the verified Document again
// gives its bytes); every changed copy is refused by VerifyDocument and PutDocument and leaves the
// store unchanged.
func FuzzDocumentTampered(f *testing.F) {
	ctx := context.Background()
	fx := newDocFixture(f)
	doc, err := VerifyDocument(fx.newer, fx.st)
	if err != nil {
		f.Fatalf("VerifyDocument(valid): %v", err)
	}
	if !bytes.Equal(fx.reissue(f, doc), fx.newer) {
		f.Fatal("signing the verified document again does not give it back")
	}
	f.Add(uint16(0), byte('x'))
	f.Add(uint16(40), byte('A'))
	f.Add(uint16(len(fx.newer)/2), byte('.'))
	f.Add(uint16(len(fx.newer)-1), byte('B'))
	f.Add(uint16(len(fx.newer)-2), byte('_'))
	f.Fuzz(func(t *testing.T, pos uint16, b byte) {
		in := bytes.Clone(fx.newer)
		in[int(pos)%len(in)] = b
		if bytes.Equal(in, fx.newer) {
			return
		}
		if _, err := VerifyDocument(in, fx.st); err == nil {
			t.Fatalf("tampered DID document verified: byte %d set to %q", int(pos)%len(in), b)
		}
		if _, stored, err := fx.r.PutDocument(ctx, in); err == nil || stored {
			t.Fatalf("PutDocument took a tampered DID document: %v, %v", stored, err)
		}
		if !fx.state.Unchanged(t) {
			t.Fatal("a tampered DID document changed the store")
		}
	})
}

func flipByte(b []byte, i int) []byte {
	out := bytes.Clone(b)
	out[i] ^= 0x01
	return out
}
