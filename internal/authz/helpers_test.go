package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/store"
)

const (
	requesterDID = "did:schakel:7Hq3requester"
	custodianDID = "did:schakel:9Kp2custodian"
	otherDID     = "did:schakel:4Zz8otherhosted"
	testBSN      = "111222333" // passes the 11-proof
	badBSN       = "111222334" // fails it
	pseudonym    = "v1.YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXowMTIzNA"
)

// t0 is the fixture's present.
var t0 = time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)

// keyPeriod is a signing key with the span in which it was valid; until zero means still valid.
type keyPeriod struct {
	key         *crypto.PublicKey
	from, until time.Time
}

// fixture holds two organisations' keys, a custodian node's verifier and a fake DID registry.
type fixture struct {
	t       testing.TB
	now     time.Time
	reqKey  *crypto.PrivateKey // requester's signing key
	custKey *crypto.PrivateKey // custodian's signing key
	custEnc *crypto.PrivateKey // custodian's key-agreement key
	otherEn *crypto.PrivateKey // another hosted organisation's key-agreement key
	dpopKey *crypto.PrivateKey // the requesting EHR's DPoP key

	mu   sync.Mutex
	keys map[string]keyPeriod // by "<did>#<thumbprint>"

	db       *store.DB
	replay   *ReplayCache
	verifier *Verifier
}

func mustKey(t testing.TB, kt crypto.KeyType, use crypto.Use) *crypto.PrivateKey {
	t.Helper()
	k, err := crypto.GenerateKey(kt, use)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	return k
}

func openMemStore(t testing.TB) *store.DB {
	t.Helper()
	db, err := store.Open(store.Config{InMemory: true})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	// The keys are fixed (testdata/vectors.json), so that the vectors and the fuzz seeds made
	// from them verify in every process.
	keys := vectorKeys(t)
	f := &fixture{
		t:       t,
		now:     t0,
		reqKey:  keys["requester"],
		custKey: keys["custodian"],
		custEnc: keys["custodian_enc"],
		otherEn: keys["other_enc"],
		dpopKey: keys["dpop"],
		keys:    map[string]keyPeriod{},
		db:      openMemStore(t),
	}
	f.addKey(requesterDID, f.reqKey.Public(), t0.Add(-24*time.Hour), time.Time{})
	f.addKey(custodianDID, f.custKey.Public(), t0.Add(-24*time.Hour), time.Time{})
	f.replay = f.newReplay(f.db)
	f.verifier = f.newVerifier(f.replay)
	return f
}

func (f *fixture) newReplay(db *store.DB) *ReplayCache {
	f.t.Helper()
	r, err := NewReplayCache(db)
	if err != nil {
		f.t.Fatalf("NewReplayCache: %v", err)
	}
	return r
}

