package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/accesslog"
	"github.com/schakel-health/schakel/internal/accesslog/verify"
	"github.com/schakel-health/schakel/internal/accesslog/witness"
	"github.com/schakel-health/schakel/internal/did"
	"github.com/schakel-health/schakel/internal/network"
)

// Witnessing: every node follows the checkpoints of the access logs of the organisations it
// knows. For each new checkpoint it gets a consistency proof from the log's node, and if it holds,
// cosigns it (C2SP tlog-cosignature) and gossips the cosigned note; if not, it keeps both signed
// checkpoints as evidence and cosigns that log no more. Each node also publishes the checkpoints of
// the logs it hosts and collects the cosignatures others make of them, so that exports carry them.

const (
	witnessKeyName = "node.witness"
	// WitnessPrefix starts a node's witness name; the peer id follows.
	WitnessPrefix = "schakel.nl/witness/"
	// checkpointPoll is how often hosted logs are checked for a new checkpoint to publish.
	checkpointPoll = time.Second
)

// openWitness loads (or creates) the node's witness key and opens its witness state.
func (n *Node) openWitness(ctx context.Context) error {
	k, err := n.keys.Get(ctx, witnessKeyName)
	if errors.Is(err, crypto.ErrNotFound) {
		if k, err = crypto.GenerateKey(crypto.Ed25519, crypto.UseSign); err != nil {
			return err
		}
		err = n.keys.Put(ctx, witnessKeyName, k)
	}
	if err != nil {
		return fmt.Errorf("witness key: %w", err)
	}
	name := WitnessPrefix + n.peerID.String()
	cos, err := witness.NewCosigner(name, k, n.cfg.Now)
	if err != nil {
		return err
	}
	cfg := witness.DefaultConfig()
	cfg.Name, cfg.Now = name, n.cfg.Now
	if n.witness, err = witness.New(cfg, n.db, cos); err != nil {
		return err
	}
	n.witnessKey = cos.VerifierKey()
	return nil
}

// WitnessKey is the node's cosignature verifier key.
func (n *Node) WitnessKey() string { return n.witnessKey }

// Forks returns the logs this node caught forking, with the evidence.
func (n *Node) Forks(ctx context.Context) ([]witness.Fork, error) { return n.witness.Forks(ctx) }

// logOrg returns the organisation whose log has this origin.
func logOrg(origin string) (string, error) {
	suffix, ok := strings.CutPrefix(origin, accesslog.OriginPrefix)
	if !ok || suffix == "" {
		return "", fmt.Errorf("%w: origin %q is not a schakel access log", witness.ErrInvalid, clip(origin))
	}
	id := did.Method + suffix
	if err := did.ValidateDID(id); err != nil {
		return "", fmt.Errorf("%w: origin %q: %w", witness.ErrInvalid, clip(origin), err)
	}
	return id, nil
}

// logVerifier returns the note verifier of org's log from its DID document.
func (n *Node) logVerifier(ctx context.Context, org, origin string) (note.Verifier, error) {
	doc, _, err := n.dids.Document(ctx, org)
	if err != nil {
		return nil, fmt.Errorf("%w: DID document of %s: %w", network.ErrPending, org, err)
	}
	o, vkey, ok := doc.Log()
	if !ok || o != origin {
		return nil, fmt.Errorf("%w: %s publishes no log with origin %q", witness.ErrInvalid, org, clip(origin))
	}
	return note.NewVerifier(vkey)
}

// cosignatureVerifiers returns verifiers for the cosignature lines of msg whose witness names a
// peer bound to a known organisation whose DID document publishes that peer's witness key.
func (n *Node) cosignatureVerifiers(ctx context.Context, msg []byte) []note.Verifier {
	nt, err := verify.SplitNote(msg)
	if err != nil {
		return nil
	}
	var out []note.Verifier
	seen := map[string]bool{}
	for _, s := range append(nt.Sigs, nt.UnverifiedSigs...) {
		id, ok := strings.CutPrefix(s.Name, WitnessPrefix)
		if !ok || seen[id] {
			continue
		}
		seen[id] = true
		p, err := peer.Decode(id)
		if err != nil {
			continue
		}
		orgs, err := n.catalog.PeerOrganizations(ctx, p)
		if err != nil {
			continue
		}
		for _, org := range orgs {
			doc, _, err := n.dids.Document(ctx, org)
			if err != nil || doc.WitnessKey() == "" {
				continue
			}
			if v, err := verify.NewCosignatureVerifier(doc.WitnessKey()); err == nil && v.Name() == s.Name {
				out = append(out, v)
				break
			}
		}
	}
	return out
}

// checkpointSize returns the size of a signed checkpoint's body, -1 if it does not parse.
func checkpointSize(msg []byte) int64 {
	nt, err := verify.SplitNote(msg)
	if err != nil {
		return -1
	}
	c, err := verify.ParseCheckpoint([]byte(nt.Text))
	if err != nil {
		return -1
	}
	return c.Size
}

