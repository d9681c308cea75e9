package viewer_test

import (
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/web"
	"github.com/ward-pacs/ward/web/viewer"
)

// A bundle shaped like OHIF's dist/: index.html with two inline scripts
// and scripts loaded by src.
const index = `<!doctype html><html><head><script>window.PUBLIC_URL="/"</script>` +
	`<script rel="preload" as="script" src="/app-config.js"></script>` +
	`<link rel="manifest" href="/manifest.json">` +
	`<script>function browserImportFunction(n){return import(n)}</script>` +
	`<script defer src="/app.bundle.0f6159c501addfe9.js"></script></head><body></body></html>`

var bigScript = strings.Repeat("console.log('OHIF');\n", 200)

func bundle(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"index.html":                     index,
		"app.bundle.0f6159c501addfe9.js": bigScript,
		"0ddf166f7a343eda.wasm":          "\x00asm",
		"manifest.json":                  `{"name":"OHIF Viewer"}`,
		"init-service-worker.js":         "0",
		"assets/favicon.ico":             "ico",
	}
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

// tokenAuth accepts "Bearer ok".
type tokenAuth struct{}

func (tokenAuth) Authenticate(r *http.Request) (*archive.Principal, error) {
	switch r.Header.Get("Authorization") {
	case "Bearer ok":
		return &archive.Principal{Kind: archive.User, Name: "u", Roles: []string{"viewer"}}, nil
	case "":
		return nil, web.ErrNoCredentials
	}
	return nil, web.ErrBadCredentials
}

func serve(t *testing.T, v *viewer.Viewer) http.Handler {
	t.Helper()
	h := web.New(web.Config{Authenticator: tokenAuth{}, MaxBody: 1 << 20})
	h.Handle("GET /dicom-web/studies", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	viewer.Register(h, v)
	return h
}

func get(h http.Handler, path string, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// TestCSP: the policy names the hash of each inline script and of nothing
// loaded by src, has no blanket 'unsafe-inline' for scripts, and keeps
// connections, workers and framing to Ward's origin.
func TestCSP(t *testing.T) {
	csp := viewer.CSP([]byte(index))
	for _, want := range []string{
		sha(`window.PUBLIC_URL="/"`), sha(`function browserImportFunction(n){return import(n)}`),
		"'wasm-unsafe-eval'", "connect-src 'self'", "worker-src 'self' blob:", "img-src 'self' data: blob:",
		"frame-ancestors 'none'", "object-src 'none'",
	} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP lacks %s: %s", want, csp)
		}
	}
	if n := len(viewer.InlineScriptHashes([]byte(index))); n != 2 {
		t.Errorf("%d inline script hashes, want 2", n)
	}
	for _, d := range strings.Split(csp, ";") {
		if d = strings.TrimSpace(d); strings.HasPrefix(d, "script-src") && strings.Contains(d, "'unsafe-inline'") {
			t.Errorf("script-src allows every inline script: %s", d)
		}
	}
}

// TestServing: static files without sign-in, with the viewer's CSP (a
// worker takes its script's); the pages only signed in; DICOMweb paths
// never fall through to the page; nothing outside the bundle.
func TestServing(t *testing.T) {
	v := viewer.New("not yet")
	if err := v.Install(bundle(t)); err != nil {
		t.Fatal(err)
	}
	h := serve(t, v)
	csp := viewer.CSP([]byte(index))
	for _, tc := range []struct {
		path, ctype, cache string
	}{
		{"/app.bundle.0f6159c501addfe9.js", "text/javascript; charset=utf-8", "immutable"},
		{"/0ddf166f7a343eda.wasm", "application/wasm", "immutable"},
		{"/manifest.json", "application/json", "no-cache"},
		{"/assets/favicon.ico", "", "no-cache"},
		{"/app-config.js", "text/javascript; charset=utf-8", "no-cache"},
	} {
		w := get(h, tc.path)
		if w.Code != http.StatusOK || w.Header().Get("Content-Security-Policy") != csp {
			t.Errorf("GET %s without credentials: %d, CSP %q", tc.path, w.Code, w.Header().Get("Content-Security-Policy"))
		}
		if tc.ctype != "" && w.Header().Get("Content-Type") != tc.ctype {
			t.Errorf("GET %s: Content-Type %q, want %q", tc.path, w.Header().Get("Content-Type"), tc.ctype)
		}
		if !strings.Contains(w.Header().Get("Cache-Control"), tc.cache) {
			t.Errorf("GET %s: Cache-Control %q, want %s", tc.path, w.Header().Get("Cache-Control"), tc.cache)
		}
	}
	if w := get(h, "/app-config.js"); !strings.Contains(w.Body.String(), `qidoRoot: window.location.origin + '/dicom-web'`) {
		t.Errorf("app-config.js does not point OHIF at this origin's DICOMweb:\n%s", w.Body)
	}
	// Pages: a browser without a session goes to sign-in; an API client
	// gets 401; with credentials, OHIF's index.html under the CSP.
	for _, p := range []string{"/", "/viewer?StudyInstanceUIDs=1.2.3", "/index.html", "/no/such/file.js"} {
		w := get(h, p, "Accept", "text/html,*/*")
		if w.Code != http.StatusSeeOther || !strings.HasPrefix(w.Header().Get("Location"), "/signin?next=") {
			t.Errorf("GET %s without a session: %d %s, want 303 to /signin", p, w.Code, w.Header().Get("Location"))
		}
		if w := get(h, p); w.Code != http.StatusUnauthorized {
			t.Errorf("GET %s without credentials (not a page): %d, want 401", p, w.Code)
		}
		w = get(h, p, "Authorization", "Bearer ok", "Accept", "text/html")
		if w.Code != http.StatusOK || w.Body.String() != index || w.Header().Get("Content-Security-Policy") != csp || w.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("GET %s signed in: %d, CSP %q, Cache-Control %q", p, w.Code, w.Header().Get("Content-Security-Policy"), w.Header().Get("Cache-Control"))
		}
	}
	for _, p := range []string{"/dicom-web/studies/1.2/nonsense", "/dicom-web", "/wado"} {
		if w := get(h, p, "Authorization", "Bearer ok", "Accept", "text/html"); w.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404 (not the viewer's page)", p, w.Code)
		}
	}
	if w := get(h, "/dicom-web/studies", "Authorization", "Bearer ok"); w.Code != http.StatusOK {
		t.Errorf("GET /dicom-web/studies: %d: the viewer took DICOMweb's route", w.Code)
	}
	for _, p := range []string{"/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/assets/../../../etc/passwd"} {
		if w := get(h, p, "Authorization", "Bearer ok"); strings.Contains(w.Body.String(), "root:") {
			t.Errorf("GET %s served a file outside the bundle", p)
		}
	}
	if w := get(h, "/signin"); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `name="passcode"`) {
		t.Errorf("GET /signin: %d: the viewer took the sign-in page's route", w.Code)
	}
}

