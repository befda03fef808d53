package did

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/store"
)

var ns = store.MustNamespace("did")

// Key layout in the "did" namespace:
//
//	e/<did>/<seq uint64 BE> → compact key event
//	s/<did>                 → State (JSON), updated in the same transaction as the event
//	d/<did>                 → latest compact DID document
func eventKey(id string, seq uint64) []byte {
	k := make([]byte, 0, len(id)+11)
	k = append(k, "e/"...)
	k = append(k, id...)
	k = append(k, '/')
	return binary.BigEndian.AppendUint64(k, seq)
}
func stateKey(id string) []byte { return append([]byte("s/"), id...) }
func docKey(id string) []byte   { return append([]byte("d/"), id...) }

// Registry keeps key events, materialised key states and DID documents in the store and resolves
// keys from them. It is safe for concurrent use.
type Registry struct {
	db       *store.DB
	now      func() time.Time
	onChange ChangeFunc

	// states caches the materialised state of each DID read or written, so that key resolution on
	// the verification hot path costs a map lookup. States are immutable once built (Apply copies),
	// and the cache only ever moves forward in sequence number.
	mu     sync.Mutex
	states map[string]*State
}

// maxCachedStates bounds the state cache; past it the cache is emptied and refilled on demand.
const maxCachedStates = 1 << 17

func (r *Registry) cached(id string) *State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.states[id]
}

func (r *Registry) remember(st *State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.states[st.DID]; ok && old.Seq > st.Seq {
		return
	}
	if len(r.states) >= maxCachedStates {
		clear(r.states)
	}
	r.states[st.DID] = st
}

// ChangeFunc is told, inside the transaction that makes the change, of a public document (key
// event or DID document) stored or, when removed is set, replaced by a newer one. issued is the
// document's own time. An error aborts the transaction.
type ChangeFunc func(tx *store.Txn, doc []byte, issued time.Time, removed bool) error

// Config configures a Registry.
type Config struct {
	// Now is the clock; nil means time.Now. Tests set it to make key validity deterministic.
	Now func() time.Time
	// OnChange, when set, keeps an index of the public documents (the network's reconciliation
	// set) in the same transaction as the documents themselves, so the two never disagree.
	OnChange ChangeFunc
}

// New returns a Registry over db.
func New(cfg Config, db *store.DB) (*Registry, error) {
	if db == nil {
		return nil, errors.New("did: nil store")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Registry{db: db, now: cfg.Now, onChange: cfg.OnChange, states: map[string]*State{}}, nil
}

// AddEvent verifies a compact key event against the stored state of its DID and, if it is new,
// stores it with the new state in one transaction. It reports whether the event was new; an event
// already held is not an error. A rejected event leaves nothing in storage.
func (r *Registry) AddEvent(ctx context.Context, compact []byte) (st *State, added bool, err error) {
	ev, err := ParseEvent(compact)
	if err != nil {
		return nil, false, err
	}
	id := ev.DID
	if ev.Type == Genesis {
		id = DIDFromGenesis(compact)
	}
	err = r.db.Update(ctx, func(tx *store.Txn) error {
		added = false
		if held, err := tx.Get(ns, eventKey(id, ev.Seq)); err == nil {
			if string(held) == string(compact) {
				st, err = getState(tx, id)
				return err
			}
			return fmt.Errorf("%s: %w: a different event %d is held", id, ErrFork, ev.Seq)
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		var cur *State
		if ev.Type != Genesis {
			cur, err = getState(tx, id)
			if err != nil {
				return err
			}
		}
		next, _, err := Apply(cur, compact, r.now())
		if err != nil {
			return err
		}
		b, err := json.Marshal(next)
		if err != nil {
			return err
		}
		if err := tx.Set(ns, eventKey(id, ev.Seq), compact); err != nil {
			return err
		}
		if err := tx.Set(ns, stateKey(id), b); err != nil {
			return err
		}
		st, added = next, true
		return r.changed(tx, compact, time.Unix(ev.Time, 0), false)
	})
	if err != nil {
		return nil, false, err
	}
	r.remember(st)
	return st, added, nil
}

func getState(tx *store.Txn, id string) (*State, error) {
	b, err := tx.Get(ns, stateKey(id))
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%s: %w", id, ErrUnknownDID)
	}
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("decode state of %s: %w", id, err)
	}
	return &st, nil
}

