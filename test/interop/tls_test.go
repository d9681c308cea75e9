package interop

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/tlsprofile"
)

// sitePKI is what `ward pki init` and `ward pki issue` made for a site.
type sitePKI struct {
	dir                 string // DATA/pki
	ca, srvCert, srvKey string
	peerCert, peerKey   string // the client certificate issued to PEER
}

// makePKI runs `ward pki init` and `ward pki issue PEER` in a fresh data
// directory.
func makePKI(t *testing.T, peer string) *sitePKI {
	t.Helper()
	data := t.TempDir()
	for _, args := range [][]string{{"pki", "init", "--data", data}, {"pki", "issue", peer, "--data", data}} {
		if _, code := wardCLI(t, args...); code != 0 {
			t.Fatalf("ward %s failed", strings.Join(args, " "))
		}
	}
	dir := filepath.Join(data, "pki")
	return &sitePKI{dir: dir, ca: filepath.Join(dir, "ca.crt"), srvCert: filepath.Join(dir, "server.crt"), srvKey: filepath.Join(dir, "server.key"),
		peerCert: filepath.Join(dir, "peers", peer+".crt"), peerKey: filepath.Join(dir, "peers", peer+".key")}
}

// startTLSWard runs Ward with its plain loopback listener and a TLS one
// using the site's server certificate; clientCA requires client
// certificates issued by the site's CA.
func startTLSWard(t *testing.T, p *sitePKI, clientCA bool) (w *ward, tlsPort string) {
	t.Helper()
	w = startWard(t, func(c *config.Config) {
		c.DICOM.TLSListen = "127.0.0.1:0"
		c.DICOM.TLSCert, c.DICOM.TLSKey = p.srvCert, p.srvKey
		if clientCA {
			c.DICOM.TLSClientCA = p.ca
		}
		// On TLS every calling AE is checked: DCMTK's default titles are
		// registered peers here.
		for _, aet := range []string{"ECHOSCU", "STORESCU"} {
			c.Peers = append(c.Peers, config.Peer{AETitle: aet, Host: "127.0.0.1", Allow: []string{"echo", "store"}})
		}
	})
	_, tlsPort, _ = net.SplitHostPort(w.srv.TLSAddr().String())
	n, _ := net.LookupPort("tcp", tlsPort)
	assertLoopbackOnly(t, n)
	return w, tlsPort
}

func (p *sitePKI) roots(t *testing.T) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(p.ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatal("no CA certificate")
	}
	return pool
}

// tlsProbe connects with cfg and reads until Ward answers or closes: a
// refused client sees the handshake fail or, in TLS 1.3 where the client
// finishes first, an alert on its first read.
func tlsProbe(t *testing.T, port string, cfg *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	c := tls.Client(raw, cfg)
	if err := c.Handshake(); err != nil {
		return tls.ConnectionState{}, err
	}
	// A-ASSOCIATE-RQ is not sent: Ward waits for one, so a read returns
	// only a refusal (alert) or the ARTIM/idle close much later. A short
	// deadline tells the two apart.
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return c.ConnectionState(), nil
	}
	return c.ConnectionState(), err
}

func TestTLSEchoscuStorescu(t *testing.T) {
	requireTool(t, "echoscu", "storescu")
	requirePydicom(t)
	p := makePKI(t, "STORESCU")
	w, tlsPort := startTLSWard(t, p, true)
	tlsArgs := []string{"+tls", p.peerKey, p.peerCert, "+cf", p.ca}

	out, err := dcmtk("echoscu", append(append([]string{"-v"}, tlsArgs...), "-aec", "WARD", "-aet", "ECHOSCU", "127.0.0.1", tlsPort)...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Received Echo Response (Success)") {
		t.Fatalf("echoscu +tls: %v\n%s", err, out)
	}
	// The plain loopback listener keeps working beside the TLS one.
	if out, err := dcmtk("echoscu", "-aec", "WARD", w.host, w.port).CombinedOutput(); err != nil {
		t.Fatalf("plain echoscu: %v\n%s", err, out)
	}
	// Plain DICOM on the TLS port gets nowhere.
	if out, err := dcmtk("echoscu", "-to", "5", "-aec", "WARD", "127.0.0.1", tlsPort).CombinedOutput(); err == nil {
		t.Fatalf("plain echoscu on the TLS port succeeded:\n%s", out)
	}

	f := filepath.Join(pydicomTestFiles, "CT_small.dcm")
	uid, _ := sopInstanceOf(t, f)
	out, err = dcmtk("storescu", append(append([]string{"-v"}, tlsArgs...), "-aec", "WARD", "-aet", "STORESCU", "127.0.0.1", tlsPort, f)...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Received Store Response (Success)") {
		t.Fatalf("storescu +tls: %v\n%s", err, out)
	}
	if ok, diff := datasetsEqual(t, f, w.storedCopy(t, uid)); !ok {
		t.Fatalf("stored data set differs from the one sent over TLS:\n%s", diff)
	}
}

