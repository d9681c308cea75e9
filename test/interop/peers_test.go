// Package interop tests Ward against real DICOM peers: DCMTK's tools and
// Orthanc. Locally a test skips when a peer is missing; under CI=true a
// missing peer fails the test.
package interop

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/internal/server"
	"github.com/ward-pacs/ward/internal/testci"
)

// pydicomTestFiles is where Debian's python3-pydicom keeps its test files.
const pydicomTestFiles = "/usr/lib/python3/dist-packages/pydicom/data/test_files"

func ci() bool { return testci.CI() }

// requireTool skips (or, under CI, fails) when a peer program is missing.
func requireTool(t *testing.T, names ...string) {
	t.Helper()
	testci.RequireTool(t, names...)
}

func requireDir(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(dir); err != nil {
		testci.SkipOrFail(t, "%s missing: %v", dir, err)
	}
}

// repoRoot is the module root (two levels up from test/interop).
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

var (
	shimOnce sync.Once
	shimPath string
	shimErr  error
)

// loopbackShim builds the LD_PRELOAD library (testdata/bindlo.c) that
// rewrites wildcard bind() to loopback: storescp and Orthanc bind every
// interface otherwise.
func loopbackShim(t *testing.T) string {
	t.Helper()
	shimOnce.Do(func() {
		src := filepath.Join(repoRoot(), "test", "interop", "testdata", "bindlo.c")
		if _, err := os.Stat(src); err != nil {
			shimErr = fmt.Errorf("loopback shim source: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "ward-shim")
		if err != nil {
			shimErr = err
			return
		}
		shimPath = filepath.Join(dir, "libbindlo.so")
		out, err := exec.Command("gcc", "-shared", "-fPIC", "-O2", "-o", shimPath, src, "-ldl").CombinedOutput()
		if err != nil {
			shimErr = fmt.Errorf("building the loopback shim: %v: %s", err, out)
		}
	})
	if shimErr != nil {
		testci.SkipOrFail(t, "%v", shimErr)
	}
	return shimPath
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// dcmtk builds a DCMTK command with Nagle's algorithm off.
func dcmtk(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
	return cmd
}

// ward is an in-process Ward on a loopback port with its own data.
type ward struct {
	srv  *server.Server
	addr string
	host string
	port string
	dir  string
	log  *lockedBuffer
	// stop stops the server and waits for it (also done at cleanup).
	stop func()
}

type lockedBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.String()
}

func startWard(t *testing.T, edit ...func(*config.Config)) *ward {
	t.Helper()
	c := config.Default()
	// Made by Ward, 0700 (t.TempDir's folder is 0755, which Ward refuses).
	c.DataDir = filepath.Join(t.TempDir(), "data")
	c.DICOM.Listen = "127.0.0.1:0"
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
	logs := &lockedBuffer{}
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

// daemon runs a peer program through the loopback shim until the test ends.
func daemon(t *testing.T, logName string, name string, args ...string) {
	t.Helper()
	cmd := dcmtk(name, args...)
	cmd.Env = append(cmd.Env, "LD_PRELOAD="+loopbackShim(t))
	logf, err := os.Create(filepath.Join(t.TempDir(), logName))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("%s log:\n%s", name, b)
		}
	})
}

// waitEcho polls echoscu until the peer answers.
func waitEcho(t *testing.T, aet string, port int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := dcmtk("echoscu", "-to", "2", "-aec", aet, "127.0.0.1", strconv.Itoa(port)).CombinedOutput()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer %s on %d never answered C-ECHO: %s", aet, port, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startStorescp runs DCMTK storescp into a temporary folder.
func startStorescp(t *testing.T, extra ...string) (port int, dir string) {
	t.Helper()
	requireTool(t, "storescp", "echoscu", "gcc")
	port, dir = freePort(t), t.TempDir()
	args := append([]string{"-dhl", "-aet", "STORESCP", "-od", dir, "-uf"}, extra...)
	daemon(t, "storescp.log", "storescp", append(args, strconv.Itoa(port))...)
	waitEcho(t, "STORESCP", port)
	assertLoopbackOnly(t, port)
	return port, dir
}

// orthanc is a running Orthanc with its REST API on loopback.
type orthanc struct {
	dicomPort, httpPort int
}

func (o *orthanc) url(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", o.httpPort, path)
}

func (o *orthanc) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	resp, err := http.Get(o.url(path))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func (o *orthanc) get(t *testing.T, path string) []byte {
	t.Helper()
	resp, err := http.Get(o.url(path))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s %v", path, resp.Status, err)
	}
	return b
}

// startOrthanc runs Orthanc with DICOM and REST on loopback, accepting any
// calling AE for storage. edit may change the configuration (e.g. add
// DicomModalities for query/retrieve).
func startOrthanc(t *testing.T, edit ...func(cfg map[string]any)) *orthanc {
	t.Helper()
	requireTool(t, "Orthanc", "echoscu", "gcc")
	o := &orthanc{dicomPort: freePort(t), httpPort: freePort(t)}
	dir := t.TempDir()
	cfg := map[string]any{
		"Name": "ward-interop", "StorageDirectory": filepath.Join(dir, "storage"), "IndexDirectory": filepath.Join(dir, "index"),
		"TemporaryDirectory": filepath.Join(dir, "tmp"), "StorageCompression": false, "Plugins": []string{},
		"HttpServerEnabled": true, "HttpPort": o.httpPort, "RemoteAccessAllowed": false, "AuthenticationEnabled": false,
		"DicomServerEnabled": true, "DicomAet": "ORTHANC", "DicomPort": o.dicomPort, "DicomCheckCalledAet": true,
		"DicomAlwaysAllowEcho": true, "DicomAlwaysAllowStore": true, "WebDavEnabled": false, "OrthancExplorerEnabled": false,
		"SaveJobs": false, "OverwriteInstances": true,
	}
	for _, f := range edit {
		f(cfg)
	}
	b, _ := json.Marshal(cfg)
	path := filepath.Join(dir, "orthanc.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	daemon(t, "orthanc.log", "Orthanc", path)
	waitEcho(t, "ORTHANC", o.dicomPort)
	assertLoopbackOnly(t, o.dicomPort)
	assertLoopbackOnly(t, o.httpPort)
	return o
}

// datasetsEqual compares two DICOM files' data sets with pydicom.
func datasetsEqual(t *testing.T, a, b string) (bool, string) {
	t.Helper()
	out, err := exec.Command("/usr/bin/python3", filepath.Join(repoRoot(), "test", "interop", "testdata", "dscompare.py"), a, b).CombinedOutput()
	return err == nil, strings.TrimSpace(string(out))
}

func requirePydicom(t *testing.T) {
	t.Helper()
	requireDir(t, pydicomTestFiles)
	if err := exec.Command("/usr/bin/python3", "-c", "import pydicom").Run(); err != nil {
		testci.SkipOrFail(t, "pydicom not importable (python3-pydicom)")
	}
}

// assertLoopbackOnly fails the test when something listens on port on an
// address other than loopback (the shim did not take).
func assertLoopbackOnly(t *testing.T, port int) {
	t.Helper()
	hexPort := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 4 || fields[3] != "0A" || !strings.HasSuffix(fields[1], hexPort) {
				continue
			}
			addr := strings.TrimSuffix(fields[1], hexPort)
			if addr != "0100007F" && addr != "00000000000000000000000001000000" {
				t.Fatalf("port %d listens on %s (%s), not loopback only", port, addr, f)
			}
		}
	}
}
