package accesslog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/schakel-health/schakel/internal/accesslog/verify"
	"github.com/schakel-health/schakel/internal/store"
)

func TestAppendChainAndTree(t *testing.T) {
	tests := []struct {
		name     string
		n        int
		every    int
		patients int // 0: no patient
	}{
		{name: "one entry", n: 1, every: 1000, patients: 1},
		{name: "checkpoint every entry", n: 17, every: 1, patients: 3},
		{name: "no patients", n: 40, every: 7},
		{name: "power of two", n: 64, every: 16, patients: 5},
		{name: "many", n: 1000, every: 100, patients: 37},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := newLogKey(t, testOrigin)
			l := openLog(t, Config{CheckpointEvery: tt.every}, memDB(t), testOrigin, key)
			for i := range tt.n {
				p := ""
				if tt.patients > 0 {
					p = pseudonym(1, i%tt.patients)
				}
				r, err := l.Append(t.Context(), sampleEntry(i, p))
				if err != nil {
					t.Fatalf("Append(%d): %v", i, err)
				}
				if r.Index != int64(i) || r.LeafHash != tlog.RecordHash(r.Entry) {
					t.Fatalf("Append(%d): receipt index %d leaf %s, want %d and the entry's leaf hash", i, r.Index, r.LeafHash, i)
				}
			}
			if got := l.Size(); got != int64(tt.n) {
				t.Fatalf("Size = %d, want %d", got, tt.n)
			}
			x := exportLog(t, l)
			if len(x.lines) != tt.n {
				t.Fatalf("export has %d entries, want %d", len(x.lines), tt.n)
			}
			checkExport(t, x, testOrigin)
			// Checkpoints were made on the way, not only by Export.
			if want := tt.n / tt.every; len(x.checkpoints) < want {
				t.Errorf("%d checkpoints, want at least %d", len(x.checkpoints), want)
			}
		})
	}
}

func TestConcurrentAppends(t *testing.T) {
	const writers, each = 64, 40
	key := newLogKey(t, testOrigin)
	l := openLog(t, Config{CheckpointEvery: 100}, memDB(t), testOrigin, key)
	receipts := make([][]Receipt, writers)
	// A reader proves entries against the latest checkpoint while the writers append.
	stop := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for i := int64(0); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			msg, size, err := l.LatestCheckpoint(t.Context())
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				t.Errorf("LatestCheckpoint: %v", err)
				return
			}
			c := openCheckpoint(t, msg, key.vkey, testOrigin)
			idx := (i * 7919) % size
			entries, err := l.Entries(t.Context(), idx, idx+1)
			if err != nil {
				t.Errorf("Entries(%d): %v", idx, err)
				return
			}
			p, err := l.InclusionProof(t.Context(), idx, size)
			if err != nil {
				t.Errorf("InclusionProof(%d, %d): %v", idx, size, err)
				return
			}
			if err := tlog.CheckRecord(p, size, c.root, idx, tlog.RecordHash(entries[0])); err != nil {
				t.Errorf("CheckRecord(%d, %d): %v", idx, size, err)
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				r, err := l.Append(t.Context(), sampleEntry(w*each+i, pseudonym(1, w%8)))
				if err != nil {
					t.Errorf("Append(writer %d, %d): %v", w, i, err)
					return
				}
				receipts[w] = append(receipts[w], r)
			}
		})
	}
	wg.Wait()
	close(stop)
	<-readerDone
	if t.Failed() {
		return
	}
	x := exportLog(t, l)
	if len(x.lines) != writers*each {
		t.Fatalf("export has %d entries, want %d", len(x.lines), writers*each)
	}
	entries := checkExport(t, x, testOrigin)
	seen := make([]bool, writers*each)
	for w, rs := range receipts {
		for i, r := range rs {
			if r.Index < 0 || r.Index >= int64(len(seen)) || seen[r.Index] {
				t.Fatalf("writer %d append %d: index %d out of range or repeated", w, i, r.Index)
			}
			seen[r.Index] = true
			if string(x.lines[r.Index]) != string(r.Entry) {
				t.Fatalf("writer %d append %d: entry %d differs from the receipt's", w, i, r.Index)
			}
			if entries[r.Index].TokenID != fmt.Sprintf("tok-%08d", w*each+i) {
				t.Fatalf("entry %d holds token %s, want writer %d's append %d", r.Index, entries[r.Index].TokenID, w, i)
			}
			if i > 0 && r.Index <= rs[i-1].Index {
				t.Fatalf("writer %d: append %d got index %d after %d", w, i, r.Index, rs[i-1].Index)
			}
		}
	}
	if g := l.groups.Load(); g >= int64(writers*each) {
		t.Errorf("%d groups for %d appends: no group commit", g, writers*each)
	}
}

