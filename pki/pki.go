// Package pki is the small certificate authority of `ward pki`, for a site
// without a PKI of its own: it makes a CA and a server certificate
// (Init), client certificates for peers (Issue), and withdraws them
// through the CA's revocation list (Revoke, WriteCRL), which Ward reads
// with [dicom] tls_crl (package tlsprofile).
//
// Everything lives in one directory (DATA/pki):
//
//	ca.crt, ca.key           the CA (ECDSA P-256, CAValidity)
//	server.crt, server.key   Ward's server certificate (ServerValidity)
//	crl.pem                  the CA's revocation list
//	peers/PEER.crt, .key     client certificates (ClientValidity)
//
// Private keys are PKCS #8 PEM files of mode 0600, certificates and the
// list mode 0600 like every file Ward writes (the operator hands copies to
// peers), directories 0700. A key or certificate is written once,
// never over an existing file (O_EXCL), and fsynced with its directory; a
// file not written whole is removed. The revocation list is replaced
// atomically (a temporary file renamed over it, the directory fsynced), so
// that a reader sees the old list or the new one.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ward-pacs/ward/durable"
	"github.com/ward-pacs/ward/tlsprofile"
)

// Validity periods of the certificates the CA makes.
const (
	CAValidity     = 10 * 365 * 24 * time.Hour
	ServerValidity = 2 * 365 * 24 * time.Hour
	ClientValidity = 2 * 365 * 24 * time.Hour
)

// File names in the directory.
const (
	CACertFile     = "ca.crt"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.crt"
	ServerKeyFile  = "server.key"
	PeersDir       = "peers"
	CRLFile        = "crl.pem"
)

// File modes.
const (
	keyMode  os.FileMode = 0o600
	certMode os.FileMode = 0o600
	dirMode  os.FileMode = 0o700
)

// ErrCAExists: Init found a CA already.
var ErrCAExists = errors.New("a CA already exists; ward pki init never overwrites one (remove it yourself to start over, which invalidates every certificate it issued)")

// ErrNoCA: the directory holds no CA.
var ErrNoCA = errors.New("no CA")

// ErrPeerName: a peer name that is not a safe file name.
var ErrPeerName = errors.New("use 1 to 64 letters, digits, '_', '-' or '.' (an AE title usually)")

// ErrIssued: Issue found a certificate or key of the peer already.
var ErrIssued = errors.New("exists: remove it to issue a new certificate")

// ErrNotIssued: Revoke found no certificate of the peer.
var ErrNotIssued = errors.New("no certificate issued")

// Initialized names the files Init wrote.
type Initialized struct {
	CACert, CAKey, ServerCert, ServerKey, CRL string
}

// Init makes a CA in dir (created, mode 0700) and a server certificate
// for names (DNS names or IP addresses; the first is its common name),
// and an empty revocation list. It never overwrites a CA: the CA key is
// written first and exclusively, so that of two Inits at once one fails.
func Init(dir string, names []string) (Initialized, error) {
	if len(names) == 0 {
		return Initialized{}, errors.New("no name for the server certificate")
	}
	for _, n := range names {
		if n == "" || strings.ContainsAny(n, " /\\") {
			return Initialized{}, fmt.Errorf("name %q: give a DNS name or an IP address", n)
		}
	}
	f := Initialized{
		CACert: filepath.Join(dir, CACertFile), CAKey: filepath.Join(dir, CAKeyFile),
		ServerCert: filepath.Join(dir, ServerCertFile), ServerKey: filepath.Join(dir, ServerKeyFile),
	}
	for _, p := range []string{f.CACert, f.CAKey} {
		if _, err := os.Lstat(p); err == nil {
			return Initialized{}, fmt.Errorf("%s: %w", p, ErrCAExists)
		} else if !errors.Is(err, os.ErrNotExist) {
			return Initialized{}, err
		}
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return Initialized{}, err
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Initialized{}, err
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "Ward CA", Organization: []string{"Ward"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := signCert(caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return Initialized{}, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return Initialized{}, err
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Initialized{}, err
	}
	srvTmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: names[0], Organization: []string{"Ward"}},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(ServerValidity),
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
		return Initialized{}, err
	}
	if err := writeKey(f.CAKey, caKey); err != nil {
		return Initialized{}, err
	}
	if err := writeCert(f.CACert, caDER); err != nil {
		return Initialized{}, err
	}
	if err := writeKey(f.ServerKey, srvKey); err != nil {
		return Initialized{}, err
	}
	if err := writeCert(f.ServerCert, srvDER); err != nil {
		return Initialized{}, err
	}
	if err := durable.Sync(dir); err != nil {
		return Initialized{}, err
	}
	// An empty revocation list, so that tls_crl can name it from the start.
	ca := &CA{dir: dir, cert: caCert, key: caKey}
	if f.CRL, _, err = ca.WriteCRL(nil); err != nil {
		return Initialized{}, err
	}
	return f, nil
}

// CA is the certificate authority of a directory Init made.
type CA struct {
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// Open loads the CA of dir: its certificate, and its key, which must match.
func Open(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	cert, err := readPEMCert(certPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s: run 'ward pki init' first", ErrNoCA, certPath)
	}
	if err != nil {
		return nil, err
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(kb)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s: not a PEM private key", keyPath)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%s does not hold the key of %s", keyPath, certPath)
	}
	return &CA{dir: dir, cert: cert, key: key}, nil
}

