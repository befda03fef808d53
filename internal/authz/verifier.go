package authz

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/schakel-health/schakel/internal/store"
	"time"

	"github.com/schakel-health/schakel/crypto"
)

// RecipientKey returns the key-agreement private key whose thumbprint is kid (the "kid" of a
// JWE's protected header) and the DID of the hosted organisation it belongs to, or an error when
// no hosted organisation has such a key. node satisfies it from the key stores of the
// organisations it hosts; keys of earlier periods may be returned so that assertions encrypted
// just before a rotation still open.
type RecipientKey func(ctx context.Context, kid string) (org string, key *crypto.PrivateKey, err error)

// VerifierConfig configures a Verifier. The zero value of each field means its default.
type VerifierConfig struct {
	// Now is the clock. nil means time.Now.
	Now func() time.Time
	// MaxSkew is the clock difference tolerated between requester and custodian: iat may lie up
	// to MaxSkew in the future and exp up to MaxSkew in the past. 0 means 60 s. Larger tolerates
	// worse clocks and keeps replay-cache entries longer; it never extends the lifetime bound.
	MaxSkew time.Duration
	// MaxLifetime bounds exp − iat. 0 means 5 min (MaxAssertionLifetime), which is also the
	// largest value allowed: a longer-lived assertion is a longer replay window.
	MaxLifetime time.Duration
}

// DefaultVerifierConfig returns the defaults spelled out.
func DefaultVerifierConfig() VerifierConfig {
	return VerifierConfig{Now: time.Now, MaxSkew: 60 * time.Second, MaxLifetime: MaxAssertionLifetime}
}

// Verifier opens token-request assertions addressed to the organisations a node hosts. It is
// safe for concurrent use and starts no goroutines.
type Verifier struct {
	cfg       VerifierConfig
	recipient RecipientKey
	resolve   KeyResolver
	replay    *ReplayCache
}

// NewVerifier validates cfg and returns a Verifier that decrypts with the keys recipient returns,
// verifies signatures with the keys resolve returns for the present time, and records jti in
// replay. All three are required.
func NewVerifier(cfg VerifierConfig, recipient RecipientKey, resolve KeyResolver, replay *ReplayCache) (*Verifier, error) {
	d := DefaultVerifierConfig()
	if cfg.Now == nil {
		cfg.Now = d.Now
	}
	switch {
	case cfg.MaxSkew < 0 || cfg.MaxLifetime < 0:
		return nil, errors.New("new verifier: negative MaxSkew or MaxLifetime")
	case cfg.MaxLifetime > MaxAssertionLifetime:
		return nil, fmt.Errorf("new verifier: MaxLifetime %v exceeds %v", cfg.MaxLifetime, MaxAssertionLifetime)
	case recipient == nil || resolve == nil || replay == nil:
		return nil, errors.New("new verifier: recipient, resolve and replay are required")
	}
	if cfg.MaxSkew == 0 {
		cfg.MaxSkew = d.MaxSkew
	}
	if cfg.MaxLifetime == 0 {
		cfg.MaxLifetime = d.MaxLifetime
	}
	return &Verifier{cfg: cfg, recipient: recipient, resolve: resolve, replay: replay}, nil
}

// Open decrypts, verifies and checks a token-request assertion (RFC 7523 §3) and returns its
// claims. The checks run cheapest first, and the jti is recorded only once every other check has
// passed, so input that fails changes nothing:
//
//  1. size at most MaxAssertionSize (ErrTooLarge);
//  2. the JWE is encrypted to a key of a hosted organisation (RecipientKey, ErrUnknownKey) and
//     decrypts with it (crypto.Decrypt: ECDH-ES+A256KW with A256GCM only);
//  3. the inner JWS has typ AssertionType and a kid "<did>#<thumbprint>" (ErrMalformed);
//  4. its signature verifies with the key the KeyResolver returns for that kid at the present
//     time (ErrUnknownKey, ErrSignature): a key rotated out before now is refused;
//  5. the claims decode strictly, iss is the kid's DID, sub is iss, every required claim is
//     present and the BSN passes the 11-proof (ErrMalformed);
//  6. aud is the organisation whose key decrypted the JWE (ErrAudience), so an assertion for one
//     hosted organisation cannot be spent at another;
//  7. iat ≤ now + MaxSkew (ErrNotYetValid), now < exp + MaxSkew (ErrExpired), 0 < exp − iat ≤
//     MaxLifetime (ErrLifetime);
//  8. the jti has not been used by this issuer before (ErrReplay); it is remembered until exp +
//     MaxSkew, in badger, so across restarts too.
//
// Every refusal wraps ErrInvalidGrant and one of the reasons above; no message contains the BSN.
// A failure of the replay store wraps neither and maps to server_error: the assertion is refused
// but not spent.
func (v *Verifier) Open(ctx context.Context, jwe []byte) (*AssertionClaims, error) {
	c, r, err := v.OpenReserved(ctx, jwe)
	if err != nil {
		return nil, err
	}
	defer r.Release()
	var b store.Batch
	r.Record(&b)
	if err := v.replay.db.Write(ctx, &b); err != nil {
		return nil, fmt.Errorf("open assertion %s: replay cache: %w", clip(c.ID), err)
	}
	return c, nil
}

