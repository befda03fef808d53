package outbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/schakel-health/schakel/internal/store"
)

// fakeMessage returns a message of the right shape to DID to. The outbox never opens payloads,
// so it need not be a real JWE.
func fakeMessage(tb testing.TB, to string) *Message {
	tb.Helper()
	id := mustID(tb)
	return &Message{ID: id, From: "did:schakel:sender", To: to, Payload: []byte("eyJhIjoxfQ.a.b." + id + ".c")}
}

// recorder is a send function that counts deliveries per message id.
type recorder struct {
	mu    sync.Mutex
	got   map[string]int
	order []string
	fail  func(m *Message) error // nil: always succeed
}

func newRecorder() *recorder { return &recorder{got: make(map[string]int)} }

func (r *recorder) send(_ context.Context, m *Message) error {
	if r.fail != nil {
		if err := r.fail(m); err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got[m.ID]++
	r.order = append(r.order, m.ID)
	return nil
}

func (r *recorder) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[id]
}

func (r *recorder) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.order)
}

func newOutbox(tb testing.TB, cfg Config, db *store.DB, send SendFunc) *Outbox {
	tb.Helper()
	o, err := New(cfg, db, send, testLogger(tb))
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := o.Close(ctx); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return o
}

func enqueue(tb testing.TB, o *Outbox, ms ...*Message) {
	tb.Helper()
	for _, m := range ms {
		if err := o.Enqueue(context.Background(), m); err != nil {
			tb.Fatalf("Enqueue: %v", err)
		}
	}
}

func start(tb testing.TB, o *Outbox) {
	tb.Helper()
	if err := o.Start(context.Background()); err != nil {
		tb.Fatalf("Start: %v", err)
	}
}

func TestOutboxDelivers(t *testing.T) {
	db := memStore(t)
	rec := newRecorder()
	o := newOutbox(t, Config{}, db, rec.send)
	before := []*Message{fakeMessage(t, "did:schakel:a"), fakeMessage(t, "did:schakel:b"), fakeMessage(t, "did:schakel:a")}
	enqueue(t, o, before...)
	if got := o.Depth(); got != 3 {
		t.Fatalf("Depth before Start = %d, want 3", got)
	}
	if got := countKeys(t, db, nsOutbox); got != 6 {
		t.Fatalf("stored keys before Start = %d, want 6", got)
	}
	start(t, o)
	after := []*Message{fakeMessage(t, "did:schakel:b"), fakeMessage(t, "did:schakel:c")}
	enqueue(t, o, after...)
	waitFor(t, "five deliveries", func() bool { return rec.total() == 5 })
	waitFor(t, "empty queue", func() bool { return o.Depth() == 0 })
	for _, m := range append(before, after...) {
		if n := rec.count(m.ID); n != 1 {
			t.Errorf("message %s delivered %d times, want 1", m.ID, n)
		}
	}
	if s := o.Stats(); s != (Stats{Delivered: 5}) {
		t.Errorf("Stats = %+v, want 5 delivered", s)
	}
	if got := countKeys(t, db, nsOutbox); got != 0 {
		t.Errorf("stored keys after delivery = %d, want 0", got)
	}
}