// Dir is the CA's directory.
func (ca *CA) Dir() string { return ca.dir }

// Certificate is the CA's certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CheckPeerName refuses a peer name that is not a safe file name: 1 to 64
// letters, digits, '_', '-' or '.', not starting with '.' or '-'.
func CheckPeerName(p string) error {
	ok := p != "" && len(p) <= 64 && p[0] != '.' && p[0] != '-'
	for _, r := range p {
		switch {
		case r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_', r == '-', r == '.':
		default:
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("peer %q: %w", p, ErrPeerName)
	}
	return nil
}

// PeerFiles are where the certificate and key of peer are kept.
func (ca *CA) PeerFiles(peer string) (cert, key string, err error) {
	if err := CheckPeerName(peer); err != nil {
		return "", "", err
	}
	d := filepath.Join(ca.dir, PeersDir)
	return filepath.Join(d, peer+".crt"), filepath.Join(d, peer+".key"), nil
}

// Issued is what Issue wrote.
type Issued struct {
	Cert, Key   string // the files
	Fingerprint string // the certificate's SHA-256, to pin it
}

// Issue makes a client certificate for peer (its common name), valid
// ClientValidity, and writes it and its key to the peers directory. A
// peer that has a certificate there is refused.
func (ca *CA) Issue(peer string) (Issued, error) {
	certPath, keyPath, err := ca.PeerFiles(peer)
	if err != nil {
		return Issued{}, err
	}
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Lstat(p); err == nil {
			return Issued{}, fmt.Errorf("%s %w for %s", p, ErrIssued, peer)
		}
	}
	if err := os.MkdirAll(filepath.Dir(certPath), dirMode); err != nil {
		return Issued{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Issued{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: peer, Organization: []string{"Ward"}},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(ClientValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := signCert(tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return Issued{}, err
	}
	if err := writeKey(keyPath, key); err != nil {
		return Issued{}, err
	}
	if err := writeCert(certPath, der); err != nil {
		return Issued{}, err
	}
	if err := durable.Sync(filepath.Dir(certPath)); err != nil {
		return Issued{}, err
	}
	return Issued{Cert: certPath, Key: keyPath, Fingerprint: tlsprofile.Fingerprint(der)}, nil
}

// Revoked is what Revoke did.
type Revoked struct {
	Cert     *x509.Certificate // the certificate revoked
	CertFile string            // where it was
	Suffix   string            // appended to its and its key's file names
	CRL      string            // the revocation list
	Listed   int               // how many certificates the list names
}

// Revoke adds the certificate of peer to the CA's revocation list and
// moves it and its key aside (Suffix), so that Issue can make the peer a
// new one.
func (ca *CA) Revoke(peer string) (Revoked, error) {
	certPath, keyPath, err := ca.PeerFiles(peer)
	if err != nil {
		return Revoked{}, err
	}
	cert, err := readPEMCert(certPath)
	if errors.Is(err, os.ErrNotExist) {
		return Revoked{}, fmt.Errorf("%w to %s: none at %s (ward pki issue %s makes one)", ErrNotIssued, peer, certPath, peer)
	}
	if err != nil {
		return Revoked{}, err
	}
	if cert.CheckSignatureFrom(ca.cert) != nil {
		return Revoked{}, fmt.Errorf("%s was not issued by the CA of %s", certPath, ca.dir)
	}
	crlPath, n, err := ca.WriteCRL(cert.SerialNumber)
	if err != nil {
		return Revoked{}, err
	}
	suffix := ".revoked-" + cert.SerialNumber.Text(16)
	for _, p := range []string{certPath, keyPath} {
		if err := os.Rename(p, p+suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			return Revoked{}, err
		}
	}
	if err := durable.Sync(filepath.Dir(certPath)); err != nil {
		return Revoked{}, err
	}
	return Revoked{Cert: cert, CertFile: certPath, Suffix: suffix, CRL: crlPath, Listed: n}, nil
}

// WriteCRL makes the CA's revocation list anew, with the certificates it
// listed and serial (when not nil), signed by the CA, numbered one past
// the list before, and valid as long as the CA is. It returns the list's
// path and how many certificates it names. A list there that the CA did
// not sign is an error, and is left alone.
func (ca *CA) WriteCRL(serial *big.Int) (string, int, error) {
	crlPath := filepath.Join(ca.dir, CRLFile)
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
		if err := old.CheckSignatureFrom(ca.cert); err != nil {
			return "", 0, fmt.Errorf("%s is not signed by the CA of %s: %w", crlPath, ca.dir, err)
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
	tmpl.ThisUpdate, tmpl.NextUpdate = now, ca.cert.NotAfter
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.cert, ca.key)
	if err != nil {
		return "", 0, err
	}
	if err := replaceFile(crlPath, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), certMode); err != nil {
		return "", 0, err
	}
	return crlPath, len(tmpl.RevokedCertificateEntries), nil
}

// replaceFile writes b to path through a temporary file renamed over it,
// fsynced, so that a reader sees the old contents or the new.
func replaceFile(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	os.Remove(tmp)
	if err := durable.WriteNew(tmp, b, mode); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return durable.Sync(filepath.Dir(path))
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

// signCert signs tmpl with a random positive 128-bit serial number.
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
	return durable.WriteNew(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), keyMode)
}

// writeCert writes a PEM certificate, mode 0600, never over an existing
// file.
func writeCert(path string, der []byte) error {
	return durable.WriteNew(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), certMode)
}