// OpenReserved is Open without recording the jti's use: it returns the claims with a
// [Reservation] that holds the jti against concurrent uses. The caller writes the reservation's
// record in its own transaction — the node does so in the access-log entry of the decision, one
// fsync for both — and releases it once that is durable or abandoned. Until then the jti is not
// spent: a caller that answers before the record is durable breaks replay protection across a
// crash.
func (v *Verifier) OpenReserved(ctx context.Context, jwe []byte) (*AssertionClaims, *Reservation, error) {
	if len(jwe) > MaxAssertionSize {
		return nil, nil, fmt.Errorf("open assertion: %w: %w: %d bytes, limit %d", ErrInvalidGrant, ErrTooLarge, len(jwe), MaxAssertionSize)
	}
	p, err := v.open(ctx, jwe)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, nil, fmt.Errorf("open assertion: %w", ctxErr)
		}
		return nil, nil, fmt.Errorf("open assertion: %w: %w", ErrInvalidGrant, err)
	}
	now := v.cfg.Now()
	iat, exp := fromUnix(p.Iat), fromUnix(p.Exp)
	switch {
	case iat.After(now.Add(v.cfg.MaxSkew)):
		return nil, nil, fmt.Errorf("open assertion %s: %w: %w: iat %s, now %s", clip(p.Jti), ErrInvalidGrant, ErrNotYetValid,
			iat.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case !now.Before(exp.Add(v.cfg.MaxSkew)):
		return nil, nil, fmt.Errorf("open assertion %s: %w: %w at %s", clip(p.Jti), ErrInvalidGrant, ErrExpired, exp.Format(time.RFC3339))
	}
	r, err := v.replay.reserve(ctx, scopeAssertion, p.Iss, p.Jti, exp.Add(v.cfg.MaxSkew).Sub(now))
	if err != nil {
		if errors.Is(err, ErrReplay) {
			return nil, nil, fmt.Errorf("open assertion: %w: %w", ErrInvalidGrant, err)
		}
		return nil, nil, fmt.Errorf("open assertion %s: %w", clip(p.Jti), err)
	}
	return p.claims(), r, nil
}

// open runs steps 2 to 6 and the lifetime bound of step 7 of Open.
func (v *Verifier) open(ctx context.Context, jwe []byte) (*assertionPayload, error) {
	rkid, err := jweKID(jwe)
	if err != nil {
		return nil, err
	}
	org, key, err := v.recipient(ctx, rkid)
	if err != nil || key == nil {
		return nil, fmt.Errorf("%w: JWE kid %q is not a key of an organisation hosted here", ErrUnknownKey, clip(rkid))
	}
	jws, err := crypto.Decrypt(jwe, key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	h, err := crypto.ParseHeader(jws)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if h.Type != AssertionType {
		return nil, fmt.Errorf("%w: typ %q, want %q", ErrMalformed, clip(h.Type), AssertionType)
	}
	kidDID, _, ok := splitKID(h.KID)
	if !ok {
		return nil, fmt.Errorf("%w: kid %q is not <did>#<thumbprint>", ErrMalformed, clip(h.KID))
	}
	pub, err := v.resolve(ctx, h.KID, v.cfg.Now())
	if err != nil || pub == nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnknownKey, clip(h.KID), err)
	}
	payload, _, err := crypto.Verify(jws, pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignature, err)
	}
	var p assertionPayload
	if err := decodeClaims(payload, &p); err != nil {
		return nil, err
	}
	if p.Iss != kidDID {
		return nil, fmt.Errorf("%w: iss %q is not the signer %s", ErrSignature, clip(p.Iss), kidDID)
	}
	if err := p.check(h.KID, v.cfg.MaxLifetime); err != nil {
		return nil, err
	}
	if p.Aud != org {
		return nil, fmt.Errorf("%w: aud %s, but encrypted to %s", ErrAudience, p.Aud, org)
	}
	return &p, nil
}

// jweKID returns the "kid" of a compact JWE's protected header (RFC 7516 §4.1.6), which
// crypto.Encrypt sets to the recipient key's thumbprint. crypto.Decrypt checks the header fully.
func jweKID(jwe []byte) (string, error) {
	seg, _, _ := bytes.Cut(jwe, []byte{'.'})
	if bytes.Count(jwe, []byte{'.'}) != 4 || len(seg) > 2048 {
		return "", fmt.Errorf("%w: not a compact JWE", ErrMalformed)
	}
	raw := make([]byte, b64.DecodedLen(len(seg)))
	n, err := b64.Decode(raw, seg)
	if err != nil {
		return "", fmt.Errorf("%w: JWE header: %v", ErrMalformed, err)
	}
	var h struct {
		KID string `json:"kid"`
	}
	if err := json.Unmarshal(raw[:n], &h); err != nil || h.KID == "" {
		return "", fmt.Errorf("%w: JWE header without kid", ErrMalformed)
	}
	return h.KID, nil
}
