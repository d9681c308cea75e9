//go:build unix

package datadir

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// dataLayout is Ward's data directory: the default blobs' object trees.
var dataLayout = Layout{Trees: map[string]bool{"objects": true, "pending": true, "tmp": true}}

// write makes p (and its folders, 0700) with mode.
func write(t *testing.T, p string, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("DOE^JANE"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func chmod(t *testing.T, p string, mode fs.FileMode) {
	t.Helper()
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// TestCheckDataDir: what Check refuses, and that Fix
// closes it. Regression: a data directory that existed with mode 0755,
// its index.db and index.db-wal 0644, was served, and another user read
// a patient's name from the WAL.
func TestCheckDataDir(t *testing.T) {
	defer syscall.Umask(syscall.Umask(0o022))
	if err := dataLayout.Check(filepath.Join(t.TempDir(), "none")); err != nil {
		t.Fatalf("a data directory not made yet: %v", err)
	}
	closed := func(t *testing.T) string {
		dir := filepath.Join(t.TempDir(), "data")
		write(t, filepath.Join(dir, "index.db"), 0o600)
		write(t, filepath.Join(dir, "audit", "audit.log"), 0o600)
		write(t, filepath.Join(dir, "objects", "ab", "cd", "abcd.dcm"), 0o600)
		return dir
	}
	if err := dataLayout.Check(closed(t)); err != nil {
		t.Fatalf("a closed data directory: %v", err)
	}
	for _, c := range []struct {
		name  string
		open  func(t *testing.T, dir string) string // returns the path named
		fixes int
	}{
		{"directory 0755", func(t *testing.T, dir string) string {
			chmod(t, dir, 0o755)
			return dir + " (mode 0755, open to group and others)"
		}, 1},
		{"WAL 0644", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "index.db-wal")
			write(t, p, 0o644)
			return p + " (mode 0644"
		}, 1},
		{"audit log group-readable", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "audit", "audit.log")
			chmod(t, p, 0o640)
			return p + " (mode 0640, open to group)"
		}, 1},
		{"objects/ 0750", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "objects")
			chmod(t, p, 0o750)
			return p
		}, 1},
		{"linked folder open", func(t *testing.T, dir string) string {
			other := filepath.Join(t.TempDir(), "elsewhere")
			if err := os.Mkdir(other, 0o777); err != nil {
				t.Fatal(err)
			}
			chmod(t, other, 0o777)
			p := filepath.Join(dir, "pki")
			if err := os.Symlink(other, p); err != nil {
				t.Fatal(err)
			}
			return p + " (mode 0777"
		}, 1},
		{"file in a linked folder open", func(t *testing.T, dir string) string {
			other := filepath.Join(t.TempDir(), "elsewhere")
			write(t, filepath.Join(other, "ca.key"), 0o644)
			if err := os.Symlink(other, filepath.Join(dir, "pki")); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(other, "ca.key") + " (mode 0644"
		}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := closed(t)
			want := c.open(t, dir)
			err := dataLayout.Check(dir)
			if !errors.Is(err, ErrOpen) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--fix-permissions") {
				t.Fatalf("want ErrOpen naming %q and the fix, got %v", want, err)
			}
			n, err := dataLayout.Fix(dir)
			if err != nil || n != c.fixes {
				t.Fatalf("fix: %d changed, %v", n, err)
			}
			if err := dataLayout.Check(dir); err != nil {
				t.Fatalf("after the fix: %v", err)
			}
		})
	}

	// The files of the object trees are not looked at one by one at
	// start (there may be millions, behind closed directories), but the
	// fix closes them too.
	dir := closed(t)
	obj := filepath.Join(dir, "objects", "ab", "cd", "abcd.dcm")
	chmod(t, obj, 0o644)
	if err := dataLayout.Check(dir); err != nil {
		t.Fatalf("an object file is not checked at start: %v", err)
	}
	if n, err := dataLayout.Fix(dir); err != nil || n != 1 {
		t.Fatalf("fix: %d changed, %v", n, err)
	}
	if fi, err := os.Stat(obj); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("object after the fix: %v %v", fi.Mode(), err)
	}

	if os.Geteuid() != 0 {
		if ci() {
			t.Fatal("a file owned by another user can only be made as root (required under CI=true)")
		}
		return
	}
	dir = closed(t)
	p := filepath.Join(dir, "ward.toml")
	write(t, p, 0o600)
	if err := os.Chown(p, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := dataLayout.Check(dir); !errors.Is(err, ErrOpen) || !strings.Contains(err.Error(), p+" (owned by ") {
		t.Fatalf("a file of another user's: %v", err)
	}
	if n, err := dataLayout.Fix(dir); err != nil || n != 1 {
		t.Fatalf("fix: %d changed, %v", n, err)
	}
	if err := dataLayout.Check(dir); err != nil {
		t.Fatalf("after the fix: %v", err)
	}
}

func ci() bool { return os.Getenv("CI") == "true" }

// TestKeyFileOpen: a TLS private key others can read is refused at
// start, as PostgreSQL refuses its ssl_key_file.
func TestKeyFileOpen(t *testing.T) {
	key := filepath.Join(t.TempDir(), "server.key")
	write(t, key, 0o600)
	if err := CheckKeyFile("[dicom] tls_key", key); err != nil {
		t.Fatalf("a 0600 key: %v", err)
	}
	for _, mode := range []fs.FileMode{0o644, 0o604} {
		chmod(t, key, mode)
		if err := CheckKeyFile("[dicom] tls_key", key); err == nil || !strings.Contains(err.Error(), "every local user") || !strings.Contains(err.Error(), "chmod 0600") {
			t.Fatalf("a %04o key: %v", mode, err)
		}
	}
	chmod(t, key, 0o640)
	err := CheckKeyFile("[dicom] tls_key", key)
	if os.Geteuid() == 0 && err != nil {
		t.Fatalf("a 0640 key root owns: %v", err)
	}
	if os.Geteuid() != 0 && (err == nil || !strings.Contains(err.Error(), "its group")) {
		t.Fatalf("a 0640 key root does not own: %v", err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(key, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if err := CheckKeyFile("[dicom] tls_key", key); err == nil || !strings.Contains(err.Error(), "its group") {
			t.Fatalf("a 0640 key nobody owns: %v", err)
		}
	}
}
