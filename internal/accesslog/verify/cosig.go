package verify

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// CosignatureAlg is the signed-note signature type of a timestamped Ed25519 cosignature, 0x04
// (C2SP tlog-cosignature, "Format"). It enters the key hash, so a witness's cosignature key
// never verifies as a plain Ed25519 note key (type 0x01), nor the other way round.
const CosignatureAlg = 0x04

// cosignatureSize is the length of a cosignature after the 4-byte key hash: the u64 timestamp
// and the Ed25519 signature (the timestamped_signature structure).
const cosignatureSize = 8 + ed25519.SignatureSize

// ErrCosignature marks a malformed cosignature verifier key or cosignature.
var ErrCosignature = errors.New("invalid cosigner key or cosignature")

// CosignatureMessage returns the message an Ed25519 cosignature made at Unix time t signs: the
// line "cosignature/v1", the line "time <t>" in decimal without leading zeros, then the whole
// checkpoint body, newline included (C2SP tlog-cosignature, "Ed25519 signed message"). The
// first line separates it from every checkpoint body, so a key that also signs checkpoints
// cannot be made to cosign one by accident. t MUST NOT be negative.
func CosignatureMessage(t int64, body []byte) []byte {
	m := make([]byte, 0, len("cosignature/v1\ntime \n")+20+len(body))
	m = append(m, "cosignature/v1\ntime "...)
	m = strconv.AppendInt(m, t, 10)
	m = append(m, '\n')
	return append(m, body...)
}

