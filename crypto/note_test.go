package crypto

import (
	"crypto/ed25519"
	"errors"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

func TestNoteSignerVerifierKey(t *testing.T) {
	const origin = "schakel.nl/log/test"
	tests := []struct {
		name string
		key  *PrivateKey
	}{
		{name: "RFC 8037 key", key: rfc8037Key(t)},
		{name: "generated key", key: generate(t, Ed25519, UseSign)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			signer, err := tt.key.NoteSigner(origin)
			if err != nil {
				t.Fatalf("NoteSigner: %v", err)
			}
			vkey, err := tt.key.Public().NoteVerifierKey(origin)
			if err != nil {
				t.Fatalf("NoteVerifierKey: %v", err)
			}
			want, err := note.NewEd25519VerifierKey(origin, ed25519.PublicKey(tt.key.Public().raw))
			if err != nil {
				t.Fatalf("note.NewEd25519VerifierKey: %v", err)
			}
			if vkey != want {
				t.Errorf("NoteVerifierKey = %q, want %q", vkey, want)
			}
			verifier, err := note.NewVerifier(vkey)
			if err != nil {
				t.Fatalf("note.NewVerifier: %v", err)
			}
			if signer.Name() != origin || verifier.Name() != origin || signer.KeyHash() != verifier.KeyHash() {
				t.Errorf("signer %s %08x, verifier %s %08x: want the same name %s and key hash",
					signer.Name(), signer.KeyHash(), verifier.Name(), verifier.KeyHash(), origin)
			}
			msg, err := note.Sign(&note.Note{Text: origin + "\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"}, signer)
			if err != nil {
				t.Fatalf("note.Sign: %v", err)
			}
			n, err := note.Open(msg, note.VerifierList(verifier))
			if err != nil {
				t.Fatalf("note.Open: %v", err)
			}
			if len(n.Sigs) != 1 || n.Sigs[0].Name != origin || n.Sigs[0].Hash != verifier.KeyHash() {
				t.Errorf("note.Open signatures = %+v, want one by %s", n.Sigs, origin)
			}
			tampered := []byte(string(msg))
			tampered[len(origin)+1] = '4'
			if _, err := note.Open(tampered, note.VerifierList(verifier)); err == nil {
				t.Errorf("note.Open of a tampered note succeeded")
			}
			other := generate(t, Ed25519, UseSign)
			otherKey, err := other.Public().NoteVerifierKey(origin)
			if err != nil {
				t.Fatalf("NoteVerifierKey: %v", err)
			}
			otherVerifier, err := note.NewVerifier(otherKey)
			if err != nil {
				t.Fatalf("note.NewVerifier: %v", err)
			}
			if _, err := note.Open(msg, note.VerifierList(otherVerifier)); err == nil {
				t.Errorf("note.Open with another key's verifier succeeded")
			}
		})
	}
}

func TestNoteKeysRefused(t *testing.T) {
	ed := generate(t, Ed25519, UseSign)
	p256 := generate(t, P256, UseSign)
	tests := []struct {
		name    string
		key     *PrivateKey
		keyName string
	}{
		{name: "P-256 key", key: p256, keyName: "schakel.nl/log/test"},
		{name: "empty name", key: ed, keyName: ""},
		{name: "name with a plus", key: ed, keyName: "schakel.nl/log/a+b"},
		{name: "name with a space", key: ed, keyName: "schakel.nl/log/a b"},
		{name: "name with a newline", key: ed, keyName: "schakel.nl/log/a\nb"},
		{name: "name not UTF-8", key: ed, keyName: "schakel.nl/log/\xff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.key.NoteSigner(tt.keyName); !errors.Is(err, ErrKey) {
				t.Errorf("NoteSigner: err = %v, want %v", err, ErrKey)
			}
			if _, err := tt.key.Public().NoteVerifierKey(tt.keyName); !errors.Is(err, ErrKey) {
				t.Errorf("NoteVerifierKey: err = %v, want %v", err, ErrKey)
			}
		})
	}
}
