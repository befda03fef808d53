// Package crypto owns key material and the primitives every other package signs, verifies,
// encrypts and pseudonymises with.
//
// It holds:
//
//   - keys: [GenerateKey], [ParsePrivateKey] and [ParsePublicKey] for Ed25519 and P-256 JWKs whose
//     kid is always the RFC 7638 thumbprint ([Thumbprint]);
//   - compact JWS: [Sign], [Verify], [ParseHeader] and [ParseUnverified], with an algorithm
//     allow-list of EdDSA (RFC 8037) and ES256 (RFC 7518 §3.4) and nothing else;
//   - compact JWE: [Encrypt] and [Decrypt], ECDH-ES+A256KW with A256GCM only (RFC 7518 §4.6, §5.3);
//   - C2SP signed notes: [PrivateKey.NoteSigner] and [PublicKey.NoteVerifierKey], so that an
//     organisation's Ed25519 log key signs its access-log checkpoints;
//   - keyed pseudonyms of BSNs: [Pseudonymizer] and the 11-proof [ValidBSN];
//   - key storage: the [KeyStore] interface with [FileKeyStore] and [MemKeyStore].
//
// Every parser here is strict: inputs are size-limited before they are parsed, JSON objects with
// duplicate member names are refused, base64url must be unpadded and canonical, and JOSE headers
// that could inject keys or extensions (jku, jwk, x5u, x5c, crit, b64) are refused. Failures wrap
// one of the package's sentinel errors, so callers test them with [errors.Is].
//
// Anyone may import this package. It imports no other schakel package, so the access-log verifier
// and other small binaries can depend on it without pulling in storage or networking.
package crypto
