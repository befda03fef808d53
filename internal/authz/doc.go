// Package authz owns the tokens of the access flow (DESIGN §4): the token-request assertion a
// requesting organisation sends, the access token a custodian answers with, its introspection by
// the custodian's FHIR API, the DPoP proofs that bind it to the requesting EHR, and the signed
// receipt that comes with every answer. It decides nothing: whether access is granted is the
// custodian's policy (consent, referral grants), which the node runs between [Verifier.Open] and
// [IssueToken].
//
// The flow and its entry points:
//
//  1. The requesting node signs an RFC 7523 JWT-bearer assertion ([AssertionClaims], JWS typ
//     [AssertionType]) as its organisation and encrypts it to the custodian: [NewAssertion]. The
//     BSN travels only inside this JWE.
//  2. The custodian's node opens it with a [Verifier]: size limit, decryption with a hosted
//     organisation's key, signature by the requester's key valid now, audience, lifetime ≤ 5
//     min with 60 s skew, BSN 11-proof, and a jti seen only once ([ReplayCache], persistent in
//     badger).
//  3. On a grant it issues an RFC 9068 access token ([IssueToken], typ "at+jwt", ≤ 15 min, bound
//     to the EHR's DPoP key by cnf.jkt, scope naming the patient's pseudonym, never the BSN).
//     Grant or refusal, the answer carries a [Receipt] ([NewReceipt], [VerifyReceipt]): the
//     custodian's signed promise that the decision is entry i of its access log.
//  4. The custodian's FHIR API introspects the token at its node ([Introspector], RFC 7662),
//     which caches verified tokens and re-checks their consent or grant whenever the consent
//     store's generation changes, and checks the DPoP proof of each request ([CheckDPoP], RFC
//     9449). [ParseIntrospectionRequest] reads the RFC 7662 request.
//
// Refusals wrap one error class ([ErrInvalidGrant], [ErrInvalidToken], [ErrInvalidDPoPProof],
// [ErrInvalidRequest], …) and a reason ([ErrReplay], [ErrExpired], …); [ToOAuth] turns them into
// the OAuth 2.0 error response. No error message contains a BSN.
//
// JOSE goes through package crypto (EdDSA and ES256 only, ECDH-ES+A256KW with A256GCM only),
// except DPoP proofs, whose key travels in their header and which this package parses and
// verifies itself with the same strictness and allow-list. Every JWT has an explicit typ
// (RFC 8725 §3.11), so none can be mistaken for another kind an organisation also signs.
//
// Keys are supplied as functions ([KeyResolver], [RecipientKey]) so that this package imports
// no other subsystem; node wires them to the DID registry and the hosted organisations' key
// stores. Imported by node only.
package authz
