package node

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/accesslog/verify"
	"github.com/schakel-health/schakel/internal/api"
	"github.com/schakel-health/schakel/internal/authz"
	"github.com/schakel-health/schakel/internal/consent"
	"github.com/schakel-health/schakel/internal/did"
	"github.com/schakel-health/schakel/internal/network"
	"github.com/schakel-health/schakel/internal/store"
	"github.com/schakel-health/schakel/internal/vc"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// The access flow (DESIGN §4): the requesting node signs and encrypts an assertion to the
// custodian (RequestToken); the custodian's node opens it, decides from its own records
// (decideToken), logs the decision durably, and answers with a token or a refusal and a signed
// receipt; the requesting node logs the receipt in its own organisation's log.

// tokenLifetime is the lifetime of the access tokens this node issues (at most 15 minutes).
const tokenLifetime = 5 * time.Minute

// nsReceipt keeps the custodians' signed receipts by requesting organisation and request id, so
// an auditor can reconcile the requester's log with the custodian's.
var nsReceipt = store.MustNamespace("receipt")

// ErrRequestFailed wraps a token request that could not reach a decision at the custodian.
var ErrRequestFailed = errors.New("token request failed")

// RequestToken implements the AccessService RPC on the requesting organisation's node.
func (n *Node) RequestToken(ctx context.Context, req *schakelv1.RequestTokenRequest) (*schakelv1.RequestTokenResponse, error) {
	org, custodian := req.GetOrganization(), req.GetCustodian()
	e := req.GetEmployee()
	switch {
	case !strings.HasPrefix(custodian, "did:"):
		return nil, fmt.Errorf("%w: custodian must be a DID", api.ErrInvalidArgument)
	case crypto.ValidBSN(req.GetBsn()) != nil:
		return nil, fmt.Errorf("%w: the BSN fails the 11-proof", api.ErrInvalidArgument)
	case req.GetDataCategory() == "" || req.GetPurpose() == "":
		return nil, fmt.Errorf("%w: data category and purpose are required", api.ErrInvalidArgument)
	case e.GetUzi() == "" || e.GetRole() == "" || e.GetName() == "":
		return nil, fmt.Errorf("%w: the employee's UZI number, role and name are required", api.ErrInvalidArgument)
	case req.GetDpopJkt() == "":
		return nil, fmt.Errorf("%w: dpop_jkt is required: tokens are bound to the EHR's DPoP key", api.ErrInvalidArgument)
	}
	claims, jwe, err := n.newAssertion(ctx, req)
	if err != nil {
		return nil, err
	}
	l, err := n.logOf(org)
	if err != nil {
		return nil, err
	}
	answer, err := n.net.RequestToken(ctx, custodian, &schakelv1.PeerServiceRequestTokenRequest{Assertion: jwe})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	rc, err := authz.VerifyReceipt(ctx, answer.GetReceipt(), authz.RegistryResolver(n.dids))
	if err != nil {
		return nil, fmt.Errorf("%w: the custodian's receipt does not verify: %w", ErrRequestFailed, err)
	}
	if rc.Issuer != custodian || rc.Subject != org || rc.RequestID != claims.ID {
		return nil, fmt.Errorf("%w: the custodian's receipt is for another request", ErrRequestFailed)
	}
	if (rc.Outcome == verify.OutcomeGranted) != (answer.GetAccessToken() != "") {
		return nil, fmt.Errorf("%w: the receipt says %s but the answer disagrees", ErrRequestFailed, rc.Outcome)
	}
	// The receipt goes into the requesting organisation's own log, durable before the answer.
	p, err := l.pseud.Pseudonym(req.GetBsn())
	if err != nil {
		return nil, err
	}
	entry := &verify.Entry{
		Event: verify.EventAccessDecision, Action: "request", Outcome: rc.Outcome,
		Requester:    &verify.Requester{DID: org},
		Employee:     &verify.Employee{UZI: e.GetUzi(), Role: e.GetRole()},
		Purpose:      req.GetPurpose(),
		Patient:      p,
		DataCategory: req.GetDataCategory(),
		Query: fmt.Sprintf("receipt: %s entry %d leaf %s request %s", rc.Origin, rc.Index,
			base64.StdEncoding.EncodeToString(rc.LeafHash[:]), rc.RequestID),
		TokenID: rc.TokenID,
	}
	if answer.GetReason() != "" {
		entry.Reason = answer.GetReason()
	}
	if err := n.db.Update(ctx, func(tx *store.Txn) error {
		return tx.Set(nsReceipt, []byte(org+"/"+rc.RequestID), []byte(answer.GetReceipt()))
	}); err != nil {
		return nil, err
	}
	own, err := l.log.Append(ctx, entry)
	if err != nil {
		return nil, err
	}
	return &schakelv1.RequestTokenResponse{
		AccessToken: answer.GetAccessToken(), ExpiresIn: answer.GetExpiresIn(), Scope: answer.GetScope(),
		Error: answer.GetError(), ErrorDescription: answer.GetErrorDescription(), Reason: answer.GetReason(),
		Receipt: answer.GetReceipt(), CustodianLogIndex: int64(rc.Index), RequesterLogIndex: own.Index,
	}, nil
}

