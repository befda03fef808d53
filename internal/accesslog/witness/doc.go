// Package witness owns a node's witnessing of other organisations' access logs (DESIGN §4,
// "Access log"; invariant 5): for each new checkpoint of a log it follows, a [Witness] checks an
// RFC 6962 consistency proof from the previous checkpoint it cosigned, cosigns the new one with
// a C2SP tlog-cosignature/v1 Ed25519 cosignature, and, when the log contradicts itself, keeps
// both signed checkpoints as evidence ([Fork]) and never cosigns that log again, across
// restarts.
//
// Its entry points are [NewCosigner], which makes the cosignatures (verify.NewCosignatureVerifier
// checks them), and [New], whose [Witness.Observe] takes a checkpoint and a way to fetch the
// proof. [Witness.AddCosignatures] records other witnesses' cosignatures on the checkpoints this
// one cosigned, so that [Witness.Cosigned] and [Witness.Latest] return a checkpoint with every
// cosignature known, for gossip and for exports that `schakel log verify --witness` checks.
// [Witness.Forks] and [Witness.Followed] report its state.
//
// It owns the store namespace "witness": per followed log, the cosigned checkpoints (the latest
// and up to Config.History before it), their count, and the fork evidence, if any. A Witness
// starts no goroutines and needs no Close; it fetches nothing itself: the caller passes the
// checkpoint, the log's key and the proof function, so the network stays out of this package.
//
// Imported by internal/network (which carries checkpoints, proofs and cosignatures between
// peers) and by node (which builds the Witness with the organisation's cosigning key). It MUST
// NOT be imported by internal/accesslog/verify, which stands alone without storage; the
// cosignature format lives there, so that an auditor can check cosignatures without this
// package.
package witness
