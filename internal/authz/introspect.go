package authz

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"time"
	"unsafe"

	"github.com/schakel-health/schakel/crypto"
)

// TokenTypeDPoP is the token_type of a DPoP-bound access token (RFC 9449 §6.2 and §7.1).
const TokenTypeDPoP = "DPoP"

// MaxIntrospectionRequestSize bounds the body ParseIntrospectionRequest reads.
const MaxIntrospectionRequestSize = 8 << 10

// Response is an introspection response (RFC 7662 §2.2). For an inactive token every field but
// Active is zero and it marshals to {"active":false}: nothing is said about why. For an active one
// it carries the token's claims, token_type "DPoP" and cnf.jkt (RFC 9449 §6.2), and the schakel
// members patient (the pseudonym), employee, basis and break_glass. It holds no pointers, so a
// copy can be kept or changed freely.
type Response struct {
	Active     bool         `json:"active"`
	Scope      string       `json:"scope,omitempty"`
	ClientID   string       `json:"client_id,omitempty"`
	Subject    string       `json:"sub,omitempty"`
	Audience   string       `json:"aud,omitempty"`
	Issuer     string       `json:"iss,omitempty"`
	Expiry     int64        `json:"exp,omitempty"`
	IssuedAt   int64        `json:"iat,omitempty"`
	ID         string       `json:"jti,omitempty"`
	TokenType  string       `json:"token_type,omitempty"`
	Cnf        Confirmation `json:"cnf,omitzero"`
	Patient    string       `json:"patient,omitempty"`
	Employee   Employee     `json:"employee,omitzero"`
	Basis      string       `json:"basis,omitempty"`
	BreakGlass bool         `json:"break_glass,omitempty"`
}

// ErrBasisRevoked is the reason Check gives for a token whose basis (consent or grant) is no longer
// in force.
var ErrBasisRevoked = errors.New("basis no longer in force")

// IntrospectorConfig configures an Introspector. The zero value of each field means its default.
type IntrospectorConfig struct {
	// CacheSize bounds the number of active tokens whose verification is cached, by SHA-256 of
	// the token, until their exp. 0 means 65,536 (about 40 MiB at most); a negative value
	// disables the cache, so that every introspection verifies a signature (about 20 times the
	// CPU). A cache smaller than the number of tokens in use evicts at random.
	CacheSize int
	// Now is the clock. nil means time.Now.
	Now func() time.Time
}

// DefaultIntrospectorConfig returns the defaults spelled out.
func DefaultIntrospectorConfig() IntrospectorConfig {
	return IntrospectorConfig{CacheSize: 1 << 16, Now: time.Now}
}

// Introspector answers RFC 7662 token introspection for the access tokens a node issued, locally
// (DESIGN §4, access flow step 4). It is safe for concurrent use and starts no goroutines.
type Introspector struct {
	now        func() time.Time
	keys       func(kid string) (*crypto.PublicKey, error)
	active     func(ctx context.Context, basis string) bool
	generation func() uint64
	cache      *tokenCache // nil when disabled
}

// NewIntrospector returns an Introspector.
//
// keys returns the signing key for a token's kid, and MUST return an error for a kid that is not
// a key of an organisation hosted on this node (such tokens are inactive). active reports whether
// a token's basis (consent or grant id) is still in force. generation returns a number that the
// consent store increments on every revocation, after the revocation is visible to active: a
// cached token is re-checked with active whenever generation has changed since its last check, so
// a revoked consent makes its tokens inactive at the next introspection. generation may be nil:
// then active is called on every introspection and the cache saves only the signature check.
// keys and active are required.
func NewIntrospector(cfg IntrospectorConfig, keys func(kid string) (*crypto.PublicKey, error),
	active func(ctx context.Context, basis string) bool, generation func() uint64) (*Introspector, error) {
	if keys == nil || active == nil {
		return nil, errors.New("new introspector: keys and active are required")
	}
	d := DefaultIntrospectorConfig()
	if cfg.Now == nil {
		cfg.Now = d.Now
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = d.CacheSize
	}
	i := &Introspector{now: cfg.Now, keys: keys, active: active, generation: generation}
	if cfg.CacheSize > 0 {
		i.cache = newTokenCache(cfg.CacheSize)
	}
	return i, nil
}

// Introspect returns the introspection response for token: active with its claims if it is a
// well-formed access token issued by an organisation hosted here, its signature verifies, it has
// not expired and its basis is still in force; otherwise {"active":false}. It does not compare aud
// with the caller: the resource server MUST check that aud (and iss) name itself, and MUST check
// the DPoP proof against cnf.jkt (CheckDPoP).
func (i *Introspector) Introspect(ctx context.Context, token string) Response {
	r, _ := i.Check(ctx, token)
	return r
}

