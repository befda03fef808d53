package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"

	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

const (
	tamperEntries = 64
	tamperEvery   = 8
	smallBatch    = MaxEntrySize + 2 // about 27 test entries: a tamper log spans three batches
)

// tamperLog is the valid log the tampering tests start from.
func tamperLog(t testing.TB, mutate func(i int, e *Entry)) *testLog {
	return newTestLog(t, 1).build(tamperEntries, mutate)
}

func writeTamperLog(t testing.TB, mutate func(i int, e *Entry)) (*testLog, string) {
	l := tamperLog(t, mutate)
	dir := t.TempDir()
	l.write(dir, tamperEvery)
	return l, dir
}

func TestVerifyExportValid(t *testing.T) {
	l, dir := writeTamperLog(t, nil)
	patients := map[string]bool{}
	for _, line := range l.lines {
		e, err := ParseEntry(line)
		if err != nil {
			t.Fatalf("ParseEntry: %v", err)
		}
		if e.Patient != "" {
			patients[e.Patient] = true
		}
	}
	for _, workers := range []int{1, 2, 5} {
		for _, size := range []int{0, smallBatch} {
			t.Run("workers "+strconv.Itoa(workers)+" batch "+strconv.Itoa(size), func(t *testing.T) {
				rep, err := VerifyExport(t.Context(), dir, Options{Workers: workers, batchSize: size})
				if err != nil {
					t.Fatalf("VerifyExport: %v", err)
				}
				want := Report{
					Origin: testOrigin, Entries: tamperEntries, Checkpoints: tamperEntries / tamperEvery, Patients: len(patients),
					Latest: Checkpoint{Origin: testOrigin, Size: tamperEntries, Root: l.root(tamperEntries)},
				}
				if *rep != want {
					t.Fatalf("VerifyExport = %+v, want %+v", *rep, want)
				}
			})
		}
	}
}

func TestVerifyExportEdges(t *testing.T) {
	other, otherKey := testKey(t, "schakel.nl/log/other", 9)
	_ = other
	tests := []struct {
		name    string
		n       int
		sizes   []int64
		opts    func(l *testLog) Options
		prepare func(t *testing.T, l *testLog, dir string)
		want    string // "" valid; else the error's text must contain it
	}{
		{name: "empty log with its checkpoint", n: 0, sizes: []int64{0}},
		{name: "one entry", n: 1, sizes: []int64{1}},
		{name: "checkpoint at every size", n: 20, sizes: []int64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}},
		{name: "witness cosignature", n: 5, sizes: []int64{5}, prepare: func(t *testing.T, l *testLog, dir string) {
			w, _ := testKey(t, "witness.example/w1", 5)
			writeFile(t, filepath.Join(dir, CheckpointsDir, "5"), l.checkpoint(5, l.signer, w))
		}},
		{name: "key given, none in the export", n: 5, sizes: []int64{5},
			opts:    func(l *testLog) Options { return Options{VerifierKey: l.vkey} },
			prepare: func(t *testing.T, l *testLog, dir string) { os.Remove(filepath.Join(dir, VerifierKeyFile)) }},
		{name: "given key overrides the export's", n: 5, sizes: []int64{5},
			opts: func(l *testLog) Options { return Options{VerifierKey: otherKey} },
			want: "checkpoint 5: invalid checkpoint: not signed by the log key"},
		{name: "empty export without checkpoints", n: 0, sizes: nil, want: "no checkpoints"},
		{name: "entries without checkpoints", n: 3, sizes: nil, want: "no checkpoints"},
		{name: "empty log, empty tree root wrong", n: 0, sizes: nil, prepare: func(t *testing.T, l *testLog, dir string) {
			msg, _ := note.Sign(&note.Note{Text: string(FormatCheckpoint(l.origin, 0, [32]byte{}))}, l.signer)
			writeFile(t, filepath.Join(dir, CheckpointsDir, "0"), msg)
		}, want: "checkpoint 0: root AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= is not the root"},
		{name: "empty log, entry-less file, checkpoint of 2", n: 2, sizes: []int64{2}, prepare: func(t *testing.T, l *testLog, dir string) {
			writeFile(t, filepath.Join(dir, EntriesFile), nil)
		}, want: "entry 0: missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newTestLog(t, 1).build(tc.n, nil)
			dir := t.TempDir()
			l.writeSizes(dir, tc.sizes)
			if tc.prepare != nil {
				tc.prepare(t, l, dir)
			}
			var opts Options
			if tc.opts != nil {
				opts = tc.opts(l)
			}
			rep, err := VerifyExport(t.Context(), dir, opts)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("VerifyExport: %v", err)
				}
				if rep.Entries != int64(tc.n) || rep.Latest.Size != int64(tc.n) || rep.Latest.Root != l.root(int64(tc.n)) {
					t.Fatalf("VerifyExport = %+v", rep)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("VerifyExport = %+v, %v; want an invalid export, %q", rep, err, tc.want)
			}
		})
	}
}

