package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// The files of an export directory (docs/ACCESSLOG.md, "Export directory").
const (
	EntriesFile     = "entries.jsonl" // one canonical entry per line, each ending in '\n'
	CheckpointsDir  = "checkpoints"   // one signed checkpoint per file, named by its tree size
	VerifierKeyFile = "vkey"          // the log's note verifier key, one line
)

// ErrInvalid marks an export that fails verification. VerifyExport returns it as an *Error,
// which says where; every other error VerifyExport returns is about reading the export.
var ErrInvalid = errors.New("invalid access log")

// Error is a verification failure and its evidence: the first bad entry, or the bad checkpoint.
type Error struct {
	// Index is the first bad entry, or -1 when the failure is about a checkpoint only.
	Index int64
	// Checkpoint is the file name (tree size) of the checkpoint concerned, if any.
	Checkpoint string
	// Reason says what is wrong.
	Reason string
}

func (e *Error) Error() string {
	switch {
	case e.Index >= 0:
		return fmt.Sprintf("entry %d: %s", e.Index, e.Reason)
	case e.Checkpoint != "":
		return fmt.Sprintf("checkpoint %s: %s", e.Checkpoint, e.Reason)
	}
	return e.Reason
}

// Unwrap makes errors.Is(err, ErrInvalid) hold.
func (e *Error) Unwrap() error { return ErrInvalid }

// Options tune VerifyExport. The zero value verifies against DIR/vkey with one worker per CPU.
type Options struct {
	// VerifierKey is the log's note verifier key, "<name>+<hash>+<base64>"; it overrides
	// DIR/vkey. An auditor SHOULD take it from a source it trusts, such as the organisation's
	// DID document: the key inside an export shows only that the export agrees with itself.
	VerifierKey string
	// Workers is the number of goroutines that parse and hash entries; zero means
	// runtime.GOMAXPROCS(0). More workers than CPUs only adds scheduling.
	Workers int
	// Witnesses are the verifier keys of the witnesses whose cosignatures count (C2SP
	// tlog-cosignature, Ed25519, type 0x04; see NewCosignatureVerifier). Cosignature lines by
	// other keys, or that do not verify, are ignored. An auditor takes them from the same
	// trusted source as VerifierKey.
	Witnesses []string
	// MinCosignatures is how many distinct keys of Witnesses MUST cosign the latest checkpoint,
	// the one that covers the export; older checkpoints may have fewer, since witnesses see a
	// log some time after it signs. Zero checks no cosignature. It MUST NOT exceed the number of
	// distinct witness keys, a policy no export could meet.
	MinCosignatures int

	// batchSize is the bytes read per batch; zero means batchSize. Tests make it small so that
	// small logs span batches.
	batchSize int
}

// Report describes a valid export.
type Report struct {
	Origin      string     // the log's origin, the name of its key
	Entries     int64      // number of entries
	Checkpoints int        // number of checkpoints, each verified
	Patients    int        // number of distinct patient pseudonyms
	Latest      Checkpoint // the checkpoint that covers every entry
	// Cosignatures is the number of distinct keys of Options.Witnesses that validly cosign
	// Latest; zero when no witnesses are given.
	Cosignatures int
}

// Sizes of the reading pipeline. A batch holds about 3,500 typical entries; the bound on
// batches in flight bounds memory at batchBuffers × batchSize. A batch MUST be larger than a
// line of MaxEntrySize bytes and its newline.
const (
	batchSize    = 1 << 20
	batchBuffers = 8
)

