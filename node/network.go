package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/did"
	"github.com/schakel-health/schakel/internal/network"
	"github.com/schakel-health/schakel/internal/vc"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// The node is the network's Backend: it verifies and stores documents, decides admission, and
// acts on private messages and witness requests.
var _ network.Backend = (*peerBackend)(nil)

type peerBackend struct {
	n *Node
	// accepting serialises the storing of received documents: every store updates the upper rows
	// of the reconciliation index, so concurrent ones would only conflict and retry.
	accepting sync.Mutex

	mu    sync.Mutex
	cache map[peer.ID]admission
}

type admission struct {
	org   string
	ok    bool
	until time.Time
}

// How long an admission decision is reused: a revoked organisation credential ends admission
// within admitFor; a newcomer refused a moment ago may be admitted once its documents arrive.
const (
	admitFor  = 30 * time.Second
	refuseFor = time.Second
)

// Accept implements network.Backend: it verifies and stores one public document.
func (b *peerBackend) Accept(ctx context.Context, doc []byte) (bool, error) {
	n := b.n
	h, err := crypto.ParseHeader(doc)
	if err != nil {
		return false, err
	}
	var stored bool
	b.accepting.Lock()
	defer b.accepting.Unlock()
	switch h.Type {
	case did.EventJWSType:
		_, stored, err = n.dids.AddEvent(ctx, doc)
	case did.DocumentJWSType:
		_, stored, err = n.dids.PutDocument(ctx, doc)
	case vc.JWSType:
		var c *vc.Credential
		if c, stored, err = n.creds.Add(ctx, doc); err == nil && stored {
			n.credentialAdded(ctx, c)
		}
	default:
		return false, fmt.Errorf("unknown document type %q", clip(h.Type))
	}
	return stored, acceptError(err)
}

// acceptError tells the network which refusals are only for now (a document it depends on is not
// held yet) or without fault (superseded, expired, revoked).
func acceptError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, did.ErrUnknownDID), errors.Is(err, did.ErrNoKey), errors.Is(err, did.ErrEventAhead), errors.Is(err, vc.ErrStatusUnavailable):
		return fmt.Errorf("%w: %w", network.ErrPending, err)
	case errors.Is(err, vc.ErrRollback), errors.Is(err, vc.ErrExpired), errors.Is(err, vc.ErrRevoked), errors.Is(err, did.ErrSuperseded):
		return fmt.Errorf("%w: %w", network.ErrStale, err)
	default:
		return err
	}
}

// AcceptMany implements network.Backend: key events and DID documents first, one by one, then the
// credentials verified on every core and stored in one transaction.
func (b *peerBackend) AcceptMany(ctx context.Context, docs [][]byte) ([]bool, []error) {
	stored, errs := make([]bool, len(docs)), make([]error, len(docs))
	var creds [][]byte
	var at []int
	for i, d := range docs {
		if h, err := crypto.ParseHeader(d); err == nil && h.Type == vc.JWSType {
			creds, at = append(creds, d), append(at, i)
			continue
		}
		stored[i], errs[i] = b.Accept(ctx, d)
	}
	if len(creds) == 0 {
		return stored, errs
	}
	b.accepting.Lock()
	res := b.n.creds.AddMany(ctx, creds)
	b.accepting.Unlock()
	for j, r := range res {
		stored[at[j]], errs[at[j]] = r.Added, acceptError(r.Err)
		if r.Err == nil && r.Added {
			b.n.credentialAdded(ctx, r.Credential)
		}
	}
	return stored, errs
}

// Introduce implements network.Backend. Nothing a newcomer presents is stored unless it carries an
// organisation credential that verifies against a trusted register and a DID document of that
// organisation binding the newcomer's peer id: strangers leave no trace. The credential is verified
// before anything of the newcomer's own is stored; what that takes — the trusted registers' own
// documents, their key events and status lists — is stored first, as it would be from any peer.
func (b *peerBackend) Introduce(ctx context.Context, p peer.ID, docs [][]byte) (string, error) {
	if org, ok := b.Admitted(ctx, p); ok {
		b.acceptAll(ctx, docs)
		return org, nil
	}
	trusted := b.n.cfg.TrustedRegisters
	subjects := map[string][][]byte{}
	var registers [][]byte
	for _, d := range docs {
		if registerDocument(d, trusted) {
			registers = append(registers, d)
			continue
		}
		h, err := crypto.ParseHeader(d)
		if err != nil || h.Type != vc.JWSType {
			continue
		}
		c, err := vc.Parse(d)
		if err != nil || c.Kind != vc.OrganizationCredential || !slices.Contains(trusted, c.Issuer) {
			continue
		}
		subjects[c.Subject] = append(subjects[c.Subject], d)
	}
	bound := ""
	for _, d := range docs {
		if id, peers, ok := documentBinding(d); ok && subjects[id] != nil && slices.Contains(peers, p.String()) {
			bound = id
		}
	}
	if bound == "" {
		return "", fmt.Errorf("%w: no organisation credential from a trusted register for an organisation that binds %s", network.ErrNotAdmitted, p)
	}
	b.acceptAll(ctx, registers)
	var verr error
	for _, c := range subjects[bound] {
		if _, verr = b.n.creds.Verifier().Verify(ctx, c); verr == nil {
			break
		}
	}
	if verr != nil {
		return "", fmt.Errorf("%w: the presented credential of %s does not verify: %w", network.ErrNotAdmitted, bound, verr)
	}
	b.acceptAll(ctx, docs)
	// Checks made before the newcomer's documents were stored (a gossiped document naming its
	// organisation, say) found it without a credential; they are not the answer now.
	b.forget(p)
	b.n.forgetCredential(bound)
	if org, ok := b.Admitted(ctx, p); ok {
		return org, nil
	}
	return "", fmt.Errorf("%w: the presented credential of %s does not verify", network.ErrNotAdmitted, bound)
}

