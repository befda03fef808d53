package node

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/accesslog"
	"github.com/schakel-health/schakel/internal/accesslog/verify"
	"github.com/schakel-health/schakel/internal/api"
	"github.com/schakel-health/schakel/internal/consent"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// maxPage bounds one page of entries or checkpoints on the API.
const maxPage = 1000

// logs holds the open access log of every hosted organisation.
type logs struct {
	mu   sync.Mutex
	open map[string]*hostedLog
}

// hostedLog is one organisation's log with the pseudonymiser that keys its patients.
type hostedLog struct {
	log   *accesslog.Log
	pseud *crypto.Pseudonymizer
}

// openLog opens and starts the access log of a hosted organisation.
func (n *Node) openLog(ctx context.Context, h *hosted) error {
	origin, err := accesslog.Origin(h.DID)
	if err != nil {
		return err
	}
	k, err := n.keys.Get(ctx, h.LogKey)
	if err != nil {
		return fmt.Errorf("log key of %s: %w", h.DID, err)
	}
	signer, err := k.NoteSigner(origin)
	if err != nil {
		return err
	}
	vkey, err := k.Public().NoteVerifierKey(origin)
	if err != nil {
		return err
	}
	l, err := accesslog.New(n.cfg.Log, n.db, signer, vkey, origin, n.log.With("subsystem", "accesslog", "org", h.DID))
	if err != nil {
		return err
	}
	if err := l.Start(n.life); err != nil {
		return err
	}
	secrets := map[uint32][]byte{}
	for v, s := range h.PseudonymSecrets {
		raw, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return fmt.Errorf("pseudonym secret of %s: %w", h.DID, err)
		}
		secrets[v] = raw
	}
	p, err := crypto.NewPseudonymizer(secrets, h.PseudonymVersion)
	if err != nil {
		return err
	}
	n.logs.mu.Lock()
	defer n.logs.mu.Unlock()
	if n.logs.open == nil {
		n.logs.open = map[string]*hostedLog{}
	}
	n.logs.open[h.DID] = &hostedLog{log: l, pseud: p}
	return nil
}

