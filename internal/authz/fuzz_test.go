package authz

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// The seeds come from testdata/vectors.json: the fuzzing engine runs seeds made in one process in
// others, so they must not be made afresh (JWEs and ES256 signatures are randomised).

func mustVectors(f *testing.F) vectors {
	v, err := loadVectors()
	if err != nil {
		f.Fatalf("read %s: %v", vectorsFile, err)
	}
	return v
}

// FuzzOpen: Verifier.Open never panics, and nothing but the one valid assertion ever opens: every
// other input, a tampered copy of it included, is refused.
func FuzzOpen(f *testing.F) {
	fx := newFixture(f)
	want := fx.vectorAssertionClaims()
	valid := []byte(mustVectors(f).Assertion)
	f.Add(valid)
	f.Add(valid[:len(valid)/2])
	f.Add(flip(valid, 30))
	f.Add([]byte("a.b.c.d.e"))
	f.Add([]byte{})
	opened := false
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := fx.verifier.Open(t.Context(), in)
		if err != nil {
			return
		}
		if !bytes.Equal(in, valid) {
			t.Fatalf("Open accepted an input that is not the valid assertion: %q", in)
		}
		if opened {
			t.Fatal("Open accepted the valid assertion twice")
		}
		opened = true
		if !reflect.DeepEqual(*got, want) {
			t.Fatalf("Open = %+v, want %+v", *got, want)
		}
	})
}

// FuzzParseToken: ParseToken never panics; only the valid token parses (EdDSA is deterministic
// and not malleable, and base64url is decoded strictly, so a token has one spelling), and it
// round-trips to the claims it was issued with.
func FuzzParseToken(f *testing.F) {
	fx := newFixture(f)
	want := fx.vectorTokenClaims()
	valid := mustVectors(f).Token
	f.Add(valid)
	f.Add(valid[:len(valid)-1])
	f.Add(string(flip([]byte(valid), 40)))
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("")
	f.Fuzz(func(t *testing.T, in string) {
		got, err := ParseToken(in, fx.tokenKeys, t0)
		if err != nil {
			return
		}
		if in != valid {
			t.Fatalf("ParseToken accepted an input that is not the valid token: %q", in)
		}
		if !reflect.DeepEqual(*got, want) {
			t.Fatalf("ParseToken = %+v, want %+v", *got, want)
		}
	})
}

// FuzzCheckDPoP: a proof parser on the resource server's hot path never panics and accepts no
// mutation of a valid proof.
func FuzzCheckDPoP(f *testing.F) {
	valid := mustVectors(f).DPoPProof
	f.Add(valid)
	f.Add(valid[:len(valid)-2])
	f.Add("e30.e30.")
	f.Fuzz(func(t *testing.T, in string) {
		if _, err := parseDPoP(in, t0); err != nil {
			return
		}
		// The signature is ES256, which is malleable ((r, n−s) verifies too); the payload,
		// whose jti the replay cache keys on, must be the valid one's.
		if in[:bytes.LastIndexByte([]byte(in), '.')] != valid[:bytes.LastIndexByte([]byte(valid), '.')] {
			t.Fatalf("parseDPoP accepted a proof with another header or payload: %q", in)
		}
	})
}

// FuzzUniqueMembers: the duplicate-name scanner never panics or reads out of bounds, accepts only
// valid JSON, and accepts every valid object that encoding/json re-encodes from a map (which has
// no duplicate names).
func FuzzUniqueMembers(f *testing.F) {
	for _, s := range []string{`{"a":1,"b":{"a":[1,{"c":"\u0061"}]}}`, `{"a":1,"a":2}`, `[{"x":1,"x":2}]`, `"s"`, `{"a":"\\"}`, ` {} `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		err := uniqueMembers(in)
		if err == nil && !json.Valid(in) {
			t.Fatalf("uniqueMembers accepted invalid JSON %q", in)
		}
		var m map[string]any
		if json.Unmarshal(in, &m) != nil || m == nil {
			return
		}
		canon, _ := json.Marshal(m)
		if err := uniqueMembers(canon); err != nil && !strings.Contains(err.Error(), "nested deeper") {
			t.Fatalf("uniqueMembers(%s) = %v, want nil", canon, err)
		}
	})
}