// VerifyExport checks the export in dir as docs/ACCESSLOG.md, "What schakel log verify DIR
// checks", describes: every line a canonical version-1 entry of this log at its index; the
// hash chain; non-decreasing times; per-patient sequences 1, 2, 3, …; every checkpoint signed
// by the log key, about this log, with the root recomputed from the first Size entries; and a
// checkpoint that covers exactly the entries exported. With Options.MinCosignatures, the
// latest checkpoint MUST also be cosigned by that many distinct keys of Options.Witnesses;
// this is checked with the checkpoint files, before the entries.
//
// It streams entries.jsonl: one goroutine reads batches of lines, Options.Workers goroutines
// parse them and compute their hashes and the compact ranges of their Merkle subtrees, and the
// caller's goroutine checks what depends on order (index, chain, time, patient sequences) and
// joins the subtrees into the tree's frontier. Memory is bounded by the batches in flight, the
// checkpoints and one counter per patient.
//
// A failure of verification is an *Error (wrapping ErrInvalid) naming the first bad entry, or
// the checkpoint, and what is wrong; problems with checkpoint files come before entries. When
// entry j's prev does not match entry j−1, entry j+1 decides which of the two changed: if its
// prev matches entry j, entry j−1 is named, else entry j; without a valid entry j+1, entry j−1
// is named as the earlier suspect. A checkpoint whose root differs is reported unless an entry
// it covers is found bad first. Other errors mean the export could not be read.
func VerifyExport(ctx context.Context, dir string, opts Options) (*Report, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, err
	}
	key := opts.VerifierKey
	if key == "" {
		b, err := readFileLimited(filepath.Join(dir, VerifierKeyFile), 4<<10)
		if err != nil {
			return nil, fmt.Errorf("the log's verifier key: %w", err)
		}
		key = trimKey(b)
	}
	verifier, err := note.NewVerifier(key)
	if err != nil {
		return nil, fmt.Errorf("verifier key %q: %w", key, err)
	}
	witnesses, err := ParseWitnesses(opts.Witnesses)
	if err != nil {
		return nil, fmt.Errorf("witness key: %w", err)
	}
	if opts.MinCosignatures < 0 || opts.MinCosignatures > witnesses.Len() {
		return nil, fmt.Errorf("minimum of %d cosignatures: want 0 to %d, the number of distinct witness keys given", opts.MinCosignatures, witnesses.Len())
	}
	cps, err := loadCheckpoints(filepath.Join(dir, CheckpointsDir), verifier, witnesses, workers)
	if err != nil {
		return nil, err
	}
	if last := cps[len(cps)-1]; last.cosigned < opts.MinCosignatures {
		return nil, &Error{Index: -1, Checkpoint: last.name, Reason: fmt.Sprintf(
			"cosigned by %d of the %d witnesses given; the latest checkpoint needs at least %d", last.cosigned, witnesses.Len(), opts.MinCosignatures)}
	}
	f, err := os.Open(filepath.Join(dir, EntriesFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	origin, _ := json.Marshal(verifier.Name())
	v := &exportCheck{
		cps:       cps,
		sizes:     make([]int64, len(cps)),
		origin:    verifier.Name(),
		originRaw: origin[1 : len(origin)-1],
		last:      cps[len(cps)-1],
		pending:   -1,
		patients:  newPatientTable(),
	}
	for i, c := range cps {
		v.sizes[i] = c.Size
	}
	size := opts.batchSize
	if size == 0 {
		size = batchSize
	}
	if err := v.run(ctx, f, workers, max(size, MaxEntrySize+2)); err != nil {
		return nil, err
	}
	return &Report{
		Origin:       v.origin,
		Entries:      v.count,
		Checkpoints:  len(cps),
		Patients:     v.patients.count,
		Latest:       v.last.Checkpoint,
		Cosignatures: v.last.cosigned,
	}, nil
}

// namedCheckpoint is a verified checkpoint, the file it came from, and how many witnesses
// cosign it.
type namedCheckpoint struct {
	Checkpoint
	name     string
	cosigned int
}

// loadCheckpoints opens every file in dir as a checkpoint of the log verifier signs, in
// parallel, counts the witnesses that cosign each, and returns them by size. Problems with a
// checkpoint are an *Error about the smallest bad one; an export without checkpoints is
// invalid, because nothing vouches for it.
func loadCheckpoints(dir string, verifier note.Verifier, witnesses *Witnesses, workers int) ([]namedCheckpoint, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	// Canonical sizes sort numerically by length, then bytes.
	slices.SortFunc(des, func(a, b os.DirEntry) int {
		if d := len(a.Name()) - len(b.Name()); d != 0 {
			return d
		}
		return strings.Compare(a.Name(), b.Name())
	})
	cps := make([]namedCheckpoint, len(des))
	errs := make([]error, len(des))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(workers, len(des)) {
		wg.Go(func() {
			for i := range next {
				cps[i], errs[i] = loadCheckpoint(dir, des[i], verifier, witnesses)
			}
		})
	}
	for i := range des {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	if len(cps) == 0 {
		return nil, &Error{Index: -1, Reason: "no checkpoints in " + CheckpointsDir + "/: nothing vouches for the entries"}
	}
	return cps, nil
}

func loadCheckpoint(dir string, de os.DirEntry, verifier note.Verifier, witnesses *Witnesses) (namedCheckpoint, error) {
	name := de.Name()
	bad := func(format string, args ...any) (namedCheckpoint, error) {
		return namedCheckpoint{}, &Error{Index: -1, Checkpoint: name, Reason: fmt.Sprintf(format, args...)}
	}
	size, err := strconv.ParseInt(name, 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != name {
		return bad("file name is not a tree size")
	}
	if !de.Type().IsRegular() {
		return bad("not a regular file")
	}
	b, err := readFileLimited(filepath.Join(dir, name), MaxCheckpointSize)
	if err != nil {
		var tooLarge *tooLargeError
		if errors.As(err, &tooLarge) {
			return bad("larger than %d bytes", MaxCheckpointSize)
		}
		return namedCheckpoint{}, err
	}
	c, n, err := OpenCheckpointNote(b, verifier)
	if err != nil {
		return bad("%v", err)
	}
	if c.Size != size {
		return bad("file name says tree size %d, the checkpoint says %d", size, c.Size)
	}
	return namedCheckpoint{Checkpoint: c, name: name, cosigned: witnesses.Count(n.Text, n.UnverifiedSigs)}, nil
}

type tooLargeError struct{ limit int64 }

func (e *tooLargeError) Error() string { return fmt.Sprintf("larger than %d bytes", e.limit) }

func readFileLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: %w", path, &tooLargeError{limit})
	}
	return b, nil
}

// batch is a run of whole lines of entries.jsonl and what the workers found in them.
type batch struct {
	buf          []byte // backing storage, batchSize bytes
	data         []byte // the lines, each ending in '\n' except an unterminated last one
	start        int64  // index of the first line
	lines        int
	unterminated bool  // the last line has no '\n': the file ends mid-line
	tooLong      bool  // the line after these is longer than MaxEntrySize; reading stopped
	err          error // reading failed; reading stopped
	done         chan struct{}

	results []result
	ranges  []rangeHasher // compact ranges of the batch's leaves, cut at checkpoint sizes
	nranges int
}

// result is what a worker found in one line.
type result struct {
	err     error // the line is not a valid entry of this log on its own
	index   uint64
	prev    [32]byte
	sec     int64
	nsec    int32
	patient []byte    // raw pseudonym, a slice of the batch
	pkey    [2]uint64 // its key in exportCheck.patients, zero when there is no patient
	seq     uint64
	hash    [32]byte // SHA-256 of the line: what the next entry's prev must be
}

// exportCheck holds the state of one VerifyExport run.
type exportCheck struct {
	cps       []namedCheckpoint
	sizes     []int64
	origin    string
	originRaw []byte // the origin as it appears, escaped, in canonical entries
	last      namedCheckpoint

	// Ordered state, owned by the caller's goroutine.
	count    int64 // entries checked
	tree     frontier
	nextCP   int // first checkpoint not yet compared with the tree
	matched  int64
	lastHash [32]byte
	haveTime bool
	sec      int64
	nsec     int32
	pending  int64 // an entry whose prev broke the chain, until its successor decides who changed
	patients *patientTable
	touched  uint64 // what prefetching read, kept so that it is not optimised away

	best    *Error // the first failure found so far
	bestKey int64  // its position: 2×index for an entry, 2×(size−1)+1 for a checkpoint's root
}

// fail records a failure at key if it comes before every one recorded so far.
func (v *exportCheck) fail(key int64, e func() *Error) {
	if v.best == nil || key < v.bestKey {
		v.best, v.bestKey = e(), key
	}
}

func (v *exportCheck) failEntry(i int64, format string, args ...any) {
	v.fail(2*i, func() *Error { return &Error{Index: i, Reason: fmt.Sprintf(format, args...)} })
}

// settled reports whether no failure can come before the one recorded: a failure of entry i
// shows at the latest when entry i+2 is checked (a broken link at i+1 is resolved by i+2).
func (v *exportCheck) settled() bool {
	return v.best != nil && v.count > v.bestKey/2+2
}

func (v *exportCheck) run(ctx context.Context, r io.Reader, workers, size int) error {
	quit := make(chan struct{})
	pool := make(chan *batch, batchBuffers)
	work := make(chan *batch, batchBuffers)
	order := make(chan *batch, batchBuffers)
	for range batchBuffers {
		pool <- &batch{buf: make([]byte, size)}
	}
	var wg sync.WaitGroup
	wg.Go(func() { v.read(r, pool, work, order, quit) })
	for range workers {
		wg.Go(func() {
			var f fields
			for b := range work {
				v.process(b, &f)
				close(b.done)
			}
		})
	}
	defer wg.Wait()
	defer close(quit)

	v.checkRoots()
	for b := range order {
		select {
		case <-b.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if b.err != nil {
			return fmt.Errorf("read %s: %w", EntriesFile, b.err)
		}
		v.ordered(b)
		if b.tooLong {
			v.failEntry(v.count, "longer than %d bytes", MaxEntrySize)
			break
		}
		pool <- b
		if v.settled() {
			break
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	if !v.settled() {
		v.finish()
	}
	if v.best != nil {
		return v.best
	}
	return nil
}

// read fills batches with whole lines and hands them to the workers and, in order, to run.
func (v *exportCheck) read(r io.Reader, pool, work, order chan *batch, quit chan struct{}) {
	defer close(order)
	defer close(work)
	carry := make([]byte, 0, MaxEntrySize+1)
	var start int64
	for {
		var b *batch
		select {
		case b = <-pool:
		case <-quit:
			return
		}
		*b = batch{buf: b.buf, results: b.results, ranges: b.ranges, start: start, done: make(chan struct{})}
		n := copy(b.buf, carry)
		eof := false
		for n < len(b.buf) {
			m, err := r.Read(b.buf[n:])
			n += m
			if err == io.EOF {
				eof = true
				break
			}
			if err != nil {
				b.err = err
				close(b.done)
				order <- b
				return
			}
		}
		data := b.buf[:n]
		if eof && n == 0 {
			return
		}
		switch last := bytes.LastIndexByte(data, '\n'); {
		case eof:
			b.data = data
			b.unterminated = last != n-1
		case last < 0:
			b.tooLong = true // a full buffer without a newline
		default:
			b.data = data[:last+1]
			tail := data[last+1:]
			if len(tail) > MaxEntrySize {
				b.tooLong = true
			} else {
				carry = append(carry[:0], tail...)
			}
		}
		b.lines = bytes.Count(b.data, []byte{'\n'})
		if b.unterminated {
			b.lines++
		}
		start += int64(b.lines)
		if b.lines > 0 {
			work <- b
		} else {
			close(b.done)
		}
		order <- b
		if eof || b.tooLong {
			return
		}
	}
}

// process checks each line of b on its own and hashes it: SHA-256 for the chain, the RFC 6962
// leaf hash into the compact range of the batch's part of the tree, cut where a checkpoint ends.
func (v *exportCheck) process(b *batch, f *fields) {
	b.results = slices.Grow(b.results[:0], b.lines)[:b.lines]
	cut := len(v.sizes)
	if i, _ := slices.BinarySearch(v.sizes, b.start+1); i < len(v.sizes) {
		cut = i
	}
	b.nranges = 0
	rh := b.nextRange(b.start)
	data := b.data
	for k := range b.lines {
		i := b.start + int64(k)
		if cut < len(v.sizes) && v.sizes[cut] == i {
			rh = b.nextRange(i)
			cut++
		}
		line := data
		if nl := bytes.IndexByte(data, '\n'); nl >= 0 {
			line, data = data[:nl], data[nl+1:]
		}
		r := &b.results[k]
		r.hash = sha256.Sum256(line)
		rh.appendLeaf(tlog.RecordHash(line))
		switch err := scanEntry(line, f); {
		case b.unterminated && k == b.lines-1:
			r.err = errors.New("truncated: the file ends inside this line")
		case err != nil:
			r.err = err
		case !bytes.Equal(f.origin, v.originRaw):
			r.err = fmt.Errorf("origin %q is not the log's, %q", unquote(f.origin), v.origin)
		default:
			*r = result{index: f.index, prev: f.prevHash, sec: f.sec, nsec: f.nsec, patient: f.patient, seq: f.patientSeq, hash: r.hash}
			if len(f.patient) > 0 {
				r.pkey = v.patients.key(f.patient)
			}
		}
	}
}

func (b *batch) nextRange(begin int64) *rangeHasher {
	if b.nranges == len(b.ranges) {
		b.ranges = append(b.ranges, rangeHasher{})
	}
	rh := &b.ranges[b.nranges]
	b.nranges++
	rh.reset(begin)
	return rh
}

// ordered applies the checks that depend on the entries before: index, chain, time, patient
// sequence, coverage, and the roots of the checkpoints that end in this batch.
func (v *exportCheck) ordered(b *batch) {
	maxSize := v.last.Size
	// Load the batch's patient slots first: independent loads overlap their cache misses.
	for k := range b.lines {
		if r := &b.results[k]; r.err == nil && r.pkey[1] != 0 {
			v.touched += v.patients.touch(r.pkey)
		}
	}
	for k := range b.lines {
		i := b.start + int64(k)
		r := &b.results[k]
		ok := r.err == nil && r.index == uint64(i)
		if v.pending >= 0 && v.pending == i-1 {
			j := v.pending
			switch {
			case !ok:
				v.undecided(j)
			case r.prev == v.lastHash:
				v.failEntry(j-1, "changed after entry %d was appended: its hash is not entry %d's prev, and entry %d confirms entry %d", j, j, i, j)
			default:
				v.failEntry(j, "prev does not match the hash of entry %d", j-1)
			}
			v.pending = -1
		}
		switch {
		case i >= maxSize:
			v.failEntry(i, "not covered by any checkpoint (the latest, %s, covers entries 0 to %d)", v.last.name, maxSize-1)
		case r.err != nil:
			v.failEntry(i, "%v", r.err)
		case r.index != uint64(i):
			v.failEntry(i, "index %d at line %d: entries missing, added or out of order", r.index, i)
		default:
			if i > 0 && r.prev != v.lastHash && v.pending < 0 {
				v.pending = i
			}
			if v.haveTime && (r.sec < v.sec || r.sec == v.sec && r.nsec < v.nsec) {
				v.failEntry(i, "time goes backwards: before entry %d's", i-1)
			}
			v.haveTime, v.sec, v.nsec = true, r.sec, r.nsec
			if len(r.patient) > 0 {
				v.checkPatient(i, r)
			}
		}
		v.lastHash = r.hash
	}
	v.count += int64(b.lines)
	for _, rh := range b.ranges[:b.nranges] {
		for _, n := range rh.nodes {
			v.tree.appendNode(n)
		}
		v.checkRoots()
	}
}

func (v *exportCheck) checkPatient(i int64, r *result) {
	if last := v.patients.next(r.pkey, r.seq); r.seq != last+1 {
		v.failEntry(i, "patientSeq %d, want %d for patient %s", r.seq, last+1, unquote(r.patient))
	}
}

// checkRoots compares the checkpoints of the tree's current size with its root.
func (v *exportCheck) checkRoots() {
	for ; v.nextCP < len(v.cps) && v.cps[v.nextCP].Size == v.tree.size; v.nextCP++ {
		c := v.cps[v.nextCP]
		root := v.tree.root()
		if root == c.Root {
			v.matched = c.Size
			continue
		}
		v.fail(2*(c.Size-1)+1, func() *Error {
			where := ""
			if c.Size > 0 {
				where = fmt.Sprintf(" entries 0 to %d", c.Size-1)
				if v.matched > 0 {
					where += fmt.Sprintf(" (0 to %d match an earlier checkpoint)", v.matched-1)
				}
			} else {
				where = " the empty log"
			}
			return &Error{Index: -1, Checkpoint: c.name, Reason: fmt.Sprintf("root %s is not the root %s of%s",
				base64.StdEncoding.EncodeToString(c.Root[:]), base64.StdEncoding.EncodeToString(root[:]), where)}
		})
	}
}

// undecided reports a broken link into entry j that no valid successor resolves: either entry
// j−1 or entry j's prev was changed. It names the earlier of the two.
func (v *exportCheck) undecided(j int64) {
	v.failEntry(j-1, "its hash is not the prev of entry %d, and no valid entry follows to tell which of the two was changed", j)
}

// finish applies what only the end of the file decides: a broken last link, and truncation.
func (v *exportCheck) finish() {
	if v.pending >= 0 {
		v.undecided(v.pending)
	}
	if v.count < v.last.Size {
		n := v.count
		v.fail(2*n, func() *Error {
			return &Error{Index: n, Checkpoint: v.last.name, Reason: fmt.Sprintf("missing: the export ends after %d entries, but checkpoint %s covers %d (truncated)", n, v.last.name, v.last.Size)}
		})
	}
}