func TestPatientSeq(t *testing.T) {
	a1, a2, b := pseudonym(1, 1), pseudonym(2, 1), pseudonym(1, 2)
	key := newLogKey(t, testOrigin)
	l := openLog(t, Config{}, memDB(t), testOrigin, key)
	// a1 and a2 are one patient under two pseudonym key versions.
	order := []string{a1, b, "", a1, a1, b, a2, "", a2, a1}
	wantSeq := map[string]uint64{}
	for i, p := range order {
		r, err := l.Append(t.Context(), sampleEntry(i, p))
		if err != nil {
			t.Fatalf("Append(%d): %v", i, err)
		}
		want := uint64(0)
		if p != "" {
			wantSeq[p]++
			want = wantSeq[p]
		}
		if r.PatientSeq != want {
			t.Fatalf("Append(%d) about %q: patientSeq %d, want %d", i, p, r.PatientSeq, want)
		}
	}
	tests := []struct {
		name       string
		pseudonyms []string
		want       []int // indexes
	}{
		{name: "one version", pseudonyms: []string{a1}, want: []int{0, 3, 4, 9}},
		{name: "all versions", pseudonyms: []string{a2, a1}, want: []int{0, 3, 4, 6, 8, 9}},
		{name: "repeated", pseudonyms: []string{b, b}, want: []int{1, 5}},
		{name: "unknown patient", pseudonyms: []string{pseudonym(1, 99)}, want: []int{}},
		{name: "none", pseudonyms: nil, want: []int{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := l.PatientEntries(t.Context(), tt.pseudonyms)
			if err != nil {
				t.Fatalf("PatientEntries: %v", err)
			}
			all, err := l.Entries(t.Context(), 0, l.Size())
			if err != nil {
				t.Fatalf("Entries: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("PatientEntries returned %d entries, want %d", len(got), len(tt.want))
			}
			for i, idx := range tt.want {
				if string(got[i]) != string(all[idx]) {
					t.Fatalf("PatientEntries[%d] is not entry %d", i, idx)
				}
			}
		})
	}
	if _, err := l.PatientEntries(t.Context(), []string{"123456782"}); !errors.Is(err, ErrInvalidEntry) {
		t.Errorf("PatientEntries(BSN): err = %v, want %v", err, ErrInvalidEntry)
	}
}

func TestReopenContinues(t *testing.T) {
	dir := t.TempDir()
	key := newLogKey(t, testOrigin)
	cfg := Config{CheckpointEvery: 10}
	var want [][]byte
	for round := range 3 {
		db := diskDB(t, dir)
		l, err := New(cfg, db, key.signer, key.vkey, testOrigin, nil)
		if err != nil {
			t.Fatalf("round %d: New: %v", round, err)
		}
		if got := l.Size(); got != int64(len(want)) {
			t.Fatalf("round %d: reopened with size %d, want %d", round, got, len(want))
		}
		if len(want) > 0 {
			got, err := l.Entries(t.Context(), 0, int64(len(want)))
			if err != nil {
				t.Fatalf("round %d: Entries: %v", round, err)
			}
			if !slices.EqualFunc(got, want, func(a, b []byte) bool { return string(a) == string(b) }) {
				t.Fatalf("round %d: entries changed across reopen", round)
			}
			msg, size, err := l.LatestCheckpoint(t.Context())
			if err != nil || size != int64(len(want)) {
				t.Fatalf("round %d: LatestCheckpoint size %d, %v; want %d", round, size, err, len(want))
			}
			// Proofs after reopening read the tree from storage: nothing was replayed.
			c := openCheckpoint(t, msg, key.vkey, testOrigin)
			for i := range want {
				p, err := l.InclusionProof(t.Context(), int64(i), size)
				if err != nil {
					t.Fatalf("round %d: InclusionProof(%d): %v", round, i, err)
				}
				if err := tlog.CheckRecord(p, size, c.root, int64(i), tlog.RecordHash(want[i])); err != nil {
					t.Fatalf("round %d: CheckRecord(%d): %v", round, i, err)
				}
			}
			p, err := l.ConsistencyProof(t.Context(), 1, size)
			if err != nil {
				t.Fatalf("round %d: ConsistencyProof: %v", round, err)
			}
			if err := tlog.CheckTree(p, size, c.root, 1, tlog.RecordHash(want[0])); err != nil {
				t.Fatalf("round %d: CheckTree: %v", round, err)
			}
		}
		if err := l.Start(t.Context()); err != nil {
			t.Fatalf("Start: %v", err)
		}
		for i := range 25 {
			n := round*25 + i
			r, err := l.Append(t.Context(), sampleEntry(n, pseudonym(1, n%4)))
			if err != nil {
				t.Fatalf("round %d: Append(%d): %v", round, i, err)
			}
			if r.Index != int64(n) {
				t.Fatalf("round %d: Append(%d) index %d, want %d", round, i, r.Index, n)
			}
			want = append(want, r.Entry)
		}
		if err := l.Close(t.Context()); err != nil {
			t.Fatalf("round %d: Close: %v", round, err)
		}
		if round == 2 {
			x := exportLog(t, l)
			checkExport(t, x, testOrigin)
		}
		if err := db.Close(); err != nil {
			t.Fatalf("store Close: %v", err)
		}
	}
}

func TestCloseDrains(t *testing.T) {
	key := newLogKey(t, testOrigin)
	l := openLog(t, Config{CheckpointEvery: 1 << 20, CheckpointInterval: time.Hour}, memDB(t), testOrigin, key)
	const writers = 32
	var mu sync.Mutex
	var acked []Receipt
	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := range writers {
		wg.Go(func() {
			<-start
			for i := 0; ; i++ {
				r, err := l.Append(context.Background(), sampleEntry(w*1000+i, pseudonym(1, w)))
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				mu.Lock()
				acked = append(acked, r)
				mu.Unlock()
			}
		})
	}
	close(start)
	for l.Size() < 200 {
		time.Sleep(time.Millisecond)
	}
	if err := l.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	size := l.Size()
	if int64(len(acked)) != size {
		t.Fatalf("%d appends acknowledged, log size %d: Close must commit every queued append", len(acked), size)
	}
	msg, ckSize, err := l.LatestCheckpoint(t.Context())
	if err != nil || ckSize != size {
		t.Fatalf("LatestCheckpoint: size %d, %v; want %d", ckSize, err, size)
	}
	openCheckpoint(t, msg, key.vkey, testOrigin)
	if _, err := l.Append(t.Context(), sampleEntry(0, "")); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: err = %v, want %v", err, ErrClosed)
	}
	if err := l.Close(t.Context()); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := l.Start(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: err = %v, want %v", err, ErrClosed)
	}
	checkExport(t, exportLog(t, l), testOrigin)
}

