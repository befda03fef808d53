// The end of a bench mix run: every acknowledged operation against the custodian's verified log.

package main

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/schakel-health/schakel/internal/accesslog/verify"
)

// mixAck is one acknowledged operation that the custodian's log must hold.
type mixAck struct {
	index int64
	// A decision: its receipt's leaf hash and token id. An append: op is its operation number,
	// which its query names; -1 for a decision.
	leaf    tlog.Hash
	tokenID string
	op      int
}

type ackList struct {
	mu   sync.Mutex
	acks []mixAck
}

func (l *ackList) add(a mixAck) {
	l.mu.Lock()
	l.acks = append(l.acks, a)
	l.mu.Unlock()
}

func (l *ackList) counts() (decisions, appends int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.acks {
		if a.op < 0 {
			decisions++
		} else {
			appends++
		}
	}
	return decisions, appends
}

func (l *ackList) sorted() []mixAck {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := slices.Clone(l.acks)
	slices.SortFunc(s, func(a, b mixAck) int { return cmp.Compare(a.index, b.index) })
	return s
}

// checkMixLog exports org's log from the custodian to dir, verifies the export as `schakel log
// verify` does, and checks each acknowledgement against it: a decision is the entry its receipt
// names, with the receipt's leaf hash and token id; an append is the data access at the index
// RecordAccess returned, with its query. acks are sorted by index.
func checkMixLog(ctx context.Context, c *client, org, dir string, acks []mixAck) (*verify.Report, error) {
	if _, _, err := exportLog(ctx, c, org, dir); err != nil {
		return nil, fmt.Errorf("export the custodian's log: %w", err)
	}
	rep, err := verify.VerifyExport(ctx, dir, verify.Options{})
	if err != nil {
		return nil, fmt.Errorf("the custodian's log does not verify: %w", err)
	}
	f, err := os.Open(filepath.Join(dir, verify.EntriesFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := matchAcks(f, acks); err != nil {
		return nil, fmt.Errorf("the custodian's log: %w", err)
	}
	return rep, nil
}

// matchAcks reads entries, one per line from index 0 as in an export, and checks that each of
// acks, sorted by index, is the entry at its index.
func matchAcks(entries io.Reader, acks []mixAck) error {
	for i := 1; i < len(acks); i++ {
		if acks[i].index == acks[i-1].index {
			return fmt.Errorf("two acknowledgements name entry %d", acks[i].index)
		}
	}
	sc := bufio.NewScanner(entries)
	sc.Buffer(make([]byte, 64<<10), verify.MaxEntrySize+1)
	j := 0
	index := int64(0)
	for ; j < len(acks) && sc.Scan(); index++ {
		if acks[j].index != index {
			continue
		}
		a := acks[j]
		j++
		line := sc.Bytes()
		e, err := verify.ParseEntry(line)
		if err != nil {
			return fmt.Errorf("entry %d: %w", index, err)
		}
		if a.op < 0 {
			if tlog.RecordHash(line) != a.leaf || e.Event != verify.EventAccessDecision || e.TokenID != a.tokenID {
				return fmt.Errorf("entry %d is not the decision its receipt names (token %s): %s", index, a.tokenID, line)
			}
		} else if e.Event != verify.EventDataAccess || e.Query != mixQuery(a.op) {
			return fmt.Errorf("entry %d is not the append acknowledged at it (operation %d): %s", index, a.op, line)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if j < len(acks) {
		return fmt.Errorf("%d acknowledgements name entries beyond the %d read, the first entry %d", len(acks)-j, index, acks[j].index)
	}
	return nil
}

// loadAverage returns the 1, 5 and 15 minute load averages (Linux /proc), or "unknown".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}
