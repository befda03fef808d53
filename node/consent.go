package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/accesslog/verify"
	"github.com/schakel-health/schakel/internal/api"
	"github.com/schakel-health/schakel/internal/authz"
	"github.com/schakel-health/schakel/internal/consent"
	"github.com/schakel-health/schakel/internal/store"
	"github.com/schakel-health/schakel/internal/vc"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// Consents at the custodian (DESIGN §5): recorded at the desk, requested online through a portal
// organisation's node (a private message to the custodian), processed by the custodian (a notice
// back to the portal), revoked at once. Every change is an entry in the custodian's access log.

// Private message kinds of the consent flow.
const (
	kindConsentRequest = "consent-request"
	kindConsentNotice  = "consent-notice"
)

// nsMsgDone marks private messages whose processing has committed, so that a message stored but
// not processed before a crash is processed at the next start.
var nsMsgDone = store.MustNamespace("msgdone")

// consentRequestBody is a consent request relayed by a portal; it travels encrypted to the
// custodian and carries the BSN, which only the custodian turns into its pseudonym.
type consentRequestBody struct {
	RequestID string          `json:"requestId"`
	BSN       string          `json:"bsn"`
	Consent   consent.Consent `json:"consent"`
}

// consentNoticeBody tells the portal how its request was processed.
type consentNoticeBody struct {
	RequestID string `json:"requestId"`
	Outcome   string `json:"outcome"` // accepted or rejected
	Reason    string `json:"reason,omitempty"`
	ConsentID string `json:"consentId"`
}

// consentFromProto converts the API form; the pseudonym is filled in by the caller.
func consentFromProto(p *schakelv1.Consent) (consent.Consent, error) {
	if p == nil {
		return consent.Consent{}, fmt.Errorf("%w: consent is required", api.ErrInvalidArgument)
	}
	c := consent.Consent{
		Custodian: p.GetCustodian(), Decision: consent.Decision(p.GetDecision()), Basis: p.GetBasis(),
		Grantee:        consent.Grantee{Org: p.GetGranteeOrg(), OrgType: p.GetGranteeType(), Any: p.GetGranteeAny()},
		DataCategories: p.GetDataCategories(), Purposes: p.GetPurposes(),
		Channel: consent.Channel(p.GetChannel()), Assurance: p.GetAssurance(),
	}
	if p.GetValidFromUnix() != 0 {
		c.ValidFrom = time.Unix(p.GetValidFromUnix(), 0)
	}
	if p.GetValidUntilUnix() != 0 {
		c.ValidUntil = time.Unix(p.GetValidUntilUnix(), 0)
	}
	for _, g := range p.GetGrantors() {
		c.Grantors = append(c.Grantors, consent.GrantorRole(g))
	}
	if s := p.GetPatientBirthDate(); s != "" {
		t, err := time.Parse(time.DateOnly, s)
		if err != nil {
			return c, fmt.Errorf("%w: patient_birth_date %q is not YYYY-MM-DD", api.ErrInvalidArgument, clip(s))
		}
		c.PatientBirthDate = t
	}
	return c, nil
}

func consentToProto(c consent.Consent) *schakelv1.Consent {
	p := &schakelv1.Consent{
		Id: c.ID, Custodian: c.Custodian, Decision: string(c.Decision), Basis: c.Basis,
		GranteeOrg: c.Grantee.Org, GranteeType: c.Grantee.OrgType, GranteeAny: c.Grantee.Any,
		DataCategories: c.DataCategories, Purposes: c.Purposes,
		ValidFromUnix: unix(c.ValidFrom), ValidUntilUnix: unix(c.ValidUntil),
		Channel: string(c.Channel), Assurance: c.Assurance, Supersedes: c.Supersedes,
		Status: string(c.Status), Reason: c.Reason, RequestedBy: c.RequestedBy,
		CreatedUnix: unix(c.Created), UpdatedUnix: unix(c.Updated),
	}
	for _, g := range c.Grantors {
		p.Grantors = append(p.Grantors, string(g))
	}
	if !c.PatientBirthDate.IsZero() {
		p.PatientBirthDate = c.PatientBirthDate.Format(time.DateOnly)
	}
	return p
}

