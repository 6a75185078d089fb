package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/labtest"
	"github.com/butterfly-go/butterfly/internal/model"
)

// writeCerts writes a CA and a certificate it signs (for 127.0.0.1,
// server and client use) with its key, PEM, in dir.
func writeCerts(t *testing.T, dir string) labtest.EtcdTLS {
	t.Helper()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "etcd"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return labtest.EtcdTLS{CA: write("ca.pem", "CERTIFICATE", caDER), Cert: write("cert.pem", "CERTIFICATE", leafDER),
		Key: write("key.pem", "EC PRIVATE KEY", keyDER)}
}

// TestTLS: with etcd-ca, etcd-cert and etcd-key an agent works against an
// etcd that requires client certificates; without its certificate it
// does not register and says why.
func TestTLS(t *testing.T) {
	files := writeCerts(t, t.TempDir())
	e := labtest.StartEtcd(t, t.TempDir(), labtest.EtcdSpec{IP: "127.0.0.1", TLS: &files})
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	run := func(name string, cert, key string) *Agent {
		dp := &lockedDP{}
		a, err := New(Config{Endpoints: e.Endpoints(), Node: name, VTEP: netip.MustParseAddr("10.0.0.1"), Prefix: "/butterfly/",
			CA: files.CA, Cert: cert, Key: key, Store: model.New(dp, model.Options{}), Remotes: dp, Logger: quiet, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); a.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done; a.Close() })
		return a
	}
	good := run("good", files.Cert, files.Key)
	bad := run("bad", "", "")
	labtest.Eventually(t, 10*time.Second, "the agent with a certificate registered", func() error {
		if st := good.Status(); !st.GetConnected() {
			return fmt.Errorf("status %v", st)
		}
		if l := good.Nodes(); len(l) != 1 || l[0].GetName() != "good" {
			return fmt.Errorf("nodes %v", l)
		}
		return nil
	})
	if err := good.AddSG(model.SG{ID: "web"}); err != nil {
		t.Fatal(err)
	}
	if st := bad.Status(); st.GetConnected() || st.GetError() == "" {
		t.Fatalf("agent without a client certificate: status %v", st)
	}
	if out, err := e.Ctl("get", "--prefix", "--keys-only", "/butterfly/nodes/"); err != nil || out != "/butterfly/nodes/good\n\n" {
		t.Fatalf("nodes in etcd: %q, %v", out, err)
	}
}
