// Package tlsprofile is Ward's one TLS profile: every TLS configuration in
// Ward is built here, for the DIMSE over TLS listener, Ward calling peers
// (C-MOVE destinations), the command line's --tls options and syslog over
// TLS forwarding of the audit trail.
//
// The profile, after PS3.15 B.12 (the BCP 195 TLS secure transport
// connection profiles) and BCP 195 (RFC 9325):
//
//   - TLS 1.2 at least. TLS 1.3 is negotiated whenever the other side
//     offers it: Go prefers the highest version both sides speak.
//   - TLS 1.2 cipher suites: CipherSuites, ECDHE key exchange (forward
//     secrecy) with an AEAD cipher only. The TLS 1.3 suites are not
//     configurable in Go and are all AEAD.
//   - No renegotiation: a Go server never renegotiates, and the clients
//     built here refuse a server's request to.
//   - Client certificates (servers): ClientCertRequested asks for one and
//     leaves the decision to the caller, who pins it by fingerprint;
//     ClientCertVerified requires one that verifies against ClientCAs.
//   - Server certificates (clients): always verified, against RootCAs or
//     the system's roots, for ServerName, which must be set: the host the
//     caller dialled or registered (ServerName derives it from HOST:PORT).
//     A DNS name is matched against the certificate's DNS names, an IP
//     address against its IP addresses.
//   - Revocation: with Revocations, a handshake in which the other side
//     presents a certificate its lists name fails, on either side. The
//     lists are reloaded within CRLRecheck of a change, and a stale list is
//     logged and still applied (crl.go).
//
// The package imports only the standard library, so that any floor may use
// it (audit among them). The exposure auditor (package scan) is outside the
// profile on purpose: it observes what a server offers, down to TLS 1.0,
// and trusts nothing.
package tlsprofile

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
)

// MinVersion is the lowest protocol version Ward speaks or accepts.
const MinVersion = tls.VersionTLS12

// CipherSuites are the TLS 1.2 cipher suites Ward accepts and offers:
// ECDHE key exchange with AES-GCM or ChaCha20-Poly1305, as BCP 195
// (RFC 9325 4.2) recommends and the PS3.15 B.12 BCP 195 profiles require.
func CipherSuites() []uint16 {
	return []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	}
}

// ClientCerts says what a server asks of its clients' certificates.
type ClientCerts int

const (
	// ClientCertRequested asks the client for a certificate but does not
	// verify it against a CA, and lets a client without one finish the
	// handshake: the caller decides after the handshake, e.g. by the
	// certificate's fingerprint (a pinned peer proves in the handshake
	// that it holds the key). The zero value.
	ClientCertRequested ClientCerts = iota
	// ClientCertVerified requires a certificate that verifies against
	// ServerOptions.ClientCAs for client authentication.
	ClientCertVerified
)

func (m ClientCerts) String() string {
	switch m {
	case ClientCertRequested:
		return "requested"
	case ClientCertVerified:
		return "verified"
	}
	return fmt.Sprintf("ClientCerts(%d)", int(m))
}

// ErrNoCACertificates: a CA file without any certificate.
var ErrNoCACertificates = errors.New("no PEM certificate found")

// ErrNoClientCAs: ClientCertVerified without the CAs to verify with.
var ErrNoClientCAs = errors.New("client certificates are to be verified but no CA is given")

// ErrNoServerName: a client without the name to verify the server's
// certificate for.
var ErrNoServerName = errors.New("no server name to verify the certificate for")

// ServerOptions are what a TLS server of Ward is made of.
type ServerOptions struct {
	// Certificate is the server's certificate chain and key.
	Certificate tls.Certificate
	// ClientCerts is the client certificate mode; ClientCAs the CAs of
	// ClientCertVerified.
	ClientCerts ClientCerts
	ClientCAs   *x509.CertPool
	// Revocations, when not nil, refuses client certificates its lists
	// name.
	Revocations *Revocations
}

// Server builds a server configuration of the profile.
func Server(o ServerOptions) (*tls.Config, error) {
	tc := &tls.Config{
		MinVersion:   MinVersion,
		CipherSuites: CipherSuites(),
		Certificates: []tls.Certificate{o.Certificate},
	}
	switch o.ClientCerts {
	case ClientCertRequested:
		tc.ClientAuth = tls.RequestClientCert
	case ClientCertVerified:
		if o.ClientCAs == nil {
			return nil, ErrNoClientCAs
		}
		tc.ClientAuth, tc.ClientCAs = tls.RequireAndVerifyClientCert, o.ClientCAs
	default:
		return nil, fmt.Errorf("tlsprofile: unknown client certificate mode %d", int(o.ClientCerts))
	}
	o.Revocations.apply(tc)
	return tc, nil
}

// ClientOptions are what a TLS client of Ward is made of.
type ClientOptions struct {
	// ServerName is the name the server's certificate must be valid for
	// (a DNS name or an IP address). It may be left empty in a
	// configuration that is given one per connection (WithServerName); Go
	// refuses a handshake without one.
	ServerName string
	// RootCAs verify the server's certificate; nil: the system's roots.
	RootCAs *x509.CertPool
	// Certificate, when not nil, is presented to servers that ask for a
	// client certificate.
	Certificate *tls.Certificate
	// Revocations, when not nil, refuses server certificates its lists
	// name.
	Revocations *Revocations
}

// Client builds a client configuration of the profile.
func Client(o ClientOptions) *tls.Config {
	tc := &tls.Config{
		MinVersion:    MinVersion,
		CipherSuites:  CipherSuites(),
		Renegotiation: tls.RenegotiateNever,
		ServerName:    o.ServerName,
		RootCAs:       o.RootCAs,
	}
	if o.Certificate != nil {
		tc.Certificates = []tls.Certificate{*o.Certificate}
	}
	o.Revocations.apply(tc)
	return tc
}

// WithServerName is a copy of a client configuration for a server known
// by name (a DNS name or an IP address).
func WithServerName(tc *tls.Config, name string) *tls.Config {
	c := tc.Clone()
	c.ServerName = name
	return c
}

// ServerName is the name a server dialled at addr (HOST:PORT) must have a
// certificate for: its HOST.
func ServerName(addr string) (string, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if host == "" {
		return "", fmt.Errorf("%s: %w", addr, ErrNoServerName)
	}
	return host, nil
}

// LoadKeyPair reads a PEM certificate (chain allowed) and its PEM private
// key.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	return tls.LoadX509KeyPair(certFile, keyFile)
}

// LoadCAs reads a PEM file of CA certificates into a pool. A file without
// a certificate, or with one that does not parse, is an error.
func LoadCAs(path string) (*x509.CertPool, error) {
	certs, err := ReadCertificates(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// ReadCertificates reads the PEM certificates of a file; other PEM blocks
// are skipped. Errors name the file.
func ReadCertificates(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: %w", path, ErrNoCACertificates)
	}
	return certs, nil
}

// Fingerprint is the SHA-256 of a certificate's DER encoding in lowercase
// hex: the form a pinned certificate is given in.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}
