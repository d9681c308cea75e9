package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/internal/config"
)

// testCA is a CA that issues certificates and revocation lists.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	n    int64
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, n: 1}
}

func (ca *testCA) issue(t *testing.T, cn string, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca.n++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(ca.n), Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// crl writes a PEM revocation list of the serials, with the given next
// update, to a new file.
func (ca *testCA) crl(t *testing.T, next time.Time, revoked ...tls.Certificate) string {
	t.Helper()
	l := &x509.RevocationList{Number: big.NewInt(ca.n), ThisUpdate: time.Now().Add(-2 * time.Hour), NextUpdate: next}
	for _, c := range revoked {
		l.RevokedCertificateEntries = append(l.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: c.Leaf.SerialNumber, RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, l, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "crl.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (ca *testCA) file(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Ward calling a peer (a C-MOVE destination over TLS) refuses a server
// certificate the revocation list names; a stale list is still applied.
func TestPeerTLSRevokedServer(t *testing.T) {
	ca := newTestCA(t, "Site CA")
	good := ca.issue(t, "good.example", x509.ExtKeyUsageServerAuth)
	bad := ca.issue(t, "bad.example", x509.ExtKeyUsageServerAuth)
	d := config.Default().DICOM
	d.TLSPeerCA = ca.file(t)
	d.TLSCRL = ca.crl(t, time.Now().Add(-time.Minute), bad) // stale: applied all the same
	crl, err := newRevocations(&d, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	client, err := peerTLS(&d, crl)
	if err != nil {
		t.Fatal(err)
	}
	// Over loopback TCP: a refusal is an alert written while the other
	// side may still be writing, which an unbuffered net.Pipe deadlocks on.
	dial := func(cert tls.Certificate) error {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			_ = tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}}).Handshake()
			c.Close()
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		cfg := client.Clone()
		cfg.ServerName = cert.Leaf.Subject.CommonName
		return tls.Client(c, cfg).Handshake()
	}
	if err := dial(good); err != nil {
		t.Errorf("good server: %v", err)
	}
	if err := dial(bad); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("revoked server: %v", err)
	}

	// Lists of a CA Ward does not trust, and files without a list, are
	// refused.
	other := newTestCA(t, "Other CA")
	for name, path := range map[string]string{
		"another CA's list": other.crl(t, time.Now().Add(time.Hour)),
		"a certificate":     ca.file(t),
	} {
		d2 := d
		d2.TLSCRL = path
		if _, err := newRevocations(&d2, slog.New(slog.DiscardHandler)); err == nil {
			t.Errorf("%s accepted as tls_crl", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}
