package node

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/accesslog"
	"github.com/schakel-health/schakel/internal/api"
	"github.com/schakel-health/schakel/internal/did"
	"github.com/schakel-health/schakel/internal/store"
	"github.com/schakel-health/schakel/internal/vc"
)

// ErrUnknownOrganization is returned when a call names an organisation this node does not host.
var ErrUnknownOrganization = errors.New("organisation not hosted on this node")

var nsOrg = store.MustNamespace("org")

// hosted is the node's record of an organisation it hosts. The private keys live in the key store
// under the names recorded here.
type hosted struct {
	DID          string `json:"did"`
	Name         string `json:"name"`
	Created      int64  `json:"created"`
	SigningKey   string `json:"signingKey"`
	AgreementKey string `json:"agreementKey"`
	// LogKey names the Ed25519 key that signs the access log's checkpoints. It is separate from the
	// signing key so that a key rotation does not change the log's identity.
	LogKey string `json:"logKey"`
	// PseudonymSecrets are the HMAC secrets (base64) of the organisation's patient pseudonyms by
	// version; PseudonymVersion is the one new pseudonyms use.
	PseudonymSecrets map[uint32]string `json:"pseudonymSecrets"`
	PseudonymVersion uint32            `json:"pseudonymVersion"`
}

func orgKey(id string) []byte { return append([]byte("o/"), id...) }

// orgs manages the organisations a node hosts: their keys, key events, DID documents and the
// credentials they issue. Tenancy: every operation names the organisation it acts for.
type orgs struct {
	// witnessKey is the node's cosignature verifier key, published in every DID document.
	witnessKey string
	db         *store.DB
	keys       crypto.KeyStore
	dids       *did.Registry
	creds      *vc.Store
	peerID     peer.ID
	now        func() time.Time
	validity   time.Duration

	mu sync.Mutex // serialises key changes

	// cache holds the hosted records and private keys read so far: the token path reads them on
	// every request, and a read transaction waits for the commits in flight (badger's read
	// watermark), so each avoided read saves up to an fsync of latency. Records change only
	// through put, which updates the cache; a key name always names the same key.
	cacheMu sync.RWMutex
	records map[string]*hosted
	privs   map[string]*crypto.PrivateKey
}

const maxOrgName = 200

