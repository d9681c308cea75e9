package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Validity periods of the certificates `ward pki` makes.
const (
	pkiCAValidity     = 10 * 365 * 24 * time.Hour
	pkiServerValidity = 2 * 365 * 24 * time.Hour
	pkiClientValidity = 2 * 365 * 24 * time.Hour
)

// File names under DATA/pki.
const (
	pkiDir        = "pki"
	pkiCACert     = "ca.crt"
	pkiCAKey      = "ca.key"
	pkiServerCert = "server.crt"
	pkiServerKey  = "server.key"
	pkiPeersDir   = "peers"
	pkiCRL        = "crl.pem"
)

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

var pkiCmd = &command{
	name: "pki", summary: "make a CA, a server certificate and client certificates for DICOM TLS",
	help: `For a site without a PKI. 'init' writes under DATA/pki a CA (ECDSA P-256,
10 years) and a server certificate for the names (DNS names or IP
addresses; default localhost and 127.0.0.1; 2 years), and prints the
configuration lines that enable DIMSE over TLS. It never overwrites a CA.
'issue' writes a client certificate for PEER signed by that CA to
DATA/pki/peers/PEER.crt and .key and prints its SHA-256 fingerprint.
'revoke' adds PEER's certificate to the CA's revocation list,
DATA/pki/crl.pem, which Ward reads when [dicom] tls_crl names it (again
within seconds of each change), and moves the certificate and key aside,
so that 'issue' can make PEER a new one.
Private keys are written with mode 0600.`,
	subs: []*command{
		{
			name: "init", summary: "make the CA and the server certificate",
			args: "[--name NAME]... [--config FILE | --data DIR]",
			help: `Writes under DATA/pki a CA and a server certificate for the names, and
prints the configuration lines that enable DIMSE over TLS. It never
overwrites a CA.`,
			flags: pkiInitFlags,
		},
		{
			name: "issue", summary: "make a client certificate for a peer",
			args: "PEER [--config FILE | --data DIR]", minArgs: 1, maxArgs: 1,
			help: `Writes a client certificate for PEER signed by the CA to
DATA/pki/peers/PEER.crt and .key, and prints its SHA-256 fingerprint.`,
			flags: pkiPeerFlags(pkiIssue),
		},
		{
			name: "revoke", summary: "revoke a peer's client certificate",
			args: "PEER [--config FILE | --data DIR]", minArgs: 1, maxArgs: 1,
			help: `Adds PEER's certificate to the CA's revocation list, DATA/pki/crl.pem,
and moves the certificate and key aside.`,
			flags: pkiPeerFlags(pkiRevoke),
		},
	},
}

// pkiDirOf is DATA/pki, absolute, of the configuration the flags name.
func pkiDirOf(df dataFlags) (string, error) {
	c, err := df.load()
	if err != nil {
		return "", err
	}
	return filepath.Abs(filepath.Join(c.DataDir, pkiDir))
}

func pkiInitFlags(fs *flag.FlagSet) runFunc {
	df := addDataFlags(fs)
	var names stringList
	fs.Var(&names, "name", "DNS name or IP address of the server certificate (repeatable; default localhost and 127.0.0.1)")
	return func(e *env, _ []string) error {
		dir, err := pkiDirOf(df)
		if err != nil {
			return err
		}
		if len(names) == 0 {
			names = stringList{"localhost", "127.0.0.1"}
		}
		return pkiInit(e, dir, names)
	}
}

// pkiPeerFlags is ward pki issue or revoke (op) PEER.
func pkiPeerFlags(op func(e *env, dir, peer string) error) func(*flag.FlagSet) runFunc {
	return func(fs *flag.FlagSet) runFunc {
		df := addDataFlags(fs)
		return func(e *env, pos []string) error {
			dir, err := pkiDirOf(df)
			if err != nil {
				return err
			}
			return op(e, dir, pos[0])
		}
	}
}

// ErrCAExists: `ward pki init` found a CA already.
var ErrCAExists = errors.New("a CA already exists; ward pki init never overwrites one (remove it yourself to start over, which invalidates every certificate it issued)")

