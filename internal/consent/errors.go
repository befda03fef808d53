package consent

import "errors"

// Errors returned by this package, wrapped with a message that says precisely what is wrong;
// compare with errors.Is. No message ever contains a BSN, and none repeats free text a caller
// gave (a basis or reason might hold one).
var (
	// ErrInvalid reports a consent, grant, succession or argument that breaks a rule of this
	// package: a missing or oversized field, an unknown enum value, a malformed identifier, a
	// bad period. Nothing was written.
	ErrInvalid = errors.New("invalid consent input")
	// ErrGrantor reports a consent whose grantors do not satisfy the WGBO age rules (see
	// Consent.Validate). It is always wrapped together with ErrInvalid, so a caller that only
	// maps ErrInvalid still answers "bad request". Nothing was written.
	ErrGrantor = errors.New("consent not given by the right person")
	// ErrState reports an operation not allowed in the record's current status: processing a
	// consent that is not pending, revoking one that is not active, revoking a revoked grant.
	// The message names the status found. Nothing was written.
	ErrState = errors.New("consent not in the required state")
	// ErrNotFound reports that no consent or grant has the given id.
	ErrNotFound = errors.New("not found")
	// ErrExists reports a grant id that is already taken.
	ErrExists = errors.New("already exists")
	// ErrPolicy reports a policy file that does not parse or breaks a rule of ParsePolicy; the
	// message names the setting.
	ErrPolicy = errors.New("invalid consent policy")
	// ErrCorrupt reports a stored value this package did not write or cannot read: an unknown
	// format version or undecodable bytes.
	ErrCorrupt = errors.New("consent storage corrupt")
)