func TestOutboxSendsWhatWasEnqueued(t *testing.T) {
	got := make(chan *Message, 1)
	o := newOutbox(t, Config{}, memStore(t), func(_ context.Context, m *Message) error {
		got <- m
		return nil
	})
	m := fakeMessage(t, "did:schakel:a")
	m.Kind = "consent-request"
	enqueue(t, o, m)
	start(t, o)
	select {
	case sent := <-got:
		if sent.ID != m.ID || sent.From != m.From || sent.To != m.To || sent.Kind != m.Kind || string(sent.Payload) != string(m.Payload) {
			t.Fatalf("sent %+v, want %+v", sent, m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing sent")
	}
}

func TestOutboxRetriesWithBackoff(t *testing.T) {
	const failures = 4
	var mu sync.Mutex
	var calls []time.Time
	rec := newRecorder()
	rec.fail = func(*Message) error {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, time.Now())
		if len(calls) <= failures {
			return errors.New("connection refused")
		}
		return nil
	}
	cfg := Config{MinBackoff: 20 * time.Millisecond, MaxBackoff: 80 * time.Millisecond}
	o := newOutbox(t, cfg, memStore(t), rec.send)
	m := fakeMessage(t, "did:schakel:a")
	enqueue(t, o, m)
	start(t, o)
	waitFor(t, "delivery after retries", func() bool { return o.Stats().Delivered == 1 })

	mu.Lock()
	defer mu.Unlock()
	if len(calls) != failures+1 {
		t.Fatalf("send called %d times, want %d", len(calls), failures+1)
	}
	// After failure k the wait is drawn from [d/2, d], d = min(20ms·2^(k-1), 80ms).
	for k, least := range []time.Duration{10, 20, 40, 40} {
		if gap := calls[k+1].Sub(calls[k]); gap < least*time.Millisecond {
			t.Errorf("wait after failure %d = %v, want at least %v", k+1, gap, least*time.Millisecond)
		}
	}
	if s := o.Stats(); s.Failed != failures || s.Delivered != 1 {
		t.Errorf("Stats = %+v, want %d failed and 1 delivered", s, failures)
	}
}

func TestBackoff(t *testing.T) {
	o := &Outbox{cfg: Config{MinBackoff: time.Second, MaxBackoff: 5 * time.Minute}}
	for _, tc := range []struct {
		attempts int
		max      time.Duration
	}{
		{1, time.Second},
		{2, 2 * time.Second},
		{3, 4 * time.Second},
		{9, 256 * time.Second},
		{10, 5 * time.Minute},
		{1000, 5 * time.Minute},
	} {
		seen := make(map[time.Duration]bool)
		for range 50 {
			d := o.backoff(tc.attempts)
			if d < tc.max/2 || d > tc.max {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", tc.attempts, d, tc.max/2, tc.max)
			}
			seen[d] = true
		}
		if len(seen) < 2 {
			t.Errorf("backoff(%d) has no jitter: always %v", tc.attempts, seen)
		}
	}
}

// TestOutboxUnreachableDoesNotBlock checks that messages to a reachable organisation are
// delivered while another organisation's sends hang or fail, and that a hanging recipient holds
// one send slot at a time.
func TestOutboxUnreachableDoesNotBlock(t *testing.T) {
	const hanging, failing, up = "did:schakel:hanging", "did:schakel:failing", "did:schakel:up"
	release := make(chan struct{})
	var inflight, maxInflight atomic.Int32
	rec := newRecorder()
	rec.fail = func(m *Message) error {
		switch m.To {
		case hanging:
			n := inflight.Add(1)
			defer inflight.Add(-1)
			for {
				old := maxInflight.Load()
				if n <= old || maxInflight.CompareAndSwap(old, n) {
					break
				}
			}
			<-release
			return errors.New("hung up")
		case failing:
			return errors.New("no route")
		}
		return nil
	}
	o := newOutbox(t, Config{Parallel: 2, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond}, memStore(t), rec.send)
	var ups []*Message
	for range 5 {
		enqueue(t, o, fakeMessage(t, hanging), fakeMessage(t, failing))
	}
	for range 5 {
		m := fakeMessage(t, up)
		ups = append(ups, m)
		enqueue(t, o, m)
	}
	start(t, o)
	waitFor(t, "the reachable organisation's messages", func() bool { return o.Stats().Delivered == uint64(len(ups)) })
	for _, m := range ups {
		if n := rec.count(m.ID); n != 1 {
			t.Errorf("message %s delivered %d times, want 1", m.ID, n)
		}
	}
	pending, err := o.Pending(t.Context(), failing)
	if err != nil {
		t.Fatalf("Pending: %v", err)
	}
	if len(pending) != 5 {
		t.Fatalf("Pending(%s) = %d messages, want 5", failing, len(pending))
	}
	waitFor(t, "a failed attempt", func() bool {
		p, _ := o.Pending(t.Context(), failing)
		return p[0].Attempts > 0 && strings.Contains(p[0].LastError, "no route")
	})
	if got := maxInflight.Load(); got != 1 {
		t.Errorf("sends in flight to the hanging recipient = %d, want 1", got)
	}
	all, _ := o.Pending(t.Context(), "")
	if len(all) != 10 {
		t.Errorf("Pending(all) = %d messages, want 10", len(all))
	}
	close(release)
}

func TestOutboxKick(t *testing.T) {
	var calls atomic.Int32
	rec := newRecorder()
	rec.fail = func(*Message) error {
		if calls.Add(1) == 1 {
			return errors.New("not connected")
		}
		return nil
	}
	o := newOutbox(t, Config{MinBackoff: time.Hour, MaxBackoff: time.Hour}, memStore(t), rec.send)
	m := fakeMessage(t, "did:schakel:a")
	enqueue(t, o, m)
	start(t, o)
	waitFor(t, "the first failure", func() bool { return o.Stats().Failed == 1 })
	p, err := o.Pending(t.Context(), "did:schakel:a")
	if err != nil || len(p) != 1 {
		t.Fatalf("Pending = %v, %v", p, err)
	}
	if wait := time.Until(p[0].NextAttempt); wait < 29*time.Minute {
		t.Fatalf("next attempt in %v, want at least 30 min", wait)
	}
	o.Kick("did:schakel:b") // another recipient: no effect
	time.Sleep(20 * time.Millisecond)
	if rec.count(m.ID) != 0 {
		t.Fatal("Kick of another recipient delivered the message")
	}
	o.Kick("did:schakel:a")
	waitFor(t, "delivery after Kick", func() bool { return rec.count(m.ID) == 1 })
}

// TestOutboxSuccessEndsBackoff checks that a delivery to an organisation makes its other
// messages due at once: it is reachable again.
func TestOutboxSuccessEndsBackoff(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	rec := newRecorder()
	rec.fail = func(*Message) error {
		if down.Load() {
			return errors.New("not connected")
		}
		return nil
	}
	o := newOutbox(t, Config{MinBackoff: time.Hour, MaxBackoff: time.Hour}, memStore(t), rec.send)
	first, second := fakeMessage(t, "did:schakel:a"), fakeMessage(t, "did:schakel:a")
	enqueue(t, o, first)
	start(t, o)
	waitFor(t, "the first failure", func() bool { return o.Stats().Failed == 1 })
	down.Store(false)
	enqueue(t, o, second) // due at once; the first still waits an hour
	waitFor(t, "both deliveries", func() bool { return rec.total() == 2 })
}

func TestOutboxSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	openDB := func() *store.DB {
		db, err := store.Open(store.Config{Dir: dir})
		if err != nil {
			t.Fatalf("store.Open: %v", err)
		}
		return db
	}
	clock := time.Date(2026, 3, 2, 9, 0, 0, 123, time.UTC)
	cfg := Config{Now: func() time.Time { return clock }}

	db := openDB()
	failing := func(context.Context, *Message) error { return errors.New("unreachable") }
	o1, err := New(cfg, db, failing, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ms := []*Message{fakeMessage(t, "did:schakel:a"), fakeMessage(t, "did:schakel:b"), fakeMessage(t, "did:schakel:a")}
	enqueue(t, o1, ms...)
	start(t, o1)
	waitFor(t, "failed attempts", func() bool { return o1.Stats().Failed >= 2 })
	if err := o1.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("db.Close: %v", err)
	}

	db = openDB()
	rec := newRecorder()
	o2, err := New(cfg, db, rec.send, testLogger(t))
	if err != nil {
		t.Fatalf("New after restart: %v", err)
	}
	if got := o2.Depth(); got != 3 {
		t.Fatalf("Depth after restart = %d, want 3", got)
	}
	p, _ := o2.Pending(t.Context(), "")
	if !p[0].Enqueued.Equal(clock) {
		t.Errorf("enqueue time after restart = %s, want %s", p[0].Enqueued, clock)
	}
	start(t, o2)
	waitFor(t, "deliveries after restart", func() bool { return rec.total() == 3 })
	for _, m := range ms {
		if rec.count(m.ID) != 1 {
			t.Errorf("message %s delivered %d times, want 1", m.ID, rec.count(m.ID))
		}
	}
	if err := o2.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("db.Close: %v", err)
	}

	db = openDB()
	defer db.Close()
	o3, err := New(cfg, db, rec.send, testLogger(t))
	if err != nil {
		t.Fatalf("New after second restart: %v", err)
	}
	if got := o3.Depth(); got != 0 {
		t.Fatalf("Depth after delivery and restart = %d, want 0", got)
	}
}

