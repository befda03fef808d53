package api

import (
	"context"

	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// Backend is what the API needs from the node; node satisfies it.
//
// There is one method per RPC, taking and returning the RPC's protobuf messages. Methods return
// plain errors: wrap one of the api sentinels (ErrNotFound, ErrInvalidArgument, ...) or a sentinel
// registered with RegisterError with %w to choose the status code the caller sees; any other error
// becomes an internal error whose detail is logged and not sent. Methods MUST be safe for concurrent
// use and MUST honour ctx, which is cancelled when the caller goes away.
type Backend interface {
	GetNodeInfo(ctx context.Context, req *schakelv1.GetNodeInfoRequest) (*schakelv1.GetNodeInfoResponse, error)
	ListPeers(ctx context.Context, req *schakelv1.ListPeersRequest) (*schakelv1.ListPeersResponse, error)

	CreateOrganization(ctx context.Context, req *schakelv1.CreateOrganizationRequest) (*schakelv1.CreateOrganizationResponse, error)
	ListOrganizations(ctx context.Context, req *schakelv1.ListOrganizationsRequest) (*schakelv1.ListOrganizationsResponse, error)
	GetOrganization(ctx context.Context, req *schakelv1.GetOrganizationRequest) (*schakelv1.GetOrganizationResponse, error)
	RotateKey(ctx context.Context, req *schakelv1.RotateKeyRequest) (*schakelv1.RotateKeyResponse, error)
	ResolveDID(ctx context.Context, req *schakelv1.ResolveDIDRequest) (*schakelv1.ResolveDIDResponse, error)

	SubmitDocuments(ctx context.Context, req *schakelv1.SubmitDocumentsRequest) (*schakelv1.SubmitDocumentsResponse, error)

	IssueCredential(ctx context.Context, req *schakelv1.IssueCredentialRequest) (*schakelv1.IssueCredentialResponse, error)
	ListCredentials(ctx context.Context, req *schakelv1.ListCredentialsRequest) (*schakelv1.ListCredentialsResponse, error)
	SearchDirectory(ctx context.Context, req *schakelv1.SearchDirectoryRequest) (*schakelv1.SearchDirectoryResponse, error)
	VerifyCredential(ctx context.Context, req *schakelv1.VerifyCredentialRequest) (*schakelv1.VerifyCredentialResponse, error)
	RevokeCredential(ctx context.Context, req *schakelv1.RevokeCredentialRequest) (*schakelv1.RevokeCredentialResponse, error)

	GetLogInfo(ctx context.Context, req *schakelv1.GetLogInfoRequest) (*schakelv1.GetLogInfoResponse, error)
	ListEntries(ctx context.Context, req *schakelv1.ListEntriesRequest) (*schakelv1.ListEntriesResponse, error)
	ListCheckpoints(ctx context.Context, req *schakelv1.ListCheckpointsRequest) (*schakelv1.ListCheckpointsResponse, error)
	GetInclusionProof(ctx context.Context, req *schakelv1.GetInclusionProofRequest) (*schakelv1.GetInclusionProofResponse, error)
	GetConsistencyProof(ctx context.Context, req *schakelv1.GetConsistencyProofRequest) (*schakelv1.GetConsistencyProofResponse, error)
	GetPatientView(ctx context.Context, req *schakelv1.GetPatientViewRequest) (*schakelv1.GetPatientViewResponse, error)
	RecordAccess(ctx context.Context, req *schakelv1.RecordAccessRequest) (*schakelv1.RecordAccessResponse, error)

	RequestToken(ctx context.Context, req *schakelv1.RequestTokenRequest) (*schakelv1.RequestTokenResponse, error)
	Introspect(ctx context.Context, req *schakelv1.IntrospectRequest) (*schakelv1.IntrospectResponse, error)
	RecordConsent(ctx context.Context, req *schakelv1.RecordConsentRequest) (*schakelv1.RecordConsentResponse, error)
	RequestConsent(ctx context.Context, req *schakelv1.RequestConsentRequest) (*schakelv1.RequestConsentResponse, error)
	ProcessConsent(ctx context.Context, req *schakelv1.ProcessConsentRequest) (*schakelv1.ProcessConsentResponse, error)
	RevokeConsent(ctx context.Context, req *schakelv1.RevokeConsentRequest) (*schakelv1.RevokeConsentResponse, error)
	ListConsents(ctx context.Context, req *schakelv1.ListConsentsRequest) (*schakelv1.ListConsentsResponse, error)
	ListNotices(ctx context.Context, req *schakelv1.ListNoticesRequest) (*schakelv1.ListNoticesResponse, error)
	IssueReferralGrant(ctx context.Context, req *schakelv1.IssueReferralGrantRequest) (*schakelv1.IssueReferralGrantResponse, error)
	DeclareSuccession(ctx context.Context, req *schakelv1.DeclareSuccessionRequest) (*schakelv1.DeclareSuccessionResponse, error)

	// JWKS returns the JSON Web Key Set (RFC 7517 §5) of a hosted organisation's current public keys.
	JWKS(ctx context.Context, did string) ([]byte, error)
	// Ready reports whether the node can serve (storage open, subsystems started). Its error is shown
	// on /readyz, which needs no token, so it MUST NOT contain secrets.
	Ready(ctx context.Context) error
}
