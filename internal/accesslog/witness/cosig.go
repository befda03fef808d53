package witness

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/accesslog/verify"
)

// ErrKey reports a key or clock that cannot make cosignatures.
var ErrKey = errors.New("unusable cosigning key")

// Cosigner makes C2SP tlog-cosignature/v1 Ed25519 cosignatures (signature type 0x04): as a
// note.Signer, note.Sign(n, cosigner) appends a line "— <name> base64(key hash || timestamp ||
// signature)" whose signature covers verify.CosignatureMessage(timestamp, n.Text). It is safe for
// concurrent use.
type Cosigner struct {
	name  string
	hash  uint32
	vkey  string
	now   func() time.Time
	inner note.Signer // signs raw messages with the witness key
}

// NewCosigner returns a cosigner named name that signs with key and dates each cosignature
// with now (nil means time.Now), in whole Unix seconds. key MUST be an Ed25519 key; name MUST
// be a valid note key name, such as the witness's organisation's log origin. C2SP
// tlog-cosignature requires one key per cosigner name, because the signed message does not
// contain the name.
//
// The key MAY be the organisation's checkpoint key: the cosignature's key hash has another
// type byte, and the message it signs starts with the lines "cosignature/v1" and "time …",
// which no checkpoint body can (a checkpoint's second line is a decimal size), so a
// cosignature never passes for a checkpoint signature, nor the other way round. A key of its
// own is still cleaner: it can be rotated or revoked without touching the log.
func NewCosigner(name string, key *crypto.PrivateKey, now func() time.Time) (*Cosigner, error) {
	if now == nil {
		now = time.Now
	}
	// crypto exposes Ed25519 signing of arbitrary bytes only through its note signer, whose
	// Sign is the plain Ed25519 signature of its argument (signed-note type 0x01 signs the
	// text as is). The probe below makes sure of that with the public key, so a change there
	// cannot make this cosigner emit signatures that do not verify.
	inner, err := key.NoteSigner(name)
	if err != nil {
		return nil, fmt.Errorf("witness: cosigner %q: %w: %w", name, ErrKey, err)
	}
	pub, err := notePublicKey(key, name)
	if err != nil {
		return nil, fmt.Errorf("witness: cosigner %q: %w: %w", name, ErrKey, err)
	}
	probe := verify.CosignatureMessage(0, []byte("probe\n"))
	sig, err := inner.Sign(probe)
	if err != nil || !ed25519.Verify(pub, probe, sig) {
		return nil, fmt.Errorf("witness: cosigner %q: %w: the key does not make plain Ed25519 signatures", name, ErrKey)
	}
	vkey, err := verify.CosignatureVerifierKey(name, pub)
	if err != nil {
		return nil, fmt.Errorf("witness: cosigner %q: %w: %w", name, ErrKey, err)
	}
	return &Cosigner{name: name, hash: verify.CosignatureKeyHash(name, pub), vkey: vkey, now: now, inner: inner}, nil
}

// notePublicKey returns the 32-byte Ed25519 public key of key, read from its note verifier key
// "<name>+<hash>+<base64 of 0x01 and the key>".
func notePublicKey(key *crypto.PrivateKey, name string) (ed25519.PublicKey, error) {
	vkey, err := key.Public().NoteVerifierKey(name)
	if err != nil {
		return nil, err
	}
	// Neither the name nor the hash contains '+'; the base64 key may.
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil, fmt.Errorf("note verifier key %q is malformed", vkey)
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 1+ed25519.PublicKeySize || raw[0] != 1 {
		return nil, fmt.Errorf("note verifier key %q is not an Ed25519 key", vkey)
	}
	return ed25519.PublicKey(raw[1:]), nil
}

// Name returns the cosigner's name, the name on its signature lines.
func (c *Cosigner) Name() string { return c.name }

// KeyHash returns the cosigner's key ID (C2SP tlog-cosignature, "Format").
func (c *Cosigner) KeyHash() uint32 { return c.hash }

// VerifierKey returns the cosigner's verifier key, "<name>+<hash>+<base64 of 0x04 and the
// key>", for verify.NewCosignatureVerifier and `schakel log verify --witness`.
func (c *Cosigner) VerifierKey() string { return c.vkey }

// Sign returns the timestamped_signature of text, the note's text (C2SP tlog-cosignature,
// "Format"): the current Unix time in seconds as a big-endian u64, then the Ed25519 signature
// of verify.CosignatureMessage(time, text). A clock before 1970 is an error, since the
// timestamp is unsigned.
func (c *Cosigner) Sign(text []byte) ([]byte, error) {
	t := c.now().Unix()
	if t < 0 {
		return nil, fmt.Errorf("witness: cosign: %w: clock reads %d, before 1970", ErrKey, t)
	}
	sig, err := c.inner.Sign(verify.CosignatureMessage(t, text))
	if err != nil {
		return nil, fmt.Errorf("witness: cosign: %w", err)
	}
	return append(binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(sig)), uint64(t)), sig...), nil
}
