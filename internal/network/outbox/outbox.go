package outbox

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/store"
)

// nsOutbox holds the queue. Each queued message has two keys:
//
//	q/<id>  queueRecord: the recipient and enqueue time, small, read by New
//	m/<id>  messageRecord: the message itself, read only when it is sent
//
// Splitting them keeps New's scan small however large the queued payloads are.
var nsOutbox = store.MustNamespace("outbox")

// recordVersion is the format of both records; a record of another version is ErrCorrupt.
const recordVersion = 1

// removeTimeout bounds the write that forgets a delivered message. It does not inherit the send's
// cancellation: once the recipient has a message, recording that is worth finishing.
const removeTimeout = 10 * time.Second

func queueKey(id string) []byte   { return append([]byte("q/"), id...) }
func messageKey(id string) []byte { return append([]byte("m/"), id...) }

type queueRecord struct {
	V  int    `json:"v"`
	To string `json:"to"`
	// Enqueued is when Enqueue stored the message, in Unix nanoseconds. MaxAge counts from it,
	// across restarts.
	Enqueued int64 `json:"enqueued"`
}

type messageRecord struct {
	V    int    `json:"v"`
	ID   string `json:"id"`
	From string `json:"from"`
	To   string `json:"to"`
	Kind string `json:"kind,omitempty"`
	// Payload is the compact JWE. Message.Validate has checked it is base64url and dots, so it
	// is stored as a string, without a second base64 layer.
	Payload string `json:"payload"`
}

// Defaults of Config.
const (
	DefaultMinBackoff  = time.Second
	DefaultMaxBackoff  = 5 * time.Minute
	DefaultMaxQueued   = 10_000
	DefaultParallel    = 16
	DefaultSendTimeout = 30 * time.Second
)

// Config configures an Outbox. The zero value of every field means its default.
type Config struct {
	// MinBackoff is the wait after a message's first failed attempt; each further failure
	// doubles it up to MaxBackoff, and the actual wait is drawn at random from [d/2, d] so that
	// retries to a recovering node spread out. 0 means 1 s. Shorter recovers faster from a blip
	// and makes more futile calls to a node that is down.
	MinBackoff time.Duration
	// MaxBackoff caps the wait between attempts. 0 means 5 min. It bounds how late a message
	// arrives after its recipient comes back if nobody calls Kick; the node calls Kick when the
	// recipient's node connects, which makes that case immediate.
	MaxBackoff time.Duration
	// MaxAge is how long a message is tried before it is dropped, logged at error level and
	// counted in Stats.Dropped. It counts from Enqueue and survives restarts. 0 means DefaultTTL,
	// the default lifetime of a sealed message: the recipient refuses an expired message, so
	// trying longer than the TTL messages are sealed with is futile.
	MaxAge time.Duration
	// MaxQueued bounds the messages waiting, in flight included; Enqueue beyond it returns
	// ErrFull. 0 means 10,000. Each costs about 200 bytes of memory and its payload (at most
	// MaxPayload) in storage.
	MaxQueued int
	// Parallel bounds the sends in flight at once. 0 means 16. At most one send per recipient
	// is in flight, so a recipient whose sends hang until SendTimeout holds one slot, and
	// messages to reachable organisations keep moving.
	Parallel int
	// SendTimeout bounds one call of send. 0 means 30 s.
	SendTimeout time.Duration
	// Now returns the current time. nil means time.Now. Tests set it to move the clock.
	Now func() time.Time
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		MinBackoff:  DefaultMinBackoff,
		MaxBackoff:  DefaultMaxBackoff,
		MaxAge:      DefaultTTL,
		MaxQueued:   DefaultMaxQueued,
		Parallel:    DefaultParallel,
		SendTimeout: DefaultSendTimeout,
		Now:         time.Now,
	}
}

