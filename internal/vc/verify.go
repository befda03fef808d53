package vc

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/schakel-health/schakel/crypto"
)

// KeyResolver returns the signing key kid of a DID if it was valid at t. node satisfies it with the
// DID registry.
type KeyResolver interface {
	KeyByID(ctx context.Context, did, kid string, t time.Time) (*crypto.PublicKey, error)
}

// StatusLists returns the revocation bits of a status list the node holds.
type StatusLists interface {
	StatusBits(ctx context.Context, listID string) (Bits, error)
}

// TrustAnchors says which issuers are trusted for which credential kind. Kinds whose issuer is the
// party they speak for (service registrations, status lists, successions issued by the
// predecessor, referral grants issued by the custodian) need no anchor.
type TrustAnchors map[Kind][]string

// Trusted reports whether issuer is trusted for kind.
func (a TrustAnchors) Trusted(kind Kind, issuer string) bool {
	return slices.Contains(a[kind], issuer)
}

// Verifier checks credentials. It is safe for concurrent use.
type Verifier struct {
	keys    KeyResolver
	status  StatusLists
	anchors TrustAnchors
	now     func() time.Time
}

// VerifierConfig configures a Verifier.
type VerifierConfig struct {
	// Anchors are the trusted registers per credential kind.
	Anchors TrustAnchors
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Leeway tolerates clock skew on validity bounds; zero means none.
	Leeway time.Duration
}

// NewVerifier returns a Verifier.
func NewVerifier(cfg VerifierConfig, keys KeyResolver, status StatusLists) *Verifier {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Verifier{keys: keys, status: status, anchors: cfg.Anchors, now: now}
}

// VerifySignature parses a credential and checks its signature against the issuer's key valid at
// issuance (iat). It does not check trust, validity period or status.
func (v *Verifier) VerifySignature(ctx context.Context, compact []byte) (*Credential, error) {
	c, err := Parse(compact)
	if err != nil {
		return nil, err
	}
	key, err := v.keys.KeyByID(ctx, c.Issuer, c.KeyID, c.IssuedAt)
	if err != nil {
		return c, fmt.Errorf("verify credential %s: issuer key: %w", c.ID, err)
	}
	if _, _, err := crypto.Verify(compact, key); err != nil {
		return c, fmt.Errorf("verify credential %s: %w", c.ID, err)
	}
	return c, nil
}

// Verify runs every check: signature by the issuer's key valid at issuance, validity period, issuer
// trusted for the kind, and not revoked. A credential whose status cannot be established is refused
// (ErrStatusUnavailable): absence of evidence is not validity.
func (v *Verifier) Verify(ctx context.Context, compact []byte) (*Credential, error) {
	c, err := v.VerifySignature(ctx, compact)
	if err != nil {
		return c, err
	}
	return c, v.Check(ctx, c)
}

// Check runs the checks of Verify that follow the signature, for a credential whose signature has
// been verified already (for example one read back from storage).
func (v *Verifier) Check(ctx context.Context, c *Credential) error {
	now := v.now()
	if now.Before(c.ValidFrom) {
		return fmt.Errorf("verify credential %s: %w until %s", c.ID, ErrNotYetValid, c.ValidFrom.UTC().Format(time.RFC3339))
	}
	if !c.ValidUntil.IsZero() && !now.Before(c.ValidUntil) {
		return fmt.Errorf("verify credential %s: %w at %s", c.ID, ErrExpired, c.ValidUntil.UTC().Format(time.RFC3339))
	}
	if c.Kind == OrganizationCredential && !v.anchors.Trusted(c.Kind, c.Issuer) {
		return fmt.Errorf("verify credential %s: %w: %s is not a trusted register for %s", c.ID, ErrUntrusted, c.Issuer, c.Kind)
	}
	if c.Status == nil {
		return nil
	}
	bits, err := v.status.StatusBits(ctx, c.Status.StatusListCredential)
	if err != nil {
		return fmt.Errorf("verify credential %s: %w: %w", c.ID, ErrStatusUnavailable, err)
	}
	if bits.Get(c.Status.Index()) {
		return fmt.Errorf("verify credential %s: %w (status list %s index %s)", c.ID, ErrRevoked, c.Status.StatusListCredential, c.Status.StatusListIndex)
	}
	return nil
}