func TestTLSClientCertificateRequired(t *testing.T) {
	requireTool(t, "echoscu")
	p := makePKI(t, "GOOD")
	other := makePKI(t, "STRANGER") // a certificate from another CA
	_, tlsPort := startTLSWard(t, p, true)

	// DCMTK without a client certificate (anonymous TLS, Ward verified).
	out, err := dcmtk("echoscu", "-to", "5", "+tla", "+cf", p.ca, "-aec", "WARD", "127.0.0.1", tlsPort).CombinedOutput()
	if err == nil || strings.Contains(string(out), "Success") {
		t.Fatalf("echoscu +tla without a client certificate succeeded:\n%s", out)
	}
	// DCMTK with a certificate from another CA.
	out, err = dcmtk("echoscu", "-to", "5", "+tls", other.peerKey, other.peerCert, "+cf", p.ca, "-aec", "WARD", "127.0.0.1", tlsPort).CombinedOutput()
	if err == nil || strings.Contains(string(out), "Success") {
		t.Fatalf("echoscu with a certificate from another CA succeeded:\n%s", out)
	}

	good, err := tls.LoadX509KeyPair(p.peerCert, p.peerKey)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := tls.LoadX509KeyPair(other.peerCert, other.peerKey)
	if err != nil {
		t.Fatal(err)
	}
	roots := p.roots(t)
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
		ok   bool
		want tls.ConnectionState // Version checked when ok
	}{
		{"TLS 1.3 with a client certificate", &tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{good}}, true, tls.ConnectionState{Version: tls.VersionTLS13}},
		{"TLS 1.2 with a client certificate", &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{good}, MaxVersion: tls.VersionTLS12}, true, tls.ConnectionState{Version: tls.VersionTLS12}},
		{"TLS 1.3 without a client certificate", &tls.Config{RootCAs: roots, ServerName: "localhost"}, false, tls.ConnectionState{}},
		{"TLS 1.2 without a client certificate", &tls.Config{RootCAs: roots, ServerName: "localhost", MaxVersion: tls.VersionTLS12}, false, tls.ConnectionState{}},
		{"certificate from another CA", &tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{stranger}}, false, tls.ConnectionState{}},
		{"TLS 1.1", &tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{good}, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, false, tls.ConnectionState{}},
		{"TLS 1.0", &tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{good}, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10}, false, tls.ConnectionState{}},
		{"TLS 1.2 CBC cipher suite", &tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{good}, MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA}}, false, tls.ConnectionState{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := tlsProbe(t, tlsPort, tc.cfg)
			if tc.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if st.Version != tc.want.Version {
					t.Fatalf("negotiated %s, want %s", tls.VersionName(st.Version), tls.VersionName(tc.want.Version))
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted (%s, %s)", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
			}
			t.Logf("refused: %v", err)
		})
	}
}

