package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/network/outbox"
	"github.com/schakel-health/schakel/internal/store"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// Private messages between organisations (consent requests and notices, referral grants): sealed
// by the sender (signed, then encrypted to the recipient's key-agreement key), queued in the
// sender's outbox until the recipient's node takes them, processed once by the recipient.

var nsMsg = store.MustNamespace("msg")

// ErrNotForHere is returned for a private message whose sender or recipient does not fit the peer
// that delivered it or this node.
var ErrNotForHere = errors.New("private message not for this node")

// Received is a private message an organisation hosted here received.
type Received struct {
	ID       string    `json:"id"`
	From     string    `json:"from"`
	To       string    `json:"to"`
	Kind     string    `json:"kind"`
	Body     []byte    `json:"body"`
	IssuedAt time.Time `json:"issuedAt"`
	Received time.Time `json:"received"`
}

func msgKey(to, id string) []byte { return []byte(to + "/" + id) }

// SendPrivate seals a private message from a hosted organisation to another organisation and
// queues it for delivery; it returns the message id once the message is durably queued.
func (n *Node) SendPrivate(ctx context.Context, from, to, kind string, body []byte) (string, error) {
	_, sig, err := n.orgs.signingKey(ctx, from)
	if err != nil {
		return "", err
	}
	st, err := n.dids.Resolve(ctx, to)
	if err != nil {
		return "", fmt.Errorf("recipient %s: %w", to, err)
	}
	m, err := outbox.Seal(sig, from, st.Current().AgreementKey, to, kind, body, n.cfg.Now(), 0)
	if err != nil {
		return "", err
	}
	if err := n.outbox.Enqueue(ctx, m); err != nil {
		return "", err
	}
	return m.ID, nil
}

// sendPrivate is the outbox's transport: one Deliver call to the node hosting the recipient.
func (n *Node) sendPrivate(ctx context.Context, m *outbox.Message) error {
	_, err := n.net.Deliver(ctx, &schakelv1.DeliverRequest{Id: m.ID, From: m.From, To: m.To, Kind: m.Kind, Payload: m.Payload})
	return err
}

// Deliver implements network.Backend: a private message from peer p to an organisation hosted
// here. The sender must be an organisation p's node hosts; the message is opened (decrypted,
// signature checked against the sender's key at its issue time) and stored once, whatever the
// number of deliveries.
func (b *peerBackend) Deliver(ctx context.Context, p peer.ID, req *schakelv1.DeliverRequest) (bool, error) {
	n := b.n
	m := &outbox.Message{ID: req.GetId(), From: req.GetFrom(), To: req.GetTo(), Kind: req.GetKind(), Payload: req.GetPayload()}
	if err := m.Validate(); err != nil {
		return false, err
	}
	orgs, err := n.catalog.PeerOrganizations(ctx, p)
	if err != nil {
		return false, err
	}
	if !slices.Contains(orgs, m.From) {
		return false, fmt.Errorf("%w: %s is not hosted by the delivering peer", ErrNotForHere, m.From)
	}
	h, err := n.orgs.get(ctx, m.To)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrNotForHere, err)
	}
	key, err := n.agreementKey(ctx, h, m)
	if err != nil {
		return false, err
	}
	opened, err := outbox.Open(ctx, m, key, m.To, n.dids.KeyByID, n.cfg.Now())
	if err != nil {
		return false, err
	}
	rec := Received{ID: opened.ID, From: opened.From, To: opened.To, Kind: opened.Kind, Body: opened.Body,
		IssuedAt: opened.IssuedAt, Received: n.cfg.Now()}
	raw, err := json.Marshal(rec)
	if err != nil {
		return false, err
	}
	dup, err := n.inbox.Receive(ctx, m, func(tx *store.Txn, _ *outbox.Message) error {
		return tx.Set(nsMsg, msgKey(m.To, m.ID), raw)
	})
	if err == nil && !dup {
		// Stored and acknowledged; what it asks for is done now, or at the next start should
		// this fail or the node stop first.
		if perr := n.processMessage(ctx, rec); perr != nil {
			n.log.Warn("private message not processed", "id", rec.ID, "kind", rec.Kind, "error", perr)
		}
	}
	return dup, err
}

// agreementKey returns the hosted organisation's key-agreement key the message was encrypted to:
// the current one, or an earlier one after a key rotation.
func (n *Node) agreementKey(ctx context.Context, h *hosted, m *outbox.Message) (*crypto.PrivateKey, error) {
	kid, err := outbox.RecipientKeyID(m)
	if err != nil {
		return nil, err
	}
	org, k, err := n.recipientKey(ctx, kid)
	if err != nil || org != h.DID {
		return nil, fmt.Errorf("%w: no key-agreement key %s for %s", outbox.ErrWrongRecipient, kid, h.DID)
	}
	return k, nil
}

// Messages returns the private messages a hosted organisation received, oldest first.
func (n *Node) Messages(ctx context.Context, org string) ([]Received, error) {
	if _, err := n.orgs.get(ctx, org); err != nil {
		return nil, err
	}
	var out []Received
	err := n.db.View(ctx, func(tx *store.Txn) error {
		out = out[:0]
		return tx.Iterate(nsMsg, []byte(org+"/"), store.IterOptions{}, func(_, v []byte) error {
			var r Received
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	slices.SortFunc(out, func(a, b Received) int { return a.Received.Compare(b.Received) })
	return out, err
}