// Resolve returns the key state of a DID. The State is shared: callers MUST NOT modify it.
func (r *Registry) Resolve(ctx context.Context, id string) (*State, error) {
	if st := r.cached(id); st != nil {
		return st, nil
	}
	if err := ValidateDID(id); err != nil {
		return nil, err
	}
	var st *State
	err := r.db.View(ctx, func(tx *store.Txn) error {
		var err error
		st, err = getState(tx, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	r.remember(st)
	return st, nil
}

// KeyByID returns the signing key kid of DID id if it was valid at t. It is what credential and
// document verification use: the key valid at signing time, even after a later rotation.
func (r *Registry) KeyByID(ctx context.Context, id, kid string, t time.Time) (*crypto.PublicKey, error) {
	st, err := r.Resolve(ctx, id)
	if err != nil {
		return nil, err
	}
	return st.KeyByID(kid, t)
}

// Events returns the compact key events of a DID, genesis first.
func (r *Registry) Events(ctx context.Context, id string) ([][]byte, error) {
	if err := ValidateDID(id); err != nil {
		return nil, err
	}
	var out [][]byte
	err := r.db.View(ctx, func(tx *store.Txn) error {
		prefix := append(append([]byte("e/"), id...), '/')
		return tx.Iterate(ns, prefix, store.IterOptions{}, func(_, v []byte) error {
			out = append(out, v)
			return nil
		})
	})
	if err == nil && len(out) == 0 {
		return nil, fmt.Errorf("%s: %w", id, ErrUnknownDID)
	}
	return out, err
}

// PutDocument verifies a compact DID document against the DID's stored key state and stores it if it
// is newer than the one held. It reports whether it was stored.
func (r *Registry) PutDocument(ctx context.Context, compact []byte) (*Document, bool, error) {
	if len(compact) > MaxDocumentSize {
		return nil, false, fmt.Errorf("%w: %d bytes exceeds %d", ErrDocument, len(compact), MaxDocumentSize)
	}
	var (
		doc    *Document
		stored bool
	)
	err := r.db.Update(ctx, func(tx *store.Txn) error {
		stored = false
		payload, _, err := crypto.ParseUnverified(compact)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrDocument, err)
		}
		var head struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(payload, &head); err != nil {
			return fmt.Errorf("%w: %w", ErrDocument, err)
		}
		if err := ValidateDID(head.ID); err != nil {
			return fmt.Errorf("%w: %w", ErrDocument, err)
		}
		st, err := getState(tx, head.ID)
		if err != nil {
			return err
		}
		doc, err = VerifyDocument(compact, st)
		if err != nil {
			return err
		}
		if held, err := tx.Get(ns, docKey(head.ID)); err == nil {
			if string(held) == string(compact) {
				return nil
			}
			old, _, err := crypto.ParseUnverified(held)
			if err != nil {
				return err
			}
			var od Document
			if err := json.Unmarshal(old, &od); err != nil {
				return err
			}
			if od.KeyEventSeq > doc.KeyEventSeq || (od.KeyEventSeq == doc.KeyEventSeq && od.Updated >= doc.Updated) {
				return nil
			}
			if err := r.changed(tx, held, time.Unix(od.Updated, 0), true); err != nil {
				return err
			}
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		stored = true
		if err := tx.Set(ns, docKey(head.ID), compact); err != nil {
			return err
		}
		return r.changed(tx, compact, time.Unix(doc.Updated, 0), false)
	})
	if err != nil {
		return nil, false, err
	}
	return doc, stored, nil
}

func (r *Registry) changed(tx *store.Txn, doc []byte, issued time.Time, removed bool) error {
	if r.onChange == nil {
		return nil
	}
	return r.onChange(tx, doc, issued, removed)
}

// Document returns the latest stored DID document of id and its compact form.
func (r *Registry) Document(ctx context.Context, id string) (*Document, []byte, error) {
	if err := ValidateDID(id); err != nil {
		return nil, nil, err
	}
	var compact []byte
	err := r.db.View(ctx, func(tx *store.Txn) error {
		var err error
		compact, err = tx.Get(ns, docKey(id))
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%s: %w: no DID document", id, ErrUnknownDID)
		}
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	payload, _, err := crypto.ParseUnverified(compact)
	if err != nil {
		return nil, nil, err
	}
	var doc Document
	if err := json.Unmarshal(payload, &doc); err != nil {
		return nil, nil, err
	}
	return &doc, compact, nil
}
