package server

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/ward-pacs/ward/internal/config"
)

// crlRecheck is how often, at most, the handshakes look whether the
// revocation list file changed.
var crlRecheck = 5 * time.Second

// revocations holds the certificate revocation lists of [dicom] tls_crl.
// Every list must be signed by a CA of tls_client_ca or tls_peer_ca. The
// file is read at start, which fails on any error, and again when its
// modification time or size changes; a new file that does not load is
// logged and the lists already loaded stay in force, so that a botched
// update never lets a revoked certificate back in.
type revocations struct {
	path   string
	cas    []*x509.Certificate
	logger *slog.Logger

	mu      sync.Mutex
	looked  time.Time // when the file was last stat'ed
	modTime time.Time
	size    int64
	revoked map[string]time.Time // issuer (raw subject) + serial -> revoked at
}

func revocationKey(rawIssuer []byte, serial fmt.Stringer) string {
	return string(rawIssuer) + "\x00" + serial.String()
}

// newRevocations loads d.TLSCRL; nil when it is not set.
func newRevocations(d *config.DICOM, logger *slog.Logger) (*revocations, error) {
	if d.TLSCRL == "" {
		return nil, nil
	}
	r := &revocations{path: d.TLSCRL, logger: logger}
	for _, f := range []struct{ key, path string }{{"tls_client_ca", d.TLSClientCA}, {"tls_peer_ca", d.TLSPeerCA}} {
		if f.path == "" {
			continue
		}
		certs, err := readCertificates(f.path)
		if err != nil {
			return nil, fmt.Errorf("dicom %s: %w", f.key, err)
		}
		r.cas = append(r.cas, certs...)
	}
	fi, err := os.Stat(r.path)
	if err != nil {
		return nil, fmt.Errorf("dicom tls_crl: %w", err)
	}
	revoked, stale, err := r.load()
	if err != nil {
		return nil, fmt.Errorf("dicom tls_crl %s: %w", r.path, err)
	}
	r.revoked, r.looked, r.modTime, r.size = revoked, time.Now(), fi.ModTime(), fi.Size()
	r.warnStale(stale)
	return r, nil
}

// load reads and verifies the lists in the file. stale names the lists
// whose next update is past: they are still applied.
func (r *revocations) load() (revoked map[string]time.Time, stale []string, err error) {
	b, err := os.ReadFile(r.path)
	if err != nil {
		return nil, nil, err
	}
	var ders [][]byte
	if bytes.Contains(b, []byte("-----BEGIN")) {
		for {
			var blk *pem.Block
			blk, b = pem.Decode(b)
			if blk == nil {
				break
			}
			if blk.Type == "X509 CRL" {
				ders = append(ders, blk.Bytes)
			}
		}
	} else {
		ders = [][]byte{b}
	}
	if len(ders) == 0 {
		return nil, nil, errors.New("no revocation list (PEM \"X509 CRL\" blocks or one DER list)")
	}
	revoked = map[string]time.Time{}
	now := time.Now()
	for _, der := range ders {
		l, err := x509.ParseRevocationList(der)
		if err != nil {
			return nil, nil, err
		}
		if err := r.verify(l); err != nil {
			return nil, nil, err
		}
		if !l.NextUpdate.IsZero() && now.After(l.NextUpdate) {
			stale = append(stale, fmt.Sprintf("%s (next update was due %s)", l.Issuer, l.NextUpdate.UTC().Format(time.RFC3339)))
		}
		for _, e := range l.RevokedCertificateEntries {
			revoked[revocationKey(l.RawIssuer, e.SerialNumber)] = e.RevocationTime
		}
	}
	return revoked, stale, nil
}

// verify checks that a CA Ward trusts signed the list.
func (r *revocations) verify(l *x509.RevocationList) error {
	for _, ca := range r.cas {
		if bytes.Equal(ca.RawSubject, l.RawIssuer) && l.CheckSignatureFrom(ca) == nil {
			return nil
		}
	}
	return fmt.Errorf("the revocation list of %s is not signed by a CA of tls_client_ca or tls_peer_ca", l.Issuer)
}

func (r *revocations) warnStale(stale []string) {
	for _, s := range stale {
		r.logger.Warn("a certificate revocation list is out of date; it is still applied: publish a new one", "crl", r.path, "issuer", s)
	}
}

// refresh reads the file again if it changed, at most every crlRecheck.
func (r *revocations) refresh() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.looked) < crlRecheck {
		return
	}
	r.looked = time.Now()
	fi, err := os.Stat(r.path)
	if err != nil {
		r.logger.Error("cannot read the certificate revocation list; the lists loaded before stay in force", "crl", r.path, "err", err)
		return
	}
	if fi.ModTime().Equal(r.modTime) && fi.Size() == r.size {
		return
	}
	revoked, stale, err := r.load()
	if err != nil {
		r.logger.Error("the changed certificate revocation list does not load; the lists loaded before stay in force", "crl", r.path, "err", err)
		return
	}
	r.revoked, r.modTime, r.size = revoked, fi.ModTime(), fi.Size()
	r.logger.Info("certificate revocation list reloaded", "crl", r.path, "revoked", len(revoked))
	r.warnStale(stale)
}

// check refuses a connection whose peer presented a revoked certificate
// (the leaf, or an intermediate it sent).
func (r *revocations) check(cs tls.ConnectionState) error {
	r.refresh()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cs.PeerCertificates {
		if at, ok := r.revoked[revocationKey(c.RawIssuer, c.SerialNumber)]; ok {
			return fmt.Errorf("certificate %q (serial %s, issued by %s) was revoked on %s", c.Subject, c.SerialNumber, c.Issuer, at.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// apply makes tc refuse revoked certificates; r may be nil.
func (r *revocations) apply(tc *tls.Config) {
	if r == nil {
		return
	}
	tc.VerifyConnection = r.check
}

// SetCRLRecheck sets how often the handshakes look for a changed
// revocation list and returns the previous value. For tests.
func SetCRLRecheck(d time.Duration) time.Duration {
	old := crlRecheck
	crlRecheck = d
	return old
}
