package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/api"
	"github.com/schakel-health/schakel/internal/did"
	"github.com/schakel-health/schakel/internal/vc"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// The methods below satisfy api.Backend: they translate between the wire messages and the
// subsystems. Errors are the subsystems' own; the API maps them to status codes.

// maxSubmit bounds the documents in one SubmitDocuments call.
const maxSubmit = 64

// GetNodeInfo describes the node.
func (n *Node) GetNodeInfo(ctx context.Context, _ *schakelv1.GetNodeInfoRequest) (*schakelv1.GetNodeInfoResponse, error) {
	hs, err := n.orgs.list(ctx)
	if err != nil {
		return nil, err
	}
	resp := &schakelv1.GetNodeInfoResponse{Version: Version, PeerId: n.peerID.String(), StartedUnix: n.started.Unix(), WitnessKey: n.witnessKey}
	for _, h := range hs {
		resp.Organizations = append(resp.Organizations, h.DID)
	}
	forks, err := n.witness.Forks(ctx)
	if err != nil {
		return nil, err
	}
	for _, f := range forks {
		resp.ForkedLogs = append(resp.ForkedLogs, f.Origin)
	}
	return resp, nil
}

// CreateOrganization creates a hosted organisation.
func (n *Node) CreateOrganization(ctx context.Context, req *schakelv1.CreateOrganizationRequest) (*schakelv1.CreateOrganizationResponse, error) {
	h, err := n.orgs.create(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	if err := n.openLog(ctx, h); err != nil {
		return nil, err
	}
	o, err := n.organization(ctx, h)
	return &schakelv1.CreateOrganizationResponse{Organization: o}, err
}

// ListOrganizations lists the hosted organisations.
func (n *Node) ListOrganizations(ctx context.Context, _ *schakelv1.ListOrganizationsRequest) (*schakelv1.ListOrganizationsResponse, error) {
	hs, err := n.orgs.list(ctx)
	if err != nil {
		return nil, err
	}
	resp := &schakelv1.ListOrganizationsResponse{}
	for _, h := range hs {
		o, err := n.organization(ctx, h)
		if err != nil {
			return nil, err
		}
		resp.Organizations = append(resp.Organizations, o)
	}
	return resp, nil
}

// GetOrganization returns one hosted organisation.
func (n *Node) GetOrganization(ctx context.Context, req *schakelv1.GetOrganizationRequest) (*schakelv1.GetOrganizationResponse, error) {
	h, err := n.orgs.get(ctx, req.GetDid())
	if err != nil {
		return nil, err
	}
	o, err := n.organization(ctx, h)
	return &schakelv1.GetOrganizationResponse{Organization: o}, err
}

// RotateKey rotates a hosted organisation's keys.
func (n *Node) RotateKey(ctx context.Context, req *schakelv1.RotateKeyRequest) (*schakelv1.RotateKeyResponse, error) {
	h, err := n.orgs.rotate(ctx, req.GetOrganization())
	if err != nil {
		return nil, err
	}
	o, err := n.organization(ctx, h)
	if err != nil {
		return nil, err
	}
	return &schakelv1.RotateKeyResponse{Organization: o, NewKeyId: o.SigningKeyId}, nil
}

func (n *Node) organization(ctx context.Context, h *hosted) (*schakelv1.Organization, error) {
	st, err := n.dids.Resolve(ctx, h.DID)
	if err != nil {
		return nil, err
	}
	_, doc, err := n.dids.Document(ctx, h.DID)
	if err != nil {
		return nil, err
	}
	cur := st.Current()
	return &schakelv1.Organization{
		Did:            h.DID,
		Name:           h.Name,
		DocumentJws:    string(doc),
		CreatedUnix:    h.Created,
		Deactivated:    st.Deactivated,
		SigningKeyId:   cur.SigningKey.KID(),
		AgreementKeyId: cur.AgreementKey.KID(),
	}, nil
}

// ResolveDID resolves any DID the node knows, hosted or not.
func (n *Node) ResolveDID(ctx context.Context, req *schakelv1.ResolveDIDRequest) (*schakelv1.ResolveDIDResponse, error) {
	st, err := n.dids.Resolve(ctx, req.GetDid())
	if err != nil {
		return nil, err
	}
	at := n.cfg.Now()
	if req.GetAtUnix() != 0 {
		at = time.Unix(req.GetAtUnix(), 0)
	}
	resp := &schakelv1.ResolveDIDResponse{Did: st.DID, Deactivated: st.Deactivated}
	if key, err := st.KeyAt(at); err == nil {
		b, err := json.Marshal(key)
		if err != nil {
			return nil, err
		}
		resp.SigningKeyJwk = string(b)
	} else if !st.Deactivated {
		return nil, err
	}
	events, err := n.dids.Events(ctx, st.DID)
	if err != nil {
		return nil, err
	}
	for _, e := range events {
		resp.KeyEvents = append(resp.KeyEvents, string(e))
	}
	if _, doc, err := n.dids.Document(ctx, st.DID); err == nil {
		resp.DocumentJws = string(doc)
	}
	return resp, nil
}

// SubmitDocuments verifies and stores signed public documents in order, stopping at the first that
// fails.
func (n *Node) SubmitDocuments(ctx context.Context, req *schakelv1.SubmitDocumentsRequest) (*schakelv1.SubmitDocumentsResponse, error) {
	docs := req.GetDocuments()
	if len(docs) == 0 || len(docs) > maxSubmit {
		return nil, fmt.Errorf("%w: submit 1 to %d documents, not %d", api.ErrInvalidArgument, maxSubmit, len(docs))
	}
	resp := &schakelv1.SubmitDocumentsResponse{}
	for i, d := range docs {
		r, err := n.submit(ctx, []byte(d))
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		resp.Results = append(resp.Results, r)
	}
	return resp, nil
}

func (n *Node) submit(ctx context.Context, doc []byte) (*schakelv1.DocumentResult, error) {
	h, err := crypto.ParseHeader(doc)
	if err != nil {
		return nil, err
	}
	switch h.Type {
	case did.EventJWSType:
		st, added, err := n.dids.AddEvent(ctx, doc)
		if err != nil {
			return nil, err
		}
		return &schakelv1.DocumentResult{Id: fmt.Sprintf("%s#event-%d", st.DID, st.Seq), Kind: "key-event", Duplicate: !added}, nil
	case did.DocumentJWSType:
		d, stored, err := n.dids.PutDocument(ctx, doc)
		if err != nil {
			return nil, err
		}
		return &schakelv1.DocumentResult{Id: d.ID, Kind: "did-document", Duplicate: !stored}, nil
	case vc.JWSType:
		c, added, err := n.creds.Add(ctx, doc)
		if err != nil {
			return nil, err
		}
		if added {
			n.credentialAdded(ctx, c)
		}
		return &schakelv1.DocumentResult{Id: c.ID, Kind: string(c.Kind), Duplicate: !added}, nil
	default:
		return nil, fmt.Errorf("%w: unknown document type %q", api.ErrInvalidArgument, clip(h.Type))
	}
}

// IssueCredential issues a credential as a hosted organisation.
func (n *Node) IssueCredential(ctx context.Context, req *schakelv1.IssueCredentialRequest) (*schakelv1.IssueCredentialResponse, error) {
	sr := req.GetServiceRegistration()
	if sr == nil {
		return nil, fmt.Errorf("%w: no credential subject given (service_registration)", api.ErrInvalidArgument)
	}
	days := req.GetValidDays()
	if days < 0 || days > 5*365 {
		return nil, fmt.Errorf("%w: valid_days %d outside 0–%d", api.ErrInvalidArgument, days, 5*365)
	}
	svc := &vc.Service{ID: req.GetOrganization(), DataCategories: sr.GetDataCategories(), Purposes: sr.GetPurposes()}
	for _, e := range sr.GetEndpoints() {
		svc.Endpoints = append(svc.Endpoints, vc.Endpoint{Type: e.GetType(), URL: e.GetUrl()})
	}
	c, err := n.orgs.issue(ctx, req.GetOrganization(), vc.Request{Kind: vc.ServiceRegistrationCredential, Service: svc}, time.Duration(days)*24*time.Hour)
	if err != nil {
		return nil, err
	}
	return &schakelv1.IssueCredentialResponse{Credential: n.credential(ctx, c)}, nil
}

// ListCredentials lists stored credentials, with their current status.
func (n *Node) ListCredentials(ctx context.Context, req *schakelv1.ListCredentialsRequest) (*schakelv1.ListCredentialsResponse, error) {
	cs, err := n.creds.List(ctx, vc.Filter{Party: req.GetOrganization(), Kind: vc.Kind(req.GetType())})
	if err != nil {
		return nil, err
	}
	resp := &schakelv1.ListCredentialsResponse{}
	for _, c := range cs {
		resp.Credentials = append(resp.Credentials, n.credential(ctx, c))
	}
	return resp, nil
}

// SearchDirectory answers a directory query.
func (n *Node) SearchDirectory(ctx context.Context, req *schakelv1.SearchDirectoryRequest) (*schakelv1.SearchDirectoryResponse, error) {
	es, err := n.creds.Search(ctx, vc.Query{Name: req.GetName(), URA: req.GetUra(), Type: req.GetType(), City: req.GetCity(), Limit: int(req.GetLimit())})
	if err != nil {
		return nil, err
	}
	resp := &schakelv1.SearchDirectoryResponse{}
	for _, e := range es {
		resp.Entries = append(resp.Entries, &schakelv1.DirectoryEntry{
			Did:                      e.DID,
			Organization:             orgInfo(e.Organization),
			Service:                  serviceInfo(e.Service),
			OrganizationCredentialId: e.OrgCredentialID,
		})
	}
	return resp, nil
}

// VerifyCredential verifies a credential given as a JWT or by id. A credential that does not verify
// is an answer (valid false, with the reason), not an error.
func (n *Node) VerifyCredential(ctx context.Context, req *schakelv1.VerifyCredentialRequest) (*schakelv1.VerifyCredentialResponse, error) {
	var compact []byte
	switch {
	case req.GetJwt() != "":
		compact = []byte(req.GetJwt())
	case req.GetId() != "":
		c, err := n.creds.Get(ctx, req.GetId())
		if err != nil {
			return nil, err
		}
		compact = c.JWT
	default:
		return nil, fmt.Errorf("%w: give a jwt or an id", api.ErrInvalidArgument)
	}
	c, err := n.creds.Verifier().Verify(ctx, compact)
	resp := &schakelv1.VerifyCredentialResponse{Valid: err == nil}
	if err != nil {
		resp.Reason = err.Error()
	}
	if c != nil {
		resp.Credential = describe(c, err)
	}
	return resp, nil
}

// RevokeCredential revokes a credential a hosted organisation issued.
func (n *Node) RevokeCredential(ctx context.Context, req *schakelv1.RevokeCredentialRequest) (*schakelv1.RevokeCredentialResponse, error) {
	e, err := n.orgs.revoke(ctx, req.GetOrganization(), req.GetCredentialId())
	if err != nil {
		return nil, err
	}
	return &schakelv1.RevokeCredentialResponse{StatusListId: e.StatusListCredential, StatusIndex: int64(e.Index())}, nil
}

// JWKS returns a hosted organisation's current public keys as a JWK Set (RFC 7517 §5).
func (n *Node) JWKS(ctx context.Context, id string) ([]byte, error) {
	if _, err := n.orgs.get(ctx, id); err != nil {
		return nil, err
	}
	st, err := n.dids.Resolve(ctx, id)
	if err != nil {
		return nil, err
	}
	cur := st.Current()
	return json.Marshal(map[string]any{"keys": []*crypto.PublicKey{cur.SigningKey, cur.AgreementKey}})
}

// credential describes a stored credential with its status now.
func (n *Node) credential(ctx context.Context, c *vc.Credential) *schakelv1.Credential {
	return describe(c, n.creds.Verifier().Check(ctx, c))
}

func describe(c *vc.Credential, verr error) *schakelv1.Credential {
	out := &schakelv1.Credential{
		Id:            c.ID,
		Types:         c.Types,
		Issuer:        c.Issuer,
		Subject:       c.Subject,
		ValidFromUnix: c.ValidFrom.Unix(),
		Jwt:           string(c.JWT),
		Status:        status(verr),
		Organization:  orgInfo(c.Organization),
		Service:       serviceInfo(c.Service),
	}
	if !c.ValidUntil.IsZero() {
		out.ValidUntilUnix = c.ValidUntil.Unix()
	}
	if verr != nil {
		out.StatusReason = verr.Error()
	}
	return out
}

func status(err error) schakelv1.CredentialStatus {
	switch {
	case err == nil:
		return schakelv1.CredentialStatus_CREDENTIAL_STATUS_VALID
	case errors.Is(err, vc.ErrRevoked):
		return schakelv1.CredentialStatus_CREDENTIAL_STATUS_REVOKED
	case errors.Is(err, vc.ErrExpired):
		return schakelv1.CredentialStatus_CREDENTIAL_STATUS_EXPIRED
	case errors.Is(err, vc.ErrUntrusted):
		return schakelv1.CredentialStatus_CREDENTIAL_STATUS_UNTRUSTED
	default:
		return schakelv1.CredentialStatus_CREDENTIAL_STATUS_INVALID
	}
}

func orgInfo(o *vc.Organization) *schakelv1.OrganizationInfo {
	if o == nil {
		return nil
	}
	return &schakelv1.OrganizationInfo{Name: o.Name, Ura: o.URA, Type: o.Type, City: o.City}
}

func serviceInfo(s *vc.Service) *schakelv1.ServiceRegistration {
	if s == nil {
		return nil
	}
	out := &schakelv1.ServiceRegistration{DataCategories: s.DataCategories, Purposes: s.Purposes}
	for _, e := range s.Endpoints {
		out.Endpoints = append(out.Endpoints, &schakelv1.Endpoint{Type: e.Type, Url: e.URL})
	}
	return out
}
