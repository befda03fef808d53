package node

import (
	"errors"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/schakel-health/schakel/internal/accesslog/verify"
	"github.com/schakel-health/schakel/internal/api"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

func TestAccessLogThroughTheNode(t *testing.T) {
	ctx := t.Context()
	n := newNode(t)
	created, err := n.CreateOrganization(ctx, &schakelv1.CreateOrganizationRequest{Name: "Huisartsenpraktijk Jansen"})
	if err != nil {
		t.Fatalf("CreateOrganization: %v", err)
	}
	gp := created.GetOrganization().GetDid()

	// The DID document publishes the log's origin and key.
	info, err := n.GetLogInfo(ctx, &schakelv1.GetLogInfoRequest{Organization: gp})
	if err != nil {
		t.Fatalf("GetLogInfo: %v", err)
	}
	doc, _, err := n.dids.Document(ctx, gp)
	if err != nil {
		t.Fatalf("Document: %v", err)
	}
	if origin, vkey, ok := doc.Log(); !ok || origin != info.GetOrigin() || vkey != info.GetVkey() {
		t.Fatalf("DID document publishes log %q %q, the log is %q %q", origin, vkey, info.GetOrigin(), info.GetVkey())
	}

	record := func(bsn string) (*schakelv1.RecordAccessResponse, error) {
		return n.RecordAccess(ctx, &schakelv1.RecordAccessRequest{
			Organization: gp, Bsn: bsn, DataCategory: "medication", Query: "MedicationStatement", Purpose: "TREAT",
			Requester: &schakelv1.Requester{Did: gp}, Employee: &schakelv1.Employee{Uzi: "900012345", Role: "01.015"},
		})
	}
	for i, bsn := range []string{"111222333", "123456782", "111222333"} {
		if _, err := record(bsn); err != nil {
			t.Fatalf("RecordAccess %d: %v", i, err)
		}
	}
	size := n.logs.open[gp].log.Size()
	tests := []struct {
		name string
		bsn  string
		org  string
		want error
	}{
		{"BSN failing the 11-proof", "123456789", gp, api.ErrInvalidArgument},
		{"not a BSN", "12345", gp, api.ErrInvalidArgument},
		{"organisation not hosted", "111222333", "did:schakel:11111111111111111111111111111111", ErrUnknownOrganization},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := n.RecordAccess(ctx, &schakelv1.RecordAccessRequest{Organization: tc.org, Bsn: tc.bsn})
			if !errors.Is(err, tc.want) {
				t.Fatalf("RecordAccess = %v, want %v", err, tc.want)
			}
		})
	}
	if got := n.logs.open[gp].log.Size(); got != size {
		t.Fatalf("refused records changed the log: size %d, want %d", got, size)
	}

	view, err := n.GetPatientView(ctx, &schakelv1.GetPatientViewRequest{Organization: gp, Bsn: "111222333"})
	if err != nil {
		t.Fatalf("GetPatientView: %v", err)
	}
	if len(view.GetEntries()) != 2 || view.GetEntries()[0].GetPatientSeq() != 1 || view.GetEntries()[1].GetPatientSeq() != 2 {
		t.Fatalf("GetPatientView = %v, want the patient's two entries with seq 1 and 2", view.GetEntries())
	}
	again, err := n.GetPatientView(ctx, &schakelv1.GetPatientViewRequest{Organization: gp, Bsn: "111222333"})
	if err != nil {
		t.Fatalf("GetPatientView: %v", err)
	}
	last, err := verify.ParseEntry([]byte(again.GetEntries()[len(again.GetEntries())-1].GetEntry()))
	if err != nil || last.Event != verify.EventLogRead {
		t.Fatalf("the first view was not logged: %+v, %v", last, err)
	}

	// Proofs check against a signed checkpoint.
	info, err = n.GetLogInfo(ctx, &schakelv1.GetLogInfoRequest{Organization: gp, Checkpoint: true})
	if err != nil {
		t.Fatalf("GetLogInfo: %v", err)
	}
	verifier, err := note.NewVerifier(info.GetVkey())
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	cp, err := verify.OpenCheckpoint([]byte(info.GetCheckpoint()), verifier)
	if err != nil {
		t.Fatalf("OpenCheckpoint: %v", err)
	}
	entries, err := n.ListEntries(ctx, &schakelv1.ListEntriesRequest{Organization: gp})
	if err != nil || int64(len(entries.GetEntries())) != cp.Size {
		t.Fatalf("ListEntries = %d entries, %v; checkpoint size %d", len(entries.GetEntries()), err, cp.Size)
	}
	proof, err := n.GetInclusionProof(ctx, &schakelv1.GetInclusionProofRequest{Organization: gp, Index: 1, TreeSize: cp.Size})
	if err != nil {
		t.Fatalf("GetInclusionProof: %v", err)
	}
	var rp tlog.RecordProof
	for _, h := range proof.GetHashes() {
		rp = append(rp, tlog.Hash(h))
	}
	if err := tlog.CheckRecord(rp, cp.Size, cp.Root, 1, tlog.RecordHash([]byte(entries.GetEntries()[1]))); err != nil {
		t.Fatalf("CheckRecord: %v", err)
	}
	if _, err := n.GetInclusionProof(ctx, &schakelv1.GetInclusionProofRequest{Organization: gp, Index: cp.Size, TreeSize: cp.Size}); err == nil {
		t.Fatalf("GetInclusionProof beyond the tree succeeded")
	}
}
