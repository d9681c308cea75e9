package harness

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/internal/testci"
)

// DCMTK builds a DCMTK command with Nagle's algorithm off (TCP_NODELAY=1;
// without it each exchange waits ~100 ms for a delayed ACK).
func DCMTK(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
	return cmd
}

// RunDCMTK runs a DCMTK tool with Nagle off and returns its output and
// whether it exited 0.
func RunDCMTK(t testing.TB, name string, args ...string) (string, bool) {
	t.Helper()
	out, err := DCMTK(name, args...).CombinedOutput()
	return string(out), err == nil
}

// Daemon runs a peer program (with Nagle off) through the loopback shim
// until the test ends; its output goes to logName in a temporary folder
// and to the test log if the test failed.
func Daemon(t testing.TB, logName string, name string, args ...string) {
	t.Helper()
	cmd := DCMTK(name, args...)
	cmd.Env = append(cmd.Env, "LD_PRELOAD="+LoopbackShim(t))
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

// WaitEcho polls echoscu (for up to 30 s) until the peer aet on the
// loopback port answers.
func WaitEcho(t testing.TB, aet string, port int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := DCMTK("echoscu", "-to", "2", "-aec", aet, "127.0.0.1", strconv.Itoa(port)).CombinedOutput()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer %s on %d never answered C-ECHO: %s", aet, port, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// StartStorescp runs DCMTK storescp (AE title STORESCP) on a free loopback
// port into a temporary folder; extra are added options.
func StartStorescp(t testing.TB, extra ...string) (port int, dir string) {
	t.Helper()
	testci.RequireTool(t, "storescp", "echoscu", "gcc")
	port, dir = FreePort(t), t.TempDir()
	args := append([]string{"-dhl", "-aet", "STORESCP", "-od", dir, "-uf"}, extra...)
	Daemon(t, "storescp.log", "storescp", append(args, strconv.Itoa(port))...)
	WaitEcho(t, "STORESCP", port)
	AssertLoopbackOnly(t, port)
	return port, dir
}

// StartDcmqrscp runs DCMTK dcmqrscp on a free loopback port with one AE,
// DCMQRSCP, storing into a temporary folder. hostTable is the body of the
// configuration's HostTable, peers the AETable's peers column (ANY, or a
// name hostTable defines); extra are added options. It returns the port.
func StartDcmqrscp(t testing.TB, hostTable, peers string, extra ...string) int {
	t.Helper()
	testci.RequireTool(t, "dcmqrscp", "echoscu", "gcc")
	port := FreePort(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "db")
	if err := os.MkdirAll(db, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`NetworkTCPPort  = %d
MaxPDUSize      = 16384
MaxAssociations = 16

HostTable BEGIN
%sHostTable END

VendorTable BEGIN
VendorTable END

AETable BEGIN
DCMQRSCP  %s  RW  (100, 1024mb)  %s
AETable END
`, port, hostTable, db, peers)
	path := filepath.Join(dir, "dcmqrscp.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-c", path}, extra...)
	Daemon(t, "dcmqrscp.log", "dcmqrscp", append(args, strconv.Itoa(port))...)
	WaitEcho(t, "DCMQRSCP", port)
	AssertLoopbackOnly(t, port)
	return port
}

// Orthanc is a running Orthanc with its REST API on loopback.
type Orthanc struct {
	DICOMPort, HTTPPort int
}

// URL is the address of a REST path.
func (o *Orthanc) URL(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", o.HTTPPort, path)
}

// GetJSON decodes the JSON answer of GET path into v.
func (o *Orthanc) GetJSON(t testing.TB, path string, v any) {
	t.Helper()
	resp, err := http.Get(o.URL(path))
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

// Get returns the body of GET path.
func (o *Orthanc) Get(t testing.TB, path string) []byte {
	t.Helper()
	resp, err := http.Get(o.URL(path))
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

// StartOrthanc runs Orthanc (AE title ORTHANC) with DICOM and REST on
// loopback, accepting any calling AE for storage. edit may change the
// configuration (e.g. add DicomModalities for query/retrieve).
func StartOrthanc(t testing.TB, edit ...func(cfg map[string]any)) *Orthanc {
	t.Helper()
	testci.RequireTool(t, "Orthanc", "echoscu", "gcc")
	o := &Orthanc{DICOMPort: FreePort(t), HTTPPort: FreePort(t)}
	dir := t.TempDir()
	cfg := map[string]any{
		"Name": "ward-interop", "StorageDirectory": filepath.Join(dir, "storage"), "IndexDirectory": filepath.Join(dir, "index"),
		"TemporaryDirectory": filepath.Join(dir, "tmp"), "StorageCompression": false, "Plugins": []string{},
		"HttpServerEnabled": true, "HttpPort": o.HTTPPort, "RemoteAccessAllowed": false, "AuthenticationEnabled": false,
		"DicomServerEnabled": true, "DicomAet": "ORTHANC", "DicomPort": o.DICOMPort, "DicomCheckCalledAet": true,
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
	Daemon(t, "orthanc.log", "Orthanc", path)
	WaitEcho(t, "ORTHANC", o.DICOMPort)
	AssertLoopbackOnly(t, o.DICOMPort)
	AssertLoopbackOnly(t, o.HTTPPort)
	return o
}

// DatasetsEqual compares two DICOM files' data sets with pydicom
// (testdata/dscompare.py); the string is the script's explanation.
func DatasetsEqual(t testing.TB, a, b string) (bool, string) {
	t.Helper()
	out, err := exec.Command("/usr/bin/python3", testdata("dscompare.py"), a, b).CombinedOutput()
	return err == nil, strings.TrimSpace(string(out))
}

// orthancPluginDirs are where Debian's Orthanc packages put plugins.
var orthancPluginDirs = []string{"/usr/share/orthanc/plugins", "/usr/lib/orthanc"}

// OrthancDICOMwebPlugin returns the path of Orthanc's DICOMweb plugin
// (Debian orthanc-dicomweb); without it the test skips (fails under
// CI=true).
func OrthancDICOMwebPlugin(t testing.TB) string {
	t.Helper()
	for _, dir := range orthancPluginDirs {
		m, _ := filepath.Glob(filepath.Join(dir, "libOrthancDicomWeb.so*"))
		if len(m) > 0 {
			return m[0]
		}
	}
	testci.SkipOrFail(t, "Orthanc's DICOMweb plugin (orthanc-dicomweb) not installed")
	return ""
}

// WithDICOMweb is a StartOrthanc edit that loads the DICOMweb plugin with
// servers as its DICOMweb client's peers ("DicomWeb": {"Servers": …}),
// e.g. {"ward": {"Url": …, "HttpHeaders": {"Authorization": …}}}.
func WithDICOMweb(t testing.TB, servers map[string]any) func(cfg map[string]any) {
	t.Helper()
	plugin := OrthancDICOMwebPlugin(t)
	return func(cfg map[string]any) {
		cfg["Plugins"] = []string{plugin}
		cfg["DicomWeb"] = map[string]any{"Enable": true, "Root": "/dicom-web/", "Servers": servers}
	}
}

// Do sends a REST request to Orthanc with a JSON body (nil: none) and
// returns the status and the answer's body.
func (o *Orthanc) Do(t testing.TB, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequest(method, o.URL(path), rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// Upload stores a Part 10 file in Orthanc through REST (POST /instances)
// and returns Orthanc's ID of the instance.
func (o *Orthanc) Upload(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(o.URL("/instances"), "application/dicom", strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct{ ID string }
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != 200 || v.ID == "" {
		t.Fatalf("upload %s to Orthanc: %s %v", path, resp.Status, err)
	}
	return v.ID
}
