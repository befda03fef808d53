package consent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schakel-health/schakel/internal/store"
)

// Config configures a Store. The zero value is valid.
type Config struct {
	// Now is the clock; nil means time.Now. Tests set it to fix ages and validity periods.
	Now func() time.Time
	// OnChange, when set, is told of every change to a consent record once it has committed, in
	// commit order: before is nil for a new record. A Record that supersedes reports the new
	// record first, then each superseded one. The node appends a "consent-change" entry to the
	// custodian's access log from it.
	//
	// The change's transaction also writes a durable mark of it; done deletes that mark, and
	// OnChange MUST commit done in the same transaction as the change's log entry
	// (accesslog.Log.AppendWith), so that the mark stays exactly until the entry is durable. A
	// change whose OnChange failed, or that a crash cut off before its entry, keeps its mark and
	// is reported again by LogUnlogged (the node calls it at start): every change ends up in the
	// log once, even across kill -9. An error from OnChange is returned by the write method, after
	// the change has committed. OnChange runs while the Store holds its write lock, so it MUST NOT
	// call the Store's write methods (reads are fine); it cannot undo the change.
	OnChange func(before *Consent, after Consent, done *store.Batch) error
	// OnGrantChange is OnChange for referral grants: added (before nil) and revoked.
	OnGrantChange func(before *Grant, after Grant)
}

// Store keeps consent records, referral grants and custodian successions in the "consent"
// namespace. It is safe for concurrent use. Writes are serialised by a lock, so that superseding
// (read the patient's records, then write) cannot race another write and hooks see changes in
// commit order; consents change at human pace, so the lock costs nothing that matters. Reads take
// no lock.
type Store struct {
	db            *store.DB
	now           func() time.Time
	onChange      func(before *Consent, after Consent, done *store.Batch) error
	onGrantChange func(before *Grant, after Grant)

	mu  sync.Mutex // serialises writes and the hooks that follow them
	gen atomic.Uint64
	// preds remembers Predecessors; AddSuccession invalidates it.
	preds *store.Memo[string, []string]
}

// New returns a Store over db. It starts nothing and writes nothing.
func New(cfg Config, db *store.DB) (*Store, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: nil store", ErrInvalid)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Store{db: db, now: cfg.Now, onChange: cfg.OnChange, onGrantChange: cfg.OnGrantChange,
		preds: store.NewMemo[string, []string](4096)}, nil
}

// Generation returns a counter that increases with every committed change to consents, grants
// or successions: new records, processing, revocation, superseding. A cache of decisions or
// token introspections stays valid while the generation it was filled at is current. It starts
// at zero with each Store and is not persisted.
func (s *Store) Generation() uint64 { return s.gen.Load() }

type change struct {
	before *Consent
	after  Consent
	mark   []byte // key of the change's unlogged mark, when OnChange is set
}

// ErrNotLogged reports a change that committed but whose log entry could not be written: the
// change is in force, and its entry is written by LogUnlogged at the next start.
var ErrNotLogged = errors.New("change committed but not yet in the access log")

// unlogged is the JSON of an unlogged mark.
type unlogged struct {
	Before *Consent `json:"before,omitempty"`
	After  Consent  `json:"after"`
}

type grantChange struct {
	before *Grant
	after  Grant
}

// changes collects what one write transaction changed, for the hooks after commit.
type changes struct {
	consents []change
	grants   []grantChange
}

