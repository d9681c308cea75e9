package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/internal/server"
	"github.com/ward-pacs/ward/tlsprofile"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("%s: no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

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

func TestPKIInitIssue(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	out, errs, code := runCLI(t, "pki", "init", "--data", data, "--name", "ward.example", "--name", "127.0.0.1", "--name", "::1")
	if code != 0 {
		t.Fatalf("init: %d %s", code, errs)
	}
	pki, _ := filepath.Abs(filepath.Join(data, "pki"))
	caPath, srvPath := filepath.Join(pki, "ca.crt"), filepath.Join(pki, "server.crt")
	for _, s := range []string{caPath, filepath.Join(pki, "ca.key"), srvPath, filepath.Join(pki, "server.key"), `tls_listen    = "127.0.0.1:2762"`, `tls_client_ca = "` + caPath + `"`} {
		if !strings.Contains(out, s) {
			t.Errorf("init output lacks %q:\n%s", s, out)
		}
	}
	wantMode(t, caPath, 0o600)
	wantMode(t, srvPath, 0o600)
	wantMode(t, filepath.Join(pki, "ca.key"), 0o600)
	wantMode(t, filepath.Join(pki, "server.key"), 0o600)

	ca := readCert(t, caPath)
	if !ca.IsCA || !ca.BasicConstraintsValid || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Fatalf("CA: %+v", ca)
	}
	if pub, ok := ca.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("CA key is not ECDSA P-256: %T", ca.PublicKey)
	}
	if d := ca.NotAfter.Sub(time.Now()); d < 9*365*24*time.Hour || d > 11*365*24*time.Hour {
		t.Errorf("CA validity %v, want about 10 years", d)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	srv := readCert(t, srvPath)
	if d := srv.NotAfter.Sub(time.Now()); d < 365*24*time.Hour || d > 3*365*24*time.Hour {
		t.Errorf("server validity %v, want about 2 years", d)
	}
	for _, name := range []string{"ward.example", "127.0.0.1", "::1"} {
		if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("server certificate for %s: %v", name, err)
		}
	}
	if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, DNSName: "other.example"}); err == nil {
		t.Error("server certificate verifies for a name it was not issued for")
	}
	if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("server certificate usable for client authentication")
	}
	if _, err := tls.LoadX509KeyPair(srvPath, filepath.Join(pki, "server.key")); err != nil {
		t.Fatalf("server pair: %v", err)
	}

	// A second init refuses and leaves the CA alone.
	before, _ := os.ReadFile(caPath)
	if _, errs, code := runCLI(t, "pki", "init", "--data", data); code == 0 || !strings.Contains(errs, "already exists") {
		t.Fatalf("second init: %d %s", code, errs)
	}
	if after, _ := os.ReadFile(caPath); string(after) != string(before) {
		t.Fatal("second init changed the CA")
	}

	out, errs, code = runCLI(t, "pki", "issue", "MODALITY1", "--data", data)
	if code != 0 {
		t.Fatalf("issue: %d %s", code, errs)
	}
	crt, key := filepath.Join(pki, "peers", "MODALITY1.crt"), filepath.Join(pki, "peers", "MODALITY1.key")
	wantMode(t, crt, 0o600)
	wantMode(t, key, 0o600)
	cl := readCert(t, crt)
	if cl.Subject.CommonName != "MODALITY1" {
		t.Errorf("CN %q", cl.Subject.CommonName)
	}
	if _, err := cl.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client chain: %v", err)
	}
	if _, err := cl.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("client certificate usable as a server certificate")
	}
	fp := tlsprofile.Fingerprint(cl.Raw)
	if len(fp) != 64 || !strings.Contains(out, "SHA-256 fingerprint: "+fp) {
		t.Errorf("fingerprint %s not in output:\n%s", fp, out)
	}
	if _, err := tls.LoadX509KeyPair(crt, key); err != nil {
		t.Fatalf("client pair: %v", err)
	}
	// Issuing again, or a name that is not a safe file name, is refused.
	for _, bad := range [][]string{
		{"pki", "issue", "MODALITY1", "--data", data},
		{"pki", "issue", "../evil", "--data", data},
		{"pki", "issue", "--data", data},
		{"pki", "issue", "X", "--data", filepath.Join(t.TempDir(), "nopki")},
	} {
		if _, _, code := runCLI(t, bad...); code == 0 {
			t.Errorf("%v accepted", bad)
		}
	}
}