// A client certificate revoked with `ward pki revoke` is refused in the
// TLS handshake once tls_crl names the CA's list, even while Ward runs;
// the site's other certificates are served. DCMTK echoscu on both sides of
// that line.
func TestTLSRevokedCertificate(t *testing.T) {
	requireTool(t, "echoscu")
	p := makePKI(t, "ECHOSCU")
	data := filepath.Dir(p.dir)
	if _, code := wardCLI(t, "pki", "issue", "STORESCU", "--data", data); code != 0 {
		t.Fatal("ward pki issue STORESCU failed")
	}
	crl := filepath.Join(p.dir, "crl.pem")
	echo := func(port, peer string) ([]byte, error) {
		key, cert := filepath.Join(p.dir, "peers", peer+".key"), filepath.Join(p.dir, "peers", peer+".crt")
		return dcmtk("echoscu", "-v", "-to", "5", "+tls", key, cert, "+cf", p.ca, "-aec", "WARD", "-aet", peer, "127.0.0.1", port).CombinedOutput()
	}
	// ward pki init made the list, empty.
	old := tlsprofile.SetCRLRecheck(0)
	t.Cleanup(func() { tlsprofile.SetCRLRecheck(old) })
	w := startWard(t, func(c *config.Config) {
		c.DICOM.TLSListen = "127.0.0.1:0"
		c.DICOM.TLSCert, c.DICOM.TLSKey, c.DICOM.TLSClientCA, c.DICOM.TLSCRL = p.srvCert, p.srvKey, p.ca, crl
		for _, aet := range []string{"ECHOSCU", "STORESCU"} {
			c.Peers = append(c.Peers, config.Peer{AETitle: aet, Host: "127.0.0.1", Allow: []string{"echo"}})
		}
	})
	_, tlsPort, _ := net.SplitHostPort(w.srv.TLSAddr().String())
	for _, peer := range []string{"ECHOSCU", "STORESCU"} {
		if out, err := echo(tlsPort, peer); err != nil || !strings.Contains(string(out), "Success") {
			t.Fatalf("echoscu +tls as %s before any revocation: %v\n%s", peer, err, out)
		}
	}
	// Revoked while Ward runs: refused from the next handshake on.
	if _, code := wardCLI(t, "pki", "revoke", "STORESCU", "--data", data); code != 0 {
		t.Fatal("ward pki revoke STORESCU failed")
	}
	// The revoked certificate was moved aside; DCMTK presents it from there.
	moved, _ := filepath.Glob(filepath.Join(p.dir, "peers", "STORESCU.crt.revoked-*"))
	keys, _ := filepath.Glob(filepath.Join(p.dir, "peers", "STORESCU.key.revoked-*"))
	if len(moved) != 1 || len(keys) != 1 {
		t.Fatalf("moved aside: %v %v", moved, keys)
	}
	out, err := dcmtk("echoscu", "-v", "-to", "5", "+tls", keys[0], moved[0], "+cf", p.ca, "-aec", "WARD", "-aet", "STORESCU", "127.0.0.1", tlsPort).CombinedOutput()
	if err == nil || strings.Contains(string(out), "Success") {
		t.Fatalf("echoscu with a revoked certificate succeeded:\n%s", out)
	}
	if !strings.Contains(w.log.String(), "revoked") {
		t.Errorf("Ward's log does not say the certificate was revoked:\n%s", w.log.String())
	}
	// Audited as a Security Alert that says why.
	readAudit(t, w.dir, func(recs []audit.Record) bool {
		for _, r := range recs {
			if r.Event == "security-alert" && strings.Contains(r.XML, "revoked") {
				return true
			}
		}
		return false
	})
	if out, err := echo(tlsPort, "ECHOSCU"); err != nil || !strings.Contains(string(out), "Success") {
		t.Fatalf("echoscu +tls as ECHOSCU after STORESCU's revocation: %v\n%s", err, out)
	}
	// A new certificate for the same peer is served.
	if _, code := wardCLI(t, "pki", "issue", "STORESCU", "--data", data); code != 0 {
		t.Fatal("ward pki issue STORESCU again failed")
	}
	if out, err := echo(tlsPort, "STORESCU"); err != nil || !strings.Contains(string(out), "Success") {
		t.Fatalf("echoscu +tls with STORESCU's new certificate: %v\n%s", err, out)
	}
}

