package crypto

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"

	"golang.org/x/mod/sumdb/note"
)

// noteAlgEd25519 is the signed-note algorithm byte for Ed25519 keys (C2SP signed-note, "Signatures"
// and golang.org/x/mod/sumdb/note).
const noteAlgEd25519 = 1

// noteKeyHash is the signed-note key ID: the first four bytes, big-endian, of
// SHA-256(name || "\n" || algorithm byte || public key) (C2SP signed-note, "Signatures").
func noteKeyHash(name string, pub []byte) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{'\n', noteAlgEd25519})
	h.Write(pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// NoteSigner returns a signed-note signer (C2SP signed-note) named name that signs with k, such as
// an access log's checkpoint key, whose name is the log's origin. k MUST be an Ed25519 key; name
// MUST be a valid note key name (non-empty UTF-8 without white space or '+'). Errors wrap ErrKey.
func (k *PrivateKey) NoteSigner(name string) (note.Signer, error) {
	if k == nil || k.pub == nil || k.pub.kt != Ed25519 {
		return nil, fmt.Errorf("note signer %q: %w: want an Ed25519 key", name, ErrKey)
	}
	priv := append([]byte{noteAlgEd25519}, k.ed.Seed()...)
	skey := fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", name, noteKeyHash(name, k.pub.raw), base64.StdEncoding.EncodeToString(priv))
	clear(priv)
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("note signer %q: %w: %v", name, ErrKey, err)
	}
	return s, nil
}

// NoteVerifierKey returns the signed-note verifier key of p named name, "<name>+<key hash, 8 hex
// digits>+<base64 of the algorithm byte and the key>", which note.NewVerifier accepts. p MUST be
// an Ed25519 key. Errors wrap ErrKey.
func (p *PublicKey) NoteVerifierKey(name string) (string, error) {
	if p == nil || p.kt != Ed25519 {
		return "", fmt.Errorf("note verifier key %q: %w: want an Ed25519 key", name, ErrKey)
	}
	vkey := fmt.Sprintf("%s+%08x+%s", name, noteKeyHash(name, p.raw),
		base64.StdEncoding.EncodeToString(append([]byte{noteAlgEd25519}, p.raw...)))
	// NewVerifier checks the name, which the format above does not.
	if _, err := note.NewVerifier(vkey); err != nil {
		return "", fmt.Errorf("note verifier key %q: %w: %v", name, ErrKey, err)
	}
	return vkey, nil
}