// The files `ward pki init` writes are what the TLS listener loads; bad
// ones are refused at start with a clear error.
func TestTLSListenerValidation(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	if _, errs, code := runCLI(t, "pki", "init", "--data", data); code != 0 {
		t.Fatal(errs)
	}
	pki := filepath.Join(data, "pki")
	good := config.Default().DICOM
	good.TLSListen, good.TLSCert, good.TLSKey, good.TLSClientCA = "127.0.0.1:0", filepath.Join(pki, "server.crt"), filepath.Join(pki, "server.key"), filepath.Join(pki, "ca.crt")
	tc, err := server.TLSConfig(&good)
	if err != nil {
		t.Fatal(err)
	}
	if tc.MinVersion != tls.VersionTLS12 || tc.ClientAuth != tls.RequireAndVerifyClientCert || tc.Renegotiation != tls.RenegotiateNever {
		t.Fatalf("tls config %+v", tc)
	}
	for _, id := range tc.CipherSuites {
		n := tls.CipherSuiteName(id)
		if !strings.HasPrefix(n, "TLS_ECDHE_") || !(strings.Contains(n, "_GCM_") || strings.Contains(n, "CHACHA20_POLY1305")) {
			t.Errorf("cipher suite %s", n)
		}
	}
	notPEM := filepath.Join(t.TempDir(), "bad.pem")
	os.WriteFile(notPEM, []byte("not a certificate\n"), 0o644)
	cases := []struct {
		name string
		edit func(d *config.DICOM)
		want string
	}{
		{"missing key", func(d *config.DICOM) { d.TLSKey = filepath.Join(pki, "nope.key") }, "tls_key"},
		{"key of another cert", func(d *config.DICOM) { d.TLSKey = filepath.Join(pki, "ca.key") }, "tls_cert"},
		{"client CA not PEM", func(d *config.DICOM) { d.TLSClientCA = notPEM }, "no PEM certificate"},
		{"client CA missing", func(d *config.DICOM) { d.TLSClientCA = filepath.Join(pki, "nope.crt") }, "tls_client_ca"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := good
			tc.edit(&d)
			if _, err := server.TLSConfig(&d); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error naming %q, got %v", tc.want, err)
			}
		})
	}
	// Config rules: certificate and key required; the loopback any-AE
	// opt-in is refused beside a listener that is not loopback.
	for _, tc := range []struct {
		name string
		edit func(d *config.DICOM)
		want string
	}{
		{"any AE beside a non-loopback TLS listener", func(d *config.DICOM) { d.TLSListen = "0.0.0.0:2762"; d.LoopbackAnyAE = true }, "loopback_any_ae"},
		{"plain beyond loopback unacknowledged", func(d *config.DICOM) { d.Listen = "0.0.0.0:11112" }, "plaintext_networks"},
		{"plaintext for every address", func(d *config.DICOM) { d.Listen = "0.0.0.0:11112"; d.PlaintextNetworks = []string{"0.0.0.0/0"} }, "is every address"},
		{"no cert", func(d *config.DICOM) { d.TLSCert = "" }, "tls_cert and tls_key"},
		{"no key", func(d *config.DICOM) { d.TLSKey = "" }, "tls_cert and tls_key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := config.Default()
			c.DICOM = good
			c.DICOM.Listen = "127.0.0.1:0"
			tc.edit(&c.DICOM)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want %q, got %v", tc.want, err)
			}
		})
	}
	// ward serve refuses to start on a bad TLS setting, and says why.
	port := func() string {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		defer ln.Close()
		return ln.Addr().String()
	}
	// (Refused by validation, before anything is bound.)
	_, errs, code := runCLI(t, "serve", "--data", data, "--dicom-listen", port(), "--dicom-tls-listen", "0.0.0.0:2762",
		"--tls-cert", good.TLSCert, "--tls-key", good.TLSKey, "--loopback-any-ae")
	if code == 0 || !strings.Contains(errs, "not starting") || !strings.Contains(errs, "loopback_any_ae") {
		t.Fatalf("serve with any-AE beside a non-loopback TLS listener: %d %s", code, errs)
	}
	_, errs, code = runCLI(t, "serve", "--data", data, "--dicom-listen", port(), "--dicom-tls-listen", port(),
		"--tls-cert", good.TLSCert, "--tls-key", good.TLSKey, "--tls-client-ca", notPEM)
	if code == 0 || !strings.Contains(errs, "no PEM certificate") {
		t.Fatalf("serve with a bad client CA: %d %s", code, errs)
	}
}

