package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"connectrpc.com/connect"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/schakel-health/schakel/internal/network/reconcile"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// maxSyncRounds bounds the round trips of one reconciliation; the protocol needs about one per
// level of the index, so a peer that keeps it going longer is lying.
const maxSyncRounds = 64

// fetchBatch is how many documents one FetchDocuments call asks for.
const fetchBatch = 128

// respondReconcile answers one reconciliation message from a peer.
func (n *Network) respondReconcile(ctx context.Context, b []byte) ([]byte, error) {
	m, err := reconcile.ParseMessage(b)
	if err != nil {
		return nil, err
	}
	out, err := n.cat.Index().Respond(ctx, m)
	if err != nil {
		return nil, err
	}
	return out.MarshalBinary()
}

// syncLoop reconciles with a random admitted peer every SyncInterval (jittered).
func (n *Network) syncLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(jitter(n.cfg.SyncInterval)):
		}
		peers := n.AdmittedPeers()
		if len(peers) == 0 {
			continue
		}
		n.syncWith(n.ctx, peers[rand.IntN(len(peers))])
	}
}

// SyncResult reports one reconciliation with a peer.
type SyncResult struct {
	Rounds       int
	BytesOut     int
	BytesIn      int
	Missing      int // documents the peer had and this node lacked
	Stored       int // of those, stored
	Refused      int // of those, refused by verification
	FetchedBytes int
}

// maxRelay bounds the catch-up whose documents this node passes on by gossip. A peer that just
// joined or returned often brings a few documents the rest of the network lacks too (it was
// admitted, or published, while others were syncing); gossiping them spares every other node
// the wait for its next catch-up round. A larger catch-up is this node's own backlog: the others
// have it already or will reconcile it themselves. Receivers that hold a relayed document
// ignore it, without penalty.
const maxRelay = 64

// relay gossips a document fetched in a catch-up.
func (n *Network) relay(doc []byte) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.Publish(n.ctx, doc); err != nil && n.ctx.Err() == nil {
			n.log.Debug("relaying a fetched document failed", slog.Any("error", err))
		}
	}()
}

// maxSessions bounds the reconciliation sessions of one Sync. A session ends incomplete when the
// node is far behind (it then holds several hundred thousand missing ids); the documents it
// found are fetched and the next session continues from the new state.
const maxSessions = 8

// Sync reconciles with p now and fetches what this node lacks. A peer whose answers break the
// reconciliation protocol is refused.
func (n *Network) Sync(ctx context.Context, p peer.ID) (SyncResult, error) {
	var total SyncResult
	for range maxSessions {
		r, complete, err := n.syncSession(ctx, p)
		total.Rounds += r.Rounds
		total.BytesOut += r.BytesOut
		total.BytesIn += r.BytesIn
		total.Missing += r.Missing
		total.Stored += r.Stored
		total.Refused += r.Refused
		total.FetchedBytes += r.FetchedBytes
		if err != nil || complete || r.Stored == 0 {
			if errors.Is(err, errBrokeProtocol) {
				n.refuse(p, err.Error())
			}
			return total, err
		}
	}
	return total, nil
}

