package vc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/store"
)

var (
	nsVC  = store.MustNamespace("vc")
	nsDir = store.MustNamespace("dir")
)

// Key layout in the "vc" namespace:
//
//	c/<id>                   → compact credential
//	p/<did>/<id>             → kind; one per party (issuer and subject) for listing
//	sl/<list id>             → compact status list credential (the newest held)
//	sx/<list id>/<index>     → id of the credential at that index, to act on revocations
//	is/<issuer did>          → StatusListState of a hosted issuer
func credKey(id string) []byte            { return append([]byte("c/"), id...) }
func partyKey(did, id string) []byte      { return []byte("p/" + did + "/" + id) }
func listKey(id string) []byte            { return append([]byte("sl/"), id...) }
func slotKey(list string, i int) []byte   { return fmt.Appendf(nil, "sx/%s/%08d", list, i) }
func issuerStateKey(issuer string) []byte { return append([]byte("is/"), issuer...) }

// Store keeps verified credentials, status lists and the directory derived from them. Only
// credentials that pass every check are stored; a refused one leaves nothing behind. Everything it
// holds is public and, through OnChange, gossiped: it refuses a credential of a kind that is not
// Public (ErrNotPublic), whether added, received in a batch or issued. It is safe for
// concurrent use; writes are serialised so that the directory follows the credentials exactly.
type Store struct {
	db       *store.DB
	verifier *Verifier
	now      func() time.Time
	onChange ChangeFunc

	mu    sync.Mutex // serialises writes
	cache sync.Map   // list id → Bits, the newest held
}

// ChangeFunc is told, inside the transaction that makes the change, of a credential stored or,
// when removed is set, of a status list replaced by a newer one. issued is the credential's issue
// time. An error aborts the transaction.
type ChangeFunc func(tx *store.Txn, doc []byte, issued time.Time, removed bool) error

// StoreConfig configures a Store.
type StoreConfig struct {
	// Anchors are the trusted registers per credential kind.
	Anchors TrustAnchors
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// OnChange, when set, keeps an index of the public documents (the network's reconciliation
	// set) in the same transaction as the credentials themselves, so the two never disagree.
	OnChange ChangeFunc
}

