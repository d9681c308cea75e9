package config

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Metrics is the operations listener ([metrics]): Prometheus metrics at
// /metrics, liveness at /healthz and readiness at /readyz, and the drain
// that readiness announces on SIGTERM. It serves no patient data.
type Metrics struct {
	// Listen is HOST:PORT of the metrics listener; empty, "off" or "none"
	// (the default): none. 9464 is the conventional port. Plain HTTP is
	// served on loopback only: beyond loopback the listener needs a
	// certificate (TLSCert/TLSKey, else [web]'s, else [dicom]'s) and
	// /metrics a bearer token (TokenFile).
	Listen string `toml:"listen"`
	// TLSCert and TLSKey make the listener HTTPS. Empty: the web
	// listener's certificate when the listener is not on loopback.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// TokenFile holds the bearer token /metrics requires (one line, mode
	// 0600): Prometheus's credentials_file. Empty: none on loopback;
	// beyond loopback DATA/metrics.token, generated at the first start.
	// /healthz and /readyz never need it.
	TokenFile string `toml:"token_file"`
	// Drain is how long, after SIGTERM, /readyz answers 503 while Ward
	// goes on serving, before its listeners close: the load balancer's
	// checks see it and move new connections to other nodes first. 0 (the
	// default): the listeners close at once. A second signal ends the
	// drain.
	Drain Duration `toml:"drain"`
}

// DefaultMetricsTokenFile is [metrics] token_file when it is empty and the
// listener is not on loopback, in the data directory.
const DefaultMetricsTokenFile = "metrics.token"

// MaxDrain bounds [metrics] drain.
const MaxDrain = 10 * time.Minute

// ErrMetricsPlaintext: plain HTTP metrics beyond loopback.
var ErrMetricsPlaintext = errors.New("the metrics listener serves plain HTTP on loopback only")

// Off reports whether the metrics listener is turned off.
func (m *Metrics) Off() bool {
	l := strings.ToLower(strings.TrimSpace(m.Listen))
	return l == "" || l == "off" || l == "none"
}

// Loopback reports whether the metrics listener is on loopback (or off).
func (m *Metrics) Loopback() bool { return m.Off() || CheckLoopback(m.Listen) == nil }

// MetricsTLS returns the certificate and key the metrics listener serves
// HTTPS with ("" "" for plain HTTP): its own, or beyond loopback the web
// listener's (which falls back to [dicom]'s).
func (c *Config) MetricsTLS() (cert, key string) {
	m := &c.Metrics
	if m.TLSCert != "" || m.TLSKey != "" {
		return m.TLSCert, m.TLSKey
	}
	if m.Loopback() {
		return "", ""
	}
	if c.Web.TLSCert != "" || c.Web.TLSKey != "" {
		return c.Web.TLSCert, c.Web.TLSKey
	}
	return c.DICOM.TLSCert, c.DICOM.TLSKey
}

// MetricsTokenFile is the file holding /metrics's bearer token: "" when
// none is needed (loopback without token_file).
func (c *Config) MetricsTokenFile() string {
	if c.Metrics.TokenFile != "" {
		return c.Metrics.TokenFile
	}
	if c.Metrics.Loopback() {
		return ""
	}
	return filepath.Join(c.DataDir, DefaultMetricsTokenFile)
}

// ReadMetricsToken reads the bearer token of MetricsTokenFile ("" when none
// is needed). When the file is the default one and missing, it is made
// (32 random bytes, base64url, 0600) and created reports it. A token file
// other local users may read is refused.
func (c *Config) ReadMetricsToken() (token string, created bool, err error) {
	path := c.MetricsTokenFile()
	if path == "" {
		return "", false, nil
	}
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) && c.Metrics.TokenFile == "" {
		var b [32]byte
		_, _ = rand.Read(b[:])
		tok := base64.RawURLEncoding.EncodeToString(b[:])
		if err := WriteFileAtomic(path, []byte(tok+"\n"), 0o600); err != nil {
			return "", false, fmt.Errorf("metrics token: %w", err)
		}
		return tok, true, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("metrics token_file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", false, fmt.Errorf("metrics token_file %s: mode %04o lets other local users read the token (chmod 600 it)", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", false, fmt.Errorf("metrics token_file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < 16 || strings.ContainsAny(tok, "\r\n \t") {
		return "", false, fmt.Errorf("metrics token_file %s: one line, the token, at least 16 characters", path)
	}
	return tok, false, nil
}

// validateMetrics checks [metrics].
func (c *Config) validateMetrics() error {
	m := &c.Metrics
	if m.Drain.Duration < 0 || m.Drain.Duration > MaxDrain {
		return fmt.Errorf("metrics drain %s: give 0 (none) up to %s", m.Drain.Duration, MaxDrain)
	}
	if m.Off() {
		return nil
	}
	host, port, err := net.SplitHostPort(m.Listen)
	if err != nil {
		return fmt.Errorf("metrics listen %q: %w", m.Listen, err)
	}
	if (m.TLSCert == "") != (m.TLSKey == "") {
		return errors.New("metrics tls_cert and tls_key go together")
	}
	if cert, key := c.MetricsTLS(); !m.Loopback() && (cert == "" || key == "") {
		return fmt.Errorf("metrics listen %s: %w: beyond loopback it serves HTTPS; set [metrics] tls_cert and tls_key (or [web]'s or [dicom]'s), or listen on loopback", m.Listen, ErrMetricsPlaintext)
	}
	// The same address as another listener is a mistake (one of them
	// would fail to bind); port 0 (tests) is never the same.
	if port != "0" {
		for _, o := range []struct{ name, addr string }{{"[dicom] listen", c.DICOM.Listen}, {"[dicom] tls_listen", c.DICOM.TLSListen}, {"[web] listen", c.Web.Listen}} {
			if oh, op, err := net.SplitHostPort(o.addr); err == nil && op == port && (oh == host || oh == "" || host == "" || oh == "0.0.0.0" || host == "0.0.0.0" || oh == "::" || host == "::") {
				if o.name == "[web] listen" && c.Web.Off() {
					continue
				}
				return fmt.Errorf("metrics listen %s: the same port as %s %s", m.Listen, o.name, o.addr)
			}
		}
	}
	return nil
}

// checkMetrics adds the findings of [metrics] (Check).
func (c *Config) checkMetrics(add func(sev Severity, refuse bool, setting, problem, fix string)) {
	m := &c.Metrics
	if !m.Off() && !m.Loopback() {
		if cert, key := c.MetricsTLS(); cert == "" || key == "" {
			add(Critical, true, "[metrics] listen = "+m.Listen, "plain HTTP metrics beyond loopback: the scrape and its bearer token readable on the network", "set [metrics] tls_cert and tls_key (or [web]'s or [dicom]'s), or listen on loopback")
		}
		if m.TokenFile == "" {
			add(Info, false, "[metrics] token_file", "Prometheus needs the bearer token Ward generates in DATA/"+DefaultMetricsTokenFile+" at its first start", "give Prometheus a copy (credentials_file), or set token_file to a token file shared by every node")
		}
	}
	if m.Drain.Duration > 0 && m.Off() && c.Web.Off() {
		add(Low, false, "[metrics] drain = "+m.Drain.String(), "nothing answers /readyz (the metrics and web listeners are off): the drain only delays the stop", "turn on [metrics] listen for the load balancer's checks, or set drain = \"0s\"")
	}
}