// Without tls_client_ca the TLS listener authenticates Ward only: a client
// without a certificate is served, and old protocol versions are still
// refused.
func TestTLSServerAuthOnly(t *testing.T) {
	requireTool(t, "echoscu")
	p := makePKI(t, "ANY")
	_, tlsPort := startTLSWard(t, p, false)
	out, err := dcmtk("echoscu", "-v", "+tla", "+cf", p.ca, "-aec", "WARD", "127.0.0.1", tlsPort).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Received Echo Response (Success)") {
		t.Fatalf("echoscu +tla: %v\n%s", err, out)
	}
	// A server certificate from another CA is refused by DCMTK.
	other := makePKI(t, "X")
	if out, err := dcmtk("echoscu", "-to", "5", "+tla", "+cf", other.ca, "-aec", "WARD", "127.0.0.1", tlsPort).CombinedOutput(); err == nil {
		t.Fatalf("echoscu trusted a server certificate from another CA:\n%s", out)
	}
	if _, err := tlsProbe(t, tlsPort, &tls.Config{RootCAs: p.roots(t), ServerName: "localhost", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}); err == nil {
		t.Fatal("TLS 1.1 accepted")
	}
}

// A client that connects to the TLS port and never completes the handshake
// is closed by the ARTIM timer, like a silent plain connection.
func TestTLSSilentClientClosedByARTIM(t *testing.T) {
	p := makePKI(t, "ANY")
	w := startWard(t, func(c *config.Config) {
		c.DICOM.TLSListen = "127.0.0.1:0"
		c.DICOM.TLSCert, c.DICOM.TLSKey, c.DICOM.TLSClientCA = p.srvCert, p.srvKey, p.ca
		c.DICOM.ARTIMTimeout.Duration = time.Second
	})
	conn, err := net.Dial("tcp", w.srv.TLSAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	conn.SetReadDeadline(start.Add(20 * time.Second))
	_, err = conn.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the silent connection was still open after 20s")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("closed after %v", d)
	}
}

// TestMoveToTLSDestination: a C-MOVE destination registered with tls is
// reached over TLS — DCMTK storescp with +tls, requiring Ward's client
// certificate (ward pki issue WARD) — and receives the study; the same
// storescp registered without tls gets nothing (plain DICOM on a TLS port).
func TestMoveToTLSDestination(t *testing.T) {
	requireTool(t, "storescu", "movescu", "storescp", "gcc")
	requireDir(t, pydicomTestFiles)
	p := makePKI(t, "WARD")
	port := freePort(t)
	dir := t.TempDir()
	daemon(t, "storescp-tls.log", "storescp", "+tls", p.srvKey, p.srvCert, "+cf", p.ca, "-rc", "-od", dir, strconv.Itoa(port))
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("storescp +tls did not listen")
		}
		time.Sleep(50 * time.Millisecond)
	}
	assertLoopbackOnly(t, port)
	w := startWard(t, func(c *config.Config) {
		c.DICOM.TLSPeerCA, c.DICOM.TLSClientCert, c.DICOM.TLSClientKey = p.ca, p.peerCert, p.peerKey
		c.Peers = []config.Peer{
			{AETitle: "TLSDEST", Host: "127.0.0.1", Port: port, TLS: true, Allow: []string{config.MoveDestination}},
			{AETitle: "PLAINDEST", Host: "127.0.0.1", Port: port, Allow: []string{config.MoveDestination}},
		}
	})
	ct := filepath.Join(pydicomTestFiles, "CT_small.dcm")
	if out, err := dcmtk("storescu", "-aec", "WARD", w.host, w.port, ct).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	move := func(dest string) string {
		out, _ := dcmtk("movescu", "-v", "-S", "-aec", "WARD", "-aem", dest, "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+studyOf(t, ct), w.host, w.port).CombinedOutput()
		return string(out)
	}
	if out := move("PLAINDEST"); strings.Contains(out, "Final Move Response (Success)") {
		t.Fatalf("move to a TLS port in clear:\n%s", out)
	} else if files, _ := filepath.Glob(filepath.Join(dir, "*")); len(files) != 0 {
		t.Fatalf("the plain move delivered %v", files)
	}
	if out := move("TLSDEST"); !strings.Contains(out, "Received Final Move Response (Success)") {
		t.Fatalf("move over TLS:\n%s", out)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(files) != 1 {
		t.Fatalf("storescp +tls received %v", files)
	}
	uid, _ := sopInstanceOf(t, ct)
	if ok, diff := datasetsEqual(t, ct, files[0]); !ok {
		t.Fatalf("%s differs from what was sent:\n%s", uid, diff)
	}
}