// newAssertion builds and encrypts the token request's assertion, signed by the requesting
// organisation, a hosted one, and encrypted to the custodian's current key-agreement key.
func (n *Node) newAssertion(ctx context.Context, req *schakelv1.RequestTokenRequest) (authz.AssertionClaims, []byte, error) {
	org, custodian, e := req.GetOrganization(), req.GetCustodian(), req.GetEmployee()
	_, sig, err := n.orgs.signingKey(ctx, org)
	if err != nil {
		return authz.AssertionClaims{}, nil, err
	}
	st, err := n.dids.Resolve(ctx, custodian)
	if err != nil {
		return authz.AssertionClaims{}, nil, fmt.Errorf("%w: custodian %s: %w", api.ErrNotFound, clip(custodian), err)
	}
	assurance := e.GetAssurance()
	if assurance == "" {
		assurance = consent.AssuranceHigh
	}
	claims := authz.AssertionClaims{
		Issuer: org, Custodian: custodian, ID: authz.NewID(), IssuedAt: n.cfg.Now(),
		Employee:     authz.Employee{UZI: e.GetUzi(), Role: e.GetRole(), Name: e.GetName(), Assurance: assurance},
		BSN:          req.GetBsn(),
		DataCategory: req.GetDataCategory(), Purpose: req.GetPurpose(),
		ReferralGrant: req.GetReferralGrant(), DPoPJKT: req.GetDpopJkt(),
	}
	if req.GetEmergencyReason() != "" || req.GetBreakGlass() {
		claims.Emergency = &authz.Emergency{Reason: req.GetEmergencyReason(), BreakGlass: req.GetBreakGlass()}
	}
	claims.Expiry = claims.IssuedAt.Add(authz.MaxAssertionLifetime)
	jwe, err := authz.NewAssertion(sig, "", claims, st.Current().AgreementKey)
	if err != nil {
		return authz.AssertionClaims{}, nil, fmt.Errorf("%w: %w", api.ErrInvalidArgument, err)
	}
	return claims, jwe, nil
}

// privateReasons are refusal reasons that would tell the requester something about the patient's
// records at the custodian (that they objected, or had a consent that lapsed): the requester is
// told "no-consent" instead; the custodian's log and the patient's view keep the precise reason.
var privateReasons = map[consent.Reason]bool{
	consent.ReasonObjection: true, consent.ReasonConsentPending: true, consent.ReasonConsentRevoked: true,
	consent.ReasonConsentExpired: true, consent.ReasonConsentNotYetValid: true, consent.ReasonParentalConsentLapsed: true,
}

// RequestToken implements network.Backend on the custodian's node.
func (b *peerBackend) RequestToken(ctx context.Context, p peer.ID, req *schakelv1.PeerServiceRequestTokenRequest) (*schakelv1.PeerServiceRequestTokenResponse, error) {
	return b.n.decideToken(ctx, p, req.GetAssertion())
}

