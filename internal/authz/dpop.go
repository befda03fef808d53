package authz

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/schakel-health/schakel/crypto"
)

// DPoPType is the JWS "typ" of a DPoP proof (RFC 9449 §4.2).
const DPoPType = "dpop+jwt"

const (
	// maxDPoPSize bounds a proof; real ones are under 1 KiB.
	maxDPoPSize = 4 << 10
	// dpopWindow is how far a proof's iat may lie from now, either way (RFC 9449 §11.1).
	dpopWindow = 60 * time.Second
)

// dpopAlgs is the algorithm allow-list for DPoP proofs, with the JWK key type each requires.
var dpopAlgs = map[string]struct{ kty, crv string }{
	"EdDSA": {"OKP", "Ed25519"},
	"ES256": {"EC", "P-256"},
}

// dpopProof is a DPoP proof whose signature verified and whose iat is within the window.
type dpopProof struct {
	jkt      string // RFC 7638 thumbprint of the proof's key
	jti, htm string
	htu      string
	ath      string // "" when absent
	iat      time.Time
}

// dpopClaims is the payload of a proof (RFC 9449 §4.2). Other claims, such as nonce, are ignored.
type dpopClaims struct {
	Jti string `json:"jti"`
	Htm string `json:"htm"`
	Htu string `json:"htu"`
	Iat int64  `json:"iat"`
	Ath string `json:"ath,omitempty"`
}

// CheckDPoP checks a DPoP proof presented with an access token at a resource server (RFC 9449 §4.3
// and §7.1): the proof is valid (see VerifyDPoPProof) for method and url, its key's thumbprint is
// jkt (the token's cnf.jkt), its ath is base64url(SHA-256(accessToken)), and its jti has not been
// used with that key before. url is the request's absolute URL; query and fragment are ignored
// on both sides. The jti is recorded only when every other check has passed. Errors wrap
// ErrInvalidDPoPProof and a reason (ErrMalformed, ErrTooLarge, ErrSignature, ErrBinding,
// ErrNotYetValid, ErrExpired, ErrReplay), except a failing replay store, which wraps neither.
func CheckDPoP(ctx context.Context, proof, method, url, accessToken, jkt string, now time.Time, replay *ReplayCache) error {
	if accessToken == "" || jkt == "" {
		return fmt.Errorf("dpop: %w: %w: no access token or jkt to bind to", ErrInvalidDPoPProof, ErrBinding)
	}
	_, err := checkDPoP(ctx, proof, method, url, now, replay, func(p *dpopProof) error {
		if p.jkt != jkt {
			return fmt.Errorf("%w: proof key %s, token bound to %s", ErrBinding, p.jkt, clip(jkt))
		}
		sum := sha256.Sum256([]byte(accessToken))
		if p.ath != b64.EncodeToString(sum[:]) {
			return fmt.Errorf("%w: ath is not the hash of the access token", ErrBinding)
		}
		return nil
	})
	return err
}

// VerifyDPoPProof checks a DPoP proof sent to a token endpoint (RFC 9449 §4.3, §5) and returns the
// thumbprint of its key, to which the token will be bound: typ dpop+jwt; alg EdDSA or ES256; a
// jwk header holding a public Ed25519 or P-256 key of that algorithm and nothing private; the
// signature verifies with it; htm is method and htu is url (without query and fragment, after
// RFC 3986 §6.2.2–6.2.3 normalisation of scheme, host and default port); iat within 60 s of now;
// jti not used with this key before, recorded in replay until the proof expires. Errors are as
// for CheckDPoP.
func VerifyDPoPProof(ctx context.Context, proof, method, url string, now time.Time, replay *ReplayCache) (jkt string, err error) {
	p, err := checkDPoP(ctx, proof, method, url, now, replay, nil)
	if err != nil {
		return "", err
	}
	return p.jkt, nil
}

