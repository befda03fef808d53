package crypto

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestValidBSN(t *testing.T) {
	tests := []struct {
		name    string
		bsn     string
		wantErr bool
		reason  string // a word the error must contain
	}{
		{name: "valid 111222333", bsn: "111222333"},
		{name: "valid 123456782", bsn: "123456782"},
		{name: "valid leading zero", bsn: "012345672"},
		{name: "all zeros", bsn: "000000000", wantErr: true, reason: "zeros"},
		{name: "too short", bsn: "12345678", wantErr: true, reason: "length"},
		{name: "too long", bsn: "1234567820", wantErr: true, reason: "length"},
		{name: "empty", bsn: "", wantErr: true, reason: "length"},
		{name: "letter", bsn: "12345678a", wantErr: true, reason: "non-digit"},
		{name: "space", bsn: "12345678 ", wantErr: true, reason: "non-digit"},
		{name: "non-ASCII digits", bsn: "١٢٣٤٥", wantErr: true, reason: "length"},
		{name: "non-ASCII in nine bytes", bsn: "1234567é", wantErr: true, reason: "non-digit"},
		{name: "11-proof fails", bsn: "123456789", wantErr: true, reason: "11-proof"},
		{name: "transposed digits", bsn: "213456782", wantErr: true, reason: "11-proof"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidBSN(tt.bsn)
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("ValidBSN(%q): %v", tt.bsn, err)
				}
				return
			}
			if !errors.Is(err, ErrBSN) {
				t.Fatalf("ValidBSN(%q): err = %v, want ErrBSN", tt.bsn, err)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("ValidBSN(%q): err = %v, want the reason %q", tt.bsn, err, tt.reason)
			}
			if tt.bsn != "" && strings.Contains(err.Error(), tt.bsn) {
				t.Errorf("ValidBSN(%q): err = %v repeats the input", tt.bsn, err)
			}
		})
	}
}

func secret(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func newPseudonymizer(t *testing.T, secrets map[uint32][]byte, current uint32) *Pseudonymizer {
	t.Helper()
	p, err := NewPseudonymizer(secrets, current)
	if err != nil {
		t.Fatalf("NewPseudonymizer: %v", err)
	}
	return p
}

func TestPseudonym(t *testing.T) {
	const bsn = "111222333"
	p := newPseudonymizer(t, map[uint32][]byte{1: secret(1)}, 1)

	got, err := p.Pseudonym(bsn)
	if err != nil {
		t.Fatalf("Pseudonym: %v", err)
	}
	// The format is fixed: v<version>.<base64url(HMAC-SHA256(secret, context || bsn))>.
	mac := hmac.New(sha256.New, secret(1))
	mac.Write([]byte("schakel-pseudonym-v1\x00" + bsn))
	if want := "v1." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil)); got != want {
		t.Errorf("Pseudonym = %s, want %s", got, want)
	}
	again, err := p.Pseudonym(bsn)
	if err != nil || again != got {
		t.Errorf("Pseudonym again = %s, %v; want %s (deterministic)", again, err, got)
	}
	same := newPseudonymizer(t, map[uint32][]byte{1: secret(1)}, 1)
	if s, _ := same.Pseudonym(bsn); s != got {
		t.Errorf("Pseudonym with an equal secret = %s, want %s", s, got)
	}
	otherSecret := newPseudonymizer(t, map[uint32][]byte{1: secret(2)}, 1)
	if s, _ := otherSecret.Pseudonym(bsn); s == got {
		t.Errorf("Pseudonym with another secret = %s, same as with the first", s)
	}
	if s, _ := p.Pseudonym("123456782"); s == got {
		t.Errorf("Pseudonym of another BSN = %s, same as of %s", s, bsn)
	}
	if strings.Contains(got, bsn) {
		t.Errorf("Pseudonym = %s contains the BSN", got)
	}
}

