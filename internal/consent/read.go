package consent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/schakel-health/schakel/internal/store"
)

// getRecord reads the record with id.
func getRecord(tx *store.Txn, id string) (Consent, error) {
	if !validID(id) {
		return Consent{}, invalid("consent id is not 1 to %d printable ASCII characters (and no BSN)", maxID)
	}
	loc, err := tx.Get(ns, idKey(id))
	if errors.Is(err, store.ErrNotFound) {
		return Consent{}, fmt.Errorf("consent %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Consent{}, err
	}
	cust, patient, ok := bytes.Cut(loc, []byte{0})
	if !ok {
		return Consent{}, fmt.Errorf("%w: index of consent %s", ErrCorrupt, id)
	}
	raw, err := tx.Get(ns, recordKey(string(cust), string(patient), id))
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Consent{}, fmt.Errorf("%w: consent %s is indexed but not stored", ErrCorrupt, id)
		}
		return Consent{}, err
	}
	var c Consent
	if err := decode(raw, &c); err != nil {
		return Consent{}, fmt.Errorf("consent %s: %w", id, err)
	}
	return c, nil
}

// Get returns the consent with id, whatever its status.
func (s *Store) Get(ctx context.Context, id string) (Consent, error) {
	var c Consent
	err := s.db.View(ctx, func(tx *store.Txn) error {
		var err error
		c, err = getRecord(tx, id)
		return err
	})
	if err != nil {
		return Consent{}, fmt.Errorf("get consent: %w", err)
	}
	return c, nil
}

// Bounds on a ForPatient lookup, which cost at most their product in point lookups: a custodian
// and all its predecessors; the pseudonyms of one BSN under every secret version of the
// custodian and of each predecessor hosted on the same node.
const (
	maxLookupCustodians = 1 + maxPredecessors
	maxLookupPseudonyms = 64
)

// ForPatient returns every record, in any status, of the patient known by any of pseudonyms (the
// pseudonyms of one BSN under each secret version, crypto.Pseudonymizer.All) at any of custodians
// (a custodian and its predecessors, Custodians). This is the lookup behind every access
// decision. For each (custodian, pseudonym) pair it makes one point lookup of the pair's marker,
// which badger's bloom filters answer without reading a block when the pair has no records, and
// one prefix seek on the record index when it has: O(log n) in the number of stored consents,
// then only the patient's own records; nothing is scanned. Records come grouped by custodian
// and pseudonym in the order given. Duplicated arguments are looked up once.
func (s *Store) ForPatient(ctx context.Context, custodians, pseudonyms []string) ([]Consent, error) {
	if err := checkLookup(custodians, pseudonyms); err != nil {
		return nil, fmt.Errorf("consents for patient: %w", err)
	}
	var out []Consent
	err := s.db.View(ctx, func(tx *store.Txn) error {
		for i, cust := range custodians {
			if slices.Contains(custodians[:i], cust) {
				continue
			}
			for j, p := range pseudonyms {
				if slices.Contains(pseudonyms[:j], p) {
					continue
				}
				err := forRecords(tx, cust, p, func(v []byte) error {
					out = append(out, Consent{})
					return decode(v, &out[len(out)-1])
				})
				if err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("consents for patient: %w", err)
	}
	return out, nil
}

func checkLookup(custodians, pseudonyms []string) error {
	if n := len(custodians); n == 0 || n > maxLookupCustodians {
		return invalid("%d custodians, want 1 to %d", n, maxLookupCustodians)
	}
	if n := len(pseudonyms); n == 0 || n > maxLookupPseudonyms {
		return invalid("%d pseudonyms, want 1 to %d", n, maxLookupPseudonyms)
	}
	for _, c := range custodians {
		if !validDID(c) {
			return invalid("custodian is not a DID of at most %d bytes", maxDID)
		}
	}
	for _, p := range pseudonyms {
		if !validToken(p, maxPseudonym) {
			return invalid("patient is not a pseudonym of 1 to %d printable ASCII characters", maxPseudonym)
		}
	}
	return nil
}

// Limits of List.
const (
	defaultListLimit = 100
	maxListLimit     = 1000
)

// listOrder is the order in which List with no status goes through the statuses: the work
// queue first.
var listOrder = []Status{StatusPending, StatusActive, StatusRejected, StatusRevoked, StatusSuperseded}

// List returns up to limit records of custodian with status, oldest first, for operators (the
// queue of pending requests, say). An empty status lists every status, pending first, then
// active, rejected, revoked and superseded. limit 0 means 100; at most 1000.
func (s *Store) List(ctx context.Context, custodian string, status Status, limit int) ([]Consent, error) {
	switch {
	case !validDID(custodian):
		return nil, fmt.Errorf("list consents: %w", invalid("custodian is not a DID of at most %d bytes", maxDID))
	case status != "" && !slices.Contains(listOrder, status):
		return nil, fmt.Errorf("list consents: %w", invalid("status %q is not known", clip(string(status))))
	case limit < 0 || limit > maxListLimit:
		return nil, fmt.Errorf("list consents: %w", invalid("limit %d, want 0 to %d", limit, maxListLimit))
	case limit == 0:
		limit = defaultListLimit
	}
	statuses := listOrder
	if status != "" {
		statuses = []Status{status}
	}
	var out []Consent
	err := s.db.View(ctx, func(tx *store.Txn) error {
		for _, st := range statuses {
			prefix := statusPrefix(custodian, st)
			err := tx.Iterate(ns, prefix, store.IterOptions{Limit: limit - len(out)}, func(k, v []byte) error {
				if len(k) < len(prefix)+8 {
					return fmt.Errorf("%w: status index key of %d bytes", ErrCorrupt, len(k))
				}
				id := string(k[len(prefix)+8:])
				raw, err := tx.Get(ns, recordKey(custodian, string(v), id))
				if err != nil {
					return fmt.Errorf("consent %s in the status index: %w", id, err)
				}
				out = append(out, Consent{})
				return decode(raw, &out[len(out)-1])
			})
			if err != nil || len(out) >= limit {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list consents: %w", err)
	}
	return out, nil
}