// create makes a new organisation: signing and agreement keys (persisted first), the genesis event
// and a DID document binding it to this node's peer id.
func (o *orgs) create(ctx context.Context, name string) (*hosted, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > maxOrgName {
		return nil, fmt.Errorf("%w: organisation name must be 1–%d characters", api.ErrInvalidArgument, maxOrgName)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	sig, enc, err := did.GenerateKeys()
	if err != nil {
		return nil, err
	}
	now := o.now()
	genesis, id, err := did.NewGenesis(sig, enc.Public(), now)
	if err != nil {
		return nil, err
	}
	h := &hosted{DID: id, Name: name, Created: now.Unix(), PseudonymVersion: 1}
	if h.SigningKey, h.AgreementKey, err = o.saveKeys(ctx, id, 0, sig, enc); err != nil {
		return nil, err
	}
	logKey, err := crypto.GenerateKey(crypto.Ed25519, crypto.UseSign)
	if err != nil {
		return nil, err
	}
	h.LogKey = strings.TrimPrefix(id, did.Method) + ".log.0"
	if err := o.keys.Put(ctx, h.LogKey, logKey); err != nil {
		return nil, err
	}
	secret, err := crypto.GenerateSecret()
	if err != nil {
		return nil, err
	}
	h.PseudonymSecrets = map[uint32]string{1: base64.StdEncoding.EncodeToString(secret)}
	st, _, err := o.dids.AddEvent(ctx, genesis)
	if err != nil {
		return nil, err
	}
	if err := o.publishDocument(ctx, h, sig, st); err != nil {
		return nil, err
	}
	return h, o.put(ctx, h)
}

func (o *orgs) saveKeys(ctx context.Context, id string, seq uint64, sig, enc *crypto.PrivateKey) (string, string, error) {
	base := strings.TrimPrefix(id, did.Method)
	sigName, encName := fmt.Sprintf("%s.sig.%d", base, seq), fmt.Sprintf("%s.enc.%d", base, seq)
	if err := o.keys.Put(ctx, sigName, sig); err != nil {
		return "", "", err
	}
	if err := o.keys.Put(ctx, encName, enc); err != nil {
		return "", "", err
	}
	return sigName, encName, nil
}

func (o *orgs) publishDocument(ctx context.Context, h *hosted, sig *crypto.PrivateKey, st *did.State) error {
	b := did.Binding{PeerIDs: []string{o.peerID.String()}, WitnessKey: o.witnessKey}
	logKey, err := o.keys.Get(ctx, h.LogKey)
	if err != nil {
		return fmt.Errorf("log key of %s: %w", h.DID, err)
	}
	if b.LogOrigin, err = accesslog.Origin(h.DID); err != nil {
		return err
	}
	if b.LogKey, err = logKey.Public().NoteVerifierKey(b.LogOrigin); err != nil {
		return err
	}
	doc, _, err := did.NewDocument(sig, st, b, o.now())
	if err != nil {
		return err
	}
	_, _, err = o.dids.PutDocument(ctx, doc)
	return err
}

func (o *orgs) put(ctx context.Context, h *hosted) error {
	raw, err := json.Marshal(h)
	if err != nil {
		return err
	}
	var b store.Batch
	b.Set(nsOrg, orgKey(h.DID), raw)
	o.cacheMu.Lock()
	delete(o.records, h.DID) // a concurrent get must not keep the old record
	o.cacheMu.Unlock()
	if err := o.db.Write(ctx, &b); err != nil {
		return err
	}
	cp := *h
	o.cacheMu.Lock()
	if o.records == nil {
		o.records = map[string]*hosted{}
	}
	o.records[h.DID] = &cp
	o.cacheMu.Unlock()
	return nil
}

func (o *orgs) get(ctx context.Context, id string) (*hosted, error) {
	o.cacheMu.RLock()
	c, ok := o.records[id]
	o.cacheMu.RUnlock()
	if ok {
		cp := *c
		return &cp, nil
	}
	var raw []byte
	err := o.db.View(ctx, func(tx *store.Txn) error {
		var err error
		raw, err = tx.Get(nsOrg, orgKey(id))
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%s: %w", clip(id), ErrUnknownOrganization)
	}
	if err != nil {
		return nil, err
	}
	var h hosted
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, fmt.Errorf("decode organisation %s: %w", id, err)
	}
	return &h, nil
}

func (o *orgs) list(ctx context.Context) ([]*hosted, error) {
	var out []*hosted
	err := o.db.View(ctx, func(tx *store.Txn) error {
		return tx.Iterate(nsOrg, []byte("o/"), store.IterOptions{}, func(_, v []byte) error {
			var h hosted
			if err := json.Unmarshal(v, &h); err != nil {
				return err
			}
			out = append(out, &h)
			return nil
		})
	})
	return out, err
}

// signingKey returns the current private signing key of a hosted organisation.
func (o *orgs) signingKey(ctx context.Context, id string) (*hosted, *crypto.PrivateKey, error) {
	h, err := o.get(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	k, err := o.privateKey(ctx, h.SigningKey)
	if err != nil {
		return nil, nil, fmt.Errorf("signing key of %s: %w", id, err)
	}
	return h, k, nil
}

// privateKey returns the named key from the key store, once read kept in memory.
func (o *orgs) privateKey(ctx context.Context, name string) (*crypto.PrivateKey, error) {
	o.cacheMu.RLock()
	k, ok := o.privs[name]
	o.cacheMu.RUnlock()
	if ok {
		return k, nil
	}
	k, err := o.keys.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	o.cacheMu.Lock()
	if o.privs == nil {
		o.privs = map[string]*crypto.PrivateKey{}
	}
	o.privs[name] = k
	o.cacheMu.Unlock()
	return k, nil
}

// rotate replaces the organisation's keys through a rotate event signed by the current key. The new
// keys are persisted before the event, so a crash in between leaves the old state intact.
func (o *orgs) rotate(ctx context.Context, id string) (*hosted, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	h, cur, err := o.signingKey(ctx, id)
	if err != nil {
		return nil, err
	}
	st, err := o.dids.Resolve(ctx, id)
	if err != nil {
		return nil, err
	}
	sig, enc, err := did.GenerateKeys()
	if err != nil {
		return nil, err
	}
	ev, err := did.NewRotate(cur, st, sig.Public(), enc.Public(), o.now())
	if err != nil {
		return nil, err
	}
	next := *h
	if next.SigningKey, next.AgreementKey, err = o.saveKeys(ctx, id, st.Seq+1, sig, enc); err != nil {
		return nil, err
	}
	if st, _, err = o.dids.AddEvent(ctx, ev); err != nil {
		return nil, err
	}
	if err := o.put(ctx, &next); err != nil {
		return nil, err
	}
	return &next, o.publishDocument(ctx, &next, sig, st)
}

// issue issues a credential as a hosted organisation.
func (o *orgs) issue(ctx context.Context, id string, req vc.Request, validity time.Duration) (*vc.Credential, error) {
	_, k, err := o.signingKey(ctx, id)
	if err != nil {
		return nil, err
	}
	if validity == 0 {
		validity = o.validity
	}
	now := o.now()
	req.Issuer, req.IssuedAt, req.ValidUntil = id, now, now.Add(validity)
	return o.creds.IssueAs(ctx, k, req)
}

// revoke revokes a credential a hosted organisation issued.
func (o *orgs) revoke(ctx context.Context, id, credID string) (*vc.StatusEntry, error) {
	_, k, err := o.signingKey(ctx, id)
	if err != nil {
		return nil, err
	}
	e, _, err := o.creds.RevokeAs(ctx, k, id, credID, o.now())
	return e, err
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
