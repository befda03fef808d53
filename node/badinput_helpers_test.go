package node

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/schakel-health/schakel/internal/accesslog/verify"
	"github.com/schakel-health/schakel/internal/store"
)

// Helpers of the bad-input tables (DESIGN §2 invariant 6): every refused input must leave the
// storage of every node it reached as it was, byte for byte, which a node's store digest shows.

// quietNode keeps the background writers of a node still, so that what changes its storage is
// the input under test: access logs make no checkpoint on a timer (so there is nothing new to
// witness and cosign) and reconciliation runs only on admission.
func quietNode(c *Config) {
	c.Log.CheckpointInterval = time.Hour
	c.SyncInterval = time.Hour
}

// storeState is a node's storage at one moment: the digest of every key and value, and a
// snapshot that names what changed, rewrites of unchanged values included.
type storeState struct {
	sum  [32]byte
	keys int
	snap store.Snapshot
}

// stateOf reads n's storage.
func stateOf(t testing.TB, n *Node) storeState {
	t.Helper()
	ctx := t.Context()
	sum, keys, err := n.db.Digest(ctx)
	if err != nil {
		t.Fatalf("Digest: %v", err)
	}
	snap, err := n.db.Snapshot(ctx)
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	return storeState{sum: sum, keys: keys, snap: snap}
}

// changesSince lists what was written to n's storage since before.
func changesSince(t testing.TB, n *Node, before storeState) (storeState, []store.Change) {
	t.Helper()
	now := stateOf(t, n)
	return now, before.snap.Diff(now.snap)
}

// describeChanges renders changes for a failure message, at most 20 of them.
func describeChanges(cs []store.Change) string {
	var b strings.Builder
	for i, c := range cs {
		if i == 20 {
			fmt.Fprintf(&b, "\n\t… and %d more", len(cs)-i)
			break
		}
		b.WriteString("\n\t" + c.String())
	}
	return b.String()
}

// requireUnchanged fails unless n's storage is exactly as in before: the same digest, and not a
// key written since, not even with the value it held.
func requireUnchanged(t testing.TB, what string, n *Node, before storeState) {
	t.Helper()
	now, cs := changesSince(t, n, before)
	if now.sum != before.sum || now.keys != before.keys || len(cs) != 0 {
		t.Fatalf("%s changed the storage of %s: digest %x (%d keys) → %x (%d keys); changes:%s",
			what, n.PeerID(), before.sum[:8], before.keys, now.sum[:8], now.keys, describeChanges(cs))
	}
}

// settle waits until the storage of every node has stayed the same for a while (longer than the
// one-second poll of the checkpoint publisher, so that a checkpoint, its witnessing and the
// cosignatures that come back have all landed) and returns their states.
func settle(t testing.TB, nodes ...*Node) []storeState {
	t.Helper()
	const quiet = 2 * time.Second
	deadline := time.Now().Add(30 * time.Second)
	states := make([]storeState, len(nodes))
	for i, n := range nodes {
		states[i] = stateOf(t, n)
	}
	since := time.Now()
	for time.Since(since) < quiet {
		if time.Now().After(deadline) {
			t.Fatalf("the nodes' storage did not settle in 30s")
		}
		time.Sleep(200 * time.Millisecond)
		for i, n := range nodes {
			if s := stateOf(t, n); s.sum != states[i].sum || len(states[i].snap.Diff(s.snap)) != 0 {
				states[i], since = s, time.Now()
			}
		}
	}
	return states
}

// requireOneRefusal fails unless the only change to n's storage since before is one new entry in
// org's access log that records a refused access decision whose reason contains reason, and, when
// spends is set, the record of the assertion's jti as used. A refused token request that reached
// a decision is logged (invariant 4): that entry is the one trace it may leave; a decision on an
// assertion that opened also spends its jti, in the same transaction.
func requireOneRefusal(t testing.TB, what string, n *Node, org string, before storeState, sizeBefore int64, reason string, spends bool) {
	t.Helper()
	hl, err := n.logOf(org)
	if err != nil {
		t.Fatalf("logOf: %v", err)
	}
	if size := hl.log.Size(); size != sizeBefore+1 {
		t.Fatalf("%s: the access log of %s grew from %d to %d entries, want one more", what, org, sizeBefore, size)
	}
	raw, err := hl.log.Entries(t.Context(), sizeBefore, sizeBefore+1)
	if err != nil {
		t.Fatalf("Entries: %v", err)
	}
	e, err := verify.ParseEntry(raw[0])
	if err != nil {
		t.Fatalf("ParseEntry: %v", err)
	}
	if e.Event != verify.EventAccessDecision || e.Outcome != verify.OutcomeRefused || !strings.Contains(e.Reason, reason) {
		t.Fatalf("%s: new log entry %s/%s with reason %q; want a refused access decision naming %q", what, e.Event, e.Outcome, e.Reason, reason)
	}
	_, cs := changesSince(t, n, before)
	spent := 0
	for _, c := range cs {
		switch {
		case c.Namespace() == "accesslog" && (c.Kind == store.Added || c.Kind == store.Modified):
		case c.Namespace() == "authz-replay" && c.Kind == store.Added:
			spent++
		default:
			t.Fatalf("%s: besides its log entry, changed the storage of %s:%s", what, n.PeerID(), describeChanges(cs))
		}
	}
	if want := map[bool]int{false: 0, true: 1}[spends]; spent != want {
		t.Fatalf("%s: %d jti records written, want %d:%s", what, spent, want, describeChanges(cs))
	}
}
