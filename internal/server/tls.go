package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/tlsprofile"
)

// This file translates the [dicom] tls_* settings into the TLS profile
// (package tlsprofile), which states what Ward's TLS is.

// TLSConfig builds the DIMSE over TLS server configuration from the
// [dicom] tls_* settings: tls_cert and tls_key; with tls_client_ca, client
// certificates required and verified against it (without it they are
// requested, for peers pinned by certificate fingerprint); a certificate
// the revocation lists of tls_crl name is refused.
func TLSConfig(d *config.DICOM) (*tls.Config, error) {
	crl, err := newRevocations(d, slog.Default())
	if err != nil {
		return nil, err
	}
	return tlsConfig(d, crl)
}

// tlsConfig is TLSConfig with the revocation lists already loaded (crl may
// be nil).
func tlsConfig(d *config.DICOM, crl *tlsprofile.Revocations) (*tls.Config, error) {
	cert, err := tlsprofile.LoadKeyPair(d.TLSCert, d.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("dicom tls_cert %s / tls_key %s: %w", d.TLSCert, d.TLSKey, err)
	}
	o := tlsprofile.ServerOptions{Certificate: cert, ClientCerts: tlsprofile.ClientCertRequested, Revocations: crl}
	if d.TLSClientCA != "" {
		if o.ClientCAs, err = tlsprofile.LoadCAs(d.TLSClientCA); err != nil {
			return nil, fmt.Errorf("dicom tls_client_ca: %w", err)
		}
		o.ClientCerts = tlsprofile.ClientCertVerified
	}
	return tlsprofile.Server(o)
}

// peerTLS builds the client side of DIMSE over TLS for the peers Ward
// calls (C-MOVE destinations with tls = true): server certificates
// verified against tls_peer_ca (the system's roots without it), and Ward's
// client certificate when tls_client_cert is set; a server certificate the
// revocation lists crl name is refused. The server name is set per peer
// (tlsprofile.WithServerName).
func peerTLS(d *config.DICOM, crl *tlsprofile.Revocations) (*tls.Config, error) {
	o := tlsprofile.ClientOptions{Revocations: crl}
	if d.TLSPeerCA != "" {
		pool, err := tlsprofile.LoadCAs(d.TLSPeerCA)
		if err != nil {
			return nil, fmt.Errorf("dicom tls_peer_ca: %w", err)
		}
		o.RootCAs = pool
	}
	if d.TLSClientCert != "" {
		cert, err := tlsprofile.LoadKeyPair(d.TLSClientCert, d.TLSClientKey)
		if err != nil {
			return nil, fmt.Errorf("dicom tls_client_cert %s / tls_client_key %s: %w", d.TLSClientCert, d.TLSClientKey, err)
		}
		o.Certificate = &cert
	}
	return tlsprofile.Client(o), nil
}

// newRevocations loads [dicom] tls_crl, whose lists must be signed by a CA
// of tls_client_ca or tls_peer_ca; nil when it is not set.
func newRevocations(d *config.DICOM, logger *slog.Logger) (*tlsprofile.Revocations, error) {
	if d.TLSCRL == "" {
		return nil, nil
	}
	var cas []*x509.Certificate
	for _, f := range []struct{ key, path string }{{"tls_client_ca", d.TLSClientCA}, {"tls_peer_ca", d.TLSPeerCA}} {
		if f.path == "" {
			continue
		}
		certs, err := tlsprofile.ReadCertificates(f.path)
		if err != nil {
			return nil, fmt.Errorf("dicom %s: %w", f.key, err)
		}
		cas = append(cas, certs...)
	}
	r, err := tlsprofile.LoadRevocations(d.TLSCRL, cas, logger)
	if errors.Is(err, tlsprofile.ErrCRLUntrusted) {
		return nil, fmt.Errorf("dicom tls_crl: %w (a CA of tls_client_ca or tls_peer_ca must sign it)", err)
	}
	if err != nil {
		return nil, fmt.Errorf("dicom tls_crl: %w", err)
	}
	return r, nil
}
