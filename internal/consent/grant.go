package consent

import (
	"context"
	"errors"
	"fmt"
	"github.com/schakel-health/schakel/crypto"
	"strings"
	"time"

	"github.com/schakel-health/schakel/internal/store"
)

// Grant is a referral grant: for planned care the referring custodian lets one named
// organisation read named data of one patient for a short time, with no consent needed (the
// ReferralGrantCredential carries it to the grantee). Policy.Decide checks custodian, grantee,
// patient, period, revocation, data category and purpose; Resources are enforced later, by the
// scope of the token issued on it.
type Grant struct {
	// ID is the grant's id, the credential's if it has one; AddGrant assigns a urn:uuid when empty.
	ID string `json:"id"`
	// Custodian is the DID of the referring organisation that holds the data.
	Custodian string `json:"custodian"`
	// Grantee is the DID of the organisation referred to.
	Grantee string `json:"grantee"`
	// Patient is the custodian's pseudonym of the patient.
	Patient string `json:"patient"`
	// DataCategories are the categories the grantee may read; "*" for all.
	DataCategories []string `json:"dataCategories"`
	// Resources are FHIR references (e.g. "DocumentReference/123") the token will be scoped to;
	// empty means the whole categories.
	Resources []string `json:"resources,omitempty"`
	// Purpose is the one HL7 PurposeOfUse code the grant is for, normally TREAT.
	Purpose string `json:"purpose"`
	// ValidFrom and ValidUntil bound the grant; zero ValidFrom means when added. ValidUntil is
	// required and at most 30 days after ValidFrom.
	ValidFrom  time.Time `json:"validFrom"`
	ValidUntil time.Time `json:"validUntil"`
	// Revoked is set by RevokeGrant.
	Revoked bool `json:"revoked,omitempty"`
	// Created is when the grant was added (assigned).
	Created time.Time `json:"created"`
}

// Limits of a grant.
const (
	// MaxGrantLifetime is the longest a referral grant may run: it is for one referral, not a
	// standing permission.
	MaxGrantLifetime = 30 * 24 * time.Hour
	// grantRetention is how long a grant stays stored after it ends, for inspection; then the
	// store expires it (the access log keeps its id with every decision made on it).
	grantRetention = 30 * 24 * time.Hour
	maxResources   = 64
	maxResource    = 256
)

func (g *Grant) validate(now time.Time) error {
	switch {
	case g.ID != "" && !validID(g.ID):
		return invalid("grant id is not 1 to %d printable ASCII characters (and no BSN)", maxID)
	case !validDID(g.Custodian):
		return invalid("custodian is not a DID of at most %d bytes", maxDID)
	case !validDID(g.Grantee):
		return invalid("grantee is not a DID of at most %d bytes", maxDID)
	case g.Grantee == g.Custodian:
		return invalid("a custodian cannot grant to itself")
	case !validToken(g.Patient, maxPseudonym):
		return invalid("patient is not a pseudonym of 1 to %d printable ASCII characters", maxPseudonym)
	case !validPurpose(g.Purpose):
		return invalid("purpose %q is not one PurposeOfUse code (2 to 16 of A-Z, 0-9, _)", clip(g.Purpose))
	case g.Revoked:
		return invalid("a new grant cannot be revoked already")
	case !g.Created.IsZero():
		return invalid("created is assigned by the store")
	case g.ValidUntil.IsZero():
		return invalid("validUntil is required: a referral grant is short-lived")
	}
	if err := validList(categoryCodes, g.DataCategories, maxCategories); err != nil {
		return err
	}
	if len(g.Resources) > maxResources {
		return invalid("%d resources, want at most %d", len(g.Resources), maxResources)
	}
	for i, r := range g.Resources {
		if !validReference(r) {
			return invalid("resource %d is not a FHIR reference Type/id of at most %d bytes", i, maxResource)
		}
	}
	from := g.ValidFrom
	if from.IsZero() {
		from = now
	}
	switch {
	case !g.ValidUntil.After(from):
		return invalid("validUntil %s is not after validFrom %s", g.ValidUntil.Format(time.RFC3339), from.Format(time.RFC3339))
	case g.ValidUntil.Sub(from) > MaxGrantLifetime:
		return invalid("grant runs %s, longer than the %d days a referral grant may", g.ValidUntil.Sub(from).Round(time.Minute), int(MaxGrantLifetime.Hours()/24))
	case !g.ValidUntil.After(now):
		return invalid("grant ended at %s, before it was added", g.ValidUntil.Format(time.RFC3339))
	}
	return nil
}

