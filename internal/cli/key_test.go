package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/store/encblob"
)

// TestKeyCommands: ward key init makes a 0600 key file and refuses to
// overwrite one; ward key add adds k2 and makes it current; ward key
// rotate without encryption configured says so.
func TestKeyCommands(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ward.key")
	run := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := Run(args, &out, &errb)
		return code, out.String() + errb.String()
	}
	if code, out := run("key", "init", p); code != 0 || !strings.Contains(out, "made with key k1") {
		t.Fatalf("key init: %d %s", code, out)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi, err)
	}
	before, _ := os.ReadFile(p)
	if code, out := run("key", "init", p); code == 0 || !strings.Contains(out, "not overwritten") {
		t.Fatalf("key init over a key file: %d %s", code, out)
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Fatal("key init changed an existing key file")
	}
	if code, out := run("key", "add", p); code != 0 || !strings.Contains(out, "key k2 added") {
		t.Fatalf("key add: %d %s", code, out)
	}
	ring, err := encblob.ReadKeyFile(p)
	if err != nil || ring.Current() != "k2" || strings.Join(ring.IDs(), ",") != "k1,k2" {
		t.Fatalf("after key add: %v %v", ring, err)
	}
	if code, out := run("key", "init", filepath.Join(dir, "x.key"), "--id", "Bad_ID"); code == 0 || !strings.Contains(out, "a-z 0-9") {
		t.Errorf("key init with a bad ID: %d %s", code, out)
	}
	data := filepath.Join(dir, "data")
	if code, out := run("key", "rotate", "--data", data); code == 0 || !strings.Contains(out, "encryption at rest is off") {
		t.Errorf("key rotate without a key: %d %s", code, out)
	}
}