// resolve validates c and fills in defaults. It has no side effects.
func (c Config) resolve() (Config, error) {
	d := DefaultConfig()
	for _, f := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"MinBackoff", &c.MinBackoff, d.MinBackoff},
		{"MaxBackoff", &c.MaxBackoff, d.MaxBackoff},
		{"MaxAge", &c.MaxAge, d.MaxAge},
		{"SendTimeout", &c.SendTimeout, d.SendTimeout},
	} {
		if *f.v < 0 {
			return c, fmt.Errorf("%w: %s %v is negative", ErrConfig, f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if c.MinBackoff > c.MaxBackoff {
		return c, fmt.Errorf("%w: MinBackoff %v exceeds MaxBackoff %v", ErrConfig, c.MinBackoff, c.MaxBackoff)
	}
	if c.MaxQueued < 0 || c.Parallel < 0 {
		return c, fmt.Errorf("%w: MaxQueued %d and Parallel %d must not be negative", ErrConfig, c.MaxQueued, c.Parallel)
	}
	if c.MaxQueued == 0 {
		c.MaxQueued = d.MaxQueued
	}
	if c.Parallel == 0 {
		c.Parallel = d.Parallel
	}
	if c.Now == nil {
		c.Now = d.Now
	}
	return c, nil
}

// SendFunc delivers m to the node hosting m.To and returns nil once that node has accepted it
// (processed it, or found it a duplicate). It MUST honour ctx. An error means "try again later";
// the Outbox never drops a message because of one, only at MaxAge.
type SendFunc func(ctx context.Context, m *Message) error

// Outbox is a persistent queue of sealed messages to other organisations' nodes, delivered by a
// background loop with retries. It is safe for concurrent use.
type Outbox struct {
	cfg  Config
	db   *store.DB
	send SendFunc
	log  *slog.Logger

	// wake, with room for one signal, tells the loop that something may be due now.
	wake chan struct{}

	mu       sync.Mutex
	entries  map[string]*entry
	busy     map[string]bool // recipients with a send in flight
	inflight int
	reserved int // Enqueues between their room check and their commit
	started  bool
	closing  bool
	stats    Stats

	stop     context.CancelFunc // ends the loop
	abort    context.CancelFunc // ends the sends in flight
	loopDone chan struct{}
	sends    sync.WaitGroup
}

// entry is the in-memory state of one queued message. The backoff state (due, attempts) is not
// stored: after a restart every message is due at once, which costs one attempt each and saves
// a write per failed attempt.
type entry struct {
	id       string
	to       string
	enqueued time.Time
	due      time.Time
	attempts int
	lastErr  string
	sending  bool
}

// compareEntries orders messages for sending: earliest due first, then oldest, then by id so
// that the order is total.
func compareEntries(a, b *entry) int {
	return cmp.Or(a.due.Compare(b.due), a.enqueued.Compare(b.enqueued), cmp.Compare(a.id, b.id))
}

// Stats counts what an Outbox has done since New.
type Stats struct {
	// Queued is the number of messages waiting, in flight included.
	Queued int
	// Delivered counts messages send accepted.
	Delivered uint64
	// Failed counts failed attempts.
	Failed uint64
	// Dropped counts messages given up after MaxAge.
	Dropped uint64
}

// Status describes one queued message, for operators.
type Status struct {
	ID          string
	To          string
	Enqueued    time.Time
	Attempts    int
	NextAttempt time.Time
	// LastError is the error of the last failed attempt, empty before the first.
	LastError string
	// Sending is true while an attempt is in flight.
	Sending bool
}

// New returns an Outbox over db that delivers with send. It reads the messages a previous Outbox
// on db left queued, all due at once, but starts nothing: Start does. logger nil means
// slog.Default().
func New(cfg Config, db *store.DB, send SendFunc, logger *slog.Logger) (*Outbox, error) {
	cfg, err := cfg.resolve()
	if err != nil {
		return nil, fmt.Errorf("outbox: new: %w", err)
	}
	if db == nil || send == nil {
		return nil, fmt.Errorf("outbox: new: %w: db and send are required", ErrConfig)
	}
	if logger == nil {
		logger = slog.Default()
	}
	o := &Outbox{
		cfg:      cfg,
		db:       db,
		send:     send,
		log:      logger.With("component", "outbox"),
		wake:     make(chan struct{}, 1),
		entries:  make(map[string]*entry),
		busy:     make(map[string]bool),
		loopDone: make(chan struct{}),
	}
	if err := o.load(); err != nil {
		return nil, fmt.Errorf("outbox: new: %w", err)
	}
	return o, nil
}

// load reads the queue records. Their number is bounded by MaxQueued, not by history: delivered
// and dropped messages are deleted.
func (o *Outbox) load() error {
	now := o.cfg.Now()
	return o.db.View(context.Background(), func(tx *store.Txn) error {
		return tx.Iterate(nsOutbox, []byte("q/"), store.IterOptions{}, func(key, value []byte) error {
			id := string(key[len("q/"):])
			var r queueRecord
			if err := crypto.DecodeJSON(value, &r); err != nil {
				return fmt.Errorf("%w: queue record %s: %w", ErrCorrupt, truncate(id), err)
			}
			if r.V != recordVersion {
				return fmt.Errorf("%w: queue record %s of version %d, want %d", ErrCorrupt, truncate(id), r.V, recordVersion)
			}
			if checkID(id) != nil || checkDID("to", r.To) != nil {
				return fmt.Errorf("%w: queue record %q for %q", ErrCorrupt, truncate(id), truncate(r.To))
			}
			o.entries[id] = &entry{id: id, to: r.To, enqueued: time.Unix(0, r.Enqueued), due: now}
			return nil
		})
	})
}

// Enqueue stores m and returns once it is durable; the loop then delivers it. m MUST be sealed
// (Seal) and pass Validate. Enqueueing an id that is already queued does nothing and returns nil,
// so a caller may retry an Enqueue whose outcome it did not learn. Enqueue works before Start,
// and fails with ErrFull at Config.MaxQueued and with ErrClosed once Close has begun.
func (o *Outbox) Enqueue(ctx context.Context, m *Message) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("outbox: enqueue: %w", err)
	}
	now := o.cfg.Now()
	// Marshalling these flat structs of strings and numbers cannot fail.
	q, _ := json.Marshal(queueRecord{V: recordVersion, To: m.To, Enqueued: now.UnixNano()})
	rec, _ := json.Marshal(messageRecord{V: recordVersion, ID: m.ID, From: m.From, To: m.To, Kind: m.Kind, Payload: string(m.Payload)})

	o.mu.Lock()
	switch {
	case o.closing:
		o.mu.Unlock()
		return fmt.Errorf("outbox: enqueue %s: %w", m.ID, ErrClosed)
	case o.entries[m.ID] != nil:
		o.mu.Unlock()
		return nil
	case len(o.entries)+o.reserved >= o.cfg.MaxQueued:
		o.mu.Unlock()
		return fmt.Errorf("outbox: enqueue %s: %w: %d messages queued", m.ID, ErrFull, o.cfg.MaxQueued)
	}
	o.reserved++
	o.mu.Unlock()

	err := o.db.Update(ctx, func(tx *store.Txn) error {
		// A concurrent Enqueue of the same id may have committed first; its record stands.
		if ok, err := tx.Has(nsOutbox, queueKey(m.ID)); err != nil || ok {
			return err
		}
		if err := tx.Set(nsOutbox, messageKey(m.ID), rec); err != nil {
			return err
		}
		return tx.Set(nsOutbox, queueKey(m.ID), q)
	})
	o.mu.Lock()
	o.reserved--
	if err == nil && o.entries[m.ID] == nil {
		o.entries[m.ID] = &entry{id: m.ID, to: m.To, enqueued: now, due: now}
	}
	o.mu.Unlock()
	if err != nil {
		return fmt.Errorf("outbox: enqueue %s: %w", m.ID, err)
	}
	o.signal()
	return nil
}

