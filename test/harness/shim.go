package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ward-pacs/ward/internal/testci"
)

// shim is an LD_PRELOAD library built from testdata once per process.
type shim struct {
	src, lib, what string
	once           sync.Once
	path           string
	err            error
}

var (
	loopback = &shim{src: "bindlo.c", lib: "libbindlo.so", what: "the loopback shim"}
	source   = &shim{src: "srcaddr.c", lib: "libsrcaddr.so", what: "the source address shim"}
)

func (s *shim) build(t testing.TB) string {
	t.Helper()
	s.once.Do(func() {
		src := testdata(s.src)
		if _, err := os.Stat(src); err != nil {
			s.err = fmt.Errorf("%s source: %w", s.what, err)
			return
		}
		dir, err := processTempDir("ward-shim")
		if err != nil {
			s.err = err
			return
		}
		s.path = filepath.Join(dir, s.lib)
		if out, err := exec.Command("gcc", "-shared", "-fPIC", "-O2", "-o", s.path, src, "-ldl").CombinedOutput(); err != nil {
			s.err = fmt.Errorf("building %s: %v: %s", s.what, err, out)
		}
	})
	if s.err != nil {
		testci.SkipOrFail(t, "%v", s.err)
	}
	return s.path
}

// LoopbackShim builds (once) the LD_PRELOAD library testdata/bindlo.c that
// rewrites a wildcard bind() to loopback: storescp, dcmqrscp and Orthanc
// bind every interface otherwise. It needs gcc.
func LoopbackShim(t testing.TB) string {
	t.Helper()
	return loopback.build(t)
}

// SourceShim builds (once) testdata/srcaddr.c: with it preloaded, a DCMTK
// tool calls from the loopback address in $WARD_TEST_SOURCE.
func SourceShim(t testing.TB) string {
	t.Helper()
	return source.build(t)
}