func pkiInit(e *env, dir string, names []string) error {
	for _, n := range names {
		if n == "" || strings.ContainsAny(n, " /\\") {
			return fmt.Errorf("--name %q: give a DNS name or an IP address", n)
		}
	}
	caCertPath, caKeyPath := filepath.Join(dir, pkiCACert), filepath.Join(dir, pkiCAKey)
	for _, p := range []string{caCertPath, caKeyPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s: %w", p, ErrCAExists)
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "Ward CA", Organization: []string{"Ward"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(pkiCAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := signCert(caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	srvTmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: names[0], Organization: []string{"Ward"}},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(pkiServerValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			srvTmpl.IPAddresses = append(srvTmpl.IPAddresses, ip)
		} else {
			srvTmpl.DNSNames = append(srvTmpl.DNSNames, n)
		}
	}
	srvDER, err := signCert(srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	srvCertPath, srvKeyPath := filepath.Join(dir, pkiServerCert), filepath.Join(dir, pkiServerKey)
	// The CA key is written first and exclusively: two concurrent inits
	// cannot both succeed.
	if err := writeKey(caKeyPath, caKey); err != nil {
		return err
	}
	if err := writeCert(caCertPath, caDER); err != nil {
		return err
	}
	if err := writeKey(srvKeyPath, srvKey); err != nil {
		return err
	}
	if err := writeCert(srvCertPath, srvDER); err != nil {
		return err
	}
	// An empty revocation list, so that tls_crl can name it from the start.
	crlPath, _, err := updateCRL(dir, caCert, caKey, nil)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, `CA certificate:      %s
CA private key:      %s (0600; keep it offline if you can)
server certificate:  %s (for %s)
server private key:  %s (0600)
revocation list:     %s (empty; ward pki revoke PEER adds to it)

To enable DIMSE over TLS, add to Ward's configuration:

[dicom]
tls_listen    = "127.0.0.1:2762"
tls_cert      = %q
tls_key       = %q
tls_client_ca = %q
tls_crl       = %q

or run: ward serve --dicom-tls-listen 127.0.0.1:2762 --tls-cert %s --tls-key %s --tls-client-ca %s --tls-crl %s
Peers need %s to verify Ward; issue their client certificates with 'ward pki issue PEER'
and withdraw one with 'ward pki revoke PEER'.
`, caCertPath, caKeyPath, srvCertPath, strings.Join(names, ", "), srvKeyPath, crlPath,
		srvCertPath, srvKeyPath, caCertPath, crlPath, srvCertPath, srvKeyPath, caCertPath, crlPath, caCertPath)
	return nil
}

// peerNameOK limits PEER to characters safe in a file name.
func peerNameOK(p string) bool {
	if p == "" || len(p) > 64 || p[0] == '.' || p[0] == '-' {
		return false
	}
	for _, r := range p {
		switch {
		case r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_', r == '-', r == '.':
		default:
			return false
		}
	}
	return true
}

// peerCA checks PEER's name and loads the site's CA; certPath and keyPath
// are where PEER's certificate and key are kept.
func peerCA(dir, peer string) (caCert *x509.Certificate, caKey *ecdsa.PrivateKey, certPath, keyPath string, err error) {
	if !peerNameOK(peer) {
		return nil, nil, "", "", fmt.Errorf("peer %q: use 1 to 64 letters, digits, '_', '-' or '.' (an AE title usually)", peer)
	}
	if caCert, caKey, err = loadCA(dir); err != nil {
		return nil, nil, "", "", err
	}
	peersDir := filepath.Join(dir, pkiPeersDir)
	return caCert, caKey, filepath.Join(peersDir, peer+".crt"), filepath.Join(peersDir, peer+".key"), nil
}

func pkiIssue(e *env, dir, peer string) error {
	caCert, caKey, certPath, keyPath, err := peerCA(dir, peer)
	if err != nil {
		return err
	}
	peersDir := filepath.Dir(certPath)
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s exists: remove it to issue a new certificate for %s", p, peer)
		}
	}
	if err := os.MkdirAll(peersDir, 0o700); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: peer, Organization: []string{"Ward"}},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(pkiClientValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := signCert(tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	if err := writeKey(keyPath, key); err != nil {
		return err
	}
	if err := writeCert(certPath, der); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, `client certificate:  %s (CN=%s, signed by %s)
private key:         %s (0600)
SHA-256 fingerprint: %s

Register the peer with its certificate pinned, e.g.:
  ward peer add %s --cert-fingerprint %s --allow echo,store
`, certPath, peer, filepath.Join(dir, pkiCACert), keyPath, CertFingerprint(der), peer, CertFingerprint(der))
	return nil
}