// update runs fn in one transaction under the write lock and, once it has committed, bumps the
// generation and calls the hooks. A retried transaction starts with no changes collected.
func (s *Store) update(ctx context.Context, fn func(tx *store.Txn, ch *changes) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ch changes
	err := s.db.Update(ctx, func(tx *store.Txn) error {
		ch = changes{}
		if err := fn(tx, &ch); err != nil {
			return err
		}
		if s.onChange == nil {
			return nil
		}
		// Marks are numbered after the last one still stored (usually none), in commit order.
		var next uint64
		err := tx.Iterate(ns, unloggedPrefix, store.IterOptions{KeysOnly: true, Reverse: true, Limit: 1}, func(k, _ []byte) error {
			next = max(next, unloggedSeq(k)+1)
			return nil
		})
		if err != nil {
			return err
		}
		for i := range ch.consents {
			c := &ch.consents[i]
			v, err := encode(unlogged{Before: c.before, After: c.after})
			if err != nil {
				return err
			}
			c.mark = unloggedKey(next + uint64(i))
			if err := tx.Set(ns, c.mark, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.gen.Add(1)
	var errs []error
	if s.onChange != nil {
		for _, c := range ch.consents {
			done := &store.Batch{}
			done.Delete(ns, c.mark)
			if err := s.onChange(c.before, c.after, done); err != nil {
				errs = append(errs, fmt.Errorf("%w: consent %s: %w", ErrNotLogged, c.after.ID, err))
			}
		}
	}
	if s.onGrantChange != nil {
		for _, g := range ch.grants {
			s.onGrantChange(g.before, g.after)
		}
	}
	return errors.Join(errs...)
}

// LogUnlogged reports to OnChange, in commit order, every change whose mark is still stored: a
// change whose log entry failed or was cut off by a crash. It returns how many it reported and
// the errors of those OnChange refused again (their marks stay).
func (s *Store) LogUnlogged(ctx context.Context) (int, error) {
	if s.onChange == nil {
		return 0, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	type mark struct {
		key []byte
		u   unlogged
	}
	var marks []mark
	err := s.db.View(ctx, func(tx *store.Txn) error {
		return tx.Iterate(ns, unloggedPrefix, store.IterOptions{}, func(k, v []byte) error {
			var u unlogged
			if err := decode(v, &u); err != nil {
				return fmt.Errorf("unlogged change %x: %w", k, err)
			}
			marks = append(marks, mark{append([]byte(nil), k...), u})
			return nil
		})
	})
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, m := range marks {
		done := &store.Batch{}
		done.Delete(ns, m.key)
		if err := s.onChange(m.u.Before, m.u.After, done); err != nil {
			errs = append(errs, fmt.Errorf("%w: consent %s: %w", ErrNotLogged, m.u.After.ID, err))
		}
	}
	return len(marks), errors.Join(errs...)
}

// Record stores a consent given at the desk or on a form (or online, and handled outside a
// portal request) as active. It validates c (Consent.Validate, as of now), refuses assigned
// fields, assigns ID, Status, Created and Updated, sets a zero ValidFrom to now, and supersedes
// in the same transaction every active consent of the same scope.
//
// Same scope means: the same patient pseudonym, a custodian that is c's custodian or one of its
// predecessors (AddSuccession), an identical grantee, and identical sets of data categories and
// of purposes; the decision does not count, so a new objection replaces an old permission. Each
// superseded record gets status superseded and SupersededBy; c.Supersedes names the one put in
// force last. Scopes that merely overlap are not superseded: both stay in force and Policy.Decide
// weighs them (more specific wins, objection wins a tie).
func (s *Store) Record(ctx context.Context, c Consent) (Consent, error) {
	return s.add(ctx, c, StatusActive)
}

// Request stores an online consent request relayed by a patient portal as pending: not in force
// until Process accepts it. It validates like Record and also requires Channel online and
// RequestedBy, the portal's DID.
func (s *Store) Request(ctx context.Context, c Consent) (Consent, error) {
	if c.Channel != ChannelOnline {
		return Consent{}, fmt.Errorf("request consent: %w", invalid("channel %q, a request relayed by a portal is online", clip(string(c.Channel))))
	}
	if c.RequestedBy == "" {
		return Consent{}, fmt.Errorf("request consent: %w", invalid("requestedBy, the portal's DID, is required"))
	}
	return s.add(ctx, c, StatusPending)
}

func (s *Store) add(ctx context.Context, c Consent, st Status) (Consent, error) {
	op := "record consent"
	if st == StatusPending {
		op = "request consent"
	}
	now := clock(s.now)
	if err := checkUnassigned(&c); err != nil {
		return Consent{}, fmt.Errorf("%s: %w", op, err)
	}
	if err := c.Validate(now); err != nil {
		return Consent{}, fmt.Errorf("%s: %w", op, err)
	}
	c.normalize()
	id, err := newID()
	if err != nil {
		return Consent{}, err
	}
	c.ID, c.Status, c.Created, c.Updated = id, st, now, now
	if c.ValidFrom.IsZero() {
		c.ValidFrom = now
	}
	err = s.update(ctx, func(tx *store.Txn, ch *changes) error {
		c.Supersedes = ""
		var superseded []change
		if st == StatusActive {
			var err error
			if superseded, err = supersede(tx, &c, now); err != nil {
				return err
			}
		}
		if err := putRecord(tx, &c, nil); err != nil {
			return err
		}
		ch.consents = append(append(ch.consents, change{after: c}), superseded...)
		return nil
	})
	if err != nil {
		return committed(c, op, err)
	}
	return c, nil
}

// committed returns the error of a write, with c when the write committed but is not yet logged
// (ErrNotLogged) and the zero Consent otherwise.
func committed(c Consent, op string, err error) (Consent, error) {
	err = fmt.Errorf("%s: %w", op, err)
	if errors.Is(err, ErrNotLogged) {
		return c, err
	}
	return Consent{}, err
}

// checkUnassigned refuses a consent that sets a field the Store assigns.
func checkUnassigned(c *Consent) error {
	switch {
	case c.ID != "":
		return invalid("id is assigned by the store")
	case c.Status != "":
		return invalid("status is assigned by the store")
	case c.Supersedes != "" || c.SupersededBy != "":
		return invalid("supersedes and supersededBy are assigned by the store")
	case c.Reason != "":
		return invalid("reason is assigned when a consent is rejected, revoked or superseded")
	case !c.Created.IsZero() || !c.Updated.IsZero():
		return invalid("created and updated are assigned by the store")
	}
	return nil
}

// Verdict is the custodian's answer to a pending consent request.
type Verdict int

// Verdicts.
const (
	// Accept puts the requested consent in force (it supersedes as Record does).
	Accept Verdict = iota + 1
	// Reject refuses it, for instance because the data do not match the custodian's; a reason
	// is required, for the notice to the patient.
	Reject
)

// Process answers a pending request: Accept makes it active, superseding as Record does; Reject
// makes it rejected. reason (optional for Accept, required for Reject, at most 512 bytes, never a
// BSN) is stored in Reason. A consent that is not pending gives ErrState.
func (s *Store) Process(ctx context.Context, id string, v Verdict, reason string) (Consent, error) {
	if v != Accept && v != Reject {
		return Consent{}, fmt.Errorf("process consent: %w", invalid("verdict %d is neither Accept nor Reject", v))
	}
	if v == Reject && reason == "" {
		return Consent{}, fmt.Errorf("process consent: %w", invalid("a rejection needs a reason, for the notice to the patient"))
	}
	return s.transition(ctx, "process consent", id, reason, StatusPending, func(tx *store.Txn, c *Consent, now time.Time) ([]change, error) {
		if v == Reject {
			c.Status = StatusRejected
			return nil, nil
		}
		c.Status = StatusActive
		return supersede(tx, c, now)
	})
}

// Revoke ends an active consent at once: its status becomes revoked and Policy.Decide no longer
// counts it. reason is optional (at most 512 bytes, never a BSN). A consent that is not active
// gives ErrState.
func (s *Store) Revoke(ctx context.Context, id, reason string) (Consent, error) {
	return s.transition(ctx, "revoke consent", id, reason, StatusActive, func(_ *store.Txn, c *Consent, _ time.Time) ([]change, error) {
		c.Status = StatusRevoked
		return nil, nil
	})
}

// transition loads record id, requires status from, lets apply change it (and others, whose
// changes it returns), and stores it.
func (s *Store) transition(ctx context.Context, op, id, reason string, from Status,
	apply func(tx *store.Txn, c *Consent, now time.Time) ([]change, error)) (Consent, error) {
	if err := validText("reason", reason); err != nil {
		return Consent{}, fmt.Errorf("%s: %w", op, err)
	}
	now := clock(s.now)
	var c Consent
	err := s.update(ctx, func(tx *store.Txn, ch *changes) error {
		var err error
		if c, err = getRecord(tx, id); err != nil {
			return err
		}
		if c.Status != from {
			return fmt.Errorf("%w: consent %s is %s, not %s", ErrState, id, c.Status, from)
		}
		before := c
		c.Updated = now
		if reason != "" {
			c.Reason = reason
		}
		others, err := apply(tx, &c, now)
		if err != nil {
			return err
		}
		if err := putRecord(tx, &c, &before); err != nil {
			return err
		}
		ch.consents = append(append(ch.consents, change{before: &before, after: c}), others...)
		return nil
	})
	if err != nil {
		return committed(c, op, err)
	}
	return c, nil
}

// supersede marks every active record of c's scope (see Record) superseded by c, writes them, and
// sets c.Supersedes to the one put in force last. It returns the changes for the hooks.
func supersede(tx *store.Txn, c *Consent, now time.Time) ([]change, error) {
	custodians, err := custodiansTx(tx, c.Custodian)
	if err != nil {
		return nil, err
	}
	var olds []Consent
	for _, cust := range custodians {
		err := forRecords(tx, cust, c.Patient, func(v []byte) error {
			var old Consent
			if err := decode(v, &old); err != nil {
				return err
			}
			if old.Status == StatusActive && old.ID != c.ID && sameScope(&old, c) {
				olds = append(olds, old)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	latest := -1
	for i := range olds {
		if latest < 0 || newerThan(&olds[i], &olds[latest]) {
			latest = i
		}
	}
	var out []change
	for _, old := range olds {
		before := old
		old.Status, old.SupersededBy, old.Updated = StatusSuperseded, c.ID, now
		old.Reason = "superseded by a newer consent of the same scope"
		if err := putRecord(tx, &old, &before); err != nil {
			return nil, err
		}
		out = append(out, change{before: &before, after: old})
	}
	if latest >= 0 {
		c.Supersedes = olds[latest].ID
	}
	return out, nil
}

// sameScope reports whether a and b have the same grantee and the same sets of data categories
// and purposes. Custodian and patient are the caller's business.
func sameScope(a, b *Consent) bool {
	return a.Grantee == b.Grantee && sameSet(a.DataCategories, b.DataCategories) && sameSet(a.Purposes, b.Purposes)
}

// sameSet reports whether a and b hold the same strings, in any order. The lists are short.
func sameSet(a, b []string) bool {
	if len(a) == len(b) && slices.Equal(a, b) {
		return true
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			return false
		}
	}
	return true
}

// putRecord writes c and its index rows; before is the stored version it replaces, if any.
func putRecord(tx *store.Txn, c *Consent, before *Consent) error {
	v, err := encode(c)
	if err != nil {
		return err
	}
	if err := tx.Set(ns, recordKey(c.Custodian, c.Patient, c.ID), v); err != nil {
		return err
	}
	if before == nil {
		if err := tx.Set(ns, recordPrefix(c.Custodian, c.Patient), nil); err != nil {
			return err
		}
		loc := make([]byte, 0, len(c.Custodian)+1+len(c.Patient))
		loc = append(append(append(loc, c.Custodian...), 0), c.Patient...)
		if err := tx.Set(ns, idKey(c.ID), loc); err != nil {
			return err
		}
	} else if before.Status != c.Status {
		if err := tx.Delete(ns, statusKey(before)); err != nil {
			return err
		}
	}
	if before == nil || before.Status != c.Status {
		return tx.Set(ns, statusKey(c), []byte(c.Patient))
	}
	return nil
}
