package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/schakel-health/schakel/crypto"
)

// ReceiptType is the JWS "typ" of a receipt.
const ReceiptType = "schakel-receipt+jwt"

// Outcomes of a token request, as the access log writes them (internal/accesslog/verify).
const (
	OutcomeGranted = "granted"
	OutcomeRefused = "refused"
)

// ErrReceipt marks a receipt that is malformed, badly signed or signed by a key that was not the
// custodian's at the receipt's time.
var ErrReceipt = errors.New("invalid receipt")

// Receipt is the custodian's signed promise that its answer to a token request — a grant or a
// refusal — is in its access log: entry Index of the log Origin, whose leaf hash (RFC 6962,
// SHA-256(0x00 ‖ entry)) is LeafHash. The requesting node records the receipt in its own log, so
// an auditor can reconcile both sides and a custodian cannot quietly skip logging a refusal (DESIGN
// §4).
//
// A receipt is a promise, not a proof. To check it, once the custodian has published a checkpoint
// of size N > Index with root hash R (verified against the log key and, ideally, cosigned), fetch
// the inclusion proof p for Index in that tree and call
//
//	tlog.CheckRecord(p, int64(N), R, int64(r.Index), r.LeafHash)
//
// (golang.org/x/mod/sumdb/tlog). A receipt whose entry cannot be proven, or whose proof fails,
// is evidence of a misbehaving custodian: keep the receipt, it is signed.
type Receipt struct {
	// Issuer is the custodian organisation's DID ("iss"); it signs the receipt.
	Issuer string
	// Subject is the requesting organisation's DID ("sub").
	Subject string
	// RequestID is the jti of the assertion answered ("request_id"), by which the requester
	// finds its side.
	RequestID string
	// TokenID is the jti of the access token issued, for a grant ("token_id"); empty otherwise.
	TokenID string
	// Origin is the custodian's access-log origin ("origin"); Index is the entry's index in it
	// ("index") and LeafHash its RFC 6962 leaf hash ("leaf_hash", base64 as tlog writes it).
	Origin   string
	Index    uint64
	LeafHash tlog.Hash
	// Time is the entry's time ("time", RFC 3339 in UTC with nanoseconds).
	Time time.Time
	// Outcome is OutcomeGranted or OutcomeRefused ("outcome").
	Outcome string
}

type receiptPayload struct {
	Iss       string    `json:"iss"`
	Sub       string    `json:"sub"`
	RequestID string    `json:"request_id"`
	TokenID   string    `json:"token_id,omitempty"`
	Origin    string    `json:"origin"`
	Index     uint64    `json:"index"`
	LeafHash  tlog.Hash `json:"leaf_hash"`
	Time      string    `json:"time"`
	Outcome   string    `json:"outcome"`
}

func (p *receiptPayload) check(kid string) error {
	kidDID, _, ok := splitKID(kid)
	switch {
	case !validDID(p.Iss):
		return fmt.Errorf("%w: iss %q is not a DID", ErrMalformed, clip(p.Iss))
	case !ok || kidDID != p.Iss:
		return fmt.Errorf("%w: kid %q does not name a key of %s", ErrMalformed, clip(kid), p.Iss)
	case !validDID(p.Sub):
		return fmt.Errorf("%w: sub %q is not a DID", ErrMalformed, clip(p.Sub))
	case p.RequestID == "" || len(p.RequestID) > maxIDLen || len(p.TokenID) > maxIDLen:
		return fmt.Errorf("%w: request_id missing, or an id longer than %d", ErrMalformed, maxIDLen)
	case p.Origin == "" || len(p.Origin) > maxClaimLen:
		return fmt.Errorf("%w: origin missing or too long", ErrMalformed)
	case p.LeafHash == (tlog.Hash{}):
		return fmt.Errorf("%w: leaf_hash missing", ErrMalformed)
	case p.Outcome != OutcomeGranted && p.Outcome != OutcomeRefused:
		return fmt.Errorf("%w: outcome %q is not %s or %s", ErrMalformed, clip(p.Outcome), OutcomeGranted, OutcomeRefused)
	case p.Outcome == OutcomeRefused && p.TokenID != "":
		return fmt.Errorf("%w: a refusal with a token_id", ErrMalformed)
	case p.Index > 1<<63-1:
		return fmt.Errorf("%w: index beyond int64", ErrMalformed)
	}
	if _, err := parseReceiptTime(p.Time); err != nil {
		return err
	}
	return nil
}

func parseReceiptTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Location() != time.UTC || t.Format(time.RFC3339Nano) != s {
		return time.Time{}, fmt.Errorf("%w: time %q is not RFC 3339 in UTC", ErrMalformed, clip(s))
	}
	return t, nil
}

// NewReceipt signs r as the custodian with signer under kid (empty: "<r.Issuer>#<signer's
// thumbprint>"): a compact JWS of type ReceiptType. Errors wrap ErrMalformed for a receipt
// VerifyReceipt would refuse.
func NewReceipt(signer *crypto.PrivateKey, kid string, r Receipt) (string, error) {
	if signer == nil {
		return "", fmt.Errorf("new receipt: %w: no signing key", crypto.ErrKey)
	}
	if kid == "" {
		kid = KID(r.Issuer, signer)
	}
	if r.Time.IsZero() {
		return "", fmt.Errorf("new receipt: %w: no time", ErrMalformed)
	}
	p := receiptPayload{
		Iss: r.Issuer, Sub: r.Subject, RequestID: r.RequestID, TokenID: r.TokenID, Origin: r.Origin,
		Index: r.Index, LeafHash: r.LeafHash, Time: r.Time.UTC().Format(time.RFC3339Nano), Outcome: r.Outcome,
	}
	if err := p.check(kid); err != nil {
		return "", fmt.Errorf("new receipt: %w", err)
	}
	body, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("new receipt: %w", err)
	}
	jws, err := crypto.Sign(signer, body, crypto.Header{Type: ReceiptType, KID: kid})
	if err != nil {
		return "", fmt.Errorf("new receipt: %w", err)
	}
	return string(jws), nil
}

// VerifyReceipt verifies a receipt and returns it: typ ReceiptType, a kid "<iss>#<thumbprint>",
// the signature by the key resolve returns for that kid at the receipt's time (so a receipt stays
// verifiable after the custodian rotates its key), strict claims. It does not check inclusion; see
// Receipt. Errors wrap ErrReceipt and a reason (ErrMalformed, ErrUnknownKey, ErrSignature).
func VerifyReceipt(ctx context.Context, compact string, resolve KeyResolver) (*Receipt, error) {
	r, err := verifyReceipt(ctx, compact, resolve)
	if err != nil {
		return nil, fmt.Errorf("verify receipt: %w: %w", ErrReceipt, err)
	}
	return r, nil
}

func verifyReceipt(ctx context.Context, compact string, resolve KeyResolver) (*Receipt, error) {
	jws := []byte(compact)
	payload, h, err := crypto.ParseUnverified(jws)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if h.Type != ReceiptType {
		return nil, fmt.Errorf("%w: typ %q, want %q", ErrMalformed, clip(h.Type), ReceiptType)
	}
	// The time selects the key, so it is read before the signature is checked; the signature
	// then covers it, and a forged time only selects a key that will not verify.
	var p receiptPayload
	if err := decodeClaims(payload, &p); err != nil {
		return nil, err
	}
	if err := p.check(h.KID); err != nil {
		return nil, err
	}
	t, _ := parseReceiptTime(p.Time)
	pub, err := resolve(ctx, h.KID, t)
	if err != nil || pub == nil {
		return nil, fmt.Errorf("%w: %s at %s: %v", ErrUnknownKey, clip(h.KID), p.Time, err)
	}
	if _, _, err := crypto.Verify(jws, pub); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignature, err)
	}
	return &Receipt{
		Issuer: p.Iss, Subject: p.Sub, RequestID: p.RequestID, TokenID: p.TokenID, Origin: p.Origin,
		Index: p.Index, LeafHash: p.LeafHash, Time: t, Outcome: p.Outcome,
	}, nil
}
