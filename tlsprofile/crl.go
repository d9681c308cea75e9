package tlsprofile

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
	"sync/atomic"
	"time"
)

// DefaultCRLRecheck is how often, at most, handshakes look whether a
// revocation list file changed.
const DefaultCRLRecheck = 5 * time.Second

var crlRecheck atomic.Int64 // nanoseconds

func init() { crlRecheck.Store(int64(DefaultCRLRecheck)) }

// CRLRecheck is how often, at most, handshakes look whether a revocation
// list file changed.
func CRLRecheck() time.Duration { return time.Duration(crlRecheck.Load()) }

// SetCRLRecheck sets CRLRecheck for every Revocations and returns the
// previous value. For tests.
func SetCRLRecheck(d time.Duration) time.Duration {
	return time.Duration(crlRecheck.Swap(int64(d)))
}

// ErrNoCRL: a revocation list file without a list.
var ErrNoCRL = errors.New("no revocation list (PEM \"X509 CRL\" blocks or one DER list)")

// ErrCRLUntrusted: a revocation list that none of the CAs given signed.
var ErrCRLUntrusted = errors.New("not signed by a CA trusted to verify certificates")

// Revocations holds the certificate revocation lists of one file (PEM
// "X509 CRL" blocks, or one DER list), each signed by one of the CAs it
// was loaded with. The file is read at LoadRevocations, which fails on any
// error, and again in a handshake when its modification time or size has
// changed, CRLRecheck after it was last looked at. A changed file that does
// not load is logged and the lists loaded before stay in force, so that a
// botched update never lets a revoked certificate back in. A list whose
// next update is past is logged as stale, at load and at each reload, and
// applied all the same. A nil *Revocations refuses nothing.
type Revocations struct {
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

// LoadRevocations reads the revocation lists of the file at path; each
// must be signed by one of cas. logger (nil: slog.Default()) receives
// reloads, stale lists and lists that do not load.
func LoadRevocations(path string, cas []*x509.Certificate, logger *slog.Logger) (*Revocations, error) {
	if logger == nil {
		logger = slog.Default()
	}
	r := &Revocations{path: path, cas: cas, logger: logger}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	revoked, stale, err := r.load()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r.revoked, r.looked, r.modTime, r.size = revoked, time.Now(), fi.ModTime(), fi.Size()
	r.warnStale(stale)
	return r, nil
}

// load reads and verifies the lists in the file. stale names the lists
// whose next update is past: they are still applied.
func (r *Revocations) load() (revoked map[string]time.Time, stale []string, err error) {
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
		return nil, nil, ErrNoCRL
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

// verify checks that one of the CAs signed the list.
func (r *Revocations) verify(l *x509.RevocationList) error {
	for _, ca := range r.cas {
		if bytes.Equal(ca.RawSubject, l.RawIssuer) && l.CheckSignatureFrom(ca) == nil {
			return nil
		}
	}
	return fmt.Errorf("the revocation list of %s is %w", l.Issuer, ErrCRLUntrusted)
}

func (r *Revocations) warnStale(stale []string) {
	for _, s := range stale {
		r.logger.Warn("a certificate revocation list is out of date; it is still applied: publish a new one", "crl", r.path, "issuer", s)
	}
}

// refresh reads the file again if it changed, at most every CRLRecheck.
func (r *Revocations) refresh() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.looked) < CRLRecheck() {
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

// Check refuses a connection whose other side presented a revoked
// certificate (the leaf, or an intermediate it sent). It is the
// VerifyConnection of the configurations built with r.
func (r *Revocations) Check(cs tls.ConnectionState) error {
	if r == nil {
		return nil
	}
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
func (r *Revocations) apply(tc *tls.Config) {
	if r == nil {
		return
	}
	tc.VerifyConnection = r.Check
}