// CosignatureKeyHash returns the key ID of an Ed25519 cosigner: the first four bytes,
// big-endian, of SHA-256(name || 0x0A || 0x04 || public key) (C2SP tlog-cosignature, "Format").
func CosignatureKeyHash(name string, pub ed25519.PublicKey) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{'\n', CosignatureAlg})
	h.Write(pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// CosignatureVerifierKey returns the verifier key of an Ed25519 cosigner, "<name>+<key hash, 8
// hex digits>+<base64 of 0x04 and the 32-byte key>" (C2SP signed-note "vkeys", with
// signature type 0x04), which NewCosignatureVerifier accepts. name MUST be a valid note key
// name (non-empty UTF-8 without spaces or '+').
func CosignatureVerifierKey(name string, pub ed25519.PublicKey) (string, error) {
	if !validName(name) {
		return "", fmt.Errorf("%w: cosigner name %q: empty, not UTF-8, or contains a space or '+'", ErrCosignature, name)
	}
	if len(pub) != ed25519.PublicKeySize {
		return "", fmt.Errorf("%w: public key of %d bytes, want %d", ErrCosignature, len(pub), ed25519.PublicKeySize)
	}
	key := append([]byte{CosignatureAlg}, pub...)
	return fmt.Sprintf("%s+%08x+%s", name, CosignatureKeyHash(name, pub), base64.StdEncoding.EncodeToString(key)), nil
}

// maxVerifierKeySize bounds a verifier key: a name, 8 hex digits and 44 base64 characters.
const maxVerifierKeySize = 1 << 10

// NewCosignatureVerifier parses an Ed25519 cosigner's verifier key, as CosignatureVerifierKey
// writes it, and returns a note.Verifier for its cosignatures. Passed to note.Open, the verifier
// checks each signature line of its name and key hash as a cosignature/v1 of the note's text:
// the first 8 bytes are the timestamp (at most 2^63−1), the other 64 the Ed25519 signature of
// CosignatureMessage(timestamp, text). The key hash MUST match the name and key, and the key
// MUST be of type 0x04: a plain note key (0x01) is refused, since its signatures carry no time
// and state no consistency check. Errors wrap ErrCosignature.
func NewCosignatureVerifier(vkey string) (note.Verifier, error) {
	v, err := parseCosignatureKey(vkey)
	if err != nil {
		return nil, err
	}
	return v, nil
}

func parseCosignatureKey(vkey string) (*cosignatureVerifier, error) {
	if len(vkey) > maxVerifierKeySize {
		return nil, fmt.Errorf("%w: verifier key of %d bytes, limit %d", ErrCosignature, len(vkey), maxVerifierKeySize)
	}
	name, rest, ok1 := strings.Cut(vkey, "+")
	hash16, key64, ok2 := strings.Cut(rest, "+")
	if !ok1 || !ok2 || !validName(name) {
		return nil, fmt.Errorf("%w: verifier key %q: want <name>+<hash>+<key>", ErrCosignature, vkey)
	}
	key, err := base64.StdEncoding.Strict().DecodeString(key64)
	switch {
	case err != nil || base64.StdEncoding.EncodeToString(key) != key64:
		return nil, fmt.Errorf("%w: verifier key %q: key is not canonical base64", ErrCosignature, vkey)
	case len(key) != 1+ed25519.PublicKeySize || key[0] != CosignatureAlg:
		return nil, fmt.Errorf("%w: verifier key %q: want type 0x04 (Ed25519 cosignature/v1) and a 32-byte key", ErrCosignature, vkey)
	}
	pub := ed25519.PublicKey(key[1:])
	hash := CosignatureKeyHash(name, pub)
	if hash16 != fmt.Sprintf("%08x", hash) {
		return nil, fmt.Errorf("%w: verifier key %q: key hash %q, want %08x", ErrCosignature, vkey, hash16, hash)
	}
	return &cosignatureVerifier{name: name, hash: hash, pub: pub}, nil
}

// cosignatureVerifier verifies Ed25519 cosignature/v1 signatures of one cosigner.
type cosignatureVerifier struct {
	name string
	hash uint32
	pub  ed25519.PublicKey
}

func (v *cosignatureVerifier) Name() string    { return v.name }
func (v *cosignatureVerifier) KeyHash() uint32 { return v.hash }

// Verify reports whether sig, the signature line without its key hash, is a cosignature of
// the note text msg. note.Open passes the text as signed, so the message is rebuilt from it
// and the timestamp the signature carries.
func (v *cosignatureVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != cosignatureSize {
		return false
	}
	t := binary.BigEndian.Uint64(sig)
	if t > math.MaxInt64 {
		return false
	}
	return ed25519.Verify(v.pub, CosignatureMessage(int64(t), msg), sig[8:])
}

// CosignatureTime returns the time a cosignature states, from its timestamp. It does not
// verify the signature: call it on signatures that note.Open returned as verified (Note.Sigs)
// with a verifier from NewCosignatureVerifier. Errors wrap ErrCosignature.
func CosignatureTime(sig note.Signature) (time.Time, error) {
	raw, err := base64.StdEncoding.DecodeString(sig.Base64)
	if err != nil || len(raw) != 4+cosignatureSize || binary.BigEndian.Uint32(raw) != sig.Hash {
		return time.Time{}, fmt.Errorf("%w: signature by %s+%08x is not a cosignature/v1", ErrCosignature, sig.Name, sig.Hash)
	}
	t := binary.BigEndian.Uint64(raw[4:])
	if t > math.MaxInt64 {
		return time.Time{}, fmt.Errorf("%w: signature by %s+%08x: timestamp %d exceeds 2^63-1", ErrCosignature, sig.Name, sig.Hash, t)
	}
	return time.Unix(int64(t), 0).UTC(), nil
}

// Witnesses is a set of cosigners whose cosignatures count toward a policy. Each key counts
// once: two verifier keys with the same Ed25519 key under different names are one witness,
// because cosignature/v1 does not sign the cosigner's name (C2SP tlog-cosignature) and a
// cosignature made under one name is valid under the other.
type Witnesses struct {
	byID  map[nameHash]*cosignatureVerifier
	count int
}

type nameHash struct {
	name string
	hash uint32
}

// ParseWitnesses parses cosigner verifier keys, as NewCosignatureVerifier does. Errors wrap
// ErrCosignature and name the bad key.
func ParseWitnesses(vkeys []string) (*Witnesses, error) {
	w := &Witnesses{byID: make(map[nameHash]*cosignatureVerifier, len(vkeys))}
	keys := make(map[string]bool, len(vkeys))
	for _, k := range vkeys {
		v, err := parseCosignatureKey(k)
		if err != nil {
			return nil, err
		}
		w.byID[nameHash{v.name, v.hash}] = v
		if !keys[string(v.pub)] {
			keys[string(v.pub)] = true
			w.count++
		}
	}
	return w, nil
}

// Len returns the number of distinct witness keys.
func (w *Witnesses) Len() int {
	if w == nil {
		return 0
	}
	return w.count
}

// Count returns how many distinct witness keys validly cosign the note text: each signature
// line whose name and key hash belong to a witness is checked with its key, and each key counts
// once however many lines it signed. Lines by unknown keys, and lines that do not verify (a
// forged line, or one copied from a checkpoint with another body), count for nothing; they do
// not make the note invalid, because anyone can append a line to a note and so deny nothing
// with it.
func (w *Witnesses) Count(text string, sigs []note.Signature) int {
	if w.Len() == 0 {
		return 0
	}
	seen := make(map[string]bool)
	for _, s := range sigs {
		v := w.byID[nameHash{s.Name, s.Hash}]
		if v == nil || seen[string(v.pub)] {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(s.Base64)
		if err != nil || len(raw) < 4 || binary.BigEndian.Uint32(raw) != s.Hash {
			continue
		}
		if v.Verify([]byte(text), raw[4:]) {
			seen[string(v.pub)] = true
		}
	}
	return len(seen)
}

// SplitNote parses a signed note without verifying any of its signatures, which it returns in
// Note.UnverifiedSigs, for a caller that checks them one by one (Witnesses.Count). It applies
// note.Open's syntax checks, its limit of 100 signature lines, and MaxCheckpointSize. Errors
// wrap ErrCheckpoint.
func SplitNote(msg []byte) (*note.Note, error) {
	if len(msg) > MaxCheckpointSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrCheckpoint, len(msg), MaxCheckpointSize)
	}
	// With no key known, note.Open checks the syntax of every line and returns them all as
	// unverified in its error.
	_, err := note.Open(msg, unknownKeys{})
	var unverified *note.UnverifiedNoteError
	if errors.As(err, &unverified) {
		return unverified.Note, nil
	}
	return nil, fmt.Errorf("%w: %v", ErrCheckpoint, err)
}

// unknownKeys is a note.Verifiers that knows no key.
type unknownKeys struct{}

func (unknownKeys) Verifier(name string, hash uint32) (note.Verifier, error) {
	return nil, &note.UnknownVerifierError{Name: name, KeyHash: hash}
}
