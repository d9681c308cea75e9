package viewer

import (
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestVersionPinned: the lock file pins @ohif/app with an integrity, and
// lists nothing else (its dist/ is built: no dependency is fetched).
func TestVersionPinned(t *testing.T) {
	v, integrity := Version()
	if v == "" || !strings.HasPrefix(integrity, "sha512-") {
		t.Fatalf("the lock file pins %s@%q with integrity %q", Package, v, integrity)
	}
	b, _ := npmFiles.ReadFile("package.json")
	if !strings.Contains(string(b), `"`+Package+`": "`+v+`"`) {
		t.Errorf("package.json does not pin %s to %s, as the lock file does:\n%s", Package, v, b)
	}
	lock, _ := npmFiles.ReadFile("package-lock.json")
	if n := strings.Count(string(lock), `"node_modules/`); n != 1 {
		t.Errorf("the lock file lists %d packages, want %s alone", n, Package)
	}
}

// fakeNPM puts on the PATH an npm that installs a bundle shaped like
// OHIF's (as the real one would, readable by everyone) at version.
func fakeNPM(t *testing.T, version string) {
	t.Helper()
	bin := t.TempDir()
	script := `#!/bin/sh
set -e
[ "$1" = ci ] || exit 2
case " $* " in *" --ignore-scripts "*) ;; *) echo "install scripts not turned off" >&2; exit 3;; esac
grep -q '"integrity": "sha512-' package-lock.json
d=node_modules/@ohif/app
mkdir -p $d/dist/ort $d/dist/dicom-microscopy-viewer $d/dist/assets
printf '{"name":"@ohif/app","version":"` + version + `"}' > $d/package.json
echo '<script src="/app-config.js"></script>' > $d/dist/index.html
echo model > $d/dist/ort/model.onnx
echo x > $d/dist/dicom-microscopy-viewer/x.js
echo sw > $d/dist/sw.js
echo ico > $d/dist/assets/favicon.ico
chmod -R a+rX node_modules
`
	if err := os.WriteFile(filepath.Join(bin, "npm"), []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
}

// TestFetch: the bundle lands in dir/dist trimmed, closed to other users
// (what the data directory's checks require), with its version recorded;
// a second fetch replaces it.
func TestFetch(t *testing.T) {
	v, _ := Version()
	fakeNPM(t, v)
	dir := filepath.Join(t.TempDir(), "viewer")
	stale := filepath.Join(dir, ".fetch-killed")
	if err := os.MkdirAll(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * staleAfter)
	os.Chtimes(stale, old, old)
	for range 2 {
		if err := Fetch(context.Background(), dir, io.Discard); err != nil {
			t.Fatal(err)
		}
	}
	if got := Installed(dir); got != Want() {
		t.Errorf("Installed: %q, want %q", got, Want())
	}
	for _, gone := range Trimmed {
		if _, err := os.Lstat(filepath.Join(dir, DistDir, gone)); err == nil {
			t.Errorf("%s was not trimmed", gone)
		}
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, _ := d.Info()
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s is open to others: %v", p, fi.Mode())
		}
		if strings.HasPrefix(d.Name(), ".fetch-") {
			t.Errorf("%s: the work directory is left behind", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, DistDir, "assets", "favicon.ico")); err != nil {
		t.Error(err)
	}
}

// TestFetchRefuses: another version than the pinned one is refused and
// leaves the installed bundle alone; without npm, ErrNoNPM.
func TestFetchRefuses(t *testing.T) {
	fakeNPM(t, "0.0.1")
	dir := t.TempDir()
	if err := Fetch(context.Background(), dir, io.Discard); err == nil || !strings.Contains(err.Error(), "0.0.1") {
		t.Errorf("Fetch of another version: %v", err)
	}
	if Installed(dir) != "" {
		t.Error("a refused bundle was installed")
	}
	t.Setenv("PATH", t.TempDir())
	if err := Fetch(context.Background(), dir, io.Discard); err != ErrNoNPM {
		t.Errorf("Fetch without npm: %v, want ErrNoNPM", err)
	}
}
