package outbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/schakel-health/schakel/crypto"
)

// TypeMessage is the typ (RFC 7515 §4.1.9) of the signed token inside a sealed payload. Open
// refuses any other, so a credential or key event signed by the same key can never be passed off
// as a message.
const TypeMessage = "schakel-msg+jwt"

// Lifetimes and clock tolerance of a sealed message.
const (
	// DefaultTTL is how long a message stays valid when Seal is given no TTL: long enough for a
	// recipient's node to be down over a long weekend, and equal to the outbox's default MaxAge,
	// so the outbox stops trying when the recipient would refuse it anyway.
	DefaultTTL = 7 * 24 * time.Hour
	// MaxTTL is the longest lifetime (exp − iat) Seal produces and Open accepts. It bounds how
	// long an Inbox must remember a processed id: a replay after that is refused as expired.
	MaxTTL = 30 * 24 * time.Hour
	// MaxClockSkew is how far the sender's and recipient's clocks may disagree: Open accepts an
	// iat up to this far in the future and a message up to this long after its exp.
	MaxClockSkew = 2 * time.Minute
)

// Size limits. They are checked before any parsing or cryptography.
const (
	// MaxBody is the largest body Seal accepts. With the claims around it, base64 twice (the
	// body inside the JSON claims, the claims inside the JWS), it keeps the signed token below
	// crypto.MaxJWSSize, which Open's verification enforces.
	MaxBody = 32 << 10
	// MaxPayload is the largest Message.Payload accepted. A JWE of the largest JWS is about
	// 4/3 × crypto.MaxJWSSize ≈ 86 KiB; anything much larger cannot hold a valid message, so
	// it is refused before decryption and never queued.
	MaxPayload = 128 << 10
	// MaxDIDLen bounds an organisation DID (did:schakel identifiers are about 60 bytes).
	MaxDIDLen = 256
	// MaxKindLen bounds a kind.
	MaxKindLen = 64
)

// idSize is the number of random bytes in a message id: 128 bits, so ids never collide and
// cannot be guessed to pre-empt another sender's message in an Inbox.
const idSize = 16

// b64 is the unpadded base64url of RFC 7515 §2, strict so that every value has one spelling.
var b64 = base64.RawURLEncoding.Strict()

// idLen is the length of an encoded message id.
var idLen = b64.EncodedLen(idSize)

// Message is what travels between nodes: a sealed payload and the metadata a transport needs to
// route it and a recipient needs to deduplicate it. Only ID, From and To are visible to the
// transport; everything else is inside the payload.
type Message struct {
	// ID identifies the message: 128 random bits, base64url without padding. It is repeated in
	// the signed claims (jti).
	ID string
	// From is the sending organisation's DID, repeated in the signed claims (iss).
	From string
	// To is the receiving organisation's DID, repeated in the signed claims (aud).
	To string
	// Kind is not set by Seal: the kind is inside the encrypted payload, so the transport learns
	// only who talks to whom, not what about. It exists for wire compatibility; when set it MUST
	// equal the sealed kind, and Opened.Kind is the authoritative value.
	Kind string
	// Payload is a compact JWE (RFC 7516 §7.1) encrypted to the recipient's key-agreement key,
	// holding a compact JWS signed by the sender.
	Payload []byte
}

// Opened is the verified content of a Message.
type Opened struct {
	ID   string
	From string
	To   string
	// Kind says what Body holds, e.g. "consent-request", as the sender signed it.
	Kind string
	Body []byte
	// IssuedAt and Expires are the signed iat and exp, in whole seconds.
	IssuedAt time.Time
	Expires  time.Time
	// KeyID is the kid of the sender's signing key that verified the message.
	KeyID string
}

// Resolver returns the signing key that DID did had under key id kid at time t, or an error when
// it had none. did.Registry.KeyByID has this shape.
type Resolver func(ctx context.Context, did, kid string, t time.Time) (*crypto.PublicKey, error)

