package witness

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/accesslog/verify"
)

// vectorDir is verify's cosignature/v1 known-answer vector, computed by another implementation
// from the C2SP text.
const vectorDir = "../verify/testdata/cosignature-v1"

func TestCosignerVector(t *testing.T) {
	want, err := os.ReadFile(filepath.Join(vectorDir, "note"))
	if err != nil {
		t.Fatal(err)
	}
	vkey, err := os.ReadFile(filepath.Join(vectorDir, "vkey"))
	if err != nil {
		t.Fatal(err)
	}
	seed := make([]byte, 32)
	for i := range seed {
		seed[i] = byte(i)
	}
	c, err := NewCosigner("witness.example/w1", seedKey(t, seed), func() time.Time { return time.Unix(1679315147, 0) })
	if err != nil {
		t.Fatalf("NewCosigner: %v", err)
	}
	if got := c.VerifierKey() + "\n"; got != string(vkey) {
		t.Fatalf("VerifierKey = %q, want %q", got, vkey)
	}
	body, _, _ := bytes.Cut(want, []byte("\n\n"))
	got, err := note.Sign(&note.Note{Text: string(body) + "\n"}, c)
	if err != nil {
		t.Fatalf("note.Sign: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("note.Sign = %q, want %q", got, want)
	}
}

func TestCosignRoundTrip(t *testing.T) {
	l := newMemLog(t, testOrigin).grow(5, "a")
	c, cv := newCosigner(t, witnessName)
	msg := l.checkpoint(5, c)

	n, err := note.Open(msg, note.VerifierList(l.verifier, cv))
	if err != nil {
		t.Fatalf("note.Open: %v", err)
	}
	if len(n.Sigs) != 2 || n.Sigs[1].Name != witnessName || n.Sigs[1].Hash != c.KeyHash() {
		t.Fatalf("note.Open: verified %+v, want the log's signature and the cosignature", n.Sigs)
	}
	if ts, err := verify.CosignatureTime(n.Sigs[1]); err != nil || !ts.Equal(testClock) {
		t.Fatalf("CosignatureTime = %v, %v; want %v", ts, err, testClock)
	}
	// The cosignature verifier is not the log's: a note with the cosignature alone does not
	// open as a checkpoint of the log.
	only, _ := note.Sign(&note.Note{Text: n.Text}, c)
	if _, err := verify.OpenCheckpoint(only, l.verifier); !errors.Is(err, verify.ErrSignature) {
		t.Fatalf("OpenCheckpoint of a note with only a cosignature: %v, want ErrSignature", err)
	}
}

func TestCosignatureTampered(t *testing.T) {
	l := newMemLog(t, testOrigin).grow(5, "a")
	c, cv := newCosigner(t, witnessName)
	msg := l.checkpoint(5, c)
	body, sigs, _ := bytes.Cut(msg, []byte("\n\n"))
	lines := strings.SplitAfter(string(sigs), "\n")
	cosig := lines[1] // "— name base64\n"
	prefix := "— " + witnessName + " "
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(strings.TrimPrefix(cosig, prefix), "\n"))
	if err != nil {
		t.Fatalf("decode cosignature: %v", err)
	}
	withRaw := func(edit func(raw []byte)) []byte {
		r := bytes.Clone(raw)
		edit(r)
		return []byte(string(body) + "\n\n" + prefix + base64.StdEncoding.EncodeToString(r) + "\n")
	}
	otherBody := l.grow(6, "a").checkpoint(6)
	otherBody, _, _ = bytes.Cut(otherBody, []byte("\n\n"))
	tests := []struct {
		name string
		msg  []byte
	}{
		{"timestamp one second later", withRaw(func(r []byte) { r[11]++ })},
		{"timestamp above 2^63-1", withRaw(func(r []byte) { r[4] |= 0x80 })},
		{"signature changed", withRaw(func(r []byte) { r[40] ^= 1 })},
		{"no timestamp", []byte(string(body) + "\n\n" + prefix + base64.StdEncoding.EncodeToString(append(raw[:4:4], raw[12:]...)) + "\n")},
		{"body changed", []byte(string(otherBody) + "\n\n" + cosig)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := note.Open(tc.msg, note.VerifierList(cv))
			var invalid *note.InvalidSignatureError
			if !errors.As(err, &invalid) {
				t.Fatalf("note.Open: %v, want an invalid signature", err)
			}
		})
	}
	if _, err := note.Open(withRaw(func([]byte) {}), note.VerifierList(cv)); err != nil {
		t.Fatalf("note.Open of the untouched line: %v", err)
	}
}

func TestNewCosignerInvalid(t *testing.T) {
	p256, err := crypto.GenerateKey(crypto.P256, crypto.UseSign)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	if _, err := NewCosigner(witnessName, p256, nil); !errors.Is(err, ErrKey) {
		t.Fatalf("NewCosigner with a P-256 key: %v, want ErrKey", err)
	}
	if _, err := NewCosigner("witness with spaces", generateKey(t), nil); !errors.Is(err, ErrKey) {
		t.Fatalf("NewCosigner with a bad name: %v, want ErrKey", err)
	}
	if _, err := NewCosigner(witnessName, nil, nil); !errors.Is(err, ErrKey) {
		t.Fatalf("NewCosigner with no key: %v, want ErrKey", err)
	}
	c, err := NewCosigner(witnessName, generateKey(t), func() time.Time { return time.Unix(-1, 0) })
	if err != nil {
		t.Fatalf("NewCosigner: %v", err)
	}
	if _, err := c.Sign([]byte("x\n")); !errors.Is(err, ErrKey) {
		t.Fatalf("Sign with a clock before 1970: %v, want ErrKey", err)
	}
}