// validReference reports whether r is a relative FHIR reference "Type/id": a resource type of
// letters starting upper-case, and an id of 1 to 64 characters from [A-Za-z0-9.-] (FHIR R4 §2.1.3).
func validReference(r string) bool {
	if len(r) > maxResource {
		return false
	}
	typ, id, ok := strings.Cut(r, "/")
	if !ok || len(typ) == 0 || typ[0] < 'A' || typ[0] > 'Z' || len(id) == 0 || len(id) > 64 || crypto.ContainsBSN(id) {
		return false
	}
	for i := 0; i < len(typ); i++ {
		if c := typ[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// AddGrant stores a referral grant. It validates g, assigns an id when g has none and sets
// Created; a zero ValidFrom becomes now. A grant id already stored gives ErrExists. The grant is
// kept until 30 days after it ends, then expires from storage.
func (s *Store) AddGrant(ctx context.Context, g Grant) (Grant, error) {
	now := clock(s.now)
	if err := g.validate(now); err != nil {
		return Grant{}, fmt.Errorf("add grant: %w", err)
	}
	if g.ID == "" {
		id, err := newID()
		if err != nil {
			return Grant{}, err
		}
		g.ID = id
	}
	g.Created = now
	g.ValidFrom = utc(g.ValidFrom)
	if g.ValidFrom.IsZero() {
		g.ValidFrom = now
	}
	g.ValidUntil = utc(g.ValidUntil)
	g.DataCategories = sortedSet(g.DataCategories)
	g.Resources = sortedSet(g.Resources)
	if len(g.Resources) == 0 {
		g.Resources = nil
	}
	err := s.update(ctx, func(tx *store.Txn, ch *changes) error {
		if ok, err := tx.Has(ns, grantKey(g.ID)); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("grant %s: %w", g.ID, ErrExists)
		}
		if err := putGrant(tx, &g, now); err != nil {
			return err
		}
		ch.grants = append(ch.grants, grantChange{after: g})
		return nil
	})
	if err != nil {
		return Grant{}, fmt.Errorf("add grant: %w", err)
	}
	return g, nil
}

func putGrant(tx *store.Txn, g *Grant, now time.Time) error {
	v, err := encode(g)
	if err != nil {
		return err
	}
	// Positive: validate requires ValidUntil after now.
	ttl := max(g.ValidUntil.Sub(now), time.Second) + grantRetention
	return tx.SetTTL(ns, grantKey(g.ID), v, ttl)
}

func getGrant(tx *store.Txn, id string) (Grant, error) {
	if !validID(id) {
		return Grant{}, invalid("grant id is not 1 to %d printable ASCII characters (and no BSN)", maxID)
	}
	raw, err := tx.Get(ns, grantKey(id))
	if errors.Is(err, store.ErrNotFound) {
		return Grant{}, fmt.Errorf("grant %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Grant{}, err
	}
	var g Grant
	if err := decode(raw, &g); err != nil {
		return Grant{}, fmt.Errorf("grant %s: %w", id, err)
	}
	return g, nil
}

// Grant returns the grant with id, revoked or not; ErrNotFound once it has expired from storage.
func (s *Store) Grant(ctx context.Context, id string) (Grant, error) {
	var g Grant
	err := s.db.View(ctx, func(tx *store.Txn) error {
		var err error
		g, err = getGrant(tx, id)
		return err
	})
	if err != nil {
		return Grant{}, fmt.Errorf("get grant: %w", err)
	}
	return g, nil
}

// RevokeGrant revokes a grant at once; a grant revoked already gives ErrState.
func (s *Store) RevokeGrant(ctx context.Context, id string) (Grant, error) {
	now := clock(s.now)
	var g Grant
	err := s.update(ctx, func(tx *store.Txn, ch *changes) error {
		var err error
		if g, err = getGrant(tx, id); err != nil {
			return err
		}
		if g.Revoked {
			return fmt.Errorf("%w: grant %s is revoked already", ErrState, id)
		}
		before := g
		g.Revoked = true
		if err := putGrant(tx, &g, now); err != nil {
			return err
		}
		ch.grants = append(ch.grants, grantChange{before: &before, after: g})
		return nil
	})
	if err != nil {
		return Grant{}, fmt.Errorf("revoke grant: %w", err)
	}
	return g, nil
}