// consentError maps the consent store's errors to API errors.
func consentError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, consent.ErrNotFound):
		return fmt.Errorf("%w: %w", api.ErrNotFound, err)
	case errors.Is(err, consent.ErrState):
		return fmt.Errorf("%w: %w", api.ErrFailedPrecondition, err)
	case errors.Is(err, consent.ErrInvalid), errors.Is(err, consent.ErrGrantor):
		return fmt.Errorf("%w: %w", api.ErrInvalidArgument, err)
	default:
		return err
	}
}

// pseudonymAt returns the custodian's current pseudonym of bsn; the custodian must be hosted.
func (n *Node) pseudonymAt(custodian, bsn string) (string, error) {
	l, err := n.logOf(custodian)
	if err != nil {
		return "", err
	}
	p, err := l.pseud.Pseudonym(bsn)
	if err != nil {
		return "", fmt.Errorf("%w: %w", api.ErrInvalidArgument, err)
	}
	return p, nil
}

// RecordConsent implements the AccessService RPC.
func (n *Node) RecordConsent(ctx context.Context, req *schakelv1.RecordConsentRequest) (*schakelv1.RecordConsentResponse, error) {
	c, err := consentFromProto(req.GetConsent())
	if err != nil {
		return nil, err
	}
	if c.Patient, err = n.pseudonymAt(c.Custodian, req.GetBsn()); err != nil {
		return nil, err
	}
	if c.Channel == consent.ChannelOnline {
		return nil, fmt.Errorf("%w: an online consent comes through a portal (RequestConsent)", api.ErrInvalidArgument)
	}
	rec, err := n.consents.Record(ctx, c)
	if err != nil {
		return nil, consentError(err)
	}
	return &schakelv1.RecordConsentResponse{Consent: consentToProto(rec)}, nil
}

// RequestConsent implements the AccessService RPC at the portal's node: the request is sealed to
// the custodian and queued in the outbox; it reaches the custodian's node when that is up.
func (n *Node) RequestConsent(ctx context.Context, req *schakelv1.RequestConsentRequest) (*schakelv1.RequestConsentResponse, error) {
	c, err := consentFromProto(req.GetConsent())
	if err != nil {
		return nil, err
	}
	if err := crypto.ValidBSN(req.GetBsn()); err != nil {
		return nil, fmt.Errorf("%w: %w", api.ErrInvalidArgument, err)
	}
	if _, err := n.orgs.get(ctx, req.GetOrganization()); err != nil {
		return nil, err
	}
	c.Channel, c.RequestedBy = consent.ChannelOnline, req.GetOrganization()
	// The custodian validates fully; the fields it cannot check without the pseudonym are
	// checked here so that a malformed request fails at once rather than in a notice.
	probe := c
	probe.Patient = "v1.probe"
	if err := probe.Validate(n.cfg.Now()); err != nil {
		return nil, consentError(err)
	}
	body, err := json.Marshal(consentRequestBody{RequestID: authz.NewID(), BSN: req.GetBsn(), Consent: c})
	if err != nil {
		return nil, err
	}
	var rb consentRequestBody
	_ = json.Unmarshal(body, &rb)
	id, err := n.SendPrivate(ctx, req.GetOrganization(), c.Custodian, kindConsentRequest, body)
	if err != nil {
		return nil, err
	}
	return &schakelv1.RequestConsentResponse{RequestId: rb.RequestID, MessageId: id}, nil
}

// ProcessConsent implements the AccessService RPC: accept or reject a pending request, and tell
// the portal that relayed it.
func (n *Node) ProcessConsent(ctx context.Context, req *schakelv1.ProcessConsentRequest) (*schakelv1.ProcessConsentResponse, error) {
	if err := n.ownConsent(ctx, req.GetCustodian(), req.GetId()); err != nil {
		return nil, err
	}
	v, outcome := consent.Accept, "accepted"
	if !req.GetAccept() {
		v, outcome = consent.Reject, "rejected"
	}
	c, err := n.consents.Process(ctx, req.GetId(), v, req.GetReason())
	if err != nil {
		return nil, consentError(err)
	}
	if c.RequestedBy != "" {
		body, err := json.Marshal(consentNoticeBody{RequestID: c.RequestID, Outcome: outcome, Reason: c.Reason, ConsentID: c.ID})
		if err != nil {
			return nil, err
		}
		if _, err := n.SendPrivate(ctx, c.Custodian, c.RequestedBy, kindConsentNotice, body); err != nil {
			return nil, fmt.Errorf("consent %s processed, but the notice to %s was not queued: %w", c.ID, c.RequestedBy, err)
		}
	}
	return &schakelv1.ProcessConsentResponse{Consent: consentToProto(c)}, nil
}

