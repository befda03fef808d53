package authz

import (
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"os"
	"reflect"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/schakel-health/schakel/crypto"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json (keeping its keys)")

const vectorsFile = "testdata/vectors.json"

// vectors are fixed keys and one example of each wire format, made at t0. They pin the formats:
// an EdDSA JWS is deterministic, so TestVectors can require IssueToken and NewReceipt to produce
// the same bytes again. JWEs and ES256 signatures are randomised and are only checked to verify.
type vectors struct {
	Note      string                     `json:"note"`
	Keys      map[string]json.RawMessage `json:"keys"` // private JWKs, test keys only
	Assertion string                     `json:"assertion"`
	Token     string                     `json:"token"`
	Receipt   string                     `json:"receipt"`
	DPoPProof string                     `json:"dpop_proof"`
}

// Fixed identifiers of the vectors.
const (
	vectorAssertionID = "assertion-vector-1"
	vectorTokenID     = "token-vector-1"
)

var vectorKeyKinds = map[string]struct {
	kt  crypto.KeyType
	use crypto.Use
}{
	"requester":     {crypto.Ed25519, crypto.UseSign},
	"custodian":     {crypto.Ed25519, crypto.UseSign},
	"custodian_enc": {crypto.P256, crypto.UseEnc},
	"other_enc":     {crypto.P256, crypto.UseEnc},
	"dpop":          {crypto.P256, crypto.UseSign},
}

var (
	vectorsOnce sync.Once
	vectorsData vectors
	vectorsErr  error
)

func loadVectors() (vectors, error) {
	vectorsOnce.Do(func() {
		b, err := os.ReadFile(vectorsFile)
		if err != nil {
			vectorsErr = err
			return
		}
		vectorsErr = json.Unmarshal(b, &vectorsData)
	})
	return vectorsData, vectorsErr
}

// vectorKeys returns the fixed keys; with -update and no file yet it makes new ones.
func vectorKeys(t testing.TB) map[string]*crypto.PrivateKey {
	t.Helper()
	v, err := loadVectors()
	out := map[string]*crypto.PrivateKey{}
	if errors.Is(err, fs.ErrNotExist) && *update {
		for name, k := range vectorKeyKinds {
			out[name] = mustKey(t, k.kt, k.use)
		}
		return out
	}
	if err != nil {
		t.Fatalf("read %s: %v", vectorsFile, err)
	}
	for name := range vectorKeyKinds {
		k, err := crypto.ParsePrivateKey(v.Keys[name])
		if err != nil {
			t.Fatalf("%s: key %s: %v", vectorsFile, name, err)
		}
		out[name] = k
	}
	return out
}

func (f *fixture) vectorAssertionClaims() AssertionClaims {
	c := f.claims()
	c.ID = vectorAssertionID
	return c
}

func (f *fixture) vectorTokenClaims() TokenClaims {
	c := f.tokenClaims()
	c.ID, c.Audience = vectorTokenID, custodianDID
	return c
}

func (f *fixture) vectorReceipt() Receipt {
	r := f.receipt(41, tlog.RecordHash([]byte(`{"v":1}`)))
	r.RequestID, r.TokenID = vectorAssertionID, vectorTokenID
	return r
}

func TestVectors(t *testing.T) {
	f := newFixture(t)
	if *update {
		writeVectors(t, f)
	}
	v, err := loadVectors()
	if err != nil {
		t.Fatalf("read %s: %v", vectorsFile, err)
	}
	t.Run("assertion", func(t *testing.T) {
		got, err := f.verifier.Open(t.Context(), []byte(v.Assertion))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if want := f.vectorAssertionClaims(); !reflect.DeepEqual(*got, want) {
			t.Fatalf("Open = %+v, want %+v", *got, want)
		}
	})
	t.Run("token", func(t *testing.T) {
		got, err := ParseToken(v.Token, f.tokenKeys, t0)
		if err != nil {
			t.Fatalf("ParseToken: %v", err)
		}
		want := f.vectorTokenClaims()
		if !reflect.DeepEqual(*got, want) {
			t.Fatalf("ParseToken = %+v, want %+v", *got, want)
		}
		if again := f.token(want); again != v.Token {
			t.Fatalf("IssueToken no longer produces the vector:\n got %s\nwant %s", again, v.Token)
		}
	})
	t.Run("receipt", func(t *testing.T) {
		got, err := VerifyReceipt(t.Context(), v.Receipt, f.resolve)
		if err != nil {
			t.Fatalf("VerifyReceipt: %v", err)
		}
		want := f.vectorReceipt()
		if !reflect.DeepEqual(*got, want) {
			t.Fatalf("VerifyReceipt = %+v, want %+v", *got, want)
		}
		if again, err := NewReceipt(f.custKey, "", want); err != nil || again != v.Receipt {
			t.Fatalf("NewReceipt no longer produces the vector: %v\n got %s\nwant %s", err, again, v.Receipt)
		}
	})
	t.Run("dpop", func(t *testing.T) {
		if err := CheckDPoP(t.Context(), v.DPoPProof, "GET", fhirURL, v.Token, f.dpopKey.KID(), t0, f.replay); err != nil {
			t.Fatalf("CheckDPoP: %v", err)
		}
	})
}

func writeVectors(t *testing.T, f *fixture) {
	v := vectors{
		Note: "Test vectors of internal/authz, made at " + t0.Format("2006-01-02T15:04:05Z") +
			"; the keys are test keys. Regenerate with go test -run TestVectors -update.",
		Keys: map[string]json.RawMessage{},
	}
	for name, k := range map[string]*crypto.PrivateKey{
		"requester": f.reqKey, "custodian": f.custKey, "custodian_enc": f.custEnc,
		"other_enc": f.otherEn, "dpop": f.dpopKey,
	} {
		b, err := k.MarshalJSON()
		if err != nil {
			t.Fatalf("MarshalJSON: %v", err)
		}
		v.Keys[name] = b
	}
	v.Assertion = string(f.assertion(f.vectorAssertionClaims()))
	v.Token = f.token(f.vectorTokenClaims())
	var err error
	if v.Receipt, err = NewReceipt(f.custKey, "", f.vectorReceipt()); err != nil {
		t.Fatalf("NewReceipt: %v", err)
	}
	if v.DPoPProof, err = NewDPoPProof(f.dpopKey, "GET", fhirURL, v.Token, t0); err != nil {
		t.Fatalf("NewDPoPProof: %v", err)
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatalf("MarshalIndent: %v", err)
	}
	if err := os.MkdirAll("testdata", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vectorsFile, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	vectorsOnce = sync.Once{}
}