func TestPseudonymRefusesInvalidBSN(t *testing.T) {
	p := newPseudonymizer(t, map[uint32][]byte{1: secret(1)}, 1)
	tests := []struct {
		name string
		bsn  string
	}{
		{name: "11-proof", bsn: "123456789"},
		{name: "zeros", bsn: "000000000"},
		{name: "short", bsn: "1234"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if s, err := p.Pseudonym(tt.bsn); !errors.Is(err, ErrBSN) || s != "" {
				t.Errorf("Pseudonym = %q, %v; want ErrBSN", s, err)
			}
			if s, err := p.All(tt.bsn); !errors.Is(err, ErrBSN) || s != nil {
				t.Errorf("All = %q, %v; want ErrBSN", s, err)
			}
		})
	}
}

func TestPseudonymRotation(t *testing.T) {
	const bsn = "123456782"
	old := newPseudonymizer(t, map[uint32][]byte{1: secret(1)}, 1)
	before, err := old.Pseudonym(bsn)
	if err != nil {
		t.Fatalf("Pseudonym: %v", err)
	}
	rotated := newPseudonymizer(t, map[uint32][]byte{1: secret(1), 2: secret(2), 3: secret(3)}, 2)
	if rotated.Current() != 2 {
		t.Errorf("Current = %d, want 2", rotated.Current())
	}
	now, err := rotated.Pseudonym(bsn)
	if err != nil {
		t.Fatalf("Pseudonym: %v", err)
	}
	if !strings.HasPrefix(now, "v2.") || now == before {
		t.Errorf("Pseudonym after rotation = %s, want a v2 pseudonym other than %s", now, before)
	}
	all, err := rotated.All(bsn)
	if err != nil {
		t.Fatalf("All: %v", err)
	}
	// Current first, then newest to oldest.
	if len(all) != 3 || all[0] != now || !strings.HasPrefix(all[1], "v3.") || all[2] != before {
		t.Errorf("All = %q, want [%s v3.… %s]", all, now, before)
	}
	if !slices.Contains(all, before) {
		t.Errorf("All = %q does not contain the pseudonym made before rotation %s", all, before)
	}
}

func TestNewPseudonymizer(t *testing.T) {
	tests := []struct {
		name    string
		secrets map[uint32][]byte
		current uint32
		wantErr error
	}{
		{name: "one secret", secrets: map[uint32][]byte{1: secret(1)}, current: 1},
		{name: "version zero", secrets: map[uint32][]byte{0: secret(1)}, current: 0},
		{name: "long secret", secrets: map[uint32][]byte{1: bytes.Repeat([]byte{1}, 100)}, current: 1},
		{name: "current missing", secrets: map[uint32][]byte{1: secret(1)}, current: 2, wantErr: ErrKey},
		{name: "no secrets", secrets: nil, current: 0, wantErr: ErrKey},
		{name: "short current secret", secrets: map[uint32][]byte{1: secret(1)[:31]}, current: 1, wantErr: ErrKey},
		{name: "short old secret", secrets: map[uint32][]byte{1: secret(1)[:16], 2: secret(2)}, current: 2, wantErr: ErrKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewPseudonymizer(tt.secrets, tt.current)
			if tt.wantErr == nil && err != nil {
				t.Fatalf("NewPseudonymizer: %v", err)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("NewPseudonymizer: err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// TestPseudonymizerCopiesSecrets checks that changing the caller's secret afterwards does not
// change the pseudonyms.
func TestPseudonymizerCopiesSecrets(t *testing.T) {
	s := secret(1)
	p := newPseudonymizer(t, map[uint32][]byte{1: s}, 1)
	before, _ := p.Pseudonym("111222333")
	s[0] ^= 0xff
	if after, _ := p.Pseudonym("111222333"); after != before {
		t.Errorf("Pseudonym changed after the caller changed its secret: %s, was %s", after, before)
	}
}

func TestGenerateSecret(t *testing.T) {
	a, err := GenerateSecret()
	if err != nil {
		t.Fatalf("GenerateSecret: %v", err)
	}
	b, err := GenerateSecret()
	if err != nil {
		t.Fatalf("GenerateSecret: %v", err)
	}
	if len(a) != 32 || bytes.Equal(a, b) {
		t.Errorf("GenerateSecret = %x, %x; want two different 32-byte secrets", a, b)
	}
	if _, err := NewPseudonymizer(map[uint32][]byte{1: a}, 1); err != nil {
		t.Errorf("NewPseudonymizer(GenerateSecret()): %v", err)
	}
}