// syncSession runs one reconciliation session with p and fetches what it found missing; complete
// reports whether the session covered the whole set.
func (n *Network) syncSession(ctx context.Context, p peer.ID) (r SyncResult, complete bool, err error) {
	c := n.peerClient(p)
	s := reconcile.NewSession(n.cat.Index())
	msg, err := s.Start(ctx)
	if err != nil {
		return r, false, err
	}
	for {
		if r.Rounds++; r.Rounds > maxSyncRounds {
			return r, false, fmt.Errorf("reconciliation with %s did not end after %d rounds", p, maxSyncRounds)
		}
		out, err := msg.MarshalBinary()
		if err != nil {
			return r, false, err
		}
		cctx, cancel := context.WithTimeout(ctx, rpcCallTimeout)
		resp, err := c.Reconcile(cctx, connect.NewRequest(&schakelv1.ReconcileRequest{Message: out}))
		cancel()
		if err != nil {
			return r, false, err
		}
		in := resp.Msg.GetMessage()
		r.BytesOut += len(out)
		r.BytesIn += len(in)
		reply, err := reconcile.ParseMessage(in)
		if err != nil {
			return r, false, fmt.Errorf("%w: %w", errBrokeProtocol, err)
		}
		next, done, err := s.Next(ctx, reply)
		if errors.Is(err, reconcile.ErrMalformed) || errors.Is(err, reconcile.ErrInconsistent) {
			return r, false, fmt.Errorf("%w: %w", errBrokeProtocol, err)
		}
		if err != nil {
			return r, false, err
		}
		if done {
			break
		}
		msg = next
	}
	missing := s.Missing()
	r.Missing = len(missing)
	for start := 0; start < len(missing); start += fetchBatch {
		batch := missing[start:min(start+fetchBatch, len(missing))]
		ids := make([][]byte, len(batch))
		for i, it := range batch {
			ids[i] = it.ID[:]
		}
		cctx, cancel := context.WithTimeout(ctx, rpcCallTimeout)
		resp, err := c.FetchDocuments(cctx, connect.NewRequest(&schakelv1.FetchDocumentsRequest{Ids: ids}))
		cancel()
		if err != nil {
			return r, false, err
		}
		docs := resp.Msg.GetDocuments()
		if len(docs) > len(batch) {
			return r, false, fmt.Errorf("%w: peer %s sent %d documents for %d ids", errBrokeProtocol, p, len(docs), len(batch))
		}
		served := len(docs)
		held := docs[:0:0]
		for i, doc := range docs {
			if len(doc) == 0 {
				continue // no longer held by the peer: replaced since the reconciliation
			}
			held = append(held, doc)
			r.FetchedBytes += len(doc)
			if DocumentID(doc) != batch[i].ID {
				return r, false, fmt.Errorf("%w: peer %s sent a document that is not the one asked for", errBrokeProtocol, p)
			}
			if len(doc) > n.cfg.MaxDocumentSize {
				return r, false, fmt.Errorf("peer %s sent a document of %d bytes", p, len(doc))
			}
		}
		docs = held
		stored, errs := n.backend.AcceptMany(fromPeer(ctx), docs)
		progress := false
		for i, err := range errs {
			switch {
			case err == nil && stored[i]:
				r.Stored++
				progress = true
				if len(missing) <= maxRelay {
					n.relay(docs[i])
				}
				n.m.documents.WithLabelValues("sync", "stored").Inc()
			case err == nil:
				n.m.documents.WithLabelValues("sync", "duplicate").Inc()
			case errors.Is(err, ErrPending):
				n.held.add(docs[i])
				n.m.documents.WithLabelValues("sync", "held").Inc()
			case errors.Is(err, ErrStale):
				n.m.documents.WithLabelValues("sync", "stale").Inc()
			default:
				// A document can stop verifying for this node without fault of the peer (it
				// expired, or its issuer is not trusted here): count it, do not abort.
				r.Refused++
				n.m.documents.WithLabelValues("sync", "refused").Inc()
			}
		}
		if progress {
			n.retryHeld(ctx)
		}
		if served < len(batch) {
			// The answer was cut at the size bound (or the peer lost documents meanwhile): the
			// rest comes in the next session.
			return r, false, nil
		}
	}
	return r, s.Complete(), nil
}

// SyncStats returns the totals of every reconciliation this node started, for operators and tests.
func (n *Network) SyncStats() SyncResult {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.syncTotals
}

// syncWith runs Sync and records its outcome in the peer's state and the metrics.
func (n *Network) syncWith(ctx context.Context, p peer.ID) {
	r, err := n.Sync(ctx, p)
	n.mu.Lock()
	t := &n.syncTotals
	t.Rounds, t.BytesOut, t.BytesIn, t.Missing = t.Rounds+r.Rounds, t.BytesOut+r.BytesOut, t.BytesIn+r.BytesIn, t.Missing+r.Missing
	t.Stored, t.Refused, t.FetchedBytes = t.Stored+r.Stored, t.Refused+r.Refused, t.FetchedBytes+r.FetchedBytes
	n.mu.Unlock()
	n.m.syncBytes.WithLabelValues("out").Add(float64(r.BytesOut))
	n.m.syncBytes.WithLabelValues("in").Add(float64(r.BytesIn + r.FetchedBytes))
	n.mu.Lock()
	s := n.state(p)
	s.lastSync, s.syncs, s.fetched = n.cfg.Now(), s.syncs+1, s.fetched+r.Stored
	s.lastSyncErr = ""
	if err != nil {
		s.lastSyncErr = err.Error()
	}
	n.mu.Unlock()
	if err != nil {
		n.m.syncRounds.WithLabelValues("error").Inc()
		if ctx.Err() == nil {
			n.log.Warn("reconciliation failed", slog.String("peer", p.String()), slog.Any("error", err))
		}
		return
	}
	n.m.syncRounds.WithLabelValues("ok").Inc()
	if r.Missing > 0 {
		n.log.Info("caught up", slog.String("peer", p.String()), slog.Int("documents", r.Stored), slog.Int("rounds", r.Rounds))
	}
}
