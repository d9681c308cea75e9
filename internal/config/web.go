package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
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
	// OIDC is browser sign-in through an OpenID Connect provider.
	OIDC OIDC `toml:"oidc"`
	// Viewer is where the OHIF viewer served at / comes from: empty,
	// DATA/viewer (ward serve fetches it there with npm on first run,
	// ward viewer fetch does it by hand); "off", no viewer; or a directory
	// holding an OHIF bundle (its dist/), served as it is.
	Viewer string `toml:"viewer"`
	// ProxyFrom lists the load balancers (addresses or CIDRs) in front of
	// the web listener, as [dicom] proxy_from: a connection from one of
	// them must open with a PROXY protocol header (HAProxy send-proxy-v2,
	// in HTTP mode too). X-Forwarded-For is never read.
	ProxyFrom []string `toml:"proxy_from"`
}

// OIDC configures single sign-on with an OpenID Connect provider (the
// authorization code flow with PKCE).
type OIDC struct {
	// Issuer is the provider's issuer URL: https, or http on loopback
	// (tests). Empty: no single sign-on.
	Issuer   string `toml:"issuer"`
	ClientID string `toml:"client_id"`
	// ClientSecretFile holds the client secret (one line; mode 0600):
	// never the configuration file itself.
	ClientSecretFile string `toml:"client_secret_file"`
	// RolesClaim is the ID token claim with the user's roles (a dotted
	// path reaches into objects, e.g. realm_access.roles); default
	// "roles".
	RolesClaim string `toml:"roles_claim"`
	// RoleMap maps the provider's role names to Ward's (viewer,
	// uploader, admin); empty: the provider uses Ward's names.
	RoleMap map[string]string `toml:"role_map"`
	// Scopes asked beyond openid (default profile, email).
	Scopes []string `toml:"scopes"`
	// Label names the provider on the sign-in page.
	Label string `toml:"label"`
}

// validate checks the OpenID settings.
func (o *OIDC) validate() error {
	if o.Issuer == "" {
		if o.ClientID != "" || o.ClientSecretFile != "" {
			return errors.New("web.oidc: client_id and client_secret_file need issuer")
		}
		return nil
	}
	u, err := url.Parse(o.Issuer)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" {
		return fmt.Errorf("web.oidc issuer %q: give the provider's issuer URL", o.Issuer)
	}
	if u.Scheme != "https" && !(u.Scheme == "http" && CheckLoopback(hostPortOf(u)) == nil) {
		return fmt.Errorf("web.oidc issuer %q: https is required (http only on loopback)", o.Issuer)
	}
	if o.ClientID == "" || o.ClientSecretFile == "" {
		return errors.New("web.oidc: issuer needs client_id and client_secret_file")
	}
	for k, v := range o.RoleMap {
		switch v {
		case "viewer", "uploader", "admin":
		default:
			return fmt.Errorf("web.oidc role_map: %q maps to %q: give viewer, uploader or admin", k, v)
		}
	}
	return nil
}

func hostPortOf(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), "443")
}

// ReadClientSecret reads the OpenID client secret, refusing a file other
// local users may read.
func (o *OIDC) ReadClientSecret() (string, error) {
	fi, err := os.Stat(o.ClientSecretFile)
	if err != nil {
		return "", fmt.Errorf("web.oidc client_secret_file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("web.oidc client_secret_file %s: mode %04o lets other local users read the secret (chmod 600 it)", o.ClientSecretFile, fi.Mode().Perm())
	}
	b, err := os.ReadFile(o.ClientSecretFile)
	if err != nil {
		return "", fmt.Errorf("web.oidc client_secret_file: %w", err)
	}
	secret := strings.TrimSpace(string(b))
	if secret == "" || strings.ContainsAny(secret, "\r\n") {
		return "", fmt.Errorf("web.oidc client_secret_file %s: one line, the secret", o.ClientSecretFile)
	}
	return secret, nil
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
	return w.OIDC.validate()
}
