package config

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateWeb(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(*Config)
		want string // "" valid
	}{
		{"default loopback", func(*Config) {}, ""},
		{"off", func(c *Config) { c.Web.Listen = "off" }, ""},
		{"plain beyond loopback", func(c *Config) { c.Web.Listen = "0.0.0.0:8080" }, "loopback only"},
		{"beyond loopback with its own cert", func(c *Config) { c.Web.Listen = "0.0.0.0:8443"; c.Web.TLSCert, c.Web.TLSKey = "c", "k" }, ""},
		{"beyond loopback with dicom's cert", func(c *Config) {
			c.Web.Listen = "0.0.0.0:8443"
			c.DICOM.TLSListen, c.DICOM.TLSCert, c.DICOM.TLSKey = "127.0.0.1:2762", "c", "k"
		}, ""},
		{"cert without key", func(c *Config) { c.Web.TLSCert = "c" }, "go together"},
		{"bad listen", func(c *Config) { c.Web.Listen = "8080" }, "web listen"},
		{"base url with query", func(c *Config) { c.Web.BaseURL = "https://pacs.example.org/?a=b" }, "base_url"},
		{"base url ok", func(c *Config) { c.Web.BaseURL = "https://pacs.example.org/ward" }, ""},
		{"wildcard origin", func(c *Config) { c.Web.AllowOrigins = []string{"*"} }, "not an origin"},
		{"origin with path", func(c *Config) { c.Web.AllowOrigins = []string{"https://a.example.org/x"} }, "not an origin"},
		{"bad max body", func(c *Config) { c.Web.MaxBody = "lots" }, "max_body"},
		{"negative max results", func(c *Config) { c.Web.MaxResults = -1 }, "max_results"},
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
			if c.name == "plain beyond loopback" && !errors.Is(err, ErrWebPlaintext) {
				t.Errorf("not ErrWebPlaintext: %v", err)
			}
		})
	}
	if n, _ := Default().Web.MaxBodyBytes(); n != 2<<30 {
		t.Errorf("default max body %d", n)
	}
}
