package outbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/schakel-health/schakel/crypto"
)

// The fixed keys and time the committed seed corpus in testdata/fuzz/FuzzOpen was sealed with.
const (
	fuzzSenderJWK    = `{"kty":"OKP","crv":"Ed25519","x":"Z-n7o4kdRvp6Dhl5gy7hMBhkvOstKj4n0CTqXaq78uM","d":"2zbD3w36iMjJ6Blmd6StNU_At9gnyOrkJJqPmWIFd74","kid":"Ta5q06ofEunaLVy75J-kmknvUhfHZXk_Fe1V6bfa_mQ","alg":"EdDSA","use":"sig"}`
	fuzzRecipientJWK = `{"kty":"EC","crv":"P-256","x":"G_HBWgG_EfSR01kn4kdWQcM4g2MCHt1BgznFbXKTqgw","y":"9pytoIG75wtEkJzoy4aryd2dsGQoAvs_2U0yuih_CW4","d":"HU0bsFxgIMjTRHT9LtbcEWYwyF7cq_3NBU36D8orq1o","kid":"6V9rxoyFWje_l6Wp8Wg288meudtUZPZFdNvNF18gTAk","alg":"ECDH-ES+A256KW","use":"enc"}`
	fuzzSenderDID    = "did:schakel:fuzzsender"
	fuzzRecipientDID = "did:schakel:fuzzrecipient"
)

var fuzzNow = time.Date(2026, 3, 2, 9, 30, 0, 0, time.UTC)

func fuzzKeys(tb testing.TB) (sender, recipient *crypto.PrivateKey) {
	tb.Helper()
	sender, err := crypto.ParsePrivateKey([]byte(fuzzSenderJWK))
	if err != nil {
		tb.Fatalf("ParsePrivateKey: %v", err)
	}
	recipient, err = crypto.ParsePrivateKey([]byte(fuzzRecipientJWK))
	if err != nil {
		tb.Fatalf("ParsePrivateKey: %v", err)
	}
	return sender, recipient
}

// fuzzSealed are the SHA-256 hashes of the payloads in the seed corpus that Seal made with the
// fixed keys: the only payloads that may open.
var fuzzSealed = map[string]bool{
	"037f10ba3db204880a2215b69df01bf23273962044a82afd8e2e1b9502f89021": true, // valid-consent-request
	"639cfe264ce94a0ca7797cb19bb72b886a47e5fd370ca84ee2da74692a3f13fc": true, // valid-kind-set
	"ad99434479fae3e582ad572748a3df1921f71ca0e7e9f4ce2ae71fa97f966a51": true, // valid-empty-body
}

// FuzzOpen checks that Open never panics; that it opens only payloads Seal made with the fixed
// keys, and then only with the metadata they were sealed with; that every refusal wraps exactly
// one of the envelope errors; and that changing any one of a few bytes of an opened payload makes
// it refused.
//
// Every execution that gets past the shape checks does an ECDH, so the fuzzer's default minute of
// minimising each new interesting input shows as long stretches of 0 execs/s; run it with
// -fuzzminimizetime=2s.
func FuzzOpen(f *testing.F) {
	sender, recipient := fuzzKeys(f)
	resolve := func(_ context.Context, did, kid string, _ time.Time) (*crypto.PublicKey, error) {
		if did == fuzzSenderDID && kid == sender.KID() {
			return sender.Public(), nil
		}
		return nil, errors.New("unknown key")
	}
	f.Add("", "", "", "", []byte(nil))
	f.Add("AAAAAAAAAAAAAAAAAAAAAA", fuzzSenderDID, fuzzRecipientDID, "", []byte("a.b.c.d.e"))

	f.Fuzz(func(t *testing.T, id, from, to, kind string, payload []byte) {
		m := &Message{ID: id, From: from, To: to, Kind: kind, Payload: payload}
		o, err := Open(context.Background(), m, recipient, fuzzRecipientDID, resolve, fuzzNow)
		if err != nil {
			if o != nil {
				t.Fatalf("Open returned %+v with error %v", o, err)
			}
			n := 0
			for _, e := range envelopeErrors {
				if errors.Is(err, e) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("Open: %v wraps %d envelope errors, want 1", err, n)
			}
			return
		}
		sum := sha256.Sum256(payload)
		if !fuzzSealed[hex.EncodeToString(sum[:])] {
			t.Fatalf("Open accepted a payload nobody sealed: %q", payload)
		}
		if o.ID != id || o.From != from || o.To != to || (kind != "" && kind != o.Kind) {
			t.Fatalf("Open: %+v for message %s from %s to %s kind %q", o, id, from, to, kind)
		}
		for _, i := range []int{0, len(payload) / 3, len(payload) / 2, len(payload) - 1} {
			changed := *m
			changed.Payload = append([]byte(nil), payload...)
			changed.Payload[i] ^= 0x20
			if _, err := Open(context.Background(), &changed, recipient, fuzzRecipientDID, resolve, fuzzNow); err == nil {
				t.Fatalf("Open accepted the payload with byte %d changed", i)
			}
		}
	})
}

// TestFuzzSeedsOpen keeps the seed corpus meaningful: the payloads listed in fuzzSealed open, so
// FuzzOpen's properties about opened messages are exercised, and the others do not.
func TestFuzzSeedsOpen(t *testing.T) {
	sender, recipient := fuzzKeys(t)
	dir := filepath.Join("testdata", "fuzz", "FuzzOpen")
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("ReadDir: %v", err)
	}
	opened := 0
	for _, fi := range files {
		raw, err := os.ReadFile(filepath.Join(dir, fi.Name()))
		if err != nil {
			t.Fatalf("ReadFile: %v", err)
		}
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		if len(lines) != 6 || lines[0] != "go test fuzz v1" {
			t.Fatalf("%s: not a corpus file of five values", fi.Name())
		}
		var v [5]string
		for i, l := range lines[1:] {
			l = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(l, "string("), "[]byte("), ")")
			if v[i], err = strconv.Unquote(l); err != nil {
				t.Fatalf("%s line %d: %v", fi.Name(), i+2, err)
			}
		}
		m := &Message{ID: v[0], From: v[1], To: v[2], Kind: v[3], Payload: []byte(v[4])}
		_, err = Open(t.Context(), m, recipient, fuzzRecipientDID, resolverOf(&org{did: fuzzSenderDID, sig: sender}), fuzzNow)
		if want := strings.HasPrefix(fi.Name(), "valid-"); (err == nil) != want {
			t.Errorf("%s: Open: %v, want success %v", fi.Name(), err, want)
		}
		if err == nil {
			opened++
			sum := sha256.Sum256(m.Payload)
			if !fuzzSealed[hex.EncodeToString(sum[:])] {
				t.Errorf("%s opens but is not in fuzzSealed", fi.Name())
			}
		}
	}
	if opened != len(fuzzSealed) {
		t.Errorf("%d seeds open, want %d", opened, len(fuzzSealed))
	}
}
