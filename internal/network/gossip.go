package network

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Gossip scoring. A peer that forwards one invalid document has skipped verification or forged
// it: the penalty alone takes it below the graylist threshold, after which its messages are
// dropped unread. A peer that is not admitted is kept out by the peer filter (no mesh, no gossip
// to it) and by the validators (its messages are rejected, which scores it down); it is not
// scored down up front, because gossipsub drops even the subscription announcements of a
// graylisted peer, and those are sent once, when the connection opens — before admission ends.
const (
	invalidMessageWeight = -100
	gossipThreshold      = -10
	publishThreshold     = -50
	graylistThreshold    = -80
)

func scoreParams() (*pubsub.PeerScoreParams, *pubsub.PeerScoreThresholds) {
	topic := func() *pubsub.TopicScoreParams {
		return &pubsub.TopicScoreParams{
			SkipAtomicValidation:           true,
			TimeInMeshQuantum:              time.Second, // divides even when its weight is zero
			TopicWeight:                    1,
			InvalidMessageDeliveriesWeight: invalidMessageWeight,
			InvalidMessageDeliveriesDecay:  pubsub.ScoreParameterDecay(time.Hour),
		}
	}
	params := &pubsub.PeerScoreParams{
		Topics:            map[string]*pubsub.TopicScoreParams{TopicDocuments: topic(), TopicCheckpoints: topic()},
		AppSpecificScore:  func(peer.ID) float64 { return 0 },
		AppSpecificWeight: 1,
		// Care organisations' nodes may well share addresses (one EHR vendor hosting many): no
		// colocation penalty.
		IPColocationFactorWeight:  0,
		BehaviourPenaltyWeight:    -10,
		BehaviourPenaltyThreshold: 6,
		BehaviourPenaltyDecay:     pubsub.ScoreParameterDecay(10 * time.Minute),
		DecayInterval:             time.Second,
		DecayToZero:               0.01,
		RetainScore:               time.Hour,
	}
	thresholds := &pubsub.PeerScoreThresholds{
		GossipThreshold:             gossipThreshold,
		PublishThreshold:            publishThreshold,
		GraylistThreshold:           graylistThreshold,
		AcceptPXThreshold:           1000, // peer exchange is off
		OpportunisticGraftThreshold: 1,
	}
	return params, thresholds
}

// messageID is the SHA-256 of the document, so that a document has one id on every path
// (gossip, reconciliation, fetch).
func messageID(m *pb.Message) string {
	id := DocumentID(m.Data)
	return string(id[:])
}

// GossipOptions are the gossipsub options of every schakel node: documents are their own
// message ids, unsigned by the router (they are signed already), peer exchange is off, messages
// are bounded, scoring as above, and only admitted peers share the mesh. Exported so that
// simulations run the same configuration.
func GossipOptions(admitted func(peer.ID) bool, maxDocumentSize int, logger *slog.Logger) []pubsub.Option {
	params, thresholds := scoreParams()
	return []pubsub.Option{
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(messageID),
		pubsub.WithPeerExchange(false),
		// A node sends what it publishes to every admitted peer in the topic, not only to its
		// mesh: right after admission the mesh is still empty (it forms at the next heartbeat),
		// and a message published into an empty mesh would reach no one until reconciliation.
		pubsub.WithFloodPublish(true),
		pubsub.WithMaxMessageSize(maxDocumentSize + 1024),
		pubsub.WithPeerScore(params, thresholds),
		pubsub.WithPeerFilter(func(p peer.ID, _ string) bool { return admitted(p) }),
		// gossipsub logs every RPC at debug level: keep its warnings only.
		pubsub.WithLogger(slog.New(levelAtLeast{logger.Handler(), slog.LevelWarn}).With(slog.String("component", "gossipsub"))),
	}
}

// meshTracer follows which peers share this node's mesh of the documents topic: gossip reaches a
// newly admitted peer directly only once the next heartbeat has grafted it.
type meshTracer struct {
	mu    sync.Mutex
	peers map[peer.ID]bool
}

