package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"connectrpc.com/connect"
	p2pcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/accesslog"
	"github.com/schakel-health/schakel/internal/accesslog/witness"
	"github.com/schakel-health/schakel/internal/api"
	"github.com/schakel-health/schakel/internal/authz"
	"github.com/schakel-health/schakel/internal/consent"
	"github.com/schakel-health/schakel/internal/did"
	"github.com/schakel-health/schakel/internal/network"
	"github.com/schakel-health/schakel/internal/network/outbox"
	"github.com/schakel-health/schakel/internal/store"
	"github.com/schakel-health/schakel/internal/vc"
)

// Version is the node's version, set at build time with -ldflags "-X ...node.Version=...".
var Version = "0.1.0-dev"

// Files in a data directory.
const (
	nodeKeyFile = "node.key"
	keysDir     = "keys"
	dbDir       = "db"
	// ConfigFile is the optional YAML configuration in a data directory.
	ConfigFile = "schakel.yaml"
)

// ErrNotInitialised is returned when a data directory has not been made by Init.
var ErrNotInitialised = errors.New("data directory not initialised (run schakel init)")

// Init creates a data directory: the node's libp2p identity key (mode 0600), the key store and an
// empty database. It refuses a directory that is already initialised.
func Init(dir string) (peer.ID, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("init %s: %w", dir, err)
	}
	keyPath := filepath.Join(dir, nodeKeyFile)
	if _, err := os.Stat(keyPath); err == nil {
		return "", fmt.Errorf("init %s: already initialised (%s exists)", dir, nodeKeyFile)
	}
	priv, _, err := p2pcrypto.GenerateEd25519Key(nil)
	if err != nil {
		return "", err
	}
	raw, err := p2pcrypto.MarshalPrivateKey(priv)
	if err != nil {
		return "", err
	}
	if _, err := crypto.NewFileKeyStore(filepath.Join(dir, keysDir)); err != nil {
		return "", fmt.Errorf("init %s: %w", dir, err)
	}
	db, err := store.Open(store.Config{Dir: filepath.Join(dir, dbDir)})
	if err != nil {
		return "", fmt.Errorf("init %s: %w", dir, err)
	}
	if err := db.Close(); err != nil {
		return "", err
	}
	// The identity key is written last: its presence marks a complete data directory.
	if err := crypto.WriteSecretFile(keyPath, raw); err != nil {
		return "", fmt.Errorf("init %s: %w", dir, err)
	}
	return peer.IDFromPrivateKey(priv)
}

func loadPeerKey(dir string) (p2pcrypto.PrivKey, error) {
	path := filepath.Join(dir, nodeKeyFile)
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", dir, ErrNotInitialised)
	}
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s: mode %v is readable by others; want 0600", path, fi.Mode().Perm())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return p2pcrypto.UnmarshalPrivateKey(raw)
}

// Node is one running schakel node.
type Node struct {
	cfg    Config
	log    *slog.Logger
	peerID peer.ID

	db      *store.DB
	keys    crypto.KeyStore
	dids    *did.Registry
	creds   *vc.Store
	catalog *network.Catalog
	net     *network.Network
	outbox  *outbox.Outbox
	inbox   *outbox.Inbox
	witness *witness.Witness
	// witnessKey is the node's cosignature verifier key; forkAlarm counts forks caught.
	witnessKey string
	forkAlarm  prometheus.Counter
	api        *api.Server
	orgs       *orgs
	logs       logs

	backend      *peerBackend // what the network asks of the node; holds the admission cache
	credCache    credCache
	recipients   sync.Map // key-agreement key thumbprint → recipient
	consents     *consent.Store
	policy       *consent.Policy
	verifier     *authz.Verifier
	introspector *authz.Introspector

	started time.Time
	// life bounds the background work of subsystems started after Start (access logs of
	// organisations created later): it ends in Close, not with the request that created them.
	life    context.Context
	endLife context.CancelFunc
	bg      sync.WaitGroup // background goroutines of the node itself, ended by endLife
	mu      sync.Mutex
	closed  bool
}

