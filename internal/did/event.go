package did

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mr-tron/base58"

	"github.com/schakel-health/schakel/crypto"
)

// Sentinel errors. Each is wrapped with context naming the DID or event that failed.
var (
	ErrMalformed   = errors.New("malformed key event")
	ErrInvalid     = errors.New("invalid key event")
	ErrUnknownDID  = errors.New("unknown DID")
	ErrDeactivated = errors.New("DID deactivated")
	ErrNoKey       = errors.New("no key valid at that time")
	ErrFork        = errors.New("conflicting key event")
	ErrDocument    = errors.New("invalid DID document")
	// ErrEventAhead: a DID document names a key event this node does not hold yet (it arrived
	// before the rotation that it follows); it can verify once the event is here.
	ErrEventAhead = errors.New("DID document names a key event not yet known")
	// ErrSuperseded: a DID document names an earlier key event than the latest; a newer document
	// replaces it.
	ErrSuperseded = errors.New("DID document superseded by a key rotation")
)

// Method is the DID method prefix of every organisation identifier.
const Method = "did:schakel:"

// EventType is the kind of a key event.
type EventType string

// Key event types. The set is closed: an unknown type is refused.
const (
	Genesis    EventType = "genesis"
	Rotate     EventType = "rotate"
	Deactivate EventType = "deactivate"
)

// EventJWSType is the JWS "typ" of a key event.
const EventJWSType = "did-key-event+jwt"

// eventVersion is the payload format version; other versions are refused.
const eventVersion = 1

// MaxEventSize bounds a compact key event; larger input is refused before parsing.
const MaxEventSize = 8 << 10

// maxFutureSkew is how far in the future an event's time may lie (clock skew between nodes).
const maxFutureSkew = 5 * time.Minute

// Event is the payload of a key event.
type Event struct {
	Version int       `json:"v"`
	Type    EventType `json:"type"`
	// DID is empty in the genesis event (the DID is derived from it) and required in every other.
	DID string `json:"did,omitempty"`
	// Seq is 0 for genesis and increases by one per event.
	Seq uint64 `json:"seq"`
	// Prev is the base64url SHA-256 of the previous event's compact JWS; empty for genesis.
	Prev string `json:"prev,omitempty"`
	// Time is when the event takes effect, in Unix seconds; not before the previous event's.
	Time int64 `json:"time"`
	// SigningKey is the organisation's signing key from this event on (genesis, rotate).
	SigningKey *crypto.PublicKey `json:"signingKey,omitempty"`
	// AgreementKey is the organisation's key-agreement key from this event on (genesis, rotate).
	AgreementKey *crypto.PublicKey `json:"agreementKey,omitempty"`
}

// EventHash is the base64url (no padding) SHA-256 of a compact key event, as named by Prev.
func EventHash(compact []byte) string {
	h := crypto.SHA256(compact)
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// DIDFromGenesis derives the identifier from the compact JWS of a genesis event.
func DIDFromGenesis(compact []byte) string {
	h := crypto.SHA256(compact)
	return Method + base58.Encode(h[:])
}

// ValidateDID checks the syntax of a did:schakel identifier.
func ValidateDID(s string) error {
	rest, ok := strings.CutPrefix(s, Method)
	if !ok {
		return fmt.Errorf("%w: %q is not a did:schakel identifier", ErrMalformed, truncate(s))
	}
	b, err := base58.Decode(rest)
	if err != nil || len(b) != 32 {
		return fmt.Errorf("%w: %q is not a did:schakel identifier (want base58 of 32 bytes)", ErrMalformed, truncate(s))
	}
	return nil
}

// GenerateKeys makes a fresh key pair for an organisation: an Ed25519 signing key and a P-256
// key-agreement key, the kinds genesis and rotate events carry.
func GenerateKeys() (sig, agreement *crypto.PrivateKey, err error) {
	if sig, err = crypto.GenerateKey(crypto.Ed25519, crypto.UseSign); err != nil {
		return nil, nil, err
	}
	if agreement, err = crypto.GenerateKey(crypto.P256, crypto.UseEnc); err != nil {
		return nil, nil, err
	}
	return sig, agreement, nil
}

// NewGenesis creates the first key event of a new organisation, self-signed by its signing key, and
// returns it with the DID it defines.
func NewGenesis(sig *crypto.PrivateKey, agreement *crypto.PublicKey, t time.Time) ([]byte, string, error) {
	if agreement == nil || agreement.Use() != crypto.UseEnc {
		return nil, "", fmt.Errorf("genesis: %w: agreement key must be a key-agreement key", ErrInvalid)
	}
	ev := Event{
		Version:      eventVersion,
		Type:         Genesis,
		Time:         t.Unix(),
		SigningKey:   sig.Public(),
		AgreementKey: agreement,
	}
	compact, err := signEvent(sig, &ev)
	if err != nil {
		return nil, "", err
	}
	return compact, DIDFromGenesis(compact), nil
}

// NewRotate creates a rotate event that replaces the signing and agreement keys. It MUST be signed by
// the current signing key of st.
func NewRotate(current *crypto.PrivateKey, st *State, newSig, newAgreement *crypto.PublicKey, t time.Time) ([]byte, error) {
	if newAgreement == nil || newAgreement.Use() != crypto.UseEnc {
		return nil, fmt.Errorf("rotate %s: %w: agreement key must be a key-agreement key", st.DID, ErrInvalid)
	}
	ev := Event{
		Version:      eventVersion,
		Type:         Rotate,
		DID:          st.DID,
		Seq:          st.Seq + 1,
		Prev:         st.Head,
		Time:         t.Unix(),
		SigningKey:   newSig,
		AgreementKey: newAgreement,
	}
	return signEvent(current, &ev)
}

// NewDeactivate creates the final event of a DID; no key is valid after it.
func NewDeactivate(current *crypto.PrivateKey, st *State, t time.Time) ([]byte, error) {
	ev := Event{
		Version: eventVersion,
		Type:    Deactivate,
		DID:     st.DID,
		Seq:     st.Seq + 1,
		Prev:    st.Head,
		Time:    t.Unix(),
	}
	return signEvent(current, &ev)
}

func signEvent(k *crypto.PrivateKey, ev *Event) ([]byte, error) {
	payload, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode key event: %w", err)
	}
	compact, err := crypto.Sign(k, payload, crypto.Header{Type: EventJWSType})
	if err != nil {
		return nil, fmt.Errorf("sign key event: %w", err)
	}
	return compact, nil
}

