package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-pacs/ward/tlsprofile"
)

func wantMode(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != mode {
		t.Errorf("%s: mode %v, want %v", path, st.Mode().Perm(), mode)
	}
}

func readCRL(t *testing.T, path string) *x509.RevocationList {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "X509 CRL" {
		t.Fatalf("%s: no PEM revocation list", path)
	}
	l, err := x509.ParseRevocationList(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	f, err := Init(dir, []string{"ward.example", "127.0.0.1", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	wantMode(t, dir, 0o700)
	wantMode(t, f.CAKey, 0o600)
	wantMode(t, f.ServerKey, 0o600)
	wantMode(t, f.CACert, 0o600)
	wantMode(t, f.ServerCert, 0o600)
	wantMode(t, f.CRL, 0o600)
	if _, err := os.Stat(f.CRL + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary list left behind: %v", err)
	}

	ca, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := ca.Certificate()
	if !c.IsCA || !c.BasicConstraintsValid || !c.MaxPathLenZero || c.KeyUsage&x509.KeyUsageCertSign == 0 || c.KeyUsage&x509.KeyUsageCRLSign == 0 {
		t.Fatalf("CA: %+v", c)
	}
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("CA key is not ECDSA P-256: %T", c.PublicKey)
	}
	if d := time.Until(c.NotAfter); d < CAValidity-2*time.Hour || d > CAValidity {
		t.Errorf("CA validity %v", d)
	}
	roots := x509.NewCertPool()
	roots.AddCert(c)
	pair, err := tls.LoadX509KeyPair(f.ServerCert, f.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := pair.Leaf
	if srv.Subject.CommonName != "ward.example" {
		t.Errorf("server CN %q", srv.Subject.CommonName)
	}
	for _, name := range []string{"ward.example", "127.0.0.1", "::1"} {
		if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("server certificate for %s: %v", name, err)
		}
	}
	if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, DNSName: "other.example"}); err == nil {
		t.Error("server certificate verifies for another name")
	}
	if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("server certificate usable for client authentication")
	}
	if l := readCRL(t, f.CRL); len(l.RevokedCertificateEntries) != 0 || l.CheckSignatureFrom(c) != nil || !l.NextUpdate.Equal(c.NotAfter) {
		t.Errorf("initial list: %d entries, next update %v", len(l.RevokedCertificateEntries), l.NextUpdate)
	}

	// Never over a CA.
	before, _ := os.ReadFile(f.CAKey)
	if _, err := Init(dir, []string{"localhost"}); !errors.Is(err, ErrCAExists) {
		t.Fatalf("second Init: %v", err)
	}
	if after, _ := os.ReadFile(f.CAKey); string(after) != string(before) {
		t.Fatal("second Init changed the CA key")
	}
	for _, names := range [][]string{nil, {""}, {"a b"}, {"../x"}} {
		if _, err := Init(filepath.Join(t.TempDir(), "pki"), names); err == nil {
			t.Errorf("names %q accepted", names)
		}
	}
}

// Two Inits at once: one CA, one failure.
func TestInitConcurrent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = Init(dir, []string{"localhost"})
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		}
	}
	if ok != 1 {
		t.Fatalf("%d Inits succeeded: %v", ok, errs)
	}
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
}

