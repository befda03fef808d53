package consent

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/schakel-health/schakel/internal/store"
)

// Run the lookups at a million stored consents as well with
//
//	go test ./internal/consent/ -run '^$' -bench 'ForPatient|Lookup' -consents=1000000 [-benchdir DIR]
//
// Loading them takes a minute or two and about 1 GB of disk, in a temporary directory or in
// -benchdir, where the database is kept for the next run; -short skips it.
var (
	benchConsents = flag.Int("consents", 0, "also run the lookup benchmarks with this many stored consents, e.g. 1000000")
	benchDir      = flag.String("benchdir", "", "keep the loaded benchmark databases in this directory and reuse them")
)

func benchSizes() []int {
	sizes := []int{1000}
	if n := *benchConsents; n > 1000 && !testing.Short() {
		sizes = append(sizes, n)
	}
	return sizes
}

// TestMain closes and removes the databases the benchmarks loaded, which are shared by every run
// of a benchmark so that each size is loaded once.
func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	for _, b := range benchDBs {
		b.db.Close()
		if *benchDir == "" {
			os.RemoveAll(b.dir)
		}
	}
	os.Exit(code)
}

type benchDB struct {
	dir      string
	db       *store.DB
	s        *Store
	patients int
}

var benchDBs = map[int]*benchDB{}

const benchPerPatient = 4

func benchCustodian(i int) string { return fmt.Sprintf("did:schakel:custodian-%03d", i%100) }
func benchPseudonym(v, i int) string {
	return fmt.Sprintf("v%d.%043d", v, i)
}

// benchRecords returns patient i's four records: a permit for any care provider, an objection
// for one organisation type, a medication permit for one organisation, and a pharmacy permit;
// every fourth patient has that last one under the previous pseudonym version.
func benchRecords(i int) []Consent {
	cust, cur, prev := benchCustodian(i), benchPseudonym(2, i), benchPseudonym(2, i)
	if i%4 == 0 {
		prev = benchPseudonym(1, i)
	}
	mk := func(n int, pat string, d Decision, g Grantee, cats []string) Consent {
		c := rec(fmt.Sprintf("urn:uuid:%08x-0000-4000-8000-%012x", i, n), d, g, cats, custodian(cust), patient(pat))
		c.Basis = "WGBO art. 7:457, toestemmingsformulier"
		return c
	}
	return []Consent{
		mk(0, cur, DecisionPermit, anyOrg, all),
		mk(1, cur, DecisionObjection, Grantee{OrgType: "G5"}, all),
		mk(2, cur, DecisionPermit, orgHospital, medication),
		mk(3, prev, DecisionPermit, Grantee{OrgType: "J8"}, medication),
	}
}