// decision is what the custodian's node logs and answers for one token request.
type decision struct {
	custodian, requester string
	claims               *authz.AssertionClaims // nil when the assertion did not open
	patient              string                 // the custodian's current pseudonym, when known
	result               consent.Result
	oauth                *authz.OAuthError // set for a refusal
	tokenID              string
	jwe                  []byte      // the assertion as received
	spent                store.Batch // records the assertion's jti as used, with the log entry
}

// decideToken opens the assertion, decides, logs the decision (durably, before answering) and
// answers with a token or a refusal and a signed receipt. A refusal is an answer; an error is
// returned only when the node cannot log (then nothing is granted).
func (n *Node) decideToken(ctx context.Context, p peer.ID, jwe []byte) (*schakelv1.PeerServiceRequestTokenResponse, error) {
	now := n.cfg.Now()
	d := decision{jwe: jwe}
	// The requesting organisation is the one the calling peer is admitted for, until the
	// assertion says which of the peer's organisations it is.
	d.requester, _ = n.backend.Admitted(ctx, p)
	d.custodian = n.recipientOrg(ctx, jwe)
	if d.custodian == "" {
		return &schakelv1.PeerServiceRequestTokenResponse{Error: "invalid_request", ErrorDescription: "the assertion is not addressed to an organisation hosted here"}, nil
	}
	// The jti's use is recorded in the decision's log entry: one fsync for both, and a decision
	// is never durable without its jti spent, nor the jti without its decision.
	claims, reserved, err := n.verifier.OpenReserved(ctx, jwe)
	defer reserved.Release()
	if err != nil {
		d.oauth = authz.ToOAuth(err)
		d.result = consent.Result{Reason: consent.ReasonInvalidRequest, Detail: d.oauth.Description}
	} else {
		d.claims, d.requester = claims, claims.Issuer
		n.decide(ctx, p, &d, now)
		reserved.Record(&d.spent)
	}
	return n.answer(ctx, p, &d, now)
}

// decide fills d.result for an opened assertion.
func (n *Node) decide(ctx context.Context, p peer.ID, d *decision, now time.Time) {
	c := d.claims
	refuse := func(code string, reason consent.Reason, detail string) {
		d.result = consent.Result{Reason: reason, Detail: detail}
		d.oauth = &authz.OAuthError{Code: code, Description: detail}
	}
	orgs, err := n.catalog.PeerOrganizations(ctx, p)
	if err != nil || !slices.Contains(orgs, c.Issuer) {
		refuse("invalid_client", consent.ReasonInvalidRequest, "the calling node does not host the requesting organisation")
		return
	}
	l, err := n.logOf(c.Custodian)
	if err != nil {
		refuse("invalid_request", consent.ReasonInvalidRequest, "the custodian is not hosted here")
		return
	}
	pseuds, err := l.pseud.All(c.BSN)
	if err != nil {
		refuse("invalid_request", consent.ReasonInvalidRequest, "the BSN fails the 11-proof")
		return
	}
	d.patient = pseuds[0]
	custodians, err := n.consents.Custodians(ctx, c.Custodian)
	if err != nil {
		custodians = []string{c.Custodian}
	}
	for _, pred := range custodians[1:] {
		if pl, err := n.logOf(pred); err == nil {
			if more, err := pl.pseud.All(c.BSN); err == nil {
				pseuds = append(pseuds, more...)
			}
		}
	}
	records, err := n.consents.ForPatient(ctx, custodians, pseuds)
	if err != nil {
		refuse("server_error", consent.ReasonInvalidRequest, "the consent records could not be read")
		return
	}
	var grant *consent.Grant
	if c.ReferralGrant != "" {
		if g, err := n.consents.Grant(ctx, c.ReferralGrant); err == nil {
			grant = &g
		}
	}
	preds, _ := n.consents.Predecessors(ctx, c.Issuer)
	oc, credentialed := n.orgCredential(ctx, c.Issuer)
	req := consent.Request{
		Custodian: c.Custodian, Custodians: custodians,
		Requester: c.Issuer, RequesterPredecessors: preds, Credentialed: credentialed,
		Role: c.Employee.Role, Assurance: c.Employee.Assurance,
		Purpose: c.Purpose, DataCategory: c.DataCategory,
		Patient: pseuds, PatientAge: -1,
		Emergency: c.Emergency != nil, BreakGlass: c.Emergency != nil && c.Emergency.BreakGlass,
		Time: now,
	}
	if oc != nil {
		req.RequesterType = oc.Type
	}
	d.result = n.policy.Decide(req, records, grant)
	if !d.result.Permit {
		reason := d.result.Reason
		detail := d.result.Detail
		if privateReasons[reason] {
			reason, detail = consent.ReasonNoConsent, "no consent in force for this request"
		}
		d.oauth = &authz.OAuthError{Code: "access_denied", Description: string(reason) + ": " + detail}
		return
	}
	d.tokenID = authz.NewID()
}

