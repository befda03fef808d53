package main

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/schakel-health/schakel/internal/accesslog/verify"
)

func TestParseMix(t *testing.T) {
	for _, tt := range []struct {
		name, mix string
		want      [mixKinds]int
		err       string
	}{
		{"all three", "token=1,introspect=4,record=1", [mixKinds]int{1, 4, 1}, ""},
		{"any order, spaces", " record=2, token=3", [mixKinds]int{3, 0, 2}, ""},
		{"unknown kind", "token=1,read=2", [mixKinds]int{}, "KIND=WEIGHT"},
		{"no weight", "token", [mixKinds]int{}, "KIND=WEIGHT"},
		{"negative", "token=-1", [mixKinds]int{}, "whole number"},
		{"twice", "token=1,token=2", [mixKinds]int{}, "twice"},
		{"all zero", "token=0,record=0", [mixKinds]int{}, "zero"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMix(tt.mix)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("parseMix(%q) = %v, %v; want an error with %q", tt.mix, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseMix(%q) = %v, %v; want %v", tt.mix, got, err, tt.want)
			}
		})
	}
}

func TestMixPattern(t *testing.T) {
	for _, w := range [][mixKinds]int{{1, 4, 1}, {3, 0, 2}, {0, 5, 0}, {7, 11, 13}} {
		p := mixPattern(w)
		var n [mixKinds]int
		for i, k := range p {
			n[k]++
			// Spread: no kind lags its share of the cycle so far by a whole operation or more.
			for j := range mixKinds {
				if share := float64(w[j]*(i+1)) / float64(len(p)); float64(n[j]) <= share-1 {
					t.Fatalf("mixPattern(%v) = %v: after %d operations %d of kind %d, share %.1f", w, p, i+1, n[j], j, share)
				}
			}
		}
		if n != w {
			t.Fatalf("mixPattern(%v) = %v: counts %v", w, p, n)
		}
	}
}

// TestMatchAcks checks the end-of-run check against a small log: acknowledgements that are
// their entries pass; any that is not, is lost, or is claimed twice fails.
func TestMatchAcks(t *testing.T) {
	prev := base64.StdEncoding.EncodeToString(make([]byte, 32))
	entries := []verify.Entry{
		{Event: verify.EventAccessDecision, Action: "token", Outcome: verify.OutcomeGranted, TokenID: "tok-0"},
		{Event: verify.EventDataAccess, Action: "read", Outcome: verify.OutcomeGranted, Query: mixQuery(7)},
		{Event: verify.EventAccessDecision, Action: "token", Outcome: verify.OutcomeGranted, TokenID: "tok-2"},
		{Event: verify.EventDataAccess, Action: "read", Outcome: verify.OutcomeGranted, Query: mixQuery(9)},
	}
	var log bytes.Buffer
	var leaves []tlog.Hash
	for i := range entries {
		e := &entries[i]
		e.V, e.Origin, e.Index, e.Time = verify.Version, "schakel.nl/log/test", uint64(i), "2026-01-02T03:04:05.000000000Z"
		if i > 0 {
			e.Prev = prev
		}
		b, err := e.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		if _, err := verify.ParseEntry(b); err != nil {
			t.Fatalf("ParseEntry of entry %d: %v", i, err)
		}
		leaves = append(leaves, tlog.RecordHash(b))
		log.Write(append(b, '\n'))
	}
	decision := func(i int64, tok string) mixAck { return mixAck{index: i, leaf: leaves[i], tokenID: tok, op: -1} }
	appended := func(i int64, op int) mixAck { return mixAck{index: i, op: op} }
	for _, tt := range []struct {
		name string
		acks []mixAck
		err  string
	}{
		{"every entry", []mixAck{decision(0, "tok-0"), appended(1, 7), decision(2, "tok-2"), appended(3, 9)}, ""},
		{"some entries", []mixAck{appended(1, 7), decision(2, "tok-2")}, ""},
		{"none", nil, ""},
		{"another leaf", []mixAck{{index: 0, leaf: leaves[2], tokenID: "tok-0", op: -1}}, "not the decision"},
		{"another token", []mixAck{decision(2, "tok-0")}, "not the decision"},
		{"a decision at an append", []mixAck{{index: 1, leaf: leaves[1], op: -1}}, "not the decision"},
		{"another append", []mixAck{appended(3, 7)}, "not the append"},
		{"an append at a decision", []mixAck{appended(2, 7)}, "not the append"},
		{"beyond the log", []mixAck{appended(1, 7), appended(4, 11)}, "beyond"},
		{"claimed twice", []mixAck{appended(1, 7), appended(1, 7)}, "two acknowledgements"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := matchAcks(bytes.NewReader(log.Bytes()), tt.acks)
			if tt.err == "" && err != nil {
				t.Fatalf("matchAcks: %v", err)
			}
			if tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("matchAcks = %v, want an error with %q", err, tt.err)
			}
		})
	}
}
