// Package testci is for tests only: it decides what a test does when
// something it needs is missing. Locally it skips; under CI=true, where the
// CI scripts install everything and run as root, it fails, so that no claim
// goes unchecked in CI because a test skipped quietly.
package testci

import (
	"os"
	"os/exec"
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
