package server

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/ward-pacs/ward/internal/config"
)

// TLSCipherSuites are the TLS 1.2 cipher suites Ward accepts: ECDHE key
// exchange (forward secrecy) with an AEAD cipher, as BCP 195 (RFC 9325)
// recommends and the PS3.15 B.12 BCP 195 profiles require. TLS 1.3 suites
// are not configurable in Go and are all AEAD.
var TLSCipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// ErrNoCACertificates: a client CA file without any certificate.
var ErrNoCACertificates = errors.New("no PEM certificate found")

// TLSConfig builds the DIMSE over TLS server configuration from the
// [dicom] tls_* settings: TLS 1.2 minimum (1.3 negotiated when the client
// offers it), the cipher suites above, no renegotiation (a Go server never
// renegotiates), and, with tls_client_ca, client certificates required and
// verified against it (without it they are requested, for peers pinned by
// certificate fingerprint). A certificate the revocation lists of
// tls_crl name is refused.
func TLSConfig(d *config.DICOM) (*tls.Config, error) {
	crl, err := newRevocations(d, slog.Default())
	if err != nil {
		return nil, err
	}
	return tlsConfig(d, crl)
}

// tlsConfig is TLSConfig with the revocation lists already loaded (crl may
// be nil).
func tlsConfig(d *config.DICOM, crl *revocations) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(d.TLSCert, d.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("dicom tls_cert %s / tls_key %s: %w", d.TLSCert, d.TLSKey, err)
	}
	tc := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: TLSCipherSuites,
		Certificates: []tls.Certificate{cert},
		// Without a client CA, a certificate is still asked for: a peer
		// pinned by fingerprint proves it holds the key in the handshake.
		ClientAuth: tls.RequestClientCert,
	}
	if d.TLSClientCA != "" {
		pool, err := loadCAs("tls_client_ca", d.TLSClientCA)
		if err != nil {
			return nil, err
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	crl.apply(tc)
	return tc, nil
}

// peerTLS builds the client side of DIMSE over TLS for the peers Ward
// calls (C-MOVE destinations with tls = true): the same protocol versions
// and cipher suites as the listener, server certificates verified against
// tls_peer_ca (the system's roots without it), and Ward's client
// certificate when tls_client_cert is set; a server certificate the
// revocation lists crl name is refused.
func peerTLS(d *config.DICOM, crl *revocations) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, CipherSuites: TLSCipherSuites}
	if d.TLSPeerCA != "" {
		pool, err := loadCAs("tls_peer_ca", d.TLSPeerCA)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = pool
	}
	if d.TLSClientCert != "" {
		cert, err := tls.LoadX509KeyPair(d.TLSClientCert, d.TLSClientKey)
		if err != nil {
			return nil, fmt.Errorf("dicom tls_client_cert %s / tls_client_key %s: %w", d.TLSClientCert, d.TLSClientKey, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	crl.apply(tc)
	return tc, nil
}

// loadCAs reads a PEM file of CA certificates named by the [dicom] key.
func loadCAs(key, path string) (*x509.CertPool, error) {
	certs, err := readCertificates(path)
	if err != nil {
		return nil, fmt.Errorf("dicom %s: %w", key, err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// readCertificates reads the PEM certificates of a file.
func readCertificates(path string) ([]*x509.Certificate, error) {
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