// registerDocument reports whether doc is a trusted register's own document, unverified: one of
// its key events or its status list.
func registerDocument(doc []byte, trusted []string) bool {
	h, err := crypto.ParseHeader(doc)
	if err != nil {
		return false
	}
	switch h.Type {
	case did.EventJWSType:
		ev, err := did.ParseEvent(doc)
		if err != nil {
			return false
		}
		id := ev.DID
		if ev.Type == did.Genesis {
			id = did.DIDFromGenesis(doc)
		}
		return slices.Contains(trusted, id)
	case vc.JWSType:
		c, err := vc.Parse(doc)
		return err == nil && c.Kind == vc.StatusListCredential && slices.Contains(trusted, c.Issuer)
	}
	return false
}

// acceptAll stores what verifies of docs, retrying those that wait for a later one.
func (b *peerBackend) acceptAll(ctx context.Context, docs [][]byte) {
	pending := docs
	for range 4 {
		var again [][]byte
		for _, d := range pending {
			if _, err := b.Accept(ctx, d); errors.Is(err, network.ErrPending) {
				again = append(again, d)
			}
		}
		if len(again) == 0 || len(again) == len(pending) {
			return
		}
		pending = again
	}
}

// documentBinding returns the DID and bound peer ids of a DID document, unverified.
func documentBinding(doc []byte) (string, []string, bool) {
	h, err := crypto.ParseHeader(doc)
	if err != nil || h.Type != did.DocumentJWSType {
		return "", nil, false
	}
	payload, _, err := crypto.ParseUnverified(doc)
	if err != nil {
		return "", nil, false
	}
	var d did.Document
	if json.Unmarshal(payload, &d) != nil {
		return "", nil, false
	}
	return d.ID, d.PeerIDs(), true
}

func (b *peerBackend) forget(p peer.ID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.cache, p)
}

// Admitted implements network.Backend: p is admitted when the current DID document of an
// organisation binds it and that organisation holds a valid OrganizationCredential from a trusted
// register (signature, validity, revocation status).
func (b *peerBackend) Admitted(ctx context.Context, p peer.ID) (string, bool) {
	now := b.n.cfg.Now()
	b.mu.Lock()
	if a, ok := b.cache[p]; ok && now.Before(a.until) {
		b.mu.Unlock()
		return a.org, a.ok
	}
	b.mu.Unlock()
	a := admission{until: now.Add(refuseFor)}
	orgs, err := b.n.catalog.PeerOrganizations(ctx, p)
	if err == nil {
		for _, org := range orgs {
			if b.credentialed(ctx, org) {
				a = admission{org: org, ok: true, until: now.Add(admitFor)}
				break
			}
		}
	}
	b.mu.Lock()
	if b.cache == nil || len(b.cache) > 1<<16 {
		b.cache = map[peer.ID]admission{}
	}
	b.cache[p] = a
	b.mu.Unlock()
	return a.org, a.ok
}

// credentialed reports whether org holds a valid OrganizationCredential from a trusted register.
func (b *peerBackend) credentialed(ctx context.Context, org string) bool {
	_, ok := b.n.orgCredential(ctx, org)
	return ok
}

// Introduction implements network.Backend: for every hosted organisation, what admits it — the
// registers' key events and status lists, its key events, DID document and organisation
// credentials — in dependency order.
func (b *peerBackend) Introduction(ctx context.Context) ([][]byte, error) {
	n := b.n
	hs, err := n.orgs.list(ctx)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	seen := map[string]bool{}
	add := func(d []byte) {
		if d != nil && !seen[string(d)] {
			seen[string(d)] = true
			out = append(out, d)
		}
	}
	for _, h := range hs {
		cs, err := n.creds.List(ctx, vc.Filter{Party: h.DID, Kind: vc.OrganizationCredential})
		if err != nil {
			return nil, err
		}
		var creds [][]byte
		for _, c := range cs {
			if c.Subject != h.DID || n.creds.Verifier().Check(ctx, c) != nil {
				continue
			}
			evs, err := n.dids.Events(ctx, c.Issuer)
			if err != nil {
				return nil, err
			}
			for _, e := range evs {
				add(e)
			}
			if c.Status != nil {
				if l, err := n.creds.StatusList(ctx, c.Status.StatusListCredential); err == nil {
					add(l)
				}
			}
			creds = append(creds, c.JWT)
		}
		evs, err := n.dids.Events(ctx, h.DID)
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			add(e)
		}
		if _, doc, err := n.dids.Document(ctx, h.DID); err == nil {
			add(doc)
		}
		for _, c := range creds {
			add(c)
		}
		if len(out) > 48 {
			break
		}
	}
	return out, nil
}

// ListPeers lists the peers the node is or was connected to.
func (n *Node) ListPeers(ctx context.Context, _ *schakelv1.ListPeersRequest) (*schakelv1.ListPeersResponse, error) {
	resp := &schakelv1.ListPeersResponse{Addrs: n.net.Addrs(), Members: n.net.Members()}
	for _, p := range n.net.Peers() {
		resp.Peers = append(resp.Peers, &schakelv1.Peer{
			PeerId: p.ID, Organization: p.Org, Addrs: p.Addrs, Admitted: p.Admitted, Connected: p.Connected,
			LastSeenUnix: unix(p.LastSeen), LastSyncUnix: unix(p.LastSync), LastSyncError: p.LastSyncErr,
			Syncs: int32(p.Syncs), Fetched: int32(p.Fetched),
		})
	}
	return resp, nil
}

func unix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}