func TestOutboxDropsAfterMaxAge(t *testing.T) {
	var clock atomic.Pointer[time.Time]
	now := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	clock.Store(&now)
	advance := func(d time.Duration) {
		t := clock.Load().Add(d)
		clock.Store(&t)
	}
	db := memStore(t)
	cfg := Config{MaxAge: 24 * time.Hour, MinBackoff: time.Hour, MaxBackoff: time.Hour, Now: func() time.Time { return *clock.Load() }}
	o := newOutbox(t, cfg, db, func(context.Context, *Message) error { return errors.New("unreachable") })
	old := fakeMessage(t, "did:schakel:a")
	enqueue(t, o, old)
	start(t, o)
	waitFor(t, "the first failure", func() bool { return o.Stats().Failed == 1 })

	advance(23 * time.Hour)
	young := fakeMessage(t, "did:schakel:a")
	enqueue(t, o, young)
	waitFor(t, "a failure of the young message", func() bool {
		p, _ := o.Pending(t.Context(), "did:schakel:a")
		return len(p) == 2 && p[1].ID == young.ID && p[1].Attempts > 0
	})
	advance(time.Hour)
	o.Kick("did:schakel:a")
	waitFor(t, "the drop", func() bool { return o.Stats().Dropped == 1 })

	p, _ := o.Pending(t.Context(), "")
	if len(p) != 1 || p[0].ID != young.ID {
		t.Fatalf("Pending after drop = %+v, want only %s", p, young.ID)
	}
	if got := countKeys(t, db, nsOutbox); got != 2 {
		t.Fatalf("stored keys after drop = %d, want 2 (the young message)", got)
	}
	advance(23 * time.Hour)
	o.Kick("did:schakel:a")
	waitFor(t, "the second drop", func() bool { return o.Stats().Dropped == 2 && o.Depth() == 0 })
	if got := countKeys(t, db, nsOutbox); got != 0 {
		t.Fatalf("stored keys after drops = %d, want 0", got)
	}
}