// New builds a node from cfg: it validates the configuration, opens storage and constructs every
// subsystem, but starts nothing.
func New(cfg Config, logger *slog.Logger) (*Node, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	n := &Node{cfg: cfg, log: logger}
	n.life, n.endLife = context.WithCancel(context.Background())
	var (
		peerKey p2pcrypto.PrivKey
		err     error
	)
	if cfg.InMemory {
		peerKey, _, err = p2pcrypto.GenerateEd25519Key(nil)
		n.keys = crypto.NewMemKeyStore()
	} else {
		if peerKey, err = loadPeerKey(cfg.DataDir); err == nil {
			n.keys, err = crypto.NewFileKeyStore(filepath.Join(cfg.DataDir, keysDir))
		}
	}
	if err != nil {
		return nil, err
	}
	if n.peerID, err = peer.IDFromPrivateKey(peerKey); err != nil {
		return nil, err
	}
	n.db, err = store.Open(store.Config{
		Dir:      filepath.Join(cfg.DataDir, dbDir),
		InMemory: cfg.InMemory,
		Logger:   logger.With("subsystem", "store"),
	})
	if err != nil {
		return nil, err
	}
	registry := prometheus.NewRegistry()
	n.forkAlarm = prometheus.NewCounter(prometheus.CounterOpts{Name: "schakel_log_forks_total",
		Help: "Access logs this node caught rewriting or forking their history (evidence kept)."})
	registry.MustRegister(n.forkAlarm)
	if err := n.openWitness(context.Background()); err != nil {
		n.db.Close()
		return nil, err
	}
	if n.catalog, err = network.NewCatalog(n.db); err != nil {
		n.db.Close()
		return nil, err
	}
	if n.dids, err = did.New(did.Config{Now: cfg.Now, OnChange: n.catalog.OnChange}, n.db); err != nil {
		n.db.Close()
		return nil, err
	}
	n.creds, err = vc.NewStore(vc.StoreConfig{
		Anchors:  vc.TrustAnchors{vc.OrganizationCredential: cfg.TrustedRegisters},
		Now:      cfg.Now,
		OnChange: n.catalog.OnChange,
	}, n.db, n.dids)
	if err != nil {
		n.db.Close()
		return nil, err
	}
	if n.inbox, err = outbox.NewInbox(n.db, outbox.InboxConfig{}); err != nil {
		n.db.Close()
		return nil, err
	}
	obCfg := outbox.DefaultConfig()
	obCfg.Now = cfg.Now
	if n.outbox, err = outbox.New(obCfg, n.db, n.sendPrivate, logger.With("subsystem", "outbox")); err != nil {
		n.db.Close()
		return nil, err
	}
	registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "schakel_outbox_depth",
		Help: "Private messages waiting for their recipient's node."}, func() float64 { return float64(n.outbox.Depth()) }))
	n.backend = &peerBackend{n: n}
	n.net, err = network.New(network.Config{
		Key:              peerKey,
		ListenAddrs:      cfg.listenAddrs(),
		AnnounceAddrs:    cfg.AnnounceAddrs,
		Bootstrap:        cfg.Bootstrap,
		MembershipAddr:   cfg.MembershipAddr,
		SyncInterval:     cfg.SyncInterval,
		BootstrapTimeout: cfg.BootstrapTimeout,
		Logger:           logger.With("subsystem", "network"),
		Registerer:       registry,
		OnAdmitted:       func(_ peer.ID, org string) { n.outbox.Kick(org) },
		Now:              cfg.Now,
		Tap:              cfg.NetworkTap,
	}, n.catalog, n.backend)
	if err != nil {
		n.db.Close()
		return nil, err
	}
	n.orgs = &orgs{witnessKey: n.witnessKey, db: n.db, keys: n.keys, dids: n.dids, creds: n.creds, peerID: n.peerID, now: cfg.Now, validity: cfg.CredentialValidity}
	if err := n.openAccess(); err != nil {
		n.net.Close()
		n.db.Close()
		return nil, err
	}
	registerErrors()
	n.api, err = api.New(api.Config{Registry: registry, Addr: cfg.APIAddr, Token: cfg.APIToken, TLSCert: cfg.APITLSCert, TLSKey: cfg.APITLSKey, ClientCA: cfg.APIClientCA}, n, logger.With("subsystem", "api"))
	if err != nil {
		n.net.Close()
		n.db.Close()
		return nil, err
	}
	return n, nil
}

// Start starts the subsystems in dependency order, the API last.
func (n *Node) Start(ctx context.Context) error {
	n.started = n.cfg.Now()
	hs, err := n.orgs.list(ctx)
	if err != nil {
		return err
	}
	for _, h := range hs {
		if err := n.openLog(ctx, h); err != nil {
			return fmt.Errorf("open access log of %s: %w", h.DID, err)
		}
	}
	// Consent changes a crash cut off from their log entries are logged before anything else.
	if k, err := n.consents.LogUnlogged(ctx); err != nil {
		n.log.Error("consent changes still not logged", "changes", k, "error", err)
	} else if k > 0 {
		n.log.Info("logged consent changes a stop cut off from their entries", "changes", k)
	}
	if err := n.processPending(ctx); err != nil {
		return fmt.Errorf("process received messages: %w", err)
	}
	if err := n.recordHeldSuccessions(ctx); err != nil {
		return fmt.Errorf("record successions: %w", err)
	}
	if err := n.net.Start(n.life); err != nil {
		return fmt.Errorf("start network: %w", err)
	}
	if err := n.outbox.Start(n.life); err != nil {
		return fmt.Errorf("start outbox: %w", err)
	}
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		n.publishCheckpoints(n.life)
	}()
	if err := n.api.Start(ctx); err != nil {
		return fmt.Errorf("start api: %w", err)
	}
	n.log.Info("node started", "peer_id", n.peerID.String(), "api", n.api.Addr().String(), "p2p", n.net.Addrs())
	return nil
}