// answer logs d in the custodian's log and builds the answer with its receipt.
func (n *Node) answer(ctx context.Context, p peer.ID, d *decision, now time.Time) (*schakelv1.PeerServiceRequestTokenResponse, error) {
	l, err := n.logOf(d.custodian)
	if err != nil {
		return nil, err
	}
	_, sig, err := n.orgs.signingKey(ctx, d.custodian)
	if err != nil {
		return nil, err
	}
	outcome := verify.OutcomeRefused
	if d.oauth == nil {
		outcome = verify.OutcomeGranted
	}
	e := &verify.Entry{
		Event: verify.EventAccessDecision, Action: "token", Outcome: outcome,
		Reason:  strings.TrimSuffix(string(d.result.Reason)+": "+d.result.Detail, ": "),
		PeerID:  p.String(),
		Patient: d.patient,
		TokenID: d.tokenID,
	}
	if d.requester != "" {
		e.Requester = &verify.Requester{DID: d.requester}
		if oc, ok := n.orgCredential(ctx, d.requester); ok && oc != nil {
			e.Requester.URA = oc.URA
		}
	}
	if c := d.claims; c != nil {
		e.Employee = &verify.Employee{UZI: c.Employee.UZI, Role: c.Employee.Role}
		e.Purpose, e.DataCategory = c.Purpose, c.DataCategory
		if c.Emergency != nil {
			e.Query = "emergency: " + c.Emergency.Reason
		}
	}
	if r := d.result; r.ConsentID != "" || r.GrantID != "" || r.BreakGlass {
		e.Basis = &verify.Basis{ReferralGrant: r.GrantID, BreakTheGlass: r.BreakGlass}
		if r.ConsentID != "" {
			e.Basis.ConsentIDs = []string{r.ConsentID}
		}
	}
	rc, err := l.log.AppendWith(ctx, e, &d.spent)
	if err != nil {
		return nil, err
	}
	at, _ := time.Parse(verify.TimeLayout, rc.Time)
	receipt := authz.Receipt{Issuer: d.custodian, Subject: d.requester, TokenID: d.tokenID,
		Origin: l.log.Origin(), Index: uint64(rc.Index), LeafHash: rc.LeafHash, Time: at, Outcome: outcome}
	if d.claims != nil {
		receipt.RequestID = d.claims.ID
	} else {
		// An assertion that did not open has no trustworthy jti: the receipt names it by its
		// digest, which the requester can compute over what it sent.
		sum := sha256.Sum256(d.jwe)
		receipt.RequestID = "sha256:" + base64.RawURLEncoding.EncodeToString(sum[:])
	}
	resp := &schakelv1.PeerServiceRequestTokenResponse{}
	if d.oauth != nil {
		resp.Error, resp.ErrorDescription = d.oauth.Code, d.oauth.Description
		resp.Reason, _, _ = strings.Cut(d.oauth.Description, ":")
	} else {
		c, r := d.claims, d.result
		scope := authz.Scope{DataCategory: c.DataCategory, Purpose: c.Purpose, Patient: d.patient}
		basis := r.ConsentID
		if r.GrantID != "" {
			basis = r.GrantID
			if g, err := n.consents.Grant(ctx, r.GrantID); err == nil {
				scope.Resources = g.Resources
			}
		}
		if r.BreakGlass {
			basis = breakGlassBasis + d.tokenID
		}
		tok, err := authz.IssueToken(sig, "", authz.TokenClaims{
			Issuer: d.custodian, Subject: c.Issuer, ID: d.tokenID, IssuedAt: now, Expiry: now.Add(tokenLifetime),
			Scope: scope.String(), Patient: d.patient,
			Employee: authz.Employee{UZI: c.Employee.UZI, Role: c.Employee.Role, Name: c.Employee.Name},
			JKT:      c.DPoPJKT, Basis: basis, BreakGlass: r.BreakGlass,
		})
		if err != nil {
			return nil, err
		}
		resp.AccessToken, resp.ExpiresIn, resp.Scope = tok, int64(tokenLifetime/time.Second), scope.String()
	}
	if resp.Receipt, err = authz.NewReceipt(sig, "", receipt); err != nil {
		return nil, err
	}
	return resp, nil
}