func (t *meshTracer) set(p peer.ID, topic string, in bool) {
	if topic != TopicDocuments {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.peers == nil {
		t.peers = map[peer.ID]bool{}
	}
	if in {
		t.peers[p] = true
	} else {
		delete(t.peers, p)
	}
}

func (t *meshTracer) has(p peer.ID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.peers[p]
}

func (t *meshTracer) Graft(p peer.ID, topic string) { t.set(p, topic, true) }
func (t *meshTracer) Prune(p peer.ID, topic string) { t.set(p, topic, false) }

func (*meshTracer) OnNewOutboundStream(peer.ID, protocol.ID) {}

// OnClosedOutboundStream is how gossipsub reports a peer gone; it leaves every mesh untraced.
func (t *meshTracer) OnClosedOutboundStream(p peer.ID) { t.set(p, TopicDocuments, false) }

func (*meshTracer) Join(string)                                          {}
func (*meshTracer) Leave(string)                                         {}
func (*meshTracer) ValidateMessage(*pubsub.Message)                      {}
func (*meshTracer) DeliverMessage(*pubsub.Message)                       {}
func (*meshTracer) RejectMessage(*pubsub.Message, string)                {}
func (*meshTracer) DuplicateMessage(*pubsub.Message)                     {}
func (*meshTracer) ThrottlePeer(peer.ID)                                 {}
func (*meshTracer) RecvRPC(*pubsub.RPC)                                  {}
func (*meshTracer) SendRPC(*pubsub.RPC, peer.ID)                         {}
func (*meshTracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
func (*meshTracer) DropRPC(*pubsub.RPC, peer.ID)                         {}
func (*meshTracer) UndeliverableMessage(*pubsub.Message)                 {}

// InMesh reports whether p shares this node's gossip mesh of documents.
func (n *Network) InMesh(p peer.ID) bool { return n.mesh.has(p) }

// scoreInspectPeriod is how often gossipsub reports its peer scores to GossipScore.
const scoreInspectPeriod = time.Second

// gossipScores keeps the peer scores gossipsub last reported.
type gossipScores struct {
	mu     sync.Mutex
	scores map[peer.ID]float64
}

func (s *gossipScores) set(scores map[peer.ID]float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scores = scores
}

// GossipScore returns p's gossipsub peer score as of the last report (at most a second old),
// for operators and tests: below the graylist threshold (-80) the node drops p's gossip unread.
func (n *Network) GossipScore(p peer.ID) (score float64, ok bool) {
	n.scores.mu.Lock()
	defer n.scores.mu.Unlock()
	score, ok = n.scores.scores[p]
	return score, ok
}

func (n *Network) startGossip() error {
	admitted := func(p peer.ID) bool { return p == n.host.ID() || n.isAdmitted(p) }
	opts := append(GossipOptions(admitted, n.cfg.MaxDocumentSize, n.log), pubsub.WithRawTracer(&n.mesh),
		pubsub.WithPeerScoreInspect(pubsub.PeerScoreInspectFn(n.scores.set), scoreInspectPeriod))
	if n.cfg.Tap != nil {
		opts = append(opts, pubsub.WithRawTracer(tapTracer{n.cfg.Tap}))
	}
	ps, err := pubsub.NewGossipSub(n.ctx, n.host, opts...)
	if err != nil {
		return err
	}
	n.ps = ps
	validators := map[string]func(context.Context, peer.ID, *pubsub.Message) pubsub.ValidationResult{
		TopicDocuments:   n.validateDocument,
		TopicCheckpoints: n.validateNote,
	}
	for name, v := range validators {
		if err := ps.RegisterTopicValidator(name, v, pubsub.WithValidatorTimeout(30*time.Second)); err != nil {
			return err
		}
		t, err := ps.Join(name)
		if err != nil {
			return err
		}
		sub, err := t.Subscribe()
		if err != nil {
			return err
		}
		n.topics[name] = t
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			// Documents are handled in the validator; the subscription keeps the node in the mesh.
			for {
				if _, err := sub.Next(n.ctx); err != nil {
					sub.Cancel()
					return
				}
			}
		}()
	}
	return nil
}

// publishFresh gossips the documents this node stores of its own making, once committed.
func (n *Network) publishFresh() {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case doc := <-n.cat.fresh:
			if err := n.Publish(n.ctx, doc); err != nil && n.ctx.Err() == nil {
				n.log.Warn("gossip publish failed", slog.Any("error", err))
			}
		}
	}
}