// closeLogs closes every open log; each Close makes a final checkpoint.
func (n *Node) closeLogs(ctx context.Context) error {
	n.logs.mu.Lock()
	defer n.logs.mu.Unlock()
	var errs []error
	for _, l := range n.logs.open {
		if err := l.log.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	n.logs.open = nil
	return errors.Join(errs...)
}

func (n *Node) logOf(id string) (*hostedLog, error) {
	n.logs.mu.Lock()
	defer n.logs.mu.Unlock()
	l, ok := n.logs.open[id]
	if !ok {
		return nil, fmt.Errorf("%s: %w", clip(id), ErrUnknownOrganization)
	}
	return l, nil
}

// GetLogInfo describes a hosted organisation's log and its latest checkpoint.
func (n *Node) GetLogInfo(ctx context.Context, req *schakelv1.GetLogInfoRequest) (*schakelv1.GetLogInfoResponse, error) {
	l, err := n.logOf(req.GetOrganization())
	if err != nil {
		return nil, err
	}
	if req.GetCheckpoint() {
		if _, err := l.log.CheckpointNow(ctx); err != nil {
			return nil, err
		}
	}
	resp := &schakelv1.GetLogInfoResponse{Origin: l.log.Origin(), Vkey: l.log.VerifierKey(), Size: l.log.Size()}
	if cp, _, err := l.log.LatestCheckpoint(ctx); err == nil {
		resp.Checkpoint = string(cp)
	}
	return resp, nil
}

func pageLimit(limit int32) (int64, error) {
	switch {
	case limit == 0:
		return maxPage, nil
	case limit < 0 || limit > maxPage:
		return 0, fmt.Errorf("%w: limit %d outside 1–%d", api.ErrInvalidArgument, limit, maxPage)
	}
	return int64(limit), nil
}

// ListEntries returns a page of entries as their exact bytes.
func (n *Node) ListEntries(ctx context.Context, req *schakelv1.ListEntriesRequest) (*schakelv1.ListEntriesResponse, error) {
	l, err := n.logOf(req.GetOrganization())
	if err != nil {
		return nil, err
	}
	limit, err := pageLimit(req.GetLimit())
	if err != nil {
		return nil, err
	}
	start := req.GetStart()
	end := min(start+limit, l.log.Size())
	resp := &schakelv1.ListEntriesResponse{}
	if start >= end {
		return resp, nil
	}
	es, err := l.log.Entries(ctx, start, end)
	if err != nil {
		return nil, err
	}
	for _, e := range es {
		resp.Entries = append(resp.Entries, string(e))
	}
	return resp, nil
}

// ListCheckpoints returns signed checkpoints after a size.
func (n *Node) ListCheckpoints(ctx context.Context, req *schakelv1.ListCheckpointsRequest) (*schakelv1.ListCheckpointsResponse, error) {
	l, err := n.logOf(req.GetOrganization())
	if err != nil {
		return nil, err
	}
	limit, err := pageLimit(req.GetLimit())
	if err != nil {
		return nil, err
	}
	cps, err := l.log.Checkpoints(ctx, req.GetAfterSize(), int(limit))
	if err != nil {
		return nil, err
	}
	resp := &schakelv1.ListCheckpointsResponse{}
	for _, c := range cps {
		// With the cosignatures witnesses made of it, when the node has collected them.
		msg := c.Note
		if cosigned, err := n.witness.Cosigned(ctx, l.log.Origin(), c.Size); err == nil {
			msg = cosigned
		}
		resp.Checkpoints = append(resp.Checkpoints, &schakelv1.SignedCheckpoint{Size: c.Size, Note: string(msg)})
	}
	return resp, nil
}

// GetInclusionProof proves an entry is in the tree of a given size (RFC 6962 §2.1.1).
func (n *Node) GetInclusionProof(ctx context.Context, req *schakelv1.GetInclusionProofRequest) (*schakelv1.GetInclusionProofResponse, error) {
	l, err := n.logOf(req.GetOrganization())
	if err != nil {
		return nil, err
	}
	p, err := l.log.InclusionProof(ctx, req.GetIndex(), req.GetTreeSize())
	if err != nil {
		return nil, err
	}
	return &schakelv1.GetInclusionProofResponse{Hashes: hashBytes(p)}, nil
}

// GetConsistencyProof proves the tree of one size extends the tree of another (RFC 6962 §2.1.2).
func (n *Node) GetConsistencyProof(ctx context.Context, req *schakelv1.GetConsistencyProofRequest) (*schakelv1.GetConsistencyProofResponse, error) {
	l, err := n.logOf(req.GetOrganization())
	if err != nil {
		return nil, err
	}
	p, err := l.log.ConsistencyProof(ctx, req.GetOldSize(), req.GetNewSize())
	if err != nil {
		return nil, err
	}
	return &schakelv1.GetConsistencyProofResponse{Hashes: hashBytes(p)}, nil
}

func employee(e *schakelv1.Employee) *verify.Employee {
	if e == nil || (e.GetUzi() == "" && e.GetRole() == "") {
		return nil
	}
	return &verify.Employee{UZI: e.GetUzi(), Role: e.GetRole()}
}

// GetPatientView lists every entry about a patient, refused requests included, and logs the read.
func (n *Node) GetPatientView(ctx context.Context, req *schakelv1.GetPatientViewRequest) (*schakelv1.GetPatientViewResponse, error) {
	l, err := n.logOf(req.GetOrganization())
	if err != nil {
		return nil, err
	}
	all, err := l.pseud.All(req.GetBsn())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", api.ErrInvalidArgument, err)
	}
	es, err := l.log.PatientEntries(ctx, all)
	if err != nil {
		return nil, err
	}
	resp := &schakelv1.GetPatientViewResponse{}
	for _, raw := range es {
		e, err := verify.ParseEntry(raw)
		if err != nil {
			return nil, err
		}
		resp.Entries = append(resp.Entries, &schakelv1.PatientLogEntry{Index: int64(e.Index), PatientSeq: int64(e.PatientSeq), Entry: string(raw)})
	}
	// The consents in force (and those waiting for the desk), under any pseudonym version.
	cs, err := n.consents.ForPatient(ctx, []string{req.GetOrganization()}, all)
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		if c.Status == consent.StatusActive || c.Status == consent.StatusPending {
			resp.Consents = append(resp.Consents, consentToProto(c))
		}
	}
	// Reading the log about a patient is itself an entry about that patient.
	if _, err := l.log.Append(ctx, &verify.Entry{
		Event:    verify.EventLogRead,
		Action:   "patient-view",
		Outcome:  verify.OutcomeGranted,
		Employee: employee(req.GetEmployee()),
		Patient:  all[0],
	}); err != nil {
		return nil, err
	}
	return resp, nil
}

// RecordAccess records an actual data access by the EHR.
func (n *Node) RecordAccess(ctx context.Context, req *schakelv1.RecordAccessRequest) (*schakelv1.RecordAccessResponse, error) {
	l, err := n.logOf(req.GetOrganization())
	if err != nil {
		return nil, err
	}
	p, err := l.pseud.Pseudonym(req.GetBsn())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", api.ErrInvalidArgument, err)
	}
	e := &verify.Entry{
		Event:        verify.EventDataAccess,
		Action:       "read",
		Outcome:      verify.OutcomeGranted,
		Employee:     employee(req.GetEmployee()),
		OnBehalfOf:   req.GetOnBehalfOf(),
		PeerID:       req.GetPeerId(),
		Purpose:      req.GetPurpose(),
		Patient:      p,
		DataCategory: req.GetDataCategory(),
		Query:        req.GetQuery(),
		TokenID:      req.GetTokenId(),
	}
	if r := req.GetRequester(); r.GetDid() != "" || r.GetUra() != "" {
		e.Requester = &verify.Requester{DID: r.GetDid(), URA: r.GetUra()}
	}
	rc, err := l.log.Append(ctx, e)
	if err != nil {
		return nil, err
	}
	return &schakelv1.RecordAccessResponse{Index: rc.Index, PatientSeq: int64(rc.PatientSeq)}, nil
}

// hashBytes turns proof hashes into the wire form.
func hashBytes(p []tlog.Hash) [][]byte {
	out := make([][]byte, len(p))
	for i := range p {
		out[i] = p[i][:]
	}
	return out
}