// TestVerifyExportReadErrors: what cannot be read is an ordinary error, not ErrInvalid.
func TestVerifyExportReadErrors(t *testing.T) {
	l, good := writeTamperLog(t, nil)
	tests := []struct {
		name    string
		opts    Options
		prepare func(dir string)
	}{
		{"no directory", Options{}, func(dir string) { os.RemoveAll(dir) }},
		{"no entries file", Options{}, func(dir string) { os.Remove(filepath.Join(dir, EntriesFile)) }},
		{"no checkpoints directory", Options{}, func(dir string) { os.RemoveAll(filepath.Join(dir, CheckpointsDir)) }},
		{"no vkey", Options{}, func(dir string) { os.Remove(filepath.Join(dir, VerifierKeyFile)) }},
		{"malformed vkey", Options{}, func(dir string) { writeFile(t, filepath.Join(dir, VerifierKeyFile), []byte("not a key\n")) }},
		{"malformed given key", Options{VerifierKey: l.vkey + "x"}, nil},
		{"entries file is a directory", Options{}, func(dir string) {
			os.Remove(filepath.Join(dir, EntriesFile))
			os.Mkdir(filepath.Join(dir, EntriesFile), 0o755)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			copyDir(t, good, dir)
			if tc.prepare != nil {
				tc.prepare(dir)
			}
			rep, err := VerifyExport(t.Context(), dir, tc.opts)
			if err == nil || errors.Is(err, ErrInvalid) {
				t.Fatalf("VerifyExport = %+v, %v; want a read error", rep, err)
			}
		})
	}
}

