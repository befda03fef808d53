package did

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/mod/sumdb/note"

	"github.com/schakel-health/schakel/crypto"
)

// DocumentJWSType is the JWS "typ" of a signed DID document.
const DocumentJWSType = "did-document+jwt"

// MaxDocumentSize bounds a compact DID document.
const MaxDocumentSize = 16 << 10

// maxPeers bounds the peer ids one document may list.
const maxPeers = 16

// Document is a DID document (W3C DID Core) for a did:schakel identifier. It is published as a JWS
// signed by the signing key current at KeyEventSeq, so that the binding of the organisation to the
// libp2p peer ids of its hosting node is a statement the organisation made itself.
type Document struct {
	Context            []string             `json:"@context"`
	ID                 string               `json:"id"`
	VerificationMethod []VerificationMethod `json:"verificationMethod"`
	AssertionMethod    []string             `json:"assertionMethod"`
	Authentication     []string             `json:"authentication"`
	KeyAgreement       []string             `json:"keyAgreement"`
	Service            []Service            `json:"service"`
	// KeyEventSeq is the sequence number of the key event whose keys this document lists.
	KeyEventSeq uint64 `json:"keyEventSeq"`
	// Updated is the Unix time the document was signed; a newer document replaces an older one.
	Updated int64 `json:"updated"`
}

// VerificationMethod is a public key of the DID, as a JWK.
type VerificationMethod struct {
	ID           string            `json:"id"`
	Type         string            `json:"type"`
	Controller   string            `json:"controller"`
	PublicKeyJWK *crypto.PublicKey `json:"publicKeyJwk"`
}

// Service is a DID document service entry. The one service type schakel uses is NodeServiceType.
type Service struct {
	ID              string          `json:"id"`
	Type            string          `json:"type"`
	ServiceEndpoint ServiceEndpoint `json:"serviceEndpoint"`
}

// ServiceEndpoint is the endpoint of a service entry: the peer ids of the hosting node(s) for
// NodeServiceType, the log's origin and note verifier key for LogServiceType.
type ServiceEndpoint struct {
	PeerIDs []string `json:"peerIds,omitempty"`
	// WitnessKey is the hosting node's C2SP cosignature verifier key (NodeServiceType), with which
	// it cosigns the checkpoints of the logs it witnesses.
	WitnessKey  string `json:"witnessKey,omitempty"`
	Origin      string `json:"origin,omitempty"`
	VerifierKey string `json:"vkey,omitempty"`
}

// Service entry types.
const (
	// NodeServiceType binds an organisation to its hosting node(s).
	NodeServiceType = "SchakelNode"
	// LogServiceType publishes the organisation's access-log origin and checkpoint key, so that a
	// log restarted under a new identity is noticed.
	LogServiceType = "SchakelAccessLog"
)

// Binding is what a DID document binds an organisation to besides its keys.
type Binding struct {
	// PeerIDs are the libp2p peer ids of the hosting node(s); at least one.
	PeerIDs []string
	// LogOrigin and LogKey name the organisation's access log and its C2SP note verifier key
	// ("<name>+<hash>+<base64>"); both or neither.
	LogOrigin, LogKey string
	// WitnessKey is the hosting node's cosignature verifier key (C2SP tlog-cosignature), if any.
	WitnessKey string
}

// Log returns the access-log origin and verifier key the document publishes, if any.
func (d *Document) Log() (origin, vkey string, ok bool) {
	for _, s := range d.Service {
		if s.Type == LogServiceType {
			return s.ServiceEndpoint.Origin, s.ServiceEndpoint.VerifierKey, true
		}
	}
	return "", "", false
}

// PeerIDs returns the peer ids bound to the organisation by this document.
func (d *Document) PeerIDs() []string {
	for _, s := range d.Service {
		if s.Type == NodeServiceType {
			return s.ServiceEndpoint.PeerIDs
		}
	}
	return nil
}

// NewDocument builds and signs the DID document for st with k, its current signing key.
func NewDocument(k *crypto.PrivateKey, st *State, b Binding, t time.Time) ([]byte, *Document, error) {
	cur := st.Current()
	if !cur.SigningKey.Equal(k.Public()) {
		return nil, nil, fmt.Errorf("%s: %w: document must be signed by the current signing key", st.DID, ErrDocument)
	}
	doc := &Document{
		Context:     []string{"https://www.w3.org/ns/did/v1", "https://w3id.org/security/suites/jws-2020/v1"},
		ID:          st.DID,
		KeyEventSeq: st.Seq,
		Updated:     t.Unix(),
	}
	sigID := st.DID + "#" + cur.SigningKey.KID()
	encID := st.DID + "#" + cur.AgreementKey.KID()
	doc.VerificationMethod = []VerificationMethod{
		{ID: sigID, Type: "JsonWebKey2020", Controller: st.DID, PublicKeyJWK: cur.SigningKey},
		{ID: encID, Type: "JsonWebKey2020", Controller: st.DID, PublicKeyJWK: cur.AgreementKey},
	}
	doc.AssertionMethod = []string{sigID}
	doc.Authentication = []string{sigID}
	doc.KeyAgreement = []string{encID}
	doc.Service = []Service{{ID: st.DID + "#node", Type: NodeServiceType, ServiceEndpoint: ServiceEndpoint{PeerIDs: slices.Clone(b.PeerIDs), WitnessKey: b.WitnessKey}}}
	if b.LogOrigin != "" || b.LogKey != "" {
		doc.Service = append(doc.Service, Service{ID: st.DID + "#log", Type: LogServiceType, ServiceEndpoint: ServiceEndpoint{Origin: b.LogOrigin, VerifierKey: b.LogKey}})
	}
	if err := checkDocument(doc, st); err != nil {
		return nil, nil, err
	}
	payload, err := json.Marshal(doc)
	if err != nil {
		return nil, nil, fmt.Errorf("encode DID document: %w", err)
	}
	compact, err := crypto.Sign(k, payload, crypto.Header{Type: DocumentJWSType, KID: sigID})
	if err != nil {
		return nil, nil, fmt.Errorf("sign DID document: %w", err)
	}
	return compact, doc, nil
}