// RevokeConsent implements the AccessService RPC.
func (n *Node) RevokeConsent(ctx context.Context, req *schakelv1.RevokeConsentRequest) (*schakelv1.RevokeConsentResponse, error) {
	if err := n.ownConsent(ctx, req.GetCustodian(), req.GetId()); err != nil {
		return nil, err
	}
	reason := req.GetReason()
	if reason == "" {
		reason = "revoked"
	}
	c, err := n.consents.Revoke(ctx, req.GetId(), reason)
	if err != nil {
		return nil, consentError(err)
	}
	return &schakelv1.RevokeConsentResponse{Consent: consentToProto(c)}, nil
}

// ownConsent checks that consent id is kept by custodian, a hosted organisation.
func (n *Node) ownConsent(ctx context.Context, custodian, id string) error {
	if _, err := n.orgs.get(ctx, custodian); err != nil {
		return err
	}
	c, err := n.consents.Get(ctx, id)
	if err != nil {
		return consentError(err)
	}
	if c.Custodian != custodian {
		return fmt.Errorf("%w: consent %s is not kept by %s", api.ErrNotFound, clip(id), clip(custodian))
	}
	return nil
}

// ListConsents implements the AccessService RPC.
func (n *Node) ListConsents(ctx context.Context, req *schakelv1.ListConsentsRequest) (*schakelv1.ListConsentsResponse, error) {
	custodian := req.GetCustodian()
	if _, err := n.orgs.get(ctx, custodian); err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	if limit <= 0 || limit > maxPage {
		limit = maxPage
	}
	var cs []consent.Consent
	if req.GetBsn() != "" {
		l, err := n.logOf(custodian)
		if err != nil {
			return nil, err
		}
		ps, err := l.pseud.All(req.GetBsn())
		if err != nil {
			return nil, fmt.Errorf("%w: %w", api.ErrInvalidArgument, err)
		}
		if cs, err = n.consents.ForPatient(ctx, []string{custodian}, ps); err != nil {
			return nil, err
		}
	} else {
		var err error
		if cs, err = n.consents.List(ctx, custodian, consent.Status(req.GetStatus()), limit); err != nil {
			return nil, consentError(err)
		}
	}
	resp := &schakelv1.ListConsentsResponse{}
	for _, c := range cs {
		resp.Consents = append(resp.Consents, consentToProto(c))
	}
	return resp, nil
}

// ListNotices implements the AccessService RPC at a portal organisation's node.
func (n *Node) ListNotices(ctx context.Context, req *schakelv1.ListNoticesRequest) (*schakelv1.ListNoticesResponse, error) {
	msgs, err := n.Messages(ctx, req.GetOrganization())
	if err != nil {
		return nil, err
	}
	resp := &schakelv1.ListNoticesResponse{}
	for _, m := range msgs {
		if m.Kind == kindReferralGrant {
			g, err := n.receivedGrant(ctx, m)
			if err != nil {
				n.log.Warn("referral grant does not verify", "message", m.ID, "error", err)
				continue
			}
			resp.Grants = append(resp.Grants, g)
		}
		if m.Kind != kindConsentNotice {
			continue
		}
		var b consentNoticeBody
		if json.Unmarshal(m.Body, &b) != nil {
			continue
		}
		resp.Notices = append(resp.Notices, &schakelv1.ConsentNotice{RequestId: b.RequestID, Custodian: m.From,
			Outcome: b.Outcome, Reason: b.Reason, ConsentId: b.ConsentID, ReceivedUnix: unix(m.Received)})
	}
	return resp, nil
}

