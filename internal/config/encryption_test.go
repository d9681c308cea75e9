package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/store/encblob"
)

// refused reports whether Check refuses setting with a problem holding
// text.
func refused(c *Config, setting, text string) bool {
	for _, f := range c.Check() {
		if f.Refuse && strings.Contains(f.Setting, setting) && strings.Contains(f.Problem, text) {
			return true
		}
	}
	return false
}

// TestEncryptionKeyChecks: a key file others may read, a missing or
// malformed one, a bad key in the environment, and both at once are
// refused by ward config check (and so by ward serve); Validate refuses
// both at once; a good key file passes.
func TestEncryptionKeyChecks(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "ward.key")
	if err := encblob.InitKeyFile(good, "k1"); err != nil {
		t.Fatal(err)
	}
	c := Default()
	c.Storage.Encryption.KeyFile = good
	for _, f := range c.Check() {
		if strings.Contains(f.Setting, "encryption") {
			t.Errorf("a good key file: %v", f)
		}
	}
	if err := os.Chmod(good, 0o640); err != nil {
		t.Fatal(err)
	}
	if !refused(c, "key_file", "chmod 600") {
		t.Errorf("a key file others may read is not refused: %v", c.Check())
	}
	c.Storage.Encryption.KeyFile = filepath.Join(dir, "missing.key")
	if !refused(c, "key_file", "no such file") {
		t.Errorf("a missing key file is not refused")
	}
	bad := filepath.Join(dir, "bad.key")
	os.WriteFile(bad, []byte("ward-kek-v1:k1:c2hvcnQ=\n"), 0o600)
	c.Storage.Encryption.KeyFile = bad
	if !refused(c, "key_file", "not 32 bytes") {
		t.Errorf("a malformed key file is not refused")
	}
	c.Storage.Encryption.KeyFile = ""
	c.Storage.Encryption.Key = "nonsense"
	if !refused(c, "WARD_ENCRYPTION_KEY", "not a ward-kek-v1 line") {
		t.Errorf("a malformed key in the environment is not refused: %v", c.Check())
	}
	c.Storage.Encryption.KeyFile = good
	if !refused(c, "key_file", "both given") {
		t.Errorf("a key file and a key in the environment are not refused")
	}
	c.AETitle = "WARD"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "both given") {
		t.Errorf("Validate with both: %v", err)
	}
}