// claims is the JSON payload of the signed token. The names are the registered JWT claims of
// RFC 7519 §4.1 where one exists.
type claims struct {
	Iss  string `json:"iss"`
	Aud  string `json:"aud"`
	Jti  string `json:"jti"`
	Iat  int64  `json:"iat"`
	Exp  int64  `json:"exp"`
	Kind string `json:"kind"`
	// Body is the body in unpadded base64url.
	Body string `json:"body"`
}

// Seal signs body as fromDID with from, a signing key, and encrypts the signed token to to, the
// recipient's P-256 key-agreement key, for toDID. The message is valid from now for ttl, in whole
// seconds; ttl 0 means DefaultTTL, and ttl above MaxTTL is refused (ErrConfig, as are keys of the
// wrong use). A bad DID or kind is ErrMalformed, a body above MaxBody ErrTooLarge. The header's kid is from's thumbprint, which
// the recipient resolves against fromDID's key history.
//
// The order is sign, then encrypt: the signature binds the sender to the content and to the
// audience (aud), and encryption hides both from everyone but the recipient. Because the audience
// is signed, a recipient cannot re-encrypt the token to a third party and pass it off as
// addressed to them.
func Seal(from *crypto.PrivateKey, fromDID string, to *crypto.PublicKey, toDID, kind string, body []byte, now time.Time, ttl time.Duration) (*Message, error) {
	switch {
	case from == nil || from.Use() != crypto.UseSign:
		return nil, fmt.Errorf("outbox: seal: %w: sender key is not a signing key", ErrConfig)
	case to == nil || to.Use() != crypto.UseEnc:
		return nil, fmt.Errorf("outbox: seal: %w: recipient key is not a key-agreement key", ErrConfig)
	case ttl < 0 || ttl > MaxTTL:
		return nil, fmt.Errorf("outbox: seal: %w: TTL %v outside (0, %v]", ErrConfig, ttl, MaxTTL)
	case len(body) > MaxBody:
		return nil, fmt.Errorf("outbox: seal: %w: body of %d bytes, limit %d", ErrTooLarge, len(body), MaxBody)
	}
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if err := checkDID("from", fromDID); err != nil {
		return nil, fmt.Errorf("outbox: seal: %w", err)
	}
	if err := checkDID("to", toDID); err != nil {
		return nil, fmt.Errorf("outbox: seal: %w", err)
	}
	if err := checkKind(kind); err != nil {
		return nil, fmt.Errorf("outbox: seal: %w", err)
	}
	id, err := newID()
	if err != nil {
		return nil, fmt.Errorf("outbox: seal: %w", err)
	}
	// Whole seconds, as JWT NumericDate (RFC 7519 §2). The lifetime rounds up to a whole second
	// and is counted from iat, so exp − iat never exceeds MaxTTL, which Open checks.
	iat := now.Unix()
	exp := iat + int64((ttl+time.Second-1)/time.Second)
	payload, err := json.Marshal(claims{
		Iss: fromDID, Aud: toDID, Jti: id, Iat: iat, Exp: exp, Kind: kind,
		Body: b64.EncodeToString(body),
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: seal: %w", err)
	}
	jws, err := crypto.Sign(from, payload, crypto.Header{Type: TypeMessage})
	if err != nil {
		return nil, fmt.Errorf("outbox: seal: %w", err)
	}
	jwe, err := crypto.Encrypt(jws, to)
	if err != nil {
		return nil, fmt.Errorf("outbox: seal: %w", err)
	}
	if len(jwe) > MaxPayload {
		return nil, fmt.Errorf("outbox: seal: %w: payload of %d bytes, limit %d", ErrTooLarge, len(jwe), MaxPayload)
	}
	return &Message{ID: id, From: fromDID, To: toDID, Payload: jwe}, nil
}

// Open decrypts m with to, toDID's key-agreement key, verifies the sender's signature with the
// key resolve returns for the signed iss and kid at the signed iat, and checks the claims against
// toDID, now and m's visible metadata. The checks run cheapest first, and each refusal wraps one
// error: ErrTooLarge or ErrMalformed (shape), ErrWrongRecipient (m.To, or the JWE's key), ErrTampered
// (decryption), ErrMalformed (inner token and claims), ErrAudience, ErrMismatch (From, ID, Kind),
// ErrNotYetValid, ErrExpired, ErrUnknownKey (resolve) and ErrForged (signature).
//
// Open does not deduplicate: a replayed message opens again until it expires. Pass it to
// Inbox.Receive, which does.
func Open(ctx context.Context, m *Message, to *crypto.PrivateKey, toDID string, resolve Resolver, now time.Time) (*Opened, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("outbox: open: %w", err)
	}
	if to == nil || to.Use() != crypto.UseEnc || resolve == nil {
		return nil, fmt.Errorf("outbox: open %s: %w: need a key-agreement key and a resolver", m.ID, ErrConfig)
	}
	if m.To != toDID {
		return nil, fmt.Errorf("outbox: open %s: %w: addressed to %s, not %s", m.ID, ErrWrongRecipient, m.To, toDID)
	}
	// The kid is checked before decrypting so that a message for another key says so instead of
	// looking altered; an attacker who changes it gains nothing, since the header is
	// authenticated data of the encryption and decryption uses our key whatever it says.
	kid, err := RecipientKeyID(m)
	if err != nil {
		return nil, fmt.Errorf("outbox: open %s: %w", m.ID, err)
	}
	if kid != to.KID() {
		return nil, fmt.Errorf("outbox: open %s: %w: encrypted to key %q, not %s", m.ID, ErrWrongRecipient, truncate(kid), to.KID())
	}
	jws, err := crypto.Decrypt(m.Payload, to)
	switch {
	case errors.Is(err, crypto.ErrDecrypt):
		return nil, fmt.Errorf("outbox: open %s: %w: %w", m.ID, ErrTampered, err)
	case errors.Is(err, crypto.ErrTooLarge):
		return nil, fmt.Errorf("outbox: open %s: %w: %w", m.ID, ErrTooLarge, err)
	case err != nil:
		return nil, fmt.Errorf("outbox: open %s: %w: %w", m.ID, ErrMalformed, err)
	}
	// The claims are read before the signature is checked because they name the key to check it
	// with. Verify below runs over the same bytes and yields the same payload, so what is checked
	// here is what is signed.
	payload, hdr, err := crypto.ParseUnverified(jws)
	if err != nil {
		return nil, fmt.Errorf("outbox: open %s: %w: inner token: %w", m.ID, ErrMalformed, err)
	}
	if hdr.Type != TypeMessage {
		return nil, fmt.Errorf("outbox: open %s: %w: inner token of type %q, want %q", m.ID, ErrMalformed, truncate(hdr.Type), TypeMessage)
	}
	if hdr.KID == "" {
		return nil, fmt.Errorf("outbox: open %s: %w: inner token has no kid", m.ID, ErrMalformed)
	}
	c, body, err := decodeClaims(payload)
	if err != nil {
		return nil, fmt.Errorf("outbox: open %s: %w", m.ID, err)
	}
	if c.Aud != toDID {
		return nil, fmt.Errorf("outbox: open %s: %w: signed for %s, opened by %s", m.ID, ErrAudience, c.Aud, toDID)
	}
	switch {
	case c.Iss != m.From:
		return nil, fmt.Errorf("outbox: open %s: %w: from is %s, signed iss is %s", m.ID, ErrMismatch, m.From, c.Iss)
	case c.Jti != m.ID:
		return nil, fmt.Errorf("outbox: open %s: %w: id differs from signed jti %s", m.ID, ErrMismatch, c.Jti)
	case m.Kind != "" && m.Kind != c.Kind:
		return nil, fmt.Errorf("outbox: open %s: %w: kind is %q, signed kind is %q", m.ID, ErrMismatch, m.Kind, c.Kind)
	}
	iat, exp := time.Unix(c.Iat, 0), time.Unix(c.Exp, 0)
	if iat.After(now.Add(MaxClockSkew)) {
		return nil, fmt.Errorf("outbox: open %s: %w: issued at %s, now %s", m.ID, ErrNotYetValid, rfc3339(iat), rfc3339(now))
	}
	if !now.Before(exp.Add(MaxClockSkew)) {
		return nil, fmt.Errorf("outbox: open %s: %w: expired at %s, now %s", m.ID, ErrExpired, rfc3339(exp), rfc3339(now))
	}
	pub, err := resolve(ctx, c.Iss, hdr.KID, iat)
	if err == nil && pub == nil {
		err = errors.New("resolver returned no key")
	}
	if err != nil {
		return nil, fmt.Errorf("outbox: open %s: %w: %s key %q at %s: %w", m.ID, ErrUnknownKey, c.Iss, truncate(hdr.KID), rfc3339(iat), err)
	}
	if _, _, err := crypto.Verify(jws, pub); err != nil {
		if errors.Is(err, crypto.ErrKey) {
			return nil, fmt.Errorf("outbox: open %s: %w: %s key %q: %w", m.ID, ErrUnknownKey, c.Iss, truncate(hdr.KID), err)
		}
		return nil, fmt.Errorf("outbox: open %s: %w: %s key %q: %w", m.ID, ErrForged, c.Iss, truncate(hdr.KID), err)
	}
	return &Opened{
		ID: c.Jti, From: c.Iss, To: c.Aud, Kind: c.Kind, Body: body,
		IssuedAt: iat.UTC(), Expires: exp.UTC(), KeyID: hdr.KID,
	}, nil
}