// NewStore returns a Store over db that verifies with keys.
func NewStore(cfg StoreConfig, db *store.DB, keys KeyResolver) (*Store, error) {
	if db == nil || keys == nil {
		return nil, errors.New("vc: nil store or key resolver")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Store{db: db, now: cfg.Now, onChange: cfg.OnChange}
	s.verifier = NewVerifier(VerifierConfig{Anchors: cfg.Anchors, Now: cfg.Now}, keys, s)
	return s, nil
}

// Verifier returns the verifier the store checks with.
func (s *Store) Verifier() *Verifier { return s.verifier }

// Add verifies a compact credential and stores it. It reports whether it was new. A status list
// replaces the one held only when it is at least as recent and keeps every revocation of the one held
// (ErrRollback otherwise); credentials it newly revokes leave the directory in the same transaction.
func (s *Store) Add(ctx context.Context, compact []byte) (*Credential, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.add(ctx, compact)
}

func (s *Store) add(ctx context.Context, compact []byte) (*Credential, bool, error) {
	c, err := Parse(compact)
	if err != nil {
		return nil, false, err
	}
	if err := public(c); err != nil {
		return c, false, err
	}
	if c.Kind == StatusListCredential {
		if c, err = s.verifier.VerifySignature(ctx, compact); err != nil {
			return c, false, err
		}
		return s.addStatusList(ctx, c)
	}
	if c, err = s.verifier.Verify(ctx, compact); err != nil {
		return c, false, err
	}
	added := false
	err = s.db.Update(ctx, func(tx *store.Txn) error {
		var err error
		added, err = s.put(tx, c)
		return err
	})
	return c, added, err
}

// put stores a verified credential (not a status list) with its directory rows; it reports
// whether it was new.
func (s *Store) put(tx *store.Txn, c *Credential) (bool, error) {
	compact := c.JWT
	if held, err := tx.Get(nsVC, credKey(c.ID)); err == nil {
		if string(held) != string(compact) {
			return false, fmt.Errorf("%w: a different credential with id %s is held", ErrMalformed, c.ID)
		}
		return false, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	if err := tx.Set(nsVC, credKey(c.ID), compact); err != nil {
		return false, err
	}
	for _, party := range []string{c.Issuer, c.Subject} {
		if err := tx.Set(nsVC, partyKey(party, c.ID), []byte(c.Kind)); err != nil {
			return false, err
		}
	}
	if err := tx.Set(nsVC, slotKey(c.Status.StatusListCredential, c.Status.Index()), []byte(c.ID)); err != nil {
		return false, err
	}
	if err := s.changed(tx, compact, c.IssuedAt, false); err != nil {
		return false, err
	}
	return true, indexCredential(tx, c)
}

// AddResult is the outcome of one credential of AddMany.
type AddResult struct {
	Credential *Credential
	Added      bool
	Err        error
}

// AddMany verifies credentials and stores those that verify in one transaction, so that a batch
// (a peer's catch-up) costs one commit, not one per credential. Status lists are added one by
// one, before the others, in the order given. A credential that fails verification is reported
// in its result and does not stop the others; if the transaction fails, every credential it held
// reports that error and nothing of it is stored.
func (s *Store) AddMany(ctx context.Context, docs [][]byte) []AddResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]AddResult, len(docs))
	var batch []int
	for i, d := range docs {
		c, err := Parse(d)
		if err == nil {
			err = public(c)
		}
		if err != nil {
			out[i].Err = err
			continue
		}
		if c.Kind == StatusListCredential {
			out[i].Credential, out[i].Added, out[i].Err = s.add(ctx, d)
			continue
		}
		batch = append(batch, i)
	}
	// Verification is independent per credential: run it on every core.
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(runtime.GOMAXPROCS(0), len(batch)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				out[i].Credential, out[i].Err = s.verifier.Verify(ctx, docs[i])
			}
		}()
	}
	for _, i := range batch {
		next <- i
	}
	close(next)
	wg.Wait()
	err := s.db.Update(ctx, func(tx *store.Txn) error {
		for _, i := range batch {
			if out[i].Err != nil {
				continue
			}
			added, err := s.put(tx, out[i].Credential)
			if err != nil {
				if errors.Is(err, ErrMalformed) {
					out[i].Err = err
					continue
				}
				return err
			}
			out[i].Added = added
		}
		return nil
	})
	if err != nil {
		for _, i := range batch {
			if out[i].Err == nil {
				out[i].Added, out[i].Err = false, fmt.Errorf("%w: %w", errBatch, err)
			}
		}
	}
	return out
}

// public refuses a credential that must not be stored with the public documents.
func public(c *Credential) error {
	if !c.Kind.Public() {
		return fmt.Errorf("store credential %s: %w: a %s travels point to point only", c.ID, ErrNotPublic, c.Kind)
	}
	return nil
}

// errBatch marks the credentials of a batch whose transaction failed.
var errBatch = errors.New("batch not stored")