// `ward pki revoke` lists a peer's certificate in the CA's revocation list;
// a TLS listener with tls_crl refuses that certificate in the handshake
// and accepts the others, and reads a changed list while it runs.
func TestPKIRevoke(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	for _, args := range [][]string{{"pki", "init", "--data", data}, {"pki", "issue", "CT1", "--data", data}, {"pki", "issue", "MR1", "--data", data}} {
		if _, errs, code := runCLI(t, args...); code != 0 {
			t.Fatal(errs)
		}
	}
	pki := filepath.Join(data, "pki")
	ct1, err := tls.LoadX509KeyPair(filepath.Join(pki, "peers", "CT1.crt"), filepath.Join(pki, "peers", "CT1.key"))
	if err != nil {
		t.Fatal(err)
	}
	mr1, err := tls.LoadX509KeyPair(filepath.Join(pki, "peers", "MR1.crt"), filepath.Join(pki, "peers", "MR1.key"))
	if err != nil {
		t.Fatal(err)
	}
	out, errs, code := runCLI(t, "pki", "revoke", "CT1", "--data", data)
	if code != 0 {
		t.Fatal(errs)
	}
	t.Log(out)
	crl := filepath.Join(pki, "crl.pem")
	if !strings.Contains(out, crl) {
		t.Errorf("output does not name %s", crl)
	}
	if _, err := os.Stat(filepath.Join(pki, "peers", "CT1.crt")); !os.IsNotExist(err) {
		t.Error("the revoked certificate was not moved aside")
	}
	// A new certificate for CT1 can be issued; a peer never issued one
	// cannot be revoked.
	if _, errs, code := runCLI(t, "pki", "issue", "CT1", "--data", data); code != 0 {
		t.Fatalf("issuing CT1 again: %s", errs)
	}
	if _, _, code := runCLI(t, "pki", "revoke", "NOBODY", "--data", data); code == 0 {
		t.Error("revoking a peer without a certificate succeeded")
	}

	d := config.Default().DICOM
	d.TLSListen, d.TLSCert, d.TLSKey, d.TLSClientCA, d.TLSCRL = "127.0.0.1:0", filepath.Join(pki, "server.crt"), filepath.Join(pki, "server.key"), filepath.Join(pki, "ca.crt"), crl
	srv, err := server.TLSConfig(&d)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	caPEM, _ := os.ReadFile(filepath.Join(pki, "ca.crt"))
	roots.AppendCertsFromPEM(caPEM)
	// Over loopback TCP with deadlines: an unbuffered net.Pipe can
	// deadlock when one side writes an alert while the other writes too.
	handshake := func(cert tls.Certificate) error {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		errc := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			s := tls.Server(c, srv)
			err = s.Handshake()
			if err == nil {
				_, err = s.Write([]byte{1}) // TLS 1.3: the client learns of a refusal on read
			}
			errc <- err
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Client(c, &tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{cert}})
		err = tc.Handshake()
		if err == nil {
			_, err = tc.Read(make([]byte, 1))
		}
		if serr := <-errc; serr != nil {
			return serr
		}
		return err
	}
	if err := handshake(ct1); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("revoked CT1 certificate: %v", err)
	} else {
		t.Log(err)
	}
	if err := handshake(mr1); err != nil {
		t.Errorf("MR1 certificate: %v", err)
	}
	// Revoking MR1 while the listener runs takes effect once the file is
	// looked at again.
	old := tlsprofile.SetCRLRecheck(0)
	defer tlsprofile.SetCRLRecheck(old)
	if _, errs, code := runCLI(t, "pki", "revoke", "MR1", "--data", data); code != 0 {
		t.Fatal(errs)
	}
	if err := handshake(mr1); err == nil {
		t.Error("MR1 accepted after its revocation")
	}

	// A list that no configured CA signed is refused at start.
	other := filepath.Join(t.TempDir(), "other")
	for _, args := range [][]string{{"pki", "init", "--data", other}, {"pki", "issue", "X", "--data", other}, {"pki", "revoke", "X", "--data", other}} {
		if _, errs, code := runCLI(t, args...); code != 0 {
			t.Fatal(errs)
		}
	}
	bad := d
	bad.TLSCRL = filepath.Join(other, "pki", "crl.pem")
	if _, err := server.TLSConfig(&bad); err == nil || !strings.Contains(err.Error(), "not signed by a CA") {
		t.Errorf("a list of another CA: %v", err)
	}
	// tls_crl needs a CA to verify it.
	c := config.Default()
	c.DICOM.TLSCRL = crl
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "tls_crl") {
		t.Errorf("tls_crl without a CA: %v", err)
	}
}