func TestVerifyExportCancelled(t *testing.T) {
	_, dir := writeTamperLog(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := VerifyExport(ctx, dir, Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("VerifyExport(cancelled) = %v, want context.Canceled", err)
	}
}

// lineStart returns the byte offset of line k in the entries file of l.
func lineStart(l *testLog, k int) int {
	off := 0
	for _, b := range l.lines[:k] {
		off += len(b) + 1
	}
	return off
}

// TestVerifyExportTampered: each kind of tampering is caught, at the first bad entry or at the
// checkpoint concerned. Cases that need a chain or checkpoints consistent with the tampering
// rebuild the log with the log's own key: the forger holds it.
func TestVerifyExportTampered(t *testing.T) {
	base, good := writeTamperLog(t, nil)
	stranger, _ := testKey(t, testOrigin, 2) // another key under the log's name
	entries := func(dir string) string { return filepath.Join(dir, EntriesFile) }
	cp := func(dir string, size int) string { return filepath.Join(dir, CheckpointsDir, strconv.Itoa(size)) }
	editLines := func(t *testing.T, dir string, edit func(lines [][]byte) [][]byte) {
		b := readFile(t, entries(dir))
		lines := bytes.SplitAfter(b, []byte("\n"))
		writeFile(t, entries(dir), bytes.Join(edit(lines[:len(lines)-1]), nil))
	}
	// rebuild replaces the entries by a log built with mutate, keeping the original checkpoints
	// unless resign is set, in which case the log's key signs checkpoints of the new entries.
	rebuild := func(t *testing.T, dir string, mutate func(i int, e *Entry), resign bool) {
		l := tamperLog(t, mutate)
		fresh := t.TempDir()
		l.write(fresh, tamperEvery)
		writeFile(t, entries(dir), readFile(t, entries(fresh)))
		if resign {
			os.RemoveAll(filepath.Join(dir, CheckpointsDir))
			copyDir(t, filepath.Join(fresh, CheckpointsDir), filepath.Join(dir, CheckpointsDir))
		}
	}
	const k = 29 // an entry in the middle of the second batch

	tests := []struct {
		name           string
		tamper         func(t *testing.T, dir string)
		wantIndex      int64  // -1: about a checkpoint
		wantCheckpoint string // with wantIndex -1
		wantReason     string
	}{
		{"deleted line", func(t *testing.T, dir string) {
			editLines(t, dir, func(ls [][]byte) [][]byte { return append(ls[:k:k], ls[k+1:]...) })
		}, k, "", "index 30 at line 29"},
		{"deleted first line", func(t *testing.T, dir string) {
			editLines(t, dir, func(ls [][]byte) [][]byte { return ls[1:] })
		}, 0, "", "index 1 at line 0"},
		{"swapped lines", func(t *testing.T, dir string) {
			editLines(t, dir, func(ls [][]byte) [][]byte { ls[k], ls[k+1] = ls[k+1], ls[k]; return ls })
		}, k, "", "index 30 at line 29"},
		{"duplicated line", func(t *testing.T, dir string) {
			editLines(t, dir, func(ls [][]byte) [][]byte { return append(ls[:k+1:k+1], ls[k:]...) })
		}, k + 1, "", "index 29 at line 30"},
		{"truncated after a line", func(t *testing.T, dir string) {
			editLines(t, dir, func(ls [][]byte) [][]byte { return ls[:61] })
		}, 61, "64", "missing: the export ends after 61 entries, but checkpoint 64 covers 64 (truncated)"},
		{"truncated to nothing", func(t *testing.T, dir string) {
			writeFile(t, entries(dir), nil)
		}, 0, "64", "missing"},
		{"truncated inside the last line", func(t *testing.T, dir string) {
			b := readFile(t, entries(dir))
			writeFile(t, entries(dir), b[:len(b)-20])
		}, 63, "", "truncated: the file ends inside this line"},
		{"truncated inside a line", func(t *testing.T, dir string) {
			writeFile(t, entries(dir), readFile(t, entries(dir))[:lineStart(base, k)+100])
		}, k, "", "truncated"},
		{"newline missing at the end", func(t *testing.T, dir string) {
			b := readFile(t, entries(dir))
			writeFile(t, entries(dir), b[:len(b)-1])
		}, 63, "", "truncated"},
		{"appended forged entry", func(t *testing.T, dir string) {
			l := tamperLog(t, nil)
			b := l.add(l.next(tamperEntries), nil)
			writeFile(t, entries(dir), append(readFile(t, entries(dir)), append(b, '\n')...))
		}, 64, "", "not covered by any checkpoint (the latest, 64, covers entries 0 to 63)"},
		{"appended entry with a checkpoint by another key", func(t *testing.T, dir string) {
			l := tamperLog(t, nil)
			b := l.add(l.next(tamperEntries), nil)
			writeFile(t, entries(dir), append(readFile(t, entries(dir)), append(b, '\n')...))
			writeFile(t, cp(dir, 65), l.checkpoint(65, stranger))
		}, -1, "65", "not signed by the log key"},
		{"appended empty line", func(t *testing.T, dir string) {
			writeFile(t, entries(dir), append(readFile(t, entries(dir)), '\n'))
		}, 64, "", "not covered"},
		{"checkpoint re-signed by another key", func(t *testing.T, dir string) {
			writeFile(t, cp(dir, 16), base.checkpoint(16, stranger))
		}, -1, "16", "not signed by the log key"},
		{"checkpoint signature corrupted", func(t *testing.T, dir string) {
			b := readFile(t, cp(dir, 16))
			b[len(b)-5] ^= 1
			writeFile(t, cp(dir, 16), b)
		}, -1, "16", "invalid checkpoint"},
		{"checkpoint with a wrong root", func(t *testing.T, dir string) {
			msg, _ := note.Sign(&note.Note{Text: string(FormatCheckpoint(testOrigin, 16, base.root(15)))}, base.signer)
			writeFile(t, cp(dir, 16), msg)
		}, -1, "16", "is not the root " + b64(base.root(16)) + " of entries 0 to 15 (0 to 7 match an earlier checkpoint)"},
		{"checkpoint of another log", func(t *testing.T, dir string) {
			msg, _ := note.Sign(&note.Note{Text: string(FormatCheckpoint("schakel.nl/log/other", 16, base.root(16)))}, base.signer)
			writeFile(t, cp(dir, 16), msg)
		}, -1, "16", `origin "schakel.nl/log/other" is not the log key's name`},
		{"checkpoint file renamed", func(t *testing.T, dir string) {
			os.Rename(cp(dir, 16), cp(dir, 17))
		}, -1, "17", "file name says tree size 17, the checkpoint says 16"},
		{"checkpoint name with a leading zero", func(t *testing.T, dir string) {
			os.Rename(cp(dir, 16), filepath.Join(dir, CheckpointsDir, "016"))
		}, -1, "016", "file name is not a tree size"},
		{"stray file among checkpoints", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, CheckpointsDir, "README"), []byte("hi\n"))
		}, -1, "README", "file name is not a tree size"},
		{"directory among checkpoints", func(t *testing.T, dir string) {
			os.Mkdir(cp(dir, 65), 0o755)
		}, -1, "65", "not a regular file"},
		{"latest checkpoint removed", func(t *testing.T, dir string) {
			os.Remove(cp(dir, 64))
		}, 56, "", "not covered by any checkpoint (the latest, 56, covers entries 0 to 55)"},
		{"duplicated patientSeq", func(t *testing.T, dir string) {
			rebuild(t, dir, func(i int, e *Entry) {
				if i == k {
					e.PatientSeq--
				}
			}, true)
		}, k, "", "patientSeq"},
		{"gap in patientSeq", func(t *testing.T, dir string) {
			rebuild(t, dir, func(i int, e *Entry) {
				if i == k {
					e.PatientSeq++
				}
			}, true)
		}, k, "", "patientSeq"},
		{"patient's first entry not 1", func(t *testing.T, dir string) {
			rebuild(t, dir, func(i int, e *Entry) {
				if i == 0 {
					e.PatientSeq = 2
				}
			}, true)
		}, 0, "", "patientSeq 2, want 1"},
		{"time going backwards", func(t *testing.T, dir string) {
			rebuild(t, dir, func(i int, e *Entry) {
				if i == k {
					e.Time = "2026-11-23T09:59:59.900000000Z"
				}
			}, true)
		}, k, "", "time goes backwards: before entry 28's"},
		{"entry of another log", func(t *testing.T, dir string) {
			rebuild(t, dir, func(i int, e *Entry) {
				if i == k {
					e.Origin = "schakel.nl/log/other"
				}
			}, true)
		}, k, "", `origin "schakel.nl/log/other" is not the log's`},
		{"wrong index, chained and signed", func(t *testing.T, dir string) {
			rebuild(t, dir, func(i int, e *Entry) {
				if i == k {
					e.Index++
				}
			}, true)
		}, k, "", "index 30 at line 29"},
		{"prev of the wrong entry, signed", func(t *testing.T, dir string) {
			rebuild(t, dir, func(i int, e *Entry) {
				if i == k {
					e.Prev = base64.StdEncoding.EncodeToString(sha256.New().Sum(nil))
				}
			}, true)
		}, k - 1, "", "changed after entry 29 was appended"},
		{"non-canonical white space", func(t *testing.T, dir string) {
			editLines(t, dir, func(ls [][]byte) [][]byte {
				ls[k] = mustReplace(t, ls[k], `"v":1,`, `"v": 1,`)
				return ls
			})
		}, k, "", "not canonical"},
		{"CRLF line ends", func(t *testing.T, dir string) {
			writeFile(t, entries(dir), bytes.ReplaceAll(readFile(t, entries(dir)), []byte("\n"), []byte("\r\n")))
		}, 0, "", "trailing bytes"},
		{"content changed, still canonical", func(t *testing.T, dir string) {
			editLines(t, dir, func(ls [][]byte) [][]byte {
				ls[k] = mustReplace(t, ls[k], `"action":"`, `"action":"x`)
				return ls
			})
		}, k, "", "changed after entry 30 was appended: its hash is not entry 30's prev, and entry 31 confirms entry 30"},
		{"last link broken", func(t *testing.T, dir string) {
			editLines(t, dir, func(ls [][]byte) [][]byte {
				ls[62] = mustReplace(t, ls[62], `"action":"`, `"action":"x`)
				return ls
			})
		}, 62, "", "its hash is not the prev of entry 63, and no valid entry follows to tell which of the two was changed"},
		{"prev changed", func(t *testing.T, dir string) {
			editLines(t, dir, func(ls [][]byte) [][]byte {
				e, _ := ParseEntry(bytes.TrimSuffix(ls[k], []byte("\n")))
				e.Prev = base64.StdEncoding.EncodeToString(sha256.New().Sum(nil))
				b, _ := e.Marshal()
				ls[k] = append(b, '\n')
				return ls
			})
		}, k, "", "prev does not match the hash of entry 28"},
		{"last entry changed, still canonical", func(t *testing.T, dir string) {
			editLines(t, dir, func(ls [][]byte) [][]byte {
				ls[63] = mustReplace(t, ls[63], `"action":"`, `"action":"x`)
				return ls
			})
		}, -1, "64", "of entries 0 to 63 (0 to 55 match an earlier checkpoint)"},
		{"log rewritten from an entry on", func(t *testing.T, dir string) {
			rebuild(t, dir, func(i int, e *Entry) {
				if i == k {
					e.Action = "rewritten"
				}
			}, false)
		}, -1, "32", "of entries 0 to 31 (0 to 23 match an earlier checkpoint)"},
		{"line longer than an entry may be", func(t *testing.T, dir string) {
			editLines(t, dir, func(ls [][]byte) [][]byte {
				ls[k] = append(bytes.Repeat([]byte("x"), MaxEntrySize+1), '\n')
				return ls
			})
		}, k, "", "too large"},
		{"line longer than a batch", func(t *testing.T, dir string) {
			editLines(t, dir, func(ls [][]byte) [][]byte {
				ls[k] = append(bytes.Repeat([]byte("x"), 3*batchSize), '\n')
				return ls
			})
		}, k, "", "longer than 8192 bytes"},
		{"unterminated giant last line", func(t *testing.T, dir string) {
			editLines(t, dir, func(ls [][]byte) [][]byte {
				return append(ls[:k:k], bytes.Repeat([]byte("x"), 3*batchSize))
			})
		}, k, "", "longer than 8192 bytes"},
	}
	for _, tc := range tests {
		for _, size := range []int{0, smallBatch} {
			t.Run(tc.name+"/batch "+strconv.Itoa(size), func(t *testing.T) {
				dir := t.TempDir()
				copyDir(t, good, dir)
				tc.tamper(t, dir)
				rep, err := VerifyExport(t.Context(), dir, Options{batchSize: size})
				var e *Error
				if !errors.As(err, &e) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("VerifyExport = %+v, %v; want *Error", rep, err)
				}
				if e.Index != tc.wantIndex || (tc.wantIndex < 0 && e.Checkpoint != tc.wantCheckpoint) || !strings.Contains(e.Reason, tc.wantReason) {
					t.Fatalf("VerifyExport: %v (index %d, checkpoint %q); want index %d, checkpoint %q, reason containing %q",
						err, e.Index, e.Checkpoint, tc.wantIndex, tc.wantCheckpoint, tc.wantReason)
				}
			})
		}
	}
}

