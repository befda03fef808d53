// Package consent owns the patient's choices at the custodian and the decision whether another
// organisation may access the patient's data (DESIGN §4 "Access flow", step 3, and §5).
//
// # Records
//
// A [Consent] is kept by the custodian (the organisation that holds the data), keyed by the
// custodian's keyed pseudonym of the patient's BSN; this package never sees or stores a BSN.
// A consent names its grantee (one organisation, an organisation type, or any care provider),
// data categories, purposes, period, grantors, channel and assurance. [Store] keeps them:
//
//   - [Store.Record]: a consent given at the desk or on a form, active at once. A new consent of
//     the same scope (same patient pseudonym, the custodian or a predecessor, identical grantee,
//     identical sets of data categories and purposes) supersedes the active one in the same
//     transaction.
//   - [Store.Request], [Store.Process]: an online request relayed by a patient portal is pending,
//     not in force, until the custodian accepts or rejects it.
//   - [Store.Revoke]: ends a consent at once.
//   - [Store.ForPatient]: every record of a patient at a custodian and its predecessors, under
//     every pseudonym version: one prefix seek per pair, the hot path of every decision.
//   - [Store.AddGrant], [Store.RevokeGrant]: referral grants ([Grant]) for planned care, at most
//     30 days.
//   - [Store.AddSuccession], [Store.Custodians], [Store.Predecessors]: a renamed or merged
//     organisation keeps its consents, as custodian and as grantee.
//
// [Consent.Validate] enforces the WGBO grantor rules by age: under 12 a parent, guardian or legal
// representative; 12 to 15 the patient and one of those; from 16 the patient or a legal
// representative. No recorded choice means no.
//
// Every committed change is reported to [Config.OnChange] (the node logs a "consent-change"
// entry from it) and bumps [Store.Generation], which a cache of decisions or token
// introspections compares to stay correct after a revocation.
//
// # Decision
//
// [Policy.Decide] is a pure function of a [Request], the patient's records and an optional
// referral grant, under a [Policy] parsed from YAML ([ParsePolicy], [LoadPolicy];
// [DefaultPolicy] is the documented Dutch default in default.yaml). Its [Result] carries a
// machine-readable [Reason] and the consent or grant that decided, for the access log. The
// rules and their order are in the Decide documentation.
//
// # Storage
//
// Records, grants and successions live in the "consent" namespace of the node's store (key
// layout in keys.go), each value a format-version byte followed by JSON; a value of another
// version is refused with ErrCorrupt. Nothing here leaves the custodian's node.
//
// Imported by node (and the token endpoint it wires); it imports only crypto and internal/store.
package consent