// processMessage acts on a private message once it is stored: a consent request becomes a pending
// consent at the custodian. It is called once per message (and again at start for a message
// whose processing did not commit).
func (n *Node) processMessage(ctx context.Context, m Received) error {
	if m.Kind == kindConsentRequest {
		var b consentRequestBody
		if err := json.Unmarshal(m.Body, &b); err != nil {
			return err
		}
		c := b.Consent
		if c.Custodian != m.To {
			return fmt.Errorf("consent request for %s delivered to %s", clip(c.Custodian), clip(m.To))
		}
		p, err := n.pseudonymAt(m.To, b.BSN)
		if err != nil {
			return err
		}
		c.Patient, c.RequestedBy, c.RequestID, c.Channel = p, m.From, b.RequestID, consent.ChannelOnline
		if _, err := n.consents.Request(ctx, c); err != nil {
			// A request the custodian cannot take is rejected back at once.
			body, _ := json.Marshal(consentNoticeBody{RequestID: b.RequestID, Outcome: "rejected", Reason: err.Error()})
			if _, serr := n.SendPrivate(ctx, m.To, m.From, kindConsentNotice, body); serr != nil {
				return serr
			}
		}
	}
	return n.db.Update(ctx, func(tx *store.Txn) error { return tx.Set(nsMsgDone, msgKey(m.To, m.ID), nil) })
}

// processPending processes stored private messages whose processing did not commit.
func (n *Node) processPending(ctx context.Context) error {
	hs, err := n.orgs.list(ctx)
	if err != nil {
		return err
	}
	for _, h := range hs {
		msgs, err := n.Messages(ctx, h.DID)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			var done bool
			if err := n.db.View(ctx, func(tx *store.Txn) error {
				done, err = tx.Has(nsMsgDone, msgKey(m.To, m.ID))
				return err
			}); err != nil {
				return err
			}
			if !done {
				if err := n.processMessage(ctx, m); err != nil {
					n.log.Warn("private message not processed", "id", m.ID, "kind", m.Kind, "error", err)
				}
			}
		}
	}
	return nil
}

// consentChanged appends a consent-change entry to the custodian's access log, committing done
// (which deletes the change's unlogged mark) in the entry's transaction: a change is in the log
// exactly once, also when the node dies between the change's commit and its entry's
// (consent.Store.LogUnlogged writes it at the next start).
func (n *Node) consentChanged(before *consent.Consent, after consent.Consent, done *store.Batch) error {
	l, err := n.logOf(after.Custodian)
	if err != nil {
		n.log.Error("consent change not logged: custodian's log not open", "consent", after.ID, "error", err)
		return err
	}
	action := string(after.Status)
	if before == nil {
		action = "record"
		if after.Status == consent.StatusPending {
			action = "request"
		}
	}
	outcome := verify.OutcomeGranted
	if after.Status == consent.StatusRejected {
		outcome = verify.OutcomeRefused
	}
	grantee := after.Grantee.Org
	switch {
	case after.Grantee.OrgType != "":
		grantee = "type " + after.Grantee.OrgType
	case after.Grantee.Any:
		grantee = "any care provider"
	}
	e := &verify.Entry{
		Event: verify.EventConsentChange, Action: action, Outcome: outcome, Reason: after.Reason,
		Patient: after.Patient,
		Query: fmt.Sprintf("%s %s for %s: %s, purposes %s, channel %s", after.Status, after.Decision, grantee,
			strings.Join(after.DataCategories, ","), strings.Join(after.Purposes, ","), after.Channel),
		Basis: &verify.Basis{ConsentIDs: []string{after.ID}},
	}
	if before == nil && after.RequestedBy != "" {
		e.Requester = &verify.Requester{DID: after.RequestedBy} // the portal that relayed the request
	}
	if _, err := l.log.AppendWith(n.life, e, done); err != nil {
		n.log.Error("consent change not logged yet; it is logged at the next start", "consent", after.ID, "error", err)
		return err
	}
	return nil
}

// Referral grants (planned care): the referring custodian grants one named organisation access
// without consent, short-lived and scoped. The grant travels as a ReferralGrantCredential signed by
// the custodian, delivered to the grantee point to point with the BSN it concerns. It is never a
// public document: it names the patient (by the custodian's pseudonym) and who is referred where,
// so it is issued with vc.Issue and never enters the public credential store (which refuses it).

const kindReferralGrant = "referral-grant"

// referralGrantBody is what the grantee receives: the grant credential and the patient's BSN.
type referralGrantBody struct {
	Grant string `json:"grant"`
	BSN   string `json:"bsn"`
}

