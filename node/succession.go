package node

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/schakel-health/schakel/internal/api"
	"github.com/schakel-health/schakel/internal/vc"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// Custodian succession (DESIGN §5: a renamed organisation gets a new URA; consents carry over). The
// predecessor declares its successor in a public CustodianSuccessionCredential that it issues
// itself, gossiped like a service registration. Every node that holds a valid one records the
// succession in its consent store, so that consents recorded at the predecessor count when the
// successor is the custodian asked, and consents naming the predecessor as grantee count for the
// successor as requester.
//
// A succession is never undone: the consent store has no removal, so revoking the credential, or
// its expiry, stops it from reaching nodes that do not hold it yet but leaves it in force where it
// was recorded.

// successionValidity is how long a succession credential stays valid, and so how long a node that
// joins later still learns it by catch-up. It is long because the predecessor, renamed or merged
// away, may no longer be there to renew it; it is bounded because every public document is kept
// by every node.
const successionValidity = 5 * 365 * 24 * time.Hour

// DeclareSuccession implements the AccessService RPC at the predecessor's node.
func (n *Node) DeclareSuccession(ctx context.Context, req *schakelv1.DeclareSuccessionRequest) (*schakelv1.DeclareSuccessionResponse, error) {
	pred, succ, reason := req.GetPredecessor(), req.GetSuccessor(), req.GetReason()
	if _, err := n.orgs.get(ctx, pred); err != nil {
		return nil, err
	}
	switch reason {
	case vc.SuccessionRenamed, vc.SuccessionMerged, vc.SuccessionMoved:
	default:
		return nil, fmt.Errorf("%w: reason %q is not renamed, merged or moved", api.ErrInvalidArgument, clip(reason))
	}
	if succ == pred {
		return nil, fmt.Errorf("%w: an organisation cannot succeed itself", api.ErrInvalidArgument)
	}
	if _, err := n.dids.Resolve(ctx, succ); err != nil {
		return nil, fmt.Errorf("%w: successor %s: %w", api.ErrNotFound, clip(succ), err)
	}
	// A succession already declared and still valid is answered with its credential, so that a
	// retried call does not publish a second one.
	held, err := n.creds.List(ctx, vc.Filter{Party: pred, Kind: vc.CustodianSuccessionCredential})
	if err != nil {
		return nil, err
	}
	for _, c := range held {
		if c.Issuer == pred && c.Subject == succ && n.creds.Verifier().Check(ctx, c) == nil {
			if err := n.recordSuccession(ctx, c); err != nil {
				return nil, err
			}
			return &schakelv1.DeclareSuccessionResponse{CredentialId: c.ID, Credential: string(c.JWT)}, nil
		}
	}
	// Recorded here first, so that a succession the consent store refuses (one that would make a
	// cycle, or too many predecessors) is never published. Should issuing fail after it, a retry
	// publishes the credential; recording again changes nothing.
	if err := n.consents.AddSuccession(ctx, pred, succ); err != nil {
		return nil, consentError(err)
	}
	c, err := n.orgs.issue(ctx, pred, vc.Request{Kind: vc.CustodianSuccessionCredential,
		Succession: &vc.Succession{ID: succ, Predecessor: pred, Reason: reason}}, successionValidity)
	if err != nil {
		return nil, fmt.Errorf("succession of %s recorded, but its credential was not issued: %w", clip(pred), err)
	}
	return &schakelv1.DeclareSuccessionResponse{CredentialId: c.ID, Credential: string(c.JWT)}, nil
}

// recordSuccession records the succession a verified CustodianSuccessionCredential declares.
func (n *Node) recordSuccession(ctx context.Context, c *vc.Credential) error {
	if c.Kind != vc.CustodianSuccessionCredential || c.Succession == nil {
		return nil
	}
	if err := n.consents.AddSuccession(ctx, c.Succession.Predecessor, c.Subject); err != nil {
		return fmt.Errorf("record succession %s: %w", c.ID, consentError(err))
	}
	return nil
}

// credentialAdded acts on a public credential the node has just verified and stored, whether
// received by gossip, catch-up or the API: a succession is recorded. A succession the consent
// store refuses (a cycle with one recorded earlier) stays stored as a document but is not
// followed; the refusal is logged, the document is not refused, because it is valid and other
// nodes may hold it.
func (n *Node) credentialAdded(ctx context.Context, c *vc.Credential) {
	if c != nil && c.Kind == vc.OrganizationCredential {
		// A check made before it arrived may have found the organisation without one.
		n.forgetCredential(c.Subject)
	}
	if c == nil || c.Kind != vc.CustodianSuccessionCredential {
		return
	}
	if err := n.recordSuccession(ctx, c); err != nil {
		n.log.Warn("succession not followed", "credential", c.ID, "predecessor", c.Succession.Predecessor, "successor", c.Subject, "error", err)
	}
}

// recordHeldSuccessions records the successions of every succession credential held. It runs at
// start, so that one stored just before a crash, and so never fetched again, is followed too.
func (n *Node) recordHeldSuccessions(ctx context.Context) error {
	cs, err := n.creds.List(ctx, vc.Filter{Kind: vc.CustodianSuccessionCredential})
	if err != nil {
		return err
	}
	var failed []string
	for _, c := range cs {
		if err := n.recordSuccession(ctx, c); err != nil {
			failed = append(failed, err.Error())
		}
	}
	if len(failed) > 0 {
		n.log.Warn("successions not followed", "count", len(failed), "errors", strings.Join(failed, "; "))
	}
	return nil
}
