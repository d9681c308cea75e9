package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/dustin/go-humanize"
)

// Web defaults.
const (
	DefaultWebListen = "127.0.0.1:8080"
	// DefaultWebMaxBody bounds a request body (a STOW-RS upload) when
	// [web] max_body is empty.
	DefaultWebMaxBody = "2GiB"
	// DefaultWebMaxResults caps a QIDO-RS answer when [web] max_results is 0.
	DefaultWebMaxResults = 1000
)

// Web is the HTTP front end's configuration (DICOMweb, and the viewer
// later).
type Web struct {
	// Listen is HOST:PORT of the HTTP listener; "off" (or "none") turns
	// it off. Plain HTTP is served on loopback only: beyond loopback the
	// listener needs a certificate (TLSCert/TLSKey, or [dicom]'s).
	Listen string `toml:"listen"`
	// TLSCert and TLSKey make the listener HTTPS. Empty: [dicom] tls_cert
	// and tls_key when the listener is not on loopback.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// BaseURL is the address clients reach Ward's web listener at (behind
	// a proxy, the proxy's), e.g. https://pacs.example.org; absolute URLs
	// Ward returns (BulkDataURI, RetrieveURL) are built from it. Empty:
	// from the request's Host header and scheme.
	BaseURL string `toml:"base_url"`
	// AllowOrigins lists the origins (scheme://host[:port]) a browser may
	// call DICOMweb from across origins (CORS). Empty: none.
	AllowOrigins []string `toml:"allow_origins"`
	// MaxBody bounds a request body, e.g. "2GiB" (STOW-RS); larger ones
	// get 413.
	MaxBody string `toml:"max_body"`
	// MaxResults caps the matches of one QIDO-RS request (a client's
	// limit may ask for fewer); 0: DefaultWebMaxResults.
	MaxResults int `toml:"max_results"`
	// Viewer is where the OHIF viewer served at / comes from: empty,
	// DATA/viewer (ward serve fetches it there with npm on first run,
	// ward viewer fetch does it by hand); "off", no viewer; or a directory
	// holding an OHIF bundle (its dist/), served as it is.
	Viewer string `toml:"viewer"`
}

// ViewerOff reports whether [web] viewer turns the viewer off.
func (w *Web) ViewerOff() bool {
	v := strings.ToLower(strings.TrimSpace(w.Viewer))
	return v == "off" || v == "none"
}

// Off reports whether the HTTP listener is turned off.
func (w *Web) Off() bool {
	l := strings.ToLower(strings.TrimSpace(w.Listen))
	return l == "" || l == "off" || l == "none"
}

// WebTLS returns the certificate and key the HTTP listener serves HTTPS
// with ("" "" for plain HTTP): its own, or beyond loopback [dicom]'s.
func (c *Config) WebTLS() (cert, key string) {
	if c.Web.TLSCert != "" || c.Web.TLSKey != "" {
		return c.Web.TLSCert, c.Web.TLSKey
	}
	if !c.Web.Off() && CheckLoopback(c.Web.Listen) != nil {
		return c.DICOM.TLSCert, c.DICOM.TLSKey
	}
	return "", ""
}

// MaxBodyBytes parses Web.MaxBody.
func (w *Web) MaxBodyBytes() (int64, error) {
	s := w.MaxBody
	if s == "" {
		s = DefaultWebMaxBody
	}
	n, err := humanize.ParseBytes(s)
	if err != nil || n == 0 || n > 1<<50 {
		return 0, fmt.Errorf("web max_body %q: give a size such as 2GiB", w.MaxBody)
	}
	return int64(n), nil
}

// ErrWebPlaintext: plain HTTP beyond loopback.
var ErrWebPlaintext = errors.New("plain HTTP is served on loopback only")

func (c *Config) validateWeb() error {
	w := &c.Web
	if w.Off() {
		return nil
	}
	if _, _, err := net.SplitHostPort(w.Listen); err != nil {
		return fmt.Errorf("web listen %q: %w", w.Listen, err)
	}
	if (w.TLSCert == "") != (w.TLSKey == "") {
		return errors.New("web tls_cert and tls_key go together")
	}
	if cert, key := c.WebTLS(); CheckLoopback(w.Listen) != nil && (cert == "" || key == "") {
		return fmt.Errorf("web listen %s: %w: beyond loopback Ward serves HTTPS; set [web] tls_cert and tls_key (or [dicom]'s; ward pki init makes them) — web viewers open without sign-in were part of the 2019 exposure", w.Listen, ErrWebPlaintext)
	}
	if w.BaseURL != "" {
		u, err := url.Parse(w.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return fmt.Errorf("web base_url %q: give scheme://host[:port][/path], e.g. https://pacs.example.org", w.BaseURL)
		}
	}
	for _, o := range w.AllowOrigins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.User != nil || o == "*" {
			return fmt.Errorf("web allow_origins: %q is not an origin (scheme://host[:port]; no wildcard)", o)
		}
	}
	if w.MaxResults < 0 {
		return errors.New("web max_results must not be negative (0: the default, 1000)")
	}
	if _, err := w.MaxBodyBytes(); err != nil {
		return err
	}
	return nil
}
