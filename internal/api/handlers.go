package api

import (
	"context"
	"log/slog"

	"connectrpc.com/connect"

	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
	"github.com/schakel-health/schakel/proto/schakel/v1/schakelv1connect"
)

// rpc implements the Connect handler interfaces of every schakel.v1 service by calling the
// Backend. It holds no state of its own, so every handler is a direct translation.
type rpc struct {
	b   Backend
	log *slog.Logger
}

var (
	_ schakelv1connect.NodeServiceHandler         = (*rpc)(nil)
	_ schakelv1connect.OrganizationServiceHandler = (*rpc)(nil)
	_ schakelv1connect.DocumentServiceHandler     = (*rpc)(nil)
	_ schakelv1connect.CredentialServiceHandler   = (*rpc)(nil)
	_ schakelv1connect.LogServiceHandler          = (*rpc)(nil)
	_ schakelv1connect.AccessServiceHandler       = (*rpc)(nil)
)

// handle runs one unary RPC on the backend and maps its error to a status in one place.
func handle[Req, Resp any](ctx context.Context, h *rpc, req *connect.Request[Req], fn func(context.Context, *Req) (*Resp, error)) (*connect.Response[Resp], error) {
	resp, err := fn(ctx, req.Msg)
	if err != nil {
		return nil, toConnectError(ctx, h.log, err)
	}
	return connect.NewResponse(resp), nil
}

func (h *rpc) GetNodeInfo(ctx context.Context, req *connect.Request[schakelv1.GetNodeInfoRequest]) (*connect.Response[schakelv1.GetNodeInfoResponse], error) {
	return handle(ctx, h, req, h.b.GetNodeInfo)
}

func (h *rpc) ListPeers(ctx context.Context, req *connect.Request[schakelv1.ListPeersRequest]) (*connect.Response[schakelv1.ListPeersResponse], error) {
	return handle(ctx, h, req, h.b.ListPeers)
}

func (h *rpc) CreateOrganization(ctx context.Context, req *connect.Request[schakelv1.CreateOrganizationRequest]) (*connect.Response[schakelv1.CreateOrganizationResponse], error) {
	return handle(ctx, h, req, h.b.CreateOrganization)
}

func (h *rpc) ListOrganizations(ctx context.Context, req *connect.Request[schakelv1.ListOrganizationsRequest]) (*connect.Response[schakelv1.ListOrganizationsResponse], error) {
	return handle(ctx, h, req, h.b.ListOrganizations)
}

func (h *rpc) GetOrganization(ctx context.Context, req *connect.Request[schakelv1.GetOrganizationRequest]) (*connect.Response[schakelv1.GetOrganizationResponse], error) {
	return handle(ctx, h, req, h.b.GetOrganization)
}

func (h *rpc) RotateKey(ctx context.Context, req *connect.Request[schakelv1.RotateKeyRequest]) (*connect.Response[schakelv1.RotateKeyResponse], error) {
	return handle(ctx, h, req, h.b.RotateKey)
}

func (h *rpc) ResolveDID(ctx context.Context, req *connect.Request[schakelv1.ResolveDIDRequest]) (*connect.Response[schakelv1.ResolveDIDResponse], error) {
	return handle(ctx, h, req, h.b.ResolveDID)
}

func (h *rpc) SubmitDocuments(ctx context.Context, req *connect.Request[schakelv1.SubmitDocumentsRequest]) (*connect.Response[schakelv1.SubmitDocumentsResponse], error) {
	return handle(ctx, h, req, h.b.SubmitDocuments)
}

func (h *rpc) IssueCredential(ctx context.Context, req *connect.Request[schakelv1.IssueCredentialRequest]) (*connect.Response[schakelv1.IssueCredentialResponse], error) {
	return handle(ctx, h, req, h.b.IssueCredential)
}

func (h *rpc) ListCredentials(ctx context.Context, req *connect.Request[schakelv1.ListCredentialsRequest]) (*connect.Response[schakelv1.ListCredentialsResponse], error) {
	return handle(ctx, h, req, h.b.ListCredentials)
}

func (h *rpc) SearchDirectory(ctx context.Context, req *connect.Request[schakelv1.SearchDirectoryRequest]) (*connect.Response[schakelv1.SearchDirectoryResponse], error) {
	return handle(ctx, h, req, h.b.SearchDirectory)
}

func (h *rpc) VerifyCredential(ctx context.Context, req *connect.Request[schakelv1.VerifyCredentialRequest]) (*connect.Response[schakelv1.VerifyCredentialResponse], error) {
	return handle(ctx, h, req, h.b.VerifyCredential)
}

