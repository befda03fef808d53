// Package outbox owns point-to-point private delivery between organisations on different nodes:
// the sealed envelope, the persistent outbox that delivers it with retries, and the inbox that
// processes each message exactly once. It carries consent requests from a patient portal to the
// custodian and the custodian's processing notice back, and referral grants (DESIGN.md §4, "What
// goes where": point-to-point, end-to-end encrypted). The transport — a gRPC call over a libp2p
// stream — is not here: the caller passes a send function to [New] and feeds what arrives to
// [Open] and [Inbox.Receive].
//
// # Envelope
//
// [Seal] produces a [Message]: an id, the sender's and recipient's DIDs, and a payload that is a
// compact JWE (ECDH-ES+A256KW, A256GCM; RFC 7516, RFC 7518 §4.6) encrypted to the recipient
// organisation's key-agreement key, holding a compact JWS (typ [TypeMessage]) signed by the
// sender organisation's signing key, whose claims are
//
//	{"iss": sender DID, "aud": recipient DID, "jti": message id, "iat": …, "exp": …,
//	 "kind": e.g. "consent-request", "body": base64url of the body}
//
// The signature comes first and the encryption around it. Signing the plaintext binds the sender
// to the content itself, not to a ciphertext, so the recipient holds evidence of who said what;
// signing the audience means a recipient cannot re-encrypt a message to a third party and pass
// it off as addressed to them (Open checks aud, [ErrAudience]); and encrypting the signature hides
// who signed and what from everyone but the recipient. Only ID, From and To are visible to the
// transport and the nodes in between: the kind, the body and the times are inside. [Open]
// reverses this and refuses, each with its own error, a payload for another recipient or key,
// an altered payload, another audience, metadata that disagrees with the signed claims, an
// expired or future message, an unknown key and a bad signature.
//
// # Delivery
//
// [Outbox.Enqueue] returns once the message is durably stored; the loop started by
// [Outbox.Start] calls send until it returns nil, with exponential backoff and jitter between
// attempts, one attempt in flight per recipient and several recipients at once, so an
// unreachable organisation never holds up a reachable one. A message is removed only after send
// succeeds, or dropped after Config.MaxAge. The queue survives restarts: a new Outbox on the same
// store resumes it. Delivery is therefore at-least-once: a send whose acknowledgement is lost is
// repeated.
//
// [Inbox.Receive] makes processing idempotent: it records the id, scoped by sender, in the same
// transaction as the handler's effects, and skips a message it has recorded. At-least-once
// sending plus idempotent receipt is exactly-once processing. Receipts are kept longer than any
// message can stay valid, after which Open refuses a replay as expired.
//
// Storage: namespaces "outbox" (the queue) and "inbox" (receipts with a TTL).
//
// Imported by internal/network and node only.
package outbox
