package did

import (
	"fmt"
	"time"

	"github.com/schakel-health/schakel/crypto"
)

// KeyPeriod is one signing key with the time span in which it was the organisation's key.
type KeyPeriod struct {
	Seq          uint64            `json:"seq"`
	SigningKey   *crypto.PublicKey `json:"signingKey"`
	AgreementKey *crypto.PublicKey `json:"agreementKey"`
	// From is the Unix time of the event that introduced the key.
	From int64 `json:"from"`
	// Until is the Unix time of the event that replaced it; 0 while current.
	Until int64 `json:"until,omitempty"`
}

// State is the key state of a DID after its last applied event. It is materialised in storage so
// that start-up never replays history.
type State struct {
	DID string `json:"did"`
	// Seq is the sequence number of the last applied event.
	Seq uint64 `json:"seq"`
	// Head is the EventHash of the last applied event.
	Head string `json:"head"`
	// Time is the time of the last applied event.
	Time          int64       `json:"time"`
	Keys          []KeyPeriod `json:"keys"`
	Deactivated   bool        `json:"deactivated,omitempty"`
	DeactivatedAt int64       `json:"deactivatedAt,omitempty"`
}

// Current is the key period in force after the last event.
func (s *State) Current() KeyPeriod { return s.Keys[len(s.Keys)-1] }

// KeyAt returns the signing key that was valid at t. A key is valid from its event's time up to (not
// including) the time of the event that replaced it. After deactivation no key is valid.
func (s *State) KeyAt(t time.Time) (*crypto.PublicKey, error) {
	kp, err := s.periodAt(t)
	if err != nil {
		return nil, err
	}
	return kp.SigningKey, nil
}

// AgreementKeyAt returns the key-agreement key that was valid at t.
func (s *State) AgreementKeyAt(t time.Time) (*crypto.PublicKey, error) {
	kp, err := s.periodAt(t)
	if err != nil {
		return nil, err
	}
	return kp.AgreementKey, nil
}

// KeyByID returns the signing key with the given key id if it was valid at t. Times are in whole
// seconds (as in JWT "iat"), so the bounds are inclusive: a signature made in the second of a rotation
// verifies against either key.
func (s *State) KeyByID(kid string, t time.Time) (*crypto.PublicKey, error) {
	u := t.Unix()
	if s.Deactivated && u > s.DeactivatedAt {
		return nil, fmt.Errorf("%s: %w at %s", s.DID, ErrDeactivated, time.Unix(s.DeactivatedAt, 0).UTC().Format(time.RFC3339))
	}
	for _, kp := range s.Keys {
		if kp.SigningKey.KID() != kid {
			continue
		}
		if u >= kp.From && (kp.Until == 0 || u <= kp.Until) {
			return kp.SigningKey, nil
		}
		return nil, fmt.Errorf("%s: %w: key %s was not the signing key at %s", s.DID, ErrNoKey, kid, t.UTC().Format(time.RFC3339))
	}
	return nil, fmt.Errorf("%s: %w: no key %s in its history", s.DID, ErrNoKey, kid)
}

func (s *State) periodAt(t time.Time) (KeyPeriod, error) {
	u := t.Unix()
	if s.Deactivated && u >= s.DeactivatedAt {
		return KeyPeriod{}, fmt.Errorf("%s: %w at %s", s.DID, ErrDeactivated, time.Unix(s.DeactivatedAt, 0).UTC().Format(time.RFC3339))
	}
	for i := len(s.Keys) - 1; i >= 0; i-- {
		kp := s.Keys[i]
		if u >= kp.From && (kp.Until == 0 || u < kp.Until) {
			return kp, nil
		}
	}
	return KeyPeriod{}, fmt.Errorf("%s: %w (%s)", s.DID, ErrNoKey, t.UTC().Format(time.RFC3339))
}

// Apply verifies one compact key event against st (nil for a genesis event) and returns the new
// state. It is pure: st is not modified. now bounds how far in the future an event may lie.
func Apply(st *State, compact []byte, now time.Time) (*State, *Event, error) {
	ev, err := ParseEvent(compact)
	if err != nil {
		return nil, nil, err
	}
	if ev.Time > now.Add(maxFutureSkew).Unix() {
		return nil, nil, fmt.Errorf("%w: event time %d is in the future", ErrInvalid, ev.Time)
	}
	if ev.Type == Genesis {
		if st != nil {
			return nil, nil, fmt.Errorf("%w: genesis for a DID that exists", ErrInvalid)
		}
		if _, _, err := crypto.Verify(compact, ev.SigningKey); err != nil {
			return nil, nil, fmt.Errorf("%w: genesis signature: %w", ErrInvalid, err)
		}
		id := DIDFromGenesis(compact)
		return &State{
			DID:  id,
			Seq:  0,
			Head: EventHash(compact),
			Time: ev.Time,
			Keys: []KeyPeriod{{Seq: 0, SigningKey: ev.SigningKey, AgreementKey: ev.AgreementKey, From: ev.Time}},
		}, ev, nil
	}
	if st == nil {
		return nil, nil, fmt.Errorf("%s: %w", ev.DID, ErrUnknownDID)
	}
	if ev.DID != st.DID {
		return nil, nil, fmt.Errorf("%w: event for %s applied to %s", ErrInvalid, ev.DID, st.DID)
	}
	if st.Deactivated {
		return nil, nil, fmt.Errorf("%s: %w: no event follows deactivation", st.DID, ErrDeactivated)
	}
	if ev.Seq <= st.Seq {
		return nil, nil, fmt.Errorf("%s: %w: seq %d already applied", st.DID, ErrFork, ev.Seq)
	}
	if ev.Seq != st.Seq+1 {
		return nil, nil, fmt.Errorf("%s: %w: seq %d, want %d", st.DID, ErrInvalid, ev.Seq, st.Seq+1)
	}
	if ev.Prev != st.Head {
		return nil, nil, fmt.Errorf("%s: %w: prev does not name event %d", st.DID, ErrInvalid, st.Seq)
	}
	if ev.Time < st.Time {
		return nil, nil, fmt.Errorf("%s: %w: event time %d before previous event %d", st.DID, ErrInvalid, ev.Time, st.Time)
	}
	cur := st.Current()
	if _, _, err := crypto.Verify(compact, cur.SigningKey); err != nil {
		return nil, nil, fmt.Errorf("%s: %w: %s event not signed by the current key: %w", st.DID, ErrInvalid, ev.Type, err)
	}
	next := *st
	next.Keys = append([]KeyPeriod(nil), st.Keys...)
	next.Seq, next.Head, next.Time = ev.Seq, EventHash(compact), ev.Time
	next.Keys[len(next.Keys)-1].Until = ev.Time
	switch ev.Type {
	case Rotate:
		for _, kp := range st.Keys {
			if kp.SigningKey.Equal(ev.SigningKey) {
				return nil, nil, fmt.Errorf("%s: %w: rotate to a key used before (%s)", st.DID, ErrInvalid, kp.SigningKey.KID())
			}
		}
		next.Keys = append(next.Keys, KeyPeriod{Seq: ev.Seq, SigningKey: ev.SigningKey, AgreementKey: ev.AgreementKey, From: ev.Time})
	case Deactivate:
		next.Deactivated, next.DeactivatedAt = true, ev.Time
	}
	return &next, ev, nil
}