// loadBench returns a database on disk holding n consents of n/4 patients at 100 custodians,
// written through the Store's own record writer.
func loadBench(b *testing.B, n int) *benchDB {
	if d, ok := benchDBs[n]; ok {
		return d
	}
	b.Helper()
	dir, loaded := "", false
	if *benchDir != "" {
		dir = filepath.Join(*benchDir, fmt.Sprintf("consents-%d", n))
		_, err := os.Stat(filepath.Join(dir, "loaded"))
		if loaded = err == nil; !loaded {
			os.RemoveAll(dir)
		}
	} else {
		var err error
		if dir, err = os.MkdirTemp("", "consent-bench-"); err != nil {
			b.Fatalf("MkdirTemp: %v", err)
		}
	}
	off := false
	db, err := store.Open(store.Config{Dir: dir, SyncWrites: &off})
	if err != nil {
		b.Fatalf("store.Open: %v", err)
	}
	patients := n / benchPerPatient
	if loaded {
		s, err := New(Config{}, db)
		if err != nil {
			b.Fatalf("New: %v", err)
		}
		benchDBs[n] = &benchDB{dir: dir, db: db, s: s, patients: patients}
		return benchDBs[n]
	}
	s, err := New(Config{Now: func() time.Time { return t0 }}, db)
	if err != nil {
		b.Fatalf("New: %v", err)
	}
	start := time.Now()
	const perTxn = 200 // patients per transaction: about 0.9 MB, within badger's limit of 2.4 MB
	for lo := 0; lo < patients; lo += perTxn {
		err := db.Update(context.Background(), func(tx *store.Txn) error {
			for i := lo; i < min(lo+perTxn, patients); i++ {
				for _, c := range benchRecords(i) {
					if err := putRecord(tx, &c, nil); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			b.Fatalf("load: %v", err)
		}
	}
	// Measure reads from tables, not from the memtable, at every size: close (which flushes the
	// memtable), reopen, and let compaction finish now rather than during the measurement.
	if err := db.Close(); err != nil {
		b.Fatalf("Close: %v", err)
	}
	if db, err = store.Open(store.Config{Dir: dir, SyncWrites: &off}); err != nil {
		b.Fatalf("store.Open: %v", err)
	}
	if s, err = New(Config{}, db); err != nil {
		b.Fatalf("New: %v", err)
	}
	if err := db.Badger().Flatten(2); err != nil {
		b.Fatalf("Flatten: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "loaded"), nil, 0o644); err != nil {
		b.Fatalf("WriteFile: %v", err)
	}
	b.Logf("loaded %d consents of %d patients in %s", n, patients, time.Since(start).Round(time.Second))
	d := &benchDB{dir: dir, db: db, s: s, patients: patients}
	benchDBs[n] = d
	return d
}

// BenchmarkForPatient measures the lookup behind every decision — one patient's records under
// two pseudonym versions at one custodian — with 1,000 stored consents and, with -consents,
// more. The patient is random among all patients (known), among the first 250 (hot: the working
// set of the 1,000-consent database, so that only the size of the store differs, not what fits
// in badger's block cache), or one without records (unknown).
func BenchmarkForPatient(b *testing.B) {
	for _, n := range benchSizes() {
		for _, which := range []string{"known", "hot", "unknown"} {
			b.Run(fmt.Sprintf("consents=%d/patient=%s", n, which), func(b *testing.B) {
				d := loadBench(b, n)
				ctx := context.Background()
				rng := rand.New(rand.NewPCG(1, 2))
				found, want := 0, 0
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					var i int
					switch which {
					case "known":
						i, want = rng.IntN(d.patients), want+benchPerPatient
					case "hot":
						i, want = rng.IntN(min(d.patients, 1000/benchPerPatient)), want+benchPerPatient
					default:
						i = d.patients + rng.IntN(d.patients) // never loaded
					}
					recs, err := d.s.ForPatient(ctx, []string{benchCustodian(i)}, []string{benchPseudonym(2, i), benchPseudonym(1, i)})
					if err != nil {
						b.Fatalf("ForPatient: %v", err)
					}
					found += len(recs)
				}
				if found != want {
					b.Fatalf("ForPatient found %d records, want %d", found, want)
				}
			})
		}
	}
}

// BenchmarkLookupDecide measures a whole decision from storage: the custodian's and requester's
// successions, the patient's records, and Decide.
func BenchmarkLookupDecide(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("consents=%d", n), func(b *testing.B) {
			d := loadBench(b, n)
			ctx := context.Background()
			policy := DefaultPolicy()
			rng := rand.New(rand.NewPCG(3, 4))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				i := rng.IntN(d.patients)
				custodians, err := d.s.Custodians(ctx, benchCustodian(i))
				if err != nil {
					b.Fatalf("Custodians: %v", err)
				}
				preds, err := d.s.Predecessors(ctx, hospital)
				if err != nil {
					b.Fatalf("Predecessors: %v", err)
				}
				pseudonyms := []string{benchPseudonym(2, i), benchPseudonym(1, i)}
				recs, err := d.s.ForPatient(ctx, custodians, pseudonyms)
				if err != nil {
					b.Fatalf("ForPatient: %v", err)
				}
				req := baseRequest()
				req.Custodian, req.Custodians, req.RequesterPredecessors, req.Patient = custodians[0], custodians, preds, pseudonyms
				if got := policy.Decide(req, recs, nil); !got.Permit {
					b.Fatalf("Decide = %+v, want a permit", got)
				}
			}
		})
	}
}

// BenchmarkDecide measures the pure decision over a patient's records.
func BenchmarkDecide(b *testing.B) {
	for _, n := range []int{10, 50} {
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			var records []Consent
			for i := 0; len(records) < n; i++ {
				for _, c := range benchRecords(i) {
					c.Custodian = gp
					if i%2 == 1 {
						c.Patient = patOther // someone else's records mixed in
					} else if c.Patient != benchPseudonym(1, i) {
						c.Patient = patV2
					} else {
						c.Patient = patV1
					}
					c.Created = t0.Add(-time.Duration(len(records)) * time.Hour)
					records = append(records, c)
				}
			}
			records = records[:n]
			policy := DefaultPolicy()
			req := baseRequest()
			if got := policy.Decide(req, records, nil); !got.Permit {
				b.Fatalf("Decide = %+v, want a permit", got)
			}
			b.ReportAllocs()
			for b.Loop() {
				policy.Decide(req, records, nil)
			}
		})
	}
}