// levelAtLeast passes records of at least its level to h.
type levelAtLeast struct {
	slog.Handler
	min slog.Level
}

func (h levelAtLeast) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h levelAtLeast) WithAttrs(a []slog.Attr) slog.Handler {
	return levelAtLeast{h.Handler.WithAttrs(a), h.min}
}

func (h levelAtLeast) WithGroup(g string) slog.Handler {
	return levelAtLeast{h.Handler.WithGroup(g), h.min}
}

// Publish gossips a document the node has just stored (its own key event, credential, status
// list). Old documents are never re-published: peers that missed them catch up by reconciliation.
func (n *Network) Publish(ctx context.Context, doc []byte) error {
	return n.publish(ctx, TopicDocuments, doc)
}

// PublishNote gossips a checkpoint or cosignature.
func (n *Network) PublishNote(ctx context.Context, note []byte) error {
	return n.publish(ctx, TopicCheckpoints, note)
}

func (n *Network) publish(ctx context.Context, topic string, doc []byte) error {
	t := n.topics[topic]
	if t == nil {
		return errors.New("network: not started")
	}
	err := t.Publish(ctx, doc)
	if err == nil {
		n.m.gossip.WithLabelValues(topic, "published").Inc()
	}
	return err
}

// validateDocument is the documents topic's validator: it runs the full verification and stores
// the document before gossipsub forwards it, so nothing unverified is forwarded and nothing
// forwarded is lost.
func (n *Network) validateDocument(ctx context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
	if from == n.host.ID() {
		return pubsub.ValidationAccept // published by this node after storing it
	}
	if r, ok := n.checkSender(TopicDocuments, from); !ok {
		return r
	}
	if len(m.Data) > n.cfg.MaxDocumentSize {
		n.m.gossip.WithLabelValues(TopicDocuments, "rejected").Inc()
		return pubsub.ValidationReject
	}
	return n.result(TopicDocuments, n.accept(ctx, m.Data, "gossip"))
}

func (n *Network) validateNote(ctx context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
	if from == n.host.ID() {
		return pubsub.ValidationAccept
	}
	if r, ok := n.checkSender(TopicCheckpoints, from); !ok {
		return r
	}
	if len(m.Data) > n.cfg.MaxDocumentSize {
		n.m.gossip.WithLabelValues(TopicCheckpoints, "rejected").Inc()
		return pubsub.ValidationReject
	}
	err := n.backend.AcceptNote(ctx, from, m.Data)
	if err != nil {
		n.log.Debug("note not accepted", slog.String("peer", from.String()), slog.Any("error", err))
	}
	return n.result(TopicCheckpoints, err)
}

// checkSender decides on a message forwarded by a peer that is not admitted. During the bootstrap
// exchange the other side may already forward messages (it learnt of this node's admission a
// moment earlier): the validator waits for the exchange to end (at most the bootstrap timeout;
// at most maxNewcomers peers are ever in it), because gossipsub marks a message seen once
// validated and would not take it again from anyone. A message from a peer that was not
// admitted is rejected, which scores the peer down; one from a peer whose exchange failed is
// ignored.
func (n *Network) checkSender(topic string, from peer.ID) (pubsub.ValidationResult, bool) {
	if n.isAdmitted(from) {
		return pubsub.ValidationAccept, true
	}
	n.mu.Lock()
	s, ok := n.peers[from]
	pending := ok && s.helloing
	n.mu.Unlock()
	if pending {
		if n.awaitAdmission(from) {
			return pubsub.ValidationAccept, true
		}
		n.m.gossip.WithLabelValues(topic, "ignored").Inc()
		return pubsub.ValidationIgnore, false
	}
	n.m.gossip.WithLabelValues(topic, "rejected").Inc()
	n.log.Debug("gossip from a peer not admitted", slog.String("peer", from.String()))
	return pubsub.ValidationReject, false
}

