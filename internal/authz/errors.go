package authz

import (
	"errors"
	"net/http"
	"strings"
)

// OAuth 2.0 error codes (RFC 6749 §5.2, RFC 6750 §3.1, RFC 9449 §5 and §7.1).
const (
	CodeInvalidRequest     = "invalid_request"
	CodeInvalidClient      = "invalid_client"
	CodeInvalidGrant       = "invalid_grant"
	CodeUnauthorizedClient = "unauthorized_client"
	CodeAccessDenied       = "access_denied"
	CodeInvalidToken       = "invalid_token"
	CodeInvalidDPoPProof   = "invalid_dpop_proof"
	CodeServerError        = "server_error"
)

// Error classes. Every refusal this package returns wraps exactly one of them, which decides the
// OAuth error code [ToOAuth] answers with; the wrapping message says precisely what was wrong and
// never contains a BSN. An error that wraps none of them (a failing replay store, a cancelled
// context) is a server_error.
var (
	// ErrInvalidRequest: the HTTP request itself is unacceptable (method, content type, size,
	// missing or repeated parameters).
	ErrInvalidRequest = errors.New("invalid request")
	// ErrInvalidClient: the client could not be authenticated. The node wraps it; this package
	// does not authenticate clients.
	ErrInvalidClient = errors.New("invalid client")
	// ErrInvalidGrant: the JWT-bearer assertion is unacceptable — malformed, not for this
	// custodian, badly signed, expired, too long-lived, replayed, or naming an invalid BSN (RFC
	// 7523 §3.1).
	ErrInvalidGrant = errors.New("invalid grant")
	// ErrUnauthorizedClient: the client may not use this grant. The node wraps it.
	ErrUnauthorizedClient = errors.New("unauthorized client")
	// ErrAccessDenied: the assertion was valid but the custodian's decision (consent, referral
	// grant, policy) refused access. The node wraps it with the decision's reason.
	ErrAccessDenied = errors.New("access denied")
	// ErrInvalidToken: an access token is malformed, badly signed, expired or not issued here
	// (RFC 6750 §3.1). Returned by [ParseToken].
	ErrInvalidToken = errors.New("invalid token")
	// ErrInvalidDPoPProof: a DPoP proof is unacceptable (RFC 9449 §4.3). Returned by
	// [CheckDPoP] and [VerifyDPoPProof].
	ErrInvalidDPoPProof = errors.New("invalid DPoP proof")
)

// Reasons. They say why a class error was returned and are wrapped beside it, so that callers and
// tests can tell the cases apart with errors.Is; they never decide the OAuth code by themselves.
var (
	// ErrMalformed: not well-formed, a required claim missing or of the wrong form, an unknown
	// claim, or an unexpected typ.
	ErrMalformed = errors.New("malformed")
	// ErrTooLarge: the input exceeds a size limit and was refused before parsing.
	ErrTooLarge = errors.New("too large")
	// ErrSignature: the signature does not verify, or the kid does not belong to the issuer.
	ErrSignature = errors.New("signature does not verify")
	// ErrUnknownKey: no key could be found for the kid at the time that matters (unknown
	// organisation, key rotated out, deactivated), or the JWE is not encrypted to a hosted key.
	ErrUnknownKey = errors.New("unknown key")
	// ErrAudience: the JWT is not addressed to this organisation.
	ErrAudience = errors.New("wrong audience")
	// ErrExpired: exp has passed (beyond the allowed skew).
	ErrExpired = errors.New("expired")
	// ErrNotYetValid: iat lies in the future beyond the allowed skew.
	ErrNotYetValid = errors.New("issued in the future")
	// ErrLifetime: exp − iat exceeds the maximum lifetime, or exp is not after iat.
	ErrLifetime = errors.New("lifetime too long")
	// ErrReplay: the jti was used before within its lifetime.
	ErrReplay = errors.New("replayed")
	// ErrBinding: a DPoP proof does not match its request or token (htm, htu, ath, jkt).
	ErrBinding = errors.New("proof does not match")
)

// OAuthError is an OAuth 2.0 error response (RFC 6749 §5.2). It marshals to {"error": …,
// "error_description": …}.
type OAuthError struct {
	Code        string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// Error returns "code: description".
func (e *OAuthError) Error() string {
	if e.Description == "" {
		return e.Code
	}
	return e.Code + ": " + e.Description
}

// StatusCode returns the HTTP status for the error: 401 for invalid_client, invalid_token and
// invalid_dpop_proof at a resource server (RFC 6749 §5.2, RFC 6750 §3.1, RFC 9449 §7.1), 403 for
// access_denied, 500 for server_error and 400 otherwise. The token endpoint answers
// invalid_dpop_proof with 400 (RFC 9449 §5); it passes that status itself.
func (e *OAuthError) StatusCode() int {
	switch e.Code {
	case CodeInvalidClient, CodeInvalidToken, CodeInvalidDPoPProof:
		return http.StatusUnauthorized
	case CodeAccessDenied:
		return http.StatusForbidden
	case CodeServerError:
		return http.StatusInternalServerError
	}
	return http.StatusBadRequest
}

// classes maps each error class to its code, in the order ToOAuth tries them.
var classes = []struct {
	err  error
	code string
}{
	{ErrInvalidDPoPProof, CodeInvalidDPoPProof},
	{ErrInvalidToken, CodeInvalidToken},
	{ErrInvalidRequest, CodeInvalidRequest},
	{ErrInvalidClient, CodeInvalidClient},
	{ErrUnauthorizedClient, CodeUnauthorizedClient},
	{ErrAccessDenied, CodeAccessDenied},
	{ErrInvalidGrant, CodeInvalidGrant},
}

// maxDescription bounds error_description; longer messages are cut.
const maxDescription = 300

// ToOAuth is the one place an error from this package, or a class error the node wrapped, becomes
// an OAuth error response. An *OAuthError in err's chain is returned as is. An error wrapping a
// class gets that class's code and its own message as the description, made to fit RFC 6749
// §5.2 (printable ASCII without '"' and '\', at most 300 bytes). Anything else is server_error
// with a fixed description: its message may name internal state and is for the node's log only.
// ToOAuth(nil) is nil.
func ToOAuth(err error) *OAuthError {
	if err == nil {
		return nil
	}
	if oe, ok := errors.AsType[*OAuthError](err); ok {
		return oe
	}
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return &OAuthError{Code: c.code, Description: description(err.Error())}
		}
	}
	return &OAuthError{Code: CodeServerError, Description: "internal error"}
}

// description maps s onto the characters RFC 6749 §5.2 allows in error_description
// (%x20-21 / %x23-5B / %x5D-7E): a double quote becomes an apostrophe, other bytes outside that
// set a question mark.
func description(s string) string {
	if len(s) > maxDescription {
		s = s[:maxDescription]
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			b.WriteByte('\'')
		case c < 0x20 || c > 0x7e || c == '\\':
			b.WriteByte('?')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
