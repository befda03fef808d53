package outbox

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/schakel-health/schakel/internal/store"
)

// nsInbox holds one receipt per processed message, under SHA-256(from) ‖ id (48 bytes: fixed
// width, so no sender's keys can run into another's), with the Unix time of processing as value.
var nsInbox = store.MustNamespace("inbox")

// DefaultRetention is how long an Inbox remembers a processed message by default: a day longer
// than the longest lifetime a message can have.
const DefaultRetention = MaxTTL + 24*time.Hour

// minRetention is the shortest safe retention. A message processed at r was not expired then, so
// its exp lies before r + MaxTTL + MaxClockSkew (its iat at most MaxClockSkew after r), and Open
// refuses it from exp + MaxClockSkew on. A receipt kept this long therefore outlives every replay
// that could still open.
const minRetention = MaxTTL + 2*MaxClockSkew

// InboxConfig configures an Inbox. The zero value means the defaults.
type InboxConfig struct {
	// Retention is how long a processed message's id is remembered. 0 means DefaultRetention; it
	// MUST be at least MaxTTL + 2 × MaxClockSkew, so that a replay is refused as a duplicate
	// until Open refuses it as expired. Longer costs only storage: about 60 bytes a message.
	Retention time.Duration
}

// Inbox makes the processing of received messages exactly-once: a message is handled in the
// same transaction that records its id, so a redelivery — the sender retrying after a lost
// acknowledgement, or a replay — is recognised and not handled again. It is safe for concurrent
// use.
type Inbox struct {
	db        *store.DB
	retention time.Duration
}

// NewInbox returns an Inbox over db.
func NewInbox(db *store.DB, cfg InboxConfig) (*Inbox, error) {
	if db == nil {
		return nil, fmt.Errorf("outbox: new inbox: %w: db is required", ErrConfig)
	}
	switch {
	case cfg.Retention == 0:
		cfg.Retention = DefaultRetention
	case cfg.Retention < minRetention:
		return nil, fmt.Errorf("outbox: new inbox: %w: Retention %v is below %v, so a replay could be processed twice",
			ErrConfig, cfg.Retention, minRetention)
	}
	return &Inbox{db: db, retention: cfg.Retention}, nil
}

// Receive processes m once. In one transaction it looks up m.ID among the ids already processed
// from m.From: if found, it returns duplicate true without calling handle; otherwise it calls
// handle, which writes its effects through tx, and records the id, to be forgotten after the
// retention. When handle returns an error, that error is returned as is, the transaction is
// discarded and nothing is recorded, so the sender's retry is processed afresh.
//
// The caller MUST Open m before Receive: the id is scoped by m.From, which only Open
// authenticates. A duplicate SHOULD be acknowledged to the sender as success, so it stops
// retrying.
//
// When the transaction conflicts with a concurrent one (the same message arriving twice at once,
// or handle's own reads), it runs again, handle included; only the run that commits has effects.
// handle MUST therefore have no effects outside tx; effects that must follow the commit, such
// as notifying someone, go in tx.OnCommit.
func (in *Inbox) Receive(ctx context.Context, m *Message, handle func(tx *store.Txn, m *Message) error) (duplicate bool, err error) {
	if err := m.Validate(); err != nil {
		return false, fmt.Errorf("outbox: receive: %w", err)
	}
	if handle == nil {
		return false, fmt.Errorf("outbox: receive %s: %w: nil handler", m.ID, ErrConfig)
	}
	key := receiptKey(m.From, m.ID)
	var handleErr error
	err = in.db.Update(ctx, func(tx *store.Txn) error {
		duplicate, handleErr = false, nil
		// Has reads the key, so a concurrent Receive of the same message that commits first
		// makes this transaction conflict and run again, and then see the receipt.
		seen, err := tx.Has(nsInbox, key)
		if err != nil {
			return err
		}
		if seen {
			duplicate = true
			return nil
		}
		if handleErr = handle(tx, m); handleErr != nil {
			return handleErr
		}
		var at [8]byte
		binary.BigEndian.PutUint64(at[:], uint64(time.Now().Unix()))
		return tx.SetTTL(nsInbox, key, at[:], in.retention)
	})
	switch {
	case err == nil:
		return duplicate, nil
	case handleErr != nil && err == handleErr:
		return false, err
	default:
		return false, fmt.Errorf("outbox: receive %s from %s: %w", m.ID, m.From, err)
	}
}

// receiptKey is SHA-256(from) ‖ the 16 bytes of id. The caller has validated id, so decoding
// cannot fail.
func receiptKey(from, id string) []byte {
	h := sha256.Sum256([]byte(from))
	k := make([]byte, 0, len(h)+idSize)
	k = append(k, h[:]...)
	k, _ = b64.AppendDecode(k, []byte(id))
	return k
}
