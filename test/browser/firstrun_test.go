package browser

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/test/harness"
)

// serveFresh runs ward serve on a new data directory with env over the
// test's environment (first-run fetching on, unless env turns it off).
func serveFresh(t *testing.T, data string, env ...string) (*harness.Proc, string) {
	t.Helper()
	bin := harness.WardBinary(t)
	httpPort := harness.FreePort(t)
	cmd := exec.Command(bin, "serve", "--data", data, "--min-free", "16MiB",
		"--dicom-listen", "127.0.0.1:"+strconv.Itoa(harness.FreePort(t)), "--http-listen", "127.0.0.1:"+strconv.Itoa(httpPort))
	cmd.Env = append(os.Environ(), "WARD_VIEWER_FETCH=")
	cmd.Env = append(cmd.Env, env...)
	p := harness.Start(t, cmd, true)
	harness.WaitListen(t, httpPort)
	return p, "http://127.0.0.1:" + strconv.Itoa(httpPort)
}

// status GETs path (not following redirects) with the Accept header.
func status(t *testing.T, url, accept string) (int, string) {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location")
}

// TestFirstRunFetchesViewer: the README's run command on a new data
// directory serves DICOMweb at once, fetches the viewer with npm in the
// background saying so, then serves it (behind sign-in); the next start
// serves it from the data directory, whose checks it passes.
func TestFirstRunFetchesViewer(t *testing.T) {
	if _, err := exec.LookPath("npm"); err != nil {
		testci.SkipOrFail(t, "npm is not installed")
	}
	data := filepath.Join(t.TempDir(), "data")
	// npm takes the pinned package from its cache only (.ci/run's
	// ward viewer fetch filled it): tests reach nothing beyond loopback.
	p, base := serveFresh(t, data, "npm_config_offline=true")
	p.WaitLog(t, "first run: fetching the OHIF viewer with npm", 10*time.Second)
	if code, _ := status(t, base+"/dicom-web/studies", "application/dicom+json"); code != http.StatusUnauthorized {
		t.Errorf("DICOMweb while the viewer is fetched: %d, want 401 (served, and closed)", code)
	}
	p.WaitLog(t, "the OHIF viewer is fetched and served at /", 5*time.Minute)
	if code, _ := status(t, base+"/manifest.json", ""); code != http.StatusOK {
		t.Errorf("GET /manifest.json without a session: %d, want 200", code)
	}
	if code, loc := status(t, base+"/", "text/html"); code != http.StatusSeeOther || !strings.HasPrefix(loc, "/signin") {
		t.Errorf("GET / without a session: %d %s, want 303 to /signin", code, loc)
	}
	if err, _ := p.Stop(t, os.Interrupt, 20*time.Second); err != nil {
		t.Fatalf("ward serve: %v", err)
	}
	p2, _ := serveFresh(t, data, "npm_config_offline=true")
	p2.WaitLog(t, "serving the OHIF viewer at /", 10*time.Second)
	if strings.Contains(p2.Log.String(), "fetching") {
		t.Errorf("the second start fetched again:\n%s", p2.Log)
	}
}

// TestFirstRunWithoutNPM: without npm, ward serve serves DICOMweb without
// the viewer and says how to get it; the viewer's pages still need
// sign-in.
func TestFirstRunWithoutNPM(t *testing.T) {
	p, base := serveFresh(t, filepath.Join(t.TempDir(), "data"), "PATH="+t.TempDir())
	p.WaitLog(t, "install npm, then run ward viewer fetch", 10*time.Second)
	if code, _ := status(t, base+"/dicom-web/studies", "application/dicom+json"); code != http.StatusUnauthorized {
		t.Errorf("DICOMweb without the viewer: %d, want 401", code)
	}
	if code, loc := status(t, base+"/", "text/html"); code != http.StatusSeeOther || !strings.HasPrefix(loc, "/signin") {
		t.Errorf("GET / without a session: %d %s, want 303 to /signin", code, loc)
	}
}
