package crypto

import "errors"

// Sentinel errors. Every error returned by this package wraps at least one of them, with context
// naming the operation; compare with errors.Is.
var (
	// ErrAlgorithm means a JOSE algorithm is not on the allow-list (none, HS*, RS*, unknown), does
	// not match the key, or a JWE uses another key management, content encryption or compression.
	ErrAlgorithm = errors.New("algorithm not allowed")
	// ErrSignature means a well-formed JWS does not verify under the given key.
	ErrSignature = errors.New("signature does not verify")
	// ErrKey means a key is missing, malformed, of the wrong type or use, or inconsistent (a kid
	// that is not the thumbprint, a private part that does not match the public part).
	ErrKey = errors.New("invalid key")
	// ErrMalformed means the input is not a well-formed compact JWS or JWE, or its protected
	// header is not acceptable.
	ErrMalformed = errors.New("malformed input")
	// ErrTooLarge means the input exceeds a size limit and was refused before parsing.
	ErrTooLarge = errors.New("input too large")
	// ErrDecrypt means a well-formed JWE could not be decrypted with the given key: it was made
	// for another key or was altered.
	ErrDecrypt = errors.New("cannot decrypt")
	// ErrBSN means a string is not a valid BSN; the wrapping error says why but never repeats
	// the input.
	ErrBSN = errors.New("invalid BSN")
	// ErrNotFound means a KeyStore has no key by that name.
	ErrNotFound = errors.New("key not found")
	// ErrExists means a KeyStore already has a key by that name; keys are never overwritten.
	ErrExists = errors.New("key already exists")
)