// APIAddr is the address the internal API listens on (useful with port 0).
func (n *Node) APIAddr() net.Addr { return n.api.Addr() }

// Network is the node's presence on the peer-to-peer network.
func (n *Node) Network() *network.Network { return n.net }

// PeerID is the node's libp2p identity.
func (n *Node) PeerID() peer.ID { return n.peerID }

// Close stops the node in reverse order: the API first (draining in-flight requests), then storage.
// It is idempotent.
func (n *Node) Close(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	err := n.api.Close(ctx)
	err = errors.Join(err, n.outbox.Close(ctx))
	err = errors.Join(err, n.net.Close())
	err = errors.Join(err, n.closeLogs(ctx))
	n.endLife()
	n.bg.Wait()
	return errors.Join(err, n.db.Close())
}

// Ready reports whether the node serves: storage must answer.
func (n *Node) Ready(ctx context.Context) error {
	return n.db.View(ctx, func(*store.Txn) error { return nil })
}

var registerOnce sync.Once

// registerErrors maps the subsystems' sentinel errors to API status codes, in one place.
func registerErrors() {
	registerOnce.Do(func() {
		for _, e := range []struct {
			err  error
			code connect.Code
		}{
			{crypto.ErrAlgorithm, connect.CodeInvalidArgument},
			{crypto.ErrSignature, connect.CodeInvalidArgument},
			{crypto.ErrKey, connect.CodeInvalidArgument},
			{crypto.ErrMalformed, connect.CodeInvalidArgument},
			{crypto.ErrTooLarge, connect.CodeInvalidArgument},
			{crypto.ErrNotFound, connect.CodeNotFound},
			{store.ErrNotFound, connect.CodeNotFound},
			{store.ErrClosed, connect.CodeUnavailable},
			{store.ErrConflict, connect.CodeAborted},
			{store.ErrTooLarge, connect.CodeInvalidArgument},
			{store.ErrNoSpace, connect.CodeResourceExhausted},
			{did.ErrMalformed, connect.CodeInvalidArgument},
			{did.ErrInvalid, connect.CodeInvalidArgument},
			{did.ErrUnknownDID, connect.CodeNotFound},
			{did.ErrDeactivated, connect.CodeFailedPrecondition},
			{did.ErrNoKey, connect.CodeInvalidArgument},
			{did.ErrFork, connect.CodeAlreadyExists},
			{did.ErrDocument, connect.CodeInvalidArgument},
			{did.ErrEventAhead, connect.CodeFailedPrecondition},
			{did.ErrSuperseded, connect.CodeFailedPrecondition},
			{vc.ErrMalformed, connect.CodeInvalidArgument},
			{vc.ErrTooLarge, connect.CodeInvalidArgument},
			{vc.ErrUnknownType, connect.CodeInvalidArgument},
			{vc.ErrExpired, connect.CodeFailedPrecondition},
			{vc.ErrNotYetValid, connect.CodeFailedPrecondition},
			{vc.ErrUntrusted, connect.CodePermissionDenied},
			{vc.ErrRevoked, connect.CodeFailedPrecondition},
			{vc.ErrStatusUnavailable, connect.CodeFailedPrecondition},
			{vc.ErrNotFound, connect.CodeNotFound},
			{vc.ErrRollback, connect.CodeFailedPrecondition},
			{vc.ErrInvalidQuery, connect.CodeInvalidArgument},
			{vc.ErrNotPublic, connect.CodeInvalidArgument},
			{accesslog.ErrInvalidEntry, connect.CodeInvalidArgument},
			{accesslog.ErrRange, connect.CodeOutOfRange},
			{accesslog.ErrNotFound, connect.CodeNotFound},
			{accesslog.ErrClosed, connect.CodeUnavailable},
			{accesslog.ErrNotStarted, connect.CodeUnavailable},
			{accesslog.ErrFailed, connect.CodeUnavailable},
			{crypto.ErrBSN, connect.CodeInvalidArgument},
			{ErrUnknownOrganization, connect.CodeNotFound},
		} {
			api.RegisterError(e.err, e.code)
		}
	})
}
