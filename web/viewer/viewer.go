// Package viewer serves the OHIF viewer at / on Ward's web front end,
// configured for Ward's DICOMweb on the same origin.
//
// Its static files (scripts, styles, WebAssembly codecs, fonts, icons,
// manifest.json) hold no patient data and are served without sign-in
// (Chromium fetches the manifest without cookies). Every other path is
// one of the viewer's pages: it needs a signed-in session (a browser
// without one is sent to /signin) and gets OHIF's index.html. The
// viewer's DICOMweb requests carry the session cookie (same origin).
//
// Everything it serves carries the viewer's Content-Security-Policy:
// scripts from Ward's origin and OHIF's inline scripts by hash (computed
// from the index.html loaded), WebAssembly compilation for the codecs,
// workers from Ward's origin or blobs, connections to Ward's origin only,
// and no framing. Workers take the policy of their own script's
// response, so the scripts carry it too.
package viewer

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ward-pacs/ward/web"
)

// Viewer serves one OHIF bundle, which can be installed after start (a
// first run fetches it while Ward already serves DICOMweb).
type Viewer struct {
	b       atomic.Pointer[bundle]
	missing atomic.Pointer[string]
}

// bundle is a loaded OHIF dist directory.
type bundle struct {
	fsys    fs.FS
	index   []byte
	csp     string
	modTime time.Time
	gz      sync.Map // file name -> *gzEntry
}

// New returns a Viewer with no bundle yet; why says how to get one (shown
// on its pages meanwhile).
func New(why string) *Viewer {
	v := &Viewer{}
	v.SetMissing(why)
	return v
}

// SetMissing says why there is no bundle (while there is none).
func (v *Viewer) SetMissing(why string) { v.missing.Store(&why) }

// Installed reports whether a bundle is being served.
func (v *Viewer) Installed() bool { return v.b.Load() != nil }

// Install loads the bundle in dir (OHIF's dist/) and serves it from now
// on.
func (v *Viewer) Install(dir string) error {
	b, err := load(os.DirFS(dir))
	if err != nil {
		return fmt.Errorf("viewer bundle %s: %w", dir, err)
	}
	v.b.Store(b)
	go b.warm()
	return nil
}

// ErrNotOHIF: the directory is not an OHIF bundle.
var ErrNotOHIF = errors.New("not an OHIF viewer bundle (no index.html loading app-config.js)")

func load(fsys fs.FS) (*bundle, error) {
	index, err := fs.ReadFile(fsys, "index.html")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotOHIF, err)
	}
	if !bytes.Contains(index, []byte(`src="/app-config.js"`)) {
		return nil, ErrNotOHIF
	}
	fi, err := fs.Stat(fsys, "index.html")
	if err != nil {
		return nil, err
	}
	return &bundle{fsys: fsys, index: index, csp: CSP(index), modTime: fi.ModTime()}, nil
}

// inlineScript matches a <script> element and its text.
var inlineScript = regexp.MustCompile(`(?is)<script\b([^>]*)>(.*?)</script>`)

// InlineScriptHashes are the CSP sources ('sha256-…') of the inline
// scripts of an HTML page: the scripts without src.
func InlineScriptHashes(html []byte) []string {
	var out []string
	for _, m := range inlineScript.FindAllSubmatch(html, -1) {
		if bytes.Contains(bytes.ToLower(m[1]), []byte("src=")) {
			continue
		}
		sum := sha256.Sum256(m[2])
		out = append(out, "'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'")
	}
	return out
}

// CSP is the Content-Security-Policy for a bundle whose index.html is
// index. 'wasm-unsafe-eval' lets OHIF compile its WebAssembly codecs;
// 'unsafe-eval' is there for the JPEG 2000 codec's worker, which builds
// functions from strings (Emscripten's glue), and refused without it.
// Styles may be inline: OHIF's components set them at run time.
func CSP(index []byte) string {
	script := append([]string{"'self'"}, InlineScriptHashes(index)...)
	script = append(script, "'wasm-unsafe-eval'", "'unsafe-eval'")
	return strings.Join([]string{
		"default-src 'self'",
		"script-src " + strings.Join(script, " "),
		"style-src 'self' 'unsafe-inline'",
		"img-src 'self' data: blob:",
		"font-src 'self' data:",
		"connect-src 'self'",
		"worker-src 'self' blob:",
		"manifest-src 'self'",
		"object-src 'none'",
		"base-uri 'self'",
		"form-action 'self'",
		"frame-ancestors 'none'",
		"report-uri " + ReportPath,
	}, "; ")
}

// ReportPath is where browsers report the viewer's CSP violations (its
// pages' and its workers'): Ward logs them, so that a bundle the policy
// breaks shows in the log.
const ReportPath = "/csp-report"

// Register serves v at / on h. It must be registered last: the other
// routes (DICOMweb, sign-in) are more specific and win.
func Register(h *web.Handler, v *Viewer) {
	page := h.Authenticated(v.page)
	h.Anonymous("POST "+ReportPath, newReporter(h.Logger()))
	h.Anonymous("GET /", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if strings.HasPrefix(p, "/dicom-web/") || p == "/dicom-web" || p == "/wado" {
			web.Fail(w, r, http.StatusNotFound, "no such DICOMweb resource")
			return
		}
		b := v.b.Load()
		if b == nil {
			page.ServeHTTP(w, r)
			return
		}
		if p == "/app-config.js" {
			w.Header().Set("Content-Security-Policy", b.csp)
			w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
			w.Header().Set("Cache-Control", "no-cache")
			http.ServeContent(w, r, "app-config.js", b.modTime, strings.NewReader(AppConfig))
			return
		}
		if b.serveFile(w, r, p) {
			return
		}
		page.ServeHTTP(w, r)
	}))
}