func TestStartContextEndsLog(t *testing.T) {
	key := newLogKey(t, testOrigin)
	l, err := New(Config{}, memDB(t), key.signer, key.vkey, testOrigin, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	if err := l.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if _, err := l.Append(t.Context(), sampleEntry(1, "")); err != nil {
		t.Fatalf("Append: %v", err)
	}
	cancel()
	if err := l.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, size, err := l.LatestCheckpoint(t.Context()); err != nil || size != 1 {
		t.Fatalf("LatestCheckpoint: size %d, %v; want 1", size, err)
	}
	if _, err := l.Append(t.Context(), sampleEntry(2, "")); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after the Start context ended: err = %v, want %v", err, ErrClosed)
	}
}

func TestLifecycleErrors(t *testing.T) {
	key := newLogKey(t, testOrigin)
	db := memDB(t)
	l, err := New(Config{}, db, key.signer, key.vkey, testOrigin, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if _, err := l.Append(t.Context(), sampleEntry(1, "")); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Append before Start: err = %v, want %v", err, ErrNotStarted)
	}
	if _, err := New(Config{}, db, key.signer, key.vkey, testOrigin, nil); !errors.Is(err, ErrInUse) {
		t.Errorf("second New of one origin: err = %v, want %v", err, ErrInUse)
	}
	// Entries committed without the committer (as after a crash before a checkpoint) are
	// checkpointed by a Close that never started.
	r, err := l.prepare(sampleEntry(1, pseudonym(1, 1)))
	if err != nil {
		t.Fatalf("prepare: %v", err)
	}
	l.commitGroup([]*request{r})
	if r.err != nil {
		t.Fatalf("commitGroup: %v", r.err)
	}
	if _, _, err := l.LatestCheckpoint(t.Context()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LatestCheckpoint before Close: err = %v, want %v", err, ErrNotFound)
	}
	if err := l.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, size, err := l.LatestCheckpoint(t.Context()); err != nil || size != 1 {
		t.Fatalf("LatestCheckpoint after Close: size %d, %v; want 1", size, err)
	}
	l2, err := New(Config{}, db, key.signer, key.vkey, testOrigin, nil)
	if err != nil {
		t.Fatalf("New after Close: %v", err)
	}
	l2.Close(t.Context())
}

