// Package testci is for tests only: it decides what a test does when
// something it needs is missing. Locally it skips; under CI=true, where the
// CI scripts install everything and run as root, it fails, so that no claim
// goes unchecked in CI because a test skipped quietly.
package testci

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// CI reports whether the tests run in CI (CI=true).
func CI() bool { return os.Getenv("CI") == "true" }

// SkipOrFail skips the test, or fails it under CI=true.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if CI() {
		t.Fatalf(format+" (required under CI=true)", args...)
	}
	t.Skipf(format, args...)
}

// RequireTool skips (fails under CI=true) unless each command is on PATH.
func RequireTool(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			SkipOrFail(t, "%s not installed", n)
		}
	}
}

// RequireRoot skips (fails under CI=true) unless the test runs as root.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, "%s needs root", why)
	}
}

// Ext4Dir returns the root of a small ext4 file system made for the test
// in a file and mounted through a loop device (unmounted at the end): for
// tests of ext4 features (FS_TOPDIR_FL, user extended attributes) where
// the temporary directory is on another file system. It skips (fails under
// CI=true) without root or mkfs.ext4.
func Ext4Dir(t testing.TB) string {
	t.Helper()
	RequireRoot(t, "mounting an ext4 image")
	RequireTool(t, "mkfs.ext4", "mount", "umount")
	work := t.TempDir()
	img, dir := filepath.Join(work, "ext4.img"), filepath.Join(work, "mnt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img, "64M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		SkipOrFail(t, "mounting an ext4 image: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}
