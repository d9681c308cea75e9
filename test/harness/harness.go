// Package harness is what Ward's end-to-end tests (test/interop,
// test/crash) share: the ward binary built once, `ward serve` as a child
// process, free loopback ports, the LD_PRELOAD shims that keep peers on
// loopback or choose a source address, DCMTK tools with Nagle off,
// storescp, dcmqrscp and Orthanc started on loopback, and the audit log
// read back, and throwaway PostgreSQL clusters.
//
// It is a normal package, imported by tests only. A test that needs a
// missing peer program skips locally and fails under CI=true
// (internal/testci decides).
package harness

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/ward-pacs/ward/internal/testci"
)

// PydicomTestFiles is where Debian's python3-pydicom keeps its test files.
const PydicomTestFiles = "/usr/lib/python3/dist-packages/pydicom/data/test_files"

// RepoRoot is the module root (two levels up from test/harness).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// testdata is the path of a file under test/harness/testdata.
func testdata(name string) string {
	return filepath.Join(RepoRoot(), "test", "harness", "testdata", name)
}

// RequireDir skips (fails under CI=true) unless dir exists.
func RequireDir(t testing.TB, dir string) {
	t.Helper()
	if _, err := os.Stat(dir); err != nil {
		testci.SkipOrFail(t, "%s missing: %v", dir, err)
	}
}

// RequirePydicom skips (fails under CI=true) unless pydicom and its test
// files are installed.
func RequirePydicom(t testing.TB) {
	t.Helper()
	RequireDir(t, PydicomTestFiles)
	if err := exec.Command("/usr/bin/python3", "-c", "import pydicom").Run(); err != nil {
		testci.SkipOrFail(t, "pydicom not importable (python3-pydicom)")
	}
}

// Buffer is a bytes.Buffer safe for one writer (a child process's output)
// and readers at once.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// tempDirs are the process-wide temporary folders (the ward binary, the
// shims) that Main removes.
var (
	tempMu   sync.Mutex
	tempDirs []string
)

// atExits are what Main runs after the tests (last added, first run),
// before removing tempDirs: stopping shared servers.
var atExits []func()

func atExit(f func()) {
	tempMu.Lock()
	atExits = append(atExits, f)
	tempMu.Unlock()
}

func processTempDir(pattern string) (string, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err == nil {
		tempMu.Lock()
		tempDirs = append(tempDirs, dir)
		tempMu.Unlock()
	}
	return dir, err
}

// Main runs a package's tests and then removes what the harness built for
// them once (the ward binary, the shims). A test package's TestMain calls
// it: func TestMain(m *testing.M) { harness.Main(m) }.
//
// The ward serve it starts does not fetch the web viewer on a first run
// (WARD_VIEWER_FETCH=off): a test that wants it says so.
func Main(m *testing.M) {
	os.Setenv("WARD_VIEWER_FETCH", "off")
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

// Cleanup stops what the harness started for the process (a shared
// PostgreSQL cluster) and removes what it built: for a TestMain that
// does not run Main.
func Cleanup() {
	tempMu.Lock()
	defer tempMu.Unlock()
	for i := len(atExits) - 1; i >= 0; i-- {
		atExits[i]()
	}
	atExits = nil
	for _, d := range tempDirs {
		os.RemoveAll(d)
	}
	tempDirs = nil
}