// ParseEvent decodes a compact key event without verifying its signature: strict JSON (unknown
// fields refused), known version and type, fields consistent with the type.
func ParseEvent(compact []byte) (*Event, error) {
	if len(compact) > MaxEventSize {
		return nil, fmt.Errorf("%w: key event of %d bytes exceeds %d", ErrMalformed, len(compact), MaxEventSize)
	}
	payload, h, err := crypto.ParseUnverified(compact)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if h.Type != EventJWSType {
		return nil, fmt.Errorf("%w: typ %q, want %q", ErrMalformed, h.Type, EventJWSType)
	}
	var ev Event
	if err := crypto.DecodeJSON(payload, &ev); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if ev.Version != eventVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrMalformed, ev.Version, eventVersion)
	}
	switch ev.Type {
	case Genesis:
		if ev.DID != "" || ev.Seq != 0 || ev.Prev != "" {
			return nil, fmt.Errorf("%w: genesis event must not carry did, seq or prev", ErrMalformed)
		}
		if ev.SigningKey == nil || ev.AgreementKey == nil {
			return nil, fmt.Errorf("%w: genesis event needs a signing and an agreement key", ErrMalformed)
		}
	case Rotate:
		if ev.SigningKey == nil || ev.AgreementKey == nil {
			return nil, fmt.Errorf("%w: rotate event needs a signing and an agreement key", ErrMalformed)
		}
	case Deactivate:
		if ev.SigningKey != nil || ev.AgreementKey != nil {
			return nil, fmt.Errorf("%w: deactivate event must not carry keys", ErrMalformed)
		}
	default:
		return nil, fmt.Errorf("%w: unknown event type %q", ErrMalformed, ev.Type)
	}
	if ev.Type != Genesis {
		if err := ValidateDID(ev.DID); err != nil {
			return nil, err
		}
		if ev.Seq == 0 || ev.Prev == "" {
			return nil, fmt.Errorf("%w: %s event needs seq > 0 and prev", ErrMalformed, ev.Type)
		}
	}
	// Key events are identified by the hash of their bytes (the DID, prev), so their signatures must
	// not be malleable: Ed25519 only, never ES256, whose (r, n−s) twin would let anyone fork a chain.
	if ev.SigningKey != nil && (ev.SigningKey.Use() != crypto.UseSign || ev.SigningKey.Type() != crypto.Ed25519) {
		return nil, fmt.Errorf("%w: signingKey must be an Ed25519 signing key", ErrMalformed)
	}
	if ev.AgreementKey != nil && ev.AgreementKey.Use() != crypto.UseEnc {
		return nil, fmt.Errorf("%w: agreementKey is not a key-agreement key", ErrMalformed)
	}
	if ev.Time <= 0 {
		return nil, fmt.Errorf("%w: time must be positive", ErrMalformed)
	}
	return &ev, nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