// IssueReferralGrant implements the AccessService RPC at the referring custodian's node.
func (n *Node) IssueReferralGrant(ctx context.Context, req *schakelv1.IssueReferralGrantRequest) (*schakelv1.IssueReferralGrantResponse, error) {
	custodian := req.GetCustodian()
	if crypto.ValidBSN(req.GetBsn()) != nil {
		return nil, fmt.Errorf("%w: the BSN fails the 11-proof", api.ErrInvalidArgument)
	}
	p, err := n.pseudonymAt(custodian, req.GetBsn())
	if err != nil {
		return nil, err
	}
	if _, err := n.dids.Resolve(ctx, req.GetGrantee()); err != nil {
		return nil, fmt.Errorf("%w: grantee %s: %w", api.ErrNotFound, clip(req.GetGrantee()), err)
	}
	_, sig, err := n.orgs.signingKey(ctx, custodian)
	if err != nil {
		return nil, err
	}
	now := n.cfg.Now()
	validFor := time.Duration(req.GetValidForSeconds()) * time.Second
	if validFor <= 0 {
		validFor = 7 * 24 * time.Hour
	}
	purpose := req.GetPurpose()
	if purpose == "" {
		purpose = "TREAT"
	}
	g, err := n.consents.AddGrant(ctx, consent.Grant{Custodian: custodian, Grantee: req.GetGrantee(), Patient: p,
		DataCategories: req.GetDataCategories(), Resources: req.GetResources(), Purpose: purpose,
		ValidFrom: now, ValidUntil: now.Add(validFor)})
	if err != nil {
		return nil, consentError(err)
	}
	grant, _, err := vc.Issue(sig, vc.Request{Kind: vc.ReferralGrantCredential, ID: g.ID, Issuer: custodian,
		IssuedAt: now, ValidFrom: g.ValidFrom, ValidUntil: g.ValidUntil,
		ReferralGrant: &vc.ReferralGrant{ID: g.Grantee, Patient: g.Patient, DataCategories: g.DataCategories,
			Resources: g.Resources, Purpose: g.Purpose}})
	if err != nil {
		return nil, fmt.Errorf("grant %s stored, but its credential was not issued: %w", g.ID, err)
	}
	body, err := json.Marshal(referralGrantBody{Grant: string(grant), BSN: req.GetBsn()})
	if err != nil {
		return nil, err
	}
	id, err := n.SendPrivate(ctx, custodian, g.Grantee, kindReferralGrant, body)
	if err != nil {
		return nil, fmt.Errorf("grant %s stored, but its delivery was not queued: %w", g.ID, err)
	}
	return &schakelv1.IssueReferralGrantResponse{GrantId: g.ID, Grant: string(grant), MessageId: id}, nil
}

// receivedGrant opens a referral grant delivered to a hosted organisation: a
// ReferralGrantCredential issued by the sender to the recipient, whose signature is checked with
// the custodian's key valid at the grant's issue time. Its period and revocation are the
// custodian's to check when the grantee asks for a token.
func (n *Node) receivedGrant(ctx context.Context, m Received) (*schakelv1.ReceivedGrant, error) {
	var b referralGrantBody
	if err := json.Unmarshal(m.Body, &b); err != nil {
		return nil, err
	}
	c, err := vc.Parse([]byte(b.Grant))
	if err != nil {
		return nil, err
	}
	if c.Kind != vc.ReferralGrantCredential {
		return nil, fmt.Errorf("%w: a %s delivered as a referral grant", vc.ErrMalformed, c.Kind)
	}
	if c.Issuer != m.From || c.Subject != m.To {
		return nil, fmt.Errorf("referral grant from %s for %s delivered by %s to %s", clip(c.Issuer), clip(c.Subject), clip(m.From), clip(m.To))
	}
	key, err := authz.RegistryResolver(n.dids)(ctx, c.Issuer+"#"+c.KeyID, c.IssuedAt)
	if err != nil {
		return nil, err
	}
	if _, _, err := crypto.Verify(c.JWT, key); err != nil {
		return nil, err
	}
	g := c.ReferralGrant
	return &schakelv1.ReceivedGrant{GrantId: c.ID, Custodian: c.Issuer, DataCategories: g.DataCategories,
		Resources: g.Resources, Purpose: g.Purpose, ValidUntilUnix: c.ValidUntil.Unix(), Bsn: b.BSN}, nil
}