// decodeClaims decodes the signed claims strictly (unknown members and trailing data refused) and
// checks that each is well formed.
func decodeClaims(payload []byte) (claims, []byte, error) {
	var c claims
	if err := crypto.DecodeJSON(payload, &c); err != nil {
		return c, nil, fmt.Errorf("%w: claims: %w", ErrMalformed, err)
	}
	if err := checkDID("iss", c.Iss); err != nil {
		return c, nil, err
	}
	if err := checkDID("aud", c.Aud); err != nil {
		return c, nil, err
	}
	if err := checkID(c.Jti); err != nil {
		return c, nil, fmt.Errorf("jti: %w", err)
	}
	if err := checkKind(c.Kind); err != nil {
		return c, nil, err
	}
	if c.Iat <= 0 || c.Exp <= c.Iat || c.Exp-c.Iat > int64(MaxTTL/time.Second) {
		return c, nil, fmt.Errorf("%w: lifetime from iat %d to exp %d is not within (0, %v]", ErrMalformed, c.Iat, c.Exp, MaxTTL)
	}
	if b64.DecodedLen(len(c.Body)) > MaxBody {
		return c, nil, fmt.Errorf("%w: body over %d bytes", ErrTooLarge, MaxBody)
	}
	body, err := b64.DecodeString(c.Body)
	if err != nil {
		return c, nil, fmt.Errorf("%w: body: %v", ErrMalformed, err)
	}
	return c, body, nil
}