func (s *Store) addStatusList(ctx context.Context, c *Credential) (*Credential, bool, error) {
	bits, err := DecodeBits(c.StatusList.EncodedList)
	if err != nil {
		return c, false, err
	}
	added := false
	err = s.db.Update(ctx, func(tx *store.Txn) error {
		added = false
		var old Bits
		if held, err := tx.Get(nsVC, listKey(c.ID)); err == nil {
			if string(held) == string(c.JWT) {
				return nil
			}
			prev, err := Parse(held)
			if err != nil {
				return err
			}
			if old, err = DecodeBits(prev.StatusList.EncodedList); err != nil {
				return err
			}
			if c.IssuedAt.Before(prev.IssuedAt) || !bits.Covers(old) {
				return fmt.Errorf("%w: %s issued %s", ErrRollback, c.ID, c.IssuedAt.UTC().Format(time.RFC3339))
			}
			if err := s.changed(tx, held, prev.IssuedAt, true); err != nil {
				return err
			}
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err := tx.Set(nsVC, listKey(c.ID), c.JWT); err != nil {
			return err
		}
		if err := s.changed(tx, c.JWT, c.IssuedAt, false); err != nil {
			return err
		}
		added = true
		for i := range bits.Len() {
			if !bits.Get(i) || old.Get(i) {
				continue
			}
			id, err := tx.Get(nsVC, slotKey(c.ID, i))
			if errors.Is(err, store.ErrNotFound) {
				continue
			} else if err != nil {
				return err
			}
			raw, err := tx.Get(nsVC, credKey(string(id)))
			if err != nil {
				return err
			}
			rc, err := Parse(raw)
			if err != nil {
				return err
			}
			if err := unindexCredential(tx, rc); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil && added {
		s.cache.Store(c.ID, bits)
	}
	return c, added, err
}

func (s *Store) changed(tx *store.Txn, doc []byte, issued time.Time, removed bool) error {
	if s.onChange == nil {
		return nil
	}
	return s.onChange(tx, doc, issued, removed)
}

// StatusBits returns the revocation bits of the newest status list held with that id.
func (s *Store) StatusBits(ctx context.Context, listID string) (Bits, error) {
	if b, ok := s.cache.Load(listID); ok {
		return b.(Bits), nil
	}
	var raw []byte
	err := s.db.View(ctx, func(tx *store.Txn) error {
		var err error
		raw, err = tx.Get(nsVC, listKey(listID))
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("status list %s not held", listID)
	}
	if err != nil {
		return nil, err
	}
	c, err := Parse(raw)
	if err != nil {
		return nil, err
	}
	bits, err := DecodeBits(c.StatusList.EncodedList)
	if err != nil {
		return nil, err
	}
	s.cache.LoadOrStore(listID, bits)
	return bits, nil
}

// StatusList returns the compact status list credential held under id.
func (s *Store) StatusList(ctx context.Context, id string) ([]byte, error) {
	var raw []byte
	err := s.db.View(ctx, func(tx *store.Txn) error {
		var err error
		raw, err = tx.Get(nsVC, listKey(id))
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("status list %s: %w", id, ErrNotFound)
	}
	return raw, err
}

// Get returns a stored credential.
func (s *Store) Get(ctx context.Context, id string) (*Credential, error) {
	var raw []byte
	err := s.db.View(ctx, func(tx *store.Txn) error {
		var err error
		raw, err = tx.Get(nsVC, credKey(id))
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%s: %w", clip(id), ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return Parse(raw)
}

// Filter selects credentials to list.
type Filter struct {
	// Party is a DID that is issuer or subject; empty means all.
	Party string
	// Kind restricts the kind; empty means all but status lists.
	Kind Kind
}

// List returns the stored credentials matching f, ordered by party and id. A list of one kind
// without a party walks the party rows, which carry the kind, so that only credentials of that
// kind are read and parsed (a node holds one organisation credential per organisation of the
// network, and a rare kind is listed at every start).
func (s *Store) List(ctx context.Context, f Filter) ([]*Credential, error) {
	var out []*Credential
	err := s.db.View(ctx, func(tx *store.Txn) error {
		prefix, byParty := []byte("c/"), false
		switch {
		case f.Party != "":
			prefix, byParty = []byte("p/"+f.Party+"/"), true
		case f.Kind != "":
			prefix, byParty = []byte("p/"), true
		}
		seen := map[string]bool{}
		return tx.Iterate(nsVC, prefix, store.IterOptions{}, func(k, v []byte) error {
			raw := v
			if byParty {
				if f.Kind != "" && Kind(v) != f.Kind {
					return nil
				}
				id := string(k[len(prefix):])
				if f.Party == "" {
					// The row is p/<did>/<id>. A subject DID could hold a "/" (only its syntax is
					// checked), so a row that names no credential is skipped: the issuer's row,
					// whose DID resolved when the credential was verified, lists it.
					_, id, _ = strings.Cut(id, "/")
				}
				if seen[id] {
					return nil
				}
				var err error
				if raw, err = tx.Get(nsVC, credKey(id)); errors.Is(err, store.ErrNotFound) && f.Party == "" {
					return nil
				} else if err != nil {
					return err
				}
				seen[id] = true
			}
			c, err := Parse(raw)
			if err != nil {
				return err
			}
			if f.Kind != "" && c.Kind != f.Kind {
				return nil
			}
			out = append(out, c)
			return nil
		})
	})
	return out, err
}

// IssueAs issues a credential as a hosted organisation whose current signing key is k: it allocates a
// random index in the issuer's status list (publishing the list first when it is new), signs, and
// stores the credential. req.Status is set here.
func (s *Store) IssueAs(ctx context.Context, k *crypto.PrivateKey, req Request) (*Credential, error) {
	if !req.Kind.Public() {
		return nil, fmt.Errorf("issue %s: %w: issue it with Issue and deliver it point to point", req.Kind, ErrNotPublic)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st, fresh, err := s.issuerState(ctx, req.Issuer)
	if err != nil {
		return nil, err
	}
	if fresh {
		list, _, err := st.Issue(k, req.IssuedAt)
		if err != nil {
			return nil, err
		}
		if _, _, err := s.add(ctx, list); err != nil {
			return nil, fmt.Errorf("publish status list: %w", err)
		}
	}
	if req.Status, err = st.Allocate(); err != nil {
		return nil, err
	}
	// The allocation is saved before the credential, so that an index is never handed out twice even
	// if the node stops in between.
	if err := s.saveIssuerState(ctx, st); err != nil {
		return nil, err
	}
	compact, _, err := Issue(k, req)
	if err != nil {
		return nil, err
	}
	c, _, err := s.add(ctx, compact)
	return c, err
}

// RevokeAs revokes a credential issued by a hosted organisation whose current signing key is k, and
// stores the new status list, which the caller publishes. It returns the list's compact form.
func (s *Store) RevokeAs(ctx context.Context, k *crypto.PrivateKey, issuer, id string, t time.Time) (*StatusEntry, []byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.Get(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	if c.Issuer != issuer {
		return nil, nil, fmt.Errorf("revoke %s: %w: issued by %s, not %s", id, ErrNotFound, c.Issuer, issuer)
	}
	st, fresh, err := s.issuerState(ctx, issuer)
	if err != nil {
		return nil, nil, err
	}
	if fresh {
		return nil, nil, fmt.Errorf("revoke %s: %w: issuer has no status list", id, ErrNotFound)
	}
	if err := st.Revoke(c.Status); err != nil {
		return nil, nil, fmt.Errorf("revoke %s: %w", id, err)
	}
	list, _, err := st.Issue(k, t)
	if err != nil {
		return nil, nil, err
	}
	if err := s.saveIssuerState(ctx, st); err != nil {
		return nil, nil, err
	}
	if _, _, err := s.add(ctx, list); err != nil {
		return nil, nil, fmt.Errorf("revoke %s: store status list: %w", id, err)
	}
	return c.Status, list, nil
}

func (s *Store) issuerState(ctx context.Context, issuer string) (*StatusListState, bool, error) {
	var raw []byte
	err := s.db.View(ctx, func(tx *store.Txn) error {
		var err error
		raw, err = tx.Get(nsVC, issuerStateKey(issuer))
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return NewStatusListState(issuer, 1), true, nil
	}
	if err != nil {
		return nil, false, err
	}
	var st StatusListState
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, false, fmt.Errorf("decode status list state of %s: %w", issuer, err)
	}
	return &st, false, nil
}

func (s *Store) saveIssuerState(ctx context.Context, st *StatusListState) error {
	raw, err := json.Marshal(st)
	if err != nil {
		return err
	}
	var b store.Batch
	b.Set(nsVC, issuerStateKey(st.Issuer), raw)
	return s.db.Write(ctx, &b)
}
