package outbox

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/schakel-health/schakel/internal/store"
)

// nsCounter holds what the test handlers write: one counter per message.
var nsCounter = store.MustNamespace("test-counter")

// increment is a handler whose effect is a read-modify-write, so that running it twice would
// show.
func increment(tx *store.Txn, m *Message) error {
	var n uint64
	switch v, err := tx.Get(nsCounter, []byte(m.ID)); {
	case err == nil:
		n = binary.BigEndian.Uint64(v)
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	return tx.Set(nsCounter, []byte(m.ID), binary.BigEndian.AppendUint64(nil, n+1))
}

// wantHandled fails the test unless the handler's effect for id committed want times.
func wantHandled(tb testing.TB, db *store.DB, id string, want uint64) {
	tb.Helper()
	var n uint64
	err := db.View(context.Background(), func(tx *store.Txn) error {
		v, err := tx.Get(nsCounter, []byte(id))
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err == nil {
			n = binary.BigEndian.Uint64(v)
		}
		return err
	})
	if err != nil {
		tb.Fatalf("View: %v", err)
	}
	if n != want {
		tb.Fatalf("handled %d times, want %d", n, want)
	}
}

// inboxFixture returns a store, an Inbox over it and a message to receive.
func inboxFixture(tb testing.TB) (*store.DB, *Inbox, *Message) {
	tb.Helper()
	db := memStore(tb)
	in, err := NewInbox(db, InboxConfig{})
	if err != nil {
		tb.Fatalf("NewInbox: %v", err)
	}
	return db, in, fakeMessage(tb, "did:schakel:bob")
}

func TestInboxOnce(t *testing.T) {
	db, in, m := inboxFixture(t)
	for i, wantDup := range []bool{false, true, true} {
		dup, err := in.Receive(t.Context(), m, increment)
		if err != nil || dup != wantDup {
			t.Fatalf("Receive #%d = %v, %v; want %v", i+1, dup, err, wantDup)
		}
	}
	wantHandled(t, db, m.ID, 1)
}

func TestInboxConcurrent(t *testing.T) {
	db, in, m := inboxFixture(t)
	var fresh, dups atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			dup, err := in.Receive(context.Background(), m, increment)
			switch {
			case err != nil:
				t.Errorf("Receive: %v", err)
			case dup:
				dups.Add(1)
			default:
				fresh.Add(1)
			}
		})
	}
	wg.Wait()
	if fresh.Load() != 1 || dups.Load() != 15 {
		t.Fatalf("%d processed, %d duplicates; want 1 and 15", fresh.Load(), dups.Load())
	}
	wantHandled(t, db, m.ID, 1)
}

func TestInboxHandlerError(t *testing.T) {
	db, in, m := inboxFixture(t)
	errBoom := errors.New("custodian unavailable")
	dup, err := in.Receive(t.Context(), m, func(tx *store.Txn, m *Message) error {
		if err := increment(tx, m); err != nil {
			return err
		}
		return errBoom
	})
	if err != errBoom || dup {
		t.Fatalf("Receive with failing handler = %v, %v; want false and the handler's error as is", dup, err)
	}
	wantHandled(t, db, m.ID, 0)
	if n := countKeys(t, db, nsInbox); n != 0 {
		t.Fatalf("failing handler left %d receipts", n)
	}
	dup, err = in.Receive(t.Context(), m, increment)
	if err != nil || dup {
		t.Fatalf("Receive after failure = %v, %v; want processed", dup, err)
	}
	wantHandled(t, db, m.ID, 1)
}

func TestInboxScopedBySender(t *testing.T) {
	_, in, a := inboxFixture(t)
	b := *a
	b.From = "did:schakel:carol"
	var handled int
	for _, m := range []*Message{a, &b} {
		dup, err := in.Receive(t.Context(), m, func(*store.Txn, *Message) error {
			handled++
			return nil
		})
		if err != nil || dup {
			t.Fatalf("Receive from %s = %v, %v; want processed", m.From, dup, err)
		}
	}
	if handled != 2 {
		t.Fatalf("handled %d, want 2", handled)
	}
}

func TestInboxReceiptExpires(t *testing.T) {
	db := memStore(t)
	retention := minRetention + time.Hour
	in, err := NewInbox(db, InboxConfig{Retention: retention})
	if err != nil {
		t.Fatalf("NewInbox: %v", err)
	}
	m := fakeMessage(t, "did:schakel:bob")
	before := time.Now()
	if _, err := in.Receive(t.Context(), m, increment); err != nil {
		t.Fatalf("Receive: %v", err)
	}
	txn := db.Badger().NewTransaction(false)
	defer txn.Discard()
	item, err := txn.Get(nsInbox.Key(receiptKey(m.From, m.ID)))
	if err != nil {
		t.Fatalf("receipt: %v", err)
	}
	exp := time.Unix(int64(item.ExpiresAt()), 0)
	if exp.Before(before.Add(retention)) || exp.After(time.Now().Add(retention+time.Second)) {
		t.Fatalf("receipt expires at %s, want %v after %s", exp, retention, before)
	}
}

func TestNewInboxRefuses(t *testing.T) {
	if _, err := NewInbox(nil, InboxConfig{}); !errors.Is(err, ErrConfig) {
		t.Fatalf("NewInbox(nil): %v, want ErrConfig", err)
	}
	if _, err := NewInbox(memStore(t), InboxConfig{Retention: MaxTTL}); !errors.Is(err, ErrConfig) {
		t.Fatalf("NewInbox with Retention MaxTTL: %v, want ErrConfig", err)
	}
}

func TestInboxRefusesMalformed(t *testing.T) {
	db, in, m := inboxFixture(t)
	m.ID = "not-an-id"
	if _, err := in.Receive(t.Context(), m, increment); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Receive: %v, want ErrMalformed", err)
	}
	if _, err := in.Receive(t.Context(), fakeMessage(t, "did:schakel:bob"), nil); !errors.Is(err, ErrConfig) {
		t.Fatalf("Receive without handler: %v, want ErrConfig", err)
	}
	if n := countKeys(t, db, nsInbox); n != 0 {
		t.Fatalf("refused messages left %d receipts", n)
	}
}
