package verify

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// testCosigner makes cosignature/v1 signatures at a fixed time with a key derived from seed.
// With claim set, it puts that key hash on its lines instead of its own: a forger's lines.
type testCosigner struct {
	name  string
	priv  ed25519.PrivateKey
	t     uint64
	claim uint32
}

func newTestCosigner(name string, seed uint64, t uint64) *testCosigner {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	return &testCosigner{name: name, priv: ed25519.NewKeyFromSeed(s[:]), t: t}
}

func (c *testCosigner) pub() ed25519.PublicKey { return c.priv.Public().(ed25519.PublicKey) }
func (c *testCosigner) Name() string           { return c.name }
func (c *testCosigner) KeyHash() uint32 {
	if c.claim != 0 {
		return c.claim
	}
	return CosignatureKeyHash(c.name, c.pub())
}
func (c *testCosigner) Sign(msg []byte) ([]byte, error) {
	sig := ed25519.Sign(c.priv, CosignatureMessage(int64(c.t&math.MaxInt64), msg))
	return append(binary.BigEndian.AppendUint64(nil, c.t), sig...), nil
}

func (c *testCosigner) vkey(t testing.TB) string {
	t.Helper()
	k, err := CosignatureVerifierKey(c.name, c.pub())
	if err != nil {
		t.Fatalf("CosignatureVerifierKey: %v", err)
	}
	return k
}

// TestCosignatureVector checks the known-answer vector in testdata/cosignature-v1, computed from
// the C2SP text by another implementation: the verifier key, the signed message and the
// signature layout.
func TestCosignatureVector(t *testing.T) {
	dir := "testdata/cosignature-v1"
	msg := readFile(t, filepath.Join(dir, "note"))
	vkey := strings.TrimSuffix(string(readFile(t, filepath.Join(dir, "vkey"))), "\n")

	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	got, err := CosignatureVerifierKey("witness.example/w1", priv.Public().(ed25519.PublicKey))
	if err != nil || got != vkey {
		t.Fatalf("CosignatureVerifierKey = %q, %v; want %q", got, err, vkey)
	}

	v, err := NewCosignatureVerifier(vkey)
	if err != nil {
		t.Fatalf("NewCosignatureVerifier(%q): %v", vkey, err)
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		t.Fatalf("note.Open: %v", err)
	}
	ts, err := CosignatureTime(n.Sigs[0])
	if want := time.Unix(1679315147, 0).UTC(); err != nil || !ts.Equal(want) {
		t.Fatalf("CosignatureTime = %v, %v; want %v", ts, err, want)
	}

	// The message, spelled out as the specification's example shows it.
	want := "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
	if m := CosignatureMessage(1679315147, []byte(n.Text)); string(m) != want {
		t.Fatalf("CosignatureMessage = %q, want %q", m, want)
	}
	raw, _ := base64.StdEncoding.DecodeString(n.Sigs[0].Base64)
	if !ed25519.Verify(priv.Public().(ed25519.PublicKey), []byte(want), raw[12:]) {
		t.Fatal("the vector's signature does not verify over the spelled-out message")
	}

	// Signing again reproduces the vector byte for byte (Ed25519 is deterministic).
	c := &testCosigner{name: "witness.example/w1", priv: priv, t: 1679315147}
	again, err := note.Sign(&note.Note{Text: n.Text}, c)
	if err != nil || !bytes.Equal(again, msg) {
		t.Fatalf("note.Sign = %q, %v; want %q", again, err, msg)
	}
}

// TestCosignatureSpecExample reads the timestamp of the cosignature in the C2SP
// tlog-cosignature example, whose signed message says "time 1679315147".
func TestCosignatureSpecExample(t *testing.T) {
	sig := note.Signature{Name: "witness.example.com/w1", Hash: 0x8d66cf3f,
		Base64: "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA=="}
	ts, err := CosignatureTime(sig)
	if err != nil || ts.Unix() != 1679315147 {
		t.Fatalf("CosignatureTime = %v, %v; want Unix time 1679315147", ts, err)
	}
	sig.Hash++
	if _, err := CosignatureTime(sig); !errors.Is(err, ErrCosignature) {
		t.Fatalf("CosignatureTime with a key hash that is not the line's: %v, want ErrCosignature", err)
	}
}