// VerifyDocument checks a compact DID document against the DID's key state: strict JSON, signed by
// the signing key of the key event it names (which must be the latest), keys matching that event,
// valid peer ids.
func VerifyDocument(compact []byte, st *State) (*Document, error) {
	if len(compact) > MaxDocumentSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrDocument, len(compact), MaxDocumentSize)
	}
	payload, h, err := crypto.ParseUnverified(compact)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDocument, err)
	}
	if h.Type != DocumentJWSType {
		return nil, fmt.Errorf("%w: typ %q, want %q", ErrDocument, h.Type, DocumentJWSType)
	}
	var doc Document
	if err := crypto.DecodeJSON(payload, &doc); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDocument, err)
	}
	if doc.ID != st.DID {
		return nil, fmt.Errorf("%w: document for %s checked against %s", ErrDocument, doc.ID, st.DID)
	}
	if st.Deactivated {
		return nil, fmt.Errorf("%s: %w", st.DID, ErrDeactivated)
	}
	switch {
	case doc.KeyEventSeq > st.Seq:
		return nil, fmt.Errorf("%w: document lists keys of event %d, latest known is %d", ErrEventAhead, doc.KeyEventSeq, st.Seq)
	case doc.KeyEventSeq < st.Seq:
		return nil, fmt.Errorf("%w: document lists keys of event %d, latest is %d", ErrSuperseded, doc.KeyEventSeq, st.Seq)
	}
	cur := st.Current()
	if h.KID != st.DID+"#"+cur.SigningKey.KID() {
		return nil, fmt.Errorf("%w: signed with %q, not the current signing key", ErrDocument, h.KID)
	}
	if _, _, err := crypto.Verify(compact, cur.SigningKey); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDocument, err)
	}
	if err := checkDocument(&doc, st); err != nil {
		return nil, err
	}
	return &doc, nil
}

func checkDocument(doc *Document, st *State) error {
	cur := st.Current()
	if len(doc.VerificationMethod) != 2 ||
		doc.VerificationMethod[0].PublicKeyJWK == nil || !doc.VerificationMethod[0].PublicKeyJWK.Equal(cur.SigningKey) ||
		doc.VerificationMethod[1].PublicKeyJWK == nil || !doc.VerificationMethod[1].PublicKeyJWK.Equal(cur.AgreementKey) {
		return fmt.Errorf("%w: verification methods do not match key event %d", ErrDocument, st.Seq)
	}
	if doc.Updated < st.Time {
		return fmt.Errorf("%w: document older than key event %d", ErrDocument, st.Seq)
	}
	peers := doc.PeerIDs()
	if len(peers) == 0 || len(peers) > maxPeers {
		return fmt.Errorf("%w: %d peer ids, want 1 to %d", ErrDocument, len(peers), maxPeers)
	}
	for _, p := range peers {
		if _, err := peer.Decode(p); err != nil {
			return fmt.Errorf("%w: peer id %q: %w", ErrDocument, truncate(p), err)
		}
	}
	if origin, vkey, ok := doc.Log(); ok {
		v, err := note.NewVerifier(vkey)
		if err != nil || origin == "" || v.Name() != origin {
			return fmt.Errorf("%w: access-log service needs an origin and a note verifier key named after it", ErrDocument)
		}
	}
	for _, s := range doc.Service {
		if s.Type != NodeServiceType && s.Type != LogServiceType {
			return fmt.Errorf("%w: unknown service type %q", ErrDocument, truncate(s.Type))
		}
		if w := s.ServiceEndpoint.WitnessKey; w != "" && !isCosignatureKey(w) {
			return fmt.Errorf("%w: witness key %q is not a cosignature verifier key", ErrDocument, truncate(w))
		}
	}
	return nil
}

// isCosignatureKey reports whether k has the form of a C2SP cosignature/v1 verifier key:
// <name>+<8 hex digits>+<base64 of 0x04 and a 32-byte Ed25519 key>. The signature check itself
// belongs to the access log's witnesses.
func isCosignatureKey(k string) bool {
	name, rest, ok := strings.Cut(k, "+")
	if !ok || name == "" {
		return false
	}
	hash, key, ok := strings.Cut(rest, "+")
	if !ok || len(hash) != 8 {
		return false
	}
	if _, err := hex.DecodeString(hash); err != nil {
		return false
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(key)
	return err == nil && len(raw) == 33 && raw[0] == 0x04
}

// WitnessKey returns the cosignature verifier key of the node hosting the organisation, if any.
func (d *Document) WitnessKey() string {
	for _, s := range d.Service {
		if s.Type == NodeServiceType {
			return s.ServiceEndpoint.WitnessKey
		}
	}
	return ""
}