// breakGlassBasis prefixes the basis of a token permitted by the break-the-glass override.
const breakGlassBasis = "break-glass:"

// recipientOrg returns the hosted organisation whose key-agreement key the assertion is
// encrypted to, or "".
func (n *Node) recipientOrg(ctx context.Context, jwe []byte) string {
	kid, ok := jweKID(jwe)
	if !ok {
		return ""
	}
	org, _, err := n.recipientKey(ctx, kid)
	if err != nil {
		return ""
	}
	return org
}

// jweKID reads the kid of a compact JWE's protected header without decrypting.
func jweKID(jwe []byte) (string, bool) {
	head, _, ok := strings.Cut(string(jwe), ".")
	if !ok || len(head) > 4096 {
		return "", false
	}
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return "", false
	}
	var h struct {
		KID string `json:"kid"`
	}
	if json.Unmarshal(raw, &h) != nil || h.KID == "" {
		return "", false
	}
	return h.KID, true
}

// recipient is a hosted organisation's key-agreement key, by thumbprint.
type recipient struct {
	org string
	key *crypto.PrivateKey
}

// recipientKey implements authz.RecipientKey: the hosted organisation and private key-agreement
// key with thumbprint kid (current or from before a rotation). Found keys are kept in memory: a
// thumbprint always names the same key.
func (n *Node) recipientKey(ctx context.Context, kid string) (string, *crypto.PrivateKey, error) {
	if r, ok := n.recipients.Load(kid); ok {
		return r.(recipient).org, r.(recipient).key, nil
	}
	hs, err := n.orgs.list(ctx)
	if err != nil {
		return "", nil, err
	}
	found := func(org string, k *crypto.PrivateKey) (string, *crypto.PrivateKey, error) {
		n.recipients.Store(kid, recipient{org, k})
		return org, k, nil
	}
	for _, h := range hs {
		if k, err := n.orgs.privateKey(ctx, h.AgreementKey); err == nil && k.KID() == kid {
			return found(h.DID, k)
		}
	}
	names, err := n.keys.List(ctx)
	if err != nil {
		return "", nil, err
	}
	for _, h := range hs {
		prefix := strings.TrimPrefix(h.DID, did.Method) + ".enc."
		for _, name := range names {
			if strings.HasPrefix(name, prefix) {
				if k, err := n.orgs.privateKey(ctx, name); err == nil && k.KID() == kid {
					return found(h.DID, k)
				}
			}
		}
	}
	return "", nil, fmt.Errorf("no hosted organisation has key-agreement key %s", clip(kid))
}

// credCache keeps, per organisation, the outcome of checking its organisation credential, for
// credCacheFor: like admission, a revocation takes effect within that time.
type credCache struct {
	mu sync.Mutex
	m  map[string]credEntry
}

type credEntry struct {
	org   *vc.Organization
	ok    bool
	until time.Time
}

const credCacheFor = 30 * time.Second

