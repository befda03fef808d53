package did

import (
	"testing"
	"time"
)

// FuzzApply feeds arbitrary bytes as a key event after a known genesis. Properties: no panic; what
// Apply accepts parses, and its hash chain names the genesis.
func FuzzApply(f *testing.F) {
	o := newOrg(f)
	st, _, err := Apply(nil, o.genesis, t0)
	if err != nil {
		f.Fatalf("Apply(genesis): %v", err)
	}
	s1, e1 := newKeys(f)
	rot, _ := NewRotate(o.sig, st, s1.Public(), e1.Public(), t0.Add(time.Hour))
	deact, _ := NewDeactivate(o.sig, st, t0.Add(time.Hour))
	f.Add(o.genesis)
	f.Add(rot)
	f.Add(deact)
	f.Add([]byte("eyJhbGciOiJub25lIn0.e30."))
	f.Fuzz(func(t *testing.T, ev []byte) {
		next, parsed, err := Apply(st, ev, t0.Add(2*time.Hour))
		if err != nil {
			return
		}
		if parsed.Prev != st.Head || next.Seq != st.Seq+1 {
			t.Fatalf("accepted an event that does not extend the chain: %+v", parsed)
		}
		if string(ev) != string(rot) && string(ev) != string(deact) {
			t.Fatalf("accepted an event nobody signed: %q", ev)
		}
	})
}