func TestBadEntriesChangeNothing(t *testing.T) {
	long := strings.Repeat("x", verify.MaxStringSize+1)
	tests := []struct {
		name   string
		change func(e *verify.Entry)
	}{
		{"nil entry", nil},
		{"no event", func(e *verify.Entry) { e.Event = "" }},
		{"unknown event", func(e *verify.Entry) { e.Event = "delete" }},
		{"unknown outcome", func(e *verify.Entry) { e.Outcome = "maybe" }},
		{"no action", func(e *verify.Entry) { e.Action = "" }},
		{"index set", func(e *verify.Entry) { e.Index = 5 }},
		{"prev set", func(e *verify.Entry) { e.Prev = "x" }},
		{"patientSeq set", func(e *verify.Entry) { e.PatientSeq = 1 }},
		{"other version", func(e *verify.Entry) { e.V = 2 }},
		{"other origin", func(e *verify.Entry) { e.Origin = OriginPrefix + "other" }},
		{"BSN as patient", func(e *verify.Entry) { e.Patient = "123456782" }},
		{"patient not base64url", func(e *verify.Entry) { e.Patient = "v1.not*base64" }},
		{"patient with a line break", func(e *verify.Entry) { e.Patient = "v1.AAAAAAAAAAAAAAAAAAAAAA\nAA" }},
		{"string too long", func(e *verify.Entry) { e.Query = long }},
		{"nested string too long", func(e *verify.Entry) { e.Requester.URA = long }},
		{"consent id too long", func(e *verify.Entry) { e.Basis = &verify.Basis{ConsentIDs: []string{long}} }},
		{"empty consent id", func(e *verify.Entry) { e.Basis = &verify.Basis{ConsentIDs: []string{""}} }},
		{"not UTF-8", func(e *verify.Entry) { e.Reason = "\xff" }},
		{"requester without did", func(e *verify.Entry) { e.Requester.DID = "" }},
		{"employee without role", func(e *verify.Entry) { e.Employee.Role = "" }},
		{"entry too large", func(e *verify.Entry) {
			s := strings.Repeat("y", verify.MaxStringSize)
			e.Query, e.Reason, e.OnBehalfOf, e.DataCategory, e.TokenID = s, s, s, s, s
			e.Basis = &verify.Basis{ConsentIDs: []string{s, s, s}}
		}},
		{"time not UTC", func(e *verify.Entry) { e.Time = "2026-11-23T11:00:00.000000000+01:00" }},
		{"time without nanoseconds", func(e *verify.Entry) { e.Time = "2026-11-23T10:00:00Z" }},
		{"time before the previous entry", func(e *verify.Entry) { e.Time = "2000-01-01T00:00:00.000000000Z" }},
	}
	key := newLogKey(t, testOrigin)
	db := memDB(t)
	l := openLog(t, Config{CheckpointEvery: 1}, db, testOrigin, key)
	for i := range 3 {
		if _, err := l.Append(t.Context(), sampleEntry(i, pseudonym(1, 1))); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := dumpDB(t, db)
			var e *verify.Entry
			if tt.change != nil {
				e = sampleEntry(7, pseudonym(1, 1))
				tt.change(e)
			}
			if _, err := l.Append(t.Context(), e); !errors.Is(err, ErrInvalidEntry) {
				t.Fatalf("Append: err = %v, want %v", err, ErrInvalidEntry)
			}
			sameDump(t, before, dumpDB(t, db))
		})
	}
	// The log goes on: the next patient entry has the next sequence number.
	r, err := l.Append(t.Context(), sampleEntry(9, pseudonym(1, 1)))
	if err != nil || r.Index != 3 || r.PatientSeq != 4 {
		t.Fatalf("Append after refusals: index %d patientSeq %d, %v; want 3, 4", r.Index, r.PatientSeq, err)
	}
}

func TestEntryTimes(t *testing.T) {
	base := time.Date(2026, 11, 23, 10, 0, 0, 123456789, time.UTC)
	clock := []time.Time{base, base.Add(time.Second), base.Add(-time.Hour), base.Add(2 * time.Second)}
	var mu sync.Mutex
	next := 0
	now := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t := clock[min(next, len(clock)-1)]
		next++
		return t
	}
	key := newLogKey(t, testOrigin)
	l := openLog(t, Config{Now: now}, memDB(t), testOrigin, key)
	tests := []struct {
		name    string
		time    string
		want    string
		wantErr error
	}{
		{name: "clock", want: "2026-11-23T10:00:00.123456789Z"},
		{name: "clock later", want: "2026-11-23T10:00:01.123456789Z"},
		{name: "clock goes back: previous time kept", want: "2026-11-23T10:00:01.123456789Z"},
		{name: "caller's time", time: "2026-11-23T10:00:01.500000000Z", want: "2026-11-23T10:00:01.500000000Z"},
		{name: "caller's time equal to the previous", time: "2026-11-23T10:00:01.500000000Z", want: "2026-11-23T10:00:01.500000000Z"},
		{name: "caller's time before the previous", time: "2026-11-23T10:00:01.499999999Z", wantErr: ErrInvalidEntry},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := sampleEntry(i, "")
			e.Time = tt.time
			r, err := l.Append(t.Context(), e)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Append: err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || r.Time != tt.want {
				t.Fatalf("Append: time %s, %v; want %s", r.Time, err, tt.want)
			}
		})
	}
	checkExport(t, exportLog(t, l), testOrigin)
}

// blockFirstGroup makes the committer stop before committing its first group until release is
// closed; taken is closed once it has stopped. It MUST be called before Start.
func blockFirstGroup(l *Log) (taken, release chan struct{}) {
	taken, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	l.testHookGroup = func(int) {
		once.Do(func() {
			close(taken)
			<-release
		})
	}
	return taken, release
}

// newUnstarted opens a log without starting it; the cleanup closes it.
func newUnstarted(t *testing.T, cfg Config) *Log {
	t.Helper()
	key := newLogKey(t, testOrigin)
	l, err := New(cfg, memDB(t), key.signer, key.vkey, testOrigin, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { l.Close(t.Context()) })
	return l
}

func queued(l *Log) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue)
}