func (f *fixture) newVerifier(r *ReplayCache) *Verifier {
	f.t.Helper()
	v, err := NewVerifier(VerifierConfig{Now: f.clock}, f.recipient, f.resolve, r)
	if err != nil {
		f.t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

func (f *fixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fixture) setNow(t time.Time) {
	f.mu.Lock()
	f.now = t
	f.mu.Unlock()
}

func (f *fixture) addKey(did string, k *crypto.PublicKey, from, until time.Time) {
	f.mu.Lock()
	f.keys[did+"#"+k.KID()] = keyPeriod{key: k, from: from, until: until}
	f.mu.Unlock()
}

// resolve is a fake DID registry: the key named by kid if it was valid at at.
func (f *fixture) resolve(_ context.Context, kid string, at time.Time) (*crypto.PublicKey, error) {
	f.mu.Lock()
	p, ok := f.keys[kid]
	f.mu.Unlock()
	switch {
	case !ok:
		return nil, fmt.Errorf("no key %s", kid)
	case at.Before(p.from) || (!p.until.IsZero() && !at.Before(p.until)):
		return nil, fmt.Errorf("key %s not valid at %s", kid, at)
	}
	return p.key, nil
}

// tokenKeys is the introspector's key lookup: only the custodian's keys, at the present.
func (f *fixture) tokenKeys(kid string) (*crypto.PublicKey, error) {
	if !strings.HasPrefix(kid, custodianDID+"#") {
		return nil, fmt.Errorf("%s is not hosted here", kid)
	}
	return f.resolve(context.Background(), kid, f.clock())
}

// recipient hosts the custodian and one other organisation.
func (f *fixture) recipient(_ context.Context, kid string) (string, *crypto.PrivateKey, error) {
	switch kid {
	case f.custEnc.KID():
		return custodianDID, f.custEnc, nil
	case f.otherEn.KID():
		return otherDID, f.otherEn, nil
	}
	return "", nil, errors.New("no such key")
}

func (f *fixture) claims() AssertionClaims {
	return AssertionClaims{
		Issuer:       requesterDID,
		Custodian:    custodianDID,
		ID:           NewID(),
		IssuedAt:     f.clock(),
		Expiry:       f.clock().Add(5 * time.Minute),
		Employee:     Employee{UZI: "900012345", Role: "01.015", Name: "dr. A. de Vries", Assurance: "high"},
		BSN:          testBSN,
		DataCategory: "medication",
		Purpose:      "TREAT",
		DPoPJKT:      f.dpopKey.KID(),
	}
}

func (f *fixture) assertion(c AssertionClaims) []byte {
	f.t.Helper()
	jwe, err := NewAssertion(f.reqKey, "", c, f.custEnc.Public())
	if err != nil {
		f.t.Fatalf("NewAssertion: %v", err)
	}
	return jwe
}

// sealRaw signs any payload with typ and kid and encrypts it to to, bypassing NewAssertion's
// checks, to build assertions a broken or hostile requester could send.
func (f *fixture) sealRaw(signer *crypto.PrivateKey, typ, kid string, payload any, to *crypto.PublicKey) []byte {
	f.t.Helper()
	body, err := json.Marshal(payload)
	if err != nil {
		f.t.Fatalf("json.Marshal: %v", err)
	}
	jws, err := crypto.Sign(signer, body, crypto.Header{Type: typ, KID: kid})
	if err != nil {
		f.t.Fatalf("crypto.Sign: %v", err)
	}
	jwe, err := crypto.Encrypt(jws, to)
	if err != nil {
		f.t.Fatalf("crypto.Encrypt: %v", err)
	}
	return jwe
}

// payloadOf returns the JSON payload NewAssertion would sign for c, as a map to alter.
func payloadOf(c AssertionClaims) map[string]any {
	return map[string]any{
		"iss": c.Issuer, "sub": c.Issuer, "aud": c.Custodian, "jti": c.ID,
		"iat": c.IssuedAt.Unix(), "exp": c.Expiry.Unix(),
		"employee": map[string]any{"uzi": c.Employee.UZI, "role": c.Employee.Role,
			"name": c.Employee.Name, "assurance": c.Employee.Assurance},
		"bsn": c.BSN, "data_category": c.DataCategory, "purpose": c.Purpose,
		"cnf": map[string]any{"jkt": c.DPoPJKT},
	}
}

func (f *fixture) tokenClaims() TokenClaims {
	return TokenClaims{
		Issuer:   custodianDID,
		Subject:  requesterDID,
		ID:       NewID(),
		IssuedAt: f.clock(),
		Expiry:   f.clock().Add(10 * time.Minute),
		Scope:    Scope{DataCategory: "medication", Purpose: "TREAT", Patient: pseudonym}.String(),
		Patient:  pseudonym,
		Employee: Employee{UZI: "900012345", Role: "01.015", Name: "dr. A. de Vries"},
		JKT:      f.dpopKey.KID(),
		Basis:    "consent-42",
	}
}

func (f *fixture) token(c TokenClaims) string {
	f.t.Helper()
	tok, err := IssueToken(f.custKey, "", c)
	if err != nil {
		f.t.Fatalf("IssueToken: %v", err)
	}
	return tok
}

// flip returns b with the byte at i changed to another base64url character.
func flip(b []byte, i int) []byte {
	out := append([]byte(nil), b...)
	if out[i] == 'A' {
		out[i] = 'B'
	} else {
		out[i] = 'A'
	}
	return out
}