// checkDPoP verifies proof, runs bind, and only then records the jti.
func checkDPoP(ctx context.Context, proof, method, url string, now time.Time, replay *ReplayCache, bind func(*dpopProof) error) (*dpopProof, error) {
	if replay == nil {
		return nil, errors.New("dpop: no replay cache")
	}
	p, err := parseDPoP(proof, now)
	if err == nil {
		err = p.matches(method, url)
	}
	if err == nil && bind != nil {
		err = bind(p)
	}
	if err != nil {
		return nil, fmt.Errorf("dpop: %w: %w", ErrInvalidDPoPProof, err)
	}
	// Remember the jti for as long as the proof would be accepted, plus a second for rounding.
	if err := replay.use(ctx, scopeDPoP, p.jkt, p.jti, p.iat.Add(dpopWindow+time.Second).Sub(now)); err != nil {
		if errors.Is(err, ErrReplay) {
			return nil, fmt.Errorf("dpop: %w: %w", ErrInvalidDPoPProof, err)
		}
		return nil, fmt.Errorf("dpop: %w", err)
	}
	return p, nil
}

// matches checks htm and htu against the request (RFC 9449 §4.3 items 8 and 9).
func (p *dpopProof) matches(method, rawURL string) error {
	if p.htm != method {
		return fmt.Errorf("%w: htm %q, request method %q", ErrBinding, clip(p.htm), clip(method))
	}
	want, err := normalizeHTU(rawURL)
	if err != nil {
		return fmt.Errorf("%w: request URL: %v", ErrBinding, err)
	}
	got, err := normalizeHTU(p.htu)
	if err != nil {
		return fmt.Errorf("%w: htu: %v", ErrMalformed, err)
	}
	if got != want {
		return fmt.Errorf("%w: htu %q, request URL %q", ErrBinding, clip(got), clip(want))
	}
	return nil
}

// normalizeHTU returns an absolute http(s) URL without query and fragment, with the scheme and
// host in lower case, the default port removed and an empty path written as "/" (RFC 3986 §6.2.2,
// §6.2.3). URLs with user info are refused.
func normalizeHTU(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", errors.New("not a URL")
	}
	scheme := strings.ToLower(u.Scheme)
	if (scheme != "https" && scheme != "http") || u.Host == "" || u.Opaque != "" || u.User != nil {
		return "", errors.New("not an absolute http(s) URL without user info")
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = ""
	}
	switch {
	case port != "":
		host = net.JoinHostPort(host, port)
	case strings.Contains(host, ":"):
		host = "[" + host + "]"
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path, nil
}