// Validate checks the shape of m without any cryptography: a well-formed id, valid From and To
// DIDs, an empty or valid Kind, and a non-empty Payload of at most MaxPayload bytes drawn from the
// compact serialisation's alphabet. Failures wrap ErrMalformed or ErrTooLarge. Open, Enqueue and
// Receive call it; a transport can call it on input before anything else.
func (m *Message) Validate() error {
	if m == nil {
		return fmt.Errorf("%w: nil message", ErrMalformed)
	}
	if err := checkID(m.ID); err != nil {
		return fmt.Errorf("id: %w", err)
	}
	if err := checkDID("from", m.From); err != nil {
		return err
	}
	if err := checkDID("to", m.To); err != nil {
		return err
	}
	if m.Kind != "" {
		if err := checkKind(m.Kind); err != nil {
			return err
		}
	}
	switch {
	case len(m.Payload) == 0:
		return fmt.Errorf("%w: empty payload", ErrMalformed)
	case len(m.Payload) > MaxPayload:
		return fmt.Errorf("%w: payload of %d bytes, limit %d", ErrTooLarge, len(m.Payload), MaxPayload)
	}
	for i, c := range m.Payload {
		if !compactByte(c) {
			return fmt.Errorf("%w: payload byte 0x%02x at offset %d is not base64url or '.'", ErrMalformed, c, i)
		}
	}
	return nil
}