func TestAppendCancelledWhileQueued(t *testing.T) {
	l := newUnstarted(t, Config{})
	taken, release := blockFirstGroup(l)
	if err := l.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	first := make(chan error, 1)
	go func() {
		_, err := l.Append(t.Context(), sampleEntry(1, ""))
		first <- err
	}()
	<-taken
	ctx, cancel := context.WithCancel(t.Context())
	second := make(chan error, 1)
	go func() {
		_, err := l.Append(ctx, sampleEntry(2, pseudonym(1, 1)))
		second <- err
	}()
	for queued(l) == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-second; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Append: err = %v, want %v", err, context.Canceled)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("first Append: %v", err)
	}
	// The cancelled append must never be written, also not by a later group.
	if _, err := l.Append(t.Context(), sampleEntry(3, "")); err != nil {
		t.Fatalf("third Append: %v", err)
	}
	if got := l.Size(); got != 2 {
		t.Fatalf("Size = %d, want 2: the cancelled append was written", got)
	}
	if got, err := l.PatientEntries(t.Context(), []string{pseudonym(1, 1)}); err != nil || len(got) != 0 {
		t.Fatalf("PatientEntries = %d entries, %v; want none", len(got), err)
	}
}

func TestQueueBackpressure(t *testing.T) {
	l := newUnstarted(t, Config{MaxQueue: 2})
	taken, release := blockFirstGroup(l)
	if err := l.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 9)
	wg.Go(func() {
		_, err := l.Append(t.Context(), sampleEntry(0, ""))
		errs <- err
	})
	<-taken
	for i := range 8 {
		wg.Go(func() {
			_, err := l.Append(t.Context(), sampleEntry(i+1, ""))
			errs <- err
		})
	}
	for queued(l) < 2 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	if n := queued(l); n != 2 {
		t.Errorf("%d appends queued, want MaxQueue 2", n)
	}
	// An append that cannot get into the full queue gives up with its context.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := l.Append(ctx, sampleEntry(9, "")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Append to a full queue: err = %v, want %v", err, context.DeadlineExceeded)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Append: %v", err)
		}
	}
	if got := l.Size(); got != 9 {
		t.Errorf("Size = %d, want 9", got)
	}
}

func TestProofs(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{name: "hash cache", cfg: Config{CheckpointEvery: 7}},
		{name: "no hash cache", cfg: Config{CheckpointEvery: 7, ProofCacheBytes: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) { testProofs(t, tc.cfg) })
	}
}

func testProofs(t *testing.T, cfg Config) {
	key := newLogKey(t, testOrigin)
	l := openLog(t, cfg, memDB(t), testOrigin, key)
	const n = 300
	var leaves []tlog.Hash
	for i := range n {
		r, err := l.Append(t.Context(), sampleEntry(i, pseudonym(1, i%5)))
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		leaves = append(leaves, r.LeafHash)
	}
	x := exportLog(t, l)
	var cps []checkpoint
	for _, msg := range x.checkpoints {
		cps = append(cps, openCheckpoint(t, msg, key.vkey, testOrigin))
	}
	slices.SortFunc(cps, func(a, b checkpoint) int { return int(a.size - b.size) })
	if len(cps) < n/7 {
		t.Fatalf("%d checkpoints, want at least %d", len(cps), n/7)
	}
	for _, c := range cps {
		for _, i := range []int64{0, c.size / 2, c.size - 1} {
			p, err := l.InclusionProof(t.Context(), i, c.size)
			if err != nil {
				t.Fatalf("InclusionProof(%d, %d): %v", i, c.size, err)
			}
			if err := tlog.CheckRecord(p, c.size, c.root, i, leaves[i]); err != nil {
				t.Fatalf("CheckRecord(%d in %d): %v", i, c.size, err)
			}
			if err := tlog.CheckRecord(p, c.size, c.root, i, leaves[(i+1)%int64(n)]); err == nil {
				t.Fatalf("CheckRecord(%d in %d) accepted another entry's leaf", i, c.size)
			}
		}
		for _, old := range cps {
			if old.size > c.size {
				continue
			}
			p, err := l.ConsistencyProof(t.Context(), old.size, c.size)
			if err != nil {
				t.Fatalf("ConsistencyProof(%d, %d): %v", old.size, c.size, err)
			}
			if err := tlog.CheckTree(p, c.size, c.root, old.size, old.root); err != nil {
				t.Fatalf("CheckTree(%d, %d): %v", old.size, c.size, err)
			}
			forged := old.root
			forged[0] ^= 1
			if err := tlog.CheckTree(p, c.size, c.root, old.size, forged); err == nil {
				t.Fatalf("CheckTree(%d, %d) accepted a forged old root", old.size, c.size)
			}
		}
	}
	ranges := []struct {
		name          string
		index, size   int64
		oldSize, newS int64
	}{
		{name: "negative", index: -1, size: 10, oldSize: -1, newS: 10},
		{name: "index at size", index: 10, size: 10, oldSize: 11, newS: 10},
		{name: "beyond the log", index: 5, size: n + 1, oldSize: 5, newS: n + 1},
		{name: "empty old tree", index: 0, size: 0, oldSize: 0, newS: 5},
	}
	for _, tt := range ranges {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := l.InclusionProof(t.Context(), tt.index, tt.size); !errors.Is(err, ErrRange) {
				t.Errorf("InclusionProof(%d, %d): err = %v, want %v", tt.index, tt.size, err, ErrRange)
			}
			if _, err := l.ConsistencyProof(t.Context(), tt.oldSize, tt.newS); !errors.Is(err, ErrRange) {
				t.Errorf("ConsistencyProof(%d, %d): err = %v, want %v", tt.oldSize, tt.newS, err, ErrRange)
			}
		})
	}
}