func TestNewCosignatureVerifierInvalid(t *testing.T) {
	c := newTestCosigner("witness.example/w1", 1, 1)
	good := c.vkey(t)
	name, rest, _ := strings.Cut(good, "+")
	hash, key, _ := strings.Cut(rest, "+")
	raw, _ := base64.StdEncoding.DecodeString(key)
	_, plainKey, err := note.GenerateKey(rand.NewChaCha8([32]byte{}), "witness.example/w1")
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	tests := []struct{ name, vkey string }{
		{"empty", ""},
		{"no key", name + "+" + hash},
		{"plain Ed25519 note key (type 0x01)", plainKey},
		{"wrong key hash", name + "+00000000+" + key},
		{"upper-case key hash", name + "+" + strings.ToUpper(hash) + "+" + key},
		{"other name", "witness.example/w2+" + hash + "+" + key},
		{"name with a space", "witness example+" + hash + "+" + key},
		{"key with a line break", name + "+" + hash + "+" + key[:20] + "\n" + key[20:]},
		{"key not base64", name + "+" + hash + "+" + key[:43] + "!"},
		{"key too short", name + "+" + hash + "+" + base64.StdEncoding.EncodeToString(raw[:32])},
		{"key too long", name + "+" + hash + "+" + base64.StdEncoding.EncodeToString(append(raw, 0))},
		{"too long", strings.Repeat("w", 2000) + "+" + hash + "+" + key},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewCosignatureVerifier(tc.vkey); !errors.Is(err, ErrCosignature) {
				t.Fatalf("NewCosignatureVerifier(%q): %v, want ErrCosignature", tc.vkey, err)
			}
		})
	}
	if _, err := NewCosignatureVerifier(good); err != nil {
		t.Fatalf("NewCosignatureVerifier(%q): %v", good, err)
	}
}

func TestCosignatureVerify(t *testing.T) {
	c := newTestCosigner("witness.example/w1", 1, 1_800_000_000)
	v, err := NewCosignatureVerifier(c.vkey(t))
	if err != nil {
		t.Fatalf("NewCosignatureVerifier: %v", err)
	}
	body := []byte(FormatCheckpoint(testOrigin, 5, [32]byte{1}))
	sig, _ := c.Sign(body)
	flip := func(b []byte, i int) []byte { b = bytes.Clone(b); b[i] ^= 1; return b }
	tests := []struct {
		name      string
		msg, sig  []byte
		wantValid bool
	}{
		{"valid", body, sig, true},
		{"other body", FormatCheckpoint(testOrigin, 6, [32]byte{1}), sig, false},
		{"timestamp changed", body, flip(sig, 7), false},
		{"signature changed", body, flip(sig, 40), false},
		{"no timestamp", body, sig[8:], false},
		{"truncated", body, sig[:71], false},
		{"trailing byte", body, append(bytes.Clone(sig), 0), false},
		{"empty", body, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := v.Verify(tc.msg, tc.sig); got != tc.wantValid {
				t.Fatalf("Verify = %v, want %v", got, tc.wantValid)
			}
		})
	}

	// A timestamp above 2^63−1 is refused even with a valid signature over its decimal form.
	big := uint64(math.MaxInt64) + 1
	m := append([]byte("cosignature/v1\ntime 9223372036854775808\n"), body...)
	over := append(binary.BigEndian.AppendUint64(nil, big), ed25519.Sign(c.priv, m)...)
	if v.Verify(body, over) {
		t.Fatal("Verify accepted a timestamp above 2^63-1")
	}
}

// signWith returns the checkpoint of the test log's first n entries signed by the log and then
// by each cosigner.
func cosignedCheckpoint(t testing.TB, l *testLog, n int64, cosigners ...note.Signer) []byte {
	t.Helper()
	return l.checkpoint(n, append([]note.Signer{l.signer}, cosigners...)...)
}

