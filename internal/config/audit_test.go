package config

import (
	"path/filepath"
	"strings"
	"testing"
)

// The audit policy and key settings: validated, defaulted, and checked.
func TestAuditSettings(t *testing.T) {
	c := Default()
	c.DataDir = "/srv/ward"
	if !c.AuditRefuses() || !c.AuditCheckpoints() || c.AuditKeyFile() != filepath.Join("/srv/ward", "audit.key") {
		t.Errorf("defaults: refuse %v, checkpoints %v, key %s", c.AuditRefuses(), c.AuditCheckpoints(), c.AuditKeyFile())
	}
	for _, f := range c.Check() {
		if strings.Contains(f.Setting, "[audit]") {
			t.Errorf("default configuration flagged: %s", f)
		}
	}
	c.Audit.OnFailure = "ignore"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "on_failure") {
		t.Errorf("on_failure = ignore: %v", err)
	}
	c.Audit.OnFailure = AuditContinue
	c.Audit.KeyFile = filepath.Join(c.AuditDir(), "audit.key")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	var sev = map[string]Severity{}
	for _, f := range c.Check() {
		sev[f.Setting] = f.Severity
	}
	if sev[`[audit] on_failure = "continue"`] != Medium || sev["[audit] key_file = "+c.Audit.KeyFile] != Low {
		t.Errorf("findings: %v", sev)
	}
}