func TestCommitFailureStopsLog(t *testing.T) {
	key := newLogKey(t, testOrigin)
	db := memDB(t)
	l, err := New(Config{}, db, key.signer, key.vkey, testOrigin, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := l.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer l.Close(t.Context())
	if _, err := l.Append(t.Context(), sampleEntry(1, "")); err != nil {
		t.Fatalf("Append: %v", err)
	}
	// Closing the store under the log makes the next commit fail.
	if err := db.Close(); err != nil {
		t.Fatalf("store Close: %v", err)
	}
	for i := range 2 {
		if _, err := l.Append(t.Context(), sampleEntry(2+i, "")); !errors.Is(err, ErrFailed) {
			t.Fatalf("Append %d after a failed commit: err = %v, want %v", i, err, ErrFailed)
		}
	}
	if got := l.Size(); got != 1 {
		t.Fatalf("Size = %d, want 1", got)
	}
}

func TestEntriesRange(t *testing.T) {
	key := newLogKey(t, testOrigin)
	l := openLog(t, Config{MaxReadEntries: 10}, memDB(t), testOrigin, key)
	var want [][]byte
	for i := range 25 {
		r, err := l.Append(t.Context(), sampleEntry(i, ""))
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		want = append(want, r.Entry)
	}
	tests := []struct {
		name       string
		start, end int64
		wantErr    error
	}{
		{name: "first", start: 0, end: 1},
		{name: "middle", start: 7, end: 17},
		{name: "to the end", start: 20, end: 25},
		{name: "empty", start: 25, end: 25},
		{name: "too many", start: 0, end: 11, wantErr: ErrRange},
		{name: "beyond", start: 20, end: 26, wantErr: ErrRange},
		{name: "reversed", start: 5, end: 4, wantErr: ErrRange},
		{name: "negative", start: -1, end: 4, wantErr: ErrRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := l.Entries(t.Context(), tt.start, tt.end)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Entries(%d, %d): err = %v, want %v", tt.start, tt.end, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Entries(%d, %d): %v", tt.start, tt.end, err)
			}
			if !slices.EqualFunc(got, want[tt.start:tt.end], func(a, b []byte) bool { return string(a) == string(b) }) {
				t.Fatalf("Entries(%d, %d) differs from the receipts' entries", tt.start, tt.end)
			}
		})
	}
}

func TestCheckpoints(t *testing.T) {
	key := newLogKey(t, testOrigin)
	l := openLog(t, Config{CheckpointEvery: 5}, memDB(t), testOrigin, key)
	if _, _, err := l.LatestCheckpoint(t.Context()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LatestCheckpoint of an empty log: err = %v, want %v", err, ErrNotFound)
	}
	var lines [][]byte
	for i := range 12 {
		r, err := l.Append(t.Context(), sampleEntry(i, ""))
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		lines = append(lines, r.Entry)
	}
	tree := newMemTree(t, lines)
	msg, size, err := l.LatestCheckpoint(t.Context())
	if err != nil || size < 10 {
		t.Fatalf("LatestCheckpoint: size %d, %v; want at least 10", size, err)
	}
	c := openCheckpoint(t, msg, key.vkey, testOrigin)
	if c.size != size || c.root != tree.root(t, size) {
		t.Fatalf("latest checkpoint: size %d root %s, want %d %s", c.size, c.root, size, tree.root(t, size))
	}
	if want := string(verify.FormatCheckpoint(testOrigin, size, c.root)); !strings.HasPrefix(string(msg), want+"\n") {
		t.Fatalf("checkpoint %q does not start with the body %q and a blank line", msg, want)
	}
	got, err := l.Checkpoint(t.Context(), size)
	if err != nil || string(got) != string(msg) {
		t.Fatalf("Checkpoint(%d) = %q, %v; want the latest", size, got, err)
	}
	if _, err := l.Checkpoint(t.Context(), 3); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Checkpoint(3): err = %v, want %v", err, ErrNotFound)
	}
}