func TestOutboxFull(t *testing.T) {
	rec := newRecorder()
	o := newOutbox(t, Config{MaxQueued: 2}, memStore(t), rec.send)
	a, b, c := fakeMessage(t, "did:schakel:a"), fakeMessage(t, "did:schakel:a"), fakeMessage(t, "did:schakel:a")
	enqueue(t, o, a, b)
	if err := o.Enqueue(t.Context(), c); !errors.Is(err, ErrFull) {
		t.Fatalf("Enqueue beyond MaxQueued: %v, want ErrFull", err)
	}
	if err := o.Enqueue(t.Context(), a); err != nil {
		t.Fatalf("Enqueue of a queued id: %v, want nil", err)
	}
	if got := o.Depth(); got != 2 {
		t.Fatalf("Depth = %d, want 2", got)
	}
	start(t, o)
	waitFor(t, "room", func() bool { return o.Depth() == 0 })
	enqueue(t, o, c)
	waitFor(t, "the third delivery", func() bool { return rec.count(c.ID) == 1 })
	if rec.count(a.ID) != 1 {
		t.Fatalf("re-enqueued message delivered %d times, want 1", rec.count(a.ID))
	}
}

// TestOutboxConcurrentEnqueue checks that MaxQueued holds under concurrent Enqueues and that
// each stored message is queued once.
func TestOutboxConcurrentEnqueue(t *testing.T) {
	db := memStore(t)
	o := newOutbox(t, Config{MaxQueued: 10}, db, newRecorder().send)
	var wg sync.WaitGroup
	var ok, full atomic.Int32
	for range 30 {
		wg.Go(func() {
			switch err := o.Enqueue(context.Background(), fakeMessage(t, "did:schakel:a")); {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrFull):
				full.Add(1)
			default:
				t.Errorf("Enqueue: %v", err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 10 || full.Load() != 20 || o.Depth() != 10 || countKeys(t, db, nsOutbox) != 20 {
		t.Fatalf("%d queued, %d full, Depth %d, %d keys; want 10, 20, 10, 20", ok.Load(), full.Load(), o.Depth(), countKeys(t, db, nsOutbox))
	}
}

func TestOutboxLifecycle(t *testing.T) {
	db := memStore(t)
	o, err := New(Config{}, db, newRecorder().send, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := o.Close(t.Context()); err != nil {
		t.Fatalf("Close before Start: %v", err)
	}
	if err := o.Start(t.Context()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close: %v, want ErrClosed", err)
	}
	if err := o.Enqueue(t.Context(), fakeMessage(t, "did:schakel:a")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Enqueue after Close: %v, want ErrClosed", err)
	}

	o = newOutbox(t, Config{}, db, newRecorder().send)
	start(t, o)
	start(t, o) // a second Start does nothing
	for range 2 {
		if err := o.Close(t.Context()); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
}

// TestOutboxCloseCancelsHungSend checks that Close returns when its context ends even though a
// send ignores nothing but its own context, and that the send's context is then cancelled.
func TestOutboxCloseCancelsHungSend(t *testing.T) {
	entered := make(chan struct{})
	cancelled := make(chan struct{})
	o, err := New(Config{}, memStore(t), func(ctx context.Context, _ *Message) error {
		close(entered)
		<-ctx.Done()
		close(cancelled)
		return ctx.Err()
	}, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	enqueue(t, o, fakeMessage(t, "did:schakel:a"))
	start(t, o)
	<-entered
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := o.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with a send in flight: %v, want DeadlineExceeded", err)
	}
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("send not cancelled")
	}
	if err := o.Close(t.Context()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if o.Depth() != 1 {
		t.Fatalf("Depth after cancelled send = %d, want 1 (kept for the next start)", o.Depth())
	}
}

func TestOutboxEnqueueRefuses(t *testing.T) {
	db := memStore(t)
	o := newOutbox(t, Config{}, db, newRecorder().send)
	for _, tc := range []struct {
		name   string
		mutate func(m *Message)
		want   error
	}{
		{"bad id", func(m *Message) { m.ID = "x" }, ErrMalformed},
		{"no recipient", func(m *Message) { m.To = "" }, ErrMalformed},
		{"empty payload", func(m *Message) { m.Payload = nil }, ErrMalformed},
		{"payload too large", func(m *Message) { m.Payload = make([]byte, MaxPayload+1) }, ErrTooLarge},
		{"nil", nil, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m *Message
			if tc.mutate != nil {
				m = fakeMessage(t, "did:schakel:a")
				tc.mutate(m)
			}
			if err := o.Enqueue(t.Context(), m); !errors.Is(err, tc.want) {
				t.Fatalf("Enqueue: %v, want %v", err, tc.want)
			}
		})
	}
	if o.Depth() != 0 || countKeys(t, db, nsOutbox) != 0 {
		t.Fatalf("refused messages left Depth %d and %d keys", o.Depth(), countKeys(t, db, nsOutbox))
	}
}

func TestNewRefuses(t *testing.T) {
	db := memStore(t)
	send := newRecorder().send
	for _, tc := range []struct {
		name string
		cfg  Config
		db   *store.DB
		send SendFunc
	}{
		{"negative backoff", Config{MinBackoff: -1}, db, send},
		{"min above max", Config{MinBackoff: time.Hour, MaxBackoff: time.Minute}, db, send},
		{"negative MaxQueued", Config{MaxQueued: -1}, db, send},
		{"negative Parallel", Config{Parallel: -1}, db, send},
		{"negative MaxAge", Config{MaxAge: -1}, db, send},
		{"no store", Config{}, nil, send},
		{"no send", Config{}, db, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg, tc.db, tc.send, nil); !errors.Is(err, ErrConfig) {
				t.Fatalf("New: %v, want ErrConfig", err)
			}
		})
	}
}

func TestNewRefusesCorruptQueue(t *testing.T) {
	for _, tc := range []struct {
		name  string
		id    string
		value string
	}{
		{"not JSON", mustID(t), "{"},
		{"unknown version", mustID(t), `{"v":2,"to":"did:schakel:a","enqueued":1}`},
		{"bad recipient", mustID(t), `{"v":1,"to":"nobody","enqueued":1}`},
		{"bad id", "short", `{"v":1,"to":"did:schakel:a","enqueued":1}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := memStore(t)
			err := db.Update(t.Context(), func(tx *store.Txn) error {
				return tx.Set(nsOutbox, queueKey(tc.id), []byte(tc.value))
			})
			if err != nil {
				t.Fatalf("Update: %v", err)
			}
			if _, err := New(Config{}, db, newRecorder().send, nil); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("New: %v, want ErrCorrupt", err)
			}
		})
	}
}

// TestOutboxToInbox runs the whole path: Seal, Enqueue, a send that Opens and Receives at the
// recipient and loses the first acknowledgement. The recipient processes the message once.
func TestOutboxToInbox(t *testing.T) {
	alice, bob := newOrg(t, "did:schakel:alice"), newOrg(t, "did:schakel:bob")
	bobDB := memStore(t)
	inbox, err := NewInbox(bobDB, InboxConfig{})
	if err != nil {
		t.Fatalf("NewInbox: %v", err)
	}
	effects := store.MustNamespace("test-effects")
	var attempts, duplicates atomic.Int32
	send := func(ctx context.Context, m *Message) error {
		opened, err := Open(ctx, m, bob.agr, bob.did, resolverOf(alice), time.Now())
		if err != nil {
			return err
		}
		dup, err := inbox.Receive(ctx, m, func(tx *store.Txn, m *Message) error {
			return tx.Set(effects, []byte(m.ID), opened.Body)
		})
		if err != nil {
			return err
		}
		if dup {
			duplicates.Add(1)
		}
		if attempts.Add(1) == 1 {
			return errors.New("acknowledgement lost")
		}
		return nil
	}
	o := newOutbox(t, Config{MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond}, memStore(t), send)
	m, err := Seal(alice.sig, alice.did, bob.agr.Public(), bob.did, "consent-request", []byte("request"), time.Now(), 0)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	enqueue(t, o, m)
	start(t, o)
	waitFor(t, "delivery", func() bool { return o.Stats().Delivered == 1 })
	if attempts.Load() != 2 || duplicates.Load() != 1 {
		t.Fatalf("%d attempts, %d duplicates; want 2 and 1", attempts.Load(), duplicates.Load())
	}
	if n := countKeys(t, bobDB, effects); n != 1 {
		t.Fatalf("%d effects at the recipient, want 1", n)
	}
}

func ExampleOutbox() {
	// The node wires an Outbox to the network's delivery call. Here a send that prints.
	db, _ := store.Open(store.Config{InMemory: true})
	defer db.Close()
	done := make(chan struct{})
	o, _ := New(Config{}, db, func(_ context.Context, m *Message) error {
		fmt.Println("sent to", m.To)
		close(done)
		return nil
	}, nil)
	id, _ := newID()
	_ = o.Enqueue(context.Background(), &Message{ID: id, From: "did:schakel:a", To: "did:schakel:b", Payload: []byte("a.b.c.d.e")})
	_ = o.Start(context.Background())
	<-done
	_ = o.Close(context.Background())
	// Output: sent to did:schakel:b
}
