package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestValidateMetrics: the metrics listener serves plain HTTP on loopback
// only (Validate refuses it beyond, and Check lists it as refused), takes
// a certificate of its own or the web listener's, and may not share a
// port with another listener.
func TestValidateMetrics(t *testing.T) {
	for _, c := range []struct {
		name    string
		edit    func(*Config)
		want    string // "" valid
		refused bool   // Check lists a refused [metrics] finding
	}{
		{"default off", func(*Config) {}, "", false},
		{"loopback", func(c *Config) { c.Metrics.Listen = "127.0.0.1:9464" }, "", false},
		{"localhost", func(c *Config) { c.Metrics.Listen = "localhost:9464" }, "", false},
		{"plain beyond loopback", func(c *Config) { c.Metrics.Listen = "10.0.0.5:9464" }, "loopback only", true},
		{"plain on every address", func(c *Config) { c.Metrics.Listen = "0.0.0.0:9464" }, "loopback only", true},
		{"plain, host omitted", func(c *Config) { c.Metrics.Listen = ":9464" }, "loopback only", true},
		{"beyond loopback with its own cert", func(c *Config) {
			c.Metrics.Listen = "10.0.0.5:9464"
			c.Metrics.TLSCert, c.Metrics.TLSKey = "c", "k"
		}, "", false},
		{"beyond loopback with the web's cert", func(c *Config) {
			c.Metrics.Listen = "10.0.0.5:9464"
			c.Web.TLSCert, c.Web.TLSKey = "c", "k"
		}, "", false},
		{"beyond loopback with dicom's cert", func(c *Config) {
			c.Metrics.Listen = "10.0.0.5:9464"
			c.DICOM.TLSListen, c.DICOM.TLSCert, c.DICOM.TLSKey = "127.0.0.1:2762", "c", "k"
		}, "", false},
		{"cert without key", func(c *Config) { c.Metrics.Listen = "127.0.0.1:9464"; c.Metrics.TLSCert = "c" }, "go together", false},
		{"no port", func(c *Config) { c.Metrics.Listen = "9464" }, "metrics listen", true},
		{"the web listener's address", func(c *Config) { c.Metrics.Listen = DefaultWebListen }, "same port as [web] listen", false},
		{"the dicom listener's port on every address", func(c *Config) {
			c.Metrics.Listen = "0.0.0.0:11112"
			c.Metrics.TLSCert, c.Metrics.TLSKey = "c", "k"
		}, "same port as [dicom] listen", false},
		{"the web listener's port, web off", func(c *Config) { c.Web.Listen = "off"; c.Metrics.Listen = DefaultWebListen }, "", false},
		{"negative drain", func(c *Config) { c.Metrics.Drain.Duration = -time.Second }, "drain", false},
		{"drain too long", func(c *Config) { c.Metrics.Drain.Duration = time.Hour }, "drain", false},
		{"drain", func(c *Config) { c.Metrics.Drain.Duration = 10 * time.Second }, "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := Default()
			c.edit(cfg)
			err := cfg.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
			if c.want == "loopback only" && !errors.Is(err, ErrMetricsPlaintext) {
				t.Errorf("not ErrMetricsPlaintext: %v", err)
			}
			refused := false
			for _, f := range Refused(cfg.Check()) {
				if strings.HasPrefix(f.Setting, "[metrics]") {
					refused = true
				}
			}
			if refused != c.refused {
				t.Errorf("ward config check refuses [metrics]: %v, want %v (%v)", refused, c.refused, cfg.Check())
			}
		})
	}
}

// TestCheckMetricsDrainUnseen: a drain nobody can see (no listener
// answers /readyz) is listed.
func TestCheckMetricsDrainUnseen(t *testing.T) {
	c := Default()
	c.Web.Listen = "off"
	c.Metrics.Drain.Duration = 5 * time.Second
	found := false
	for _, f := range c.Check() {
		found = found || strings.Contains(f.Setting, "[metrics] drain")
	}
	if !found {
		t.Errorf("no finding for a drain without /readyz: %v", c.Check())
	}
}

// TestMetricsToken: on loopback no token is needed; beyond loopback one is
// generated (0600) in the data directory and read back the same; a
// token file other users may read, or too short, is refused.
func TestMetricsToken(t *testing.T) {
	c := Default()
	c.DataDir = t.TempDir()
	c.Metrics.Listen = "127.0.0.1:9464"
	if tok, _, err := c.ReadMetricsToken(); err != nil || tok != "" {
		t.Fatalf("loopback: %q, %v; want no token", tok, err)
	}
	c.Metrics.Listen = "10.0.0.5:9464"
	tok, created, err := c.ReadMetricsToken()
	if err != nil || !created || len(tok) < 40 {
		t.Fatalf("beyond loopback: %q, %v, %v; want a generated token", tok, created, err)
	}
	fi, err := os.Stat(filepath.Join(c.DataDir, DefaultMetricsTokenFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, %v; want mode 0600", fi, err)
	}
	if again, created, err := c.ReadMetricsToken(); err != nil || created || again != tok {
		t.Fatalf("read again: %q, %v, %v", again, created, err)
	}

	own := filepath.Join(t.TempDir(), "tok")
	c.Metrics.Listen = "127.0.0.1:9464"
	c.Metrics.TokenFile = own
	if _, _, err := c.ReadMetricsToken(); err == nil {
		t.Fatal("a missing token_file is not generated: want an error")
	}
	if err := os.WriteFile(own, []byte("0123456789abcdef0123\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(own, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ReadMetricsToken(); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("token file 0644: %v", err)
	}
	if err := os.Chmod(own, 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, _, err := c.ReadMetricsToken(); err != nil || tok != "0123456789abcdef0123" {
		t.Fatalf("own token file on loopback: %q, %v", tok, err)
	}
	if err := os.WriteFile(own, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ReadMetricsToken(); err == nil {
		t.Fatal("a short token: want an error")
	}
}

// TestExampleNodeConfig: docs/examples/ward.toml, a node of the cluster in
// docs/scale-out.md, loads (no unknown key), validates and has no setting
// ward serve refuses.
func TestExampleNodeConfig(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "docs", "examples", "ward.toml"), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("docs/examples/ward.toml: %v", err)
	}
	if r := Refused(c.Check()); len(r) > 0 {
		t.Fatalf("docs/examples/ward.toml has refused settings: %v", r)
	}
	if c.Metrics.Loopback() || c.Metrics.Drain.Duration <= 0 || c.MetricsTokenFile() == "" {
		t.Errorf("the example's metrics listener: %+v", c.Metrics)
	}
}