// TestNoBundle: without a bundle, the pages say why (signed in) and
// still need sign-in; a directory that is not OHIF's is refused.
func TestNoBundle(t *testing.T) {
	v := viewer.New("the viewer is not installed: run ward viewer fetch")
	h := serve(t, v)
	if w := get(h, "/", "Accept", "text/html"); w.Code != http.StatusSeeOther {
		t.Errorf("GET / without a session and without a bundle: %d, want 303", w.Code)
	}
	w := get(h, "/", "Authorization", "Bearer ok")
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "ward viewer fetch") {
		t.Errorf("GET / without a bundle: %d %s", w.Code, w.Body)
	}
	dir := t.TempDir()
	if err := v.Install(dir); !errors.Is(err, viewer.ErrNotOHIF) {
		t.Errorf("Install of an empty directory: %v, want ErrNotOHIF", err)
	}
	os.WriteFile(filepath.Join(dir, "index.html"), []byte("<html></html>"), 0o600)
	if err := v.Install(dir); !errors.Is(err, viewer.ErrNotOHIF) {
		t.Errorf("Install of a directory with another index.html: %v, want ErrNotOHIF", err)
	}
	if v.Installed() {
		t.Error("a refused bundle is served")
	}
}

// TestGzip: the bundle's scripts go gzipped to a browser that accepts it,
// as they are to one that does not or that asks for a range.
func TestGzip(t *testing.T) {
	v := viewer.New("")
	if err := v.Install(bundle(t)); err != nil {
		t.Fatal(err)
	}
	h := serve(t, v)
	const js = "/app.bundle.0f6159c501addfe9.js"
	for range 2 { // compressed once, then from memory
		w := get(h, js, "Accept-Encoding", "gzip, deflate, br")
		if w.Header().Get("Content-Encoding") != "gzip" || !strings.Contains(w.Header().Get("Vary"), "Accept-Encoding") {
			t.Fatalf("GET %s accepting gzip: Content-Encoding %q, Vary %q", js, w.Header().Get("Content-Encoding"), w.Header().Get("Vary"))
		}
		zr, err := gzip.NewReader(w.Body)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(zr)
		if err != nil || string(body) != bigScript {
			t.Fatalf("the gzipped script does not inflate to the script (%v)", err)
		}
	}
	for _, hdr := range [][]string{{"Accept-Encoding", "gzip;q=0, identity"}, {"Accept-Encoding", "gzip", "Range", "bytes=0-9"}, {}} {
		w := get(h, js, hdr...)
		if w.Header().Get("Content-Encoding") != "" || !strings.HasPrefix(bigScript, w.Body.String()) || w.Body.Len() == 0 {
			t.Errorf("GET %s with %v: Content-Encoding %q, %d bytes", js, hdr, w.Header().Get("Content-Encoding"), w.Body.Len())
		}
	}
}

// TestCSPReports: the browser's violation reports, anonymous, are logged
// without the URIs' queries, a bounded number per minute; the policy
// names where to send them.
func TestCSPReports(t *testing.T) {
	if !strings.Contains(viewer.CSP([]byte(index)), "report-uri "+viewer.ReportPath) {
		t.Fatal("the CSP has no report-uri")
	}
	var logged strings.Builder
	h := web.New(web.Config{MaxBody: 1 << 20, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	viewer.Register(h, viewer.New(""))
	report := `{"csp-report":{"document-uri":"http://ward/viewer?StudyInstanceUIDs=1.2.3","violated-directive":"script-src","effective-directive":"script-src","blocked-uri":"eval","source-file":"http://ward/8097.bundle.js","line-number":56}}`
	for range 30 {
		r := httptest.NewRequest(http.MethodPost, viewer.ReportPath, strings.NewReader(report))
		r.Header.Set("Content-Type", "application/csp-report")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusNoContent {
			t.Fatalf("POST %s: %d", viewer.ReportPath, w.Code)
		}
	}
	out := logged.String()
	if n := strings.Count(out, "viewer CSP violation:"); n != 20 {
		t.Errorf("%d reports logged of 30, want the first 20", n)
	}
	if !strings.Contains(out, "directive=script-src") || !strings.Contains(out, "document=http://ward/viewer ") || strings.Contains(out, "1.2.3") {
		t.Errorf("the report is not logged as it should be (directive, document without its query):\n%s", out)
	}
}
