// Package vc owns verifiable credentials: W3C VC Data Model 2.0 credentials secured as JWTs
// ("vc+jwt", VC-JOSE-COSE §3.1), their verification (signature by the issuer's key valid at
// issuance, validity period, issuer trusted for the type, not revoked), revocation through W3C
// Bitstring Status List credentials, their storage, and the organisation directory built from them.
//
// Credential types: OrganizationCredential (issued by a trusted register), ServiceRegistrationCredential
// (self-issued), BitstringStatusListCredential (revocation), CustodianSuccessionCredential (issued by
// the predecessor organisation) and ReferralGrantCredential (issued by a custodian to one grantee).
// All but the referral grant are public; a referral grant names a patient and travels point to
// point only, so the Store refuses it (Kind.Public, ErrNotPublic). Entry points: Issue, Parse, Verifier,
// StatusListState (issuer side of revocation), Store (credentials, status lists and directory).
// Key resolution is a small interface (KeyResolver) that node satisfies with the DID registry.
// Imported by node and by higher subsystems.
package vc