// Kick makes every queued message to organisation to due now, ending its backoff. The node calls
// it when a node hosting to connects.
func (o *Outbox) Kick(to string) {
	now := o.cfg.Now()
	o.mu.Lock()
	for _, e := range o.entries {
		if e.to == to && e.due.After(now) {
			e.due = now
		}
	}
	o.mu.Unlock()
	o.signal()
}

// Depth returns the number of messages waiting, in flight included.
func (o *Outbox) Depth() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.entries)
}

// Stats returns the queue depth and the counters since New.
func (o *Outbox) Stats() Stats {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := o.stats
	s.Queued = len(o.entries)
	return s
}

// Pending describes the messages queued for organisation to, or for everyone when to is empty,
// oldest first.
func (o *Outbox) Pending(ctx context.Context, to string) ([]Status, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o.mu.Lock()
	out := make([]Status, 0, len(o.entries))
	for _, e := range o.entries {
		if to != "" && e.to != to {
			continue
		}
		out = append(out, Status{
			ID: e.id, To: e.to, Enqueued: e.enqueued, Attempts: e.attempts,
			NextAttempt: e.due, LastError: e.lastErr, Sending: e.sending,
		})
	}
	o.mu.Unlock()
	slices.SortFunc(out, func(a, b Status) int {
		return cmp.Or(a.Enqueued.Compare(b.Enqueued), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// Start starts the delivery loop. It runs until Close or until ctx ends; messages enqueued after
// ctx ended stay stored for the next Outbox on the same store. Start after Close returns
// ErrClosed; a second Start does nothing.
func (o *Outbox) Start(ctx context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closing {
		return fmt.Errorf("outbox: start: %w", ErrClosed)
	}
	if o.started {
		return nil
	}
	o.started = true
	sendCtx, abort := context.WithCancel(ctx)
	loopCtx, stop := context.WithCancel(sendCtx)
	o.stop, o.abort = stop, abort
	go o.run(loopCtx, sendCtx)
	return nil
}

// Close stops the loop, so no new attempt starts, and waits for the attempts in flight. If ctx
// ends first it cancels them and returns ctx's error; a later Close waits again. Messages not yet
// delivered stay stored for the next Outbox on the same store. Close is idempotent, makes Enqueue
// fail with ErrClosed, and MUST return before the store is closed.
func (o *Outbox) Close(ctx context.Context) error {
	o.mu.Lock()
	o.closing = true
	started := o.started
	o.mu.Unlock()
	if !started {
		return nil
	}
	o.stop()
	<-o.loopDone
	// The loop has ended, so no send is added any more and Wait cannot race an Add.
	drained := make(chan struct{})
	go func() {
		o.sends.Wait()
		close(drained)
	}()
	select {
	case <-drained:
		o.abort()
		return nil
	case <-ctx.Done():
		o.abort()
		return fmt.Errorf("outbox: close: %w", ctx.Err())
	}
}

// signal wakes the loop without blocking; one pending signal is enough, since a pass looks at
// everything.
func (o *Outbox) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// run is the delivery loop. It sleeps until the earliest due time or deadline, an Enqueue, a
// Kick or the end of an attempt, whichever comes first.
func (o *Outbox) run(ctx, sendCtx context.Context) {
	defer close(o.loopDone)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if wait, ok := o.pass(ctx, sendCtx); ok {
			timer.Reset(wait)
		} else {
			timer.Stop()
		}
		select {
		case <-ctx.Done():
			return
		case <-o.wake:
		case <-timer.C:
		}
	}
}

// pass drops expired messages, starts an attempt for the earliest due message of each recipient
// with none in flight while slots are free, and returns how long until the next message falls
// due or expires (false: nothing to wait for but a signal). It costs O(queued), bounded by
// MaxQueued; a pass runs per signal or timer, not per message.
func (o *Outbox) pass(ctx, sendCtx context.Context) (time.Duration, bool) {
	now := o.cfg.Now()
	var next time.Time
	earliest := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	var expired []*entry
	ready := make(map[string]*entry)

	o.mu.Lock()
	for id, e := range o.entries {
		if o.busy[e.to] {
			continue // the end of the attempt in flight signals the loop
		}
		deadline := e.enqueued.Add(o.cfg.MaxAge)
		if !now.Before(deadline) {
			delete(o.entries, id)
			expired = append(expired, e)
			continue
		}
		earliest(deadline)
		if e.due.After(now) {
			earliest(e.due)
			continue
		}
		if r := ready[e.to]; r == nil || compareEntries(e, r) < 0 {
			ready[e.to] = e
		}
	}
	due := make([]*entry, 0, len(ready))
	for _, e := range ready {
		due = append(due, e)
	}
	// Oldest first when slots are short, so no recipient waits behind newer traffic for long.
	slices.SortFunc(due, compareEntries)
	for _, e := range due {
		if o.inflight >= o.cfg.Parallel {
			break // the end of an attempt signals the loop
		}
		o.inflight++
		o.busy[e.to] = true
		e.sending = true
		o.sends.Add(1)
		go o.deliver(sendCtx, e)
	}
	o.stats.Dropped += uint64(len(expired))
	o.mu.Unlock()

	for _, e := range expired {
		o.drop(ctx, e)
	}
	if next.IsZero() {
		return 0, false
	}
	return next.Sub(now), true
}

// drop forgets a message that reached MaxAge.
func (o *Outbox) drop(ctx context.Context, e *entry) {
	o.log.Error("dropping undelivered message",
		"id", e.id, "to", e.to, "enqueued", e.enqueued, "attempts", e.attempts, "lastError", e.lastErr)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), removeTimeout)
	defer cancel()
	if err := o.remove(ctx, e.id); err != nil {
		// It is dropped again when the next Outbox loads it.
		o.log.Warn("forgetting dropped message", "id", e.id, "error", err)
	}
}

// deliver makes one attempt and records its outcome.
func (o *Outbox) deliver(ctx context.Context, e *entry) {
	defer o.sends.Done()
	err := o.attempt(ctx, e.id)
	now := o.cfg.Now()

	o.mu.Lock()
	o.inflight--
	delete(o.busy, e.to)
	e.sending = false
	var wait time.Duration
	switch {
	case err == nil:
		delete(o.entries, e.id)
		o.stats.Delivered++
		// The recipient is reachable again: its other messages need not sit out their backoff.
		for _, other := range o.entries {
			if other.to == e.to && other.due.After(now) {
				other.due = now
			}
		}
	case errors.Is(err, errGone):
		delete(o.entries, e.id)
	default:
		e.attempts++
		e.lastErr = err.Error()
		wait = o.backoff(e.attempts)
		e.due = now.Add(wait)
		o.stats.Failed++
	}
	attempts := e.attempts
	o.mu.Unlock()

	switch {
	case err == nil:
		o.log.Debug("delivered message", "id", e.id, "to", e.to, "attempts", attempts+1)
	case errors.Is(err, errGone):
		o.log.Warn("queued message vanished from storage", "id", e.id, "to", e.to)
	default:
		// An unreachable organisation fails every attempt until it returns; its first failure
		// is news, the rest would flood the log.
		level := slog.LevelDebug
		if attempts == 1 {
			level = slog.LevelInfo
		}
		o.log.Log(ctx, level, "message delivery failed", "id", e.id, "to", e.to, "attempts", attempts, "retryIn", wait, "error", err)
	}
	o.signal()
}

// attempt loads message id, sends it and, once send has succeeded, removes it from storage.
func (o *Outbox) attempt(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, o.cfg.SendTimeout)
	defer cancel()
	m, err := o.message(ctx, id)
	if err != nil {
		return err
	}
	if err := o.send(ctx, m); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	// If forgetting the message fails, it is sent again later and the recipient's Inbox
	// recognises the duplicate.
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), removeTimeout)
	defer rcancel()
	return o.remove(rctx, id)
}