func TestCheckpointInterval(t *testing.T) {
	key := newLogKey(t, testOrigin)
	l := openLog(t, Config{CheckpointEvery: 1000, CheckpointInterval: 20 * time.Millisecond}, memDB(t), testOrigin, key)
	for i := range 3 {
		if _, err := l.Append(t.Context(), sampleEntry(i, "")); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, size, err := l.LatestCheckpoint(t.Context())
		if err == nil && size == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint of size 3 after 10s: size %d, %v", size, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestExport(t *testing.T) {
	key := newLogKey(t, testOrigin)
	l := openLog(t, Config{CheckpointEvery: 4}, memDB(t), testOrigin, key)
	t.Run("empty log", func(t *testing.T) {
		x := exportLog(t, l)
		if len(x.lines) != 0 || len(x.checkpoints) != 1 {
			t.Fatalf("export of an empty log: %d entries, %d checkpoints; want 0 and 1", len(x.lines), len(x.checkpoints))
		}
		checkExport(t, x, testOrigin)
	})
	for i := range 10 {
		if _, err := l.Append(t.Context(), sampleEntry(i, pseudonym(1, i%2))); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	t.Run("round trip", func(t *testing.T) {
		x := exportLog(t, l)
		if x.vkey != key.vkey {
			t.Fatalf("vkey %q, want %q", x.vkey, key.vkey)
		}
		checkExport(t, x, testOrigin)
		all, err := l.Entries(t.Context(), 0, l.Size())
		if err != nil {
			t.Fatalf("Entries: %v", err)
		}
		if !slices.EqualFunc(all, x.lines, func(a, b []byte) bool { return string(a) == string(b) }) {
			t.Fatalf("exported lines differ from Entries")
		}
		for size, msg := range x.checkpoints {
			stored, err := l.Checkpoint(t.Context(), size)
			if err != nil || string(stored) != string(msg) {
				t.Fatalf("checkpoint file %d differs from Checkpoint(%d): %v", size, size, err)
			}
		}
	})
	t.Run("tampered export fails verify", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "export")
		if err := l.Export(t.Context(), dir); err != nil {
			t.Fatalf("Export: %v", err)
		}
		name := filepath.Join(dir, verify.EntriesFile)
		raw, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		lines := bytes.SplitAfter(raw, []byte("\n"))
		lines[5] = bytes.Replace(lines[5], []byte(`"tok-`), []byte(`"tak-`), 1)
		if err := os.WriteFile(name, bytes.Join(lines, nil), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err = verify.VerifyExport(t.Context(), dir, verify.Options{})
		var verr *verify.Error
		if !errors.As(err, &verr) || verr.Index != 5 {
			t.Fatalf("verify.VerifyExport of a tampered export: err = %v, want entry 5 named", err)
		}
	})
	t.Run("directory not empty", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := l.Export(t.Context(), dir); !errors.Is(err, ErrExportDir) {
			t.Fatalf("Export to a non-empty directory: err = %v, want %v", err, ErrExportDir)
		}
	})
}

func TestNewRefuses(t *testing.T) {
	key := newLogKey(t, testOrigin)
	other := newLogKey(t, testOrigin)
	misnamed := keyFor(t, key.priv, OriginPrefix+"other")
	db := memDB(t)
	tests := []struct {
		name   string
		cfg    Config
		db     *store.DB
		key    logKey
		origin string
	}{
		{name: "nil store", db: nil, key: key, origin: testOrigin},
		{name: "origin without prefix", db: db, key: keyFor(t, key.priv, "example.com/log"), origin: "example.com/log"},
		{name: "origin without identifier", db: db, key: key, origin: OriginPrefix},
		{name: "origin with space", db: db, key: key, origin: OriginPrefix + "a b"},
		{name: "signer named otherwise", db: db, key: misnamed, origin: testOrigin},
		{name: "vkey of another key", db: db, key: logKey{signer: key.signer, vkey: other.vkey}, origin: testOrigin},
		{name: "vkey malformed", db: db, key: logKey{signer: key.signer, vkey: "nonsense"}, origin: testOrigin},
		{name: "negative CheckpointEvery", cfg: Config{CheckpointEvery: -1}, db: db, key: key, origin: testOrigin},
		{name: "negative CheckpointInterval", cfg: Config{CheckpointInterval: -time.Second}, db: db, key: key, origin: testOrigin},
		{name: "negative MaxQueue", cfg: Config{MaxQueue: -1}, db: db, key: key, origin: testOrigin},
	}
	before := dumpDB(t, db)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg, tt.db, tt.key.signer, tt.key.vkey, tt.origin, nil); !errors.Is(err, ErrConfig) {
				t.Fatalf("New: err = %v, want %v", err, ErrConfig)
			}
		})
	}
	sameDump(t, before, dumpDB(t, db))
	// None of them holds the origin.
	l, err := New(Config{}, db, key.signer, key.vkey, testOrigin, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	l.Close(t.Context())
}

func TestLogsShareStore(t *testing.T) {
	db := memDB(t)
	origins := []string{OriginPrefix + "a", OriginPrefix + "ab", OriginPrefix + "b"}
	logs := make([]*Log, len(origins))
	for i, o := range origins {
		logs[i] = openLog(t, Config{CheckpointEvery: 3}, db, o, newLogKey(t, o))
	}
	var wg sync.WaitGroup
	for i, l := range logs {
		wg.Go(func() {
			for j := range 10 * (i + 1) {
				if _, err := l.Append(t.Context(), sampleEntry(j, pseudonym(1, j%2))); err != nil {
					t.Errorf("Append to %s: %v", l.Origin(), err)
					return
				}
			}
		})
	}
	wg.Wait()
	for i, l := range logs {
		x := exportLog(t, l)
		if len(x.lines) != 10*(i+1) {
			t.Fatalf("%s: %d entries, want %d", l.Origin(), len(x.lines), 10*(i+1))
		}
		checkExport(t, x, l.Origin())
		got, err := l.PatientEntries(t.Context(), []string{pseudonym(1, 0)})
		if err != nil || len(got) != 5*(i+1) {
			t.Fatalf("%s: PatientEntries = %d entries, %v; want %d", l.Origin(), len(got), err, 5*(i+1))
		}
	}
}

