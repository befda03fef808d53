// Package register is the trust anchor's side of admission: a register (the UZI/LRZa role) keeps its
// own signing key, key events and revocation list in a directory of its own, and issues
// OrganizationCredentials to admitted care organisations. It needs no running node; what it issues
// is submitted to nodes as signed documents. Imported by cmd/schakel and tests.
package register

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/did"
	"github.com/schakel-health/schakel/internal/vc"
)

// ErrExists is returned by Init for a directory that holds a register already.
var ErrExists = errors.New("register already initialised")

const (
	stateFile  = "register.json"
	keysSubdir = "keys"
)

// state is the register's persistent state, written atomically after every change.
type state struct {
	DID          string                     `json:"did"`
	Events       []string                   `json:"events"`
	SigningKey   string                     `json:"signingKey"`
	StatusList   *vc.StatusListState        `json:"statusList"`
	StatusJWT    string                     `json:"statusListCredential"`
	Issued       map[string]*vc.StatusEntry `json:"issued"`
	CreatedUnix  int64                      `json:"created"`
	Organization string                     `json:"name"`
}

// Register is an opened register directory. It is not safe for concurrent use by several processes.
type Register struct {
	dir  string
	keys crypto.KeyStore
	st   state
}

// Init creates a register in dir: a signing key (0600), a key-agreement key, the genesis event and an
// empty status list.
func Init(ctx context.Context, dir, name string, now time.Time) (*Register, error) {
	if _, err := os.Stat(filepath.Join(dir, stateFile)); err == nil {
		return nil, fmt.Errorf("%s: %w", dir, ErrExists)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	keys, err := crypto.NewFileKeyStore(filepath.Join(dir, keysSubdir))
	if err != nil {
		return nil, err
	}
	sig, enc, err := did.GenerateKeys()
	if err != nil {
		return nil, err
	}
	genesis, id, err := did.NewGenesis(sig, enc.Public(), now)
	if err != nil {
		return nil, err
	}
	if err := keys.Put(ctx, "register.sig.0", sig); err != nil {
		return nil, err
	}
	if err := keys.Put(ctx, "register.enc.0", enc); err != nil {
		return nil, err
	}
	r := &Register{dir: dir, keys: keys, st: state{
		DID:          id,
		Events:       []string{string(genesis)},
		SigningKey:   "register.sig.0",
		StatusList:   vc.NewStatusListState(id, 1),
		Issued:       map[string]*vc.StatusEntry{},
		CreatedUnix:  now.Unix(),
		Organization: name,
	}}
	list, _, err := r.st.StatusList.Issue(sig, now)
	if err != nil {
		return nil, err
	}
	r.st.StatusJWT = string(list)
	return r, r.save()
}

// Open opens an existing register directory.
func Open(dir string) (*Register, error) {
	raw, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: no register here (run schakel register init)", dir)
	}
	if err != nil {
		return nil, err
	}
	keys, err := crypto.NewFileKeyStore(filepath.Join(dir, keysSubdir))
	if err != nil {
		return nil, err
	}
	r := &Register{dir: dir, keys: keys}
	if err := json.Unmarshal(raw, &r.st); err != nil {
		return nil, fmt.Errorf("%s: decode register state: %w", dir, err)
	}
	return r, nil
}

func (r *Register) save() error {
	raw, err := json.MarshalIndent(&r.st, "", "  ")
	if err != nil {
		return err
	}
	return crypto.WriteSecretFile(filepath.Join(r.dir, stateFile), raw)
}

// DID is the register's identifier, the one nodes list as a trusted register.
func (r *Register) DID() string { return r.st.DID }

// Name is the register's label.
func (r *Register) Name() string { return r.st.Organization }

// Documents returns what a node needs to verify the register's credentials: its key events and its
// current status list, in the order to submit them.
func (r *Register) Documents() []string {
	return append(append([]string(nil), r.st.Events...), r.st.StatusJWT)
}

// Issue issues an OrganizationCredential to subject, valid for validity from now.
func (r *Register) Issue(ctx context.Context, subject vc.Organization, validity time.Duration, now time.Time) (*vc.Credential, error) {
	k, err := r.keys.Get(ctx, r.st.SigningKey)
	if err != nil {
		return nil, err
	}
	entry, err := r.st.StatusList.Allocate()
	if err != nil {
		return nil, err
	}
	_, c, err := vc.Issue(k, vc.Request{
		Kind:         vc.OrganizationCredential,
		Issuer:       r.st.DID,
		IssuedAt:     now,
		ValidUntil:   now.Add(validity),
		Status:       entry,
		Organization: &subject,
	})
	if err != nil {
		return nil, err
	}
	r.st.Issued[c.ID] = entry
	return c, r.save()
}

// Revoke revokes a credential the register issued and returns the new status list credential, to be
// submitted to nodes.
func (r *Register) Revoke(ctx context.Context, id string, now time.Time) ([]byte, error) {
	entry, ok := r.st.Issued[id]
	if !ok {
		return nil, fmt.Errorf("revoke %s: %w: not issued by this register", id, vc.ErrNotFound)
	}
	k, err := r.keys.Get(ctx, r.st.SigningKey)
	if err != nil {
		return nil, err
	}
	if err := r.st.StatusList.Revoke(entry); err != nil {
		return nil, err
	}
	list, _, err := r.st.StatusList.Issue(k, now)
	if err != nil {
		return nil, err
	}
	r.st.StatusJWT = string(list)
	return list, r.save()
}