// result turns the outcome of accepting a document into a gossip decision.
func (n *Network) result(topic string, err error) pubsub.ValidationResult {
	switch {
	case err == nil:
		n.m.gossip.WithLabelValues(topic, "accepted").Inc()
		return pubsub.ValidationAccept
	case errors.Is(err, errDuplicate), errors.Is(err, ErrPending), errors.Is(err, ErrStale), errors.Is(err, context.Canceled):
		n.m.gossip.WithLabelValues(topic, "ignored").Inc()
		return pubsub.ValidationIgnore
	default:
		n.m.gossip.WithLabelValues(topic, "rejected").Inc()
		n.log.Debug("gossip rejected", slog.Any("error", err))
		return pubsub.ValidationReject
	}
}

var errDuplicate = errors.New("already held")

// accept verifies and stores one document from a peer; a document waiting for another is held.
// After a document is stored, held ones are retried.
func (n *Network) accept(ctx context.Context, doc []byte, source string) error {
	stored, err := n.backend.Accept(fromPeer(ctx), doc)
	switch {
	case err == nil && !stored:
		n.m.documents.WithLabelValues(source, "duplicate").Inc()
		return errDuplicate
	case err == nil:
		n.m.documents.WithLabelValues(source, "stored").Inc()
		n.retryHeld(ctx)
		return nil
	case errors.Is(err, ErrPending):
		n.held.add(doc)
		n.m.documents.WithLabelValues(source, "held").Inc()
		return err
	default:
		n.m.documents.WithLabelValues(source, "refused").Inc()
		n.log.Debug("document refused", slog.String("source", source), slog.Any("error", err))
		return err
	}
}

// retryHeld retries held documents until none of them can be stored. Only one goroutine retries
// at a time; a call that finds it busy asks it for one more pass, so that a document stored
// while a pass was under way is not missed.
func (n *Network) retryHeld(ctx context.Context) {
	n.held.again.Store(true)
	if !n.held.tryLock() {
		return
	}
	defer n.held.unlock()
	for n.held.again.Swap(false) {
		for {
			progress := false
			for _, doc := range n.held.snapshot() {
				stored, err := n.backend.Accept(fromPeer(ctx), doc)
				if errors.Is(err, ErrPending) {
					continue
				}
				n.held.remove(doc)
				if err == nil && stored {
					n.m.documents.WithLabelValues("held", "stored").Inc()
					progress = true
					// Gossipsub did not forward it while it waited (the validator said Ignore):
					// this node passes it on now, so that it is not left to reconciliation.
					go func() {
						if err := n.Publish(n.ctx, doc); err != nil && n.ctx.Err() == nil {
							n.log.Debug("forwarding a held document failed", slog.Any("error", err))
						}
					}()
				}
			}
			if !progress {
				break
			}
		}
	}
}

// Held bounds: documents wait at most heldFor for what they depend on; at most maxHeld wait.
const (
	heldFor = 10 * time.Minute
	maxHeld = 4096
)

// heldQueue keeps documents that arrived before what they depend on.
type heldQueue struct {
	now   func() time.Time
	retry sync.Mutex
	again atomic.Bool

	mu   sync.Mutex
	docs map[[32]byte]heldDoc
}

type heldDoc struct {
	doc   []byte
	since time.Time
}

func newHeldQueue(now func() time.Time) *heldQueue {
	return &heldQueue{now: now, docs: map[[32]byte]heldDoc{}}
}

func (q *heldQueue) tryLock() bool { return q.retry.TryLock() }
func (q *heldQueue) unlock()       { q.retry.Unlock() }

func (q *heldQueue) add(doc []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	for id, h := range q.docs {
		if now.Sub(h.since) > heldFor {
			delete(q.docs, id)
		}
	}
	if len(q.docs) >= maxHeld {
		var oldest [32]byte
		var t time.Time
		for id, h := range q.docs {
			if t.IsZero() || h.since.Before(t) {
				oldest, t = id, h.since
			}
		}
		delete(q.docs, oldest)
	}
	id := DocumentID(doc)
	if _, ok := q.docs[id]; !ok {
		q.docs[id] = heldDoc{doc: doc, since: now}
	}
}

func (q *heldQueue) remove(doc []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.docs, DocumentID(doc))
}

func (q *heldQueue) snapshot() [][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([][]byte, 0, len(q.docs))
	for _, h := range q.docs {
		out = append(out, h.doc)
	}
	return out
}

func (q *heldQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.docs)
}

// Held returns how many documents wait for one they depend on.
func (n *Network) Held() int { return n.held.len() }