// errGone reports a queued message whose record is no longer in storage.
var errGone = errors.New("message record gone")

// message reads a queued message. It returns errGone when it is no longer stored.
func (o *Outbox) message(ctx context.Context, id string) (*Message, error) {
	var raw []byte
	err := o.db.View(ctx, func(tx *store.Txn) error {
		var err error
		raw, err = tx.Get(nsOutbox, messageKey(id))
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, errGone
	}
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	var r messageRecord
	if err := crypto.DecodeJSON(raw, &r); err != nil {
		return nil, fmt.Errorf("load: %w: message record %s: %w", ErrCorrupt, id, err)
	}
	m := &Message{ID: r.ID, From: r.From, To: r.To, Kind: r.Kind, Payload: []byte(r.Payload)}
	if r.V != recordVersion || r.ID != id {
		return nil, fmt.Errorf("load: %w: message record %s of version %d for id %s", ErrCorrupt, id, r.V, truncate(r.ID))
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("load: %w: message record %s: %w", ErrCorrupt, id, err)
	}
	return m, nil
}

// remove deletes both records of a message.
func (o *Outbox) remove(ctx context.Context, id string) error {
	err := o.db.Update(ctx, func(tx *store.Txn) error {
		if err := tx.Delete(nsOutbox, queueKey(id)); err != nil {
			return err
		}
		return tx.Delete(nsOutbox, messageKey(id))
	})
	if err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	return nil
}

// backoff returns the wait after the given number of failed attempts: MinBackoff doubled per
// further failure, capped at MaxBackoff, with equal jitter (a uniform draw from [d/2, d]) so that
// many messages failing together do not retry together, while the wait still grows.
func (o *Outbox) backoff(attempts int) time.Duration {
	d := o.cfg.MinBackoff
	for i := 1; i < attempts && d < o.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, o.cfg.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}