func pkiRevoke(e *env, dir, peer string) error {
	caCert, caKey, certPath, keyPath, err := peerCA(dir, peer)
	if err != nil {
		return err
	}
	cert, err := readPEMCert(certPath)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no certificate of %s at %s (ward pki issue %s makes one)", peer, certPath, peer)
	}
	if err != nil {
		return err
	}
	if cert.CheckSignatureFrom(caCert) != nil {
		return fmt.Errorf("%s was not issued by the CA of %s", certPath, dir)
	}
	crlPath, n, err := updateCRL(dir, caCert, caKey, cert.SerialNumber)
	if err != nil {
		return err
	}
	// Aside, so that 'ward pki issue PEER' can make a new one.
	suffix := ".revoked-" + cert.SerialNumber.Text(16)
	for _, p := range []string{certPath, keyPath} {
		if err := os.Rename(p, p+suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	fmt.Fprintf(e.stdout, `revoked:         %s (CN=%s, serial %s)
revocation list: %s (%d certificates)
moved aside:     %s%s, with its key

Ward refuses the certificate once its configuration names the list:

[dicom]
tls_crl = %q

(or ward serve --tls-crl %s). A running Ward reads a changed list within
seconds. Issue %s a new certificate with 'ward pki issue %s' and pin it
again if the peer was pinned (ward peer add %s --cert-fingerprint ...).
`, certPath, cert.Subject.CommonName, cert.SerialNumber.Text(16), crlPath, n,
		certPath, suffix, crlPath, crlPath, peer, peer, peer)
	return nil
}

// updateCRL makes the CA's revocation list DATA/pki/crl.pem anew, with
// the certificates it listed and serial (when not nil), signed by the CA
// and valid as long as the CA is. It returns the list's path and how many
// certificates it names.
func updateCRL(dir string, caCert *x509.Certificate, caKey *ecdsa.PrivateKey, serial *big.Int) (string, int, error) {
	crlPath := filepath.Join(dir, pkiCRL)
	tmpl := &x509.RevocationList{Number: big.NewInt(1)}
	if b, err := os.ReadFile(crlPath); err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != "X509 CRL" {
			return "", 0, fmt.Errorf("%s: not a PEM revocation list", crlPath)
		}
		old, err := x509.ParseRevocationList(blk.Bytes)
		if err != nil {
			return "", 0, fmt.Errorf("%s: %w", crlPath, err)
		}
		if err := old.CheckSignatureFrom(caCert); err != nil {
			return "", 0, fmt.Errorf("%s is not signed by the CA of %s: %w", crlPath, dir, err)
		}
		tmpl.RevokedCertificateEntries = old.RevokedCertificateEntries
		tmpl.Number = new(big.Int).Add(old.Number, big.NewInt(1))
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", 0, err
	}
	now := time.Now()
	if serial != nil && !slices.ContainsFunc(tmpl.RevokedCertificateEntries, func(e x509.RevocationListEntry) bool {
		return e.SerialNumber.Cmp(serial) == 0
	}) {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: serial, RevocationTime: now})
	}
	tmpl.ThisUpdate, tmpl.NextUpdate = now, caCert.NotAfter
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, caCert, caKey)
	if err != nil {
		return "", 0, err
	}
	if err := replaceFile(crlPath, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o600); err != nil {
		return "", 0, err
	}
	return crlPath, len(tmpl.RevokedCertificateEntries), nil
}

// replaceFile writes b to path through a temporary file renamed over it,
// fsynced, so that a reader sees the old contents or the new.
func replaceFile(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	os.Remove(tmp)
	if err := writeNew(tmp, b, mode); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// CertFingerprint is the SHA-256 of a certificate's DER encoding in
// lowercase hex: the form a pinned client certificate is given in.
func CertFingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPath, keyPath := filepath.Join(dir, pkiCACert), filepath.Join(dir, pkiCAKey)
	cert, err := readPEMCert(certPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("no CA at %s: run 'ward pki init' first", certPath)
	}
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	blk, _ := pem.Decode(kb)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, nil, fmt.Errorf("%s: not a PEM private key", keyPath)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, fmt.Errorf("%s does not hold the key of %s", keyPath, certPath)
	}
	return cert, key, nil
}

// readPEMCert reads a file holding one PEM certificate.
func readPEMCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: not a PEM certificate", path)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cert, nil
}

func signCert(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial.Add(serial, big.NewInt(1))
	return x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
}

// writeKey writes a PKCS #8 PEM private key, mode 0600, never over an
// existing file.
func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writeNew(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// writeCert writes a PEM certificate, mode 0600 as every file Ward writes
// (the operator hands copies to peers), never over an existing
// file.
func writeCert(path string, der []byte) error {
	return writeNew(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
}

func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil { // whatever the umask
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
