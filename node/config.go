package node

import (
	"errors"
	"fmt"
	"net"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/schakel-health/schakel/internal/accesslog"
	"github.com/schakel-health/schakel/internal/did"
)

// Config is everything a node needs to start. cmd/schakel fills it from defaults, a YAML file,
// SCHAKEL_* environment variables and flags, in that order of precedence.
type Config struct {
	// DataDir holds the node's keys and database. Required unless InMemory.
	DataDir string
	// APIAddr is where the internal API listens (gRPC, gRPC-Web and JSON over HTTP on one port).
	// Loopback by default: binding elsewhere requires APIToken, so it is never open by accident.
	APIAddr string
	// P2PAddr is the libp2p listen multiaddr for peers. A TCP address /ip4/A/tcp/N also listens on
	// QUIC at /ip4/A/udp/N/quic-v1.
	P2PAddr string
	// AnnounceAddrs replace the listen addresses in what peers are told (behind NAT, in containers).
	AnnounceAddrs []string
	// Bootstrap are peers to dial at start: multiaddrs ending in /p2p/<peer id>.
	Bootstrap []string
	// MembershipAddr is where memberlist listens (host:port); empty turns membership off.
	MembershipAddr string
	// PolicyFile is the access policy (YAML); empty means the built-in Dutch default
	// (internal/consent/default.yaml).
	PolicyFile string
	// SyncInterval is the mean time between reconciliation rounds; zero means the default.
	SyncInterval time.Duration
	// BootstrapTimeout is how long a connected peer has to be admitted through Hello before it is
	// disconnected; zero means the default (10 s).
	BootstrapTimeout time.Duration
	// APIToken is the bearer token the internal API requires. A secret: from the environment
	// (SCHAKEL_API_TOKEN) or a file (api_token_file), never a flag.
	APIToken string
	// APITLSCert and APITLSKey are PEM files of the API's certificate chain and key; with them the
	// API speaks HTTPS (HTTP/1.1 and HTTP/2) instead of plain HTTP and h2c.
	APITLSCert, APITLSKey string
	// APIClientCA is a PEM file of CA certificates: when set, every API client must present a
	// certificate from one of them (mTLS). It may replace the token on a non-loopback address.
	APIClientCA string
	// TrustedRegisters are the DIDs trusted to issue OrganizationCredentials.
	TrustedRegisters []string
	// CredentialValidity is the default validity of credentials hosted organisations issue. Shorter
	// means revocation matters less but registrations must be renewed more often.
	CredentialValidity time.Duration
	// Log configures every hosted organisation's access log (checkpoint frequency, queue bounds).
	Log accesslog.Config
	// InMemory keeps everything in memory (tests and throw-away demos); nothing survives Close.
	InMemory bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// NetworkTap, when set, is shown everything the node sends and receives over the network
	// (network.Config.Tap), for tests that check what leaves a node. Nil in production.
	NetworkTap func(kind string, data []byte)
}

// DefaultConfig returns the defaults every other source overrides.
func DefaultConfig() Config {
	return Config{
		APIAddr:            "127.0.0.1:7631",
		P2PAddr:            "/ip4/0.0.0.0/tcp/7632",
		CredentialValidity: 365 * 24 * time.Hour,
		Log:                accesslog.DefaultConfig(),
	}
}

func (c *Config) setDefaults() {
	d := DefaultConfig()
	if c.APIAddr == "" {
		c.APIAddr = d.APIAddr
	}
	if c.P2PAddr == "" {
		c.P2PAddr = d.P2PAddr
	}
	if c.CredentialValidity == 0 {
		c.CredentialValidity = d.CredentialValidity
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// listenAddrs are the libp2p listen addresses: P2PAddr and, for a TCP address, QUIC on the same
// port number.
func (c Config) listenAddrs() []string {
	addrs := []string{c.P2PAddr}
	m, err := ma.NewMultiaddr(c.P2PAddr)
	if err != nil {
		return addrs
	}
	var ip, port string
	for _, p := range []int{ma.P_IP4, ma.P_IP6} {
		if v, err := m.ValueForProtocol(p); err == nil {
			ip = "/" + ma.ProtocolWithCode(p).Name + "/" + v
		}
	}
	if v, err := m.ValueForProtocol(ma.P_TCP); err == nil {
		port = v
	}
	if ip != "" && port != "" && port != "0" {
		addrs = append(addrs, ip+"/udp/"+port+"/quic-v1")
	} else if ip != "" && port == "0" {
		addrs = append(addrs, ip+"/udp/0/quic-v1")
	}
	return addrs
}

// Validate checks the configuration before anything starts, naming the first bad setting.
func (c Config) Validate() error {
	if c.DataDir == "" && !c.InMemory {
		return errors.New("config: data directory required (data / SCHAKEL_DATA / --data)")
	}
	host, _, err := net.SplitHostPort(c.APIAddr)
	if err != nil {
		return fmt.Errorf("config: api_addr %q: %w", c.APIAddr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) && c.APIToken == "" && c.APIClientCA == "" {
		return fmt.Errorf("config: api_addr %s is not loopback: set an API token (SCHAKEL_API_TOKEN or api_token_file) or mTLS (api_client_ca)", c.APIAddr)
	}
	if (c.APITLSCert == "") != (c.APITLSKey == "") || (c.APIClientCA != "" && c.APITLSCert == "") {
		return errors.New("config: api_tls_cert and api_tls_key go together, and api_client_ca needs both")
	}
	if _, err := ma.NewMultiaddr(c.P2PAddr); err != nil {
		return fmt.Errorf("config: p2p_addr %q: %w", c.P2PAddr, err)
	}
	for _, r := range c.TrustedRegisters {
		if err := did.ValidateDID(r); err != nil {
			return fmt.Errorf("config: trusted_registers: %w", err)
		}
	}
	if c.CredentialValidity < time.Hour || c.CredentialValidity > 5*365*24*time.Hour {
		return fmt.Errorf("config: credential_validity %s outside 1h–5y", c.CredentialValidity)
	}
	return nil
}