// AcceptNote implements network.Backend: a gossiped checkpoint, possibly with cosignatures.
func (b *peerBackend) AcceptNote(ctx context.Context, _ peer.ID, msg []byte) error {
	n := b.n
	origin, _, _ := bytes.Cut(msg, []byte("\n"))
	org, err := logOrg(string(origin))
	if err != nil {
		return err
	}
	lv, err := n.logVerifier(ctx, org, string(origin))
	if err != nil {
		return err
	}
	cosigners := n.cosignatureVerifiers(ctx, msg)
	if _, err := n.orgs.get(ctx, org); err == nil {
		// A checkpoint of a log hosted here: keep the cosignatures others made of it.
		added, err := n.witness.AddCosignatures(ctx, string(origin), msg, cosigners)
		if err != nil {
			return err
		}
		if added == 0 {
			return network.ErrStale
		}
		return nil
	}
	before := int64(-1)
	if prev, err := n.witness.Latest(ctx, string(origin)); err == nil {
		before = checkpointSize(prev)
	}
	cosigned, err := n.witness.Observe(ctx, string(origin), lv, msg, n.proofFrom(org, string(origin)))
	switch {
	case errors.Is(err, witness.ErrForked):
		n.forkAlarm.Inc()
		n.log.Error("access log fork detected: both signed checkpoints kept as evidence; no more cosignatures for this log",
			slog.String("origin", string(origin)), slog.String("org", org), slog.Any("error", err))
		return nil // the evidence travels on, so that every witness sees it
	case errors.Is(err, witness.ErrStale):
		if _, err := n.witness.AddCosignatures(ctx, string(origin), msg, cosigners); err != nil {
			return err
		}
		return network.ErrStale
	case errors.Is(err, witness.ErrProof):
		return fmt.Errorf("%w: %w", network.ErrPending, err)
	case err != nil:
		return err
	}
	if _, err := n.witness.AddCosignatures(ctx, string(origin), msg, cosigners); err != nil {
		return err
	}
	if checkpointSize(cosigned) > before {
		// A checkpoint this node had not cosigned before: its cosignature travels to the log's node
		// and the other witnesses.
		go func() {
			if err := n.net.PublishNote(n.life, cosigned); err != nil && n.life.Err() == nil {
				n.log.Warn("publishing a cosignature failed", slog.Any("error", err))
			}
		}()
	}
	return nil
}

// proofFrom fetches consistency proofs from the node hosting org.
func (n *Node) proofFrom(org, origin string) witness.ProofFunc {
	return func(ctx context.Context, oldSize, newSize int64) (tlog.TreeProof, error) {
		_, raw, err := n.net.LogProof(ctx, org, origin, oldSize, newSize)
		if err != nil {
			return nil, err
		}
		proof := make(tlog.TreeProof, len(raw))
		for i, h := range raw {
			if len(h) != tlog.HashSize {
				return nil, fmt.Errorf("%w: proof hash %d is %d bytes", witness.ErrInvalid, i, len(h))
			}
			proof[i] = tlog.Hash(h)
		}
		return proof, nil
	}
}

// LogProof implements network.Backend: the checkpoint of a hosted log at newSize and a
// consistency proof from oldSize.
func (b *peerBackend) LogProof(ctx context.Context, origin string, oldSize, newSize int64) ([]byte, [][]byte, error) {
	org, err := logOrg(origin)
	if err != nil {
		return nil, nil, err
	}
	hl, err := b.n.logOf(org)
	if err != nil {
		return nil, nil, err
	}
	ckpt, err := hl.log.Checkpoint(ctx, newSize)
	if err != nil {
		return nil, nil, err
	}
	proof, err := hl.log.ConsistencyProof(ctx, oldSize, newSize)
	if err != nil {
		return nil, nil, err
	}
	return ckpt, hashBytes(proof), nil
}

// publishCheckpoints gossips each new checkpoint of the logs hosted here, after witnessing it
// itself (a check of its own storage, and the record that others' cosignatures merge into).
func (n *Node) publishCheckpoints(ctx context.Context) {
	published := map[string]int64{}
	t := time.NewTicker(checkpointPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n.logs.mu.Lock()
		open := make(map[string]*hostedLog, len(n.logs.open))
		for org, hl := range n.logs.open {
			open[org] = hl
		}
		n.logs.mu.Unlock()
		for org, hl := range open {
			msg, size, err := hl.log.LatestCheckpoint(ctx)
			if err != nil || size <= published[org] {
				continue
			}
			origin := hl.log.Origin()
			lv, err := n.logVerifier(ctx, org, origin)
			if err != nil {
				continue
			}
			own := func(ctx context.Context, oldSize, newSize int64) (tlog.TreeProof, error) {
				return hl.log.ConsistencyProof(ctx, oldSize, newSize)
			}
			cosigned, err := n.witness.Observe(ctx, origin, lv, msg, own)
			if err != nil {
				n.log.Error("own checkpoint does not witness", slog.String("org", org), slog.Any("error", err))
				continue
			}
			if err := n.net.PublishNote(ctx, cosigned); err != nil {
				continue
			}
			published[org] = size
		}
	}
}