// parseDPoP parses a proof and verifies its signature with the key in its header and its iat.
func parseDPoP(proof string, now time.Time) (*dpopProof, error) {
	if len(proof) > maxDPoPSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(proof), maxDPoPSize)
	}
	seg := strings.Split(proof, ".")
	if len(seg) != 3 {
		return nil, fmt.Errorf("%w: not a compact JWS", ErrMalformed)
	}
	var raw [3][]byte
	for i, s := range seg {
		// b64 skips CR and LF while decoding; refusing them keeps one spelling per proof.
		if strings.ContainsAny(s, "\r\n") {
			return nil, fmt.Errorf("%w: segment %d is not base64url", ErrMalformed, i+1)
		}
		var err error
		if raw[i], err = b64.DecodeString(s); err != nil {
			return nil, fmt.Errorf("%w: segment %d is not base64url", ErrMalformed, i+1)
		}
	}
	alg, verify, jkt, err := dpopHeader(raw[0])
	if err != nil {
		return nil, err
	}
	if len(raw[2]) != 64 || !verify([]byte(proof[:len(seg[0])+1+len(seg[1])]), raw[2]) {
		return nil, fmt.Errorf("%w: %s signature with the header's jwk", ErrSignature, alg)
	}
	if err := uniqueMembers(raw[1]); err != nil {
		return nil, err
	}
	var c dpopClaims
	if err := json.Unmarshal(raw[1], &c); err != nil {
		return nil, fmt.Errorf("%w: claims: %s", ErrMalformed, redactDigits(err.Error()))
	}
	switch {
	case c.Jti == "" || len(c.Jti) > maxIDLen:
		return nil, fmt.Errorf("%w: jti missing or longer than %d", ErrMalformed, maxIDLen)
	case c.Htm == "" || c.Htu == "" || c.Iat <= 0:
		return nil, fmt.Errorf("%w: htm, htu and iat are required", ErrMalformed)
	}
	iat := fromUnix(c.Iat)
	if iat.After(now.Add(dpopWindow)) {
		return nil, fmt.Errorf("%w: iat %s, now %s", ErrNotYetValid, iat.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if iat.Before(now.Add(-dpopWindow)) {
		return nil, fmt.Errorf("%w: iat %s is more than %v before now", ErrExpired, iat.Format(time.RFC3339), dpopWindow)
	}
	return &dpopProof{jkt: jkt, jti: c.Jti, htm: c.Htm, htu: c.Htu, ath: c.Ath, iat: iat}, nil
}

// dpopHeader checks a proof's protected header and returns its alg, a verifier for the key in
// its jwk member, and that key's RFC 7638 thumbprint.
func dpopHeader(raw []byte) (alg string, verify func(input, sig []byte) bool, jkt string, err error) {
	h, err := strictObject(raw)
	if err != nil {
		return "", nil, "", fmt.Errorf("header: %w", err)
	}
	for _, name := range []string{"crit", "jku", "x5u", "x5c", "b64"} {
		if _, ok := h[name]; ok {
			return "", nil, "", fmt.Errorf("%w: header %q not allowed", ErrMalformed, name)
		}
	}
	if typ, _ := rawString(h["typ"]); typ != DPoPType {
		return "", nil, "", fmt.Errorf("%w: typ %q, want %q", ErrMalformed, clip(typ), DPoPType)
	}
	alg, _ = rawString(h["alg"])
	want, ok := dpopAlgs[alg]
	if !ok {
		return "", nil, "", fmt.Errorf("%w: %w: alg %q", ErrMalformed, crypto.ErrAlgorithm, clip(alg))
	}
	k, err := strictObject(h["jwk"])
	if err != nil {
		return "", nil, "", fmt.Errorf("%w: jwk: %w", ErrMalformed, err)
	}
	for _, name := range []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"} {
		if _, ok := k[name]; ok {
			return "", nil, "", fmt.Errorf("%w: jwk holds private member %q", ErrMalformed, name)
		}
	}
	m := map[string]string{}
	for _, name := range []string{"kty", "crv", "x", "y", "use", "alg"} {
		if v, ok := k[name]; ok {
			s, ok := rawString(v)
			if !ok {
				return "", nil, "", fmt.Errorf("%w: jwk member %q is not a string", ErrMalformed, name)
			}
			m[name] = s
		}
	}
	switch {
	case m["kty"] != want.kty || m["crv"] != want.crv:
		return "", nil, "", fmt.Errorf("%w: jwk is %q %q, alg %s needs %s %s", ErrMalformed, clip(m["kty"]), clip(m["crv"]), alg, want.kty, want.crv)
	case m["use"] != "" && m["use"] != string(crypto.UseSign):
		return "", nil, "", fmt.Errorf("%w: jwk use %q", ErrMalformed, clip(m["use"]))
	case m["alg"] != "" && m["alg"] != alg:
		return "", nil, "", fmt.Errorf("%w: jwk alg %q, header alg %s", ErrMalformed, clip(m["alg"]), alg)
	}
	// crypto.ParsePublicKey does the strict checks (canonical coordinates, point on the curve) and
	// computes the thumbprint; it wants use and alg, which a DPoP jwk usually leaves out.
	m["use"], m["alg"] = string(crypto.UseSign), alg
	norm, err := json.Marshal(m)
	if err != nil {
		return "", nil, "", fmt.Errorf("%w: jwk: %v", ErrMalformed, err)
	}
	pub, err := crypto.ParsePublicKey(norm)
	if err != nil {
		return "", nil, "", fmt.Errorf("%w: jwk: %w", ErrMalformed, err)
	}
	x, _ := b64.DecodeString(m["x"]) // checked by ParsePublicKey
	if alg == "EdDSA" {
		return alg, func(input, sig []byte) bool { return ed25519.Verify(ed25519.PublicKey(x), input, sig) }, pub.KID(), nil
	}
	y, _ := b64.DecodeString(m["y"])
	ec, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	if err != nil {
		return "", nil, "", fmt.Errorf("%w: jwk: %v", ErrMalformed, err)
	}
	return alg, func(input, sig []byte) bool {
		d := sha256.Sum256(input)
		return ecdsa.Verify(ec, d[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
	}, pub.KID(), nil
}

// NewDPoPProof returns a DPoP proof (RFC 9449 §4.2) made with key, an Ed25519 or P-256 signing
// key, for a request with method to url (query and fragment are left out of htu), bound to
// accessToken by ath unless accessToken is empty (a proof for the token endpoint), issued at now
// with a fresh jti. The thumbprint to put in an assertion's DPoPJKT is key.KID(). It is for EHR
// clients and tests; a node never holds a client's DPoP key.
func NewDPoPProof(key *crypto.PrivateKey, method, url, accessToken string, now time.Time) (string, error) {
	if key == nil || key.Use() != crypto.UseSign {
		return "", fmt.Errorf("new DPoP proof: %w: want a signing key", crypto.ErrKey)
	}
	htu, err := normalizeHTU(url)
	if err != nil {
		return "", fmt.Errorf("new DPoP proof: url: %v", err)
	}
	// The key's JSON forms are the only way out of crypto for its material; take kty, crv, x and
	// y for the header and d for signing.
	priv, err := key.MarshalJSON()
	if err != nil {
		return "", fmt.Errorf("new DPoP proof: %w", err)
	}
	var j struct{ Kty, Crv, X, Y, D string }
	err = json.Unmarshal(priv, &j)
	clear(priv)
	if err != nil {
		return "", fmt.Errorf("new DPoP proof: %w", err)
	}
	d, err := b64.DecodeString(j.D)
	if err != nil {
		return "", fmt.Errorf("new DPoP proof: %w: d: %v", crypto.ErrKey, err)
	}
	defer clear(d)
	type header struct {
		Typ string            `json:"typ"`
		Alg string            `json:"alg"`
		JWK map[string]string `json:"jwk"`
	}
	h := header{Typ: DPoPType, Alg: key.Algorithm(), JWK: map[string]string{"kty": j.Kty, "crv": j.Crv, "x": j.X}}
	if j.Y != "" {
		h.JWK["y"] = j.Y
	}
	c := dpopClaims{Jti: NewID(), Htm: method, Htu: htu, Iat: unix(now)}
	if accessToken != "" {
		sum := sha256.Sum256([]byte(accessToken))
		c.Ath = b64.EncodeToString(sum[:])
	}
	hb, err := json.Marshal(h)
	if err != nil {
		return "", fmt.Errorf("new DPoP proof: %w", err)
	}
	cb, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("new DPoP proof: %w", err)
	}
	input := b64.EncodeToString(hb) + "." + b64.EncodeToString(cb)
	var sig []byte
	switch key.Type() {
	case crypto.Ed25519:
		sig = ed25519.Sign(ed25519.NewKeyFromSeed(d), []byte(input))
	case crypto.P256:
		ec, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
		if err != nil {
			return "", fmt.Errorf("new DPoP proof: %w: %v", crypto.ErrKey, err)
		}
		digest := sha256.Sum256([]byte(input))
		r, s, err := ecdsa.Sign(rand.Reader, ec, digest[:])
		if err != nil {
			return "", fmt.Errorf("new DPoP proof: %w", err)
		}
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	default:
		return "", fmt.Errorf("new DPoP proof: %w: key type %s", crypto.ErrKey, key.Type())
	}
	return input + "." + b64.EncodeToString(sig), nil
}