func TestOrigin(t *testing.T) {
	tests := []struct {
		did     string
		want    string
		wantErr error
	}{
		{did: "did:schakel:7Xq3yvC9KzbR1d", want: OriginPrefix + "7Xq3yvC9KzbR1d"},
		{did: "did:web:example.com", wantErr: ErrConfig},
		{did: "did:schakel:", wantErr: ErrConfig},
		{did: "did:schakel:a+b", wantErr: ErrConfig},
	}
	for _, tt := range tests {
		t.Run(tt.did, func(t *testing.T) {
			got, err := Origin(tt.did)
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Fatalf("Origin(%q) = %q, %v; want %q, %v", tt.did, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

var withNS = store.MustNamespace("test-with")

func TestAppendWith(t *testing.T) {
	key := newLogKey(t, testOrigin)
	db := memDB(t)
	l := openLog(t, Config{CheckpointEvery: 1000}, db, testOrigin, key)
	var b store.Batch
	b.Set(withNS, []byte("spent"), []byte{1})
	b.SetTTL(withNS, []byte("spent-ttl"), []byte{2}, time.Hour)
	r, err := l.AppendWith(t.Context(), sampleEntry(0, pseudonym(1, 1)), &b)
	if err != nil || r.Index != 0 {
		t.Fatalf("AppendWith: index %d, %v", r.Index, err)
	}
	if err := db.View(t.Context(), func(tx *store.Txn) error {
		for _, k := range []string{"spent", "spent-ttl"} {
			if ok, err := tx.Has(withNS, []byte(k)); err != nil || !ok {
				return fmt.Errorf("%s written with the entry: %v, %v", k, ok, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// A batch store.DB.Write would refuse fails the append, and nothing is written.
	before := dumpDB(t, db)
	var bad store.Batch
	bad.SetTTL(withNS, []byte("k"), []byte{1}, -time.Second)
	if _, err := l.AppendWith(t.Context(), sampleEntry(1, pseudonym(1, 1)), &bad); err == nil {
		t.Fatal("AppendWith of a batch with a negative TTL succeeded")
	}
	var huge store.Batch
	huge.Set(withNS, []byte("k"), make([]byte, 2<<20))
	if _, err := l.AppendWith(t.Context(), sampleEntry(1, pseudonym(1, 1)), &huge); err == nil {
		t.Fatal("AppendWith of a value beyond MaxValueSize succeeded")
	}
	sameDump(t, before, dumpDB(t, db))
	if r, err := l.AppendWith(t.Context(), sampleEntry(1, pseudonym(1, 1)), nil); err != nil || r.Index != 1 {
		t.Fatalf("AppendWith(nil) after refusals: index %d, %v; want 1", r.Index, err)
	}
}

// TestOpenReadsNoHistory holds invariant 7 (start-up does not grow with history): after 500
// appends, every entry but the last is deleted from storage behind the log's back, and the log
// still opens, with its size, head and latest checkpoint, and takes appends. Opening that read
// (replayed) the entries would fail or lose the size.
func TestOpenReadsNoHistory(t *testing.T) {
	dir := t.TempDir()
	key := newLogKey(t, testOrigin)
	cfg := Config{CheckpointEvery: 100}
	db := diskDB(t, dir)
	l, err := New(cfg, db, key.signer, key.vkey, testOrigin, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	const n = 500
	for i := range n {
		if _, err := l.Append(t.Context(), sampleEntry(i, pseudonym(1, i%8))); err != nil {
			t.Fatalf("Append(%d): %v", i, err)
		}
	}
	if err := l.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, size, err := l.LatestCheckpoint(t.Context())
	if err != nil || size != n {
		t.Fatalf("LatestCheckpoint before = %d, %v; want %d", size, err, n)
	}
	err = db.Badger().Update(func(txn *badger.Txn) error {
		for i := range int64(n - 1) {
			if err := txn.Delete(l.fk.entry(i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err = New(cfg, db, key.signer, key.vkey, testOrigin, nil)
	if err != nil {
		t.Fatalf("New over a log whose old entries are gone: %v", err)
	}
	if err := l.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if l.Size() != n {
		t.Fatalf("reopened with size %d, want %d", l.Size(), n)
	}
	r, err := l.Append(t.Context(), sampleEntry(n, pseudonym(1, 0)))
	if err != nil || r.Index != n {
		t.Fatalf("Append after reopening = %d, %v; want index %d", r.Index, err, n)
	}
	// The deletion is real: reading the history now fails.
	if _, err := l.Entries(t.Context(), 0, 1); err == nil {
		t.Fatal("Entries(0) succeeded over a deleted entry: the test deleted nothing")
	}
	if err := l.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
}
