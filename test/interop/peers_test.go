// Package interop tests Ward against real DICOM peers: DCMTK's tools and
// Orthanc. Locally a test skips when a peer is missing; under CI=true a
// missing peer fails the test.
package interop

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"testing"

	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/internal/server"
	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/test/harness"
)

// Short names for the shared harness (test/harness), as the tests here
// have always called them.
const pydicomTestFiles = harness.PydicomTestFiles

var (
	ci                 = testci.CI
	requireTool        = testci.RequireTool
	requireDir         = harness.RequireDir
	requirePydicom     = harness.RequirePydicom
	repoRoot           = harness.RepoRoot
	loopbackShim       = harness.LoopbackShim
	sourceShim         = harness.SourceShim
	freePort           = harness.FreePort
	waitListen         = harness.WaitListen
	assertLoopbackOnly = harness.AssertLoopbackOnly
	dcmtk              = harness.DCMTK
	daemon             = harness.Daemon
	waitEcho           = harness.WaitEcho
	startStorescp      = harness.StartStorescp
	startOrthanc       = harness.StartOrthanc
	datasetsEqual      = harness.DatasetsEqual
	readAudit          = harness.ReadAudit
)

// TestMain removes what the harness built for the package's tests.
func TestMain(m *testing.M) { harness.Main(m) }

// ward is an in-process Ward on a loopback port with its own data.
type ward struct {
	srv  *server.Server
	addr string
	host string
	port string
	dir  string
	log  *harness.Buffer
	// stop stops the server and waits for it (also done at cleanup).
	stop func()
}

func startWard(t *testing.T, edit ...func(*config.Config)) *ward {
	t.Helper()
	c := config.Default()
	// Made by Ward, 0700 (t.TempDir's folder is 0755, which Ward refuses).
	c.DataDir = filepath.Join(t.TempDir(), "data")
	c.DICOM.Listen = "127.0.0.1:0"
	c.Web.Listen = "127.0.0.1:0"
	// The test machine's disk may be fuller than the default reserve
	// (1 GiB) allows; the tests need little.
	c.Storage.MinFree = "16MiB"
	// Most tests drive Ward with DCMTK tools under their default AE
	// titles: the loopback opt-in admits them. The policy tests turn it
	// off and register peers. Lockout is off unless a test tests it.
	c.DICOM.LoopbackAnyAE = true
	c.DICOM.LockoutAfter = -1
	for _, f := range edit {
		f(c)
	}
	logs := &harness.Buffer{}
	s := &server.Server{Config: c, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Open(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("ward log:\n%s", logs.String())
		}
	})
	addr := s.Addr().String()
	host, port, _ := net.SplitHostPort(addr)
	return &ward{srv: s, addr: addr, host: host, port: port, dir: c.DataDir, log: logs, stop: stop}
}