func mustReplace(t *testing.T, b []byte, old, new string) []byte {
	t.Helper()
	if !bytes.Contains(b, []byte(old)) {
		t.Fatalf("%s lacks %q", b, old)
	}
	return bytes.Replace(b, []byte(old), []byte(new), 1)
}

func b64(h [32]byte) string { return base64.StdEncoding.EncodeToString(h[:]) }

// TestVerifyExportByteChanges changes single bytes of a valid export's entries: every change
// is caught at the entry that holds the byte. A change to the last entry that keeps it a valid
// entry has no successor to pin it down: it is caught at the checkpoint that covers it, or, when
// it changed the prev, at the broken link that names both entries.
func TestVerifyExportByteChanges(t *testing.T) {
	base, good := writeTamperLog(t, nil)
	orig := readFile(t, filepath.Join(good, EntriesFile))
	lineOf := func(pos int) int {
		return bytes.Count(orig[:pos], []byte("\n"))
	}
	dir := t.TempDir()
	copyDir(t, good, dir)
	path := filepath.Join(dir, EntriesFile)
	step := 29 // prime, so positions drift through the fields of successive lines
	if testing.Short() {
		step = 101
	}
	caught := map[string]int{}
	for pos := 0; pos < len(orig); pos += step {
		for _, c := range []byte{orig[pos] ^ 0x01, '\n', '"'} {
			if c == orig[pos] {
				continue
			}
			b := bytes.Clone(orig)
			b[pos] = c
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			rep, err := VerifyExport(t.Context(), dir, Options{batchSize: smallBatch})
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("VerifyExport with byte %d (line %d) %q→%q = %+v, %v; want *Error", pos, lineOf(pos), orig[pos], c, rep, err)
			}
			k := int64(lineOf(pos))
			last := k == tamperEntries-1
			switch {
			case e.Index == k:
				caught["at the entry"]++
			case last && e.Index < 0 && e.Checkpoint == strconv.Itoa(tamperEntries):
				caught["at the last checkpoint"]++
			case last && e.Index == k-1 && strings.Contains(e.Reason, "no valid entry follows"):
				caught["at the last link"]++
			default:
				t.Fatalf("VerifyExport with byte %d of line %d %q→%q: %v; want entry %d", pos, k, orig[pos], c, err, k)
			}
		}
	}
	if caught["at the entry"] == 0 {
		t.Fatalf("no change tried")
	}
	t.Logf("changes caught: %v (%d entries, %d bytes)", caught, len(base.lines), len(orig))
}