// appendLines adds the signature lines of other (after its blank line) to msg.
func appendLines(msg, other []byte) []byte {
	_, lines, _ := bytes.Cut(other, []byte("\n\n"))
	return append(bytes.Clone(msg), lines...)
}

func TestWitnessesCount(t *testing.T) {
	l := newTestLog(t, 1).build(8, nil)
	w1 := newTestCosigner("witness.example/w1", 1, 1_800_000_000)
	w1later := newTestCosigner("witness.example/w1", 1, 1_800_000_100)
	w1renamed := newTestCosigner("witness.example/w1-again", 1, 1_800_000_000)
	w2 := newTestCosigner("witness.example/w2", 2, 1_800_000_000)
	w3 := newTestCosigner("witness.example/w3", 3, 1_800_000_000)
	// Lines with w2's name and key hash: signed with w3's key, or random bytes.
	forged := &testCosigner{name: w2.name, priv: w3.priv, t: w2.t, claim: w2.KeyHash()}
	forgedHash := func(msg []byte) []byte {
		raw := binary.BigEndian.AppendUint32(nil, w2.KeyHash())
		raw = append(raw, bytes.Repeat([]byte{7}, cosignatureSize)...)
		return append(bytes.Clone(msg), "— "+w2.name+" "+base64.StdEncoding.EncodeToString(raw)+"\n"...)
	}
	keys := []string{w1.vkey(t), w2.vkey(t)}

	tests := []struct {
		name string
		keys []string
		msg  []byte
		want int
	}{
		{"none", keys, cosignedCheckpoint(t, l, 8), 0},
		{"one", keys, cosignedCheckpoint(t, l, 8, w1), 1},
		{"two", keys, cosignedCheckpoint(t, l, 8, w1, w2), 2},
		{"one key, two lines", keys, appendLines(cosignedCheckpoint(t, l, 8, w1), cosignedCheckpoint(t, l, 8, w1later)), 1},
		{"one key under two names", append(keys, w1renamed.vkey(t)), cosignedCheckpoint(t, l, 8, w1, w1renamed), 1},
		{"unknown witness ignored", keys, cosignedCheckpoint(t, l, 8, w1, w3), 1},
		{"forged line not counted", keys, cosignedCheckpoint(t, l, 8, w1, forged), 1},
		{"random bytes not counted", keys, forgedHash(cosignedCheckpoint(t, l, 8, w1)), 1},
		{"line of another body not counted", keys, appendLines(cosignedCheckpoint(t, l, 8, w1), cosignedCheckpoint(t, l, 7, w2)), 1},
		{"no witnesses", nil, cosignedCheckpoint(t, l, 8, w1, w2), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ws, err := ParseWitnesses(tc.keys)
			if err != nil {
				t.Fatalf("ParseWitnesses: %v", err)
			}
			v, _ := note.NewVerifier(l.vkey)
			_, n, err := OpenCheckpointNote(tc.msg, v)
			if err != nil {
				t.Fatalf("OpenCheckpointNote: %v", err)
			}
			if got := ws.Count(n.Text, n.UnverifiedSigs); got != tc.want {
				t.Fatalf("Count = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestParseWitnesses(t *testing.T) {
	w1 := newTestCosigner("witness.example/w1", 1, 0)
	w1again := newTestCosigner("witness.example/w1-again", 1, 0)
	w2 := newTestCosigner("witness.example/w2", 2, 0)
	ws, err := ParseWitnesses([]string{w1.vkey(t), w2.vkey(t), w1.vkey(t), w1again.vkey(t)})
	if err != nil {
		t.Fatalf("ParseWitnesses: %v", err)
	}
	if ws.Len() != 2 {
		t.Fatalf("Len = %d, want 2 distinct keys", ws.Len())
	}
	if _, err := ParseWitnesses([]string{w1.vkey(t), "nonsense"}); !errors.Is(err, ErrCosignature) {
		t.Fatalf("ParseWitnesses with a bad key: %v, want ErrCosignature", err)
	}
}

func TestVerifyExportCosignatures(t *testing.T) {
	w1 := newTestCosigner("witness.example/w1", 1, 1_800_000_000)
	w2 := newTestCosigner("witness.example/w2", 2, 1_800_000_000)
	w3 := newTestCosigner("witness.example/w3", 3, 1_800_000_000)
	forged := &testCosigner{name: w2.name, priv: w3.priv, t: w2.t, claim: w2.KeyHash()}
	keys := []string{w1.vkey(t), w2.vkey(t)}
	const n = 16

	tests := []struct {
		name      string
		latest    []note.Signer // cosigners of the latest checkpoint
		keys      []string
		min       int
		want      string // "" valid; else the error's text must contain it
		wantCount int
		invalid   bool // the error is an *Error (exit 1), not a usage error (exit 2)
	}{
		{name: "no policy, cosignatures ignored", latest: []note.Signer{w1}},
		{name: "counted without a minimum", latest: []note.Signer{w1, w2}, keys: keys, wantCount: 2},
		{name: "minimum met", latest: []note.Signer{w1, w2}, keys: keys, min: 2, wantCount: 2},
		{name: "minimum met, unknown witness ignored", latest: []note.Signer{w3, w1}, keys: keys, min: 1, wantCount: 1},
		{name: "minimum missed", latest: []note.Signer{w1}, keys: keys, min: 2, invalid: true,
			want: "checkpoint 16: cosigned by 1 of the 2 witnesses given; the latest checkpoint needs at least 2"},
		{name: "forged cosignature not counted", latest: []note.Signer{w1, forged}, keys: keys, min: 2, invalid: true,
			want: "cosigned by 1 of the 2"},
		{name: "uncosigned", keys: keys, min: 1, invalid: true, want: "cosigned by 0 of the 2"},
		{name: "minimum above the witnesses", latest: []note.Signer{w1, w2}, keys: keys, min: 3, want: "minimum of 3 cosignatures: want 0 to 2"},
		{name: "negative minimum", keys: keys, min: -1, want: "minimum of -1 cosignatures"},
		{name: "malformed witness key", keys: []string{"witness.example/w1+00+AA=="}, want: "witness key: invalid cosigner key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newTestLog(t, 1).build(n, nil)
			dir := t.TempDir()
			l.writeSizes(dir, []int64{8, n})
			writeFile(t, filepath.Join(dir, CheckpointsDir, "16"), cosignedCheckpoint(t, l, n, tc.latest...))
			rep, err := VerifyExport(t.Context(), dir, Options{Witnesses: tc.keys, MinCosignatures: tc.min})
			if tc.want == "" {
				if err != nil {
					t.Fatalf("VerifyExport: %v", err)
				}
				if rep.Cosignatures != tc.wantCount || rep.Entries != n {
					t.Fatalf("VerifyExport = %+v, want %d cosignatures", rep, tc.wantCount)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("VerifyExport: %v, want an error containing %q", err, tc.want)
			}
			if errors.Is(err, ErrInvalid) != tc.invalid {
				t.Fatalf("VerifyExport: errors.Is(%v, ErrInvalid) = %v, want %v", err, !tc.invalid, tc.invalid)
			}
		})
	}
}

// TestVerifyExportOlderCheckpointsUncosigned shows that only the latest checkpoint must meet
// the minimum.
func TestVerifyExportOlderCheckpointsUncosigned(t *testing.T) {
	l := newTestLog(t, 1).build(16, nil)
	w1 := newTestCosigner("witness.example/w1", 1, 1_800_000_000)
	dir := t.TempDir()
	l.writeSizes(dir, []int64{4, 8, 16})
	writeFile(t, filepath.Join(dir, CheckpointsDir, "16"), cosignedCheckpoint(t, l, 16, w1))
	rep, err := VerifyExport(t.Context(), dir, Options{Witnesses: []string{w1.vkey(t)}, MinCosignatures: 1})
	if err != nil || rep.Cosignatures != 1 {
		t.Fatalf("VerifyExport = %+v, %v; want valid with 1 cosignature", rep, err)
	}
	// Cosigning an older checkpoint instead does not help.
	writeFile(t, filepath.Join(dir, CheckpointsDir, "16"), cosignedCheckpoint(t, l, 16))
	writeFile(t, filepath.Join(dir, CheckpointsDir, "8"), cosignedCheckpoint(t, l, 8, w1))
	if _, err := VerifyExport(t.Context(), dir, Options{Witnesses: []string{w1.vkey(t)}, MinCosignatures: 1}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("VerifyExport with only an older checkpoint cosigned: %v, want ErrInvalid", err)
	}
}

// FuzzCosignatureVerify checks cosignature/v1 verification on arbitrary note text, times and
// signature bytes: it never panics, a cosignature made over the text verifies (round trip),
// and one whose text, timestamp or signature changed does not; nor do arbitrary bytes.
func FuzzCosignatureVerify(f *testing.F) {
	dir := "testdata/fuzz/FuzzCosignatureVerify"
	if _, err := os.Stat(dir); err != nil {
		f.Fatalf("seed corpus: %v", err)
	}
	c := newTestCosigner("witness.example/w1", 1, 0)
	v, err := NewCosignatureVerifier(c.vkey(f))
	if err != nil {
		f.Fatalf("NewCosignatureVerifier: %v", err)
	}
	f.Fuzz(func(t *testing.T, text string, ts uint64, raw []byte) {
		if v.Verify([]byte(text), raw) {
			// Only the key's holder can make a valid signature, and this test holds it:
			// arbitrary bytes verify only if they are exactly what it would sign.
			if len(raw) != cosignatureSize {
				t.Fatalf("Verify accepted %d bytes", len(raw))
			}
			c := &testCosigner{name: c.name, priv: c.priv, t: binary.BigEndian.Uint64(raw)}
			if want, _ := c.Sign([]byte(text)); !bytes.Equal(raw, want) {
				t.Fatalf("Verify accepted a signature the key did not make")
			}
		}
		c := &testCosigner{name: c.name, priv: c.priv, t: ts}
		sig, _ := c.Sign([]byte(text))
		if got, want := v.Verify([]byte(text), sig), ts <= math.MaxInt64; got != want {
			t.Fatalf("Verify(own cosignature at %d) = %v, want %v", ts, got, want)
		}
		if v.Verify([]byte(text+"\n"), sig) {
			t.Fatal("Verify accepted a cosignature of another text")
		}
		sig[len(sig)-1-int(ts%64)] ^= 0x20
		if v.Verify([]byte(text), sig) {
			t.Fatal("Verify accepted a changed signature")
		}
		sig[len(sig)-1-int(ts%64)] ^= 0x20
		sig[7] ^= 1
		if v.Verify([]byte(text), sig) {
			t.Fatal("Verify accepted a changed timestamp")
		}
		// As a note: the note opens with the cosigner's verifier when the text is a valid note
		// text, and then states the time.
		msg, err := note.Sign(&note.Note{Text: text}, &testCosigner{name: c.name, priv: c.priv, t: ts & math.MaxInt64})
		if err != nil {
			return
		}
		n, err := note.Open(msg, note.VerifierList(v))
		if err != nil {
			if strings.HasSuffix(text, "\n") && !strings.Contains(text, "\n\n") && len(text) > 0 && isNoteText(text) {
				t.Fatalf("note.Open of a cosigned note: %v", err)
			}
			return
		}
		if got, err := CosignatureTime(n.Sigs[0]); err != nil || got.Unix() != int64(ts&math.MaxInt64) {
			t.Fatalf("CosignatureTime = %v, %v; want %d", got, err, ts&math.MaxInt64)
		}
	})
}

// isNoteText reports whether note.Open accepts text as a note's text: UTF-8 without control
// characters other than newline.
func isNoteText(text string) bool {
	for _, r := range text {
		if r < 0x20 && r != '\n' || r == 0xfffd {
			return false
		}
	}
	return true
}
