package authz

import (
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/schakel-health/schakel/crypto"
)

// Benchmarks of the access flow's per-request work. Run them on the target's core count, e.g.
//
//	go test ./internal/authz/ -run='^$' -bench=. -cpu=2
//
// The primitives (BenchmarkJWEDecrypt, BenchmarkEdDSAVerify, BenchmarkEdDSASign) bound what the
// composite operations can reach: Open is a JWE decryption plus an EdDSA verification plus a
// replay-cache write; IssueToken is an EdDSA signature; an uncached introspection is an EdDSA
// verification.

// BenchmarkOpenAssertion measures Verifier.Open: decrypt, verify, claims, replay check-and-set
// (in-memory store; on disk the replay write joins a group commit, see ReplayCache).
func BenchmarkOpenAssertion(b *testing.B) {
	for _, par := range []struct {
		name     string
		parallel bool
	}{{"serial", false}, {"parallel", true}} {
		b.Run(par.name, func(b *testing.B) {
			f := newFixture(b)
			jwes := make([][]byte, b.N)
			for i := range jwes {
				jwes[i] = f.assertion(f.claims())
			}
			b.ReportAllocs()
			b.ResetTimer()
			if !par.parallel {
				for i := range b.N {
					if _, err := f.verifier.Open(b.Context(), jwes[i]); err != nil {
						b.Fatalf("Open: %v", err)
					}
				}
			} else {
				var next atomic.Int64
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := f.verifier.Open(b.Context(), jwes[next.Add(1)-1]); err != nil {
							b.Errorf("Open: %v", err)
							return
						}
					}
				})
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "opens/s")
		})
	}
}

func BenchmarkIssueToken(b *testing.B) {
	f := newFixture(b)
	c := f.tokenClaims()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := IssueToken(f.custKey, "", c); err != nil {
			b.Fatalf("IssueToken: %v", err)
		}
	}
}

// introspectionPool is the number of distinct tokens the introspection benchmarks cycle through.
const introspectionPool = 1024

func benchIntrospect(b *testing.B, cfg IntrospectorConfig) {
	f := newFixture(b)
	in := f.introspector(b, cfg, &consents{})
	toks := make([]string, introspectionPool)
	for i := range toks {
		toks[i] = f.token(f.tokenClaims())
		if !in.Introspect(b.Context(), toks[i]).Active { // fills the cache when there is one
			b.Fatal("Introspect: inactive")
		}
	}
	var (
		mu        sync.Mutex
		latencies []time.Duration
		seed      atomic.Int64
	)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seed.Add(7919))
		// Every eighth introspection is timed, for the p99, without timing all of them.
		var lat []time.Duration
		for pb.Next() {
			i++
			tok := toks[i%introspectionPool]
			if i%8 != 0 {
				if !in.Introspect(b.Context(), tok).Active {
					b.Error("Introspect: inactive")
					return
				}
				continue
			}
			start := time.Now()
			r := in.Introspect(b.Context(), tok)
			lat = append(lat, time.Since(start))
			if !r.Active {
				b.Error("Introspect: inactive")
				return
			}
		}
		mu.Lock()
		latencies = append(latencies, lat...)
		mu.Unlock()
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "introspections/s")
	if len(latencies) > 0 {
		slices.Sort(latencies)
		b.ReportMetric(float64(latencies[len(latencies)*99/100].Nanoseconds()), "p99-ns")
	}
}

// BenchmarkIntrospectCached: every token is in the cache and the generation does not change.
func BenchmarkIntrospectCached(b *testing.B) { benchIntrospect(b, IntrospectorConfig{}) }

// BenchmarkIntrospectUncached: every introspection verifies the token's signature and claims.
func BenchmarkIntrospectUncached(b *testing.B) { benchIntrospect(b, IntrospectorConfig{CacheSize: -1}) }

// BenchmarkCheckDPoP measures a resource server's proof check (ES256 verify, replay write).
func BenchmarkCheckDPoP(b *testing.B) {
	f := newFixture(b)
	tok := f.token(f.tokenClaims())
	proofs := make([]string, b.N)
	for i := range proofs {
		p, err := NewDPoPProof(f.dpopKey, "GET", fhirURL, tok, t0)
		if err != nil {
			b.Fatalf("NewDPoPProof: %v", err)
		}
		proofs[i] = p
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := CheckDPoP(b.Context(), proofs[i], "GET", fhirURL, tok, f.dpopKey.KID(), t0, f.replay); err != nil {
			b.Fatalf("CheckDPoP: %v", err)
		}
	}
}

// BenchmarkReplayUse measures one check-and-set of the replay cache on the in-memory store.
func BenchmarkReplayUse(b *testing.B) {
	f := newFixture(b)
	ids := make([]string, b.N)
	for i := range ids {
		ids[i] = NewID()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := f.replay.use(b.Context(), scopeAssertion, requesterDID, ids[i], time.Minute); err != nil {
			b.Fatalf("use: %v", err)
		}
	}
}

// innerJWS returns the signed (not yet encrypted) form of a typical assertion and its payload.
func innerJWS(b *testing.B, f *fixture) (jws, payload []byte) {
	c := f.claims()
	p := payloadOf(c)
	payload, _ = json.Marshal(p)
	jws, err := crypto.Sign(f.reqKey, payload, crypto.Header{Type: AssertionType, KID: KID(requesterDID, f.reqKey)})
	if err != nil {
		b.Fatalf("crypto.Sign: %v", err)
	}
	return jws, payload
}

// BenchmarkJWEDecrypt: the ECDH-ES+A256KW / A256GCM decryption of an assertion-sized JWE.
func BenchmarkJWEDecrypt(b *testing.B) {
	f := newFixture(b)
	jws, _ := innerJWS(b, f)
	jwe, err := crypto.Encrypt(jws, f.custEnc.Public())
	if err != nil {
		b.Fatalf("crypto.Encrypt: %v", err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := crypto.Decrypt(jwe, f.custEnc); err != nil {
			b.Fatalf("crypto.Decrypt: %v", err)
		}
	}
}

// BenchmarkEdDSAVerify: verifying an assertion-sized EdDSA JWS.
func BenchmarkEdDSAVerify(b *testing.B) {
	f := newFixture(b)
	jws, _ := innerJWS(b, f)
	pub := f.reqKey.Public()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := crypto.Verify(jws, pub); err != nil {
			b.Fatalf("crypto.Verify: %v", err)
		}
	}
}

// BenchmarkEdDSASign: signing an assertion-sized payload with EdDSA.
func BenchmarkEdDSASign(b *testing.B) {
	f := newFixture(b)
	_, payload := innerJWS(b, f)
	h := crypto.Header{Type: AssertionType, KID: KID(requesterDID, f.reqKey)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := crypto.Sign(f.reqKey, payload, h); err != nil {
			b.Fatalf("crypto.Sign: %v", err)
		}
	}
}
