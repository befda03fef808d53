package accesslog

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"runtime"
	"time"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/schakel-health/schakel/internal/accesslog/verify"
)

// Request states: a request is queued until the committer takes it or Append abandons it.
const (
	reqQueued int32 = iota
	reqTaken
	reqAbandoned
)

// frontierHash is the latest stored hash at one tree level.
type frontierHash struct {
	idx int64 // tlog stored hash index
	h   tlog.Hash
	ok  bool
}

// state is a view of the log after some number of entries: what the next entry and checkpoint
// are computed from.
type state struct {
	head
	lastT time.Time
	// stored is tlog.StoredHashCount(size): where the next entry's hashes go.
	stored int64
	// frontier holds, per level, the latest stored hash: every hash tlog.StoredHashes and
	// tlog.TreeHash read while the log grows. Empty after opening; filled from storage on demand.
	frontier [64]frontierHash
	// ckptSize is the size of the latest checkpoint, -1 when there is none.
	ckptSize int64
}

func (s *state) lookup(idx int64) (tlog.Hash, bool) {
	for i := range bits.Len64(uint64(s.size)) + 1 {
		if f := &s.frontier[i]; f.ok && f.idx == idx {
			return f.h, true
		}
	}
	return tlog.Hash{}, false
}

func (s *state) remember(idx int64, h tlog.Hash) {
	level, _ := tlog.SplitStoredHashIndex(idx)
	if f := &s.frontier[level]; !f.ok || f.idx < idx {
		*f = frontierHash{idx: idx, h: h, ok: true}
	}
}

// txnCost is what writes add to a badger transaction, counted as badger does (Txn.checkSize).
type txnCost struct{ bytes, count int64 }

func (c txnCost) add(d txnCost) txnCost { return txnCost{c.bytes + d.bytes, c.count + d.count} }

func (c txnCost) within(limit txnCost) bool { return c.bytes <= limit.bytes && c.count <= limit.count }

// opCost is an upper bound of badger's estimate for one write (key and value, two meta bytes,
// ten for the version, or a 12-byte value pointer in place of a large value).
func opCost(key, value int) txnCost {
	return txnCost{bytes: int64(len(ns.Key()) + key + value + 14), count: 1}
}

// requestCost bounds the writes of one entry of at most entrySize bytes: the entry, a row of two
// stored hashes (the average; txnBudget reserves the rest), and for a patient the counter and a
// row.
func (l *Log) requestCost(entrySize, patient int) txnCost {
	kl := len(l.k.log) + 1
	c := opCost(kl+8, entrySize).add(opCost(kl+8, 2*tlog.HashSize))
	if patient > 0 {
		c = c.add(opCost(kl+patientIDSize, 8)).add(opCost(kl+patientIDSize+8, 8))
	}
	return c
}

// txnBudget is what a group's entries may add to one transaction: badger's limits less the
// group's fixed writes (head, a checkpoint, up to 64 stored hashes beyond two per entry).
func (l *Log) txnBudget() txnCost {
	kl := len(l.k.log) + 1
	reserve := opCost(kl, headFixed+1+maxOriginSize+len(timeLayout)).add(opCost(kl+8, 4096))
	reserve.bytes += 64 * tlog.HashSize
	limit := txnCost{bytes: l.bdb.MaxBatchSize() - 1, count: l.bdb.MaxBatchCount() - 1}
	return txnCost{bytes: limit.bytes - reserve.bytes, count: limit.count - reserve.count}
}

// frontierReader serves tlog from a state's frontier, falling back to committed storage.
type frontierReader struct {
	l    *Log
	st   *state
	read *badger.Txn // opened on the first read; close ends it
}

// ReadHashes implements tlog.HashReader.
func (fr *frontierReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		if h, ok := fr.st.lookup(idx); ok {
			out[i] = h
			continue
		}
		key, off := fr.l.fk.hashRow(idx)
		row, err := fr.get(key)
		if err != nil {
			return nil, fmt.Errorf("stored hash %d: %w", idx, err)
		}
		if out[i], err = hashAt(row, off, idx); err != nil {
			return nil, err
		}
		fr.st.remember(idx, out[i])
	}
	return out, nil
}

