package api

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
	"github.com/schakel-health/schakel/proto/schakel/v1/schakelv1connect"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and a client certificate, as files.
type testPKI struct {
	caFile, serverCert, serverKey string
	pool                          *x509.CertPool
	client                        tls.Certificate
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatalf("CreateCertificate CA: %v", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatalf("ParseCertificate CA: %v", err)
	}
	issue := func(serial int64, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatalf("GenerateKey: %v", err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: "test"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatalf("CreateCertificate: %v", err)
		}
		return der, key
	}
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatalf("WriteFile %s: %v", name, err)
		}
		return path
	}
	keyDER := func(k *ecdsa.PrivateKey) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatalf("MarshalPKCS8PrivateKey: %v", err)
		}
		return der
	}
	serverDER, serverKey := issue(2, x509.ExtKeyUsageServerAuth)
	clientDER, clientKey := issue(3, x509.ExtKeyUsageClientAuth)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return testPKI{
		caFile:     write("ca.pem", "CERTIFICATE", caDER),
		serverCert: write("server.pem", "CERTIFICATE", serverDER),
		serverKey:  write("server-key.pem", "PRIVATE KEY", keyDER(serverKey)),
		pool:       pool,
		client:     tls.Certificate{Certificate: [][]byte{clientDER}, PrivateKey: clientKey},
	}
}

func TestMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	cfg := Config{TLSCert: pki.serverCert, TLSKey: pki.serverKey, ClientCA: pki.caFile}

	if _, err := New(Config{Addr: "0.0.0.0:0", TLSCert: pki.serverCert, TLSKey: pki.serverKey, ClientCA: pki.caFile}, &fakeBackend{}, nil); err != nil {
		t.Errorf("New on all interfaces with mTLS and no token: %v", err)
	}
	_, base := startServer(t, cfg, &fakeBackend{})

	tests := []struct {
		name    string
		certs   []tls.Certificate
		opts    []connect.ClientOption
		wantErr bool
	}{
		{name: "gRPC with client certificate", certs: []tls.Certificate{pki.client}, opts: []connect.ClientOption{connect.WithGRPC()}},
		{name: "Connect with client certificate", certs: []tls.Certificate{pki.client}},
		{name: "gRPC without client certificate", opts: []connect.ClientOption{connect.WithGRPC()}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p http.Protocols
			p.SetHTTP2(true)
			tr := &http.Transport{
				Protocols:       &p,
				TLSClientConfig: &tls.Config{RootCAs: pki.pool, Certificates: tt.certs},
			}
			defer tr.CloseIdleConnections()
			client := schakelv1connect.NewNodeServiceClient(&http.Client{Transport: tr}, base, tt.opts...)
			info, err := client.GetNodeInfo(t.Context(), connect.NewRequest(&schakelv1.GetNodeInfoRequest{}))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("GetNodeInfo without a client certificate succeeded")
				}
				return
			}
			if err != nil {
				t.Fatalf("GetNodeInfo: %v", err)
			}
			if info.Msg.GetVersion() != "test-version" {
				t.Errorf("GetNodeInfo: version %q", info.Msg.GetVersion())
			}
		})
	}
}
