package api

import (
	"context"
	"fmt"
	"sync"

	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// fakeBackend is a hand-written Backend. Every RPC method returns err when it is set; otherwise it
// returns a small canned response derived from the request.
type fakeBackend struct {
	err   error
	ready error
	jwks  map[string][]byte

	// When block is non-nil, GetNodeInfo signals entered and then waits until block is closed.
	block   chan struct{}
	entered chan struct{}

	mu    sync.Mutex
	calls int
}

func (f *fakeBackend) called() error {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	return f.err
}

func (f *fakeBackend) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeBackend) GetNodeInfo(ctx context.Context, _ *schakelv1.GetNodeInfoRequest) (*schakelv1.GetNodeInfoResponse, error) {
	if err := f.called(); err != nil {
		return nil, err
	}
	if f.block != nil {
		f.entered <- struct{}{}
		select {
		case <-f.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &schakelv1.GetNodeInfoResponse{Version: "test-version", PeerId: "12D3KooWtest", Organizations: []string{"did:schakel:a"}}, nil
}

func (f *fakeBackend) ListPeers(context.Context, *schakelv1.ListPeersRequest) (*schakelv1.ListPeersResponse, error) {
	if err := f.called(); err != nil {
		return nil, err
	}
	return &schakelv1.ListPeersResponse{}, nil
}

func (f *fakeBackend) CreateOrganization(_ context.Context, req *schakelv1.CreateOrganizationRequest) (*schakelv1.CreateOrganizationResponse, error) {
	if err := f.called(); err != nil {
		return nil, err
	}
	return &schakelv1.CreateOrganizationResponse{Organization: &schakelv1.Organization{Did: "did:schakel:new", Name: req.GetName()}}, nil
}

func (f *fakeBackend) ListOrganizations(context.Context, *schakelv1.ListOrganizationsRequest) (*schakelv1.ListOrganizationsResponse, error) {
	if err := f.called(); err != nil {
		return nil, err
	}
	return &schakelv1.ListOrganizationsResponse{}, nil
}

func (f *fakeBackend) GetOrganization(_ context.Context, req *schakelv1.GetOrganizationRequest) (*schakelv1.GetOrganizationResponse, error) {
	if err := f.called(); err != nil {
		return nil, err
	}
	return &schakelv1.GetOrganizationResponse{Organization: &schakelv1.Organization{Did: req.GetDid(), Name: "Huisartsenpraktijk Jansen"}}, nil
}

func (f *fakeBackend) RotateKey(_ context.Context, req *schakelv1.RotateKeyRequest) (*schakelv1.RotateKeyResponse, error) {
	if err := f.called(); err != nil {
		return nil, err
	}
	return &schakelv1.RotateKeyResponse{Organization: &schakelv1.Organization{Did: req.GetOrganization()}, NewKeyId: "key-2"}, nil
}

func (f *fakeBackend) ResolveDID(_ context.Context, req *schakelv1.ResolveDIDRequest) (*schakelv1.ResolveDIDResponse, error) {
	if err := f.called(); err != nil {
		return nil, err
	}
	return &schakelv1.ResolveDIDResponse{Did: req.GetDid()}, nil
}

func (f *fakeBackend) SubmitDocuments(_ context.Context, req *schakelv1.SubmitDocumentsRequest) (*schakelv1.SubmitDocumentsResponse, error) {
	if err := f.called(); err != nil {
		return nil, err
	}
	resp := &schakelv1.SubmitDocumentsResponse{}
	for i := range req.GetDocuments() {
		resp.Results = append(resp.Results, &schakelv1.DocumentResult{Id: fmt.Sprintf("doc-%d", i), Kind: "test"})
	}
	return resp, nil
}

func (f *fakeBackend) IssueCredential(_ context.Context, req *schakelv1.IssueCredentialRequest) (*schakelv1.IssueCredentialResponse, error) {
	if err := f.called(); err != nil {
		return nil, err
	}
	return &schakelv1.IssueCredentialResponse{Credential: &schakelv1.Credential{Id: "cred-1", Issuer: req.GetOrganization()}}, nil
}

func (f *fakeBackend) ListCredentials(context.Context, *schakelv1.ListCredentialsRequest) (*schakelv1.ListCredentialsResponse, error) {
	if err := f.called(); err != nil {
		return nil, err
	}
	return &schakelv1.ListCredentialsResponse{}, nil
}

func (f *fakeBackend) SearchDirectory(context.Context, *schakelv1.SearchDirectoryRequest) (*schakelv1.SearchDirectoryResponse, error) {
	if err := f.called(); err != nil {
		return nil, err
	}
	return &schakelv1.SearchDirectoryResponse{}, nil
}

func (f *fakeBackend) VerifyCredential(context.Context, *schakelv1.VerifyCredentialRequest) (*schakelv1.VerifyCredentialResponse, error) {
	if err := f.called(); err != nil {
		return nil, err
	}
	return &schakelv1.VerifyCredentialResponse{Valid: true}, nil
}

func (f *fakeBackend) RevokeCredential(context.Context, *schakelv1.RevokeCredentialRequest) (*schakelv1.RevokeCredentialResponse, error) {
	if err := f.called(); err != nil {
		return nil, err
	}
	return &schakelv1.RevokeCredentialResponse{StatusListId: "list-1", StatusIndex: 7}, nil
}

func (f *fakeBackend) JWKS(_ context.Context, did string) ([]byte, error) {
	set, ok := f.jwks[did]
	if !ok {
		return nil, fmt.Errorf("organisation %s is not hosted here: %w", did, ErrNotFound)
	}
	return set, nil
}

func (f *fakeBackend) Ready(context.Context) error { return f.ready }

// answer records a call and returns an empty response, for the RPCs the tests only route.
func answer[Resp any](f *fakeBackend) (*Resp, error) {
	if err := f.called(); err != nil {
		return nil, err
	}
	return new(Resp), nil
}

func (f *fakeBackend) GetLogInfo(context.Context, *schakelv1.GetLogInfoRequest) (*schakelv1.GetLogInfoResponse, error) {
	return answer[schakelv1.GetLogInfoResponse](f)
}

func (f *fakeBackend) ListEntries(context.Context, *schakelv1.ListEntriesRequest) (*schakelv1.ListEntriesResponse, error) {
	return answer[schakelv1.ListEntriesResponse](f)
}

func (f *fakeBackend) ListCheckpoints(context.Context, *schakelv1.ListCheckpointsRequest) (*schakelv1.ListCheckpointsResponse, error) {
	return answer[schakelv1.ListCheckpointsResponse](f)
}

func (f *fakeBackend) GetInclusionProof(context.Context, *schakelv1.GetInclusionProofRequest) (*schakelv1.GetInclusionProofResponse, error) {
	return answer[schakelv1.GetInclusionProofResponse](f)
}

func (f *fakeBackend) GetConsistencyProof(context.Context, *schakelv1.GetConsistencyProofRequest) (*schakelv1.GetConsistencyProofResponse, error) {
	return answer[schakelv1.GetConsistencyProofResponse](f)
}

func (f *fakeBackend) GetPatientView(context.Context, *schakelv1.GetPatientViewRequest) (*schakelv1.GetPatientViewResponse, error) {
	return answer[schakelv1.GetPatientViewResponse](f)
}

func (f *fakeBackend) RecordAccess(context.Context, *schakelv1.RecordAccessRequest) (*schakelv1.RecordAccessResponse, error) {
	return answer[schakelv1.RecordAccessResponse](f)
}

func (f *fakeBackend) RequestToken(context.Context, *schakelv1.RequestTokenRequest) (*schakelv1.RequestTokenResponse, error) {
	return answer[schakelv1.RequestTokenResponse](f)
}

func (f *fakeBackend) Introspect(_ context.Context, req *schakelv1.IntrospectRequest) (*schakelv1.IntrospectResponse, error) {
	if err := f.called(); err != nil {
		return nil, err
	}
	if req.GetToken() == "good" {
		return &schakelv1.IntrospectResponse{Json: `{"active":true,"jti":"t1"}`, Active: true}, nil
	}
	return &schakelv1.IntrospectResponse{Json: `{"active":false}`}, nil
}

func (f *fakeBackend) RecordConsent(context.Context, *schakelv1.RecordConsentRequest) (*schakelv1.RecordConsentResponse, error) {
	return answer[schakelv1.RecordConsentResponse](f)
}

func (f *fakeBackend) RequestConsent(context.Context, *schakelv1.RequestConsentRequest) (*schakelv1.RequestConsentResponse, error) {
	return answer[schakelv1.RequestConsentResponse](f)
}

func (f *fakeBackend) ProcessConsent(context.Context, *schakelv1.ProcessConsentRequest) (*schakelv1.ProcessConsentResponse, error) {
	return answer[schakelv1.ProcessConsentResponse](f)
}

func (f *fakeBackend) RevokeConsent(context.Context, *schakelv1.RevokeConsentRequest) (*schakelv1.RevokeConsentResponse, error) {
	return answer[schakelv1.RevokeConsentResponse](f)
}

func (f *fakeBackend) ListConsents(context.Context, *schakelv1.ListConsentsRequest) (*schakelv1.ListConsentsResponse, error) {
	return answer[schakelv1.ListConsentsResponse](f)
}

func (f *fakeBackend) ListNotices(context.Context, *schakelv1.ListNoticesRequest) (*schakelv1.ListNoticesResponse, error) {
	return answer[schakelv1.ListNoticesResponse](f)
}

func (f *fakeBackend) IssueReferralGrant(context.Context, *schakelv1.IssueReferralGrantRequest) (*schakelv1.IssueReferralGrantResponse, error) {
	return answer[schakelv1.IssueReferralGrantResponse](f)
}

func (f *fakeBackend) DeclareSuccession(context.Context, *schakelv1.DeclareSuccessionRequest) (*schakelv1.DeclareSuccessionResponse, error) {
	return answer[schakelv1.DeclareSuccessionResponse](f)
}
