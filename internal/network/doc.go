// Package network connects a schakel node to its peers: the libp2p host (TCP and QUIC, Noise),
// admission (a connection gater and stream-level checks that let in only peers bound to an
// organisation holding a valid OrganizationCredential), membership and discovery (memberlist),
// gossip of public documents (gossipsub), catch-up by range-based set reconciliation, the peer RPC
// service (gRPC over libp2p streams) and point-to-point delivery of private messages.
//
// Only public, signed trust material travels through gossip and reconciliation: key events, DID
// documents, organisation credentials, service registrations, status lists, and access-log
// checkpoints with their cosignatures. Private messages are end-to-end encrypted to one
// organisation and go only to the node hosting it. No medical data passes through this package.
//
// Verification of documents, admission decisions and what a delivered message means belong to the
// node, which implements Backend; this package decides what travels where and when. Only node
// imports this package.
package network
