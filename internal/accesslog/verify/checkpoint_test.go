package verify

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func TestCheckpointRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		c    Checkpoint
	}{
		{"empty log", Checkpoint{Origin: testOrigin, Size: 0, Root: sha256.Sum256(nil)}},
		{"one entry", Checkpoint{Origin: testOrigin, Size: 1, Root: tlog.RecordHash([]byte("x"))}},
		{"largest size", Checkpoint{Origin: "example.com/log", Size: 1<<63 - 1, Root: tlog.Hash{0xff}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := FormatCheckpoint(tc.c.Origin, tc.c.Size, tc.c.Root)
			got, err := ParseCheckpoint(body)
			if err != nil {
				t.Fatalf("ParseCheckpoint(%q): %v", body, err)
			}
			if got != tc.c {
				t.Fatalf("ParseCheckpoint(%q) = %+v, want %+v", body, got, tc.c)
			}
			if tc.c.String() != string(body) {
				t.Fatalf("String() = %q, want %q", tc.c.String(), body)
			}
		})
	}
}

func TestParseCheckpointInvalid(t *testing.T) {
	good := string(FormatCheckpoint(testOrigin, 42, tlog.Hash{0xfb, 0xef, 0xff, 1, 2, 3}))
	lines := strings.SplitAfter(good, "\n")
	tests := []struct{ name, text string }{
		{"empty", ""},
		{"no final newline", strings.TrimSuffix(good, "\n")},
		{"two lines", lines[0] + lines[1]},
		{"extension line", good + "timestamp 1700000000\n"},
		{"blank extension line", good + "\n"},
		{"CRLF", strings.ReplaceAll(good, "\n", "\r\n")},
		{"empty origin", "\n" + lines[1] + lines[2]},
		{"origin with a space", "example.com/a log\n" + lines[1] + lines[2]},
		{"origin with a plus", "example.com/a+log\n" + lines[1] + lines[2]},
		{"origin not UTF-8", "example.com/\xff\n" + lines[1] + lines[2]},
		{"leading zero", lines[0] + "042\n" + lines[2]},
		{"plus sign", lines[0] + "+42\n" + lines[2]},
		{"negative size", lines[0] + "-1\n" + lines[2]},
		{"size beyond int64", lines[0] + "9223372036854775808\n" + lines[2]},
		{"hex size", lines[0] + "0x2a\n" + lines[2]},
		{"empty size", lines[0] + "\n" + lines[2]},
		{"root unpadded", lines[0] + lines[1] + strings.TrimSuffix(lines[2], "=\n") + "\n"},
		{"root URL encoding", lines[0] + lines[1] + strings.ReplaceAll(strings.ReplaceAll(lines[2], "+", "-"), "/", "_")},
		{"root of 31 bytes", string(FormatCheckpoint(testOrigin, 42, tlog.Hash{}))[:len(lines[0])+len(lines[1])] + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n"},
		{"root hex", lines[0] + lines[1] + strings.Repeat("00", 32) + "\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseCheckpoint([]byte(tc.text))
			if !errors.Is(err, ErrCheckpoint) {
				t.Fatalf("ParseCheckpoint(%q) = %+v, %v; want ErrCheckpoint", tc.text, c, err)
			}
		})
	}
}

func TestOpenCheckpoint(t *testing.T) {
	signer, vkey := testKey(t, testOrigin, 1)
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	other, _ := testKey(t, testOrigin, 2)          // the same name, another key
	witness, _ := testKey(t, "witness.example", 3) // a cosigner
	stranger, _ := testKey(t, "schakel.nl/log/other", 4)
	body := FormatCheckpoint(testOrigin, 5, tlog.Hash{9})
	sign := func(text []byte, signers ...note.Signer) []byte {
		msg, err := note.Sign(&note.Note{Text: string(text)}, signers...)
		if err != nil {
			t.Fatalf("note.Sign: %v", err)
		}
		return msg
	}
	signed := sign(body, signer)
	tests := []struct {
		name    string
		msg     []byte
		wantErr error // nil: valid
	}{
		{"signed by the log", signed, nil},
		{"with a witness cosignature", sign(body, signer, witness), nil},
		{"cosignature first", sign(body, witness, signer), nil},
		{"only a witness", sign(body, witness), ErrSignature},
		{"another key of the same name", sign(body, other), ErrSignature},
		{"log signature tampered", bytes.Replace(signed, []byte("\n— "+testOrigin+" "), []byte("\n— "+testOrigin+" AAAA"), 1), ErrCheckpoint},
		{"body changed after signing", bytes.Replace(signed, []byte("\n5\n"), []byte("\n6\n"), 1), ErrSignature},
		{"another log's origin signed by the log", sign(FormatCheckpoint("schakel.nl/log/other", 5, tlog.Hash{9}), signer), ErrCheckpoint},
		{"another log's checkpoint", sign(FormatCheckpoint("schakel.nl/log/other", 5, tlog.Hash{9}), stranger), ErrSignature},
		{"extension line signed", sign(append(body, "ext\n"...), signer), ErrCheckpoint},
		{"not a note", body, ErrCheckpoint},
		{"too large", append(bytes.Repeat([]byte("x"), MaxCheckpointSize), signed...), ErrCheckpoint},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := OpenCheckpoint(tc.msg, verifier)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("OpenCheckpoint: %v", err)
				}
				if c.Origin != testOrigin || c.Size != 5 || c.Root != (tlog.Hash{9}) {
					t.Fatalf("OpenCheckpoint = %+v", c)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) || !errors.Is(err, ErrCheckpoint) {
				t.Fatalf("OpenCheckpoint = %+v, %v; want %v", c, err, tc.wantErr)
			}
		})
	}
}

// FuzzParseCheckpoint: no panic; an accepted body formats back to itself.
func FuzzParseCheckpoint(f *testing.F) {
	f.Add(FormatCheckpoint(testOrigin, 0, sha256.Sum256(nil)))
	f.Add(FormatCheckpoint(testOrigin, 20852163, tlog.Hash{1}))
	f.Add([]byte("example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"))
	f.Add([]byte("example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\next\n"))
	f.Fuzz(func(t *testing.T, text []byte) {
		c, err := ParseCheckpoint(text)
		if err != nil {
			if !errors.Is(err, ErrCheckpoint) {
				t.Fatalf("ParseCheckpoint(%q) error %v does not wrap ErrCheckpoint", text, err)
			}
			return
		}
		if got := FormatCheckpoint(c.Origin, c.Size, c.Root); !bytes.Equal(got, text) {
			t.Fatalf("FormatCheckpoint(ParseCheckpoint(%q)) = %q", text, got)
		}
	})
}