// page serves the viewer's page (OHIF routes it by its path), or says
// how to get the viewer while there is none.
func (v *Viewer) page(w http.ResponseWriter, r *http.Request) {
	b := v.b.Load()
	if b == nil {
		why := "the viewer is not installed"
		if m := v.missing.Load(); m != nil {
			why = *m
		}
		web.Fail(w, r, http.StatusServiceUnavailable, why+"; DICOMweb is served at /dicom-web")
		return
	}
	hd := w.Header()
	hd.Set("Content-Security-Policy", b.csp)
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	http.ServeContent(w, r, "index.html", b.modTime, bytes.NewReader(b.index))
}

// fingerprinted matches the names of OHIF's files whose content a hash in
// the name fixes (cached for a year).
var fingerprinted = regexp.MustCompile(`(^|\.)[0-9a-f]{16}\.(js|wasm|css|woff2?)$|^[0-9a-f]{16}\.wasm$`)

// serveFile serves the bundle's file at urlPath, if there is one (not
// index.html, which is the page).
func (b *bundle) serveFile(w http.ResponseWriter, r *http.Request, urlPath string) bool {
	name := strings.TrimPrefix(path.Clean(urlPath), "/")
	if name == "" || name == "." || name == "index.html" || !fs.ValidPath(name) {
		return false
	}
	f, err := b.fsys.Open(name)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return false
	}
	rs, ok := f.(io.ReadSeeker)
	if !ok {
		return false
	}
	hd := w.Header()
	hd.Set("Content-Security-Policy", b.csp)
	if ct := contentType(name); ct != "" {
		hd.Set("Content-Type", ct)
	}
	if fingerprinted.MatchString(path.Base(name)) {
		hd.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		hd.Set("Cache-Control", "no-cache")
	}
	if gz := b.gzipped(r, name, fi.Size(), rs); gz != nil {
		hd.Set("Content-Encoding", "gzip")
		hd.Add("Vary", "Accept-Encoding")
		http.ServeContent(w, r, name, fi.ModTime(), bytes.NewReader(gz))
		return true
	}
	if compressible(name) {
		hd.Add("Vary", "Accept-Encoding")
	}
	http.ServeContent(w, r, name, fi.ModTime(), rs)
	return true
}

// compressible: the bundle's text and WebAssembly files, which gzip
// shrinks to a fifth or so (the main script: 17 MB to 3.4 MB).
func compressible(name string) bool {
	switch path.Ext(name) {
	case ".js", ".mjs", ".css", ".wasm", ".svg", ".map":
		return true
	}
	return false
}

// gzipped is the gzip of the file for a request that accepts it (and asks
// for no range), compressed on the first such request and kept in memory
// (the bundle's compressible files come to some 12 MB gzipped); nil to
// serve the file as it is.
func (b *bundle) gzipped(r *http.Request, name string, size int64, f io.ReadSeeker) []byte {
	if size < 1024 || !compressible(name) || r.Header.Get("Range") != "" || !acceptsGzip(r.Header.Values("Accept-Encoding")) {
		return nil
	}
	data := b.compress(name, f)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil
	}
	return data
}

// compress is the gzip of the file name (read from f), made once and
// kept.
func (b *bundle) compress(name string, f io.Reader) []byte {
	e, _ := b.gz.LoadOrStore(name, &gzEntry{})
	ent := e.(*gzEntry)
	ent.once.Do(func() {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
		if _, err := io.Copy(zw, f); err != nil || zw.Close() != nil {
			return
		}
		ent.data = buf.Bytes()
	})
	return ent.data
}

// warm compresses the bundle's compressible files ahead of the first
// browser, which would otherwise wait for them (the main script takes
// about half a second). It runs once, in the background, after Install.
func (b *bundle) warm() {
	_ = fs.WalkDir(b.fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !compressible(name) {
			return nil
		}
		if fi, err := d.Info(); err != nil || fi.Size() < 1024 {
			return nil
		}
		f, err := b.fsys.Open(name)
		if err != nil {
			return nil
		}
		defer f.Close()
		b.compress(name, f)
		return nil
	})
}

type gzEntry struct {
	once sync.Once
	data []byte
}

// acceptsGzip reports whether Accept-Encoding allows gzip (gzip, x-gzip
// or *, with a weight above 0).
func acceptsGzip(values []string) bool {
	for _, v := range values {
		for _, item := range strings.Split(v, ",") {
			coding, params, _ := strings.Cut(strings.TrimSpace(item), ";")
			coding = strings.ToLower(strings.TrimSpace(coding))
			if coding != "gzip" && coding != "x-gzip" && coding != "*" {
				continue
			}
			q := strings.ReplaceAll(strings.ToLower(params), " ", "")
			if strings.HasPrefix(q, "q=0") && strings.Trim(strings.TrimPrefix(q, "q=0"), ".0") == "" {
				continue
			}
			return true
		}
	}
	return false
}

// contentType by extension, with the types a browser insists on (module
// scripts, WebAssembly streaming compilation, the manifest).
func contentType(name string) string {
	switch path.Ext(name) {
	case ".js", ".mjs":
		return "text/javascript; charset=utf-8"
	case ".wasm":
		return "application/wasm"
	case ".json":
		return "application/json"
	case ".webmanifest":
		return "application/manifest+json"
	case ".html":
		return "text/html; charset=utf-8"
	}
	return mime.TypeByExtension(path.Ext(name))
}