func TestIssueRevoke(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	f, err := Init(dir, []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())

	ct1, err := ca.Issue("CT1")
	if err != nil {
		t.Fatal(err)
	}
	wantMode(t, filepath.Join(dir, PeersDir), 0o700)
	wantMode(t, ct1.Key, 0o600)
	wantMode(t, ct1.Cert, 0o600)
	pair, err := tls.LoadX509KeyPair(ct1.Cert, ct1.Key)
	if err != nil {
		t.Fatal(err)
	}
	cl := pair.Leaf
	if cl.Subject.CommonName != "CT1" || ct1.Fingerprint != tlsprofile.Fingerprint(cl.Raw) {
		t.Errorf("CN %q, fingerprint %s", cl.Subject.CommonName, ct1.Fingerprint)
	}
	if _, err := cl.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client chain: %v", err)
	}
	if _, err := cl.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("client certificate usable as a server certificate")
	}
	if d := time.Until(cl.NotAfter); d < ClientValidity-2*time.Hour || d > ClientValidity {
		t.Errorf("client validity %v", d)
	}
	if _, err := ca.Issue("CT1"); !errors.Is(err, ErrIssued) {
		t.Errorf("issuing twice: %v", err)
	}
	for _, bad := range []string{"", "../evil", ".hidden", "-flag", "a/b", "A B", strings.Repeat("x", 65)} {
		if _, err := ca.Issue(bad); !errors.Is(err, ErrPeerName) {
			t.Errorf("Issue(%q): %v", bad, err)
		}
		if _, err := ca.Revoke(bad); !errors.Is(err, ErrPeerName) {
			t.Errorf("Revoke(%q): %v", bad, err)
		}
	}
	mr1, err := ca.Issue("MR1")
	if err != nil {
		t.Fatal(err)
	}

	before := readCRL(t, f.CRL)
	r, err := ca.Revoke("CT1")
	if err != nil {
		t.Fatal(err)
	}
	if r.CRL != f.CRL || r.Listed != 1 || r.Cert.SerialNumber.Cmp(cl.SerialNumber) != 0 || r.CertFile != ct1.Cert {
		t.Errorf("revoked: %+v", r)
	}
	after := readCRL(t, f.CRL)
	if after.Number.Cmp(before.Number) <= 0 || len(after.RevokedCertificateEntries) != 1 || after.RevokedCertificateEntries[0].SerialNumber.Cmp(cl.SerialNumber) != 0 {
		t.Errorf("list after revoking: number %v (before %v), %d entries", after.Number, before.Number, len(after.RevokedCertificateEntries))
	}
	wantMode(t, f.CRL, 0o600)
	for _, p := range []string{ct1.Cert, ct1.Key} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s not moved aside", p)
		}
		if _, err := os.Stat(p + r.Suffix); err != nil {
			t.Errorf("%s: %v", p+r.Suffix, err)
		}
	}
	// The list is one Ward loads, and it names CT1's certificate only.
	rev, err := tlsprofile.LoadRevocations(f.CRL, []*x509.Certificate{ca.Certificate()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	mrPair, _ := tls.LoadX509KeyPair(mr1.Cert, mr1.Key)
	if err := rev.Check(tls.ConnectionState{PeerCertificates: []*x509.Certificate{cl}}); err == nil {
		t.Error("CT1 not refused")
	}
	if err := rev.Check(tls.ConnectionState{PeerCertificates: []*x509.Certificate{mrPair.Leaf}}); err != nil {
		t.Errorf("MR1 refused: %v", err)
	}

	// CT1 can be issued anew; a peer without a certificate cannot be
	// revoked; listing a serial twice keeps one entry.
	if _, err := ca.Issue("CT1"); err != nil {
		t.Errorf("issuing CT1 anew: %v", err)
	}
	if _, err := ca.Revoke("NOBODY"); !errors.Is(err, ErrNotIssued) {
		t.Errorf("revoking a peer without a certificate: %v", err)
	}
	if _, n, err := ca.WriteCRL(cl.SerialNumber); err != nil || n != 1 {
		t.Errorf("listing a serial again: %d, %v", n, err)
	}
	if _, err := ca.Revoke("MR1"); err != nil {
		t.Fatal(err)
	}
	if l := readCRL(t, f.CRL); len(l.RevokedCertificateEntries) != 2 {
		t.Errorf("%d entries after revoking MR1", len(l.RevokedCertificateEntries))
	}
}

// A revocation list or certificate from another CA is refused, and the
// list is left as it was.
func TestForeignFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	f, err := Init(dir, []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	otherDir := filepath.Join(t.TempDir(), "pki")
	of, err := Init(otherDir, []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := Open(dir)
	other, _ := Open(otherDir)
	x, err := other.Issue("X")
	if err != nil {
		t.Fatal(err)
	}
	// Another CA's certificate under our peers directory.
	os.MkdirAll(filepath.Join(dir, PeersDir), 0o700)
	b, _ := os.ReadFile(x.Cert)
	if err := os.WriteFile(filepath.Join(dir, PeersDir, "X.crt"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Revoke("X"); err == nil || !strings.Contains(err.Error(), "not issued by the CA") {
		t.Errorf("revoking another CA's certificate: %v", err)
	}
	// Another CA's list in our place.
	foreign, _ := os.ReadFile(of.CRL)
	if err := os.WriteFile(f.CRL, foreign, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.WriteCRL(nil); err == nil || !strings.Contains(err.Error(), "not signed by the CA") {
		t.Errorf("another CA's list: %v", err)
	}
	if now, _ := os.ReadFile(f.CRL); string(now) != string(foreign) {
		t.Error("the foreign list was replaced")
	}
	// A key that is not the CA's.
	if err := os.Remove(filepath.Join(dir, CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	kb, _ := os.ReadFile(filepath.Join(otherDir, CAKeyFile))
	os.WriteFile(filepath.Join(dir, CAKeyFile), kb, 0o600)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "does not hold the key") {
		t.Errorf("Open with another CA's key: %v", err)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "none")); !errors.Is(err, ErrNoCA) {
		t.Errorf("Open without a CA: %v", err)
	}
}
