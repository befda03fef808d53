package vc

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// FuzzParse: arbitrary input never panics, and what parses keeps its fields on a second parse.
func FuzzParse(f *testing.F) {
	fx := newFixture(f)
	f.Add(fx.orgCredential(fx.reg, fx.rogue.id, "Huisartsenpraktijk Jansen", t0, time.Hour))
	list, _, err := fx.reg.list.Issue(fx.reg.sig, t0)
	if err != nil {
		f.Fatalf("StatusListState.Issue: %v", err)
	}
	f.Add(list)
	if grant, _, err := Issue(fx.reg.sig, referralRequest(fx.reg.id, fx.rogue.id, t0)); err == nil {
		f.Add(grant)
	} else {
		f.Fatalf("Issue(referral grant): %v", err)
	}
	succ := successionRequest(fx.reg.id, fx.rogue.id, t0)
	if succ.Status, err = fx.reg.list.Allocate(); err != nil {
		f.Fatalf("Allocate: %v", err)
	}
	if c, _, err := Issue(fx.reg.sig, succ); err == nil {
		f.Add(c)
	} else {
		f.Fatalf("Issue(succession): %v", err)
	}
	f.Add([]byte("eyJhbGciOiJFZERTQSIsInR5cCI6InZjK2p3dCJ9.e30.AA"))
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := Parse(in)
		if err != nil {
			return
		}
		again, err := Parse(c.JWT)
		if err != nil || again.ID != c.ID || again.Issuer != c.Issuer || again.Subject != c.Subject {
			t.Fatalf("second parse differs: %v", err)
		}
	})
}

// FuzzVerifyTampered changes bytes of a valid credential; a changed credential never verifies.
func FuzzVerifyTampered(f *testing.F) {
	fx := newFixture(f)
	gp := newParty(f, fx.dids, t0)
	good := fx.orgCredential(fx.reg, gp.id, "Huisartsenpraktijk Jansen", t0.Add(time.Minute), 365*24*time.Hour)
	if _, err := fx.s.Verifier().Verify(context.Background(), good); err != nil {
		f.Fatalf("Verify(good): %v", err)
	}
	f.Add(uint16(10), byte('x'))
	f.Add(uint16(200), byte('A'))
	f.Add(uint16(len(good)-1), byte('B'))
	f.Fuzz(func(t *testing.T, pos uint16, b byte) {
		in := bytes.Clone(good)
		in[int(pos)%len(in)] = b
		if bytes.Equal(in, good) {
			return
		}
		if _, err := fx.s.Verifier().Verify(context.Background(), in); err == nil {
			t.Fatalf("tampered credential verified: byte %d set to %q", int(pos)%len(in), b)
		}
	})
}
