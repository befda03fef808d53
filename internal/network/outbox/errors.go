package outbox

import "errors"

// Errors returned by this package, wrapped with context; compare with errors.Is. Each refusal of
// Open wraps exactly one of the envelope errors, so a caller can tell a message that will never
// open (ErrForged, ErrTampered) from one that may open later (ErrUnknownKey before the sender's
// key event has arrived).
var (
	// ErrMalformed reports a Message or sealed payload that is not what Seal produces: a bad id,
	// DID or kind, a payload that is not a compact JWE, an inner token that is not a compact JWS
	// of type TypeMessage, claims that do not decode strictly or are inconsistent (exp not after
	// iat, a lifetime above MaxTTL).
	ErrMalformed = errors.New("malformed message")
	// ErrTooLarge reports a body above MaxBody or a payload above MaxPayload, refused before any
	// cryptography.
	ErrTooLarge = errors.New("message too large")
	// ErrWrongRecipient reports a message addressed (Message.To) to another organisation, or
	// encrypted to another key-agreement key than the one it is opened with.
	ErrWrongRecipient = errors.New("message is for another recipient")
	// ErrTampered reports a payload encrypted to the right key that does not decrypt: it was
	// altered on the way.
	ErrTampered = errors.New("message payload altered")
	// ErrAudience reports a message whose signed audience is another organisation: it was signed
	// for someone else and encrypted to this recipient, so opening it would let that someone
	// forward a message that was never meant for us.
	ErrAudience = errors.New("message signed for another audience")
	// ErrMismatch reports visible metadata (Message.From, Message.ID or a set Message.Kind) that
	// disagrees with the signed claims. The message names the field.
	ErrMismatch = errors.New("message metadata does not match its signed claims")
	// ErrExpired reports a message whose exp, plus MaxClockSkew, has passed.
	ErrExpired = errors.New("message expired")
	// ErrNotYetValid reports a message whose iat lies more than MaxClockSkew in the future.
	ErrNotYetValid = errors.New("message issued in the future")
	// ErrUnknownKey reports that the resolver has no signing key for the sender's DID and kid at
	// the issue time, or returned one that cannot verify. It wraps the resolver's error.
	ErrUnknownKey = errors.New("sender key unknown")
	// ErrForged reports a signature that does not verify under the key the sender's DID had for
	// the kid at the issue time.
	ErrForged = errors.New("message signature does not verify")

	// ErrConfig reports an invalid Config, InboxConfig or constructor argument, or a key of the
	// wrong use, a TTL out of range or a nil resolver given to Seal or Open.
	ErrConfig = errors.New("invalid outbox configuration")
	// ErrFull reports an Enqueue while Config.MaxQueued messages wait; nothing was stored.
	ErrFull = errors.New("outbox full")
	// ErrClosed reports an Enqueue or Start after Close began.
	ErrClosed = errors.New("outbox closed")
	// ErrCorrupt reports a stored record that this package did not write: an unknown version or
	// a value that does not decode.
	ErrCorrupt = errors.New("outbox storage corrupt")
)