func (h *rpc) RevokeCredential(ctx context.Context, req *connect.Request[schakelv1.RevokeCredentialRequest]) (*connect.Response[schakelv1.RevokeCredentialResponse], error) {
	return handle(ctx, h, req, h.b.RevokeCredential)
}

func (h *rpc) GetLogInfo(ctx context.Context, req *connect.Request[schakelv1.GetLogInfoRequest]) (*connect.Response[schakelv1.GetLogInfoResponse], error) {
	return handle(ctx, h, req, h.b.GetLogInfo)
}

func (h *rpc) ListEntries(ctx context.Context, req *connect.Request[schakelv1.ListEntriesRequest]) (*connect.Response[schakelv1.ListEntriesResponse], error) {
	return handle(ctx, h, req, h.b.ListEntries)
}

func (h *rpc) ListCheckpoints(ctx context.Context, req *connect.Request[schakelv1.ListCheckpointsRequest]) (*connect.Response[schakelv1.ListCheckpointsResponse], error) {
	return handle(ctx, h, req, h.b.ListCheckpoints)
}

func (h *rpc) GetInclusionProof(ctx context.Context, req *connect.Request[schakelv1.GetInclusionProofRequest]) (*connect.Response[schakelv1.GetInclusionProofResponse], error) {
	return handle(ctx, h, req, h.b.GetInclusionProof)
}

func (h *rpc) GetConsistencyProof(ctx context.Context, req *connect.Request[schakelv1.GetConsistencyProofRequest]) (*connect.Response[schakelv1.GetConsistencyProofResponse], error) {
	return handle(ctx, h, req, h.b.GetConsistencyProof)
}

func (h *rpc) GetPatientView(ctx context.Context, req *connect.Request[schakelv1.GetPatientViewRequest]) (*connect.Response[schakelv1.GetPatientViewResponse], error) {
	return handle(ctx, h, req, h.b.GetPatientView)
}

func (h *rpc) RecordAccess(ctx context.Context, req *connect.Request[schakelv1.RecordAccessRequest]) (*connect.Response[schakelv1.RecordAccessResponse], error) {
	return handle(ctx, h, req, h.b.RecordAccess)
}

func (h *rpc) RequestToken(ctx context.Context, req *connect.Request[schakelv1.RequestTokenRequest]) (*connect.Response[schakelv1.RequestTokenResponse], error) {
	return handle(ctx, h, req, h.b.RequestToken)
}

func (h *rpc) Introspect(ctx context.Context, req *connect.Request[schakelv1.IntrospectRequest]) (*connect.Response[schakelv1.IntrospectResponse], error) {
	return handle(ctx, h, req, h.b.Introspect)
}

func (h *rpc) RecordConsent(ctx context.Context, req *connect.Request[schakelv1.RecordConsentRequest]) (*connect.Response[schakelv1.RecordConsentResponse], error) {
	return handle(ctx, h, req, h.b.RecordConsent)
}

func (h *rpc) RequestConsent(ctx context.Context, req *connect.Request[schakelv1.RequestConsentRequest]) (*connect.Response[schakelv1.RequestConsentResponse], error) {
	return handle(ctx, h, req, h.b.RequestConsent)
}

func (h *rpc) ProcessConsent(ctx context.Context, req *connect.Request[schakelv1.ProcessConsentRequest]) (*connect.Response[schakelv1.ProcessConsentResponse], error) {
	return handle(ctx, h, req, h.b.ProcessConsent)
}

func (h *rpc) RevokeConsent(ctx context.Context, req *connect.Request[schakelv1.RevokeConsentRequest]) (*connect.Response[schakelv1.RevokeConsentResponse], error) {
	return handle(ctx, h, req, h.b.RevokeConsent)
}

func (h *rpc) ListConsents(ctx context.Context, req *connect.Request[schakelv1.ListConsentsRequest]) (*connect.Response[schakelv1.ListConsentsResponse], error) {
	return handle(ctx, h, req, h.b.ListConsents)
}

func (h *rpc) ListNotices(ctx context.Context, req *connect.Request[schakelv1.ListNoticesRequest]) (*connect.Response[schakelv1.ListNoticesResponse], error) {
	return handle(ctx, h, req, h.b.ListNotices)
}

func (h *rpc) IssueReferralGrant(ctx context.Context, req *connect.Request[schakelv1.IssueReferralGrantRequest]) (*connect.Response[schakelv1.IssueReferralGrantResponse], error) {
	return handle(ctx, h, req, h.b.IssueReferralGrant)
}

func (h *rpc) DeclareSuccession(ctx context.Context, req *connect.Request[schakelv1.DeclareSuccessionRequest]) (*connect.Response[schakelv1.DeclareSuccessionResponse], error) {
	return handle(ctx, h, req, h.b.DeclareSuccession)
}
