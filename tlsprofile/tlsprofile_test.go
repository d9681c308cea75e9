package tlsprofile

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"go/parser"
	"go/token"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// testCA issues certificates and revocation lists.
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

// issue makes a certificate for cn (a DNS name, or an IP address) with
// the usage.
func (ca *testCA) issue(t *testing.T, cn string, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca.n++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(ca.n), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	if ip := net.ParseIP(cn); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{cn}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// crlPEM is a PEM revocation list of the certificates with the given next
// update.
func (ca *testCA) crlPEM(t testing.TB, next time.Time, revoked ...tls.Certificate) []byte {
	t.Helper()
	ca.n++
	l := &x509.RevocationList{Number: big.NewInt(ca.n), ThisUpdate: time.Now().Add(-2 * time.Hour), NextUpdate: next}
	for _, c := range revoked {
		l.RevokedCertificateEntries = append(l.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: c.Leaf.SerialNumber, RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, l, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

func writeFile(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f.pem")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// handshake runs a TLS handshake between the two configurations over
// loopback TCP (an unbuffered net.Pipe can deadlock when both sides write
// an alert) and returns the client's state and the errors of either
// side (both when both failed). After the handshake the server writes a byte for the client to
// read: under TLS 1.3 a client learns that the server refused its
// certificate only when it reads.
func handshake(t *testing.T, server, client *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
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
		s := tls.Server(c, server)
		err = s.Handshake()
		if err == nil {
			_, err = s.Write([]byte{1})
		}
		errc <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, client)
	err = tc.Handshake()
	if err == nil {
		_, err = tc.Read(make([]byte, 1))
	}
	if err != nil {
		c.Close() // the server's write may wait for us otherwise
	}
	return tc.ConnectionState(), errors.Join(err, <-errc)
}

// The profile as data: TLS 1.2 minimum with no upper bound, ECDHE with an
// AEAD cipher only (RFC 9325 4.2), clients that never renegotiate.
func TestProfile(t *testing.T) {
	if MinVersion != tls.VersionTLS12 {
		t.Fatalf("MinVersion %x", MinVersion)
	}
	suites := CipherSuites()
	if len(suites) == 0 {
		t.Fatal("no cipher suites")
	}
	for _, id := range suites {
		n := tls.CipherSuiteName(id)
		if !strings.HasPrefix(n, "TLS_ECDHE_") || !(strings.HasSuffix(n, "_GCM_SHA256") || strings.HasSuffix(n, "_GCM_SHA384") || strings.HasSuffix(n, "_CHACHA20_POLY1305_SHA256")) {
			t.Errorf("cipher suite %s is not ECDHE with an AEAD cipher", n)
		}
		for _, in := range tls.InsecureCipherSuites() {
			if in.ID == id {
				t.Errorf("cipher suite %s is one Go calls insecure", n)
			}
		}
	}
	// The list is a copy: a caller cannot change the profile.
	suites[0] = tls.TLS_RSA_WITH_RC4_128_SHA
	if CipherSuites()[0] == tls.TLS_RSA_WITH_RC4_128_SHA {
		t.Error("CipherSuites returns the profile's own slice")
	}

	ca := newTestCA(t, "Site CA")
	cert := ca.issue(t, "ward.example", x509.ExtKeyUsageServerAuth)
	for _, tc := range []struct {
		mode ClientCerts
		cas  *x509.CertPool
		want tls.ClientAuthType
	}{
		{ClientCertRequested, nil, tls.RequestClientCert},
		{ClientCertRequested, ca.pool(), tls.RequestClientCert},
		{ClientCertVerified, ca.pool(), tls.RequireAndVerifyClientCert},
	} {
		t.Run("server client certificates "+tc.mode.String(), func(t *testing.T) {
			s, err := Server(ServerOptions{Certificate: cert, ClientCerts: tc.mode, ClientCAs: tc.cas})
			if err != nil {
				t.Fatal(err)
			}
			if s.MinVersion != tls.VersionTLS12 || s.MaxVersion != 0 {
				t.Errorf("versions %x-%x, want TLS 1.2 and up", s.MinVersion, s.MaxVersion)
			}
			if !equalSuites(s.CipherSuites, CipherSuites()) {
				t.Errorf("cipher suites %v", s.CipherSuites)
			}
			if s.ClientAuth != tc.want {
				t.Errorf("client auth %v, want %v", s.ClientAuth, tc.want)
			}
			if tc.mode == ClientCertRequested && s.ClientCAs != nil {
				t.Error("client CAs set though certificates are only requested")
			}
			if s.VerifyConnection != nil || s.InsecureSkipVerify {
				t.Error("verification changed without revocation lists")
			}
		})
	}
	if _, err := Server(ServerOptions{Certificate: cert, ClientCerts: ClientCertVerified}); !errors.Is(err, ErrNoClientCAs) {
		t.Errorf("verified client certificates without CAs: %v", err)
	}
	if _, err := Server(ServerOptions{Certificate: cert, ClientCerts: 7}); err == nil {
		t.Error("an unknown client certificate mode accepted")
	}

	c := Client(ClientOptions{ServerName: "ward.example", RootCAs: ca.pool(), Certificate: &cert})
	if c.MinVersion != tls.VersionTLS12 || c.MaxVersion != 0 || !equalSuites(c.CipherSuites, CipherSuites()) {
		t.Errorf("client %x-%x %v", c.MinVersion, c.MaxVersion, c.CipherSuites)
	}
	if c.Renegotiation != tls.RenegotiateNever || c.InsecureSkipVerify || c.ServerName != "ward.example" || len(c.Certificates) != 1 {
		t.Errorf("client %+v", c)
	}
	if d := WithServerName(c, "other.example"); d.ServerName != "other.example" || c.ServerName != "ward.example" {
		t.Errorf("WithServerName: %q, original %q", d.ServerName, c.ServerName)
	}
}

func equalSuites(a, b []uint16) bool { return slices.Equal(a, b) }

// Handshakes between the profile's servers and clients and clients or
// servers outside it.
func TestHandshakes(t *testing.T) {
	ca := newTestCA(t, "Site CA")
	stranger := newTestCA(t, "Stranger CA")
	srvCert := ca.issue(t, "localhost", x509.ExtKeyUsageServerAuth)
	ipCert := ca.issue(t, "127.0.0.1", x509.ExtKeyUsageServerAuth)
	good := ca.issue(t, "MODALITY", x509.ExtKeyUsageClientAuth)
	foreign := stranger.issue(t, "MODALITY", x509.ExtKeyUsageClientAuth)
	serverUsage := ca.issue(t, "MODALITY", x509.ExtKeyUsageServerAuth)

	verified, err := Server(ServerOptions{Certificate: srvCert, ClientCerts: ClientCertVerified, ClientCAs: ca.pool()})
	if err != nil {
		t.Fatal(err)
	}
	requested, err := Server(ServerOptions{Certificate: srvCert})
	if err != nil {
		t.Fatal(err)
	}
	client := func(cert *tls.Certificate) *tls.Config {
		return Client(ClientOptions{ServerName: "localhost", RootCAs: ca.pool(), Certificate: cert})
	}
	outsider := func(edit func(*tls.Config)) *tls.Config {
		c := &tls.Config{ServerName: "localhost", RootCAs: ca.pool(), Certificates: []tls.Certificate{good}}
		edit(c)
		return c
	}
	old := &tls.Config{Certificates: []tls.Certificate{srvCert}, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
	cbc := &tls.Config{Certificates: []tls.Certificate{srvCert}, MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}}
	tls12 := &tls.Config{Certificates: []tls.Certificate{srvCert}, MaxVersion: tls.VersionTLS12}

	for _, tc := range []struct {
		name           string
		server, client *tls.Config
		ok             bool
		version        uint16
	}{
		{"TLS 1.3 preferred", verified, client(&good), true, tls.VersionTLS13},
		{"TLS 1.2 when the server stops there", tls12, client(&good), true, tls.VersionTLS12},
		{"TLS 1.2 when the client stops there", verified, outsider(func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }), true, tls.VersionTLS12},
		{"verified: no client certificate", verified, client(nil), false, 0},
		{"verified: another CA's certificate", verified, client(&foreign), false, 0},
		{"verified: a certificate for servers only", verified, client(&serverUsage), false, 0},
		{"requested: no client certificate", requested, client(nil), true, tls.VersionTLS13},
		{"requested: another CA's certificate (left to pinning)", requested, client(&foreign), true, tls.VersionTLS13},
		{"server refuses TLS 1.1", verified, outsider(func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 }), false, 0},
		{"server refuses TLS 1.2 CBC suites", verified, outsider(func(c *tls.Config) {
			c.MaxVersion, c.CipherSuites = tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA}
		}), false, 0},
		{"client refuses TLS 1.1", old, client(&good), false, 0},
		{"client refuses TLS 1.2 CBC suites", cbc, client(&good), false, 0},
		{"client refuses a certificate for another name", verified, Client(ClientOptions{ServerName: "ward.example", RootCAs: ca.pool(), Certificate: &good}), false, 0},
		{"client refuses another CA's server", verified, Client(ClientOptions{ServerName: "localhost", RootCAs: stranger.pool(), Certificate: &good}), false, 0},
		{"client refuses without a server name", verified, Client(ClientOptions{RootCAs: ca.pool(), Certificate: &good}), false, 0},
		{"client verifies an IP address", &tls.Config{Certificates: []tls.Certificate{ipCert}}, Client(ClientOptions{ServerName: "127.0.0.1", RootCAs: ca.pool()}), true, tls.VersionTLS13},
		{"client refuses a DNS name for an IP address", verified, Client(ClientOptions{ServerName: "127.0.0.1", RootCAs: ca.pool(), Certificate: &good}), false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := handshake(t, tc.server, tc.client)
			if tc.ok != (err == nil) {
				t.Fatalf("handshake error %v, want success %v", err, tc.ok)
			}
			if err != nil {
				t.Log(err)
				return
			}
			if st.Version != tc.version {
				t.Errorf("version %x, want %x", st.Version, tc.version)
			}
			if st.Version == tls.VersionTLS12 && !slices.Contains(CipherSuites(), st.CipherSuite) {
				t.Errorf("suite %s", tls.CipherSuiteName(st.CipherSuite))
			}
		})
	}
}