// RecipientKeyID returns the kid of the key-agreement key m's payload was encrypted to, read from
// the JWE protected header without decrypting. A recipient that has rotated its key-agreement key
// uses it to pick the key to Open with; nothing else in the header can be trusted before
// decryption succeeds.
func RecipientKeyID(m *Message) (string, error) {
	if err := m.Validate(); err != nil {
		return "", err
	}
	seg, _, ok := bytes.Cut(m.Payload, []byte("."))
	if !ok {
		return "", fmt.Errorf("%w: payload is not a compact JWE", ErrMalformed)
	}
	raw := make([]byte, b64.DecodedLen(len(seg)))
	n, err := b64.Decode(raw, seg)
	if err != nil {
		return "", fmt.Errorf("%w: JWE header: %v", ErrMalformed, err)
	}
	var h struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(raw[:n], &h); err != nil || h.Kid == "" {
		return "", fmt.Errorf("%w: JWE header has no kid", ErrMalformed)
	}
	return h.Kid, nil
}

// newID returns a fresh message id.
func newID() (string, error) {
	var b [idSize]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return b64.EncodeToString(b[:]), nil
}

// checkID checks that id is idSize bytes in canonical unpadded base64url.
func checkID(id string) error {
	if len(id) != idLen {
		return fmt.Errorf("%w: message id of %d characters, want %d", ErrMalformed, len(id), idLen)
	}
	if _, err := b64.DecodeString(id); err != nil {
		return fmt.Errorf("%w: message id: %v", ErrMalformed, err)
	}
	return nil
}

// checkDID checks that s is a plausible DID: "did:", at most MaxDIDLen bytes of the characters
// the DID syntax allows in a method-specific id (W3C DID Core §3.1: ALPHA, DIGIT, ".", "-", "_",
// "%", ":"). Which DIDs exist is the resolver's business; this check only keeps odd bytes out of
// keys, logs and JSON.
func checkDID(field, s string) error {
	if len(s) < len("did:x:y") || len(s) > MaxDIDLen || s[:4] != "did:" {
		return fmt.Errorf("%w: %s %q is not a DID of at most %d bytes", ErrMalformed, field, truncate(s), MaxDIDLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !alnum(c) && c != '.' && c != '-' && c != '_' && c != '%' && c != ':' {
			return fmt.Errorf("%w: %s %q has byte 0x%02x", ErrMalformed, field, truncate(s), c)
		}
	}
	return nil
}

// checkKind checks that kind is 1 to MaxKindLen bytes of [a-z0-9._-].
func checkKind(kind string) error {
	if len(kind) == 0 || len(kind) > MaxKindLen {
		return fmt.Errorf("%w: kind of %d bytes, want 1 to %d", ErrMalformed, len(kind), MaxKindLen)
	}
	for i := 0; i < len(kind); i++ {
		c := kind[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("%w: kind %q has byte 0x%02x", ErrMalformed, truncate(kind), c)
		}
	}
	return nil
}

func alnum(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// compactByte reports whether c may appear in a compact JWE: base64url or '.'.
func compactByte(c byte) bool {
	return alnum(c) || c == '-' || c == '_' || c == '.'
}

// truncate shortens s for an error message, so hostile input cannot make errors or log lines
// arbitrarily long.
func truncate(s string) string {
	const limit = 80
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "…"
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }
