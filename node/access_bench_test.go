package node

import (
	"flag"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/schakel-health/schakel/internal/authz"
	"github.com/schakel-health/schakel/internal/register"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

var accessInflight = flag.Int("access-inflight", 64, "token requests in flight in BenchmarkAccessDecision")

// accessSetup starts a custodian node on disk hosting the GP practice, with 1,000 patients'
// consents, and a requesting node; it returns the custodian, the requester's peer id and n
// assertions made by the requester.
func accessSetup(b testing.TB, n int) (*netNode, peer.ID, [][]byte) {
	gp, p, a, _ := accessSetupOn(b, newRegister(b), n)
	return gp, p, a
}

// accessSetupOn is accessSetup with the register given; it also returns the custodian's data
// directory.
func accessSetupOn(b testing.TB, reg *register.Register, n int) (*netNode, peer.ID, [][]byte, string) {
	ctx := b.Context()
	dir := b.TempDir()
	if _, err := Init(dir); err != nil {
		b.Fatal(err)
	}
	gp := startNetNode(b, reg, dir, "gp")
	gp.org = hostOrganization(b, gp.Node, reg, "Huisartsenpraktijk Jansen", true)
	hospital := startNetNode(b, reg, "", "hospital")
	hospital.org = hostOrganization(b, hospital.Node, reg, "Stadsziekenhuis", true)
	link(b, hospital, gp)
	eventually(b, 15*time.Second, "the nodes admit each other", func() bool {
		_, err := gp.dids.Resolve(ctx, hospital.org)
		_, err2 := hospital.dids.Resolve(ctx, gp.org)
		return err == nil && err2 == nil && admittedCount(gp) == 1
	})
	const patients = 1000
	for i := range patients {
		if _, err := gp.RecordConsent(ctx, &schakelv1.RecordConsentRequest{Bsn: testBSN(i), Consent: &schakelv1.Consent{
			Custodian: gp.org, Decision: "permit", GranteeOrg: hospital.org, DataCategories: []string{"medication"},
			Purposes: []string{"TREAT"}, Grantors: []string{"self"}, Channel: "desk", Assurance: "high"}}); err != nil {
			b.Fatal(err)
		}
	}
	_, sig, err := hospital.orgs.signingKey(ctx, hospital.org)
	if err != nil {
		b.Fatal(err)
	}
	st, err := hospital.dids.Resolve(ctx, gp.org)
	if err != nil {
		b.Fatal(err)
	}
	jkt := dpopJKT(b)
	assertions := make([][]byte, n)
	for i := range assertions {
		if assertions[i], err = authz.NewAssertion(sig, "", authz.AssertionClaims{Issuer: hospital.org, Custodian: gp.org,
			Employee: authz.Employee{UZI: "900012345", Role: "01.015", Name: "A. de Vries", Assurance: "high"},
			BSN:      testBSN(i % patients), DataCategory: "medication", Purpose: "TREAT", DPoPJKT: jkt}, st.Current().AgreementKey); err != nil {
			b.Fatal(err)
		}
	}
	return gp, hospital.PeerID(), assertions, dir
}

// BenchmarkAccessDecision measures what the custodian's node does per token request, on its
// real, fsynced storage: open the assertion (JWE decrypt, EdDSA verify, replay check), read the
// patient's consents, decide, append the decision to the access log durably (group commit), sign
// the token and the receipt. The assertions are made beforehand by the requesting node; the
// transport is not included. Run with -cpu=2:
//
//	go test ./node/ -run '^$' -bench 'AccessDecision|AccessCrypto' -cpu=2 -benchtime=20000x -count=6
func BenchmarkAccessDecision(b *testing.B) {
	ctx := b.Context()
	gp, p, assertions := accessSetup(b, b.N)
	var next, refused atomic.Int64
	// Requests arrive concurrently (-access-inflight, default 64, on 2 cores), as from many EHR users: the log's
	// group commit makes one fsync serve all that arrived while the previous one ran.
	b.SetParallelism(*accessInflight / 2)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) - 1
			resp, err := gp.decideToken(ctx, p, assertions[i])
			if err != nil {
				b.Error(err)
				return
			}
			if resp.GetAccessToken() == "" {
				refused.Add(1)
			}
		}
	})
	b.StopTimer()
	if refused.Load() != 0 {
		b.Fatalf("%d of %d requests refused", refused.Load(), b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}

// BenchmarkAccessCrypto is the limit beside BenchmarkAccessDecision: the cryptography a decision
// cannot avoid — a P-256 ECDH-ES JWE decrypt, an EdDSA verify and two EdDSA signs (the token
// and the receipt) — with nothing else.
func BenchmarkAccessCrypto(b *testing.B) {
	a, err := NewAccessCrypto()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := a.Once(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}

var accessRate = flag.Int("access-rate", 0, "TestFigureAccessLatency: token requests per second to offer (0: skip)")

// TestFigureAccessLatency offers token requests at a fixed rate for 10 s (open loop: each request
// starts at its scheduled time whatever the others do) and reports the latency of the custodian's
// decision, as BenchmarkAccessDecision measures it:
//
//	go test ./node/ -run TestFigureAccessLatency -v -access-rate 2500 -timeout 10m
func TestFigureAccessLatency(t *testing.T) {
	if *accessRate <= 0 {
		t.Skip("set -access-rate")
	}
	const seconds = 10
	n := *accessRate * seconds
	gp, p, assertions := accessSetup(t, n)
	ctx := t.Context()
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		at := start.Add(time.Duration(i) * time.Second / time.Duration(*accessRate))
		time.Sleep(time.Until(at))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := gp.decideToken(ctx, p, assertions[i]); err != nil {
				t.Error(err)
			}
			lat[i] = time.Since(at)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	q := func(f float64) time.Duration { return lat[int(f*float64(n-1))].Round(10 * time.Microsecond) }
	t.Logf("%d requests offered at %d/s, done in %s: latency p50 %s, p90 %s, p99 %s, max %s",
		n, *accessRate, elapsed.Round(time.Millisecond), q(0.5), q(0.9), q(0.99), lat[n-1].Round(10*time.Microsecond))
}