func TestServerName(t *testing.T) {
	for addr, want := range map[string]string{
		"ward.example:2762": "ward.example",
		"127.0.0.1:2762":    "127.0.0.1",
		"[::1]:2762":        "::1",
	} {
		if got, err := ServerName(addr); err != nil || got != want {
			t.Errorf("ServerName(%q) = %q, %v; want %q", addr, got, err, want)
		}
	}
	for _, addr := range []string{":2762", "ward.example", ""} {
		if got, err := ServerName(addr); err == nil {
			t.Errorf("ServerName(%q) = %q, want an error", addr, got)
		}
	}
}

func TestLoadCAs(t *testing.T) {
	ca := newTestCA(t, "Site CA")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
	keyDER, _ := x509.MarshalPKCS8PrivateKey(ca.key)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	// A key beside the certificate is skipped.
	if pool, err := LoadCAs(writeFile(t, append(append([]byte{}, keyPEM...), certPEM...))); err != nil || pool == nil {
		t.Fatalf("LoadCAs: %v", err)
	}
	for name, b := range map[string][]byte{
		"not PEM":           []byte("not a certificate\n"),
		"a key only":        keyPEM,
		"a bad certificate": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 1, 2, 3}}),
	} {
		p := writeFile(t, b)
		_, err := LoadCAs(p)
		if err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v, want an error naming the file", name, err)
		}
	}
	if _, err := LoadCAs(writeFile(t, []byte("x"))); !errors.Is(err, ErrNoCACertificates) {
		t.Errorf("no certificate: %v", err)
	}
	if fp := Fingerprint(ca.cert.Raw); len(fp) != 64 || strings.ToLower(fp) != fp {
		t.Errorf("fingerprint %q", fp)
	}
}

