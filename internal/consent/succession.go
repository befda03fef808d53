package consent

import (
	"context"
	"fmt"
	"slices"

	"github.com/schakel-health/schakel/internal/store"
)

// maxPredecessors bounds the predecessors of one organisation, transitively: enough for a
// hospital group that absorbed every practice in a region, small enough that a decision's lookup
// stays a few hundred seeks at worst.
const maxPredecessors = 256

// AddSuccession records that successor continues predecessor (a CustodianSuccessionCredential:
// renamed, merged, or moved to other systems, with a new URA). From then on consents recorded at
// the predecessor count for the successor as custodian (Custodians), and consents naming the
// predecessor as grantee count for the successor as requester (Predecessors). Adding a known
// succession again changes nothing. A succession that would make a cycle, or give successor more
// than 256 predecessors, is refused with ErrInvalid.
func (s *Store) AddSuccession(ctx context.Context, predecessor, successor string) error {
	switch {
	case !validDID(predecessor):
		return fmt.Errorf("add succession: %w", invalid("predecessor is not a DID of at most %d bytes", maxDID))
	case !validDID(successor):
		return fmt.Errorf("add succession: %w", invalid("successor is not a DID of at most %d bytes", maxDID))
	case predecessor == successor:
		return fmt.Errorf("add succession: %w", invalid("an organisation cannot succeed itself"))
	}
	defer s.preds.Invalidate()
	err := s.update(ctx, func(tx *store.Txn, _ *changes) error {
		key := successionKey(successor, predecessor)
		if ok, err := tx.Has(ns, key); err != nil || ok {
			return err
		}
		earlier, err := predecessorsTx(tx, predecessor)
		if err != nil {
			return err
		}
		if slices.Contains(earlier, successor) {
			return invalid("%s already precedes %s: the succession would make a cycle", successor, predecessor)
		}
		current, err := predecessorsTx(tx, successor)
		if err != nil {
			return err
		}
		n := len(current)
		for _, p := range append(earlier, predecessor) {
			if !slices.Contains(current, p) {
				n++
			}
		}
		if n > maxPredecessors {
			return invalid("%s would have %d predecessors, more than %d", successor, n, maxPredecessors)
		}
		return tx.Set(ns, key, nil)
	})
	if err != nil {
		return fmt.Errorf("add succession: %w", err)
	}
	return nil
}

// Predecessors returns every organisation did succeeded, directly or through others, nearest
// first, without did itself. It is safe against cycles (which AddSuccession refuses anyway).
func (s *Store) Predecessors(ctx context.Context, did string) ([]string, error) {
	if !validDID(did) {
		return nil, fmt.Errorf("predecessors: %w", invalid("not a DID of at most %d bytes", maxDID))
	}
	// Successions are rare and every decision asks: the answer is remembered until the next.
	out, err := s.preds.Get(did, func() ([]string, error) {
		var out []string
		err := s.db.View(ctx, func(tx *store.Txn) error {
			var err error
			out, err = predecessorsTx(tx, did)
			return err
		})
		return out, err
	})
	if err != nil {
		return nil, fmt.Errorf("predecessors: %w", err)
	}
	return slices.Clip(out), nil
}

// Custodians returns did followed by its Predecessors: the custodians whose consents count when
// did is the custodian asked. Pass the result to ForPatient and as Request.Custodians.
func (s *Store) Custodians(ctx context.Context, did string) ([]string, error) {
	p, err := s.Predecessors(ctx, did)
	if err != nil {
		return nil, err
	}
	return append([]string{did}, p...), nil
}

// custodiansTx is Custodians inside a transaction.
func custodiansTx(tx *store.Txn, did string) ([]string, error) {
	p, err := predecessorsTx(tx, did)
	if err != nil {
		return nil, err
	}
	return append([]string{did}, p...), nil
}

// predecessorsTx walks the succession graph breadth first from did. It stops at
// maxPredecessors, which AddSuccession never lets a chain exceed.
func predecessorsTx(tx *store.Txn, did string) ([]string, error) {
	var out []string
	queue := []string{did}
	for len(queue) > 0 && len(out) < maxPredecessors {
		cur := queue[0]
		queue = queue[1:]
		prefix := successionPrefix(cur)
		err := tx.Iterate(ns, prefix, store.IterOptions{KeysOnly: true}, func(k, _ []byte) error {
			p := string(k[len(prefix):])
			if p == did || slices.Contains(out, p) {
				return nil
			}
			if len(out) >= maxPredecessors {
				return store.ErrStop
			}
			out = append(out, p)
			queue = append(queue, p)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