// FuzzVerifyExport verifies fuzzed entries.jsonl against the checkpoints of testdata/export-v1:
// no panic, never a read error, and nothing but the original entries verifies.
func FuzzVerifyExport(f *testing.F) {
	orig, err := os.ReadFile(filepath.Join(vectorDir, EntriesFile))
	if err != nil {
		f.Fatal(err)
	}
	lines := bytes.SplitAfter(orig, []byte("\n"))
	f.Add(orig)
	f.Add(orig[:len(orig)-1])
	f.Add(bytes.Join(lines[1:], nil))
	f.Add(bytes.Join(append(lines[:3:3], lines[4:]...), nil))
	f.Add([]byte{})
	f.Add([]byte("\n"))
	f.Fuzz(func(t *testing.T, entries []byte) {
		dir := t.TempDir()
		copyDir(t, vectorDir, dir)
		writeFile(t, filepath.Join(dir, EntriesFile), entries)
		rep, err := VerifyExport(t.Context(), dir, Options{batchSize: smallBatch})
		if bytes.Equal(entries, orig) {
			if err != nil {
				t.Fatalf("VerifyExport(original entries): %v", err)
			}
			return
		}
		var e *Error
		if !errors.As(err, &e) || !errors.Is(err, ErrInvalid) {
			t.Fatalf("VerifyExport(%q) = %+v, %v; want an *Error", entries, rep, err)
		}
		if e.Index < -1 || e.Index > int64(bytes.Count(entries, []byte("\n")))+1 || e.Reason == "" {
			t.Fatalf("VerifyExport(%q): implausible %+v", entries, e)
		}
	})
}