// logBuffer collects a logger's output; safe for the handshakes'
// goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Revocation on both sides: a server refuses a revoked client
// certificate, a client a revoked server certificate; a stale list is
// logged and applied; a changed list is read again; a changed list that
// does not load leaves the old one in force.
func TestRevocations(t *testing.T) {
	ca := newTestCA(t, "Site CA")
	srvCert := ca.issue(t, "localhost", x509.ExtKeyUsageServerAuth)
	badSrv := ca.issue(t, "localhost", x509.ExtKeyUsageServerAuth)
	ct1 := ca.issue(t, "CT1", x509.ExtKeyUsageClientAuth)
	mr1 := ca.issue(t, "MR1", x509.ExtKeyUsageClientAuth)

	crlPath := writeFile(t, ca.crlPEM(t, time.Now().Add(-time.Minute), ct1, badSrv)) // stale
	var logs logBuffer
	r, err := LoadRevocations(crlPath, []*x509.Certificate{ca.cert}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "out of date") {
		t.Errorf("a stale list was not logged: %s", logs.String())
	}
	server, err := Server(ServerOptions{Certificate: srvCert, ClientCerts: ClientCertVerified, ClientCAs: ca.pool(), Revocations: r})
	if err != nil {
		t.Fatal(err)
	}
	client := func(cert tls.Certificate) *tls.Config {
		return Client(ClientOptions{ServerName: "localhost", RootCAs: ca.pool(), Certificate: &cert})
	}
	if _, err := handshake(t, server, client(ct1)); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("revoked client certificate: %v", err)
	}
	if _, err := handshake(t, server, client(mr1)); err != nil {
		t.Errorf("good client certificate: %v", err)
	}
	// The client side.
	cl := Client(ClientOptions{ServerName: "localhost", RootCAs: ca.pool(), Revocations: r})
	if _, err := handshake(t, &tls.Config{Certificates: []tls.Certificate{badSrv}}, cl); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("revoked server certificate: %v", err)
	}
	if _, err := handshake(t, &tls.Config{Certificates: []tls.Certificate{srvCert}}, cl); err != nil {
		t.Errorf("good server certificate: %v", err)
	}

	// A changed list is read again, once CRLRecheck has passed.
	defer SetCRLRecheck(SetCRLRecheck(time.Hour))
	replace := func(b []byte) {
		t.Helper()
		tmp := crlPath + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, crlPath); err != nil {
			t.Fatal(err)
		}
	}
	replace(ca.crlPEM(t, time.Now().Add(time.Hour), ct1, mr1))
	if _, err := handshake(t, server, client(mr1)); err != nil {
		t.Errorf("the list was read again before CRLRecheck: %v", err)
	}
	SetCRLRecheck(0)
	if _, err := handshake(t, server, client(mr1)); err == nil {
		t.Error("MR1 accepted after its revocation")
	}
	if !strings.Contains(logs.String(), "reloaded") {
		t.Errorf("the reload was not logged: %s", logs.String())
	}
	// A change that does not load leaves the lists in force.
	other := newTestCA(t, "Other CA")
	for name, b := range map[string][]byte{
		"garbage":           []byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"),
		"another CA's list": other.crlPEM(t, time.Now().Add(time.Hour)),
	} {
		replace(b)
		if _, err := handshake(t, server, client(mr1)); err == nil {
			t.Errorf("%s: MR1 accepted once the list did not load", name)
		}
		if _, err := handshake(t, server, client(ct1)); err == nil {
			t.Errorf("%s: CT1 accepted once the list did not load", name)
		}
	}
	if !strings.Contains(logs.String(), "does not load") {
		t.Errorf("the failed reload was not logged: %s", logs.String())
	}

	// At load, every error is refused.
	for name, b := range map[string][]byte{
		"another CA's list": other.crlPEM(t, time.Now().Add(time.Hour)),
		"a certificate":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}),
		"garbage DER":       {0x30, 0x03, 1, 2, 3},
	} {
		if _, err := LoadRevocations(writeFile(t, b), []*x509.Certificate{ca.cert}, nil); err == nil {
			t.Errorf("%s accepted", name)
		} else if name == "another CA's list" && !errors.Is(err, ErrCRLUntrusted) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := LoadRevocations(filepath.Join(t.TempDir(), "none"), []*x509.Certificate{ca.cert}, nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file: %v", err)
	}
	// A nil *Revocations refuses nothing.
	var none *Revocations
	if err := none.Check(tls.ConnectionState{PeerCertificates: []*x509.Certificate{ct1.Leaf}}); err != nil {
		t.Error(err)
	}
}

// The revocation list file is read whatever it holds: an error, never a
// crash. Seeds: a valid list (PEM and DER), a certificate, garbage.
func FuzzLoadCRL(f *testing.F) {
	ca := newTestCA(f, "Fuzz CA")
	l := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: big.NewInt(7), RevocationTime: time.Now()}}}
	der, err := x509.CreateRevocationList(rand.Reader, l, ca.cert, ca.key)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}))
	f.Add(der)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}))
	f.Add([]byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "crl")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		r := &Revocations{path: p, cas: []*x509.Certificate{ca.cert}, logger: slog.New(slog.DiscardHandler)}
		revoked, _, err := r.load()
		if err == nil && revoked == nil {
			t.Fatal("no error and no list")
		}
	})
}

// The profile is a leaf: the standard library only (test/layering checks
// that it imports nothing of Ward; this, nothing from outside either).
func TestStdlibOnly(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if first, _, _ := strings.Cut(p, "/"); strings.Contains(first, ".") {
				t.Errorf("%s imports %s: the TLS profile uses the standard library only", f, p)
			}
		}
	}
}