// get reads a committed value; nil when absent.
func (fr *frontierReader) get(key []byte) ([]byte, error) {
	if fr.read == nil {
		fr.read = fr.l.bdb.NewTransaction(false)
	}
	item, err := fr.read.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

func (fr *frontierReader) close() {
	if fr.read != nil {
		fr.read.Discard()
		fr.read = nil
	}
}

// committer is the state of the committer goroutine, the only writer of the log's entries.
//
// It takes every append queued while the previous group was being written — there is no timer:
// a group is whatever arrived during the previous commit, up to what one badger transaction
// holds — gives each its place (index, prev, time, sequence number) and tree hashes, writes the
// entries, hashes, patient rows and counters, the head and, when due, a checkpoint in one
// transaction, commits it (fsynced), installs the new state as committed and then acknowledges
// each append. The entries are encoded by prepare in the appenders' goroutines, so the committer's
// work per entry is a splice, two SHA-256 hashes and its writes.
type committer struct {
	l   *Log
	tip state // the state after the last group
}

func (l *Log) newCommitter() *committer {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	return &committer{l: l, tip: l.st}
}

// run is the committer goroutine. It ends after Close or the end of ctx, once every queued
// append is committed and a final checkpoint is made.
func (c *committer) run(ctx context.Context) {
	l := c.l
	defer close(l.stopped)
	ticker := time.NewTicker(l.cfg.CheckpointInterval)
	defer ticker.Stop()
	ctxDone, stop := ctx.Done(), l.stop
	closing := false
	for {
		if c.commitQueued() {
			// Let the appenders just acknowledged run, so that they queue again before the next
			// group is taken; otherwise they split into two cohorts that alternate and each fsync
			// carries fewer entries (docs/DECISIONS.md, store group commit).
			runtime.Gosched()
			continue
		}
		if closing {
			// No append joins the queue once closing is set, and the queue is empty.
			l.closeErr = l.finalCheckpoint()
			l.logger.Debug("access log closed", slog.Int64("size", l.size.Load()))
			return
		}
		select {
		case <-l.wake:
		case <-ticker.C:
			if _, err := l.makeCheckpoint(1); err != nil {
				l.logger.Error("interval checkpoint failed", slog.Any("error", err))
			}
		case <-ctxDone:
			ctxDone = nil
			l.beginClose()
		case <-stop:
			stop, closing = nil, true
		}
	}
}

// commitQueued commits one group of queued appends and reports whether there was one.
func (c *committer) commitQueued() bool {
	l := c.l
	l.mu.Lock()
	if len(l.queue) == 0 {
		l.mu.Unlock()
		return false
	}
	var used txnCost
	n := 0
	for _, r := range l.queue {
		u := used.add(r.cost)
		if n > 0 && !u.within(l.budget) {
			break
		}
		used = u
		n++
	}
	taken := make([]*request, n)
	copy(taken, l.queue)
	rest := copy(l.queue, l.queue[n:])
	clear(l.queue[rest:])
	l.queue = l.queue[:rest]
	if l.space != nil {
		close(l.space)
		l.space = nil
	}
	l.mu.Unlock()
	reqs := taken[:0]
	for _, r := range taken {
		if r.state.CompareAndSwap(reqQueued, reqTaken) {
			reqs = append(reqs, r)
		}
	}
	if l.testHookGroup != nil {
		l.testHookGroup(len(reqs))
	}
	c.commitGroup(reqs)
	return true
}

// group is the work of one transaction.
type group struct {
	c    *committer
	st   state // the tip as the group advances it
	r    frontierReader
	txn  *badger.Txn
	seqs map[string]uint64 // per patient, the last sequence number in the group
	buf  []byte            // entry bytes, one allocation for the group
	n    int               // entries written
	// cached are the group's hashes for the proof cache, added once the group is committed.
	cached []cachedHash
}

// commitGroup gives reqs their places, writes them in one transaction and acknowledges each. A
// request refused here (a time before the previous entry's) is acknowledged with its error and
// takes no place. If building the transaction fails, or the store is short of free space
// (store.ErrNoSpace), nothing is written and every request gets the error. If the commit fails
// the log stops: badger may hold part of the group, so the state in memory can no longer be
// trusted; every later append fails with ErrFailed.
func (c *committer) commitGroup(reqs []*request) {
	l := c.l
	defer func() {
		for _, r := range reqs {
			close(r.done)
		}
	}()
	if len(reqs) == 0 {
		return
	}
	if l.failed.Load() {
		for _, r := range reqs {
			r.err = fmt.Errorf("accesslog: append: %w", ErrFailed)
		}
		return
	}
	if err := l.db.CheckSpace(); err != nil {
		// Nothing is written, so the log takes appends again once space is freed.
		for _, r := range reqs {
			r.err = fmt.Errorf("accesslog: append: %w", err)
		}
		return
	}
	g := &group{c: c, st: c.tip, txn: l.bdb.NewTransaction(true), seqs: map[string]uint64{}}
	g.r = frontierReader{l: l, st: &g.st}
	defer g.txn.Discard()
	defer g.r.close()
	size := 0
	for _, r := range reqs {
		size += len(r.tmpl.before) + len(r.tmpl.after) + 128 + len(l.sp.head)
	}
	g.buf = make([]byte, 0, size)
	if err := g.build(reqs); err != nil {
		for _, r := range reqs {
			if r.err == nil {
				r.err = fmt.Errorf("accesslog: append: %w", err)
			}
		}
		l.logger.Error("access log group not written", slog.Int("entries", len(reqs)), slog.Any("error", err))
		return
	}
	if g.n == 0 {
		return
	}
	if err := g.txn.Commit(); err != nil {
		l.writeMu.Lock()
		l.failErr = err
		l.failed.Store(true)
		l.writeMu.Unlock()
		for _, r := range reqs {
			if r.err == nil {
				r.err = fmt.Errorf("accesslog: append: %w: commit: %w", ErrFailed, err)
			}
		}
		l.logger.Error("access log commit failed; the log stops accepting appends", slog.Any("error", err))
		return
	}
	l.writeMu.Lock()
	g.st.ckptSize = max(g.st.ckptSize, l.st.ckptSize)
	l.st = g.st
	l.writeMu.Unlock()
	c.tip = g.st
	l.size.Store(g.st.size)
	l.groups.Add(1)
	l.hashes.putAll(g.cached)
	if len(l.patients)+len(g.seqs) > maxCachedPatients {
		clear(l.patients)
	}
	for p, s := range g.seqs {
		l.patients[p] = s
	}
}

// build adds the requests that take a place to the transaction, with the group's patient
// counters, head and, when due, checkpoint.
func (g *group) build(reqs []*request) error {
	l := g.c.l
	now := l.cfg.Now().UTC()
	for _, r := range reqs {
		t := r.t
		switch {
		case t.IsZero():
			t = now
			if t.Before(g.st.lastT) {
				t = g.st.lastT
			}
		case t.Before(g.st.lastT):
			r.err = fmt.Errorf("accesslog: append: %w: time %s is before the previous entry's %s",
				ErrInvalidEntry, r.e.Time, g.st.lastTime)
			continue
		}
		if err := g.place(r, t); err != nil {
			return err
		}
	}
	if g.n == 0 {
		return nil
	}
	for p, s := range g.seqs {
		if err := g.set(l.fk.counter(patientID(p)), binary.BigEndian.AppendUint64(nil, s)); err != nil {
			return err
		}
	}
	if err := g.set(l.fk.head(), g.st.head.encode()); err != nil {
		return err
	}
	if g.st.size-max(g.st.ckptSize, 0) >= int64(l.cfg.CheckpointEvery) {
		msg, err := l.signCheckpoint(g.st.size, &g.r)
		if err != nil {
			return err
		}
		if err := g.set(l.fk.checkpoint(g.st.size), msg); err != nil {
			return err
		}
		g.st.ckptSize = g.st.size
	}
	return nil
}

func (g *group) set(key, value []byte) error {
	return g.txn.SetEntry(badger.NewEntry(key, value))
}

// place gives r the next index, its prev, time and sequence number, and adds the entry, its
// stored hashes and its patient row to the transaction.
func (g *group) place(r *request, t time.Time) error {
	l, st := g.c.l, &g.st
	e := &r.e
	e.V, e.Origin, e.Index, e.Time, e.Prev = verify.Version, l.origin, uint64(st.size), formatTime(t), ""
	if e.Patient != "" {
		s, err := g.seq(e.Patient)
		if err != nil {
			return err
		}
		e.PatientSeq = s + 1
	}
	var b []byte
	if r.spliced {
		start := len(g.buf)
		g.buf = l.sp.splice(g.buf, &r.tmpl, st.size, &st.last, e.Time, e.PatientSeq)
		b = g.buf[start:len(g.buf):len(g.buf)]
	} else {
		if st.size > 0 {
			e.Prev = base64.StdEncoding.EncodeToString(st.last[:])
		}
		var err error
		if b, err = e.Marshal(); err != nil {
			// prepare bounded the size, so this is not the caller's fault.
			return fmt.Errorf("encode entry %d: %w", st.size, err)
		}
	}
	leaf := tlog.RecordHash(b)
	hashes, err := tlog.StoredHashesForRecordHash(st.size, leaf, &g.r)
	if err != nil {
		return fmt.Errorf("tree hashes of entry %d: %w", st.size, err)
	}
	if err := g.set(l.fk.entry(st.size), b); err != nil {
		return err
	}
	if err := r.with.AddTo(g.txn, r.at); err != nil {
		return fmt.Errorf("writes with entry %d: %w", st.size, err)
	}
	row := make([]byte, 0, len(hashes)*tlog.HashSize)
	for j, h := range hashes {
		row = append(row, h[:]...)
		st.frontier[j] = frontierHash{idx: st.stored + int64(j), h: h, ok: true}
		if j >= cacheLevel {
			g.cached = append(g.cached, cachedHash{level: j, n: st.size >> j, h: h})
		}
	}
	if err := g.set(l.fk.hashes(st.stored), row); err != nil {
		return err
	}
	if e.Patient != "" {
		g.seqs[e.Patient] = e.PatientSeq
		if err := g.set(l.fk.patientRow(patientID(e.Patient), e.PatientSeq), binary.BigEndian.AppendUint64(nil, e.Index)); err != nil {
			return err
		}
	}
	r.res = Receipt{Index: st.size, PatientSeq: e.PatientSeq, Time: e.Time, LeafHash: leaf, Entry: b}
	st.stored += int64(len(hashes))
	st.size++
	st.last = sha256.Sum256(b)
	st.lastT, st.lastTime = t, e.Time
	g.n++
	return nil
}

// seq returns the patient's last sequence number: the group's, the cache's, or else the stored
// counter's.
func (g *group) seq(patient string) (uint64, error) {
	if s, ok := g.seqs[patient]; ok {
		return s, nil
	}
	if s, ok := g.c.l.patients[patient]; ok {
		return s, nil
	}
	b, err := g.r.get(g.c.l.fk.counter(patientID(patient)))
	switch {
	case err != nil:
		return 0, fmt.Errorf("patient counter: %w", err)
	case b == nil:
		return 0, nil
	case len(b) != 8:
		return 0, fmt.Errorf("%w: patient counter of %d bytes", ErrCorrupt, len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

// commitGroup commits reqs as one group without the queue or the goroutine. It is for logs
// whose committer is not running.
func (l *Log) commitGroup(reqs []*request) {
	for _, r := range reqs {
		r.state.Store(reqTaken)
	}
	l.newCommitter().commitGroup(reqs)
}