// orgCredential returns the organisation named by a valid OrganizationCredential of org from a
// trusted register.
func (n *Node) orgCredential(ctx context.Context, org string) (*vc.Organization, bool) {
	now := n.cfg.Now()
	n.credCache.mu.Lock()
	e, hit := n.credCache.m[org]
	n.credCache.mu.Unlock()
	if hit && now.Before(e.until) {
		return e.org, e.ok
	}
	e = credEntry{until: now.Add(credCacheFor)}
	if cs, err := n.creds.List(ctx, vc.Filter{Party: org, Kind: vc.OrganizationCredential}); err == nil {
		for _, c := range cs {
			if c.Subject == org && c.Organization != nil {
				if _, err := n.creds.Verifier().Verify(ctx, c.JWT); err == nil {
					e.org, e.ok = c.Organization, true
					break
				}
			}
		}
	}
	n.credCache.mu.Lock()
	if n.credCache.m == nil || len(n.credCache.m) > 1<<16 {
		n.credCache.m = map[string]credEntry{}
	}
	n.credCache.m[org] = e
	n.credCache.mu.Unlock()
	return e.org, e.ok
}

// forgetCredential drops the cached outcome of org's credential check, so that the next check
// reads the store again.
func (n *Node) forgetCredential(org string) {
	n.credCache.mu.Lock()
	delete(n.credCache.m, org)
	n.credCache.mu.Unlock()
}

// Introspect implements the AccessService RPC (and POST /oauth2/introspect).
func (n *Node) Introspect(ctx context.Context, req *schakelv1.IntrospectRequest) (*schakelv1.IntrospectResponse, error) {
	r := n.introspector.Introspect(ctx, req.GetToken())
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	return &schakelv1.IntrospectResponse{Json: string(b), Active: r.Active}, nil
}

// tokenKey implements the introspector's key lookup: the signing key of a hosted organisation,
// current or earlier, by kid "<did>#<thumbprint>".
func (n *Node) tokenKey(kid string) (*crypto.PublicKey, error) {
	org, thumb, ok := strings.Cut(kid, "#")
	if !ok {
		return nil, fmt.Errorf("kid %q is not <did>#<thumbprint>", clip(kid))
	}
	ctx := context.Background()
	if _, err := n.orgs.get(ctx, org); err != nil {
		return nil, err
	}
	return n.dids.KeyByID(ctx, org, thumb, n.cfg.Now())
}

// basisActive implements the introspector's check that a token's basis is still in force.
func (n *Node) basisActive(ctx context.Context, basis string) bool {
	if strings.HasPrefix(basis, breakGlassBasis) {
		return true
	}
	if c, err := n.consents.Get(ctx, basis); err == nil {
		return c.Status == consent.StatusActive
	}
	if g, err := n.consents.Grant(ctx, basis); err == nil {
		return !g.Revoked && n.cfg.Now().Before(g.ValidUntil)
	}
	return false
}

// openAccess builds the consent store, policy, assertion verifier and introspector.
func (n *Node) openAccess() error {
	var err error
	n.policy = consent.DefaultPolicy()
	if n.cfg.PolicyFile != "" {
		if n.policy, err = consent.LoadPolicy(n.cfg.PolicyFile); err != nil {
			return err
		}
	}
	if n.consents, err = consent.New(consent.Config{Now: n.cfg.Now, OnChange: n.consentChanged}, n.db); err != nil {
		return err
	}
	replay, err := authz.NewReplayCache(n.db)
	if err != nil {
		return err
	}
	vcfg := authz.DefaultVerifierConfig()
	vcfg.Now = n.cfg.Now
	if n.verifier, err = authz.NewVerifier(vcfg, n.recipientKey, authz.RegistryResolver(n.dids), replay); err != nil {
		return err
	}
	icfg := authz.DefaultIntrospectorConfig()
	icfg.Now = n.cfg.Now
	n.introspector, err = authz.NewIntrospector(icfg, n.tokenKey, n.basisActive, n.consents.Generation)
	return err
}

var _ network.Backend = (*peerBackend)(nil)