// Check is Introspect that also says why a token is inactive: an error wrapping ErrInvalidToken
// and a reason (those of ParseToken, or ErrBasisRevoked). The reason is for the node's log; the
// introspection endpoint MUST answer with the Response alone (RFC 7662 §2.2).
func (i *Introspector) Check(ctx context.Context, token string) (Response, error) {
	now := i.now()
	if len(token) > MaxTokenSize {
		return Response{}, fmt.Errorf("introspect: %w: %w: %d bytes", ErrInvalidToken, ErrTooLarge, len(token))
	}
	if i.cache == nil {
		return i.verify(ctx, token, now, nil)
	}
	// The token is only read here; viewing its bytes in place saves copying it on every hit.
	k := sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token)))
	e := i.cache.get(&k)
	if e == nil {
		return i.verify(ctx, token, now, &k)
	}
	if now.UnixNano() >= e.expNano {
		i.cache.remove(&k, e)
		return Response{}, fmt.Errorf("introspect: %w: %w at %s", ErrInvalidToken, ErrExpired, fromUnix(e.resp.Expiry).Format(time.RFC3339))
	}
	if i.generation == nil {
		if !i.active(ctx, e.resp.Basis) {
			i.cache.remove(&k, e)
			return Response{}, fmt.Errorf("introspect: %w: %w: %s", ErrInvalidToken, ErrBasisRevoked, clip(e.resp.Basis))
		}
		return e.resp, nil
	}
	if g := i.generation(); e.gen.Load() != g {
		// Read the generation before asking active: a revocation visible only after that read
		// bumps the generation again, and the next introspection re-checks.
		if !i.active(ctx, e.resp.Basis) {
			i.cache.remove(&k, e)
			return Response{}, fmt.Errorf("introspect: %w: %w: %s", ErrInvalidToken, ErrBasisRevoked, clip(e.resp.Basis))
		}
		e.gen.Store(g)
	}
	return e.resp, nil
}

// verify is the uncached path: parse and verify the token, check its basis, and cache the
// result under k when k is not nil.
func (i *Introspector) verify(ctx context.Context, token string, now time.Time, k *[32]byte) (Response, error) {
	p, err := parseToken(token, i.keys, now)
	if err != nil {
		return Response{}, fmt.Errorf("introspect: %w: %w", ErrInvalidToken, err)
	}
	var g uint64
	if i.generation != nil {
		g = i.generation()
	}
	if !i.active(ctx, p.Basis) {
		return Response{}, fmt.Errorf("introspect: %w: %w: %s", ErrInvalidToken, ErrBasisRevoked, clip(p.Basis))
	}
	r := Response{
		Active: true, Scope: p.Scope, ClientID: p.ClientID, Subject: p.Sub, Audience: p.Aud,
		Issuer: p.Iss, Expiry: p.Exp, IssuedAt: p.Iat, ID: p.Jti, TokenType: TokenTypeDPoP,
		Cnf: p.Cnf, Patient: p.Patient, Employee: p.Employee, Basis: p.Basis, BreakGlass: p.BreakGlass,
	}
	if k != nil {
		e := &cacheEntry{resp: r, expNano: fromUnix(p.Exp).UnixNano()}
		e.gen.Store(g)
		i.cache.put(k, e, now.UnixNano())
	}
	return r, nil
}

// ParseIntrospectionRequest reads the token from an introspection request (RFC 7662 §2.1): a POST
// with an application/x-www-form-urlencoded body of at most 8 KiB holding exactly one non-empty
// token parameter and at most one token_type_hint (which is ignored, as §2.1 allows). A token in
// the URL's query is refused: query strings end up in access logs. It reads r.Body; the caller
// authenticates the request itself (§2.1 requires it). Errors wrap ErrInvalidRequest; a wrong
// method should be answered with 405 Method Not Allowed, which the caller can tell by r.Method.
func ParseIntrospectionRequest(r *http.Request) (token string, err error) {
	if r.Method != http.MethodPost {
		return "", fmt.Errorf("introspection request: %w: method %s, want POST", ErrInvalidRequest, clip(r.Method))
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return "", fmt.Errorf("introspection request: %w: content type %q, want application/x-www-form-urlencoded",
			ErrInvalidRequest, clip(r.Header.Get("Content-Type")))
	}
	if r.URL != nil && r.URL.Query().Has("token") {
		return "", fmt.Errorf("introspection request: %w: token in the URL query", ErrInvalidRequest)
	}
	if r.Body == nil {
		return "", fmt.Errorf("introspection request: %w: no body", ErrInvalidRequest)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxIntrospectionRequestSize+1))
	if err != nil {
		return "", fmt.Errorf("introspection request: %w: reading body: %v", ErrInvalidRequest, err)
	}
	if len(body) > MaxIntrospectionRequestSize {
		return "", fmt.Errorf("introspection request: %w: %w: body over %d bytes", ErrInvalidRequest, ErrTooLarge, MaxIntrospectionRequestSize)
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return "", fmt.Errorf("introspection request: %w: body: %v", ErrInvalidRequest, err)
	}
	switch t := form["token"]; {
	case len(t) != 1 || t[0] == "":
		return "", fmt.Errorf("introspection request: %w: want exactly one non-empty token parameter", ErrInvalidRequest)
	case len(form["token_type_hint"]) > 1:
		return "", fmt.Errorf("introspection request: %w: token_type_hint repeated", ErrInvalidRequest)
	default:
		return t[0], nil
	}
}
