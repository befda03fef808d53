package network

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/did"
	"github.com/schakel-health/schakel/internal/network/reconcile"
	"github.com/schakel-health/schakel/internal/store"
)

// nsNet holds the network's view of the public documents: each by id, and which organisations
// each peer id is bound to by a DID document.
var nsNet = store.MustNamespace("net")

func docKey(id [32]byte) []byte { return append([]byte("d/"), id[:]...) }

func peerKey(p, org string) []byte { return []byte("p/" + p + "/" + org) }

func peerPrefix(p string) []byte { return []byte("p/" + p + "/") }

// DocumentID is the id of a public document: the SHA-256 of its bytes, also its gossip message id.
func DocumentID(doc []byte) [32]byte { return sha256.Sum256(doc) }

// Catalog is the set of public documents the node holds, as the network sees it: by id, in the
// reconciliation index, and the peer id → organisation bindings of DID documents. The stores that
// verify and keep the documents (did, vc) report every change to OnChange inside their own
// transaction, so the catalog never disagrees with them.
type Catalog struct {
	db  *store.DB
	idx *reconcile.Index
	// fresh carries documents this node made (not received from a peer), once committed, to be
	// gossiped. When it is full they are not gossiped: peers get them by reconciliation.
	fresh chan []byte
	// peerOrgs remembers PeerOrganizations; a change of a binding invalidates it.
	peerOrgs *store.Memo[peer.ID, []string]
}

type fromPeerKey struct{}

// fromPeer marks a context under which documents received from peers are stored: they are not
// gossiped again by this node (gossipsub forwards them; reconciliation serves the rest).
func fromPeer(ctx context.Context) context.Context {
	return context.WithValue(ctx, fromPeerKey{}, true)
}

func isFromPeer(ctx context.Context) bool { v, _ := ctx.Value(fromPeerKey{}).(bool); return v }

// NewCatalog returns the catalog kept in db.
func NewCatalog(db *store.DB) (*Catalog, error) {
	idx, err := reconcile.NewIndex(db)
	if err != nil {
		return nil, err
	}
	return &Catalog{db: db, idx: idx, fresh: make(chan []byte, 1024), peerOrgs: store.NewMemo[peer.ID, []string](4096)}, nil
}

// Index returns the reconciliation index.
func (c *Catalog) Index() *reconcile.Index { return c.idx }

// OnChange records doc (issued at issued) as held or, when removed, as replaced. It runs inside
// the transaction that stores the document; its signature matches did.ChangeFunc and
// vc.ChangeFunc.
func (c *Catalog) OnChange(tx *store.Txn, doc []byte, issued time.Time, removed bool) error {
	id := DocumentID(doc)
	it := reconcile.Item{Time: uint64(max(issued.Unix(), 0)), ID: id}
	if removed {
		if _, err := c.idx.Remove(tx, it); err != nil {
			return err
		}
		if err := tx.Delete(nsNet, docKey(id)); err != nil {
			return err
		}
	} else {
		if _, err := c.idx.Add(tx, it); err != nil {
			return err
		}
		if err := tx.Set(nsNet, docKey(id), doc); err != nil {
			return err
		}
		if !isFromPeer(tx.Context()) {
			tx.OnCommit(func() {
				select {
				case c.fresh <- doc:
				default:
				}
			})
		}
	}
	return c.bindings(tx, doc, removed)
}

// bindings keeps the peer id → organisation rows of a DID document.
func (c *Catalog) bindings(tx *store.Txn, doc []byte, removed bool) error {
	h, err := crypto.ParseHeader(doc)
	if err != nil || h.Type != did.DocumentJWSType {
		return nil
	}
	payload, _, err := crypto.ParseUnverified(doc)
	if err != nil {
		return nil
	}
	var d did.Document
	if err := json.Unmarshal(payload, &d); err != nil {
		return fmt.Errorf("network: DID document: %w", err)
	}
	tx.OnCommit(c.peerOrgs.Invalidate)
	for _, p := range d.PeerIDs() {
		if removed {
			err = tx.Delete(nsNet, peerKey(p, d.ID))
		} else {
			err = tx.Set(nsNet, peerKey(p, d.ID), nil)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Get returns the documents with the given ids that the catalog holds, nil for the others.
func (c *Catalog) Get(ctx context.Context, ids [][32]byte) ([][]byte, error) {
	out := make([][]byte, len(ids))
	err := c.db.View(ctx, func(tx *store.Txn) error {
		for i, id := range ids {
			b, err := tx.Get(nsNet, docKey(id))
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			out[i] = b
		}
		return nil
	})
	return out, err
}

// Has reports whether the catalog holds the document with that id.
func (c *Catalog) Has(ctx context.Context, id [32]byte) (bool, error) {
	var ok bool
	err := c.db.View(ctx, func(tx *store.Txn) error {
		var err error
		ok, err = tx.Has(nsNet, docKey(id))
		return err
	})
	return ok, err
}

// PeerOrganizations returns the organisations whose current DID document binds peer p.
func (c *Catalog) PeerOrganizations(ctx context.Context, p peer.ID) ([]string, error) {
	// Asked on every token request; bindings change only with a DID document.
	orgs, err := c.peerOrgs.Get(p, func() ([]string, error) {
		var orgs []string
		prefix := peerPrefix(p.String())
		err := c.db.View(ctx, func(tx *store.Txn) error {
			orgs = orgs[:0]
			return tx.Iterate(nsNet, prefix, store.IterOptions{KeysOnly: true, Limit: 64}, func(k, _ []byte) error {
				orgs = append(orgs, string(k[len(prefix):]))
				return nil
			})
		})
		return orgs, err
	})
	return slices.Clip(orgs), err
}
