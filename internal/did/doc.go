// Package did owns organisation identity: did:schakel identifiers, their signed and hash-chained key
// events (genesis, rotate, deactivate), the key state materialised from them, and DID documents that
// bind an organisation's keys to the libp2p peer ids of the node hosting it.
//
// A did:schakel identifier is self-certifying: it is "did:schakel:" followed by the base58 encoding of
// the SHA-256 hash of the compact JWS of its genesis event. Every later event is signed by the signing
// key current before it and names the hash of the event before it, so the whole history can be checked
// by anyone holding it, and a signature made before a rotation still verifies after it against the key
// that was valid at the time it was made.
//
// Entry points: NewGenesis, NewRotate, NewDeactivate and NewDocument build signed documents; Apply
// verifies one event against a State; Registry keeps events, states and documents in the store.
// Imported by node and by packages that resolve keys through a small interface of their own.
package did
